//! What entity features to compute: entities, windows, aggregates, the label delay and
//! the time flags. A spec names its features deterministically, so a model records the
//! spec it was trained with and a detector can check that it computes the same thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time in whole seconds, written like `1h`, `1d`, `7d` or `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub u64);

impl Span {
    /// Seconds.
    #[must_use]
    pub fn secs(self) -> u64 {
        self.0
    }

    /// As a duration.
    #[must_use]
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s > 0 && s.is_multiple_of(len) {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration like 1h, 1d or 30d: {e}"))?;
        if d.subsec_nanos() != 0 {
            return Err(format!("{s:?}: use whole seconds"));
        }
        Ok(Self(d.as_secs()))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An entity a transaction belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// The card (`card_id`).
    CardId,
    /// The terminal (`terminal_id`).
    TerminalId,
}

impl Entity {
    /// The transaction field that names it.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::CardId => "card_id",
            Self::TerminalId => "terminal_id",
        }
    }

    /// A one-byte tag, for store keys.
    #[must_use]
    pub fn tag(self) -> u8 {
        match self {
            Self::CardId => b'c',
            Self::TerminalId => b't',
        }
    }
}

/// One aggregate over a window of an entity's past transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Transactions in `[t − window, t)`.
    Count,
    /// Sum of their amounts.
    Sum,
    /// Mean of their amounts (0 when there are none).
    MeanAmount,
    /// Known frauds among the transactions in `[t − delay − window, t − delay)`: the
    /// labels of more recent ones have not arrived yet.
    Frauds,
    /// Those frauds over the transactions of the same delayed window (0 when none).
    Risk,
    /// Transactions in the delayed window (the denominator of `risk`).
    DelayedCount,
    /// The transaction's amount over the mean amount of the window (0 when the window
    /// holds no amount): how unusual this amount is for the entity.
    AmountRatio,
}

impl Aggregate {
    /// The name used in feature names.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::MeanAmount => "mean_amount",
            Self::Frauds => "frauds",
            Self::Risk => "risk",
            Self::DelayedCount => "delayed_count",
            Self::AmountRatio => "amount_ratio",
        }
    }

    /// Whether it reads labels (and so the delayed window).
    #[must_use]
    pub fn delayed(self) -> bool {
        matches!(self, Self::Frauds | Self::Risk | Self::DelayedCount)
    }
}

/// The features of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// Which entity.
    pub name: Entity,
    /// Window lengths.
    pub windows: Vec<Span>,
    /// Aggregates, each computed over every window.
    pub aggregates: Vec<Aggregate>,
}

/// What to do with a transaction that lacks an entity id the spec uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingEntity {
    /// Score it with that entity's features at 0, and count it.
    #[default]
    Score,
    /// Refuse it: it goes to the dead-letter topic.
    Refuse,
}

/// The whole feature declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocitySpec {
    /// Counter granularity: windows and the delay are whole multiples of it.
    #[serde(default = "default_bucket")]
    pub bucket: Span,
    /// How long a label (a chargeback) takes to arrive: fraud aggregates read windows
    /// that end this long before the transaction.
    #[serde(default = "default_delay")]
    pub label_delay: Span,
    /// Count the transaction being scored in its own current windows (`count`, `sum`,
    /// `mean_amount`), as rolling windows that end at the transaction do. Never a later
    /// one: the features stay point in time.
    #[serde(default = "yes")]
    pub include_current: bool,
    /// Add `weekend` and `night` (hour ≤ 6) flags, from `Time` read as Unix seconds (UTC).
    #[serde(default = "yes")]
    pub time_flags: bool,
    /// Per-entity features.
    #[serde(default, rename = "entity")]
    pub entities: Vec<EntitySpec>,
    /// A transaction without an entity id the spec uses.
    #[serde(default)]
    pub missing_entity: MissingEntity,
}

fn default_bucket() -> Span {
    Span(3_600)
}

fn default_delay() -> Span {
    Span(7 * 86_400)
}

/// The default of `include_current` and `time_flags` in a table that leaves them out:
/// the handbook's, as documented (they read `false` before 2026-12-08, unlike the docs).
fn yes() -> bool {
    true
}

/// Names the offending key of a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// The key, relative to the spec (for example `entity[1].windows`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The time flags (`time_flags`), functions of the calendar alone: what share of a
/// window falls on a weekend or at night depends on which hours the window spans, not on
/// the data, so drift monitoring does not count them.
pub const CALENDAR_FEATURES: [&str; 2] = ["weekend", "night"];

impl VelocitySpec {
    /// The handbook's features (Le Borgne et al., chapter 3.3): per card, count and mean
    /// amount over 1, 7 and 30 days, the transaction included; per terminal, the count
    /// and the fraud risk of the 1, 7 and 30 days that end 7 days back (the label
    /// delay); weekend and night flags.
    #[must_use]
    pub fn handbook() -> Self {
        let days = |d: &[u64]| d.iter().map(|d| Span(d * 86_400)).collect::<Vec<_>>();
        Self {
            bucket: default_bucket(),
            label_delay: default_delay(),
            time_flags: true,
            include_current: true,
            entities: vec![
                EntitySpec {
                    name: Entity::CardId,
                    windows: days(&[1, 7, 30]),
                    aggregates: vec![Aggregate::Count, Aggregate::MeanAmount],
                },
                EntitySpec {
                    name: Entity::TerminalId,
                    windows: days(&[1, 7, 30]),
                    aggregates: vec![Aggregate::DelayedCount, Aggregate::Risk],
                },
            ],
            missing_entity: MissingEntity::Score,
        }
    }

    /// Check the spec; the error names the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |key: String, message: String| Err(SpecError { key, message });
        let b = self.bucket.secs();
        if b == 0 {
            return err("bucket".into(), "must be positive".into());
        }
        if !self.label_delay.secs().is_multiple_of(b) {
            return err(
                "label_delay".into(),
                format!(
                    "{} is not a whole number of buckets ({})",
                    self.label_delay, self.bucket
                ),
            );
        }
        let mut seen = Vec::new();
        for (i, e) in self.entities.iter().enumerate() {
            if seen.contains(&e.name) {
                return err(
                    format!("entity[{i}].name"),
                    format!("{} is declared twice", e.name.field()),
                );
            }
            seen.push(e.name);
            if e.windows.is_empty() {
                return err(
                    format!("entity[{i}].windows"),
                    "list at least one window".into(),
                );
            }
            if e.aggregates.is_empty() {
                return err(
                    format!("entity[{i}].aggregates"),
                    "list at least one aggregate".into(),
                );
            }
            for w in &e.windows {
                if w.secs() == 0 || !w.secs().is_multiple_of(b) {
                    return err(
                        format!("entity[{i}].windows"),
                        format!(
                            "{w} is not a positive whole number of buckets ({})",
                            self.bucket
                        ),
                    );
                }
            }
            if has_duplicates(&e.windows) || has_duplicates(&e.aggregates) {
                return err(
                    format!("entity[{i}]"),
                    "a window or an aggregate is listed twice".into(),
                );
            }
        }
        if self.names().is_empty() {
            return err(
                "entity".into(),
                "declares no feature (add an entity or time_flags)".into(),
            );
        }
        Ok(())
    }

    /// Whether `other` computes the same features (the policy for a missing entity id
    /// aside): what a model trained with one needs of a detector computing the other.
    #[must_use]
    pub fn same_features(&self, other: &Self) -> bool {
        self.bucket == other.bucket
            && self.label_delay == other.label_delay
            && self.include_current == other.include_current
            && self.time_flags == other.time_flags
            && self.entities == other.entities
    }

    /// Feature names, in the order [`crate::velocity::Engine`] writes them: per entity,
    /// per aggregate, per window (`card_id_count_1d`, `terminal_id_risk_7d`, …), then
    /// `weekend` and `night`.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entities {
            for a in &e.aggregates {
                for w in &e.windows {
                    out.push(format!("{}_{}_{w}", e.name.field(), a.name()));
                }
            }
        }
        if self.time_flags {
            out.extend(CALENDAR_FEATURES.iter().map(|&n| n.to_owned()));
        }
        out
    }

    /// How far back any feature reads, in seconds: the longest window, plus the label
    /// delay for delayed aggregates. A history's first `reach_secs` are its warm-up: the
    /// entity features of its rows count less than a full window.
    #[must_use]
    pub fn reach_secs(&self) -> u64 {
        self.entities
            .iter()
            .flat_map(|e| {
                let delayed = e.aggregates.iter().any(|a| a.delayed());
                e.windows
                    .iter()
                    .map(move |w| w.secs() + if delayed { self.label_delay.secs() } else { 0 })
            })
            .max()
            .unwrap_or(0)
    }

    /// How far back any feature reads, in buckets (counters older than this are dropped).
    #[must_use]
    pub fn horizon_buckets(&self) -> i64 {
        if self.entities.is_empty() {
            return 0;
        }
        (self.reach_secs() / self.bucket.secs()) as i64 + 1
    }
}

fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, x)| items[..i].contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip() {
        for (text, secs) in [
            ("1h", 3_600),
            ("1d", 86_400),
            ("30d", 2_592_000),
            ("90s", 90),
        ] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.secs(), secs);
            assert_eq!(s.to_string(), if text == "90s" { "90s" } else { text });
        }
        assert!("soon".parse::<Span>().is_err());
    }

    #[test]
    fn handbook_names_fourteen_features_beside_amount() {
        let s = VelocitySpec::handbook();
        s.validate().unwrap();
        let names = s.names();
        assert_eq!(names.len(), 14);
        assert_eq!(names[0], "card_id_count_1d");
        assert_eq!(names[5], "card_id_mean_amount_30d");
        assert_eq!(names[6], "terminal_id_delayed_count_1d");
        assert_eq!(names[11], "terminal_id_risk_30d");
        assert_eq!(&names[12..], ["weekend", "night"]);
        assert_eq!(s.horizon_buckets(), 37 * 24 + 1);
    }

    #[test]
    fn the_missing_entity_policy_is_not_a_feature() {
        let a = VelocitySpec::handbook();
        let mut b = a.clone();
        b.missing_entity = MissingEntity::Refuse;
        assert!(a.same_features(&b));
        b.include_current = false;
        assert!(!a.same_features(&b));
    }

    #[test]
    fn errors_name_the_key() {
        let mut s = VelocitySpec::handbook();
        s.entities[1].windows.push(Span(5_400));
        assert_eq!(s.validate().unwrap_err().key, "entity[1].windows");
        let mut s = VelocitySpec::handbook();
        s.label_delay = Span(100);
        assert_eq!(s.validate().unwrap_err().key, "label_delay");
        let mut s = VelocitySpec::handbook();
        s.entities[1].name = Entity::CardId;
        assert_eq!(s.validate().unwrap_err().key, "entity[1].name");
        let s: Result<VelocitySpec, _> = serde_json::from_str(
            r#"{"entity":[{"name":"card_id","windows":["1d"],"aggregates":["median"]}]}"#,
        );
        assert!(s.unwrap_err().to_string().contains("median"));
    }

    #[test]
    fn keys_left_out_take_the_handbooks_values() {
        let s: VelocitySpec = serde_json::from_str(
            r#"{"entity":[{"name":"card_id","windows":["1d","7d","30d"],"aggregates":["count","mean_amount"]},
                {"name":"terminal_id","windows":["1d","7d","30d"],"aggregates":["delayed_count","risk"]}]}"#,
        )
        .unwrap();
        assert_eq!(s, VelocitySpec::handbook());
    }
}
