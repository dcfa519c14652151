//! Drift monitoring end to end, in process: a detector bootstraps its model from the
//! shipped sample (which records the reference in the manifest), scores a file, and its
//! monitor judges the drift. The same file raises nothing; a file whose `Amount` moved
//! raises one drift alert for it on the alert sinks, and `GET /v1/monitoring` says so.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestConfig;
use fraudstream::detector::Detector;
use fraudstream::shutdown::Shutdown;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn config(dir: &Path, source: &Path) -> fraudstream::config::Config {
    test_config(dir, source).parse()
}

fn test_config(dir: &Path, source: &Path) -> TestConfig {
    TestConfig::local(dir)
        .set("source.kind", "file")
        .set("source.path", source.to_str().unwrap())
        .set("scoring.batch_size", 200)
        .set("bootstrap.history", SAMPLE)
        // The whole file: the sample is in time order, and a window of its last hours
        // differs from the whole (V1 follows the time of day), which is drift too.
        .set("monitoring.window", 5_000)
        // Judged only once (nearly) the whole file is in: the first rows alone are
        // early hours, not like the whole either.
        .set("monitoring.min_rows", 3_400)
        .set("monitoring.alert_after", "0s")
        .set("monitoring.interval", "100ms")
}

/// Run a detector over `source` to its end; the monitoring document (read over HTTP
/// while it runs, then from the handles) and the drift alerts in the alerts file.
async fn run(
    dir: &Path,
    source: &Path,
) -> (
    serde_json::Value,
    Vec<serde_json::Value>,
    std::sync::Arc<fraudstream::model::Model>,
) {
    let cfg = config(dir, source);
    let detector = Detector::build(&cfg).await.unwrap();
    let handles = detector.handles();
    let summary = detector
        .run(Shutdown::new(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(summary.stats.scored > 3_000);
    let doc = serde_json::to_value(handles.monitor.document()).unwrap();
    let model = handles.model.load_full();
    let alerts = std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["kind"] == "drift")
        .collect();
    (doc, alerts, model)
}

/// The drift of every row in the lake under `dir`, as `fraudstream monitor` computes it
/// (its `all` line).
fn lake_drift(dir: &Path, model: &fraudstream::model::Model) -> serde_json::Value {
    use fraudstream::monitoring::batch::DriftByDay;
    let mut counts = DriftByDay::new(model, &[]).unwrap();
    let mut stack = vec![dir.join("lake")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() && !name.starts_with('_') {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                let data = bytes::Bytes::from(std::fs::read(&p).unwrap());
                if !data.is_empty() {
                    let rows =
                        fraudstream::sinks::lake::read_features(data, &model.meta().features)
                            .unwrap();
                    counts.add(&rows, None, None);
                }
            }
        }
    }
    let days = counts.finish(&fraudstream::monitor::Bands::default());
    serde_json::to_value(days.last().unwrap()).unwrap()
}

/// Feature `name` in a monitoring document.
fn feature<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_data_is_stable_and_a_moved_amount_raises_a_drift_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, alerts, model) = run(dir.path(), Path::new(SAMPLE)).await;
    assert_eq!(doc["status"], "ok", "{doc}");
    // `fraudstream monitor` over the lake counts the same rows the same way: the same PSI.
    let batch = lake_drift(dir.path(), &model);
    assert_eq!(batch["day"], "all");
    assert_eq!(batch["window_rows"], doc["window_rows"]);
    for (stream, lake) in doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&doc["score"]])
        .zip(
            batch["features"]
                .as_array()
                .unwrap()
                .iter()
                .chain([&batch["score"]]),
        )
    {
        assert_eq!(stream["name"], lake["name"]);
        let (a, b) = (
            stream["psi"].as_f64().unwrap(),
            lake["psi"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9,
            "{}: stream {a}, lake {b}",
            stream["name"]
        );
    }
    assert_eq!(doc["window_rows"], doc["rows_since_live"]);
    let amount = feature(&doc, "Amount");
    assert!(amount["psi"].as_f64().unwrap() < 0.1, "{amount}");
    assert!(doc["score"]["psi"].as_f64().is_some());
    assert!(
        alerts.is_empty(),
        "no drift on the training data: {alerts:?}\n{}",
        serde_json::to_string_pretty(&doc["features"][0]).unwrap()
    );

    // The same rows with every amount ten times larger (a change of currency upstream).
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let amount_at = header
        .split(',')
        .position(|h| h.trim_matches('"') == "Amount")
        .unwrap();
    let mut moved = format!("{header}\n");
    for l in lines {
        let mut cells: Vec<String> = l.split(',').map(str::to_owned).collect();
        let a: f64 = cells[amount_at].trim_matches('"').parse().unwrap();
        cells[amount_at] = format!("{}", a * 10.0 + 100.0);
        moved.push_str(&cells.join(","));
        moved.push('\n');
    }
    let source = dir.path().join("moved.csv");
    std::fs::write(&source, moved).unwrap();
    let (doc, alerts, _) = run(dir.path(), &source).await;
    assert_eq!(doc["top"][0], "Amount", "{doc}");
    let amount = feature(&doc, "Amount");
    assert_eq!(amount["state"], "significant", "{amount}");
    assert!(amount["out_of_range"].as_f64().unwrap() > 0.0);
    let on_amount: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["variable"] == "Amount")
        .collect();
    assert_eq!(on_amount.len(), 1, "one drift alert for Amount: {alerts:?}");
    assert_eq!(on_amount[0]["state"], "significant");
    assert_eq!(on_amount[0]["model_version"], doc["model_version"]);
    assert!(
        !alerts.iter().any(|a| a["variable"] == "V1"),
        "V1 did not move: {alerts:?}"
    );
}

/// `fraudstream monitor` with labels: quality by week from the lake's rows (their
/// `Class`) and a labels file (which wins), as JSON, and the HTML report's charts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_quality_by_week_from_the_lake_and_labels_with_charts() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _, _) = run(dir.path(), Path::new(SAMPLE)).await;
    let cfg = test_config(dir.path(), Path::new(SAMPLE)).write(dir.path().join("run.toml"));
    // Ten legitimate rows relabelled as frauds (a chargeback the stream did not carry).
    let mut relabel = Vec::new();
    for f in common::parquet_files(&dir.path().join("lake")) {
        let data = bytes::Bytes::from(std::fs::read(&f).unwrap());
        if data.is_empty() {
            continue;
        }
        for row in common::parquet_columns(data, &["id", "Class"]) {
            if row[1] == "0" && relabel.len() < 10 {
                relabel.push(row[0].clone());
            }
        }
    }
    assert_eq!(relabel.len(), 10);
    let labels = dir.path().join("labels.jsonl");
    let lines: Vec<String> = relabel
        .iter()
        .map(|id| serde_json::json!({"id": id, "Class": 1, "Time": 0}).to_string())
        .collect();
    std::fs::write(&labels, lines.join("\n") + "\n").unwrap();
    let monitor = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = common::fraudstream()
            .args(["monitor", "--json", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("week").is_some())
            .collect()
    };
    let report = dir.path().join("report");
    let plain = monitor(&["--report", report.to_str().unwrap()]);
    let all = plain.last().unwrap();
    assert_eq!(all["week"], "all");
    assert_eq!(all["verdicts"], doc["rows_since_live"], "{all}");
    // The sample carries its labels: every verdict is labelled.
    assert_eq!(all["labelled"], all["verdicts"], "{all}");
    assert_eq!(all["unlabelled"], 0.0);
    assert!(all["auprc"].as_f64().unwrap() > 0.5, "{all}");
    let with = monitor(&["--labels", labels.to_str().unwrap()]);
    let all_with = with.last().unwrap();
    assert_eq!(
        all_with["frauds"].as_u64().unwrap(),
        all["frauds"].as_u64().unwrap() + 10,
        "{all_with}"
    );
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    for chart in ["psi.svg", "scores.svg", "quality.svg"] {
        let svg = std::fs::read_to_string(report.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{chart}");
        assert!(html.contains(chart), "{chart} linked");
    }
    assert!(html.contains("Quality by week"));
}
