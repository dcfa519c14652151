//! A bounded sample of a history of any length: every fraud up to `max_frauds` (half the
//! budget by default; a uniform sample of them above it), and a uniform sample of the legitimate rows (reservoir sampling),
//! read chunk by chunk; with the weights that say how many history rows each kept row
//! of a class stands for (`TrainOptions::sampling`). `retrain` and `train --max-rows`
//! read their history through it, so memory depends on the budget, not on the history.

use std::collections::HashMap;

use crate::pipeline::remote::{CHUNK_ROWS, RemoteError, for_each_chunk};
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions, ReadReport, TIME};
use crate::storage::S3Settings;
use crate::velocity::VelocitySpec;

/// A uniform sample of at most `cap` rows of one class (reservoir sampling), and how
/// many rows of the class were offered.
pub struct Reservoir {
    /// The rows kept.
    pub rows: Dataset,
    /// Rows offered.
    pub seen: u64,
    /// Most rows kept.
    pub cap: usize,
}

impl Reservoir {
    /// An empty reservoir of rows with the entity features `derived`.
    pub fn new(derived: Vec<String>, cap: usize) -> Self {
        Self {
            rows: Dataset::with_derived(0, derived),
            seen: 0,
            cap,
        }
    }

    fn offer(&mut self, tx: crate::schema::Transaction, rng: &mut Rng) {
        self.seen += 1;
        if self.rows.len() < self.cap {
            self.rows.push(tx);
            return;
        }
        let j = (rng.unit() * self.seen as f64) as usize;
        if j < self.cap {
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
    }

    /// Lower the cap to `cap`, dropping rows picked uniformly at random: a uniform
    /// sample's uniform subsample is a uniform sample, and later offers keep it so.
    fn shrink(&mut self, cap: usize, rng: &mut Rng) {
        self.cap = cap;
        while self.rows.len() > cap {
            let j = ((rng.unit() * self.rows.len() as f64) as usize).min(self.rows.len() - 1);
            self.rows.swap_remove_row(j);
        }
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

/// Every fraud (or a uniform sample of `retrain.max_frauds` of them), plus a uniform
/// sample of the legitimate rows, fed one file at a time.
pub struct Sampler {
    /// The frauds.
    pub frauds: Reservoir,
    /// The legitimate rows.
    pub legit: Reservoir,
    /// Draws the replacements.
    pub rng: Rng,
    /// Rows read, kept or not (unlabelled and warm-up rows included).
    pub read: usize,
    /// Most rows kept, both classes together.
    pub max_rows: usize,
}

/// The rows kept from the history, and what they stand for.
pub struct Sample {
    /// Frauds, then legitimate rows.
    pub data: Dataset,
    /// How many history rows each kept row of a class stands for, `[legitimate, fraud]`;
    /// `None` when every labelled row was kept.
    pub weights: Option<crate::eval::ClassWeights>,
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
            frauds: Reservoir::new(derived.clone(), max_frauds.unwrap_or(max_rows / 2)),
            legit: Reservoir::new(derived, max_rows),
            rng: Rng::new(seed),
            read: 0,
            max_rows,
        }
    }

    /// Offer every labelled row of `d`.
    pub fn add(&mut self, d: &Dataset) {
        self.read += d.len();
        for i in 0..d.len() {
            let tx = d.row(i);
            match tx.label {
                Some(1) => {
                    self.frauds.offer(tx, &mut self.rng);
                    // Every fraud kept takes a legitimate row's place: the two together
                    // never hold more than the budget, so memory follows it.
                    let room = self.max_rows.saturating_sub(self.frauds.rows.len()).max(1);
                    if room < self.legit.cap {
                        self.legit.shrink(room, &mut self.rng);
                    }
                }
                Some(_) => self.legit.offer(tx, &mut self.rng),
                None => {}
            }
        }
    }

    /// Frauds then legitimate rows, with the weights of the sampling. Done in place: the
    /// sample is never copied. [`Sampler::add`] keeps the two within the sampler's
    /// budget; a smaller `max_rows` trims the legitimate rows to fit.
    pub fn finish(mut self, max_rows: usize) -> Sample {
        let room = max_rows.saturating_sub(self.frauds.rows.len());
        if self.legit.rows.len() > room {
            let mut idx: Vec<usize> = (0..self.legit.rows.len()).collect();
            self.rng.shuffle(&mut idx);
            idx.truncate(room);
            idx.sort_unstable();
            self.legit.rows.retain_rows(&idx);
        }
        let weights = [self.legit.weight(), self.frauds.weight()];
        let mut data = self.frauds.rows;
        data.append(self.legit.rows);
        Sample {
            data,
            weights: (weights != crate::eval::UNWEIGHTED).then_some(weights),
        }
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
    let mut sampler = Sampler::new(names, spec.max_rows, spec.max_frauds, spec.seed);
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
