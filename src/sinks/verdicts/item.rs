//! The verdict item and the verdict store's errors.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Verdict;
use crate::model::scoring::Contribution;
use crate::retry::Retryable;
use crate::rules::Outcome;

/// One stored verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictItem {
    /// Transaction id: the key.
    pub tx_id: String,
    /// Fraud probability.
    pub score: f32,
    /// `score >= threshold`.
    pub fraud: bool,
    /// The threshold applied.
    pub threshold: f64,
    /// The model version that scored it.
    pub model_version: Arc<str>,
    /// When it was scored (RFC 3339, UTC, milliseconds; shared by a batch's items).
    pub scored_at: Arc<str>,
    /// The largest feature contributions.
    pub top_features: Vec<Contribution>,
    /// Expiry as Unix seconds, for stores with TTL.
    pub ttl: Option<i64>,
    /// `approve`, `review` or `block`.
    pub outcome: Outcome,
    /// What decided: a rule's name, `model` or `model_only`.
    pub decided_by: Arc<str>,
    /// The rules that matched.
    pub rules: Vec<Arc<str>>,
    /// The rule set that decided, when one was active.
    pub rule_set: Option<Arc<str>>,
}

impl VerdictItem {
    /// The outcome a store that predates decisions implies: the model's rule.
    #[must_use]
    pub fn implied_outcome(fraud: bool) -> (Outcome, Arc<str>) {
        if fraud {
            (Outcome::Block, Arc::from(crate::model::BY_MODEL))
        } else {
            (Outcome::Approve, Arc::from(crate::model::BY_MODEL_ONLY))
        }
    }
}

impl VerdictItem {
    /// An item from a verdict, stamped now, expiring `ttl_secs` from now when given.
    #[must_use]
    pub fn from_verdict(v: Verdict, ttl_secs: Option<u64>) -> Self {
        Stamp::now(ttl_secs).item(v)
    }
}

/// The time a batch of verdicts is stored at, shared by its items.
#[derive(Debug, Clone)]
pub struct Stamp {
    scored_at: Arc<str>,
    expires: Option<i64>,
}

impl Stamp {
    /// Now, with items expiring `ttl_secs` from now when given.
    #[must_use]
    pub fn now(ttl_secs: Option<u64>) -> Self {
        let now = std::time::SystemTime::now();
        let unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Self {
            scored_at: Arc::from(humantime::format_rfc3339_millis(now).to_string()),
            expires: ttl_secs.map(|t| unix + t as i64),
        }
    }

    /// The item for `v`, at this time.
    #[must_use]
    pub fn item(&self, v: Verdict) -> VerdictItem {
        VerdictItem {
            tx_id: v.tx_id,
            score: v.score,
            fraud: v.fraud,
            threshold: v.threshold,
            model_version: v.model_version,
            scored_at: self.scored_at.clone(),
            top_features: v.top_features,
            ttl: self.expires,
            outcome: v.outcome,
            decided_by: v.decided_by,
            rules: v.rules,
            rule_set: v.rule_set,
        }
    }
}

/// Keep the last item for each transaction id, in first-seen order: one batch must not
/// hold a key twice (DynamoDB refuses that), and the latest verdict wins.
#[must_use]
pub fn dedupe_last(items: &[VerdictItem]) -> Vec<&VerdictItem> {
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(items.len());
    let mut out: Vec<&VerdictItem> = Vec::with_capacity(items.len());
    for it in items {
        match index.get(it.tx_id.as_str()) {
            Some(&i) => out[i] = it,
            None => {
                index.insert(&it.tx_id, out.len());
                out.push(it);
            }
        }
    }
    out
}

/// Verdict store errors. Messages name the endpoint or table, never a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerdictError {
    /// The service could not be reached.
    #[error("{endpoint}: unreachable: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Details.
        message: String,
    },
    /// The credentials were refused.
    #[error("{endpoint}: access denied; check the credentials ({message})")]
    Denied {
        /// The endpoint.
        endpoint: String,
        /// The service's error code.
        message: String,
    },
    /// The table does not exist (and creating it is off).
    #[error("table {table} does not exist at {endpoint} (set create_table to create it)")]
    NoTable {
        /// The table.
        table: String,
        /// The endpoint.
        endpoint: String,
    },
    /// Throttling or a server error; retried, and still failing.
    #[error("{endpoint}: {message}")]
    Transient {
        /// The endpoint.
        endpoint: String,
        /// Details.
        message: String,
    },
    /// Items the service kept returning as unprocessed after every retry.
    #[error("{endpoint}: {count} items still unprocessed after {attempts} attempts")]
    Unprocessed {
        /// The endpoint.
        endpoint: String,
        /// Items not written.
        count: usize,
        /// Attempts made.
        attempts: u32,
    },
    /// Some items can never be stored (the store refuses them as they are: a key or
    /// size it does not accept); every other item of the batch is durable.
    #[error("{store}: {} item(s) refused, the rest written: {}", refused.len(), refused.first().map_or("", |r| r.1.as_str()))]
    Refused {
        /// The store.
        store: String,
        /// Transaction ids refused, each with the store's reason.
        refused: Vec<(String, String)>,
    },
    /// The store refused a request as invalid (DynamoDB's `ValidationException`); an item
    /// in it cannot be written as it is.
    #[error("{store}: invalid request: {message}")]
    Invalid {
        /// The store.
        store: String,
        /// Details.
        message: String,
    },
    /// Anything else (a local database error).
    #[error("{store}: {message}")]
    Other {
        /// The store.
        store: String,
        /// Details.
        message: String,
    },
}

impl Retryable for VerdictError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Transient { .. } | Self::Unprocessed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, score: f32) -> VerdictItem {
        VerdictItem {
            tx_id: id.into(),
            score,
            fraud: false,
            threshold: 0.5,
            model_version: "v".into(),
            scored_at: "t".into(),
            top_features: vec![],
            ttl: None,
            outcome: Outcome::Approve,
            decided_by: "model_only".into(),
            rules: vec![],
            rule_set: None,
        }
    }

    #[test]
    fn dedupe_keeps_the_last_item_per_key_in_first_seen_order() {
        let items = [item("a", 0.1), item("b", 0.2), item("a", 0.3)];
        let d = dedupe_last(&items);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].tx_id, "a");
        assert_eq!(d[0].score, 0.3);
        assert_eq!(d[1].tx_id, "b");
    }
}
