//! loadgen against the real broker (scripts/services.sh) and on stdout.

use std::process::Command;
use std::time::Duration;

use fraudstream_core::schema::json::{DEFAULT_MAX_MESSAGE_BYTES, decode_transaction_limited};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/creditcard-sample.csv");

/// Runs loadgen; returns stdout split into lines (bytes: malformed lines are not UTF-8)
/// and stderr.
fn loadgen(args: &[&str]) -> (Vec<Vec<u8>>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "loadgen {args:?} failed: {stderr}");
    let lines = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (lines, stderr)
}

fn report(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON report");
    serde_json::from_str(line).unwrap()
}

#[test]
fn stdout_replay_of_the_sample() {
    let (out, err) = loadgen(&[
        "--input",
        SAMPLE,
        "--stdout",
        "--limit",
        "300",
        "--start-offset",
        "10",
    ]);
    assert_eq!(out.len(), 300);
    let first =
        decode_transaction_limited(&out[0], DEFAULT_MAX_MESSAGE_BYTES, || "x".into()).unwrap();
    assert_eq!(first.id, "10", "--start-offset skips rows");
    assert_eq!(report(&err)["sent"], 300);
}

#[test]
fn synthetic_with_malformed_messages_on_stdout() {
    let (out, err) = loadgen(&[
        "--synthetic",
        "2000",
        "--malformed-ratio",
        "0.1",
        "--stdout",
        "--seed",
        "7",
    ]);
    let r = report(&err);
    let bad = out
        .iter()
        .filter(|l| {
            decode_transaction_limited(l, DEFAULT_MAX_MESSAGE_BYTES, || "x".into()).is_err()
        })
        .count();
    assert_eq!(out.len(), 2000);
    assert_eq!(r["malformed"].as_u64().unwrap() as usize, bad);
    assert_eq!(r["invalid"], r["malformed"], "no key-borne kinds on stdout");
    assert!((120..=280).contains(&bad), "{bad} malformed of 2000 at 10%");
}

#[test]
fn loop_replays_with_new_ids() {
    let (out, _) = loadgen(&["--input", SAMPLE, "--stdout", "--loop", "--limit", "3500"]);
    let last = out.last().unwrap();
    let tx = decode_transaction_limited(last, DEFAULT_MAX_MESSAGE_BYTES, || "x".into()).unwrap();
    assert!(tx.id.ends_with("-p1"), "{}", tx.id);
}

#[test]
fn kafka_replay_is_fully_acknowledged() {
    let brokers = std::env::var("FRAUDSTREAM_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "FRAUDSTREAM_TEST_KAFKA is not set: this test needs a real Kafka broker. Start it \
             with `eval \"$(scripts/services.sh up kafka)\"` (or run `make test`)."
        )
    });
    let topic = format!(
        "loadgen-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (_, err) = loadgen(&[
        "--synthetic",
        "3000",
        "--malformed-ratio",
        "0.02",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--rate",
        "20000",
    ]);
    let r = report(&err);
    assert_eq!(r["sent"], 3000);
    assert_eq!(r["acknowledged"], 3000);
    assert_eq!(r["failed"], 0);

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}-check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let (mut n, mut bad, mut stamped) = (0, 0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while n < 3000 && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            n += 1;
            let key = m.key().unwrap_or_default();
            // The detector's rule: a JSON without id takes the key, unless it is empty.
            let default_id = || match std::str::from_utf8(key) {
                Ok(k) if !k.is_empty() => k.to_owned(),
                _ => "topic-0-1".to_owned(),
            };
            if decode_transaction_limited(
                m.payload().unwrap_or_default(),
                DEFAULT_MAX_MESSAGE_BYTES,
                default_id,
            )
            .is_err()
            {
                bad += 1;
            }
            assert!(
                key.is_empty() || key.starts_with(b"syn-"),
                "keys are transaction ids (or empty, for that poison kind)"
            );
            if m.headers()
                .is_some_and(|h| h.iter().any(|h| h.key == "sent_at_ms"))
            {
                stamped += 1;
            }
        }
    }
    assert_eq!(n, 3000);
    assert_eq!(bad, r["invalid"].as_u64().unwrap());
    assert!(r["malformed"].as_u64().unwrap() >= bad);
    assert_eq!(stamped, 3000);
}
