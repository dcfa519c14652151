//! Entity features in the detector (embedded mode, no services): the features it serves
//! (stored in the lake) equal what `train` and `preprocess` compute offline over the same
//! history; labels from a separate file are joined with the verdicts; a transaction
//! without an entity id is refused when the configuration says so; and a model that needs
//! entity features is refused by a detector that does not compute them.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{ReadOptions, read_dataset_with};
use fraudstream::velocity::VelocitySpec;
use loadgen::simulate::{SimParams, label_json, simulate_transactions};

struct Sim {
    history: PathBuf,
    stream: PathBuf,
    labels: PathBuf,
    rows: usize,
}

/// A small simulated history (labelled CSV), the same transactions unlabelled as a
/// stream (JSON lines), and their labels; `strip_terminal` rows lose their terminal id.
fn simulated(dir: &Path, strip_terminal: &[usize]) -> Sim {
    let p = SimParams {
        customers: 150,
        terminals: 1_500,
        days: 45,
        seed: 3,
        ..SimParams::default()
    };
    let txs = simulate_transactions(&p);
    let history = dir.join("history.csv");
    let f = std::fs::File::create(&history).unwrap();
    fraudstream::schema::csv::write_kaggle_csv(f, txs.clone(), true, true).unwrap();
    let stream = dir.join("stream.jsonl");
    let labels = dir.join("labels.jsonl");
    let mut s = std::io::BufWriter::new(std::fs::File::create(&stream).unwrap());
    let mut l = std::io::BufWriter::new(std::fs::File::create(&labels).unwrap());
    for (i, t) in txs.iter().enumerate() {
        let mut u = t.clone();
        u.label = None;
        if strip_terminal.contains(&i) {
            u.terminal_id = None;
        }
        writeln!(s, "{}", encode_transaction(&u)).unwrap();
        writeln!(l, "{}", label_json(t, t.label.unwrap())).unwrap();
    }
    s.flush().unwrap();
    l.flush().unwrap();
    Sim {
        history,
        stream,
        labels,
        rows: txs.len(),
    }
}

/// Every sink local under `dir`, reading the simulated stream, with `velocity` (TOML)
/// merged over it.
fn config(dir: &Path, sim: &Sim, velocity: &str) -> PathBuf {
    common::TestConfig::local(dir)
        .set("source.kind", "file")
        .set("source.path", sim.stream.display().to_string())
        .set("scoring.batch_size", 64)
        .set("scoring.batch_timeout", "2ms")
        .set("lake.writer.max_rows", 5000)
        .set("lake.writer.writer_id", "t")
        .unset("models.poll_interval")
        .set("api.enabled", false)
        .merge(velocity)
        .write(dir.join("run.toml"))
}

fn fraudstream(args: &[&str]) -> std::process::Output {
    common::fraudstream().args(args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

/// Train a model with the handbook's entity features and publish it.
fn publish_model(dir: &Path, sim: &Sim) {
    let registry = dir.join("registry");
    let model = dir.join("m.fsm");
    let out = fraudstream(&[
        "train",
        "-i",
        sim.history.to_str().unwrap(),
        "--velocity",
        "handbook",
        "--trees",
        "20",
        "--split",
        "time",
        "-o",
        model.to_str().unwrap(),
        "--publish",
        registry.to_str().unwrap(),
    ]);
    let text = ok(&out);
    assert!(text.contains("published"), "{text}");
}

/// Every lake row's stored entity features, by transaction id.
fn lake_features(dir: &Path) -> HashMap<String, Vec<f32>> {
    common::lake_features(&dir.join("lake"), &VelocitySpec::handbook())
        .into_iter()
        .collect()
}

/// A simulated history (nothing stripped), a published model with the handbook's
/// features, and a configuration computing them with the labels file, plus `extra`.
fn velocity_setup(dir: &Path, extra: &str) -> (Sim, PathBuf) {
    let sim = simulated(dir, &[]);
    publish_model(dir, &sim);
    let labels = format!(
        "[velocity]\nenabled = true\nlabels_path = \"{}\"\n{extra}",
        sim.labels.display()
    );
    let cfg = config(dir, &sim, &labels);
    (sim, cfg)
}

#[test]
fn served_features_equal_offline_features() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = velocity_setup(dir.path(), "");
    let text = ok(&fraudstream(&["run", "--config", cfg.to_str().unwrap()]));
    assert!(text.contains("online precision"), "{text}");

    let online = lake_features(dir.path());
    assert_eq!(online.len(), sim.rows, "one lake row per transaction");
    let (offline, _) = read_dataset_with(
        sim.history.to_str().unwrap(),
        ReadOptions::default(),
        Some(&VelocitySpec::handbook()),
    )
    .unwrap();
    let width = offline.derived.len();
    assert_eq!(width, 14);
    let mut risky = 0;
    for (i, id) in offline.ids.iter().enumerate() {
        let want: Vec<f32> = offline.columns[30..].iter().map(|c| c[i] as f32).collect();
        let got = online
            .get(id)
            .unwrap_or_else(|| panic!("no lake row for {id}"));
        assert_eq!(got, &want, "transaction {id}: served vs offline features");
        risky += usize::from(want[9..12].iter().any(|&r| r > 0.0));
    }
    assert!(
        risky > 100,
        "terminal risk features are exercised ({risky} rows)"
    );
    // Every label was joined with its verdict.
    let line = text
        .lines()
        .find(|l| l.contains("labels without a verdict"))
        .unwrap();
    assert!(line.trim().ends_with(" 0"), "{line}");
}

/// The reproduction of issue 22: one transaction with `Time` in milliseconds in the
/// middle of the stream (and `±1e300`, and a `NaN`) once moved the store's clock, so
/// every later row read as older than the horizon and every card count fell to 1. Now
/// each is scored, counted in no entity and dead-lettered with `time_out_of_range` (the
/// `NaN` is invalid input), and every other row's features are the clean run's, in a
/// debug build (where time arithmetic that overflows would panic).
#[test]
fn wrong_times_change_no_other_rows_features() {
    let clean_dir = tempfile::tempdir().unwrap();
    let (_, clean_cfg) = velocity_setup(clean_dir.path(), "");
    ok(&fraudstream(&[
        "run",
        "--config",
        clean_cfg.to_str().unwrap(),
    ]));
    let clean = lake_features(clean_dir.path());

    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = velocity_setup(dir.path(), "");
    let text = std::fs::read_to_string(&sim.stream).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let middle = lines.len() / 2;
    let mut template: serde_json::Value = serde_json::from_str(lines[middle]).unwrap();
    let mut wrong = Vec::new();
    for (id, time) in [
        ("ms", serde_json::json!(1.7e12)),
        ("far-future", serde_json::json!(1e300)),
        ("far-past", serde_json::json!(-1e300)),
        ("nan", serde_json::json!("NaN")),
    ] {
        template["id"] = id.into();
        template["Time"] = time;
        wrong.push(template.to_string());
    }
    let mut poisoned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    for (k, w) in wrong.into_iter().enumerate() {
        poisoned.insert(middle + 10 * k, w);
    }
    std::fs::write(&sim.stream, poisoned.join("\n") + "\n").unwrap();
    ok(&fraudstream(&["run", "--config", cfg.to_str().unwrap()]));
    let served = lake_features(dir.path());

    assert_eq!(clean.len(), sim.rows);
    let mut after = 0;
    for (id, want) in &clean {
        assert_eq!(served.get(id), Some(want), "transaction {id}");
        after += usize::from(id.parse::<usize>().is_ok_and(|i| i > middle));
    }
    assert!(after > 1_000, "{after} rows after the wrong ones");
    for id in ["ms", "far-future", "far-past"] {
        assert!(served.contains_key(id), "{id} is scored");
    }
    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dlq
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<&str> = dead.iter().filter_map(|d| d["code"].as_str()).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == "time_out_of_range").count(),
        3,
        "{dlq}"
    );
    assert_eq!(codes.len(), 4, "and the NaN as invalid input: {dlq}");
}

#[test]
fn a_missing_entity_id_is_refused_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let stripped = [5, 77, 300];
    let sim = simulated(dir.path(), &stripped);
    publish_model(dir.path(), &sim);
    let cfg = config(
        dir.path(),
        &sim,
        "[velocity]\nenabled = true\n[velocity.features]\nmissing_entity = \"refuse\"\ntime_flags = true\ninclude_current = true\n[[velocity.features.entity]]\nname = \"card_id\"\nwindows = [\"1d\", \"7d\", \"30d\"]\naggregates = [\"count\", \"mean_amount\"]\n[[velocity.features.entity]]\nname = \"terminal_id\"\nwindows = [\"1d\", \"7d\", \"30d\"]\naggregates = [\"delayed_count\", \"risk\"]",
    );
    let text = ok(&fraudstream(&["run", "--config", cfg.to_str().unwrap()]));
    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dlq
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), stripped.len(), "{dlq}");
    for d in &dead {
        assert_eq!(d["code"], "missing_entity", "{d}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("terminal_id")
                || d.to_string().contains("terminal_id"),
            "{d}"
        );
    }
    let online = lake_features(dir.path());
    assert_eq!(online.len(), sim.rows - stripped.len(), "{text}");
    for i in stripped {
        assert!(!online.contains_key(&i.to_string()), "row {i} was refused");
    }
}

#[test]
fn a_model_needing_entity_features_is_refused_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulated(dir.path(), &[]);
    publish_model(dir.path(), &sim);
    let cfg = config(dir.path(), &sim, "");
    let out = fraudstream(&["run", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("uses entity features"), "{text}");
}

/// One HTTP/1.1 request on `addr` (`body`: JSON to POST): the status and the body as
/// JSON.
fn request(addr: &str, path: &str, body: Option<&str>) -> Option<(u16, serde_json::Value)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let head = format!("{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    match body {
        None => write!(s, "GET {head}\r\n"),
        Some(b) => write!(
            s,
            "POST {head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
    }
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

#[test]
fn online_precision_and_recall_reach_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = velocity_setup(dir.path(), "");
    // The API on a free port, the source followed so the detector stays up.
    common::TestConfig::load(&cfg)
        .unset("api.enabled")
        .write(&cfg);
    let log = dir.path().join("log.txt");
    let mut child = common::fraudstream()
        .args(["run", "--follow", "--config", cfg.to_str().unwrap()])
        .stdout(std::fs::File::create(dir.path().join("out.txt")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut labels = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let Some(addr) = logged
            .lines()
            .find_map(|l| l.strip_prefix("api: http://"))
            .and_then(|l| l.split('/').next())
        else {
            continue;
        };
        if let Some((200, stats)) = request(addr, "/v1/stats", None) {
            // A model with entity features is not scored outside the stream.
            let one = std::fs::read_to_string(&sim.stream).unwrap();
            let (status, body) =
                request(addr, "/v1/score", Some(one.lines().next().unwrap())).unwrap();
            assert_eq!(status, 409, "{body}");
            assert_eq!(body["code"], "entity_features", "{body}");
            labels = stats["labels"].clone();
            let joined = ["tp", "fp", "fn", "tn"]
                .iter()
                .map(|k| labels[k].as_u64().unwrap_or(0))
                .sum::<u64>();
            if joined == sim.rows as u64 {
                break;
            }
        }
    }
    let stopped = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    child.wait().unwrap();
    let joined: u64 = ["tp", "fp", "fn", "tn"]
        .iter()
        .map(|k| labels[k].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(joined, sim.rows as u64, "every label joined: {labels}");
    assert_eq!(labels["unmatched"], 0, "{labels}");
    let (p, r) = (
        labels["precision"].as_f64().unwrap(),
        labels["recall"].as_f64().unwrap(),
    );
    assert!(
        (0.0..=1.0).contains(&p) && (0.0..=1.0).contains(&r),
        "{labels}"
    );
    assert!(labels["tp"].as_u64().unwrap() > 0, "{labels}");
}

#[test]
fn retrain_learns_from_the_served_features_and_the_labels() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.jsonl");
    let (sim, cfg) = velocity_setup(
        dir.path(),
        &format!(
            "[retrain]\nhistory = [\"{d}/lake/\"]\nlabels = [\"{l}\"]\n\
             min_gate_frauds = 5\nmin_gate_rows = 100\ntrees = 20\n",
            d = dir.path().display(),
            l = labels.display()
        ),
    );
    ok(&fraudstream(&["run", "--config", cfg.to_str().unwrap()]));
    let decision = common::retrain_decision(&cfg);
    // Every lake row (served features, no Class) took its label from the labels file.
    assert_eq!(decision["rows_read"], sim.rows, "{decision}");
    assert_eq!(decision["rows_used"], sim.rows, "{decision}");
    let frauds = std::fs::read_to_string(&sim.labels)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"Class\":1"))
        .count();
    assert_eq!(decision["frauds"], frauds, "{decision}");
    // The gate graded both models on rows the live one held out.
    assert!(
        decision["holdout_frauds"].as_u64().unwrap() >= 5,
        "{decision}"
    );
    assert!(decision["candidate_auprc"].as_f64().is_some(), "{decision}");
    assert!(decision["live_auprc"].as_f64().is_some(), "{decision}");
    assert!(
        ["published", "rejected"].contains(&decision["decision"].as_str().unwrap()),
        "{decision}"
    );
}
