//! Alerts POSTed to an HTTP(S) endpoint: one request per alert (a JSON array holding
//! it), in order, each with `Idempotency-Key: <transaction id>` on every attempt (the
//! Stripe convention), with retries and backoff on connection errors, timeouts, 429 and
//! 5xx. A webhook cannot be exactly once without the receiver: an alert delivered again
//! (a retry whose answer was lost, a batch redelivered after a crash) carries the same
//! key, so a receiver that remembers keys sees it once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::WebhookConfig;
use super::{AlertError, AlertSink, MonitoringAlert};
use crate::model::Verdict;
use crate::retry::{RetryPolicy, Retryable, retry};

/// The webhook alert sink.
pub struct Webhook {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: hyper::Uri,
    /// Scheme and authority only: the path and query of a Slack-style hook are a secret.
    name: String,
    config: WebhookConfig,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No answer: connection refused or reset, or the timeout passed.
    #[error("{url}: {message}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What happened.
        message: String,
    },
    /// The endpoint answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl Retryable for WebhookError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

impl Webhook {
    /// A sink for `config` (the URL was validated with the configuration).
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        let uri: hyper::Uri =
            config
                .url
                .expose()
                .parse()
                .map_err(|e| WebhookError::Unreachable {
                    url: "alerts.webhook.url".into(),
                    message: format!("not a valid URL: {e}"),
                })?;
        let name = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority()
                .map_or("", hyper::http::uri::Authority::as_str)
        );
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| WebhookError::Unreachable {
                url: name.clone(),
                message: format!("loading the system's root certificates: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        // The sink's own retry loop counts every attempt (`attempts` is a promise to the
        // endpoint's owner): the client must not re-send a request on a new connection
        // behind it when a pooled one turns out to be closed.
        let client = Client::builder(TokioExecutor::new())
            .retry_canceled_requests(false)
            .build(https);
        Ok(Self {
            client,
            uri,
            name,
            config,
        })
    }

    async fn post(&self, idempotency_key: &str, body: Bytes) -> Result<(), WebhookError> {
        let url = self.name.clone();
        let unreachable = |message: String| WebhookError::Unreachable {
            url: url.clone(),
            message,
        };
        let mut req = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("fraudstream/", env!("CARGO_PKG_VERSION")),
            )
            .header("Idempotency-Key", header_safe(idempotency_key));
        for (k, v) in &self.config.headers {
            req = req.header(k.as_str(), v.expose());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| unreachable(format!("building the request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(crate::aws::error_chain(&e)))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the response: {e}")))?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err(WebhookError::Status {
                    url: url.clone(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                })
            }
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.config.timeout)))?
    }
}

/// A transaction id as a header value: visible ASCII as it is, every other byte
/// percent-encoded (`%` too), so that any id makes a valid, unique header instead of a
/// request that can never be built.
fn header_safe(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait::async_trait]
impl AlertSink for Webhook {
    fn describe(&self) -> String {
        format!("webhook {}", self.name)
    }

    /// One request per alert, in order; the first failure ends the batch (delivery
    /// sends it again, or halves it to find a refused alert: the receiver sees the alerts
    /// already accepted again, under their keys).
    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
        self.post_each(&super::encode_verdicts(self, alerts)?).await
    }

    async fn send_monitoring(&self, alert: &MonitoringAlert) -> Result<(), AlertError> {
        self.post_each(&super::encode_monitoring(self, alert)?)
            .await
    }
}

impl Webhook {
    /// POST each (key, JSON) pair as a one-element JSON array, keyed by `Idempotency-Key`.
    async fn post_each(&self, items: &[(String, String)]) -> Result<(), AlertError> {
        let policy = RetryPolicy {
            max_attempts: self.config.attempts,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        };
        for (key, json) in items {
            let body = Bytes::from(format!("[{json}]"));
            retry(policy, "webhook", || self.post(key, body.clone()))
                .await
                .map_err(|e| {
                    let (sink, message) = (self.describe(), e.to_string());
                    if e.is_retryable() {
                        AlertError::Unavailable { sink, message }
                    } else {
                        AlertError::Refused { sink, message }
                    }
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn any_transaction_id_makes_a_valid_idempotency_key() {
        for id in ["tx-1", "a b", "é\r\nX-Evil: 1", "50%", "\u{0}"] {
            let key = header_safe(id);
            assert!(
                hyper::header::HeaderValue::from_str(&key).is_ok(),
                "{id:?} -> {key}"
            );
        }
        assert_eq!(header_safe("tx-1"), "tx-1");
        assert_eq!(header_safe("a b%"), "a%20b%25");
        assert_ne!(
            header_safe("a b"),
            header_safe("a%20b"),
            "distinct ids, distinct keys"
        );
    }
}
