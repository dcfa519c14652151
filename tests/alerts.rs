//! The alert sinks' conformance suite, run against every implementation: the local file,
//! a Kafka topic on the real broker, a webhook served by a local HTTP server, and the
//! in-memory ring. What `send` accepted can be read back from where it went, each alert
//! exactly once, in order, and the sink's name never shows a secret. Then the webhook's
//! own contract: retries on 5xx and 429, none on other 4xx, the configured headers, and
//! its timeout.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::webhook::Endpoint;
use fraudstream::config::WebhookConfig;
use fraudstream::kafka::KafkaSettings;
use fraudstream::model::Verdict;
use fraudstream::model::scoring::Contribution;
use fraudstream::retry::Retryable;
use fraudstream::rules::Outcome;
use fraudstream::secret::Secret;
use fraudstream::sinks::alerts::{
    AlertError, AlertSink, KafkaAlerts, LocalAlerts, RecentAlerts, Webhook,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn alert(id: &str) -> Verdict {
    let mut v = Verdict::by_model(
        id,
        0.93,
        0.5,
        "v-test",
        vec![Contribution {
            feature: "V14".into(),
            contribution: 0.31,
        }],
    );
    // A rule decided it: the alert carries its outcome, the rule and the rule set.
    v.outcome = Outcome::Review;
    v.decided_by = "big_amount".into();
    v.rules = vec!["big_amount".into(), "night".into()];
    v.rule_set = Some("r-1".into());
    v
}

/// Send two batches through `sink`, then check that `read_back` finds each alert once, in
/// order, whole.
async fn conformance<F, Fut>(sink: &dyn AlertSink, read_back: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Vec<Verdict>>,
{
    let name = sink.describe();
    assert!(!name.is_empty());
    assert!(!name.contains("s3cr3t"), "{name} shows a secret");
    sink.send(&[alert("a-1"), alert("a-2")]).await.unwrap();
    sink.send(&[alert("a-3")]).await.unwrap();
    sink.send(&[]).await.unwrap();
    let got = read_back(3).await;
    let ids: Vec<&str> = got.iter().map(|v| v.tx_id.as_str()).collect();
    assert_eq!(ids, ["a-1", "a-2", "a-3"], "{name}");
    assert_eq!(got[0], alert("a-1"), "{name}: the whole verdict arrives");
}

#[tokio::test]
async fn local_file_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/alerts.jsonl");
    let sink = LocalAlerts::open(Some(&path), false).unwrap();
    conformance(&sink, |_| async {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    })
    .await;
}

#[tokio::test]
async fn recent_alerts_ring() {
    let sink = RecentAlerts::new(10);
    conformance(&sink, |_| async {
        let mut v: Vec<Verdict> = sink.latest(10, 0).into_iter().map(|a| a.verdict).collect();
        v.reverse(); // newest first
        v
    })
    .await;
}

#[tokio::test]
async fn kafka_topic_sink() {
    let brokers = common::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
    let topic = common::unique("alerts");
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        ..KafkaSettings::default()
    };
    let sink = KafkaAlerts::new(&settings, &topic).unwrap();
    conformance(&sink, |n| {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", common::unique("reader"))
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .unwrap();
                c.subscribe(&[&topic]).unwrap();
                let mut out: Vec<(String, Verdict)> = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while out.len() < n + 1 && std::time::Instant::now() < deadline {
                    if let Some(m) = c.poll(Duration::from_millis(200)) {
                        let m = m.unwrap();
                        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                        out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
                    } else if out.len() >= n {
                        break; // nothing more after a quiet poll
                    }
                }
                for (k, v) in &out {
                    assert_eq!(k, &v.tx_id, "alerts are keyed by transaction id");
                }
                // One topic, one partition per key: order holds per partition; sort by id.
                let mut v: Vec<Verdict> = out.into_iter().map(|(_, v)| v).collect();
                v.sort_by(|a, b| a.tx_id.cmp(&b.tx_id));
                v
            })
            .await
            .unwrap()
        }
    })
    .await;
}

fn webhook(url: &str, attempts: u32, timeout: Duration) -> Webhook {
    Webhook::new(WebhookConfig {
        url: Secret::new(url),
        timeout,
        attempts,
        headers: BTreeMap::from([(
            "Authorization".to_owned(),
            Secret::new("Bearer s3cr3t-header"),
        )]),
    })
    .unwrap()
}

#[tokio::test]
async fn webhook_sink() {
    let endpoint = Endpoint::start(vec![Some(200)]).await;
    let sink = webhook(&endpoint.url, 1, Duration::from_secs(5));
    conformance(&sink, |_| async {
        endpoint
            .requests()
            .iter()
            .flat_map(|r| serde_json::from_slice::<Vec<Verdict>>(&r.body).unwrap())
            .collect()
    })
    .await;
    let first = &endpoint.requests()[0];
    let head = first.head.to_ascii_lowercase();
    assert!(head.starts_with("post /hooks/s3cr3t-token "), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains("authorization: bearer s3cr3t-header"),
        "{head}"
    );
    assert!(head.contains("user-agent: fraudstream/"), "{head}");
    assert_eq!(
        endpoint.requests().len(),
        3,
        "one request per alert, none for an empty batch"
    );
    for (r, id) in endpoint.requests().iter().zip(["a-1", "a-2", "a-3"]) {
        let head = r.head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("idempotency-key: {id}\r\n")),
            "{head}"
        );
    }
}

#[tokio::test]
async fn webhook_retries_server_errors_and_throttling() {
    let endpoint = Endpoint::start(vec![Some(503), Some(429), Some(500), Some(204)]).await;
    let sink = webhook(&endpoint.url, 4, Duration::from_secs(5));
    sink.send(&[alert("r-1")]).await.unwrap();
    assert_eq!(endpoint.requests().len(), 4);
    assert!(
        endpoint.requests().iter().all(|r| r
            .head
            .to_ascii_lowercase()
            .contains("idempotency-key: r-1\r\n")),
        "every attempt carries the same key"
    );

    let endpoint = Endpoint::start(vec![Some(502)]).await;
    let sink = webhook(&endpoint.url, 3, Duration::from_secs(5));
    let e = sink.send(&[alert("r-2")]).await.unwrap_err();
    assert!(
        e.is_retryable(),
        "an endpoint that stays down is transient: {e}"
    );
    assert_eq!(endpoint.requests().len(), 3, "tried `attempts` times");
}

#[tokio::test]
async fn webhook_does_not_retry_other_client_errors() {
    for status in [400, 401, 404, 413] {
        let endpoint = Endpoint::start(vec![Some(status), Some(200)]).await;
        let sink = webhook(&endpoint.url, 5, Duration::from_secs(5));
        let e = sink.send(&[alert("c-1")]).await.unwrap_err();
        assert!(matches!(e, AlertError::Refused { .. }), "{status}: {e}");
        assert!(e.to_string().contains(&status.to_string()), "{e}");
        assert!(
            !e.to_string().contains("s3cr3t"),
            "the URL's path is a secret: {e}"
        );
        assert_eq!(endpoint.requests().len(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn webhook_times_out_a_hung_endpoint() {
    let endpoint = Endpoint::start(vec![None]).await;
    let sink = webhook(&endpoint.url, 2, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = sink.send(&[alert("t-1")]).await.unwrap_err();
    assert!(matches!(e, AlertError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(endpoint.requests().len(), 2, "each attempt timed out");
}
