//! Live values counted in the reference's bins: over a sliding window (of transactions,
//! or of time) and since the model went live.
//!
//! The window is kept as [`CHUNKS`] chunks of counts: a new chunk starts when the
//! current one holds a tenth of the window (in rows, or in time), and the oldest falls
//! out. Counting a row costs one binary search over at most nine edges and one increment
//! per feature; the PSI is computed only when a snapshot is asked for.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::{Bands, DriftState, Reference, js_distance, psi};

/// Chunks a window is kept in.
pub const CHUNKS: usize = 10;

/// The sliding window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N transactions.
    Rows(u64),
    /// The transactions of the last span of milliseconds.
    Span(u64),
}

/// Counts for one chunk: per variable its bins, then missing, then out of range.
#[derive(Debug, Clone)]
struct Chunk {
    counts: Vec<u64>,
    rows: u64,
    started_ms: u64,
}

/// Live drift of one model version against its reference.
#[derive(Debug)]
pub struct LiveDrift {
    reference: Arc<Reference>,
    version: Arc<str>,
    window: Window,
    /// Where each variable's slots start (features in order, then the score), and the
    /// total after the last.
    offsets: Vec<usize>,
    /// Features not counted (configured to skip).
    skip: Vec<bool>,
    current: Chunk,
    closed: VecDeque<Chunk>,
    /// Every chunk that left `current`, summed (the cumulative count is this plus it).
    since_live: Vec<u64>,
    since_live_rows: u64,
}

/// One variable's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableDrift {
    /// Feature name, or `score`.
    pub name: String,
    /// PSI over the window.
    pub psi: f64,
    /// Jensen-Shannon distance over the window.
    pub js: f64,
    /// PSI since the model went live.
    pub psi_since_live: f64,
    /// Share of the window's values that were missing (NaN).
    pub missing: f64,
    /// Share of the window's values outside the reference's range.
    pub out_of_range: f64,
    /// The band the window's PSI is in; `None` while the window holds too few rows.
    pub state: Option<DriftState>,
    /// The live share of each reference bin over the window.
    pub shares: Vec<f64>,
    /// The reference's shares.
    pub reference: Vec<f64>,
}

/// The drift of every variable at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftSnapshot {
    /// The model version.
    pub version: String,
    /// Rows in the window.
    pub window_rows: u64,
    /// Rows since the model went live.
    pub rows_since_live: u64,
    /// Per counted feature, in the model's order.
    pub features: Vec<VariableDrift>,
    /// The score, when the reference has it.
    pub score: Option<VariableDrift>,
}

impl DriftSnapshot {
    /// Every variable whose state is known, with the worst first.
    #[must_use]
    pub fn ranked(&self) -> Vec<&VariableDrift> {
        let mut all: Vec<&VariableDrift> = self.features.iter().chain(&self.score).collect();
        all.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        all
    }
}

impl LiveDrift {
    /// Counts for model `version` against `reference`, over `window`, not counting the
    /// features named in `skip`, nor the calendar flags
    /// ([`crate::velocity::CALENDAR_FEATURES`]): a window shorter than a week holds the
    /// share of weekend and night hours it spans, not the data's.
    #[must_use]
    pub fn new(
        version: Arc<str>,
        reference: Arc<Reference>,
        window: Window,
        skip: &[String],
        now_ms: u64,
    ) -> Self {
        let mut offsets = Vec::with_capacity(reference.features.len() + 2);
        let mut at = 0;
        for d in reference.features.iter().chain(&reference.score) {
            offsets.push(at);
            at += d.shares.len() + 2;
        }
        offsets.push(at);
        let skip = reference
            .features
            .iter()
            .map(|d| {
                skip.contains(&d.name)
                    || crate::velocity::CALENDAR_FEATURES.contains(&d.name.as_str())
            })
            .collect();
        Self {
            reference,
            version,
            window,
            offsets,
            skip,
            current: Chunk {
                counts: vec![0; at],
                rows: 0,
                started_ms: now_ms,
            },
            closed: VecDeque::with_capacity(CHUNKS),
            since_live: vec![0; at],
            since_live_rows: 0,
        }
    }

    /// The model version counted.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The reference counted against.
    #[must_use]
    pub fn reference(&self) -> &Arc<Reference> {
        &self.reference
    }

    /// Count a batch: `x` row-major with one column per reference feature, and one score
    /// per row.
    pub fn observe(&mut self, x: &[f32], scores: &[f32], now_ms: u64) {
        let k = self.reference.features.len();
        if k == 0 {
            return;
        }
        let rows = x.len() / k;
        let mut start = 0;
        while start < rows {
            self.rotate(now_ms);
            let room = match self.window {
                Window::Rows(_) => {
                    (self.chunk_rows() - self.current.rows.min(self.chunk_rows())).max(1) as usize
                }
                Window::Span(_) => rows,
            };
            let end = rows.min(start + room);
            self.count_rows(
                &x[start * k..end * k],
                scores.get(start..end).unwrap_or(&[]),
            );
            start = end;
        }
    }

    /// Rows per chunk of a window of rows.
    fn chunk_rows(&self) -> u64 {
        match self.window {
            Window::Rows(n) => (n / CHUNKS as u64).max(1),
            Window::Span(_) => u64::MAX,
        }
    }

    /// Count rows into the current chunk.
    fn count_rows(&mut self, x: &[f32], scores: &[f32]) {
        let k = self.reference.features.len();
        let counts = &mut self.current.counts;
        for row in x.chunks_exact(k) {
            for (j, (&v, d)) in row.iter().zip(&self.reference.features).enumerate() {
                if self.skip[j] {
                    continue;
                }
                count(counts, self.offsets[j], d, v);
            }
        }
        if let Some(d) = &self.reference.score {
            for &s in scores {
                count(counts, self.offsets[k], d, s);
            }
        }
        self.current.rows += (x.len() / k) as u64;
    }

    /// Start a new chunk if the current one is full, and let the oldest go.
    fn rotate(&mut self, now_ms: u64) {
        let full = match self.window {
            Window::Rows(_) => self.current.rows >= self.chunk_rows(),
            Window::Span(ms) => {
                now_ms.saturating_sub(self.current.started_ms) >= (ms / CHUNKS as u64).max(1)
            }
        };
        if full {
            let fresh = Chunk {
                counts: vec![0; self.current.counts.len()],
                rows: 0,
                started_ms: now_ms,
            };
            let done = std::mem::replace(&mut self.current, fresh);
            for (t, c) in self.since_live.iter_mut().zip(&done.counts) {
                *t += c;
            }
            self.since_live_rows += done.rows;
            self.closed.push_back(done);
        }
        match self.window {
            Window::Rows(_) => {
                while self.closed.len() >= CHUNKS {
                    self.closed.pop_front();
                }
            }
            Window::Span(ms) => {
                while self
                    .closed
                    .front()
                    .is_some_and(|c| c.started_ms + ms <= now_ms)
                {
                    self.closed.pop_front();
                }
            }
        }
    }

    /// The drift now. `min_rows`: fewer rows in the window leave every state unknown.
    #[must_use]
    pub fn snapshot(&mut self, bands: &Bands, min_rows: u64, now_ms: u64) -> DriftSnapshot {
        // Time moves a window of time on; a window of rows moves with rows only.
        if matches!(self.window, Window::Span(_)) {
            self.rotate(now_ms);
        }
        let mut window = self.current.counts.clone();
        let mut window_rows = self.current.rows;
        for c in &self.closed {
            for (w, x) in window.iter_mut().zip(&c.counts) {
                *w += x;
            }
            window_rows += c.rows;
        }
        let since: Vec<u64> = self
            .since_live
            .iter()
            .zip(&self.current.counts)
            .map(|(a, b)| a + b)
            .collect();
        let known = window_rows >= min_rows.max(1);
        let k = self.reference.features.len();
        let variable = |i: usize, d: &super::Distribution| {
            let at = self.offsets[i];
            let bins = d.shares.len();
            let w = &window[at..at + bins];
            let present: u64 = w.iter().sum();
            let all = present + window[at + bins];
            let p = psi(&d.shares, w);
            let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
            VariableDrift {
                name: d.name.clone(),
                psi: p,
                js: js_distance(&d.shares, w),
                psi_since_live: psi(&d.shares, &since[at..at + bins]),
                missing: share(window[at + bins], all),
                out_of_range: share(window[at + bins + 1], present),
                state: known.then(|| bands.state(p)),
                shares: w.iter().map(|&c| share(c, present)).collect(),
                reference: d.shares.clone(),
            }
        };
        let features = self
            .reference
            .features
            .iter()
            .enumerate()
            .filter(|(j, _)| !self.skip[*j])
            .map(|(j, d)| variable(j, d))
            .collect();
        let score = self.reference.score.as_ref().map(|d| variable(k, d));
        DriftSnapshot {
            version: self.version.to_string(),
            window_rows,
            rows_since_live: self.since_live_rows + self.current.rows,
            features,
            score,
        }
    }
}

/// Count one value in a variable's slots (bins from `at`, then missing, then out of
/// range).
#[inline]
fn count(counts: &mut [u64], at: usize, d: &super::Distribution, v: f32) {
    let bins = d.shares.len();
    if v.is_nan() {
        counts[at + bins] += 1;
        return;
    }
    let v = f64::from(v);
    counts[at + d.bin(v)] += 1;
    if d.out_of_range(v) {
        counts[at + bins + 1] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Arc<Reference> {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let x: Vec<f32> = (0..10_000)
            .flat_map(|i| [(i % 100) as f32, (i % 7) as f32])
            .collect();
        let scores: Vec<f32> = (0..1000).map(|i| (i % 100) as f32 / 100.0).collect();
        Arc::new(Reference::fit(&names, &x, &scores, "holdout"))
    }

    fn rows(n: usize, shift: f32) -> (Vec<f32>, Vec<f32>) {
        let x = (0..n)
            .flat_map(|i| [(i % 100) as f32 + shift, (i % 7) as f32])
            .collect();
        let s = (0..n).map(|i| (i % 100) as f32 / 100.0).collect();
        (x, s)
    }

    #[test]
    fn the_same_data_is_stable_and_a_shift_is_significant() {
        let bands = Bands::default();
        let mut live = LiveDrift::new("v1".into(), reference(), Window::Rows(5_000), &[], 0);
        let (x, s) = rows(5_000, 0.0);
        live.observe(&x, &s, 0);
        let snap = live.snapshot(&bands, 1_000, 0);
        assert_eq!(snap.window_rows, 5_000);
        for v in snap.features.iter().chain(&snap.score) {
            assert!(v.psi < 0.01, "{}: {}", v.name, v.psi);
            assert_eq!(v.state, Some(DriftState::Stable));
        }
        // Feature a moves up by 50: half its values leave the reference's range.
        for _ in 0..20 {
            let (x, s) = rows(500, 50.0);
            live.observe(&x, &s, 0);
        }
        let snap = live.snapshot(&bands, 1_000, 0);
        let a = &snap.features[0];
        assert_eq!(a.state, Some(DriftState::Significant), "{a:?}");
        assert!(a.out_of_range > 0.4, "{}", a.out_of_range);
        assert!(
            snap.window_rows <= 5_000,
            "the window slid: {}",
            snap.window_rows
        );
        assert!(
            a.psi > a.psi_since_live,
            "the window forgets the stable start"
        );
        assert_eq!(snap.features[1].state, Some(DriftState::Stable));
        assert_eq!(snap.rows_since_live, 15_000);
        assert_eq!(snap.ranked()[0].name, "a");
    }

    #[test]
    fn a_time_window_forgets_old_chunks_and_skipped_features_are_not_counted() {
        let mut live = LiveDrift::new(
            "v1".into(),
            reference(),
            Window::Span(10_000),
            &["b".to_owned()],
            0,
        );
        let (x, s) = rows(100, 0.0);
        for t in 0..30u64 {
            live.observe(&x, &s, t * 1_000);
        }
        let snap = live.snapshot(&Bands::default(), 10_000, 30_000);
        assert!(snap.window_rows <= 1_100, "{}", snap.window_rows);
        assert_eq!(snap.features.len(), 1);
        assert_eq!(snap.features[0].state, None, "too few rows to judge");
        assert!(snap.features[0].missing == 0.0);
        let nan = vec![f32::NAN, 1.0];
        live.observe(&nan, &[0.5], 30_000);
        let snap = live.snapshot(&Bands::default(), 1, 30_000);
        assert!(snap.features[0].missing > 0.0);
    }
}
