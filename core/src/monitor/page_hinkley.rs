//! The Page-Hinkley test (Page, "Continuous inspection schemes", Biometrika 1954; in the
//! form of Gama et al., "A survey on concept drift adaptation", 2014): it raises an alarm
//! when the mean of a stream rises. Fed one 0/1 error per labelled verdict, it says when
//! the model's error rate has gone up.
//!
//! With `x̄ₜ` the running mean, `mₜ = Σ (xᵢ − x̄ᵢ − δ)` and `Mₜ = min mᵢ`, the alarm is
//! `mₜ − Mₜ > λ`. `δ` is the change too small to care about, `λ` the evidence needed
//! (higher: fewer false alarms, later detection).

use serde::Serialize;

/// The Page-Hinkley test for a rise in a stream's mean.
#[derive(Debug, Clone, Serialize)]
pub struct PageHinkley {
    delta: f64,
    lambda: f64,
    /// Observations before an alarm is possible.
    min_instances: u64,
    n: u64,
    mean: f64,
    sum: f64,
    min: f64,
}

impl PageHinkley {
    /// A test with tolerance `delta`, threshold `lambda`, and no alarm before
    /// `min_instances` observations.
    #[must_use]
    pub fn new(delta: f64, lambda: f64, min_instances: u64) -> Self {
        Self {
            delta,
            lambda,
            min_instances,
            n: 0,
            mean: 0.0,
            sum: 0.0,
            min: 0.0,
        }
    }

    /// Add an observation; `true` when the test signals a rise. After an alarm it starts
    /// over.
    pub fn add(&mut self, x: f64) -> bool {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.sum += x - self.mean - self.delta;
        self.min = self.min.min(self.sum);
        if self.n >= self.min_instances && self.statistic() > self.lambda {
            self.reset();
            return true;
        }
        false
    }

    /// `mₜ − Mₜ`: how far the cumulative deviation has climbed from its lowest point.
    #[must_use]
    pub fn statistic(&self) -> f64 {
        self.sum - self.min
    }

    /// Observations since the last alarm (or the start).
    #[must_use]
    pub fn observations(&self) -> u64 {
        self.n
    }

    /// Start over.
    pub fn reset(&mut self) {
        self.n = 0;
        self.mean = 0.0;
        self.sum = 0.0;
        self.min = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Errors at rate `p`, drawn from `rng`.
    fn errors(rng: &mut Rng, p: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| f64::from(u8::from(rng.unit() < p)))
            .collect()
    }

    #[test]
    fn a_steady_error_rate_raises_nothing_and_a_rise_is_caught() {
        let mut rng = Rng::new(7);
        let mut ph = PageHinkley::new(0.005, 50.0, 30);
        let steady = errors(&mut rng, 0.02, 50_000);
        assert!(
            !steady.iter().any(|&x| ph.add(x)),
            "no alarm on a steady 2%"
        );
        // The rate goes to 20%: caught within a few hundred labels.
        let worse = errors(&mut rng, 0.2, 5_000);
        let at = worse.iter().position(|&x| ph.add(x));
        assert!(at.is_some_and(|i| i < 1_000), "{at:?}");
        assert_eq!(ph.observations(), 0, "starts over after an alarm");
    }
}
