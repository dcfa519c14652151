//! A bounded sample of a history of any length: every fraud up to `max_frauds` (half the
//! budget by default; a uniform sample of them above it), and a uniform sample of the
//! legitimate rows (reservoir sampling), read chunk by chunk; with the weights that say
//! how many history rows each kept row stands for (`TrainOptions::sampling`). `retrain`
//! and `train --max-rows` read their history through it, so memory depends on the
//! budget, not on the history.
//!
//! With `retrain.sample_bucket` (`train --sample-bucket`) each class is sampled per span
//! of `Time` of that length: a reservoir per span, the class's budget shared among them
//! max-min fairly (a span with fewer rows than its share keeps all of them, and the rest
//! is shared by the others). A thin recent span, whose labels are still coming in, or a
//! quiet week, is then not crowded out by the busy ones. Its rows are kept at a higher
//! rate than a busy span's, so each row then weighs what its own span's rows stand for
//! ([`Sample::row_weights`]), and the threshold and metrics are still the history's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::pipeline::remote::{CHUNK_ROWS, RemoteError, for_each_chunk};
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions, ReadReport, TIME, Transaction};
use crate::storage::S3Settings;
use crate::velocity::VelocitySpec;

/// A uniform sample of the rows of one class in one time bucket, and how many were
/// offered.
struct Bucket {
    rows: Dataset,
    seen: u64,
}

impl Bucket {
    /// Put `tx` in place of row `j`.
    fn replace(&mut self, j: usize, tx: Transaction) {
        let row = tx
            .values
            .iter()
            .copied()
            .chain(tx.derived.iter().map(|&v| f64::from(v)));
        for (c, v) in self.rows.columns.iter_mut().zip(row) {
            c[j] = v;
        }
        self.rows.ids[j] = tx.id;
        self.rows.labels[j] = tx.label;
    }

    /// How many offered rows each kept row stands for.
    fn weight(&self) -> f64 {
        if self.rows.is_empty() {
            1.0
        } else {
            self.seen as f64 / self.rows.len() as f64
        }
    }
}

/// The rows of one class: a uniform sample (reservoir sampling) per time bucket, at most
/// `cap` rows in all, shared among the buckets max-min fairly. A bucket that has kept
/// every row offered and holds fewer than the fullest takes the next row, and the fullest
/// gives up one at random; any other bucket replaces a row at random with the reservoir's
/// odds. Each bucket's rows so stay a uniform sample of its own, and the buckets' sizes
/// settle within one row of the fair share. With one bucket this is plain reservoir
/// sampling.
pub struct Strata {
    buckets: BTreeMap<i64, Bucket>,
    /// `(rows kept, bucket)` of every bucket: the fullest is the last.
    by_size: BTreeSet<(usize, i64)>,
    kept: usize,
    cap: usize,
    derived: Vec<String>,
}

impl Strata {
    /// No rows yet, at most `cap` of them, rows with the entity features `derived`.
    fn new(derived: Vec<String>, cap: usize) -> Self {
        Self {
            buckets: BTreeMap::new(),
            by_size: BTreeSet::new(),
            kept: 0,
            cap,
            derived,
        }
    }

    /// Rows kept.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// Rows offered.
    pub fn seen(&self) -> u64 {
        self.buckets.values().map(|b| b.seen).sum()
    }

    /// Rows kept and offered per bucket, in bucket order.
    pub fn sizes(&self) -> Vec<(i64, usize, u64)> {
        self.buckets
            .iter()
            .map(|(&k, b)| (k, b.rows.len(), b.seen))
            .collect()
    }

    fn offer(&mut self, key: i64, tx: Transaction, rng: &mut Rng) {
        let derived = &self.derived;
        let bucket = self.buckets.entry(key).or_insert_with(|| {
            self.by_size.insert((0, key));
            Bucket {
                rows: Dataset::with_derived(0, derived.clone()),
                seen: 0,
            }
        });
        bucket.seen += 1;
        let (len, seen) = (bucket.rows.len(), bucket.seen);
        if self.kept < self.cap {
            self.push(key, tx);
            return;
        }
        let fullest = self.by_size.last().copied();
        match fullest {
            // This bucket has kept every row and holds fewer than its share.
            Some((size, other)) if len as u64 + 1 == seen && size > len + 1 => {
                self.evict(other, rng);
                self.push(key, tx);
            }
            _ => {
                let j = (rng.unit() * seen as f64) as usize;
                if j < len
                    && let Some(b) = self.buckets.get_mut(&key)
                {
                    b.replace(j, tx);
                }
            }
        }
    }

    fn push(&mut self, key: i64, tx: Transaction) {
        let b = self.buckets.get_mut(&key).expect("the bucket exists");
        let len = b.rows.len();
        b.rows.push(tx);
        self.by_size.remove(&(len, key));
        self.by_size.insert((len + 1, key));
        self.kept += 1;
    }

    /// Drop a row of bucket `key`, picked uniformly at random: a uniform sample's uniform
    /// subsample is a uniform sample, and later offers keep it so.
    fn evict(&mut self, key: i64, rng: &mut Rng) {
        let b = self.buckets.get_mut(&key).expect("the bucket exists");
        let len = b.rows.len();
        if len == 0 {
            return;
        }
        b.rows.swap_remove_row(rng.below(len));
        self.by_size.remove(&(len, key));
        self.by_size.insert((len - 1, key));
        self.kept -= 1;
    }

    /// Lower the cap to `cap`, taking rows from the fullest buckets.
    fn shrink(&mut self, cap: usize, rng: &mut Rng) {
        self.cap = cap;
        while self.kept > cap {
            let Some(&(_, key)) = self.by_size.last() else {
                break;
            };
            self.evict(key, rng);
        }
    }

    /// Move the rows into `data`, bucket by bucket, and each row's weight (what its
    /// bucket's rows stand for) into `weights`.
    fn drain_into(self, data: &mut Dataset, weights: &mut Vec<f64>) {
        for b in self.buckets.into_values() {
            weights.extend(std::iter::repeat_n(b.weight(), b.rows.len()));
            data.append(b.rows);
        }
    }
}

/// Every fraud (or a uniform sample of `retrain.max_frauds` of them), plus a uniform
/// sample of the legitimate rows, fed one file at a time.
pub struct Sampler {
    /// The frauds.
    pub frauds: Strata,
    /// The legitimate rows.
    pub legit: Strata,
    /// Draws the replacements.
    pub rng: Rng,
    /// Rows read, kept or not (unlabelled and warm-up rows included).
    pub read: usize,
    /// Most rows kept, both classes together.
    pub max_rows: usize,
    /// Length of a time bucket, in units of `Time` (seconds); `None`: one bucket.
    bucket: Option<f64>,
}

/// What a sample stratified by time kept of one span of the history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Span {
    /// `Time` at the span's start.
    pub start: f64,
    /// Legitimate rows read.
    pub legit_seen: u64,
    /// Legitimate rows kept.
    pub legit_kept: usize,
    /// Frauds read.
    pub frauds_seen: u64,
    /// Frauds kept.
    pub frauds_kept: usize,
}

/// The rows kept from the history, and what they stand for.
pub struct Sample {
    /// Frauds, then legitimate rows.
    pub data: Dataset,
    /// How many history rows each kept row of a class stands for, `[legitimate, fraud]`,
    /// over the whole history; `None` when every labelled row was kept.
    pub weights: Option<crate::eval::ClassWeights>,
    /// How many history rows each row of `data` stands for, when that differs within a
    /// class (a sample stratified by time); `None` when `weights` says it all.
    pub row_weights: Option<Vec<f64>>,
    /// What each span kept, oldest first, when the sample is stratified by time (empty
    /// otherwise).
    pub spans: Vec<Span>,
}

impl Sample {
    /// The sample `data` whose row `i` stands for `rows[i]` history rows: class weights
    /// when each class's rows weigh the same, per-row weights besides them otherwise (the
    /// class's weight is then the mean of its rows').
    fn weighed(data: Dataset, rows: Vec<f64>, spans: Vec<Span>) -> Self {
        let mut first: [Option<f64>; 2] = [None, None];
        let mut sums = [(0.0, 0usize); 2];
        let mut uniform = true;
        for (&w, l) in rows.iter().zip(&data.labels) {
            let c = usize::from(*l == Some(1));
            uniform &= *first[c].get_or_insert(w) == w;
            sums[c] = (sums[c].0 + w, sums[c].1 + 1);
        }
        let class = |c: usize| match (uniform, first[c]) {
            (true, Some(w)) => w,
            (false, Some(_)) => sums[c].0 / sums[c].1 as f64,
            (_, None) => 1.0,
        };
        let weights = [class(0), class(1)];
        Self {
            data,
            weights: (weights != crate::eval::UNWEIGHTED).then_some(weights),
            row_weights: (!uniform).then_some(rows),
            spans,
        }
    }

    /// The rows `keep` (ascending) of the sample, with their weights. A class sampled at
    /// one rate keeps that rate in any subset; with per-row weights, each class's weight
    /// becomes the mean of its kept rows'.
    #[must_use]
    pub fn select(self, keep: &[usize]) -> Self {
        let data = self.data.select(keep);
        match self.row_weights {
            Some(rows) => Self::weighed(data, keep.iter().map(|&i| rows[i]).collect(), self.spans),
            None => Self {
                data,
                weights: self.weights,
                row_weights: None,
                spans: self.spans,
            },
        }
    }
}

impl Sampler {
    /// A sampler keeping at most `max_rows` rows, of which at most `max_frauds` frauds
    /// (unset: half of `max_rows`), rows with the entity features `derived`.
    pub fn new(
        derived: Vec<String>,
        max_rows: usize,
        max_frauds: Option<usize>,
        seed: u64,
    ) -> Self {
        Self {
            // Unset, frauds may fill half the budget: a sample is never of one class.
            frauds: Strata::new(derived.clone(), max_frauds.unwrap_or(max_rows / 2)),
            legit: Strata::new(derived, max_rows),
            rng: Rng::new(seed),
            read: 0,
            max_rows,
            bucket: None,
        }
    }

    /// Sample each class per span of `Time` of length `bucket` (seconds), the budget
    /// shared fairly among the spans. `None`: the whole history at once.
    #[must_use]
    pub fn stratified(mut self, bucket: Option<f64>) -> Self {
        self.bucket = bucket.filter(|b| b.is_finite() && *b > 0.0);
        self
    }

    /// Offer every labelled row of `d`.
    pub fn add(&mut self, d: &Dataset) {
        self.read += d.len();
        for i in 0..d.len() {
            let tx = d.row(i);
            // `as` saturates: a huge or odd time lands in the first or last bucket.
            let key = self
                .bucket
                .map_or(0, |b| (tx.values[TIME] / b).floor() as i64);
            match tx.label {
                Some(1) => {
                    self.frauds.offer(key, tx, &mut self.rng);
                    // Every fraud kept takes a legitimate row's place: the two together
                    // never hold more than the budget, so memory follows it.
                    let room = self.max_rows.saturating_sub(self.frauds.kept).max(1);
                    if room < self.legit.cap {
                        self.legit.shrink(room, &mut self.rng);
                    }
                }
                Some(_) => self.legit.offer(key, tx, &mut self.rng),
                None => {}
            }
        }
    }

    /// What each span has kept so far, oldest first (empty unless stratified).
    fn spans(&self) -> Vec<Span> {
        let Some(secs) = self.bucket else {
            return Vec::new();
        };
        let mut spans: BTreeMap<i64, Span> = BTreeMap::new();
        let empty = |key: i64| Span {
            start: key as f64 * secs,
            legit_seen: 0,
            legit_kept: 0,
            frauds_seen: 0,
            frauds_kept: 0,
        };
        for (key, kept, seen) in self.legit.sizes() {
            let s = spans.entry(key).or_insert_with(|| empty(key));
            (s.legit_kept, s.legit_seen) = (kept, seen);
        }
        for (key, kept, seen) in self.frauds.sizes() {
            let s = spans.entry(key).or_insert_with(|| empty(key));
            (s.frauds_kept, s.frauds_seen) = (kept, seen);
        }
        spans.into_values().collect()
    }

    /// Frauds then legitimate rows, with the weights of the sampling. Done in place: the
    /// sample is never copied. [`Sampler::add`] keeps the two within the sampler's
    /// budget; a smaller `max_rows` trims the legitimate rows to fit.
    pub fn finish(mut self, max_rows: usize) -> Sample {
        let room = max_rows.saturating_sub(self.frauds.kept);
        if self.legit.kept > room {
            self.legit.shrink(room, &mut self.rng);
        }
        let spans = self.spans();
        let total = self.frauds.kept + self.legit.kept;
        let mut data = Dataset::with_derived(total, self.legit.derived.clone());
        let mut rows = Vec::with_capacity(total);
        self.frauds.drain_into(&mut data, &mut rows);
        self.legit.drain_into(&mut data, &mut rows);
        Sample::weighed(data, rows, spans)
    }
}

/// How to sample a history.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// Most rows kept.
    pub max_rows: usize,
    /// Most frauds kept (`None`: half of `max_rows`).
    pub max_frauds: Option<usize>,
    /// Seeds the reservoirs.
    pub seed: u64,
    /// Rows of the history's first span (from its first row's `Time`) dropped, after
    /// they built up the entity state.
    pub warm_up_secs: Option<f64>,
    /// Skip invalid rows (counted in the report) instead of failing.
    pub skip_invalid: bool,
    /// Sample per span of `Time` of this many seconds ([`Sampler::stratified`]).
    pub bucket_secs: Option<f64>,
}

/// Sample the history `entries` (each a file, an object, or a prefix ending in `/`), in
/// order: each row's label is its own or, if it has none, the one in `labels`; rows with
/// no label are read and counted, not kept. Returns the sample, the rows read and the
/// readers' combined report. `on_file` is told each entry as its reading starts.
pub async fn read_sample(
    entries: &[String],
    s3: &S3Settings,
    velocity: Option<&VelocitySpec>,
    labels: &HashMap<String, u8>,
    spec: &SampleSpec,
    on_file: &(dyn Fn(&str) + Sync),
) -> Result<(Sample, usize, ReadReport), RemoteError> {
    let names = velocity.map(VelocitySpec::names).unwrap_or_default();
    let mut sampler =
        Sampler::new(names, spec.max_rows, spec.max_frauds, spec.seed).stratified(spec.bucket_secs);
    let mut warm_up_ends: Option<f64> = None;
    let mut total = ReadReport::default();
    for entry in entries {
        on_file(entry);
        for_each_chunk(
            entry,
            s3,
            ReadOptions {
                skip_invalid: spec.skip_invalid,
            },
            velocity,
            CHUNK_ROWS,
            &mut |name, mut d, report| {
                if report.skipped > 0 {
                    tracing::warn!(file = %name, skipped = report.skipped, "invalid history rows skipped");
                }
                total.merge(report);
                if !labels.is_empty() {
                    for (id, label) in d.ids.iter().zip(d.labels.iter_mut()) {
                        if label.is_none() {
                            *label = labels.get(id).copied();
                        }
                    }
                }
                match spec.warm_up_secs {
                    Some(w) if !d.is_empty() => {
                        let first = d.columns[TIME].iter().copied().fold(f64::INFINITY, f64::min);
                        let ends = *warm_up_ends.get_or_insert(first + w);
                        let keep: Vec<usize> =
                            (0..d.len()).filter(|&i| d.columns[TIME][i] >= ends).collect();
                        sampler.read += d.len() - keep.len();
                        sampler.add(&d.select(&keep));
                    }
                    _ => sampler.add(&d),
                }
            },
        )
        .await?;
    }
    let read = sampler.read;
    Ok((sampler.finish(spec.max_rows), read, total))
}

#[cfg(test)]
mod tests;
