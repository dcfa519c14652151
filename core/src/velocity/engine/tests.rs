//! The engine's tests.

use super::*;
use crate::rng::Rng;
use crate::schema::{AMOUNT, TIME};
use crate::velocity::clock::Side;
use crate::velocity::hash::FastMap;
use crate::velocity::spec::Span;
use crate::velocity::store::{Bucket, MemoryLimits, MemoryStore};

pub(super) const DAY: f64 = 86_400.0;
/// 2018-04-01T00:00:00Z, a Sunday.
pub(super) const START: f64 = 1_522_540_800.0;

/// The handbook's windows with exclusive current windows and a current terminal
/// count.
fn spec() -> VelocitySpec {
    let mut s = VelocitySpec::handbook();
    s.include_current = false;
    s.entities[1].aggregates = vec![Aggregate::Count, Aggregate::Risk];
    s
}

/// A memory store seen only through the trait, as a remote store is: the engine's
/// batch path (fetch, compute, commit) instead of its in-place one.
struct Opaque(MemoryStore);

impl StateStore for Opaque {
    fn served(&mut self, ids: &[&str]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        self.0.served(ids)
    }
    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError> {
        self.0.buckets(keys, since)
    }
    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        self.0.commit(txs)
    }
    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
        self.0.label(labels)
    }
    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError> {
        self.0.uncount(txs)
    }
    fn expire_before(&mut self, bucket: i64) {
        self.0.expire_before(bucket);
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

fn store() -> MemoryStore {
    MemoryStore::new(MemoryLimits {
        horizon: 10_000,
        max_entities: 1_000_000,
        max_served: 1_000_000,
    })
}

fn tx(id: &str, time: f64, amount: f64, card: &str, terminal: &str) -> Transaction {
    let mut values = [0.0; crate::schema::NUM_FIELDS];
    values[TIME] = time;
    values[AMOUNT] = amount;
    Transaction {
        id: id.into(),
        values,
        card_id: (!card.is_empty()).then(|| card.into()),
        terminal_id: (!terminal.is_empty()).then(|| terminal.into()),
        ..Transaction::default()
    }
}

fn feature<S: StateStore>(e: &Engine<S>, t: &Transaction, name: &str) -> f32 {
    let i = e.spec().names().iter().position(|n| n == name).unwrap();
    t.derived[i]
}

#[test]
fn the_store_conforms() {
    super::super::conformance::run(store);
}

#[test]
fn features_are_point_in_time() {
    let mut e = Engine::new(spec(), store()).unwrap();
    let mut b = vec![
        tx("1", START + 3_600.0, 10.0, "c", "t"),
        tx("2", START + 7_200.0, 30.0, "c", "t"),
    ];
    e.process(&mut b).unwrap();
    assert_eq!(
        feature(&e, &b[0], "card_id_count_1d"),
        0.0,
        "nothing before it"
    );
    assert_eq!(
        feature(&e, &b[1], "card_id_count_1d"),
        1.0,
        "the first, same batch"
    );
    assert_eq!(feature(&e, &b[1], "card_id_mean_amount_1d"), 10.0);
    assert_eq!(feature(&e, &b[1], "terminal_id_count_7d"), 1.0);
    // Two days later the 1-day window is empty, the 7-day one is not.
    let mut later = vec![tx("3", START + 2.0 * DAY + 7_200.0, 5.0, "c", "u")];
    e.process(&mut later).unwrap();
    assert_eq!(feature(&e, &later[0], "card_id_count_1d"), 0.0);
    assert_eq!(feature(&e, &later[0], "card_id_count_7d"), 2.0);
    assert_eq!(feature(&e, &later[0], "card_id_mean_amount_7d"), 20.0);
    assert_eq!(
        feature(&e, &later[0], "terminal_id_count_7d"),
        0.0,
        "new terminal"
    );
    // Sunday 02:00 UTC.
    assert_eq!(feature(&e, &b[1], "weekend"), 1.0);
    assert_eq!(feature(&e, &b[1], "night"), 1.0);
    assert_eq!(feature(&e, &later[0], "weekend"), 0.0, "Tuesday");
}

#[test]
fn include_current_counts_the_transaction_itself() {
    let mut e = Engine::new(VelocitySpec::handbook(), store()).unwrap();
    let mut b = vec![
        tx("1", START + 3_600.0, 10.0, "c", "t"),
        tx("2", START + 7_200.0, 30.0, "c", "t"),
    ];
    e.process(&mut b).unwrap();
    assert_eq!(feature(&e, &b[0], "card_id_count_1d"), 1.0);
    assert_eq!(feature(&e, &b[0], "card_id_mean_amount_1d"), 10.0);
    assert_eq!(feature(&e, &b[1], "card_id_count_1d"), 2.0);
    assert_eq!(feature(&e, &b[1], "card_id_mean_amount_1d"), 20.0);
    // The delayed terminal windows are untouched by it.
    assert_eq!(feature(&e, &b[1], "terminal_id_delayed_count_1d"), 0.0);
}

#[test]
fn a_redelivered_transaction_keeps_its_features_and_counts_once() {
    redelivery_on(Engine::new(spec(), store()).unwrap());
    redelivery_on(Engine::new(spec(), Opaque(store())).unwrap());
}

fn redelivery_on<S: StateStore>(mut e: Engine<S>) {
    let mut first = vec![
        tx("1", START, 10.0, "c", "t"),
        tx("2", START + 60.0, 20.0, "c", "t"),
    ];
    e.process(&mut first).unwrap();
    let mut again = vec![first[1].clone(), tx("3", START + 120.0, 1.0, "c", "t")];
    again[0].derived.clear();
    let r = e.process(&mut again).unwrap();
    assert_eq!((r.computed, r.replayed), (1, 1));
    assert_eq!(
        again[0].derived, first[1].derived,
        "same features on redelivery"
    );
    assert_eq!(
        feature(&e, &again[1], "card_id_count_1d"),
        2.0,
        "counted once"
    );
    // Twice in one batch: the first counts, the second gets its features.
    let mut twice = vec![
        tx("4", START + 180.0, 1.0, "c", "t"),
        tx("4", START + 180.0, 1.0, "c", "t"),
    ];
    let r = e.process(&mut twice).unwrap();
    assert_eq!((r.computed, r.replayed), (1, 1));
    assert_eq!(twice[0].derived, twice[1].derived);
    let mut next = vec![tx("5", START + 240.0, 1.0, "c", "t")];
    e.process(&mut next).unwrap();
    assert_eq!(feature(&e, &next[0], "card_id_count_1d"), 4.0);
}

#[test]
fn risk_reads_labels_after_the_delay() {
    let mut e = Engine::new(spec(), store()).unwrap();
    let mut b = vec![
        tx("f", START, 100.0, "c", "t"),
        tx("ok", START + 10.0, 5.0, "d", "t"),
    ];
    e.process(&mut b).unwrap();
    let label = LabelEvent {
        tx_id: "f".into(),
        time: START,
        label: 1,
        card_id: Some("c".into()),
        terminal_id: Some("t".into()),
    };
    assert_eq!(e.label(std::slice::from_ref(&label)).unwrap(), 1);
    assert_eq!(
        e.label(&[label]).unwrap(),
        0,
        "a repeated label changes nothing"
    );
    // Six days on, the delayed window still ends before the fraud.
    let mut early = vec![tx("x", START + 6.0 * DAY, 1.0, "e", "t")];
    e.process(&mut early).unwrap();
    assert_eq!(feature(&e, &early[0], "terminal_id_risk_1d"), 0.0);
    // Seven days and an hour on, the delayed 1-day window holds both transactions.
    let mut due = vec![tx("y", START + 7.0 * DAY + 3_600.0, 1.0, "e", "t")];
    e.process(&mut due).unwrap();
    assert_eq!(feature(&e, &due[0], "terminal_id_risk_1d"), 0.5);
    assert_eq!(feature(&e, &due[0], "terminal_id_risk_30d"), 0.5);
}

#[test]
fn a_missing_entity_is_reported_and_reads_zero() {
    let mut e = Engine::new(spec(), store()).unwrap();
    let mut b = vec![
        tx("1", START, 10.0, "c", "t"),
        tx("2", START + 1.0, 10.0, "c", ""),
    ];
    let r = e.process(&mut b).unwrap();
    assert_eq!(r.missing, vec![(1, Entity::TerminalId)]);
    assert_eq!(feature(&e, &b[1], "card_id_count_1d"), 1.0);
    assert_eq!(feature(&e, &b[1], "terminal_id_count_1d"), 0.0);
}

#[test]
fn memory_is_bounded_in_entities() {
    let limits = MemoryLimits {
        horizon: spec().horizon_buckets(),
        max_entities: 2_000,
        max_served: 500,
    };
    let mut e = Engine::new(spec(), MemoryStore::new(limits)).unwrap();
    for chunk in 0..50 {
        let mut b: Vec<Transaction> = (0..200)
            .map(|i| {
                let n = chunk * 200 + i;
                tx(
                    &n.to_string(),
                    START + f64::from(n),
                    1.0,
                    &format!("c{n}"),
                    "t",
                )
            })
            .collect();
        e.process(&mut b).unwrap();
    }
    let s = e.stats();
    assert!(s.entities <= 2_000, "{s:?}");
    assert!(s.evicted >= 8_000, "{s:?}");
    assert!(s.served <= 500, "{s:?}");
    assert!(
        s.bytes_per_entity() > 0.0 && s.bytes_per_entity() < 200.0,
        "{s:?}"
    );
}

#[test]
fn the_amount_ratio_compares_the_amount_with_the_windows_mean() {
    for include_current in [false, true] {
        let mut spec = VelocitySpec::handbook();
        spec.include_current = include_current;
        spec.entities[0].aggregates = vec![Aggregate::AmountRatio];
        let mut e = Engine::new(spec, store()).unwrap();
        let mut b = vec![
            tx("1", START + 3_600.0, 10.0, "c", "t"),
            tx("2", START + 7_200.0, 30.0, "c", "t"),
            tx("3", START + 9.0 * DAY, 40.0, "c", "t"),
        ];
        e.process(&mut b).unwrap();
        let ratio = |t, w| feature(&e, t, &format!("card_id_amount_ratio_{w}"));
        if include_current {
            // Its own amount over itself; then 30 over the mean of 10 and 30.
            assert_eq!(ratio(&b[0], "1d"), 1.0);
            assert_eq!(ratio(&b[1], "1d"), 1.5);
            // Nine days later: alone in its day and week, 40 over 80 / 3 in the month.
            assert_eq!(ratio(&b[2], "7d"), 1.0);
            assert_eq!(ratio(&b[2], "30d"), 1.5);
        } else {
            // An empty window has no mean: 0.
            assert_eq!(ratio(&b[0], "1d"), 0.0);
            assert_eq!(ratio(&b[1], "1d"), 3.0);
            assert_eq!(ratio(&b[2], "7d"), 0.0);
            assert_eq!(ratio(&b[2], "30d"), 2.0);
        }
    }
    // Two huge amounts make the card's sum infinite: its later ratios read 0, not NaN.
    let mut spec = VelocitySpec::handbook();
    spec.entities[0].aggregates = vec![Aggregate::AmountRatio];
    let mut e = Engine::new(spec, store()).unwrap();
    let mut b = vec![
        tx("1", START + 3_600.0, 1e308, "c", "t"),
        tx("2", START + 7_200.0, 1e308, "c", "t"),
        tx("3", START + 10_800.0, 5.0, "c", "t"),
    ];
    e.process(&mut b).unwrap();
    for t in &b[1..] {
        assert_eq!(feature(&e, t, "card_id_amount_ratio_1d"), 0.0);
    }
}

/// A random stream: online in random batches with labels arriving within the delay,
/// offline in one pass. The features are the same.
#[test]
fn offline_equals_online() {
    parity(false);
    parity(true);
}

fn parity(include_current: bool) {
    let mut spec = spec();
    spec.include_current = include_current;
    spec.entities[0].aggregates.push(Aggregate::Sum);
    spec.entities[0].aggregates.push(Aggregate::AmountRatio);
    spec.entities[1].aggregates.push(Aggregate::Frauds);
    spec.entities[1].windows.push(Span(3_600));
    let mut rng = Rng::new(7);
    let mut time = START;
    let mut txs: Vec<Transaction> = (0..6_000)
        .map(|i| {
            time += rng.below(1_200) as f64;
            let mut t = tx(
                &format!("tx{i}"),
                time,
                (rng.below(20_000) as f64) / 100.0,
                &format!("c{}", rng.below(40)),
                &format!("t{}", rng.below(15)),
            );
            t.label = Some(u8::from(rng.below(10) == 0));
            t
        })
        .collect();
    let mut offline = txs.clone();
    let mut e = offline_engine(spec.clone()).unwrap();
    compute_offline(&mut e, &mut offline).unwrap();

    // The batch path online, the in-place path offline.
    let mut online = Engine::new(spec, Opaque(store())).unwrap();
    let delay = online.spec().label_delay.secs() as f64;
    let mut pending: Vec<LabelEvent> = Vec::new();
    let mut i = 0;
    while i < txs.len() {
        let n = 1 + rng.below(64);
        let end = (i + n).min(txs.len());
        // Every label falls due (its transaction's time plus the delay) before the
        // first transaction after that time is scored; some arrive earlier.
        let now = txs[end - 1].time();
        let (due, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|l| l.time + delay <= now);
        online.label(&due).unwrap();
        pending = later;
        online.process(&mut txs[i..end]).unwrap();
        for t in &txs[i..end] {
            pending.push(LabelEvent {
                tx_id: t.id.clone(),
                time: t.time(),
                label: t.label.unwrap_or(0),
                card_id: t.card_id.clone(),
                terminal_id: t.terminal_id.clone(),
            });
        }
        i = end;
    }
    let risky = offline
        .iter()
        .filter(|t| t.derived.iter().rev().nth(2).is_some_and(|&v| v > 0.0))
        .count();
    assert!(risky > 100, "the fraud counters are exercised ({risky})");
    for (a, b) in txs.iter().zip(&offline) {
        assert_eq!(a.derived, b.derived, "{}", a.id);
    }
}

#[test]
fn time_flags_read_utc() {
    assert_eq!(time_flags(START), (true, true), "Sunday midnight");
    assert_eq!(
        time_flags(START + 6.0 * 3_600.0 + 59.0),
        (true, true),
        "06:00:59"
    );
    assert_eq!(time_flags(START + 7.0 * 3_600.0), (true, false));
    assert_eq!(
        time_flags(START + DAY + 12.0 * 3_600.0),
        (false, false),
        "Monday noon"
    );
    assert_eq!(time_flags(START - DAY), (true, true), "Saturday");
}

mod event_time;
