//! Delivery's tests, with in-process fakes of the sinks (the real backends have their
//! own suites against real servers).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwap;

use std::time::Duration;

use super::*;
use crate::model::Model;
use crate::pipeline::{TrainOptions, train_model};
use crate::sinks::alerts::AlertError;
use crate::sinks::verdicts::VerdictError;
use crate::stream::scorer::Scorer;
use crate::stream::source::Incoming;

/// A store that is "down" for its first `fail` calls, and refuses the id `refuse`
/// for good (a unit-test fake; the real backends have their own suites against real
/// servers).
#[derive(Debug, Default)]
struct Flaky {
    fail: u32,
    refuse: Option<String>,
    calls: AtomicU32,
    written: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl VerdictStore for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn put_batch(&self, items: &[VerdictItem]) -> Result<(), VerdictError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
            return Err(VerdictError::Unreachable {
                endpoint: "flaky".into(),
                message: "down".into(),
            });
        }
        let mut refused = Vec::new();
        for i in items {
            if Some(&i.tx_id) == self.refuse.as_ref() {
                refused.push((i.tx_id.clone(), "key too long".to_owned()));
            } else {
                self.written.lock().unwrap().push(i.tx_id.clone());
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(VerdictError::Refused {
                store: "flaky".into(),
                refused,
            })
        }
    }
    async fn get(&self, _: &str) -> Result<Option<VerdictItem>, VerdictError> {
        Ok(None)
    }
    async fn put_new(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError> {
        self.put_batch(items)
            .await
            .map(|()| vec![true; items.len()])
    }
    async fn delete(&self, _: &str) -> Result<(), VerdictError> {
        Ok(())
    }
}

/// Dead letters kept in memory.
#[derive(Default)]
struct Letters(Mutex<Vec<DeadLetter>>);

#[async_trait::async_trait]
impl DeadLetterSink for Letters {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn send(
        &self,
        letters: &[DeadLetter],
    ) -> Result<(), crate::stream::dead_letter::DeadLetterError> {
        self.0.lock().unwrap().extend_from_slice(letters);
        Ok(())
    }
}

/// An alert sink that refuses any batch holding `refuse`, and sometimes is down.
#[derive(Default)]
struct Picky {
    refuse: String,
    down_first: AtomicU32,
    got: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl AlertSink for Picky {
    fn describe(&self) -> String {
        "picky".into()
    }
    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
        if self
            .down_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(AlertError::Unavailable {
                sink: "picky".into(),
                message: "503".into(),
            });
        }
        if alerts.iter().any(|a| a.tx_id == self.refuse) {
            return Err(AlertError::Refused {
                sink: "picky".into(),
                message: "HTTP 400".into(),
            });
        }
        self.got
            .lock()
            .unwrap()
            .extend(alerts.iter().map(|a| a.tx_id.clone()));
        Ok(())
    }
    async fn send_monitoring(
        &self,
        _: &crate::sinks::alerts::MonitoringAlert,
    ) -> Result<(), AlertError> {
        Ok(())
    }
}

async fn scored(n: usize) -> Scored {
    let d = crate::test_support::dataset(n, 4);
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 3;
    let model: Model = train_model(&d, "t", &opts, &|| {}).unwrap().model;
    let rows = (0..n)
        .map(|i| Incoming::now(d.row(i), i as u64 + 1))
        .collect();
    let mut scorer = Scorer::new(Arc::new(ArcSwap::from_pointee(model)), 3);
    scorer.score(rows).await.unwrap()
}

fn delivery(store: Arc<Flaky>) -> (Delivery, Arc<Letters>) {
    let letters = Arc::new(Letters::default());
    (Delivery::new(store, letters.clone()), letters)
}

#[tokio::test(start_paused = true)]
async fn an_outage_pauses_then_every_verdict_is_written() {
    let store = Arc::new(Flaky {
        fail: 6,
        ..Flaky::default()
    });
    let (mut d, letters) = delivery(store.clone());
    assert_eq!(d.write(&mut scored(200).await).await.unwrap(), 0);
    assert_eq!(store.calls.load(Ordering::SeqCst), 7);
    assert_eq!(store.written.lock().unwrap().len(), 200);
    assert!(letters.0.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_abort_during_an_outage_fails_the_batch_without_writing() {
    let store = Arc::new(Flaky {
        fail: u32::MAX,
        ..Flaky::default()
    });
    let (mut d, _) = delivery(store.clone());
    let abort = d.abort.clone();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        abort.cancel();
    });
    let e = d.write(&mut scored(50).await).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("stopped while the verdicts sink was unavailable"),
        "{e}"
    );
    assert!(store.written.lock().unwrap().is_empty());
    stopper.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_best_effort_store_outage_does_not_block_the_batch() {
    let store = Arc::new(Flaky {
        fail: u32::MAX,
        ..Flaky::default()
    });
    let (mut d, _) = delivery(store.clone());
    d.durable = Durability::of(&[Sink::Alerts]);
    d.write(&mut scored(20).await).await.unwrap();
    assert_eq!(
        store.calls.load(Ordering::SeqCst),
        1,
        "tried once, not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_verdict_is_dead_lettered_and_the_rest_written() {
    let store = Arc::new(Flaky {
        refuse: Some("t7".into()),
        ..Flaky::default()
    });
    let (mut d, letters) = delivery(store.clone());
    let mut batch = scored(30).await;
    assert_eq!(d.write(&mut batch).await.unwrap(), 1);
    assert_eq!(store.written.lock().unwrap().len(), 29);
    assert_eq!(store.calls.load(Ordering::SeqCst), 1, "not retried");
    let letters = letters.0.lock().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.code, "verdict_refused");
    assert_eq!(letters[0].key.as_deref(), Some(&b"t7"[..]));
    assert_eq!(
        letters[0].origin,
        Origin::File {
            path: Arc::from("-"),
            line: 8
        }
    );
    assert_eq!(batch.rows.len(), 29, "the refused row leaves the batch");
    assert!(batch.rows.iter().all(|r| r.tx.id != "t7"));
    assert_eq!(batch.verdicts.len(), 29);
}

#[tokio::test(start_paused = true)]
async fn a_refused_alert_is_isolated_and_dead_lettered() {
    let store = Arc::new(Flaky::default());
    let (mut d, letters) = delivery(store.clone());
    let mut batch = scored(400).await;
    for v in &mut batch.verdicts {
        v.fraud = true; // every row alerts
        v.decide_by_model(crate::rules::Outcome::Block);
    }
    let bad = batch.verdicts[123].tx_id.clone();
    let sink = Arc::new(Picky {
        refuse: bad.clone(),
        down_first: AtomicU32::new(2),
        ..Picky::default()
    });
    d.alerts = vec![sink.clone()];
    assert_eq!(d.write(&mut batch).await.unwrap(), 1);
    let mut got = sink.got.lock().unwrap().clone();
    got.sort();
    assert_eq!(got.len(), 399, "every other alert delivered, once");
    got.dedup();
    assert_eq!(got.len(), 399);
    assert!(!got.contains(&bad));
    let letters = letters.0.lock().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.code, "alert_refused");
    assert!(letters[0].reason.message.contains("HTTP 400"));
    assert_eq!(
        store.written.lock().unwrap().len(),
        400,
        "its verdict is written"
    );
}

#[test]
fn durability_names_its_sinks() {
    let d = Durability::default();
    assert!(d.verdicts && d.alerts && !d.lake);
    let parsed: Vec<Sink> = serde_json::from_str(r#"["lake","verdicts"]"#).unwrap();
    let d = Durability::of(&parsed);
    assert!(d.verdicts && !d.alerts && d.lake);
    assert!(serde_json::from_str::<Vec<Sink>>(r#"["dynamo"]"#).is_err());
}
