//! `[monitoring]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{Invalid, Validate};

/// `[monitoring]`: drift of the live data from the serving model's training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Count live values against the model's reference (recorded in its manifest at
    /// training time). A model without one is reported as having no reference.
    pub enabled: bool,
    /// The sliding window, in transactions.
    pub window: u64,
    /// The sliding window as a span of time instead (`"1h"`); unset: `window`
    /// transactions.
    #[serde(default, with = "humantime_serde::option")]
    pub window_span: Option<Duration>,
    /// Fewest transactions in the window before a drift state is given.
    pub min_rows: u64,
    /// PSI from which a variable has drifted moderately.
    pub moderate: f64,
    /// PSI from which it has drifted significantly.
    pub significant: f64,
    /// The band that raises a drift alert: `"moderate"` or `"significant"`.
    pub alert_band: String,
    /// How long a variable must stay at or above `alert_band` before a drift alert is
    /// raised (once; again after it has come back below).
    #[serde(with = "humantime_serde")]
    pub alert_after: Duration,
    /// Features not monitored (by name).
    pub skip: Vec<String>,
    /// How often the drift is computed, exported and checked for alerts.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 10_000,
            window_span: None,
            min_rows: 1_000,
            moderate: 0.1,
            significant: 0.25,
            alert_band: "significant".into(),
            alert_after: Duration::from_secs(300),
            skip: Vec::new(),
            interval: Duration::from_secs(1),
        }
    }
}

impl MonitoringConfig {
    /// The PSI bands.
    #[must_use]
    pub fn bands(&self) -> crate::monitor::Bands {
        crate::monitor::Bands {
            moderate: self.moderate,
            significant: self.significant,
        }
    }

    /// The band that raises an alert.
    #[must_use]
    pub fn alert_state(&self) -> crate::monitor::DriftState {
        if self.alert_band == "moderate" {
            crate::monitor::DriftState::Moderate
        } else {
            crate::monitor::DriftState::Significant
        }
    }

    /// The sliding window.
    #[must_use]
    pub fn live_window(&self) -> crate::monitor::Window {
        match self.window_span {
            Some(span) => crate::monitor::Window::Span(span.as_millis() as u64),
            None => crate::monitor::Window::Rows(self.window),
        }
    }
}

impl Validate for MonitoringConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.window < 10 {
            return Err(Invalid::new("window", "must be at least 10 transactions"));
        }
        if self.window_span.is_some_and(|s| s < Duration::from_secs(1)) {
            return Err(Invalid::new("window_span", "must be at least 1s"));
        }
        if !(self.moderate > 0.0 && self.moderate.is_finite()) {
            return Err(Invalid::new("moderate", "must be a PSI above 0"));
        }
        if !(self.significant > self.moderate && self.significant.is_finite()) {
            return Err(Invalid::new("significant", "must be above moderate"));
        }
        if !matches!(self.alert_band.as_str(), "moderate" | "significant") {
            return Err(Invalid::new(
                "alert_band",
                format!("{:?}: use \"moderate\" or \"significant\"", self.alert_band),
            ));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(Invalid::new("interval", "must be at least 100ms"));
        }
        Ok(())
    }
}
