//! `fraudstream run` in embedded mode (file and stdin sources, local sinks): every valid
//! row gets exactly one verdict, invalid rows land in the dead-letter file with reasons,
//! the lake holds every scored row, and a second run reuses the stored model.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::TestConfig;
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::sinks::verdicts::VerdictStore;
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

/// Every sink local under `dir`, reading `source` (stdin in JSON lines when `-`).
fn settings(dir: &Path, source: &str) -> TestConfig {
    TestConfig::local(dir)
        .set("source.kind", "file")
        .set("source.path", source)
        .set("source.stdin_format", "jsonl")
        .set("scoring.batch_size", 100)
        .set("scoring.batch_timeout", "2ms")
        .set("scoring.top_k", 2)
        .set("bootstrap.history", SAMPLE)
        .set("lake.writer.max_rows", 1000)
        .set("lake.writer.writer_id", "t")
        .unset("models.poll_interval")
}

fn config(dir: &Path, source: &str) -> std::path::PathBuf {
    settings(dir, source).write(dir.join("run.toml"))
}

fn run(cfg: &Path, extra: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = common::fraudstream();
    cmd.args(["run", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr)
}

fn lake_rows(dir: &Path) -> usize {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).unwrap();
                total += ParquetRecordBatchReaderBuilder::try_new(f)
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum::<usize>();
            }
        }
    }
    total
}

fn line_field(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{text}"))
        .trim_start()
        .trim_start_matches(key)
        .trim()
        .to_owned()
}

#[tokio::test]
async fn file_source_end_to_end_with_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    // The sample with two broken rows.
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[10] = lines[10].replacen(',', ",oops", 1);
    lines[20] = lines[20].replace("\"0\"", "\"9\"");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let cfg = config(dir.path(), input.to_str().unwrap());

    let out = run(&cfg, &[], None);
    assert!(out.contains("trained a first model"), "{out}");
    assert!(out.contains("api: http://127.0.0.1:"), "{out}");
    assert_eq!(line_field(&out, "transactions"), "3446");
    assert_eq!(line_field(&out, "scored"), "3444");
    let version = line_field(&out, "model version");

    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dlq
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["line"], 11);
    assert_eq!(dead[0]["code"], "not_a_number");
    assert_eq!(dead[1]["code"], "bad_label");

    let store = LocalVerdictStore::open(dir.path().join("verdicts.db")).unwrap();
    assert_eq!(store.count().unwrap(), 3444);
    let v = store.get("0").await.unwrap().unwrap();
    assert_eq!(&*v.model_version, version);
    assert_eq!(v.top_features.len(), 2);
    assert_eq!(lake_rows(&dir.path().join("lake")), 3444);
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    let flagged: usize = line_field(&out, "flagged as fraud").parse().unwrap();
    assert_eq!(alerts.lines().count(), flagged);
    assert!(
        flagged > 150,
        "the sample has 246 frauds; flagged {flagged}"
    );

    // A second run serves the stored model and rewrites the same verdicts: still one each.
    let out2 = run(&cfg, &[], None);
    assert!(!out2.contains("trained a first model"), "{out2}");
    assert_eq!(line_field(&out2, "model version"), version);
    assert_eq!(store.count().unwrap(), 3444);
    assert_eq!(
        lake_rows(&dir.path().join("lake")),
        3444,
        "a rerun of the same file adds no lake row"
    );

    // The file grows by ten rows: a third run adds exactly those to the lake.
    let grown = lines.join("\n") + "\n" + &lines[1..=10].join("\n") + "\n";
    std::fs::write(&input, grown).unwrap();
    let out3 = run(&cfg, &[], None);
    assert_eq!(line_field(&out3, "scored"), "3453", "{out3}");
    assert_eq!(lake_rows(&dir.path().join("lake")), 3453);
}

#[test]
fn stdin_json_lines_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SAMPLE);
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut input = String::new();
    for i in 0..500 {
        let mut tx = data.row(i);
        tx.id = format!("stdin-{i}");
        input.push_str(&encode_transaction(&tx));
        input.push('\n');
    }
    input.push_str("{\"id\": \"broken\", \"Time\": \"x\"}\n");
    let out = run(&cfg, &["--source", "-"], Some(input.as_bytes()));
    assert_eq!(line_field(&out, "transactions"), "501");
    assert_eq!(line_field(&out, "scored"), "500");
    let store = LocalVerdictStore::open(dir.path().join("verdicts.db")).unwrap();
    assert_eq!(store.count().unwrap(), 500);
}

#[test]
fn an_empty_model_store_without_history_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), SAMPLE)
        .unset("bootstrap.history")
        .write(dir.path().join("run.toml"));
    let out = common::fraudstream()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is empty and no bootstrap.history is configured"),
        "{err}"
    );
}

/// `--follow` keeps reading a file as it grows; SIGTERM drains, prints the summary and
/// exits 0 with every appended row scored once.
#[test]
fn follow_tails_a_growing_file_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("live.jsonl");
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let line = |i: usize| {
        let mut tx = data.row(i);
        tx.id = format!("f-{i}");
        format!("{}\n", encode_transaction(&tx))
    };
    std::fs::write(&src, (0..100).map(line).collect::<String>()).unwrap();
    let cfg = config(dir.path(), src.to_str().unwrap());
    let mut child = common::fraudstream()
        .args(["run", "--follow", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.path().join("verdicts.db");
    let count = || {
        LocalVerdictStore::open(&db)
            .ok()
            .and_then(|s| s.count().ok())
            .unwrap_or(0)
    };
    let wait_for = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while count() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        count()
    };
    assert_eq!(wait_for(100), 100);
    // Append more, the last line in two writes (a partial line must wait for its end).
    let mut f = std::fs::OpenOptions::new().append(true).open(&src).unwrap();
    f.write_all((100..250).map(line).collect::<String>().as_bytes())
        .unwrap();
    let last = line(250);
    f.write_all(&last.as_bytes()[..20]).unwrap();
    f.flush().unwrap();
    assert_eq!(wait_for(250), 250);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still following");
    f.write_all(&last.as_bytes()[20..]).unwrap();
    f.flush().unwrap();
    assert_eq!(wait_for(251), 251);

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fraudstream run: summary"), "{text}");
    assert_eq!(count(), 251, "each row scored once");
}

/// `models.shadow`: a second version scores every row into the lake (never the verdicts
/// or alerts), and `model compare --shadow` reads both models' metrics back from the lake
/// on the same rows, equal to scoring the file with each model directly.
#[tokio::test]
async fn a_shadow_model_scores_into_the_lake_and_compare_reads_it_back() {
    use fraudstream::eval::evaluate;
    use fraudstream::pipeline::{TrainOptions, train_model};
    use fraudstream::registry::ModelStore;
    use fraudstream::storage::local::LocalStore;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SAMPLE);
    let out = run(&cfg, &[], None);
    let serving = line_field(&out, "model version");

    // A weaker second version in the same store, not served.
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 4;
    opts.params.max_depth = Some(3);
    let shadow = train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model;
    let store = ModelStore::new(std::sync::Arc::new(
        LocalStore::new(dir.path().join("registry")).unwrap(),
    ));
    store.put(&shadow).await.unwrap();
    settings(dir.path(), SAMPLE)
        .set("models.shadow", shadow.version())
        .write(&cfg);
    std::fs::remove_dir_all(dir.path().join("lake")).unwrap();
    std::fs::remove_file(dir.path().join("alerts.jsonl")).unwrap();

    let out = run(&cfg, &[], None);
    assert_eq!(line_field(&out, "model version"), serving, "{out}");
    let verdicts = LocalVerdictStore::open(dir.path().join("verdicts.db")).unwrap();
    assert_eq!(
        &*verdicts.get("0").await.unwrap().unwrap().model_version,
        serving
    );
    let flagged: usize = line_field(&out, "flagged as fraud").parse().unwrap();
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(
        alerts.lines().count(),
        flagged,
        "alerts follow the serving model only"
    );

    let compare = common::fraudstream()
        .args(["model", "compare", "--shadow", "--json", "--lake"])
        .arg(format!("{}/lake/", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        compare.status.success(),
        "{}",
        String::from_utf8_lossy(&compare.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(compare.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let p = &lines[0];
    assert_eq!(p["serving"], serving.as_str());
    assert_eq!(p["shadow"], shadow.version());
    assert_eq!(p["rows"], 3446);
    assert_eq!(p["labelled"], 3446);
    assert_eq!(p["frauds"], 246);
    assert_eq!(p["serving_flagged"].as_u64().unwrap() as usize, flagged);
    let labels = data.labels().unwrap();
    let auprc = |m: &fraudstream::model::Model| {
        evaluate(&m.score_dataset(&data).unwrap(), &labels, 0.5)
            .auprc
            .unwrap()
    };
    let (served, _) = store.get(&serving).await.unwrap();
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-9;
    assert!(close(&p["serving_metrics"]["auprc"], auprc(&served)), "{p}");
    assert!(close(&p["shadow_metrics"]["auprc"], auprc(&shadow)), "{p}");
    assert!(p["difference"]["low"].as_f64().unwrap() <= p["difference"]["high"].as_f64().unwrap());
    let agreement = p["agreement"].as_f64().unwrap();
    assert!(agreement > 0.5 && agreement <= 1.0, "{p}");

    // A fixed shadow version that is not in the store is refused at start.
    settings(dir.path(), SAMPLE)
        .set("models.shadow", "no-such-version")
        .write(&cfg);
    let out = common::fraudstream()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid `models.shadow`") && err.contains("no-such-version"),
        "{err}"
    );
}
