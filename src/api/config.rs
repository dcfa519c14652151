//! `[api]`: the HTTP server of a detector (`fraudstream run`) or an API replica
//! (`fraudstream serve`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::validate::{Invalid, Validate, in_range};

/// The HTTP API and dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve it.
    pub enabled: bool,
    /// Address to bind: loopback by default (`127.0.0.1:0` picks a free port, printed).
    /// Any other address needs `tokens`.
    pub address: String,
    /// Bearer tokens, any of which grants access (`Authorization: Bearer <token>`, or
    /// `?access_token=` for the dashboard's event stream). Empty: no authentication
    /// (loopback only).
    pub tokens: Vec<Secret>,
    /// Allow `POST /v1/models/{version}/promote` and `POST /v1/models/rollback`.
    pub admin: bool,
    /// Most transactions in one `POST /v1/score`.
    pub max_batch: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Requests handled at once; more are answered 429 with `Retry-After`.
    pub concurrency: usize,
    /// Longest a request may take before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Event streams (`/v1/events`, `/v1/alerts/stream`) open at once; more are
    /// answered 503 with `Retry-After`. Each holds a connection and a task for as long
    /// as its client stays.
    pub max_event_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: "127.0.0.1:9464".into(),
            tokens: Vec::new(),
            admin: false,
            max_batch: 1000,
            max_body_bytes: 4 << 20,
            concurrency: 256,
            request_timeout: Duration::from_secs(10),
            max_event_streams: 64,
        }
    }
}

impl ApiConfig {
    /// Whether `address` binds only the loopback interface.
    #[must_use]
    pub fn is_loopback(&self) -> bool {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl Validate for ApiConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled {
            return Ok(());
        }
        let port_ok = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(Invalid::new(
                "address",
                format!("{:?}: use host:port, such as 127.0.0.1:9464", self.address),
            ));
        }
        if !self.is_loopback() && self.tokens.is_empty() {
            return Err(Invalid::new(
                "tokens",
                format!(
                    "required when api.address ({}) is not loopback: the API scores, reads verdicts and (with admin) moves models",
                    self.address
                ),
            ));
        }
        if self.tokens.iter().any(|t| t.expose().len() < 16) {
            return Err(Invalid::new(
                "tokens",
                "each token needs at least 16 characters",
            ));
        }
        in_range("max_batch", self.max_batch, 1..=100_000)?;
        in_range("concurrency", self.concurrency, 1..=100_000)?;
        in_range("max_event_streams", self.max_event_streams, 1..=100_000)?;
        if self.max_body_bytes < 1024 {
            return Err(Invalid::new("max_body_bytes", "must be at least 1024"));
        }
        if self.request_timeout.is_zero() {
            return Err(Invalid::new("request_timeout", "must be above 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_required_off_loopback() {
        let mut c = ApiConfig::default();
        c.validate().unwrap();
        c.address = "0.0.0.0:8080".into();
        assert_eq!(c.validate().unwrap_err().key, "tokens");
        c.tokens = vec![Secret::new("0123456789abcdef")];
        c.validate().unwrap();
        c.tokens = vec![Secret::new("short")];
        assert_eq!(c.validate().unwrap_err().key, "tokens");
        for loopback in ["127.0.0.1:0", "[::1]:9", "localhost:80"] {
            let c = ApiConfig {
                address: loopback.into(),
                ..ApiConfig::default()
            };
            assert!(c.is_loopback(), "{loopback}");
        }
    }
}
