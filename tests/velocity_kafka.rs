//! Labels on a Kafka topic (`velocity.labels_topic`) with the in-memory store, against a
//! real broker: a detector reads the whole topic before it scores, so the features it
//! serves equal the offline ones for every transaction; every label is joined with its
//! verdict; and a message that is not a label goes to the dead-letter topic with its
//! reason, without stopping anything; and `retrain` learns from the lake's rows with the
//! labels it reads from the same topic; a restarted detector counts the topic's history
//! into its store before it consumes, and serves the features it would have served had it
//! never stopped. (The Redis store's group reading, through kills,
//! is in `tests/velocity_redis.rs`.)

mod common;

use std::time::Duration;

use common::detector::{Deployment, read_topic};
use fraudstream::schema::Transaction;
use fraudstream::velocity::{VelocitySpec, compute_offline, offline_engine};
use loadgen::simulate::{SimParams, label_json, simulate_transactions};
use rdkafka::message::{Headers, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_from_a_topic_feed_the_features_and_bad_ones_are_dead_lettered() {
    let d = Deployment::new("vellabels").await;
    let txs = simulate_transactions(&SimParams {
        customers: 100,
        terminals: 1_000,
        days: 30,
        seed: 5,
        ..SimParams::default()
    });
    common::publish_velocity_model(d.dir.path(), &txs);

    // The labels first (a replay: all of them known), with one message that is not a
    // label among them.
    let labels_topic = format!("{}.labels", d.topic);
    let mut keys: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    let mut payloads: Vec<String> = txs
        .iter()
        .map(|t| label_json(t, t.label.unwrap()))
        .collect();
    keys.insert(100, "bad-label");
    payloads.insert(100, r#"{"id":"x","Class":"maybe","Time":1}"#.into());
    d.produce_to(&labels_topic, &keys, &payloads).await;
    // The transactions, unlabelled, on one partition (in time order).
    let stream = common::unlabelled(&txs);
    d.produce_txs(&stream, |_| "all").await;

    let lake = d.dir.path().join("lake");
    let config = d.write(
        &d.config(true)
            .set("velocity.enabled", true)
            .set("velocity.labels_topic", labels_topic.as_str())
            .set("retrain.history", vec![format!("{}/", lake.display())])
            .set("retrain.labels_topic", labels_topic.as_str())
            .set("retrain.min_gate_frauds", 5)
            .set("retrain.min_gate_rows", 100)
            .set("retrain.trees", 10),
        "labels-topic.toml",
    );
    let detector = d.start(&config).await;
    let velocity = detector.handles.velocity.clone().unwrap();
    assert!(
        d.wait_for_verdicts(txs.len() as u64, Duration::from_secs(180))
            .await,
        "not every transaction was scored"
    );
    // Labels were applied before scoring started; their join with the verdicts follows
    // the verdicts.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while velocity.confusion().unmatched > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    detector.stop().await.unwrap();

    let c = velocity.confusion();
    assert_eq!(
        (c.tp + c.fp + c.fn_ + c.tn, c.unmatched),
        (txs.len() as u64, 0),
        "every label joined with its verdict: {c:?}"
    );
    assert!(c.tp > 0 && c.fn_ + c.tp > 50, "{c:?}");

    // The features served are the offline ones: the fraud counters held every label.
    let spec = VelocitySpec::handbook();
    let mut offline = txs.clone();
    compute_offline(&mut offline_engine(spec.clone()).unwrap(), &mut offline).unwrap();
    let served: std::collections::HashMap<String, Vec<f32>> =
        common::lake_features(&d.dir.path().join("lake"), &spec)
            .into_iter()
            .collect();
    assert_eq!(served.len(), txs.len(), "one lake row per transaction");
    let mut risky = 0;
    for o in &offline {
        assert_eq!(
            served.get(&o.id),
            Some(&o.derived),
            "{}: served vs offline features",
            o.id
        );
        risky += usize::from(o.derived[9..12].iter().any(|&r| r > 0.0));
    }
    assert!(risky > 100, "terminal risk exercised ({risky} rows)");

    // The bad label is a dead letter with its reason.
    let dead = read_topic(&d.brokers, &format!("{}.dlq", d.topic), 1);
    assert_eq!(dead.len(), 1, "one dead letter");
    let m = &dead[0];
    assert_eq!(m.key(), Some(&b"bad-label"[..]));
    let reason = m
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "reason_code")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(reason.as_deref(), Some("invalid_label"));

    // `retrain` learns from the lake (the features as served, no `Class`) with the labels
    // read from the topic (the bad one skipped).
    let decision = common::retrain_decision(&config);
    let frauds = txs.iter().filter(|t| t.label == Some(1)).count();
    assert_eq!(decision["rows_read"], txs.len(), "{decision}");
    assert_eq!(decision["rows_used"], txs.len(), "{decision}");
    assert_eq!(decision["frauds"], frauds, "{decision}");
}

/// A Kafka detector with the in-memory store, stopped and started again: the new one
/// counts the topic's history up to the committed offsets before it consumes, so the
/// features it serves for new transactions equal the offline ones, as if it had never
/// stopped (with `velocity.rebuild = false` they do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_detector_rebuilds_its_counters_from_the_topic() {
    let (d, stream, config) = velocity_deployment(
        "velrebuild",
        SimParams {
            customers: 100,
            terminals: 1_000,
            days: 20,
            seed: 9,
            ..SimParams::default()
        },
    )
    .await;
    let half = stream.len() / 2;
    d.produce_txs(&stream[..half], |_| "all").await;
    run_until(&d, &config, half).await;
    d.produce_txs(&stream[half..], |_| "all").await;
    run_until(&d, &config, stream.len()).await;
    assert_lake_matches_offline(&d, &stream, half, "served after the restart vs offline");
}

/// A deployment serving a velocity model trained on a simulated stream (`params`), the
/// stream unlabelled, and a configuration with entity features on (memory store).
async fn velocity_deployment(
    prefix: &str,
    params: SimParams,
) -> (Deployment, Vec<Transaction>, std::path::PathBuf) {
    let d = Deployment::new(prefix).await;
    let txs = simulate_transactions(&params);
    common::publish_velocity_model(d.dir.path(), &txs);
    let stream = common::unlabelled(&txs);
    let config = d.write(
        &d.config(true).set("velocity.enabled", true),
        "velocity.toml",
    );
    (d, stream, config)
}

/// Run a detector on `config` until `n` verdicts are stored, then stop it.
async fn run_until(d: &Deployment, config: &std::path::Path, n: usize) {
    let detector = d.start(config).await;
    assert!(
        d.wait_for_verdicts(n as u64, Duration::from_secs(180))
            .await
    );
    detector.stop().await.unwrap();
}

/// One lake row per transaction of `stream`, and the entity features of those from
/// `from` on equal an offline pass over the whole stream (no labels were sent).
fn assert_lake_matches_offline(d: &Deployment, stream: &[Transaction], from: usize, what: &str) {
    let spec = VelocitySpec::handbook();
    let mut offline = stream.to_vec();
    compute_offline(&mut offline_engine(spec.clone()).unwrap(), &mut offline).unwrap();
    let served: std::collections::HashMap<String, Vec<f32>> =
        common::lake_features(&d.dir.path().join("lake"), &spec)
            .into_iter()
            .collect();
    assert_eq!(served.len(), stream.len(), "one lake row per transaction");
    for o in &offline[from..] {
        assert_eq!(served.get(&o.id), Some(&o.derived), "{}: {what}", o.id);
    }
}

/// Transactions written by a transactional producer (an upstream job with exactly-once
/// output), with an aborted transaction between two committed ones: only committed
/// transactions get verdicts and count in the entity features, and a restarted detector
/// rebuilds its counters from the committed history (each partition now ends in a
/// transaction marker, below which its committed offset may stop) and serves the offline
/// features for what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_input_counts_committed_transactions_only() {
    let (d, stream, config) = velocity_deployment(
        "veltxn",
        SimParams {
            customers: 60,
            terminals: 600,
            days: 12,
            seed: 13,
            ..SimParams::default()
        },
    )
    .await;
    let producer = format!("{}-upstream", d.topic);
    let send = |part: &[Transaction], commit: bool| {
        let payloads: Vec<String> = part
            .iter()
            .map(fraudstream::schema::json::encode_transaction)
            .collect();
        let keys = vec!["all"; part.len()];
        let (d, producer) = (&d, &producer);
        async move {
            d.produce_transaction(producer, &d.topic, &keys, &payloads, commit)
                .await;
        }
    };
    // Aborted: the same cards and terminals as the stream, new ids, amounts far off.
    let aborted: Vec<_> = stream[..200]
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.id = format!("aborted-{}", t.id);
            t.values[fraudstream::schema::AMOUNT] += 5_000.0;
            t
        })
        .collect();

    let half = stream.len() / 2;
    send(&stream[..half], true).await;
    send(&aborted, false).await;
    run_until(&d, &config, half).await;
    send(&stream[half..], true).await;
    run_until(&d, &config, stream.len()).await;

    let ids = d.verdict_ids().await;
    assert_eq!(
        ids.len(),
        stream.len(),
        "one verdict per committed transaction"
    );
    assert!(ids.iter().all(|id| !id.starts_with("aborted-")));
    assert_lake_matches_offline(
        &d,
        &stream,
        0,
        "served vs offline (the aborted transactions counted?)",
    );
}

/// Labels written by a transactional producer (Kafka Streams with exactly-once, for one):
/// every partition ends with a commit marker, an offset that holds no message, so the last
/// label's offset never reaches the end offset. Reading the topic whole — what `retrain`
/// does, and what a memory-store detector does before it scores — still ends, with every
/// label: the client reports each partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_labels_topic_is_read_to_its_end() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let topic = common::unique("txlabels");
    common::create_topics(&brokers, &[&topic], 2).await;

    let txs = simulate_transactions(&SimParams {
        customers: 20,
        terminals: 50,
        days: 3,
        seed: 8,
        ..SimParams::default()
    });
    let txs = &txs[..txs.len().min(60)];
    // Two transactions: a marker inside each partition and one at its end.
    let keys: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    let payloads: Vec<String> = txs
        .iter()
        .map(|t| label_json(t, t.label.unwrap()))
        .collect();
    let mid = txs.len() / 2;
    for (k, p) in [
        (&keys[..mid], &payloads[..mid]),
        (&keys[mid..], &payloads[mid..]),
    ] {
        common::detector::produce_transaction(&brokers, &topic, &topic, k, p, true).await;
    }

    // The markers are there: the end offsets add up to more than the labels.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let ends: i64 = (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert!(
        ends > txs.len() as i64,
        "end offsets {ends}, {} labels",
        txs.len()
    );

    let settings = fraudstream::kafka::KafkaSettings {
        brokers,
        ..fraudstream::kafka::KafkaSettings::default()
    };
    let labels = fraudstream::stream::source::labels::topic::read_all(
        &settings,
        &topic,
        Duration::from_secs(20),
    )
    .await
    .expect("the whole topic read");
    let mut got: Vec<&str> = labels.iter().map(|l| l.tx_id.as_str()).collect();
    let mut want: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}
