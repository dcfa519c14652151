//! One bad message never stops the detector, against the real services (noida-db,
//! DynamoDB Local, SeaweedFS), the detector built in-process from its configuration file:
//! - poison messages (an empty key and no id, an id past the contract, a control
//!   character in the key, a message larger than the producer accepts) are dead-lettered
//!   or given a deterministic id, and the rest goes on;
//! - a webhook that refuses alerts for good gets its alerts dead-lettered instead of
//!   stalling the partition;
//! - bad configuration (a missing table, bucket or topic) is refused at start, naming it;
//! - input with no newline costs bounded memory.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::detector::{Deployment, read_topic};
use common::webhook::Endpoint;
use fraudstream::detector::Detector;
use fraudstream::schema::json::encode_transaction;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The tests assert on the process-wide metrics recorder: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Wait until every input partition is committed to its end.
async fn wait_committed(d: &Deployment) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while d.offsets().iter().any(|(at, high)| at != high) {
        assert!(
            std::time::Instant::now() < deadline,
            "offsets not committed: {:?}",
            d.offsets()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_never_stop_the_detector() {
    let _serial = SERIAL.lock().await;
    let d = Deployment::new("poison").await;
    d.produce(0, 100).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &d.brokers)
        .set("message.max.bytes", "5000000")
        .create()
        .unwrap();
    let mut no_id: serde_json::Value =
        serde_json::from_str(&encode_transaction(&d.data.row(0))).unwrap();
    no_id.as_object_mut().unwrap().remove("id");
    let body = no_id.to_string();
    let mut long_id = d.data.row(1);
    long_id.id = "x".repeat(3000);
    let oversized = vec![b'a'; 1_030_000];
    let poison: Vec<(Option<&[u8]>, Vec<u8>)> = vec![
        // No id and an empty key: the id becomes <topic>-<partition>-<offset>.
        (Some(b""), body.clone().into_bytes()),
        // No id and no key at all: the same.
        (None, body.clone().into_bytes()),
        // An id DynamoDB would refuse as a key (over 2,048 bytes): dead-lettered.
        (Some(b"long"), encode_transaction(&long_id).into_bytes()),
        // No id, and a key with a control character: dead-lettered.
        (Some(b"bad\x01key"), body.clone().into_bytes()),
        // Larger than the detector's producer accepts: dead-lettered, bounded.
        (Some(b"huge"), oversized),
    ];
    for (key, payload) in &poison {
        let mut rec = FutureRecord::to(&d.topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(*k);
        }
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    d.produce(100, 200).await;

    let det = d.start(&d.write_config(false)).await;
    let want = 202; // 200 valid, and the two with a derived id
    assert!(
        d.wait_for_verdicts(want, Duration::from_secs(120)).await,
        "stalled at {} verdicts",
        d.verdict_count().await
    );
    wait_committed(&d).await;
    assert!(det.alive(), "a poison message stopped the detector");
    let summary = det.stop().await.expect("a clean stop");
    assert_eq!(d.verdict_count().await, want);
    assert_eq!(summary.stats.scored, want, "each scored once");
    assert_eq!(summary.stats.dead_letters, 3);
    let derived: Vec<String> = d
        .verdict_ids()
        .await
        .into_iter()
        .filter(|id| id.starts_with(&format!("{}-", d.topic)))
        .collect();
    assert_eq!(derived.len(), 2, "{derived:?}");

    let dead = read_topic(&d.brokers, &format!("{}.dlq", d.topic), 3);
    assert_eq!(dead.len(), 3);
    let mut codes: Vec<String> = dead
        .iter()
        .map(|m| header(m, "reason_code").unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, ["invalid_id", "invalid_id", "too_large"]);
    let huge = dead
        .iter()
        .find(|m| header(m, "reason_code").as_deref() == Some("too_large"))
        .unwrap();
    assert_eq!(
        huge.payload().unwrap().len(),
        1024,
        "bounded to its first KiB"
    );
    assert_eq!(header(huge, "original_size").as_deref(), Some("1030000"));
    assert_eq!(header(huge, "original_sha256").map(|s| s.len()), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_refuses_alerts_gets_them_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let d = Deployment::new("refused").await;
    let n = 1500;
    d.produce(0, n).await;
    let endpoint = Endpoint::start(vec![Some(400)]).await;
    let config = d.write(
        &d.config(false)
            .set("alerts.webhook.url", endpoint.url.as_str())
            .set("alerts.webhook.attempts", 2),
        "detector.toml",
    );

    let det = d.start(&config).await;
    assert!(
        d.wait_for_verdicts(n as u64, Duration::from_secs(120))
            .await,
        "stalled at {} verdicts",
        d.verdict_count().await
    );
    wait_committed(&d).await;
    let summary = det.stop().await.expect("a clean stop");
    let flagged = summary.stats.flagged;
    assert!(flagged > 0, "the sample has frauds");
    assert_eq!(
        summary.stats.dead_letters, flagged,
        "every alert refused, none lost"
    );
    assert_eq!(summary.stats.scored, n as u64);
    assert!(!endpoint.requests().is_empty());
    let dead = read_topic(&d.brokers, &format!("{}.dlq", d.topic), flagged as usize);
    assert_eq!(
        dead.len() as u64,
        flagged,
        "one dead letter per refused alert"
    );
    for m in &dead {
        assert_eq!(header(m, "reason_code").as_deref(), Some("alert_refused"));
        let reason = header(m, "reason").unwrap();
        assert!(reason.contains("HTTP 400"), "{reason}");
        assert!(
            !reason.contains("s3cr3t"),
            "the webhook path is a secret: {reason}"
        );
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(v["fraud"], true);
    }
    // Refused alerts left the batch; every transaction still has its verdict.
    assert_eq!(d.verdict_count().await, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused_at_start() {
    let _serial = SERIAL.lock().await;
    let d = Deployment::new("fatal").await;
    let build = |config: common::TestConfig| async move {
        match Detector::build(&config.parse()).await {
            Ok(_) => panic!("built with a bad configuration"),
            Err(e) => format!("{e:#}"),
        }
    };

    let e = build(d.config(false).set("verdicts.dynamodb.create_table", false)).await;
    assert!(e.contains(&d.table) && e.contains("create_table"), "{e}");

    let bucket = common::unique("missing").to_lowercase();
    let no_bucket = d
        .config(false)
        .set("lake.location", format!("s3://{bucket}/lake"));
    let e = build(no_bucket).await;
    assert!(e.contains("lake.location") && e.contains(&bucket), "{e}");

    let e = build(d.config(false).set("kafka.dlq_topic", "no-such-topic-here")).await;
    assert!(
        e.contains("kafka.dlq_topic") && e.contains("no-such-topic-here"),
        "{e}"
    );
}

/// 300 MB with no newline on stdin, then one valid line: the long "line" is one dead
/// letter, the valid one is scored, and memory stays near the line limit.
#[test]
fn a_line_with_no_end_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
    let config = common::TestConfig::local(dir.path())
        .set("source.kind", "stdin")
        .set("source.stdin_format", "jsonl")
        .set("bootstrap.history", sample)
        .set("api.enabled", false)
        .write(dir.path().join("c.toml"));
    let mut child = common::fraudstream()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let (data, _) = fraudstream::schema::read_dataset(sample, Default::default()).unwrap();
    let mut valid = data.row(3);
    valid.id = "after-the-flood".into();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..300 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ended = stdin.write_all(format!("\n{}\n", encode_transaction(&valid)).as_bytes());
    });
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "peak RSS with a 300 MB line on stdin: {} MiB",
        peak_kib / 1024
    );
    assert!(
        peak_kib < 200 * 1024,
        "peak RSS {peak_kib} KiB: the long line was buffered"
    );
    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let lines: Vec<&str> = dlq.lines().collect();
    assert_eq!(lines.len(), 1, "{dlq}");
    assert!(lines[0].contains("\"code\":\"too_large\""), "{dlq}");
    assert!(lines[0].contains("314572800 bytes"), "{dlq}");
    let store = fraudstream::sinks::verdicts::local::LocalVerdictStore::open(
        dir.path().join("verdicts.db"),
    )
    .unwrap();
    assert_eq!(store.count().unwrap(), 1);
}
