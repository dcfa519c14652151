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

/// One time bucket of one class: the rows offered, and which of the class's kept rows
/// are its own.
struct Bucket {
    seen: u64,
    /// Positions in [`Strata::rows`].
    members: Vec<u32>,
}

impl Bucket {
    /// How many offered rows each kept row stands for.
    fn weight(&self) -> f64 {
        if self.members.is_empty() {
            1.0
        } else {
            self.seen as f64 / self.members.len() as f64
        }
    }
}

/// The rows of one class: a uniform sample (reservoir sampling) per time bucket, at most
/// `cap` rows in all, shared among the buckets max-min fairly. A bucket that has kept
/// every row offered and holds at least two fewer than the fullest takes the next row,
/// and the fullest gives up one at random; any other bucket replaces one of its rows at random with the
/// reservoir's odds. Each bucket's rows so stay a uniform sample of its own, and the
/// buckets' sizes settle within one row of the fair share. With one bucket this is plain
/// reservoir sampling. The rows of every bucket share one dataset (a bucket only lists
/// its rows), so memory is that of one reservoir of `cap` rows.
pub struct Strata {
    rows: Dataset,
    /// Per row of `rows`: its bucket (in `buckets`) and its place in that bucket's list.
    slot: Vec<(u32, u32)>,
    buckets: Vec<Bucket>,
    /// Bucket key to its place in `buckets`.
    index: BTreeMap<i64, u32>,
    /// `(rows kept, bucket)` of every bucket: the fullest is the last.
    by_size: BTreeSet<(usize, u32)>,
    cap: usize,
    /// Most buckets: rows of any further one go to the [`OVERFLOW`] bucket, so that
    /// rows with scattered times (hostile or broken) cannot grow the bookkeeping with
    /// the history.
    max_buckets: usize,
}

/// Most spans a class is sampled by (11 years of 1-hour spans); rows of later spans are
/// sampled together, in the span whose key is [`OVERFLOW`].
pub const MAX_SPANS: usize = 100_000;

/// The key of the span that takes the rows past [`MAX_SPANS`].
pub const OVERFLOW: i64 = i64::MAX;

impl Strata {
    /// No rows yet, at most `cap` of them, rows with the entity features `derived`.
    fn new(derived: Vec<String>, cap: usize) -> Self {
        Self {
            rows: Dataset::with_derived(0, derived),
            slot: Vec::new(),
            buckets: Vec::new(),
            index: BTreeMap::new(),
            by_size: BTreeSet::new(),
            cap,
            max_buckets: MAX_SPANS,
        }
    }

    /// Rows kept.
    pub fn kept(&self) -> usize {
        self.rows.len()
    }

    /// Rows kept and offered per bucket key, in key order.
    pub fn sizes(&self) -> Vec<(i64, usize, u64)> {
        self.index
            .iter()
            .map(|(&k, &b)| {
                let b = &self.buckets[b as usize];
                (k, b.members.len(), b.seen)
            })
            .collect()
    }

    fn offer(&mut self, key: i64, tx: Transaction, rng: &mut Rng) {
        let key = if self.index.len() >= self.max_buckets && !self.index.contains_key(&key) {
            OVERFLOW
        } else {
            key
        };
        let b = *self.index.entry(key).or_insert_with(|| {
            let b = self.buckets.len() as u32;
            self.buckets.push(Bucket {
                seen: 0,
                members: Vec::new(),
            });
            self.by_size.insert((0, b));
            b
        });
        let bucket = &mut self.buckets[b as usize];
        bucket.seen += 1;
        let (len, seen) = (bucket.members.len(), bucket.seen);
        if self.rows.len() < self.cap {
            self.push(b, tx);
            return;
        }
        match self.by_size.last().copied() {
            // This bucket has kept every row and holds fewer than its share.
            Some((size, fullest)) if len as u64 + 1 == seen && size > len + 1 => {
                self.evict(fullest, rng);
                self.push(b, tx);
            }
            _ => {
                let j = (rng.unit() * seen as f64) as usize;
                if j < len {
                    let row = self.buckets[b as usize].members[j] as usize;
                    replace_row(&mut self.rows, row, tx);
                }
            }
        }
    }

    fn push(&mut self, b: u32, tx: Transaction) {
        let row = self.rows.len() as u32;
        self.rows.push(tx);
        let members = &mut self.buckets[b as usize].members;
        let len = members.len();
        self.slot.push((b, len as u32));
        members.push(row);
        self.by_size.remove(&(len, b));
        self.by_size.insert((len + 1, b));
    }

    /// Drop a row of bucket `b`, picked uniformly at random: a uniform sample's uniform
    /// subsample is a uniform sample, and later offers keep it so.
    fn evict(&mut self, b: u32, rng: &mut Rng) {
        let members = &mut self.buckets[b as usize].members;
        let len = members.len();
        if len == 0 {
            return;
        }
        let at = rng.below(len);
        let row = members.swap_remove(at) as usize;
        if let Some(&moved) = members.get(at) {
            self.slot[moved as usize].1 = at as u32;
        }
        self.by_size.remove(&(len, b));
        self.by_size.insert((len - 1, b));
        // The dataset's last row takes the dropped row's place.
        self.rows.swap_remove_row(row);
        self.slot.swap_remove(row);
        if let Some(&(mb, mi)) = self.slot.get(row) {
            self.buckets[mb as usize].members[mi as usize] = row as u32;
        }
    }

    /// Lower the cap to `cap`, taking rows from the fullest buckets.
    fn shrink(&mut self, cap: usize, rng: &mut Rng) {
        self.cap = cap;
        while self.rows.len() > cap {
            let Some(&(_, b)) = self.by_size.last() else {
                break;
            };
            self.evict(b, rng);
        }
    }

    /// The rows, and each row's weight (what its bucket's rows stand for). Buckets that
    /// kept no row (more buckets than the cap) are not lost from the weights: every row
    /// then also stands for its share of their rows, so the class still adds up to every
    /// row offered.
    fn into_rows(self) -> (Dataset, Vec<f64>) {
        let unkept: u64 = self
            .buckets
            .iter()
            .filter(|b| b.members.is_empty())
            .map(|b| b.seen)
            .sum();
        let kept: u64 = self.buckets.iter().map(|b| b.seen).sum::<u64>() - unkept;
        let spread = if unkept > 0 && kept > 0 {
            1.0 + unkept as f64 / kept as f64
        } else {
            1.0
        };
        let weights: Vec<f64> = self.buckets.iter().map(|b| b.weight() * spread).collect();
        let rows = self
            .slot
            .iter()
            .map(|&(b, _)| weights[b as usize])
            .collect();
        (self.rows, rows)
    }

    /// Buckets that were offered rows and kept none.
    fn unkept(&self) -> usize {
        self.buckets
            .iter()
            .filter(|b| b.members.is_empty() && b.seen > 0)
            .count()
    }

    /// Check the bookkeeping: every row listed by exactly its own bucket, at its place,
    /// and `by_size` true to the lists.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.slot.len(), self.rows.len());
        assert!(self.rows.len() <= self.cap.max(1));
        for (row, &(b, at)) in self.slot.iter().enumerate() {
            assert_eq!(self.buckets[b as usize].members[at as usize] as usize, row);
        }
        let listed: usize = self.buckets.iter().map(|b| b.members.len()).sum();
        assert_eq!(listed, self.rows.len());
        let sizes: BTreeSet<(usize, u32)> = (0..self.buckets.len() as u32)
            .map(|b| (self.buckets[b as usize].members.len(), b))
            .collect();
        assert_eq!(sizes, self.by_size);
    }
}

/// Put `tx` in place of row `j` of `rows`.
fn replace_row(rows: &mut Dataset, j: usize, tx: Transaction) {
    let values = tx
        .values
        .iter()
        .copied()
        .chain(tx.derived.iter().map(|&v| f64::from(v)));
    for (c, v) in rows.columns.iter_mut().zip(values) {
        c[j] = v;
    }
    rows.ids[j] = tx.id;
    rows.labels[j] = tx.label;
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

/// The shortest span a sample is stratified by: each span costs a little memory, so a
/// history of years holds tens of thousands of them at most.
pub const MIN_SPAN: std::time::Duration = std::time::Duration::from_secs(3600);

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
                    let room = self.max_rows.saturating_sub(self.frauds.kept()).max(1);
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
        let room = max_rows.saturating_sub(self.frauds.kept());
        if self.legit.kept() > room {
            self.legit.shrink(room, &mut self.rng);
        }
        let spans = self.spans();
        for (class, strata) in [("legitimate", &self.legit), ("fraud", &self.frauds)] {
            if strata.index.contains_key(&OVERFLOW) {
                tracing::warn!(
                    class,
                    max = strata.max_buckets,
                    "rows fell in more spans than the most sampled apart: the rows of the later spans were sampled together (the span reported with the largest start); check the history's Time values or use a longer sample_bucket"
                );
            }
            let unkept = strata.unkept();
            if unkept > 0 {
                tracing::warn!(
                    class,
                    spans = unkept,
                    "more spans than the budget holds rows: spans kept none of their rows (their rows are spread over the others' weights); use a longer sample_bucket or a larger budget"
                );
            }
        }
        let (mut data, mut rows) = self.frauds.into_rows();
        let (legit, legit_rows) = self.legit.into_rows();
        data.append(legit);
        rows.extend(legit_rows);
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
