//! The decision a detector serves: the active rule set, compiled against the lists and
//! the entity features this detector computes, swapped whole when any of them changes.
//!
//! Every verdict gets an outcome (`approve`, `review`, `block`), the rules that matched
//! and the one that decided, or `model` (no rule matched and the score is at or over the
//! model's threshold: `decisions.model_outcome`) or `model_only` (no rule matched, under
//! the threshold: approve). With no active rule set, the model's rule alone decides.
//!
//! [`DecisionWatcher`] polls `rules/ACTIVE` and every list's pointer with conditional
//! reads (nothing is downloaded while nothing changed). A new rule set, or a list change,
//! is compiled and swapped in only if it compiles; otherwise the decider that serves
//! keeps serving, and the rejection is counted and logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::rules::{ListVersion, RuleManifest, RuleStore, RulesError};
use crate::metric_names as names;
use crate::model::Verdict;
use crate::rules::{Catalog, DecidedBy, Facts, Lists, Outcome, RuleSet};
use crate::schema::Transaction;

/// `[decisions]`: how verdicts become outcomes. The rule sets and lists themselves live in
/// the model store (`fraudstream rules`, `fraudstream list`) and are polled every
/// `models.poll_interval`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// The outcome of a verdict at or over the model's threshold that no rule decided:
    /// `block` (default) or `review` (`approve` would ignore the model).
    pub model_outcome: Outcome,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        Self {
            model_outcome: Outcome::Block,
        }
    }
}

impl crate::validate::Validate for DecisionsConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        if self.model_outcome == Outcome::Approve {
            return Err(crate::validate::Invalid::new(
                "model_outcome",
                "`approve` would let every fraud verdict through: use `review` or `block`",
            ));
        }
        Ok(())
    }
}

pub use crate::model::{BY_MODEL, BY_MODEL_ONLY};

/// The active rule set, compiled.
#[derive(Debug)]
pub struct ActiveRules {
    /// Its version.
    pub version: Arc<str>,
    /// Its manifest.
    pub manifest: RuleManifest,
    /// Compiled against [`Decider::lists`].
    pub set: RuleSet,
}

/// What decides every verdict.
#[derive(Debug)]
pub struct Decider {
    /// The active rule set (none: the model's rule alone).
    pub rules: Option<ActiveRules>,
    /// The lists the rules look values up in.
    pub lists: Arc<Lists>,
    /// Each list's version.
    pub list_versions: Vec<ListVersion>,
    /// The outcome of a verdict over the threshold that no rule decided.
    pub model_outcome: Outcome,
}

thread_local! {
    /// Matched rule indices, reused by every decision on this thread.
    static MATCHED: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Decider {
    /// The model's rule alone: `model_outcome` at or over the threshold, else approve.
    #[must_use]
    pub fn model_only(model_outcome: Outcome) -> Self {
        Self {
            rules: None,
            lists: Arc::new(Lists::new()),
            list_versions: Vec::new(),
            model_outcome,
        }
    }

    /// The active rule set's version, if any.
    #[must_use]
    pub fn version(&self) -> Option<&Arc<str>> {
        self.rules.as_ref().map(|r| &r.version)
    }

    /// Decide `verdict`, the verdict of `tx`: its outcome, the rules that matched and
    /// what decided.
    pub fn apply(&self, tx: &Transaction, verdict: &mut Verdict) {
        let Some(active) = &self.rules else {
            verdict.decide_by_model(self.model_outcome);
            return;
        };
        let facts = Facts::new(tx, verdict.score, verdict.fraud);
        MATCHED.with_borrow_mut(|matched| {
            let decided = active
                .set
                .decide(&facts, &self.lists, self.model_outcome, matched);
            verdict.outcome = decided.outcome;
            match decided.by {
                DecidedBy::Rule(i) => verdict.decided_by = active.set.name(i).clone(),
                DecidedBy::Model | DecidedBy::ModelOnly => {
                    verdict.decide_by_model(self.model_outcome);
                }
            }
            verdict.rules.clear();
            verdict.rules.extend(
                matched
                    .iter()
                    .map(|&i| active.set.name(usize::from(i)).clone()),
            );
        });
        verdict.rule_set = Some(active.version.clone());
    }
}

/// Outcomes and rule matches counted since start: the metrics
/// `fraudstream_decisions_total` and `fraudstream_rule_matches_total`, and the figures the
/// dashboard turns into rates.
#[derive(Debug, Default)]
pub struct DecisionCounts {
    /// approve, review, block.
    outcomes: [std::sync::atomic::AtomicU64; 3],
    /// Matches by rule name.
    rules: std::sync::Mutex<HashMap<Arc<str>, u64>>,
}

/// Counts read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountsSnapshot {
    /// approve, review, block.
    pub outcomes: [u64; 3],
    /// Matches by rule name.
    pub rules: HashMap<Arc<str>, u64>,
}

impl DecisionCounts {
    /// Count a decided batch.
    pub fn count(&self, verdicts: &[Verdict]) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut outcomes = [0u64; 3];
        let mut matches: HashMap<&Arc<str>, u64> = HashMap::new();
        let mut rule_set: Option<&Arc<str>> = None;
        for v in verdicts {
            outcomes[match v.outcome {
                Outcome::Approve => 0,
                Outcome::Review => 1,
                Outcome::Block => 2,
            }] += 1;
            for r in &v.rules {
                *matches.entry(r).or_default() += 1;
            }
            rule_set = rule_set.or(v.rule_set.as_ref());
        }
        for (i, o) in [Outcome::Approve, Outcome::Review, Outcome::Block]
            .iter()
            .enumerate()
        {
            if outcomes[i] > 0 {
                self.outcomes[i].fetch_add(outcomes[i], Relaxed);
                metrics::counter!(names::DECISIONS, "outcome" => o.to_string())
                    .increment(outcomes[i]);
            }
        }
        if matches.is_empty() {
            return;
        }
        let set = rule_set.map_or_else(String::new, ToString::to_string);
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, n) in matches {
            *rules.entry(name.clone()).or_default() += n;
            metrics::counter!(names::RULE_MATCHES, "rule" => name.to_string(), "rule_set" => set.clone())
                .increment(n);
        }
    }

    /// The counts now.
    #[must_use]
    pub fn snapshot(&self) -> CountsSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        CountsSnapshot {
            outcomes: [0, 1, 2].map(|i| self.outcomes[i].load(Relaxed)),
            rules: self
                .rules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A detector's decisions, for the API: the store, what serves, and what a rule set
/// compiles against here.
#[derive(Clone)]
pub struct Decisions {
    /// The rule sets and lists.
    pub store: RuleStore,
    /// What decides now (the watcher swaps it).
    pub decider: Arc<ArcSwap<Decider>>,
    /// Outcomes and rule matches so far (the dashboard's rates).
    pub counts: Arc<DecisionCounts>,
    /// The entity features this detector computes.
    pub derived: Vec<String>,
    /// Where backtests read rows from (`lake.location`).
    pub lake: String,
    /// S3 access for the lake.
    pub s3: crate::storage::S3Settings,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("store", &self.store.describe())
            .field("serving", &self.decider.load().version())
            .finish_non_exhaustive()
    }
}

/// The catalog a rule set compiles against here: the entity features this detector
/// computes, and the lists.
#[must_use]
pub fn catalog(derived: &[String], lists: &Lists) -> Catalog {
    lists.catalog(derived.to_vec())
}

/// Keeps [`Decider`] current with the store.
pub struct DecisionWatcher {
    store: RuleStore,
    slot: Arc<ArcSwap<Decider>>,
    derived: Vec<String>,
    /// The active pointer's entity tag, and each list's, as last read.
    active_etag: Option<String>,
    list_etags: HashMap<String, String>,
    /// The version refused last, not logged again until the pointer moves.
    refused: Option<String>,
}

impl std::fmt::Debug for DecisionWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionWatcher")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// What a decider load found.
#[derive(Debug)]
pub enum Loaded {
    /// A decider to serve.
    Ready(Box<Decider>),
    /// The active rule set does not compile or load; what serves keeps serving.
    Refused {
        /// The version.
        version: String,
        /// Why.
        reason: RulesError,
    },
}

/// Load the lists and the active rule set, and compile it.
pub async fn load(
    store: &RuleStore,
    derived: &[String],
    model_outcome: Outcome,
) -> Result<Loaded, RulesError> {
    let (lists, list_versions) = store.load_lists().await?;
    let mut decider = Decider {
        rules: None,
        lists: Arc::new(lists),
        list_versions,
        model_outcome,
    };
    if let Some(active) = store.active().await? {
        let catalog = catalog(derived, &decider.lists);
        match store.get_compiled(&active.version, &catalog).await {
            Ok((v, set)) => {
                decider.rules = Some(ActiveRules {
                    version: Arc::from(active.version.as_str()),
                    manifest: v.manifest,
                    set,
                });
            }
            Err(RulesError::Storage(e)) => return Err(e.into()),
            Err(reason) => {
                return Ok(Loaded::Refused {
                    version: active.version,
                    reason,
                });
            }
        }
    }
    Ok(Loaded::Ready(Box::new(decider)))
}

impl DecisionWatcher {
    /// A watcher that swaps into `slot`; `derived` names the entity features this detector
    /// computes.
    #[must_use]
    pub fn new(store: RuleStore, slot: Arc<ArcSwap<Decider>>, derived: Vec<String>) -> Self {
        Self {
            store,
            slot,
            derived,
            active_etag: None,
            list_etags: HashMap::new(),
            refused: None,
        }
    }

    /// Whether the active pointer or any list moved since the last poll (one conditional
    /// read each, and one listing of the lists).
    async fn changed(&mut self) -> Result<bool, RulesError> {
        let mut changed = false;
        if let Some(active) = self
            .store
            .active_if_changed(self.active_etag.as_deref())
            .await?
        {
            changed = true;
            self.active_etag = Some(active.etag);
        }
        let names = self.store.list_names().await?;
        let known = self.list_etags.len();
        self.list_etags.retain(|name, _| names.contains(name));
        if self.list_etags.len() != known {
            changed = true; // a list is gone
        }
        for name in names {
            let known = self.list_etags.get(&name).cloned();
            if let Some((v, _)) = self
                .store
                .list_text_if_changed(&name, known.as_deref())
                .await?
            {
                changed = true;
                self.list_etags.insert(name, v.etag);
            }
        }
        Ok(changed)
    }

    /// Poll once: reload and swap when anything moved and the result compiles.
    pub async fn poll(&mut self) -> Result<(), RulesError> {
        if !self.changed().await? {
            return Ok(());
        }
        let model_outcome = self.slot.load().model_outcome;
        match load(&self.store, &self.derived, model_outcome).await {
            Ok(Loaded::Ready(d)) => {
                let from = self.slot.load().version().map(ToString::to_string);
                let to = d.version().map(ToString::to_string);
                tracing::info!(from = ?from, to = ?to, lists = d.list_versions.len(), "decisions reloaded");
                metrics::counter!(names::RULES_RELOADS).increment(1);
                self.refused = None;
                self.slot.store(Arc::from(d));
                Ok(())
            }
            Ok(Loaded::Refused { version, reason }) => {
                if self.refused.as_deref() != Some(version.as_str()) {
                    metrics::counter!(names::RULES_REJECTIONS).increment(1);
                    tracing::error!(version, reason = %reason, serving = ?self.slot.load().version(), "rule set refused; the serving rules stay");
                    self.refused = Some(version);
                }
                Ok(())
            }
            Err(e) => {
                // Unreachable storage: try again at the next poll.
                self.active_etag = None;
                self.list_etags.clear();
                Err(e)
            }
        }
    }

    /// Poll every `interval` until `stop` is cancelled.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        super::poll_every(self, interval, stop).await;
    }
}

impl super::Polling for DecisionWatcher {
    type Error = RulesError;

    async fn poll_once(&mut self) -> Result<(), RulesError> {
        self.poll().await
    }

    fn watching(&self) -> String {
        format!("{} (rules/ACTIVE, lists)", self.store.describe())
    }
}
