//! Decisions end to end: a rule set and a list published with the CLI decide the
//! embedded stream, and every sink shows it (verdict store, alerts file, lake); a
//! backtest of a draft on that lake equals a count by hand; a running detector picks up a
//! list change and a new rule set within its poll interval, refuses a rule set that does
//! not compile while the old one serves, and the API answers the rule and list routes in
//! JSON.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestConfig;
use common::http::Http;
use fraudstream::detector::Detector;
use fraudstream::model::Model;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::ModelStore;
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{Dataset, ReadOptions, Transaction, read_dataset};
use fraudstream::shutdown::Shutdown;
use fraudstream::sinks::verdicts::VerdictStore;
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use fraudstream::storage::BlobStore;
use fraudstream::storage::local::LocalStore;
use serde_json::{Value, json};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

/// The sample, a model trained on it and served from `dir/registry`, and the rows with
/// card and terminal ids (card `card-<i mod 40>`).
struct Setup {
    dir: tempfile::TempDir,
    model: Model,
    rows: Vec<Transaction>,
}

async fn setup() -> Setup {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 20;
    let model = train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(Arc::new(
        LocalStore::new(dir.path().join("registry")).unwrap(),
    ));
    store.put(&model).await.unwrap();
    store.set_latest(model.version(), None).await.unwrap();
    Setup {
        dir,
        model,
        rows: with_cards(&data),
    }
}

fn with_cards(data: &Dataset) -> Vec<Transaction> {
    (0..data.len())
        .map(|i| {
            let mut t = data.row(i);
            t.id = format!("tx-{i}");
            t.card_id = Some(format!("card-{}", i % 40));
            t.terminal_id = Some(format!("term-{}", i % 7));
            t
        })
        .collect()
}

fn write_jsonl(path: &Path, rows: &[Transaction]) {
    let mut text = String::new();
    for r in rows {
        text.push_str(&encode_transaction(r));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Run the CLI; its stdout, or a panic with its stderr.
fn cli(args: &[&str], config: &Path) -> String {
    let out = common::fraudstream()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fraudstream {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const RULES: &str = "\
# priority: block rules, then review, then allow
rule blocked_card: block if card_id in @blocked_cards
rule big_amount: review if Amount > 500
rule tiny_and_calm: allow if Amount < 1.5 and score < 0.9
";

/// What `RULES` decides, by hand: (outcome, decided_by).
fn expected(t: &Transaction, score: f32, fraud: bool) -> (&'static str, String) {
    if t.card_id.as_deref() == Some("card-7") {
        ("block", "blocked_card".into())
    } else if t.amount() > 500.0 {
        ("review", "big_amount".into())
    } else if t.amount() < 1.5 && score < 0.9 {
        ("approve", "tiny_and_calm".into())
    } else if fraud {
        ("block", "model".into())
    } else {
        ("approve", "model_only".into())
    }
}

fn write_rules(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_the_stream_and_every_sink_shows_it() {
    let s = setup().await;
    let dir = s.dir.path();
    let input = dir.join("in.jsonl");
    write_jsonl(&input, &s.rows);
    let config = TestConfig::local(dir)
        .set("source.kind", "file")
        .set("source.path", input.display().to_string())
        .set("api.enabled", false)
        .write(dir.join("run.toml"));

    // A list, then the rule set published and activated through the CLI.
    cli(&["list", "add", "blocked_cards", "card-7"], &config);
    let rules = write_rules(dir, "rules.txt", RULES);
    let out = cli(
        &["rules", "publish", "--activate", rules.to_str().unwrap()],
        &config,
    );
    assert!(out.contains("activated"), "{out}");
    let listed = cli(&["rules", "list"], &config);
    assert!(listed.lines().any(|l| l.starts_with('*')), "{listed}");

    cli(&["run"], &config);

    // The verdict store: every row decided as by hand.
    let store = LocalVerdictStore::open(dir.join("verdicts.db")).unwrap();
    let mut by_outcome: HashMap<&str, usize> = HashMap::new();
    let mut alerted = Vec::new();
    for t in &s.rows {
        let v = store.get(&t.id).await.unwrap().expect("a verdict per row");
        let want_score = s.model.verdict(t, 0).score;
        assert!((v.score - want_score).abs() < 1e-6, "{}", t.id);
        let (outcome, by) = expected(t, v.score, v.fraud);
        assert_eq!(
            (v.outcome.to_string().as_str(), v.decided_by.to_string()),
            (outcome, by.clone()),
            "{}: score {} Amount {}",
            t.id,
            v.score,
            t.amount()
        );
        if !matches!(by.as_str(), "model" | "model_only") {
            assert_eq!(v.rules, vec![Arc::<str>::from(by.as_str())]);
            assert!(v.rule_set.is_some());
        }
        *by_outcome.entry(outcome).or_default() += 1;
        if outcome != "approve" {
            alerted.push(t.id.clone());
        }
    }
    for o in ["approve", "review", "block"] {
        assert!(
            by_outcome.get(o).copied().unwrap_or(0) > 0,
            "{by_outcome:?}"
        );
    }

    // Alerts: every review and block once, with what decided it; no approve.
    let alerts = std::fs::read_to_string(dir.join("alerts.jsonl")).unwrap();
    let mut ids: Vec<String> = Vec::new();
    for line in alerts.lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        assert_ne!(a["outcome"], "approve", "{a}");
        assert!(a["decided_by"].is_string(), "{a}");
        ids.push(a["tx_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    alerted.sort();
    assert_eq!(ids, alerted, "one alert per review or block");

    // The lake: the decision columns.
    let lake = common::lake_decisions(&dir.join("lake"));
    assert_eq!(lake.len(), s.rows.len());
    for (id, (outcome, by, rules)) in &lake {
        let v = store.get(id).await.unwrap().unwrap();
        assert_eq!(outcome, &v.outcome.to_string(), "{id}");
        assert_eq!(by, &v.decided_by.to_string(), "{id}");
        let want: Vec<String> = v.rules.iter().map(ToString::to_string).collect();
        assert_eq!(rules, &want.join(","), "{id}");
    }

    // A backtest of a draft on that lake, against a count by hand.
    let draft = write_rules(
        dir,
        "draft.txt",
        "mode all_matched\n\
         rule over_200: block if Amount > 200\n\
         rule card_3: review if card_id == \"card-3\"\n\
         rule small: allow if Amount < 2\n",
    );
    let out = cli(
        &[
            "rules",
            "backtest",
            draft.to_str().unwrap(),
            "--json",
            "--history",
            dir.join("lake").to_str().unwrap(),
        ],
        &config,
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"], json!(s.rows.len()));
    let labelled: Vec<(&Transaction, u8)> = s
        .rows
        .iter()
        .filter_map(|t| t.label.map(|l| (t, l)))
        .collect();
    assert_eq!(report["labelled"], json!(labelled.len()));
    let rule = |name: &str| {
        report["draft"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let hand = |f: &dyn Fn(&Transaction) -> bool| {
        let matches = s.rows.iter().filter(|t| f(t)).count();
        let frauds = labelled.iter().filter(|(t, l)| *l == 1 && f(t)).count();
        let legit = labelled.iter().filter(|(t, l)| *l == 0 && f(t)).count();
        (matches, frauds, legit)
    };
    for (name, f) in [
        (
            "over_200",
            &(|t: &Transaction| t.amount() > 200.0) as &dyn Fn(&Transaction) -> bool,
        ),
        ("card_3", &|t: &Transaction| {
            t.card_id.as_deref() == Some("card-3")
        }),
        ("small", &|t: &Transaction| t.amount() < 2.0),
    ] {
        let r = rule(name);
        let (m, fr, lg) = hand(f);
        assert_eq!(
            (
                r["matches"].as_u64(),
                r["frauds"].as_u64(),
                r["legit"].as_u64()
            ),
            (Some(m as u64), Some(fr as u64), Some(lg as u64)),
            "{name}: {r}"
        );
    }
    // all_matched decides by severity: a row over 200 is blocked whatever else matched;
    // a row no rule matches is the model's (blocked when it says fraud).
    let unmatched = |t: &Transaction| {
        t.amount() <= 200.0 && t.amount() >= 2.0 && t.card_id.as_deref() != Some("card-3")
    };
    let blocked = s
        .rows
        .iter()
        .filter(|t| t.amount() > 200.0 || (unmatched(t) && s.model.verdict(t, 0).fraud))
        .count();
    let reviewed = s
        .rows
        .iter()
        .filter(|t| t.amount() <= 200.0 && t.card_id.as_deref() == Some("card-3"))
        .count();
    assert_eq!(report["draft"]["block"], json!(blocked));
    assert_eq!(report["draft"]["review"], json!(reviewed));
    // The active set's outcomes replayed from the lake equal the stream's.
    for o in ["approve", "review", "block"] {
        assert_eq!(
            report["active"][o],
            json!(by_outcome.get(o).copied().unwrap_or(0)),
            "{o}: {}",
            report["active"]
        );
    }
    // Allow rules deciding on a fraud are overrides.
    let overrides: u64 = report["draft"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["overrides"].as_u64().unwrap())
        .sum();
    let small_frauds = labelled
        .iter()
        .filter(|(t, l)| *l == 1 && t.amount() < 2.0 && t.card_id.as_deref() != Some("card-3"))
        .count();
    assert_eq!(overrides, small_frauds as u64, "{}", report["draft"]);
}

/// A detector following a file, its API on, the store polled every 100 ms.
struct Running {
    http: Http,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<
        Result<fraudstream::detector::Summary, fraudstream::detector::DetectorError>,
    >,
    input: PathBuf,
}

impl Running {
    async fn start(dir: &Path, rows: &[Transaction]) -> Self {
        let input = dir.join("follow.jsonl");
        write_jsonl(&input, rows);
        let cfg = TestConfig::local(dir)
            .set("source.kind", "file")
            .set("source.path", input.display().to_string())
            .set("models.poll_interval", "100ms")
            .set("api.admin", true)
            .set("scoring.batch_timeout", "5ms")
            .parse();
        let detector = Detector::build(&cfg).await.unwrap().follow().unwrap();
        let http = Http::new(detector.handles().api_addr.unwrap());
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let task = tokio::spawn(detector.run(shutdown.clone()));
        Self {
            http,
            shutdown,
            task,
            input,
        }
    }

    fn append(&self, rows: &[Transaction]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.input)
            .unwrap();
        for r in rows {
            writeln!(f, "{}", encode_transaction(r)).unwrap();
        }
    }

    /// The stored verdict of `id`, once there (within 20 s).
    async fn verdict(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.http.get(&format!("/v1/verdicts/{id}")).await;
            if r.status == 200 {
                return r.json();
            }
            assert!(Instant::now() < deadline, "no verdict for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.stop();
        self.task.await.unwrap().unwrap();
    }
}

/// A transaction of `card` made from sample row `i`, under a fresh id.
fn tx_of(rows: &[Transaction], i: usize, card: &str, id: &str) -> Transaction {
    let mut t = rows[i].clone();
    t.id = id.into();
    t.card_id = Some(card.into());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_rule_sets_reload_mid_stream_and_a_bad_set_is_refused() {
    let s = setup().await;
    let dir = s.dir.path();
    let rows = &s.rows;
    let blobs = LocalStore::new(dir.join("registry")).unwrap();
    let store = ModelStore::new(Arc::new(LocalStore::new(dir.join("registry")).unwrap())).rules();
    store
        .change_list("watch", &["card-none".to_owned()], &[])
        .await
        .unwrap();
    let catalog = |lists: &fraudstream::rules::Lists| lists.catalog(Vec::new());
    let (lists, _) = store.load_lists().await.unwrap();
    let first = store
        .publish(
            "rule watched: block if card_id in @watch\n",
            &catalog(&lists),
        )
        .await
        .unwrap();
    store
        .activate(&first.version, &catalog(&lists))
        .await
        .unwrap();

    // A calm row (the model approves it) for the watched card.
    let calm = (0..rows.len())
        .find(|&i| !s.model.verdict(&rows[i], 0).fraud)
        .unwrap();
    let run = Running::start(dir, &[tx_of(rows, calm, "card-x", "a-1")]).await;
    let v = run.verdict("a-1").await;
    assert_eq!(
        (v["outcome"].as_str(), v["decided_by"].as_str()),
        (Some("approve"), Some("model_only"))
    );

    // The list changes through the API: the next transaction of the card is blocked.
    let r = run
        .http
        .send_with("PUT", "/v1/lists/watch/card-x", &[], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["size"], 2);
    let changed = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("a-2-{n}");
        run.append(&[tx_of(rows, calm, "card-x", &id)]);
        let v = run.verdict(&id).await;
        if v["outcome"] == "block" {
            assert_eq!(v["decided_by"], "watched");
            assert_eq!(v["rules"], json!(["watched"]));
            assert_eq!(v["rule_set"], json!(first.version));
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the list change never reached the detector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "decisions: a list change decided the stream {} ms after the PUT",
        changed.elapsed().as_millis()
    );

    // GET /v1/rules: what serves, and the lists.
    let view = run.http.get("/v1/rules").await.json();
    assert_eq!(view["serving"], json!(first.version));
    assert_eq!(view["active"]["version"], json!(first.version));
    assert_eq!(view["lists"][0]["name"], "watch");
    let list = run.http.get("/v1/lists/watch").await.json();
    assert_eq!(list["values"], json!(["card-none", "card-x"]));

    // A rule set that does not compile, made active behind the store's back: refused,
    // the old one keeps serving.
    let bad_text = "rule gone: block if card_id in @no_such_list\n";
    let bad_version = "20990101T000000Z-deadbeef";
    blobs
        .put(
            &format!("rules/{bad_version}/rules.txt"),
            Bytes::from(bad_text),
        )
        .await
        .unwrap();
    let manifest = json!({
        "version": bad_version,
        "sha256": fraudstream::model::format::sha256_hex(bad_text.as_bytes()),
        "size_bytes": bad_text.len(),
        "created_at": "2099-01-01T00:00:00Z",
        "mode": "priority",
        "rules": [{"name": "gone", "action": "block", "text": "block if card_id in @no_such_list"}],
        "lists": ["no_such_list"],
        "derived": [],
    });
    blobs
        .put(
            &format!("rules/{bad_version}/manifest.json"),
            Bytes::from(manifest.to_string()),
        )
        .await
        .unwrap();
    // Activating it through the API is refused: it does not compile.
    let r = run
        .http
        .post_json(&format!("/v1/rules/{bad_version}/activate"), &json!({}))
        .await;
    assert_eq!(r.code(), (409, "compile".into()), "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("no_such_list"));
    blobs
        .put("rules/ACTIVE", Bytes::from(format!("{bad_version}\n")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics_text(&run.http)
        .await
        .contains("fraudstream_rules_rejections_total 1")
    {
        assert!(
            Instant::now() < deadline,
            "the bad rule set was not refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.append(&[tx_of(rows, calm, "card-x", "a-3")]);
    let v = run.verdict("a-3").await;
    assert_eq!(
        (v["outcome"].as_str(), v["rule_set"].as_str()),
        (Some("block"), Some(first.version.as_str())),
        "the old rule set still decides"
    );
    assert_eq!(
        run.http.get("/v1/rules").await.json()["serving"],
        json!(first.version)
    );

    // A good new version, activated through the API, serves within a poll.
    let (lists, _) = store.load_lists().await.unwrap();
    let second = store
        .publish(
            "mode first_matched\nrule calm_card: allow if card_id == \"card-x\"\n",
            &catalog(&lists),
        )
        .await
        .unwrap();
    let r = run
        .http
        .post_json(
            &format!("/v1/rules/{}/activate", second.version),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["to"], json!(second.version));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("a-4-{n}");
        run.append(&[tx_of(rows, calm, "card-x", &id)]);
        let v = run.verdict(&id).await;
        if v["rule_set"] == json!(second.version) {
            assert_eq!(
                (v["outcome"].as_str(), v["decided_by"].as_str()),
                (Some("approve"), Some("calm_card"))
            );
            break;
        }
        assert!(Instant::now() < deadline, "the new rule set never served");
    }

    // The JSON errors of the list routes.
    let r = run.http.get("/v1/lists/nope").await;
    assert_eq!(r.code(), (404, "not_found".into()), "{}", r.text());
    let r = run
        .http
        .send_with("PUT", "/v1/lists/bad%20name/x", &[], "")
        .await;
    assert_eq!(r.code(), (400, "invalid".into()), "{}", r.text());
    let r = run
        .http
        .send_with("DELETE", "/v1/lists/nope/x", &[], "")
        .await;
    assert_eq!(r.code(), (404, "not_found".into()), "{}", r.text());
    let r = run
        .http
        .send_with(
            "PUT",
            "/v1/lists/watch/x",
            &[("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.code(), (403, "cross_site".into()), "{}", r.text());
    let r = run
        .http
        .post_json("/v1/rules/nope/backtest", &json!({}))
        .await;
    assert_eq!(r.code(), (404, "not_found".into()), "{}", r.text());
    run.stop().await;
}

async fn metrics_text(http: &Http) -> String {
    http.get("/metrics").await.text()
}
