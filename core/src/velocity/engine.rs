//! The engine: computes each transaction's entity features point in time (from events
//! before it only), then counts it. The same code runs online, batch by batch, and
//! offline over a historical file in time order.

use super::hash::FastMap;
use super::spec::{Aggregate, Entity, MissingEntity, SpecError, VelocitySpec};
use super::store::{
    Bucket, Commit, Key, Label, MemoryLimits, MemoryStore, StateStore, StoreError, StoreStats,
};
use crate::schema::Transaction;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Transactions whose features were computed and counted now.
    pub computed: usize,
    /// Transactions seen before: their recorded features were reused, nothing counted.
    pub replayed: usize,
    /// Rows (indices into the batch) lacking an id of an entity the spec uses, with the
    /// entity: scored without that entity's features under [`MissingEntity::Score`].
    pub missing: Vec<(usize, Entity)>,
}

/// A labelled transaction, as a labels source delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEvent {
    /// The transaction.
    pub tx_id: String,
    /// Its event time (`Time`, Unix seconds).
    pub time: f64,
    /// 1 for fraud.
    pub label: u8,
    /// Its card.
    pub card_id: Option<String>,
    /// Its terminal.
    pub terminal_id: Option<String>,
}

/// Computes entity features against a [`StateStore`].
pub struct Engine<S> {
    spec: VelocitySpec,
    store: S,
    width: usize,
    bucket_secs: f64,
    delay: i64,
    since: i64,
    plan: Vec<EntityPlan>,
}

struct EntityPlan {
    entity: Entity,
    aggregates: Vec<Aggregate>,
    /// Window lengths in buckets.
    windows: Vec<i64>,
}

impl<S: StateStore> Engine<S> {
    /// An engine computing `spec` against `store`.
    pub fn new(spec: VelocitySpec, store: S) -> Result<Self, SpecError> {
        spec.validate()?;
        let b = spec.bucket.secs();
        let plan = spec
            .entities
            .iter()
            .map(|e| EntityPlan {
                entity: e.name,
                aggregates: e.aggregates.clone(),
                windows: e.windows.iter().map(|w| (w.secs() / b) as i64).collect(),
            })
            .collect();
        Ok(Self {
            width: spec.names().len(),
            bucket_secs: b as f64,
            delay: (spec.label_delay.secs() / b) as i64,
            since: spec.horizon_buckets(),
            plan,
            spec,
            store,
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &VelocitySpec {
        &self.spec
    }

    /// Features per transaction.
    #[must_use]
    pub fn width(&self) -> usize {
        self.width
    }

    /// The store's sizes.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    fn bucket_of(&self, time: f64) -> i64 {
        (time / self.bucket_secs).floor() as i64
    }

    /// Compute and record the features of `txs`, in order, into each transaction's
    /// `derived` (replacing what was there). A transaction id recorded before gets its
    /// recorded features back and counts nothing. On a store error nothing of the batch
    /// is recorded and the batch may be retried whole.
    pub fn process(&mut self, txs: &mut [Transaction]) -> Result<BatchReport, StoreError> {
        if self.store.as_memory().is_some() {
            return Ok(self.process_in_memory(txs));
        }
        let mut report = BatchReport::default();
        let ids: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
        let width = self.width;
        let mut known: Vec<Option<Vec<f32>>> = self
            .store
            .served(&ids)?
            .into_iter()
            // Features recorded under another spec are not this spec's.
            .map(|k| k.filter(|f| f.len() == width))
            .collect();
        drop(ids);
        // Entities of the new rows, fetched once for the batch.
        let mut local: FastMap<Key<'_>, Vec<Bucket>> = FastMap::default();
        // The oldest bucket any row of the batch reads.
        let oldest = txs
            .iter()
            .map(|t| self.bucket_of(t.time()))
            .min()
            .unwrap_or(0);
        let mut wanted: Vec<Key<'_>> = Vec::new();
        for (t, k) in txs.iter().zip(&known) {
            if k.is_none() {
                for p in &self.plan {
                    if let Some(id) = entity_id(t, p.entity)
                        && let std::collections::hash_map::Entry::Vacant(v) =
                            local.entry((p.entity, id))
                    {
                        v.insert(Vec::new());
                        wanted.push((p.entity, id));
                    }
                }
            }
        }
        let fetched = self.store.buckets(&wanted, oldest - self.since)?;
        for (k, b) in wanted.iter().zip(fetched) {
            local.insert(*k, b);
        }
        let mut computed: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut first_of: FastMap<&str, usize> = FastMap::default();
        for (i, t) in txs.iter().enumerate() {
            if known[i].is_some() {
                continue;
            }
            if let Some(&j) = first_of.get(t.id.as_str()) {
                // The same id twice in one batch: the first one counts.
                known[i] = Some(computed[j].1.clone());
                continue;
            }
            let bucket = self.bucket_of(t.time());
            let mut f = Vec::with_capacity(self.width);
            for p in &self.plan {
                match entity_id(t, p.entity) {
                    Some(id) => {
                        let buckets = local.entry((p.entity, id)).or_default();
                        if self.spec.include_current {
                            add(buckets, bucket, t.amount());
                            p.features(buckets, bucket, self.delay, &mut f);
                        } else {
                            p.features(buckets, bucket, self.delay, &mut f);
                            add(buckets, bucket, t.amount());
                        }
                    }
                    None => {
                        report.missing.push((i, p.entity));
                        f.extend(std::iter::repeat_n(
                            0.0,
                            p.aggregates.len() * p.windows.len(),
                        ));
                    }
                }
            }
            if self.spec.time_flags {
                let (weekend, night) = time_flags(t.time());
                f.push(f32::from(u8::from(weekend)));
                f.push(f32::from(u8::from(night)));
            }
            first_of.insert(t.id.as_str(), computed.len());
            computed.push((i, f));
        }
        // Every row's entity keys in one vector; `spans` says which are whose.
        let mut keys: Vec<Key<'_>> = Vec::with_capacity(computed.len() * self.plan.len());
        let mut spans = Vec::with_capacity(computed.len());
        for (i, _) in &computed {
            let from = keys.len();
            keys.extend(
                self.plan
                    .iter()
                    .filter_map(|p| entity_id(&txs[*i], p.entity).map(|id| (p.entity, id))),
            );
            spans.push(from..keys.len());
        }
        let commits: Vec<Commit<'_>> = computed
            .iter()
            .zip(spans)
            .map(|((i, f), span)| Commit {
                tx_id: &txs[*i].id,
                features: f,
                keys: &keys[span],
                bucket: self.bucket_of(txs[*i].time()),
                amount: txs[*i].amount(),
            })
            .collect();
        self.store.commit(&commits)?;
        drop(commits);
        drop(keys);
        drop(local);
        drop(first_of);
        report.computed = computed.len();
        report.replayed = txs.len() - computed.len();
        let mut computed = computed.into_iter().peekable();
        for (i, (t, k)) in txs.iter_mut().zip(known).enumerate() {
            let f = match k {
                Some(f) => f,
                None => {
                    let (j, f) = computed.next().expect("one computed row per new row");
                    debug_assert_eq!(i, j);
                    f
                }
            };
            t.derived = f;
        }
        Ok(report)
    }

    /// [`Engine::process`] on a store in this process: each transaction is computed and
    /// counted in place, in order, with one lookup per entity.
    fn process_in_memory(&mut self, txs: &mut [Transaction]) -> BatchReport {
        let mut report = BatchReport::default();
        let (width, delay, include) = (self.width, self.delay, self.spec.include_current);
        let flags = self.spec.time_flags;
        let bucket_secs = self.bucket_secs;
        let Some(mem) = self.store.as_memory() else {
            return report;
        };
        for (i, t) in txs.iter_mut().enumerate() {
            if let Some(f) = mem.served_features(&t.id).filter(|f| f.len() == width) {
                t.derived = f;
                report.replayed += 1;
                continue;
            }
            let bucket = (t.time() / bucket_secs).floor() as i64;
            let amount = t.amount();
            let mut f = Vec::with_capacity(width);
            for p in &self.plan {
                match entity_id(t, p.entity) {
                    Some(id) => mem.with_entity((p.entity, id), bucket, |buckets| {
                        if include {
                            add(buckets, bucket, amount);
                            p.features(buckets, bucket, delay, &mut f);
                        } else {
                            p.features(buckets, bucket, delay, &mut f);
                            add(buckets, bucket, amount);
                        }
                    }),
                    None => {
                        report.missing.push((i, p.entity));
                        f.extend(std::iter::repeat_n(
                            0.0,
                            p.aggregates.len() * p.windows.len(),
                        ));
                    }
                }
            }
            if flags {
                let (weekend, night) = time_flags(t.time());
                f.push(f32::from(u8::from(weekend)));
                f.push(f32::from(u8::from(night)));
            }
            mem.record_served(&t.id, &f);
            t.derived = f;
            report.computed += 1;
        }
        mem.note_commits(report.computed);
        report
    }

    /// Count fraud labels in their transactions' buckets (labels of legitimate
    /// transactions change no counter). Returns how many were new.
    pub fn label(&mut self, labels: &[LabelEvent]) -> Result<usize, StoreError> {
        let frauds: Vec<&LabelEvent> = labels.iter().filter(|l| l.label == 1).collect();
        let keys: Vec<Vec<Key<'_>>> = frauds
            .iter()
            .map(|l| {
                self.plan
                    .iter()
                    .filter(|p| p.aggregates.iter().any(|a| a.delayed()))
                    .filter_map(|p| {
                        let id = match p.entity {
                            Entity::CardId => l.card_id.as_deref(),
                            Entity::TerminalId => l.terminal_id.as_deref(),
                        };
                        id.filter(|s| !s.is_empty()).map(|id| (p.entity, id))
                    })
                    .collect()
            })
            .collect();
        let updates: Vec<Label<'_>> = frauds
            .iter()
            .zip(&keys)
            .map(|(l, k)| Label {
                tx_id: &l.tx_id,
                keys: k,
                bucket: self.bucket_of(l.time),
            })
            .collect();
        self.store.label(&updates)
    }

    /// Whether a missing entity id refuses the transaction.
    #[must_use]
    pub fn refuses_missing(&self) -> bool {
        self.spec.missing_entity == MissingEntity::Refuse
    }
}

impl EntityPlan {
    /// Append this entity's features at bucket `b` from its (ascending) buckets.
    fn features(&self, buckets: &[Bucket], b: i64, delay: i64, out: &mut Vec<f32>) {
        for a in &self.aggregates {
            for &w in &self.windows {
                // Current windows: (b − w, b], events so far. Delayed windows: the w
                // whole buckets ending at b − delay, all of whose labels are due.
                let (lo, hi) = if a.delayed() {
                    (b - delay - w, b - delay - 1)
                } else {
                    (b - w + 1, b)
                };
                let (mut count, mut frauds, mut sum) = (0u64, 0u64, 0.0f64);
                let start = buckets.partition_point(|x| x.idx < lo);
                for x in buckets[start..].iter().take_while(|x| x.idx <= hi) {
                    count += u64::from(x.count);
                    frauds += u64::from(x.frauds);
                    sum += x.sum;
                }
                let v = match a {
                    Aggregate::Count | Aggregate::DelayedCount => count as f64,
                    Aggregate::Sum => sum,
                    Aggregate::MeanAmount => ratio(sum, count),
                    Aggregate::Frauds => frauds as f64,
                    Aggregate::Risk => ratio(frauds as f64, count).min(1.0),
                };
                out.push(v as f32);
            }
        }
    }
}

fn ratio(num: f64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num / den as f64 }
}

fn add(buckets: &mut Vec<Bucket>, idx: i64, amount: f64) {
    let pos = buckets.partition_point(|b| b.idx < idx);
    match buckets.get_mut(pos) {
        Some(b) if b.idx == idx => {
            b.count += 1;
            b.sum += amount;
        }
        _ => buckets.insert(
            pos,
            Bucket {
                idx,
                count: 1,
                frauds: 0,
                sum: amount,
            },
        ),
    }
}

fn entity_id(t: &Transaction, e: Entity) -> Option<&str> {
    match e {
        Entity::CardId => t.card_id.as_deref(),
        Entity::TerminalId => t.terminal_id.as_deref(),
    }
    .filter(|s| !s.is_empty())
}

/// `(weekend, night)` of a Unix time in UTC: Saturday or Sunday; hour 0 to 6.
#[must_use]
pub fn time_flags(unix: f64) -> (bool, bool) {
    let secs = unix.floor() as i64;
    let day = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3_600;
    // 1970-01-01 was a Thursday: (day + 4) % 7 is 0 on Sundays, 6 on Saturdays.
    let weekday = (day + 4).rem_euclid(7);
    (weekday == 0 || weekday == 6, hour <= 6)
}

/// Entity features of a historical file, offline: rows in time order (ties in input
/// order), each label known once its transaction is counted. It gives what a detector
/// computes online when every label arrives within the spec's label delay, so training
/// on it learns what scoring sees.
pub fn compute_offline<S: StateStore>(
    engine: &mut Engine<S>,
    txs: &mut [Transaction],
) -> Result<BatchReport, StoreError> {
    let mut order: Vec<usize> = (0..txs.len()).collect();
    order.sort_by(|&a, &b| txs[a].time().total_cmp(&txs[b].time()));
    let mut total = BatchReport::default();
    for i in order {
        let r = engine.offline_one(&mut txs[i])?;
        total.computed += r.computed;
        total.replayed += r.replayed;
        total
            .missing
            .extend(r.missing.into_iter().map(|(_, e)| (i, e)));
    }
    Ok(total)
}

impl<S: StateStore> Engine<S> {
    /// One step of [`compute_offline`]: the next transaction in time order, then its
    /// label, if it is a fraud.
    pub fn offline_one(&mut self, tx: &mut Transaction) -> Result<BatchReport, StoreError> {
        let r = self.process(std::slice::from_mut(tx))?;
        if tx.label == Some(1) && r.computed == 1 {
            self.label(&[LabelEvent {
                tx_id: tx.id.clone(),
                time: tx.time(),
                label: 1,
                card_id: tx.card_id.clone(),
                terminal_id: tx.terminal_id.clone(),
            }])?;
        }
        Ok(r)
    }
}

/// An engine over a fresh [`MemoryStore`] for offline work: entities bounded only by
/// the horizon.
pub fn offline_engine(spec: VelocitySpec) -> Result<Engine<MemoryStore>, SpecError> {
    let limits = MemoryLimits {
        horizon: spec.horizon_buckets(),
        max_entities: usize::MAX,
        max_served: 1 << 16,
    };
    Engine::new(spec, MemoryStore::new(limits))
}

/// Offline features over a history read in time order, possibly from several files:
/// [`Engine::offline_one`] per row, refusing a row earlier than the one before.
pub struct OfflineFeatures {
    engine: Engine<MemoryStore>,
    last_time: f64,
    rows: u64,
}

impl OfflineFeatures {
    /// Features of `spec`, from empty state.
    pub fn new(spec: VelocitySpec) -> Result<Self, SpecError> {
        Ok(Self {
            engine: offline_engine(spec)?,
            last_time: f64::NEG_INFINITY,
            rows: 0,
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &VelocitySpec {
        self.engine.spec()
    }

    /// Features per row.
    #[must_use]
    pub fn width(&self) -> usize {
        self.engine.width()
    }

    /// Give `tx` its features (the next row in time order).
    pub fn next(&mut self, tx: &mut Transaction) -> Result<(), String> {
        self.rows += 1;
        if tx.time() < self.last_time {
            return Err(format!(
                "rows must be in time order: row {} (id {:?}) has Time {} after {}",
                self.rows,
                tx.id,
                tx.time(),
                self.last_time
            ));
        }
        self.last_time = tx.time();
        self.engine
            .offline_one(tx)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::schema::{AMOUNT, TIME};
    use crate::velocity::spec::Span;
    use crate::velocity::store::{MemoryLimits, MemoryStore};

    const DAY: f64 = 86_400.0;
    /// 2018-04-01T00:00:00Z, a Sunday.
    const START: f64 = 1_522_540_800.0;

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
        fn buckets(
            &mut self,
            keys: &[Key<'_>],
            since: i64,
        ) -> Result<Vec<Vec<Bucket>>, StoreError> {
            self.0.buckets(keys, since)
        }
        fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
            self.0.commit(txs)
        }
        fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
            self.0.label(labels)
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
}
