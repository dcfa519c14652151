//! Computing a batch: in place on a store in this process, or fetch, compute and commit
//! on any other; the per-row feature computation both share.

use super::{BatchReport, Engine, EntityPlan, Held, OutOfRange, RowRules};
use crate::schema::Transaction;
use crate::velocity::clock::Fate;
use crate::velocity::hash::FastMap;
use crate::velocity::spec::{Aggregate, Entity};
use crate::velocity::store::{Bucket, Commit, Key, StateStore, StoreError};

impl<S: StateStore> Engine<S> {
    /// [`Engine::process`] on a store in this process: each transaction is computed and
    /// counted in place, in order, with one lookup per entity.
    pub(super) fn process_in_memory(
        &mut self,
        txs: &mut [Transaction],
        now: Option<f64>,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        let (width, rules) = (self.width, self.rules());
        for (i, t) in txs.iter_mut().enumerate() {
            let Some(mem) = self.store.as_memory() else {
                return report;
            };
            if let Some(f) = mem.served_features(&t.id).filter(|f| f.len() == width) {
                t.derived = f;
                report.replayed += 1;
                continue;
            }
            let time = t.time();
            for h in self.judge_held(time, now, &mut report) {
                let keys = h.keys();
                // A store in this process cannot fail.
                let _taken = self.store.uncount(&[h.commit(&keys)]);
            }
            let fate = self.clock.fate(time, now);
            let bucket = self.bucket_of(time);
            let Some(mem) = self.store.as_memory() else {
                return report;
            };
            let counts = matches!(fate, Fate::Count | Fate::Hold);
            let f = row_features(&self.plan, rules, t, bucket, i, &mut report, |key, f| {
                if counts {
                    mem.with_entity(key, bucket, f);
                } else {
                    f(&mut mem.peek(key));
                }
            });
            report.computed += 1;
            match fate {
                Fate::Count | Fate::Hold => {
                    mem.record_served(&t.id, &f);
                    mem.note_commits(1);
                    if fate == Fate::Count {
                        self.clock.counted(time);
                    } else {
                        report.held.push(i);
                        self.hold(Held::of(t, bucket, &self.plan));
                    }
                }
                Fate::Refuse(side) => report.out_of_range.push(OutOfRange {
                    tx_id: t.id.clone(),
                    row: Some(i),
                    side,
                }),
            }
            t.derived = f;
        }
        if let Some(k) = self.keep_from() {
            self.store.expire_before(k);
        }
        report
    }

    /// [`Engine::process`] on a store elsewhere: one lookup of the ids already served,
    /// one fetch of the batch's entities, the rows computed in order against those, one
    /// commit, and one call to take back what was held and not followed.
    pub(super) fn process_remote(
        &mut self,
        txs: &mut [Transaction],
        now: Option<f64>,
    ) -> Result<BatchReport, StoreError> {
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
        let mut local: FastMap<(Entity, Box<str>), Vec<Bucket>> = FastMap::default();
        let mut wanted: Vec<(Entity, Box<str>)> = Vec::new();
        let mut oldest = i64::MAX;
        for (t, k) in txs.iter().zip(&known) {
            if k.is_some() {
                continue;
            }
            oldest = oldest.min(self.bucket_of(t.time()));
            for p in &self.plan {
                if let Some(id) = entity_id(t, p.entity) {
                    let key = (p.entity, Box::<str>::from(id));
                    if !local.contains_key(&key) {
                        local.insert(key.clone(), Vec::new());
                        wanted.push(key);
                    }
                }
            }
        }
        let keys: Vec<Key<'_>> = wanted.iter().map(|(e, id)| (*e, &**id)).collect();
        let fetched = self
            .store
            .buckets(&keys, oldest.saturating_sub(self.since))?;
        drop(keys);
        for (k, b) in wanted.into_iter().zip(fetched) {
            local.insert(k, b);
        }
        let rules = self.rules();
        // What to commit, in order: rows counted now, and held ones the stream followed.
        let mut commits: Vec<(Held, Vec<f32>)> = Vec::new();
        let mut release: Vec<Held> = Vec::new();
        let mut first_of: FastMap<String, usize> = FastMap::default();
        for i in 0..txs.len() {
            if known[i].is_some() {
                continue;
            }
            let t = &txs[i];
            if let Some(&j) = first_of.get(t.id.as_str()) {
                // The same id twice in one batch: the first one counts.
                known[i] = known[j].clone();
                continue;
            }
            let time = t.time();
            for h in self.judge_held(time, now, &mut report) {
                // Held in this batch: its commit is not sent. Earlier: taken back after.
                match commits.iter().position(|(c, _)| c.tx_id == h.tx_id) {
                    Some(at) => drop(commits.remove(at)),
                    None => release.push(h),
                }
            }
            let fate = self.clock.fate(time, now);
            let bucket = self.bucket_of(time);
            let counts = matches!(fate, Fate::Count | Fate::Hold);
            let f = row_features(
                &self.plan,
                rules,
                &txs[i],
                bucket,
                i,
                &mut report,
                |(e, id), f| {
                    let buckets = local.entry((e, id.into())).or_default();
                    if counts {
                        f(buckets);
                    } else {
                        f(&mut buckets.clone());
                    }
                },
            );
            report.computed += 1;
            match fate {
                Fate::Count | Fate::Hold => {
                    let h = Held::of(&txs[i], bucket, &self.plan);
                    if fate == Fate::Count {
                        self.clock.counted(time);
                    } else {
                        report.held.push(i);
                        self.hold(h.clone());
                    }
                    commits.push((h, f.clone()));
                }
                Fate::Refuse(side) => report.out_of_range.push(OutOfRange {
                    tx_id: txs[i].id.clone(),
                    row: Some(i),
                    side,
                }),
            }
            first_of.insert(txs[i].id.clone(), i);
            known[i] = Some(f);
        }
        if let Some(k) = self.keep_from() {
            self.store.expire_before(k);
        }
        let keys: Vec<Vec<Key<'_>>> = commits.iter().map(|(h, _)| h.keys()).collect();
        let batch: Vec<Commit<'_>> = commits
            .iter()
            .zip(&keys)
            .map(|((h, f), k)| Commit {
                tx_id: &h.tx_id,
                features: f,
                keys: k,
                bucket: h.bucket,
                amount: h.amount,
            })
            .collect();
        self.store.commit(&batch)?;
        if !release.is_empty() {
            let keys: Vec<Vec<Key<'_>>> = release.iter().map(Held::keys).collect();
            let back: Vec<Commit<'_>> = release
                .iter()
                .zip(&keys)
                .map(|(h, k)| h.commit(k))
                .collect();
            self.store.uncount(&back)?;
        }
        report.replayed = txs.len() - report.computed;
        for (t, k) in txs.iter_mut().zip(known) {
            t.derived = k.unwrap_or_default();
        }
        Ok(report)
    }
}

/// The features of `t` (row `row` of its batch) in bucket `bucket`. `entity` runs the
/// given closure on an entity's buckets (the store's own, to count the transaction, or a
/// copy, to only read them); the closure counts the transaction in them when the spec
/// includes it in its own windows.
fn row_features(
    plan: &[EntityPlan],
    rules: RowRules,
    t: &Transaction,
    bucket: i64,
    row: usize,
    report: &mut BatchReport,
    mut entity: impl FnMut(Key<'_>, &mut dyn FnMut(&mut Vec<Bucket>)),
) -> Vec<f32> {
    let amount = t.amount();
    let mut f = Vec::with_capacity(plan.len() * 6 + 2);
    for p in plan {
        match entity_id(t, p.entity) {
            Some(id) => entity((p.entity, id), &mut |buckets| {
                if rules.include_current {
                    add(buckets, bucket, amount);
                    p.features(buckets, bucket, rules.delay, amount, &mut f);
                } else {
                    p.features(buckets, bucket, rules.delay, amount, &mut f);
                    add(buckets, bucket, amount);
                }
            }),
            None => {
                report.missing.push((row, p.entity));
                f.extend(std::iter::repeat_n(
                    0.0,
                    p.aggregates.len() * p.windows.len(),
                ));
            }
        }
    }
    if rules.time_flags {
        let (weekend, night) = time_flags(t.time());
        f.push(f32::from(u8::from(weekend)));
        f.push(f32::from(u8::from(night)));
    }
    f
}

impl EntityPlan {
    /// Append this entity's features at bucket `b` from its (ascending) buckets, for a
    /// transaction of `amount`.
    fn features(&self, buckets: &[Bucket], b: i64, delay: i64, amount: f64, out: &mut Vec<f32>) {
        for a in &self.aggregates {
            for &w in &self.windows {
                // Current windows: (b − w, b], events so far. Delayed windows: the w
                // whole buckets ending at b − delay, all of whose labels are due.
                // Saturating: a transaction refused for its time may sit at either end
                // of the bucket range.
                let (lo, hi) = if a.delayed() {
                    let end = b.saturating_sub(delay);
                    (end.saturating_sub(w), end.saturating_sub(1))
                } else {
                    (b.saturating_sub(w).saturating_add(1), b)
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
                    Aggregate::AmountRatio => amount_ratio(amount, count, sum),
                    Aggregate::Frauds => frauds as f64,
                    Aggregate::Risk => ratio(frauds as f64, count).min(1.0),
                };
                out.push(v as f32);
            }
        }
    }
}

/// `amount` over the window's mean amount (`sum / count`); 0 when the window holds no
/// positive amount, or when a huge amount made the sum infinite, so that one hostile
/// amount never makes an entity's later ratios NaN.
fn amount_ratio(amount: f64, count: u64, sum: f64) -> f64 {
    let r = amount * count as f64 / sum;
    if sum > 0.0 && r.is_finite() { r } else { 0.0 }
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

pub(super) fn entity_id(t: &Transaction, e: Entity) -> Option<&str> {
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
