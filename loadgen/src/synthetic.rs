//! Kaggle-shaped synthetic transactions.
//!
//! The per-class means and standard deviations of V1..V28 and the log-normal fit of
//! Amount were computed from the published dataset (284,807 rows); `Time` advances
//! uniformly over the capture's two days. Columns are drawn independently, so correlations
//! are not reproduced: the data has the right shape and scale, and frauds are separable
//! in the same directions (V14, V12, V10, V17, V4, …) as in the real data.

use fraudstream_core::rng::Rng;
use fraudstream_core::schema::{NUM_FIELDS, Transaction};

/// Seconds covered by the real capture.
pub const CAPTURE_SECONDS: f64 = 172_792.0;

const LEGIT_STD: [f64; 28] = [
    1.93, 1.636, 1.459, 1.399, 1.357, 1.33, 1.179, 1.161, 1.089, 1.044, 1.003, 0.946, 0.995, 0.897,
    0.915, 0.845, 0.749, 0.825, 0.812, 0.769, 0.717, 0.724, 0.622, 0.606, 0.521, 0.482, 0.4, 0.33,
];
const FRAUD_MEAN: [f64; 28] = [
    -4.772, 3.624, -7.033, 4.542, -3.151, -1.398, -5.569, 0.571, -2.581, -5.677, 3.8, -6.259,
    -0.109, -6.972, -0.093, -4.14, -6.666, -2.246, 0.681, 0.372, 0.714, 0.014, -0.04, -0.105,
    0.041, 0.052, 0.171, 0.076,
];
const FRAUD_STD: [f64; 28] = [
    6.784, 4.291, 7.111, 2.873, 5.372, 1.858, 7.207, 6.798, 2.501, 4.897, 2.679, 4.654, 1.105,
    4.279, 1.05, 3.865, 6.971, 2.899, 1.54, 1.347, 3.869, 1.495, 1.58, 0.516, 0.797, 0.472, 1.377,
    0.547,
];
/// log1p(Amount): mean and standard deviation, legitimate then fraud.
const LOG_AMOUNT: [(f64, f64); 2] = [(3.153, 1.655), (2.821, 2.214)];

/// A generator of synthetic transactions.
#[derive(Debug, Clone)]
pub struct Synthetic {
    rng: Rng,
    fraud_rate: f64,
    cards: u32,
    n: u64,
    total: u64,
}

impl Synthetic {
    /// `total` transactions (spread over the capture's two days), each a fraud with
    /// probability `fraud_rate`; `cards > 0` assigns card ids from a pool of that size.
    #[must_use]
    pub fn new(seed: u64, total: u64, fraud_rate: f64, cards: u32) -> Self {
        Self {
            rng: Rng::new(seed),
            fraud_rate: fraud_rate.clamp(0.0, 1.0),
            cards,
            n: 0,
            total: total.max(1),
        }
    }

    fn normal(&mut self) -> f64 {
        self.rng.normal()
    }

    /// The next transaction.
    pub fn next_tx(&mut self) -> Transaction {
        let fraud = self.rng.unit() < self.fraud_rate;
        let mut values = [0.0; NUM_FIELDS];
        values[0] = (self.n as f64 * CAPTURE_SECONDS / self.total as f64).floor();
        for i in 0..28 {
            let (mean, std) = if fraud {
                (FRAUD_MEAN[i], FRAUD_STD[i])
            } else {
                (0.0, LEGIT_STD[i])
            };
            values[i + 1] = mean + std * self.normal();
        }
        let (mu, sigma) = LOG_AMOUNT[usize::from(fraud)];
        values[NUM_FIELDS - 1] = ((mu + sigma * self.normal()).exp() - 1.0).max(0.0);
        values[NUM_FIELDS - 1] = (values[NUM_FIELDS - 1] * 100.0).round() / 100.0;
        let card_id =
            (self.cards > 0).then(|| format!("card-{:06}", self.rng.below(self.cards as usize)));
        let id = format!("syn-{}", self.n);
        self.n += 1;
        Transaction {
            id,
            values,
            label: Some(u8::from(fraud)),
            card_id,
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_follows_the_real_data() {
        let mut g = Synthetic::new(1, 200_000, 0.01, 50);
        let txs: Vec<Transaction> = (0..200_000).map(|_| g.next_tx()).collect();
        let frauds: Vec<&Transaction> = txs.iter().filter(|t| t.label == Some(1)).collect();
        let rate = frauds.len() as f64 / txs.len() as f64;
        assert!((rate - 0.01).abs() < 0.002, "fraud rate {rate}");
        let legit: Vec<&Transaction> = txs.iter().filter(|t| t.label == Some(0)).collect();
        let mean_std = |rows: &[&Transaction], col: usize| {
            let n = rows.len() as f64;
            let m = rows.iter().map(|t| t.values[col]).sum::<f64>() / n;
            let v = rows
                .iter()
                .map(|t| (t.values[col] - m).powi(2))
                .sum::<f64>()
                / n;
            (m, v.sqrt())
        };
        let (m, s) = mean_std(&legit, 1);
        assert!(m.abs() < 0.05 && (s - 1.93).abs() < 0.05, "V1 {m} {s}");
        let (m, _) = mean_std(&frauds, 14);
        assert!((m + 6.972).abs() < 0.5, "fraud V14 mean {m}");
        let (m, _) = mean_std(&legit, NUM_FIELDS - 1);
        assert!(m > 50.0 && m < 130.0, "legit Amount mean {m}");
        assert!(txs.iter().all(|t| t.values.iter().all(|v| v.is_finite())));
        assert!(
            txs.iter()
                .all(|t| t.card_id.as_ref().is_some_and(|c| c.starts_with("card-")))
        );
        assert!(
            txs.windows(2).all(|w| w[0].values[0] <= w[1].values[0]),
            "Time never decreases"
        );
    }

    #[test]
    fn deterministic_per_seed() {
        let a: Vec<_> = {
            let mut g = Synthetic::new(5, 100, 0.1, 0);
            (0..100).map(|_| g.next_tx()).collect()
        };
        let mut g = Synthetic::new(5, 100, 0.1, 0);
        let b: Vec<_> = (0..100).map(|_| g.next_tx()).collect();
        assert_eq!(a, b);
    }
}
