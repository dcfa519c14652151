//! The dead-letter sinks' conformance suite. Every backend — the JSON-lines file of the
//! embedded mode and the Kafka dead-letter topic (a real broker) — must:
//!
//! - keep each letter it accepts exactly once, with its origin (topic, partition, offset or
//!   file and line), its reason and its reason code, whatever the batch size and however
//!   many tasks send at once;
//! - keep a reason of any text (quotes, newlines, non-ASCII) intact;
//! - say which letters it did not accept when its destination fails, never `Ok`.
//!
//! The topic also keeps the original bytes and key (binary too), and bounds an oversized
//! letter (its first bytes, with the original size and SHA-256) rather than lose it.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fraudstream::kafka::KafkaSettings;
use fraudstream::stream::dead_letter::{
    DeadLetter, DeadLetterFile, DeadLetterSink, DeadLetterTopic, Origin, Reason,
};
use rdkafka::message::{Headers, Message};
use sha2::{Digest, Sha256};

/// A letter as read back from a backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Kept {
    /// `topic/partition/offset` or `path:line`.
    origin: String,
    code: String,
    reason: String,
}

fn origin_text(o: &Origin) -> String {
    match o {
        Origin::Kafka {
            topic,
            partition,
            offset,
        } => format!("{topic}/{partition}/{offset}"),
        Origin::File { path, line } => format!("{path}:{line}"),
    }
}

fn kept(l: &DeadLetter) -> Kept {
    Kept {
        origin: origin_text(&l.origin),
        code: l.reason.code.to_owned(),
        reason: l.reason.message.clone(),
    }
}

/// A backend under test: a fresh sink, and what its destination holds.
#[async_trait]
trait Backend {
    fn sink(&self) -> Arc<dyn DeadLetterSink>;
    /// Everything kept so far; `expect` is how many letters the test sent.
    async fn read(&self, expect: usize) -> Vec<Kept>;
    /// A sink whose destination refuses every write.
    fn broken(&self) -> Box<dyn DeadLetterSink>;
}

struct FileBackend {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl FileBackend {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("letters").join("dlq.jsonl");
        Self { _dir: dir, path }
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn sink(&self) -> Arc<dyn DeadLetterSink> {
        Arc::new(DeadLetterFile::open(&self.path).unwrap())
    }

    async fn read(&self, _expect: usize) -> Vec<Kept> {
        let text = std::fs::read_to_string(&self.path).unwrap();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
                let origin = match v.get("line") {
                    Some(n) => format!("{}:{n}", v["source"].as_str().unwrap()),
                    None => format!(
                        "{}/{}/{}",
                        v["topic"].as_str().unwrap(),
                        v["partition"],
                        v["offset"]
                    ),
                };
                Kept {
                    origin,
                    code: v["code"].as_str().unwrap().to_owned(),
                    reason: v["reason"].as_str().unwrap().to_owned(),
                }
            })
            .collect()
    }

    fn broken(&self) -> Box<dyn DeadLetterSink> {
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        Box::new(DeadLetterFile::open(std::path::Path::new("/dev/full")).unwrap())
    }
}

struct TopicBackend {
    settings: KafkaSettings,
}

impl TopicBackend {
    async fn new(properties: &[(&str, &str)]) -> Self {
        let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
        let topic = common::unique("letters");
        common::create_topics(&brokers, &[&topic], 2).await;
        let mut settings = KafkaSettings {
            brokers,
            dlq_topic: topic,
            ..KafkaSettings::default()
        };
        for (k, v) in properties {
            settings.properties.0.insert((*k).into(), (*v).into());
        }
        Self { settings }
    }

    fn messages(&self, expect: usize) -> Vec<rdkafka::message::OwnedMessage> {
        common::detector::read_topic(&self.settings.brokers, &self.settings.dlq_topic, expect)
    }
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .map(|h| String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap())
}

#[async_trait]
impl Backend for TopicBackend {
    fn sink(&self) -> Arc<dyn DeadLetterSink> {
        Arc::new(DeadLetterTopic::new(&self.settings).unwrap())
    }

    async fn read(&self, expect: usize) -> Vec<Kept> {
        self.messages(expect)
            .iter()
            .map(|m| {
                let h = |k: &str| header(m, k).unwrap_or_else(|| panic!("no {k} header"));
                let origin = match h("source_partition").as_str() {
                    "" => format!("{}:{}", h("source_topic"), h("source_offset")),
                    p => format!("{}/{p}/{}", h("source_topic"), h("source_offset")),
                };
                Kept {
                    origin,
                    code: h("reason_code"),
                    reason: h("reason"),
                }
            })
            .collect()
    }

    fn broken(&self) -> Box<dyn DeadLetterSink> {
        let settings = KafkaSettings {
            brokers: format!("127.0.0.1:{}", common::dead_port()),
            properties: self.settings.properties.clone(),
            ..self.settings.clone()
        };
        Box::new(DeadLetterTopic::new(&settings).unwrap())
    }
}

/// `n` letters of both origins, each reason distinct and awkward.
fn letters(n: usize) -> Vec<DeadLetter> {
    const CODES: [&str; 4] = ["invalid_json", "missing_field", "too_large", "not_finite"];
    let topic: Arc<str> = Arc::from("transactions");
    let file: Arc<str> = Arc::from("/data/in put.csv");
    (0..n)
        .map(|i| DeadLetter {
            origin: if i % 3 == 0 {
                Origin::File {
                    path: file.clone(),
                    line: i as u64 + 1,
                }
            } else {
                Origin::Kafka {
                    topic: topic.clone(),
                    partition: (i % 5) as i32,
                    offset: 1_000 + i as i64,
                }
            },
            key: Some(format!("card-{i}").into_bytes()),
            payload: format!("{{\"id\":\"tx-{i}\",\"Amount\":\"x\"}}").into_bytes(),
            reason: Reason {
                code: CODES[i % CODES.len()],
                message: format!("letter {i}: \"quoted\",\nnew line, tab\t, ünïcode ✓"),
            },
        })
        .collect()
}

/// Send `letters` from `tasks` tasks at once, in batches of `batch`; every send succeeds.
async fn send_all(
    sink: &Arc<dyn DeadLetterSink>,
    letters: &[DeadLetter],
    batch: usize,
    tasks: usize,
) {
    let chunks: Vec<Vec<DeadLetter>> = letters.chunks(batch).map(<[_]>::to_vec).collect();
    let per_task = chunks.len().div_ceil(tasks);
    let mut handles = Vec::new();
    for group in chunks.chunks(per_task.max(1)) {
        let (sink, group) = (sink.clone(), group.to_vec());
        handles.push(tokio::spawn(async move {
            for chunk in group {
                sink.send(&chunk).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

async fn each_letter_is_kept_once_with_its_origin_and_reason(backend: &dyn Backend) {
    let letters = letters(120);
    let sink = backend.sink();
    // One letter alone, then the rest from four tasks in batches of 7.
    sink.send(&letters[..1]).await.unwrap();
    send_all(&sink, &letters[1..], 7, 4).await;
    let mut got = backend.read(letters.len()).await;
    let mut want: Vec<Kept> = letters.iter().map(kept).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "{}", sink.describe());
    assert_eq!(got, want, "{}", sink.describe());
}

async fn a_failing_destination_names_every_letter_not_kept(backend: &dyn Backend) {
    let letters = letters(5);
    let sink = backend.broken();
    let err = sink
        .send(&letters)
        .await
        .expect_err("a sink that cannot write must not say Ok");
    assert_eq!(
        err.failed,
        vec![0, 1, 2, 3, 4],
        "{}: {err}",
        sink.describe()
    );
    assert!(!err.message.is_empty());
}

#[tokio::test]
async fn file_keeps_each_letter_once_with_its_origin_and_reason() {
    each_letter_is_kept_once_with_its_origin_and_reason(&FileBackend::new()).await;
}

#[tokio::test]
async fn file_names_every_letter_it_could_not_write() {
    a_failing_destination_names_every_letter_not_kept(&FileBackend::new()).await;
}

#[tokio::test]
async fn file_appends_across_reopenings() {
    let backend = FileBackend::new();
    let letters = letters(10);
    backend.sink().send(&letters[..4]).await.unwrap();
    // A restarted detector opens the same file: nothing before is lost or rewritten.
    backend.sink().send(&letters[4..]).await.unwrap();
    let got = backend.read(10).await;
    let want: Vec<Kept> = letters.iter().map(kept).collect();
    assert_eq!(got, want, "appended in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_keeps_each_letter_once_with_its_origin_and_reason() {
    let backend = TopicBackend::new(&[]).await;
    each_letter_is_kept_once_with_its_origin_and_reason(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_every_letter_it_could_not_send() {
    let backend = TopicBackend::new(&[("message.timeout.ms", "2000")]).await;
    let started = std::time::Instant::now();
    a_failing_destination_names_every_letter_not_kept(&backend).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a dead broker is reported, not waited on for ever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_keeps_original_bytes_and_key_and_bounds_what_is_too_large() {
    let backend = TopicBackend::new(&[]).await;
    let sink = backend.sink();
    let origin = |offset| Origin::Kafka {
        topic: Arc::from("transactions"),
        partition: 0,
        offset,
    };
    let reason = Reason {
        code: "invalid_json",
        message: "expected value at line 1 column 1".into(),
    };
    // Not UTF-8, with a NUL: kept byte for byte.
    let binary: Vec<u8> = vec![0xff, 0x00, 0xfe, b'{', 0x80];
    // Larger than the producer's default message.max.bytes (1,000,000).
    let huge: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = vec![
        DeadLetter {
            origin: origin(1),
            key: Some(vec![0x01, 0xff]),
            payload: binary.clone(),
            reason: reason.clone(),
        },
        DeadLetter {
            origin: origin(2),
            key: None,
            payload: Vec::new(),
            reason: reason.clone(),
        },
        DeadLetter {
            origin: origin(3),
            key: Some(b"card-9".to_vec()),
            payload: huge.clone(),
            reason,
        },
    ];
    sink.send(&sent).await.unwrap();
    let got: BTreeMap<String, rdkafka::message::OwnedMessage> = backend
        .messages(sent.len())
        .into_iter()
        .map(|m| (header(&m, "source_offset").unwrap(), m))
        .collect();
    assert_eq!(got.len(), 3, "{:?}", got.keys());

    let m = &got["1"];
    assert_eq!(m.payload(), Some(&binary[..]));
    assert_eq!(m.key(), Some(&[0x01, 0xff][..]));
    assert_eq!(header(m, "truncated"), None);

    let m = &got["2"];
    assert_eq!(m.payload().unwrap_or_default(), b"");
    assert_eq!(m.key(), None);

    let m = &got["3"];
    let kept = m.payload().unwrap();
    assert!(
        kept.len() < 1_000_000,
        "bounded, not refused: {}",
        kept.len()
    );
    assert_eq!(kept, &huge[..kept.len()], "its first bytes");
    assert_eq!(m.key(), Some(&b"card-9"[..]));
    assert_eq!(header(m, "truncated").as_deref(), Some("true"));
    assert_eq!(header(m, "original_size"), Some(huge.len().to_string()));
    let sha: String = Sha256::digest(&huge)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header(m, "original_sha256"), Some(sha));
}
