//! What the S3 and DynamoDB clients share: SDK configuration and error messages.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

use crate::storage::url::Secret;

/// Where and how to connect to an AWS service (or a local stand-in).
pub struct Connection<'a> {
    /// Region.
    pub region: &'a str,
    /// Endpoint URL for local servers; `None` for AWS.
    pub endpoint: Option<&'a str>,
    /// Static credentials; `None` uses the AWS default chain.
    pub credentials: Option<(&'a str, &'a Secret)>,
    /// Time allowed for one attempt of one operation.
    pub attempt_timeout: Duration,
    /// The SDK's own retries.
    pub retry: RetryConfig,
}

/// Build an SDK configuration: a 3 s connect timeout, the given attempt timeout and retry
/// configuration, a static credentials provider when credentials are given.
pub async fn sdk_config(c: &Connection<'_>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(c.region.to_owned()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(c.attempt_timeout)
                .build(),
        )
        .retry_config(c.retry.clone());
    if let Some((id, secret)) = c.credentials {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "fraudstream-config",
        ));
    }
    if let Some(ep) = c.endpoint {
        loader = loader.endpoint_url(ep);
    }
    loader.load().await
}

/// An error and its sources on one line (the SDK's top-level messages are terse).
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
