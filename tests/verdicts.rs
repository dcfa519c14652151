//! The verdict store conformance suite: local SQLite and DynamoDB Local.

mod common;

use std::time::Duration;

use fraudstream::aws::AwsConnection;
use fraudstream::model::scoring::Contribution;
use fraudstream::retry::RetryPolicy;
use fraudstream::rules::Outcome;
use fraudstream::secret::Secret;
use fraudstream::sinks::verdicts::dynamodb::{DynamoSettings, DynamoVerdictStore};
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use fraudstream::sinks::verdicts::{VerdictError, VerdictItem, VerdictStore};

fn item(id: usize, score: f32, version: &str) -> VerdictItem {
    VerdictItem {
        tx_id: format!("tx-{id}"),
        score,
        fraud: score >= 0.5,
        threshold: 0.5,
        model_version: version.into(),
        scored_at: "2026-11-26T10:00:00.123Z".into(),
        top_features: vec![
            Contribution {
                feature: "V14".into(),
                contribution: 0.25,
            },
            Contribution {
                feature: "Amount".into(),
                contribution: -0.0625,
            },
        ],
        ttl: id.is_multiple_of(2).then_some(1_900_000_000 + id as i64),
        // Every third decided by rules: the outcome, the rules and the version round-trip.
        outcome: if id.is_multiple_of(3) {
            Outcome::Review
        } else if score >= 0.5 {
            Outcome::Block
        } else {
            Outcome::Approve
        },
        decided_by: if id.is_multiple_of(3) {
            "velocity_burst".into()
        } else {
            "model".into()
        },
        rules: if id.is_multiple_of(3) {
            vec!["velocity_burst".into(), "big_amount".into()]
        } else {
            Vec::new()
        },
        rule_set: id.is_multiple_of(3).then(|| "r-20261207".into()),
    }
}

/// Every backend: round trip, duplicates collapsed (last wins), idempotent rewrite, more
/// than one BatchWriteItem's worth, missing ids. `count` returns the stored item count.
async fn conformance<F, Fut>(store: &dyn VerdictStore, count: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64>,
{
    let what = store.describe();
    // 60 items in one call, with ids 0..50 and ten duplicates whose later copy must win.
    let mut batch: Vec<VerdictItem> = (0..50).map(|i| item(i, 0.1, "v1")).collect();
    batch.extend((0..10).map(|i| item(i, 0.9, "v2")));
    store.put_batch(&batch).await.unwrap();
    assert_eq!(count().await, 50, "{what}");
    let got = store.get("tx-3").await.unwrap().unwrap();
    assert_eq!(got, item(3, 0.9, "v2"), "{what}");
    let got = store.get("tx-42").await.unwrap().unwrap();
    assert_eq!(got, item(42, 0.1, "v1"), "{what}");
    assert_eq!(got.ttl, Some(1_900_000_042));
    assert!(store.get("tx-41").await.unwrap().unwrap().ttl.is_none());

    // A redelivered batch overwrites: still exactly one item per id.
    store.put_batch(&batch).await.unwrap();
    store.put_batch(&batch[..7]).await.unwrap();
    assert_eq!(count().await, 50, "{what}");
    assert_eq!(store.get("tx-5").await.unwrap().unwrap().score, 0.1);

    assert!(store.get("tx-nope").await.unwrap().is_none());
    store.put_batch(&[]).await.unwrap();

    // Conditional writes: only ids without a verdict are written, atomically per id.
    let fresh = [
        item(100, 0.7, "v3"),
        item(3, 0.7, "v3"),
        item(101, 0.2, "v3"),
    ];
    assert_eq!(
        store.put_new(&fresh).await.unwrap(),
        vec![true, false, true],
        "{what}"
    );
    assert_eq!(
        store.get("tx-3").await.unwrap().unwrap(),
        item(3, 0.1, "v1"),
        "kept"
    );
    assert_eq!(
        store.get("tx-100").await.unwrap().unwrap(),
        item(100, 0.7, "v3")
    );
    let racing: Vec<_> = (0..16)
        .map(|_| store.put_new(std::slice::from_ref(&fresh[0])))
        .collect();
    let answers = futures_util::future::join_all(racing).await;
    assert!(
        answers.iter().all(|a| a.as_ref().unwrap() == &vec![false]),
        "{what}"
    );
    let id = item(102, 0.6, "v4");
    let racing: Vec<_> = (0..16)
        .map(|_| store.put_new(std::slice::from_ref(&id)))
        .collect();
    let written = futures_util::future::join_all(racing)
        .await
        .into_iter()
        .filter(|a| a.as_ref().unwrap() == &vec![true])
        .count();
    assert_eq!(written, 1, "{what}: 16 concurrent writers of one new id");
    // An expired verdict counts as none.
    let mut old = item(103, 0.1, "v1");
    old.ttl = Some(1_000);
    store.put_batch(std::slice::from_ref(&old)).await.unwrap();
    assert_eq!(
        store.put_new(&[item(103, 0.8, "v5")]).await.unwrap(),
        vec![true],
        "{what}"
    );
    for i in [100, 101, 102, 103] {
        store.delete(&format!("tx-{i}")).await.unwrap();
    }
    store.delete("tx-nope").await.unwrap();
    assert!(store.get("tx-100").await.unwrap().is_none());
    assert_eq!(count().await, 50, "{what}");
}

#[tokio::test]
async fn local_verdict_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalVerdictStore::open(dir.path().join("v/verdicts.db")).unwrap();
    let s2 = store.clone();
    conformance(&store, || {
        let s = s2.clone();
        async move { s.count().unwrap() }
    })
    .await;
    // Reopening sees the same data.
    drop(store);
    let again = LocalVerdictStore::open(dir.path().join("v/verdicts.db")).unwrap();
    assert_eq!(again.count().unwrap(), 50);
}

fn dynamo_settings(table: &str) -> DynamoSettings {
    DynamoSettings {
        create_table: true,
        ttl_attribute: Some("expires_at".into()),
        ..DynamoSettings::new(
            table,
            AwsConnection {
                region: "us-east-1".into(),
                endpoint: Some(common::require("FRAUDSTREAM_TEST_DYNAMODB", "dynamodb")),
                access_key_id: Some("local".into()),
                secret_access_key: Some(Secret::new("local-secret")),
            },
        )
    }
}

async fn scan_count(endpoint: &str, table: &str) -> u64 {
    let client = common::dynamo_at(endpoint);
    let mut total = 0u64;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        total += out.count() as u64;
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return total;
        }
    }
}

#[tokio::test]
async fn dynamodb_verdict_store() {
    let table = common::unique("verdicts");
    let s = dynamo_settings(&table);
    let store = DynamoVerdictStore::connect(&s).await.unwrap();
    let endpoint = s.connection.endpoint.clone().unwrap();
    conformance(&store, || scan_count(&endpoint, &table)).await;
    // Connecting again to the existing table works and sees the same items.
    let again = DynamoVerdictStore::connect(&s).await.unwrap();
    assert_eq!(
        &*again.get("tx-8").await.unwrap().unwrap().model_version,
        "v2"
    );
    assert_eq!(
        &*again.get("tx-1").await.unwrap().unwrap().model_version,
        "v1"
    );
}

/// A record-permanent refusal: DynamoDB refuses an item with an empty key (the whole
/// BatchWriteItem call, as it does); the store finds that item and writes the others.
#[tokio::test]
async fn dynamodb_refuses_one_item_and_writes_the_rest() {
    let table = common::unique("refuse");
    let s = dynamo_settings(&table);
    let store = DynamoVerdictStore::connect(&s).await.unwrap();
    let mut batch: Vec<VerdictItem> = (0..30).map(|i| item(i, 0.2, "v1")).collect();
    let mut bad = item(30, 0.2, "v1");
    bad.tx_id = String::new();
    batch.insert(11, bad);
    match store.put_batch(&batch).await {
        Err(VerdictError::Refused { refused, .. }) => {
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert_eq!(refused[0].0, "");
            assert!(refused[0].1.contains("ValidationException"), "{refused:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let endpoint = s.connection.endpoint.clone().unwrap();
    assert_eq!(
        scan_count(&endpoint, &table).await,
        30,
        "the rest is written"
    );
}

#[tokio::test]
async fn dynamodb_missing_table_is_named() {
    let table = common::unique("absent");
    let mut s = dynamo_settings(&table);
    s.create_table = false;
    let e = DynamoVerdictStore::connect(&s).await.unwrap_err();
    assert!(matches!(e, VerdictError::NoTable { .. }), "{e:?}");
    assert!(e.to_string().contains(&table), "{e}");
}

#[tokio::test]
async fn dynamodb_unreachable_names_the_endpoint_after_bounded_retry() {
    let mut s = dynamo_settings("t");
    let endpoint = format!("http://127.0.0.1:{}", common::dead_port());
    s.connection.endpoint = Some(endpoint.clone());
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let started = std::time::Instant::now();
    let e = DynamoVerdictStore::connect_with(&s, policy)
        .await
        .unwrap_err();
    assert!(matches!(e, VerdictError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&endpoint), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
