//! The detector against a real Kafka-protocol broker (noida-db from scripts/services.sh),
//! built in-process from a configuration file exactly as `fraudstream run` builds it:
//! N valid and M malformed messages in; exactly N verdicts, M dead letters with reasons,
//! one alert per fraud verdict, and committed offsets at the end of every partition; a
//! restarted detector in the same group finds nothing left to do.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fraudstream::config::Config;
use fraudstream::detector::Detector;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::ModelStore;
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::shutdown::Shutdown;
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use fraudstream::storage::local::LocalStore;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
use common::detector::PARTITIONS;

/// The tests here assert on the process-wide metrics recorder: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A model store in `dir` serving a forest of `trees` trees trained on the sample.
async fn publish_model(dir: &Path, trees: usize) {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = trees;
    let model = train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model;
    let store = ModelStore::new(std::sync::Arc::new(
        LocalStore::new(dir.join("registry")).unwrap(),
    ));
    store.put(&model).await.unwrap();
    store.set_latest(model.version(), None).await.unwrap();
}

/// Where a detector consumes.
struct Target<'a> {
    brokers: &'a str,
    topic: &'a str,
    group: &'a str,
    alerts_topic: &'a str,
}

/// A detector configuration on Kafka with local verdicts, lake and model store in `dir`.
fn write_config(
    dir: &Path,
    name: &str,
    t: &Target<'_>,
    batch_size: usize,
    top_k: usize,
) -> PathBuf {
    common::TestConfig::local(dir)
        .unset("alerts.file")
        .unset("dlq.file")
        .set("source.kind", "kafka")
        .set("scoring.batch_size", batch_size as i64)
        .set("scoring.batch_timeout", "5ms")
        .set("scoring.top_k", top_k as i64)
        .set("kafka.brokers", t.brokers)
        .set("kafka.topics", vec![t.topic])
        .set("kafka.group_id", t.group)
        .set("kafka.dlq_topic", format!("{}.dlq", t.topic))
        .set("kafka.alerts_topic", t.alerts_topic)
        .set("lake.location", format!("{}/lake-{name}", dir.display()))
        .set("lake.writer.writer_id", name)
        .write(dir.join(format!("{name}.toml")))
}

async fn build(config: &Path) -> Detector {
    Detector::build(&Config::load(config).unwrap())
        .await
        .unwrap()
}

fn verdicts(dir: &Path) -> u64 {
    LocalVerdictStore::open(dir.join("verdicts.db"))
        .unwrap()
        .count()
        .unwrap()
}

/// Stop `shutdown` once `dir` holds `n` verdicts (or after `timeout`).
fn stop_at(
    dir: &Path,
    n: u64,
    timeout: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let deadline = std::time::Instant::now() + timeout;
        while verdicts(&dir) < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.stop();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_end_to_end_exactly_one_verdict_each() {
    let _serial = SERIAL.lock().await;
    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let input = common::unique("tx");
    let dlq = format!("{input}.dlq");
    let alerts_topic = format!("{input}.alerts");
    common::create_topics(&brokers, &[&input, &dlq, &alerts_topic], PARTITIONS).await;

    // 1,500 real transactions and 15 malformed messages of several kinds.
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let n = 1500;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut payloads: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut tx = data.row(i);
            tx.id = format!("k-{i}");
            (tx.id.clone(), encode_transaction(&tx).into_bytes())
        })
        .collect();
    let bad: Vec<&[u8]> = vec![
        b"{\"id\": \"x\", \"Time\": ",
        b"{\"id\": \"y\", \"Time\": \"soon\"}",
        b"{\"id\": \"z\"}",
        b"\xff\xfe\xfd",
        b"[1, 2, 3]",
    ];
    for (j, b) in bad.iter().cycle().take(15).enumerate() {
        payloads.push((format!("bad-{j}"), b.to_vec()));
    }
    let mut sends = Vec::new();
    for (key, p) in &payloads {
        sends.push(producer.send(
            FutureRecord::to(&input).key(key).payload(p),
            Duration::from_secs(10),
        ));
    }
    for s in futures_util::future::join_all(sends).await {
        s.map_err(|(e, _)| e).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    publish_model(dir.path(), 20).await;
    let group = common::unique("detectors");
    let target = Target {
        brokers: &brokers,
        topic: &input,
        group: &group,
        alerts_topic: &alerts_topic,
    };
    let config = write_config(dir.path(), "d1", &target, 200, 2);

    // Run until every valid message has a verdict, then stop.
    let metrics = fraudstream::telemetry::recorder().unwrap();
    let before = scored_total(&metrics.render());
    let detector = build(&config).await;
    let shutdown = Shutdown::new(Duration::from_secs(30));
    let stopper = stop_at(
        dir.path(),
        n as u64,
        Duration::from_secs(90),
        shutdown.clone(),
    );
    let summary = detector.run(shutdown).await.unwrap();
    stopper.await.unwrap();
    let text = metrics.render();
    assert_eq!(
        scored_total(&text) - before,
        n as u64,
        "each valid message scored once: {text}"
    );
    assert!(
        text.contains("fraudstream_dead_letters_total{reason="),
        "{text}"
    );
    assert!(
        text.contains("fraudstream_end_to_end_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        verdicts(dir.path()),
        n as u64,
        "exactly one verdict per valid message"
    );
    let st = &summary.stats;
    assert_eq!(st.dead_letters, 15);
    assert_eq!(st.read, (n + 15) as u64);
    assert_eq!(st.scored, n as u64, "no message scored twice");

    // Dead letters keep the original bytes and carry the reason.
    let dead = common::detector::read_topic(&brokers, &dlq, 15);
    assert_eq!(dead.len(), 15);
    for m in &dead {
        let headers = m.headers().unwrap();
        let reason = headers
            .iter()
            .find(|h| h.key == "reason_code")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert!(
            ["invalid_json", "wrong_type", "missing_field", "not_utf8"].contains(&reason.as_str()),
            "{reason}"
        );
        assert!(m.key().unwrap().starts_with(b"bad-"));
    }
    // One alert per fraud verdict, with two contributions each (scoring.top_k).
    let alerts = common::detector::read_topic(&brokers, &alerts_topic, st.flagged as usize);
    assert_eq!(alerts.len() as u64, st.flagged);
    assert!(st.flagged > 0);
    let first: serde_json::Value = serde_json::from_slice(alerts[0].payload().unwrap()).unwrap();
    assert_eq!(
        first["top_features"].as_array().unwrap().len(),
        2,
        "{first}"
    );

    // Committed offsets reach the end of every partition.
    let mut total = 0;
    for (committed, high) in common::detector::committed_offsets(&brokers, &input, &group) {
        assert_eq!(committed, high);
        total += high;
    }
    assert_eq!(total, (n + 15) as i64);

    // A restarted detector in the same group reads on from the committed offsets: given
    // a few new messages, it reads those and nothing before them.
    let detector = build(&config).await;
    let shutdown = Shutdown::new(Duration::from_secs(30));
    let running = tokio::spawn(detector.run(shutdown.clone()));
    let more = 6;
    let sends: Vec<_> = (0..more)
        .map(|i| {
            let mut tx = data.row(i);
            tx.id = format!("k-after-{i}");
            (tx.id.clone(), encode_transaction(&tx))
        })
        .collect();
    for (key, p) in &sends {
        producer
            .send(
                FutureRecord::to(&input).key(key).payload(p),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    stop_at(
        dir.path(),
        (n + more) as u64,
        Duration::from_secs(90),
        shutdown,
    )
    .await
    .unwrap();
    let again = running.await.unwrap().unwrap();
    assert_eq!(
        again.stats.read, more as u64,
        "only the new messages were read"
    );
    assert_eq!(verdicts(dir.path()), (n + more) as u64);
}

/// `fraudstream_scored_total` in a Prometheus rendering (0 when absent).
fn scored_total(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("fraudstream_scored_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A second detector joins the group mid-stream: the first one's revoked partitions are
/// committed as far as they are durable and handed over; together they give exactly one
/// verdict per message and commit the end of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_partitions_over_without_loss() {
    let _serial = SERIAL.lock().await;
    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let input = common::unique("rebalance");
    let dlq = format!("{input}.dlq");
    // The detectors check at start-up that their topics exist (the alerts topic too: it
    // defaults to `fraud.alerts`, which a fresh broker does not have).
    let alerts_topic = format!("{input}.alerts");
    common::create_topics(&brokers, &[&input, &dlq, &alerts_topic], PARTITIONS).await;
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let n = 6000;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let payloads: Vec<(String, String)> = (0..n)
        .map(|i| {
            let mut tx = data.row(i % data.len());
            tx.id = format!("r-{i}");
            (tx.id.clone(), encode_transaction(&tx))
        })
        .collect();
    // Half now; the other half once both detectors are in the group, so that the
    // second has work whatever the first's speed.
    let produce = |part: std::ops::Range<usize>| {
        let sends = payloads[part].iter().map(|(k, p)| {
            producer.send(
                FutureRecord::to(&input).key(k).payload(p),
                Duration::from_secs(10),
            )
        });
        futures_util::future::join_all(sends)
    };
    for s in produce(0..n / 2).await {
        s.map_err(|(e, _)| e).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    publish_model(dir.path(), 10).await;
    let group = common::unique("detectors");
    // Small batches, so that the first detector is still busy when the second joins.
    let target = Target {
        brokers: &brokers,
        topic: &input,
        group: &group,
        alerts_topic: &alerts_topic,
    };
    let first_config = write_config(dir.path(), "d1", &target, 20, 3);
    let second_config = write_config(dir.path(), "d2", &target, 20, 3);

    let shutdown = Shutdown::new(Duration::from_secs(30));
    let first = build(&first_config).await;
    let first = tokio::spawn(first.run(shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while verdicts(dir.path()) < 500 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = build(&second_config).await;
    let second = tokio::spawn(second.run(shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while group_members(&brokers, &group) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in produce(n / 2..n).await {
        s.map_err(|(e, _)| e).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while verdicts(dir.path()) < n as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last asynchronous commits land before stopping.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::detector::committed_offsets(&brokers, &input, &group)
        .iter()
        .any(|(at, high)| at != high)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.stop();
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();

    assert_eq!(
        verdicts(dir.path()),
        n as u64,
        "exactly one verdict per message"
    );
    assert!(a.stats.revoked > 0, "the first detector gave partitions up");
    assert!(b.stats.scored > 0, "the second detector scored its share");
    assert!(
        a.stats.scored + b.stats.scored >= n as u64,
        "{} + {}",
        a.stats.scored,
        b.stats.scored
    );
    for (committed, high) in common::detector::committed_offsets(&brokers, &input, &group) {
        assert_eq!(committed, high);
    }
}

/// How many members `group` has now, once its rebalance has settled (0 before).
fn group_members(brokers: &str, group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    // Members of a group settled after its rebalance (partitions assigned).
    c.fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()
        .and_then(|l| {
            l.groups()
                .first()
                .filter(|g| g.state() == "Stable")
                .map(|g| g.members().len())
        })
        .unwrap_or(0)
}

/// Counts a consumer's rebalances.
#[derive(Default, Clone)]
struct Rebalances(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl rdkafka::ClientContext for Rebalances {}
impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        _: &rdkafka::consumer::Rebalance<'_>,
    ) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The orphaned-partition watchdog's two halves on the broker. Partitions in no member's
/// assignment are found from the group's description (here the partitions of a topic no
/// member subscribes to, which is how a stale assignment looks from outside), and the
/// kick (a member without a static identity that joins and leaves) makes the group
/// rebalance, after which the static member holds its partitions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_in_no_assignment_are_found_and_a_kick_rebalances_the_group() {
    use fraudstream::kafka::KafkaSettings;
    use fraudstream::stream::source::kafka::orphans::{kick, orphaned};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::sync::atomic::Ordering;

    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let (x, y) = (common::unique("orphans-x"), common::unique("orphans-y"));
    common::create_topics(&brokers, &[&x, &y], 3).await;
    let group = common::unique("orphans");
    let rebalances = Rebalances::default();
    let member: std::sync::Arc<BaseConsumer<Rebalances>> = std::sync::Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("group.instance.id", "static-1")
            .set("session.timeout.ms", "10000")
            .set("enable.auto.commit", "false")
            .create_with_context(rebalances.clone())
            .unwrap(),
    );
    member.subscribe(&[&x]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = {
        let (member, stop) = (member.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = member.poll(Duration::from_millis(100));
            }
        })
    };
    let holds_all = || member.assignment().is_ok_and(|a| a.count() == 3);
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("the member is assigned", &holds_all);

    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        group_id: group.clone(),
        topics: vec![x.clone(), y.clone()],
        ..KafkaSettings::default()
    };
    let found = std::cell::RefCell::new(Vec::new());
    wait("the orphans are found", &|| {
        *found.borrow_mut() = orphaned(&probe, &settings).unwrap();
        !found.borrow().is_empty()
    });
    let want: Vec<(String, i32)> = (0..3).map(|p| (y.clone(), p)).collect();
    assert_eq!(found.into_inner(), want, "y's partitions, and none of x's");

    let before = rebalances.0.load(Ordering::SeqCst);
    let only_x = KafkaSettings {
        topics: vec![x.clone()],
        ..settings
    };
    kick(&only_x).unwrap();
    wait("the kick rebalances the group", &|| {
        rebalances.0.load(Ordering::SeqCst) > before && holds_all()
    });
    assert!(orphaned(&probe, &only_x).unwrap().is_empty());
    stop.store(true, Ordering::SeqCst);
    polling.join().unwrap();
}
