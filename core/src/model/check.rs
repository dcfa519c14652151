//! The one model-validation path, used when a model starts serving (at start-up and on
//! hot reload) and before `score`, `evaluate` and `retrain` use one:
//! 1. the model has at least one feature, every feature is a transaction field (both
//!    checked when it loads), and its features are the expected ones;
//! 2. canary rows score as probabilities;
//! 3. when the model was published with [`Canary`] scores, it reproduces each exactly
//!    (bit for bit): a model whose trees changed after publication is refused.

use serde::{Deserialize, Serialize};

use super::scoring::Model;
use crate::schema::{NUM_FIELDS, Transaction};

/// A reference input and the exact score the model gave it when it was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The transaction's numeric fields (Time, V1..V28, Amount).
    pub values: Vec<f64>,
    /// The score, as published.
    pub score: f32,
}

/// Why a model may not serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// Its features are not the expected ones.
    #[error("feature mismatch: {0}")]
    Features(String),
    /// A canary row scored something that is not a probability.
    #[error("smoke test failed: {0}")]
    Smoke(String),
    /// A canary row's score differs from the one recorded at publication.
    #[error("canary {index} scored {got}, but {published} when it was published")]
    Canary {
        /// Which canary.
        index: usize,
        /// Its score now.
        got: f32,
        /// Its published score.
        published: f32,
    },
}

impl CheckError {
    /// A short, stable name (a metric label).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Features(_) => "features",
            Self::Smoke(_) => "smoke",
            Self::Canary { .. } => "canary",
        }
    }
}

/// Canary transactions: zeros, typical and extreme values of every field, alternating
/// signs so that rows fall on both sides of splits.
#[must_use]
pub fn canary_rows() -> Vec<Transaction> {
    let mut rows = Vec::new();
    for (i, scale) in [0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 25.0, -25.0, 1e6]
        .into_iter()
        .enumerate()
    {
        let mut values = [0.0; NUM_FIELDS];
        for (j, v) in values.iter_mut().enumerate() {
            *v = if j % 2 == 0 { scale } else { -scale };
        }
        values[0] = (i as f64) * 17_280.0; // Time
        values[NUM_FIELDS - 1] = scale.abs() * 100.0; // Amount
        rows.push(Transaction {
            id: format!("canary-{i}"),
            values,
            label: None,
            card_id: None,
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        });
    }
    rows
}

impl Model {
    /// The canary rows with this model's scores, to publish beside it.
    #[must_use]
    pub fn canaries(&self) -> Vec<Canary> {
        canary_rows()
            .into_iter()
            .map(|tx| Canary {
                score: self.verdict(&tx, 0).score,
                values: tx.values.to_vec(),
            })
            .collect()
    }

    /// Check that this model may serve: its features are `expected` (when given, in
    /// order), canary rows score as probabilities, and it reproduces `published`
    /// canaries exactly.
    pub fn check(
        &self,
        expected: Option<&[String]>,
        published: &[Canary],
    ) -> Result<(), CheckError> {
        if let Some(expected) = expected
            && self.meta().features != expected
        {
            return Err(CheckError::Features(format!(
                "model features [{}] differ from the expected [{}]",
                self.meta().features.join(", "),
                expected.join(", ")
            )));
        }
        for tx in canary_rows() {
            let s = self.verdict(&tx, 0).score;
            if !s.is_finite() || !(0.0..=1.0).contains(&s) {
                return Err(CheckError::Smoke(format!(
                    "{} scored {s} (not a probability)",
                    tx.id
                )));
            }
        }
        for (index, c) in published.iter().enumerate() {
            let mut values = [0.0; NUM_FIELDS];
            if c.values.len() != NUM_FIELDS {
                return Err(CheckError::Canary {
                    index,
                    got: f32::NAN,
                    published: c.score,
                });
            }
            values.copy_from_slice(&c.values);
            let tx = Transaction {
                id: format!("canary-{index}"),
                values,
                label: None,
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            };
            let got = self.verdict(&tx, 0).score;
            if got.to_bits() != c.score.to_bits() {
                return Err(CheckError::Canary {
                    index,
                    got,
                    published: c.score,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{TrainOptions, train_model};

    fn model(seed: u64) -> Model {
        let mut rng = crate::rng::Rng::new(seed);
        let mut d = crate::schema::Dataset::with_capacity(400);
        for i in 0..400 {
            let mut values = [0.0; NUM_FIELDS];
            for v in &mut values {
                *v = rng.unit() * 4.0 - 2.0;
            }
            d.push(Transaction {
                id: format!("t{i}"),
                values,
                label: Some(u8::from(values[4] + values[10] > 1.5)),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 5;
        opts.params.seed = seed;
        train_model(&d, "t", &opts, &|| {}).unwrap().model
    }

    #[test]
    fn a_model_passes_its_own_canaries_and_fails_anothers() {
        let a = model(1);
        let b = model(2);
        let published = a.canaries();
        assert_eq!(published.len(), 10);
        a.check(Some(&a.meta().features), &published).unwrap();
        let e = b.check(None, &published).unwrap_err();
        assert_eq!(e.reason(), "canary", "{e}");
        let e = a.check(Some(&a.meta().features[..3]), &[]).unwrap_err();
        assert_eq!(e.reason(), "features");
        let mut tampered = published.clone();
        tampered[4].score = f32::from_bits(tampered[4].score.to_bits() ^ 1);
        assert_eq!(a.check(None, &tampered).unwrap_err().reason(), "canary");
    }
}
