//! Forest hyper-parameters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How many features each node draws from when searching for a split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MaxFeatures {
    /// floor(sqrt(n_features)), at least 1 (scikit-learn's default for classifiers).
    Sqrt,
    /// floor(log2(n_features)), at least 1.
    Log2,
    /// Every feature (bagged trees rather than a random forest).
    All,
    /// A fixed count, capped at the number of features.
    Count(usize),
    /// A fraction of the features, at least 1.
    Fraction(f64),
}

impl MaxFeatures {
    /// The number of features to draw at each node, for `n` features.
    #[must_use]
    pub fn resolve(self, n: usize) -> usize {
        let k = match self {
            Self::Sqrt => (n as f64).sqrt().floor() as usize,
            Self::Log2 => (n as f64).log2().floor() as usize,
            Self::All => n,
            Self::Count(c) => c,
            Self::Fraction(f) => (f * n as f64).floor() as usize,
        };
        k.clamp(1, n.max(1))
    }
}

impl fmt::Display for MaxFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqrt => f.write_str("sqrt"),
            Self::Log2 => f.write_str("log2"),
            Self::All => f.write_str("all"),
            Self::Count(c) => write!(f, "{c}"),
            Self::Fraction(x) => write!(f, "{x}"),
        }
    }
}

impl FromStr for MaxFeatures {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "sqrt" => Ok(Self::Sqrt),
            "log2" => Ok(Self::Log2),
            "all" => Ok(Self::All),
            t => {
                if let Ok(c) = t.parse::<usize>() {
                    if c == 0 {
                        return Err("max_features must be at least 1".into());
                    }
                    return Ok(Self::Count(c));
                }
                match t.parse::<f64>() {
                    Ok(x) if x > 0.0 && x <= 1.0 => Ok(Self::Fraction(x)),
                    _ => Err(format!(
                        "invalid max_features {t:?}: use sqrt, log2, all, a count, or a fraction in (0, 1]"
                    )),
                }
            }
        }
    }
}

impl TryFrom<String> for MaxFeatures {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MaxFeatures> for String {
    fn from(m: MaxFeatures) -> Self {
        m.to_string()
    }
}

/// Node impurity measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Gini impurity.
    Gini,
    /// Shannon entropy (information gain).
    Entropy,
}

/// Class weighting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ClassWeight {
    /// Every sample weighs 1.
    None,
    /// Weights inversely proportional to class frequency: n / (2 · n_class).
    Balanced,
    /// Frauds weigh this much, legitimate transactions 1.
    Fraud(f64),
}

impl fmt::Display for ClassWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Balanced => f.write_str("balanced"),
            Self::Fraud(w) => write!(f, "{w}"),
        }
    }
}

impl FromStr for ClassWeight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(Self::None),
            "balanced" => Ok(Self::Balanced),
            t => match t.parse::<f64>() {
                Ok(w) if w.is_finite() && w > 0.0 => Ok(Self::Fraud(w)),
                _ => Err(format!(
                    "invalid class_weight {t:?}: use none, balanced, or a positive fraud weight"
                )),
            },
        }
    }
}

impl TryFrom<String> for ClassWeight {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClassWeight> for String {
    fn from(c: ClassWeight) -> Self {
        c.to_string()
    }
}

/// Training hyper-parameters. The defaults match scikit-learn's
/// `RandomForestClassifier` where the two overlap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Number of trees.
    pub n_trees: usize,
    /// Maximum tree depth (root = 0); `None` grows until leaves are pure.
    pub max_depth: Option<usize>,
    /// Minimum (bootstrap-weighted) samples in a leaf.
    pub min_samples_leaf: usize,
    /// Minimum (bootstrap-weighted) samples for a node to be split.
    pub min_samples_split: usize,
    /// Features drawn per node.
    pub max_features: MaxFeatures,
    /// Impurity measure.
    pub criterion: Criterion,
    /// Class weighting.
    pub class_weight: ClassWeight,
    /// Sample rows with replacement (bootstrap) rather than without.
    pub bootstrap: bool,
    /// Rows drawn per tree, as a fraction of the training rows.
    pub sample_fraction: f64,
    /// Maximum bins per feature (2..=255).
    pub max_bins: usize,
    /// Seed; training is deterministic for a given seed and data.
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            max_depth: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            max_features: MaxFeatures::Sqrt,
            criterion: Criterion::Gini,
            class_weight: ClassWeight::None,
            bootstrap: true,
            sample_fraction: 1.0,
            max_bins: 255,
            seed: 42,
        }
    }
}

/// A hyper-parameter out of range; names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid hyper-parameter `{name}`: {message}")]
pub struct ParamError {
    /// The parameter's name.
    pub name: &'static str,
    /// What is wrong.
    pub message: String,
}

impl TrainParams {
    /// Check every parameter's range.
    pub fn validate(&self) -> Result<(), ParamError> {
        let bad = |name, message: &str| {
            Err(ParamError {
                name,
                message: message.into(),
            })
        };
        if self.n_trees == 0 || self.n_trees > 100_000 {
            return bad("n_trees", "must be between 1 and 100000");
        }
        if self.max_depth == Some(0) {
            return bad("max_depth", "must be at least 1");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf", "must be at least 1");
        }
        if self.min_samples_split < 2 {
            return bad("min_samples_split", "must be at least 2");
        }
        if !(self.sample_fraction > 0.0 && self.sample_fraction <= 1.0) {
            return bad("sample_fraction", "must be in (0, 1]");
        }
        if !(2..=255).contains(&self.max_bins) {
            return bad("max_bins", "must be between 2 and 255");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_features_resolves_like_sklearn() {
        assert_eq!(MaxFeatures::Sqrt.resolve(29), 5);
        assert_eq!(MaxFeatures::Log2.resolve(29), 4);
        assert_eq!(MaxFeatures::All.resolve(29), 29);
        assert_eq!(MaxFeatures::Count(50).resolve(29), 29);
        assert_eq!(MaxFeatures::Fraction(0.01).resolve(29), 1);
    }

    #[test]
    fn parse_and_print_round_trip() {
        for s in ["sqrt", "log2", "all", "7", "0.5"] {
            assert_eq!(s.parse::<MaxFeatures>().unwrap().to_string(), s);
        }
        for s in ["none", "balanced", "25"] {
            assert_eq!(s.parse::<ClassWeight>().unwrap().to_string(), s);
        }
        assert!("0".parse::<MaxFeatures>().is_err());
        assert!("-1".parse::<ClassWeight>().is_err());
    }

    #[test]
    fn validation_names_the_parameter() {
        let p = TrainParams {
            sample_fraction: 0.0,
            ..TrainParams::default()
        };
        assert_eq!(p.validate().unwrap_err().name, "sample_fraction");
        let p = TrainParams {
            max_bins: 256,
            ..TrainParams::default()
        };
        assert_eq!(p.validate().unwrap_err().name, "max_bins");
        assert!(TrainParams::default().validate().is_ok());
    }

    #[test]
    fn serde_uses_readable_strings() {
        let json = serde_json::to_value(TrainParams::default()).unwrap();
        assert_eq!(json["max_features"], "sqrt");
        assert_eq!(json["class_weight"], "none");
        assert_eq!(json["criterion"], "gini");
        let back: TrainParams = serde_json::from_value(json).unwrap();
        assert_eq!(back, TrainParams::default());
    }
}
