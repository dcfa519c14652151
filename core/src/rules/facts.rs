//! What one transaction offers the rules.

use crate::schema::{NUM_FIELDS, Transaction};

/// The facts one transaction offers the rules: borrowed, so building them per
/// transaction allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The model's score in [0, 1] (`score`; `risk_score` is it × 100).
    pub score: f32,
    /// The model's own verdict: score ≥ the model's threshold (`fraud`).
    pub fraud: bool,
    /// The numeric fields, in [`crate::schema::FIELD_NAMES`] order.
    pub values: &'a [f64; NUM_FIELDS],
    /// The entity features, in the order of the [`super::Catalog`]'s `derived` names
    /// (the [`crate::velocity::VelocitySpec::names`] order). A feature past the end of
    /// this slice reads as NaN, so every comparison with it is false.
    pub derived: &'a [f32],
    /// The transaction id (`id`).
    pub id: &'a str,
    /// The card (`card_id`); `None` reads as the empty string.
    pub card_id: Option<&'a str>,
    /// The terminal (`terminal_id`); `None` reads as the empty string.
    pub terminal_id: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// The facts of `tx`, scored `score`, with the model's verdict `fraud`.
    #[must_use]
    pub fn new(tx: &'a Transaction, score: f32, fraud: bool) -> Self {
        Self {
            score,
            fraud,
            values: &tx.values,
            derived: &tx.derived,
            id: &tx.id,
            card_id: tx.card_id.as_deref(),
            terminal_id: tx.terminal_id.as_deref(),
        }
    }

    /// Field `k` ([`crate::schema::FIELD_NAMES`] order); NaN past the end.
    #[inline]
    pub(crate) fn field(&self, k: u8) -> f64 {
        self.values.get(usize::from(k)).copied().unwrap_or(f64::NAN)
    }

    /// Entity feature `j`; NaN past the end.
    #[inline]
    pub(crate) fn derived(&self, j: u32) -> f64 {
        self.derived
            .get(j as usize)
            .map_or(f64::NAN, |&v| f64::from(v))
    }

    /// `score`, or `risk_score` (× 100) when `risk`.
    #[inline]
    pub(crate) fn score(&self, risk: bool) -> f64 {
        let s = f64::from(self.score);
        if risk { s * 100.0 } else { s }
    }
}
