//! Model monitoring: does the data the model scores still look like the data it learned
//! from, and is its quality holding up?
//!
//! - [`reference`]: the distributions recorded at training time (each feature's deciles
//!   on the training rows, the score's on rows it did not train on), stored in the
//!   model's manifest.
//! - [`live`]: counts of live values in the reference's bins, over a sliding window and
//!   since the model went live, and the drift they show.
//! - [`page_hinkley`]: the Page-Hinkley test, for a rise in the error rate as labels
//!   arrive.
//!
//! Drift is measured by the population stability index (PSI) and the Jensen-Shannon
//! distance between the live and the reference shares of each bin. The bands in common
//! use for PSI: under 0.1 stable, 0.1 to 0.25 moderate, above 0.25 significant.

pub mod live;
pub mod page_hinkley;
pub mod reference;

pub use live::{DriftSnapshot, LiveDrift, VariableDrift, Window};
pub use page_hinkley::PageHinkley;
pub use reference::{Distribution, Reference};

use serde::{Deserialize, Serialize};

/// A share below this counts as this, so that an empty bin does not make PSI infinite
/// (Evidently's choice).
pub const EPSILON: f64 = 1e-4;

/// The population stability index of live `counts` (one per bin) against the
/// reference's `expected` shares: `Σ (a − e) · ln(a / e)`, each share at least
/// [`EPSILON`]. 0 when there are no live values.
#[must_use]
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let a = (c as f64 / total as f64).max(EPSILON);
            let e = e.max(EPSILON);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The Jensen-Shannon distance (base 2, so in [0, 1]) between live `counts` and the
/// reference's `expected` shares. 0 when there are no live values.
#[must_use]
pub fn js_distance(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let mut divergence = 0.0;
    for (&e, &c) in expected.iter().zip(counts) {
        let a = c as f64 / total as f64;
        let m = (a + e) / 2.0;
        if a > 0.0 {
            divergence += 0.5 * a * (a / m).log2();
        }
        if e > 0.0 {
            divergence += 0.5 * e * (e / m).log2();
        }
    }
    divergence.max(0.0).sqrt()
}

/// How far a variable has drifted, by its PSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Below the moderate band.
    Stable,
    /// In the moderate band.
    Moderate,
    /// At or above the significant band.
    Significant,
}

impl DriftState {
    /// Its name, as metrics and documents show it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Moderate => "moderate",
            Self::Significant => "significant",
        }
    }

    /// As a number for a gauge: 0, 1 or 2.
    #[must_use]
    pub fn level(self) -> f64 {
        match self {
            Self::Stable => 0.0,
            Self::Moderate => 1.0,
            Self::Significant => 2.0,
        }
    }
}

/// The PSI bands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    /// PSI from which a variable has drifted moderately.
    pub moderate: f64,
    /// PSI from which it has drifted significantly.
    pub significant: f64,
}

impl Default for Bands {
    fn default() -> Self {
        Self {
            moderate: 0.1,
            significant: 0.25,
        }
    }
}

impl Bands {
    /// The state of a PSI.
    #[must_use]
    pub fn state(&self, psi: f64) -> DriftState {
        if psi >= self.significant {
            DriftState::Significant
        } else if psi >= self.moderate {
            DriftState::Moderate
        } else {
            DriftState::Stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_and_js_of_equal_and_of_shifted_distributions() {
        let e = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&e, &[100, 100, 100, 100]).abs() < 1e-12);
        assert!(js_distance(&e, &[100, 100, 100, 100]).abs() < 1e-12);
        // Half the mass moved from the first bin to the last:
        // (0.125−0.25)·ln(0.5) + (0.375−0.25)·ln(1.5)
        let p = psi(&e, &[50, 100, 100, 150]);
        let expected = (0.125 - 0.25) * 0.5f64.ln() + (0.375 - 0.25) * 1.5f64.ln();
        assert!((p - expected).abs() < 1e-12, "{p}");
        // Everything in a bin the reference never saw: large, and finite.
        let far = psi(&[1.0, 0.0], &[0, 10]);
        assert!(far.is_finite() && far > 5.0);
        assert!((js_distance(&[1.0, 0.0], &[0, 10]) - 1.0).abs() < 1e-12);
        assert_eq!(psi(&e, &[0, 0, 0, 0]), 0.0);
    }

    #[test]
    fn bands() {
        let b = Bands::default();
        assert_eq!(b.state(0.05), DriftState::Stable);
        assert_eq!(b.state(0.1), DriftState::Moderate);
        assert_eq!(b.state(0.3), DriftState::Significant);
    }
}
