//! AWS connections: the one [`AwsConnection`] type (region, endpoint, credentials) that
//! the S3 store and the DynamoDB verdict store both take, its SDK configuration, and
//! error messages. Config sections embed it flattened, so `[s3]` and
//! `[verdicts.dynamodb]` keep their `region`, `endpoint`, `access_key_id` and
//! `secret_access_key` keys.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where and as whom to connect to an AWS service (or a local stand-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsConnection {
    /// Region.
    pub region: String,
    /// Endpoint URL for local or compatible servers (SeaweedFS, MinIO, DynamoDB Local);
    /// unset for AWS itself.
    pub endpoint: Option<String>,
    /// Access key id; with `secret_access_key`, overrides the AWS default credential
    /// chain (environment, profile, instance metadata).
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
}

impl Default for AwsConnection {
    fn default() -> Self {
        Self {
            region: DEFAULT_REGION.into(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl AwsConnection {
    /// The endpoint for messages: the configured one, or AWS's for `service`.
    #[must_use]
    pub fn endpoint_name(&self, service: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("{service}.{}.amazonaws.com", self.region))
    }

    /// An SDK configuration: a 3 s connect timeout, the given attempt timeout and retry
    /// configuration, static credentials when both parts are configured.
    pub async fn sdk_config(&self, attempt_timeout: Duration, retry: RetryConfig) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .retry_config(retry);
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "fraudstream-config",
            ));
        }
        if let Some(ep) = &self.endpoint {
            loader = loader.endpoint_url(ep);
        }
        loader.load().await
    }
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
