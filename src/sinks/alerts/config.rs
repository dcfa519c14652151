//! `[alerts]` and `[alerts.webhook]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{Invalid, Validate};

/// Alerts, on `review` and `block` outcomes (always also logged). Every sink configured
/// here is used, whatever the source; one that cannot be is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Append each alert as a JSON line to this file. Unset: `out/alerts.jsonl` with a
    /// file or stdin source, none with a Kafka source (whose alerts go to
    /// `kafka.alerts_topic`).
    pub file: Option<String>,
    /// Print each alert on stdout.
    pub stdout: bool,
    /// POST each batch of alerts (a JSON array) to this URL (`http://` or `https://`).
    pub webhook: Option<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            file: None,
            stdout: true,
            webhook: None,
        }
    }
}

/// The alert webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL; a secret (Slack-style hooks carry their token in the path): logs and
    /// errors show only its host.
    pub url: crate::secret::Secret,
    /// Per-request timeout (`5s`).
    #[serde(with = "humantime_serde", default = "default_webhook_timeout")]
    pub timeout: Duration,
    /// Attempts per batch before the sink reports a failure (then, when alerts are
    /// durable, the batch waits and tries again).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Extra request headers, such as `Authorization` (values are not logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::secret::Secret>,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_attempts() -> u32 {
    3
}

impl Validate for AlertsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let Some(w) = &self.webhook else {
            return Ok(());
        };
        let url = w.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Invalid::new(
                "webhook.url",
                "use an http:// or https:// URL",
            ));
        }
        if url.parse::<hyper::Uri>().is_err() {
            return Err(Invalid::new("webhook.url", "not a valid URL"));
        }
        if w.attempts == 0 {
            return Err(Invalid::new("webhook.attempts", "must be at least 1"));
        }
        if w.timeout.is_zero() {
            return Err(Invalid::new("webhook.timeout", "must be above 0"));
        }
        Ok(())
    }
}
