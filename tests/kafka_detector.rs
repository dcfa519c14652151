//! The detector against a real Kafka-protocol broker (noida-db from scripts/services.sh):
//! N valid and M malformed messages in; exactly N verdicts, M dead letters with reasons,
//! one alert per fraud verdict, and committed offsets at the end of every partition; a
//! restarted detector in the same group finds nothing left to do.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use fraudstream::stream::kafka::{KafkaAlerts, KafkaSettings, PipelineOptions, run};
use fraudstream::stream::process::{AlertSink, Processor};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
const PARTITIONS: i32 = 3;

/// The tests here assert on the process-wide metrics recorder: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn create_topics(brokers: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// All messages of a topic, read from the beginning by a throwaway consumer.
fn read_all(brokers: &str, topic: &str, expect: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.unwrap().detach());
            if out.len() >= expect {
                // Keep polling briefly to catch anything beyond what we expect.
                let extra_deadline = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < extra_deadline {
                    if let Some(m) = c.poll(Duration::from_millis(100)) {
                        out.push(m.unwrap().detach());
                    }
                }
                break;
            }
        }
    }
    out
}

fn options() -> PipelineOptions {
    PipelineOptions {
        batch_size: 200,
        ..PipelineOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_end_to_end_exactly_one_verdict_each() {
    let _serial = SERIAL.lock().await;
    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let input = common::unique("tx");
    let dlq = format!("{input}.dlq");
    let alerts_topic = format!("{input}.alerts");
    create_topics(&brokers, &[&input, &dlq, &alerts_topic]).await;

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

    let mut opts = TrainOptions::default();
    opts.params.n_trees = 20;
    let model = train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalVerdictStore::open(dir.path().join("v.db")).unwrap());
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        topics: vec![input.clone()],
        group_id: common::unique("detectors"),
        dlq_topic: dlq.clone(),
        alerts_topic: Some(alerts_topic.clone()),
        ..KafkaSettings::default()
    };
    let make_processor = || {
        let mut p = Processor::new(
            Arc::new(ArcSwap::from_pointee(model.clone())),
            store.clone(),
        );
        p.alerts = vec![
            Box::new(KafkaAlerts::new(&settings, &alerts_topic).unwrap()) as Box<dyn AlertSink>,
        ];
        p.top_k = 2;
        p
    };

    // Run until every valid message has a verdict, then stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher_store = store.clone();
    let watcher = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while watcher_store.count().unwrap() < n as u64 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_tx.send(true).unwrap();
    });
    let metrics = fraudstream::telemetry::recorder().unwrap();
    let (summary, p) = run(&settings, make_processor(), options(), stop_rx).await;
    let summary = summary.unwrap();
    watcher.await.unwrap();
    let text = metrics.render();
    assert!(
        text.contains(&format!("fraudstream_scored_total {n}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("fraudstream_consumed_total {}", n + 15)),
        "{text}"
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
        store.count().unwrap(),
        n as u64,
        "exactly one verdict per valid message"
    );
    assert_eq!(summary.dead_letters, 15);
    assert_eq!(summary.messages, (n + 15) as u64);

    // Dead letters keep the original bytes and carry the reason.
    let dead = read_all(&brokers, &dlq, 15);
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
    // One alert per fraud verdict.
    let alerts = read_all(&brokers, &alerts_topic, p.stats.flagged as usize);
    assert_eq!(alerts.len() as u64, p.stats.flagged);
    assert!(p.stats.flagged > 0);

    // Committed offsets reach the end of every partition.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &settings.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..PARTITIONS {
        tpl.add_partition(&input, part);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = c
            .fetch_watermarks(&input, e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            e.offset(),
            Offset::Offset(high),
            "partition {}",
            e.partition()
        );
        total += high;
    }
    assert_eq!(total, (n + 15) as i64);

    // A restarted detector in the same group has nothing left to read.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop_tx.send(true).unwrap();
    });
    let (again, _) = run(&settings, make_processor(), options(), stop_rx).await;
    let again = again.unwrap();
    assert_eq!(again.messages, 0, "everything was committed");
    assert_eq!(store.count().unwrap(), n as u64);
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
    create_topics(&brokers, &[&input, &dlq]).await;
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
    let sends = payloads.iter().map(|(k, p)| {
        producer.send(
            FutureRecord::to(&input).key(k).payload(p),
            Duration::from_secs(10),
        )
    });
    for s in futures_util::future::join_all(sends).await {
        s.map_err(|(e, _)| e).unwrap();
    }

    let mut opts = TrainOptions::default();
    opts.params.n_trees = 10;
    let model = train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalVerdictStore::open(dir.path().join("v.db")).unwrap());
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        topics: vec![input.clone()],
        group_id: common::unique("detectors"),
        dlq_topic: dlq,
        alerts_topic: None,
        ..KafkaSettings::default()
    };
    let processor = || {
        Processor::new(
            Arc::new(ArcSwap::from_pointee(model.clone())),
            store.clone(),
        )
    };
    // Small batches, so that the first detector is still busy when the second joins.
    let options = PipelineOptions {
        batch_size: 20,
        ..PipelineOptions::default()
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let first = tokio::spawn({
        let (settings, p, stop) = (settings.clone(), processor(), stop_rx.clone());
        async move { run(&settings, p, options, stop).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.count().unwrap() < 500 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.count().unwrap() < n as u64,
        "joined too late to rebalance anything"
    );
    let second = tokio::spawn({
        let (settings, p, stop) = (settings.clone(), processor(), stop_rx.clone());
        async move { run(&settings, p, options, stop).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while store.count().unwrap() < n as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last asynchronous commits land before stopping.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).unwrap();
    let (a, pa) = first.await.unwrap();
    let (b, pb) = second.await.unwrap();
    let a = a.unwrap();
    b.unwrap();

    assert_eq!(
        store.count().unwrap(),
        n as u64,
        "exactly one verdict per message"
    );
    assert!(a.revoked > 0, "the first detector gave partitions up");
    assert!(pb.stats.scored > 0, "the second detector scored its share");
    assert!(
        pa.stats.scored + pb.stats.scored >= n as u64,
        "{} + {}",
        pa.stats.scored,
        pb.stats.scored
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &settings.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..PARTITIONS {
        tpl.add_partition(&input, part);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in committed.elements() {
        let (_, high) = c
            .fetch_watermarks(&input, e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            e.offset(),
            Offset::Offset(high),
            "partition {}",
            e.partition()
        );
    }
}
