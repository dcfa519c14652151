//! `[s3]`: how to reach S3 (the bucket and prefix come from each `s3://` location).

use serde::{Deserialize, Serialize};

use super::S3Settings;
use crate::aws::AwsConnection;
use crate::validate::{Invalid, UnknownKeys, Validate};

/// How to reach S3 (the bucket and prefix come from each `s3://` location).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Access {
    /// Region, endpoint and credentials (`region`, `endpoint`, `access_key_id`,
    /// `secret_access_key`).
    #[serde(flatten)]
    pub connection: AwsConnection,
    /// Path-style addressing (needed by most local servers).
    pub force_path_style: bool,
    /// Keys neither of the above knows (refused by validation).
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownKeys,
}

impl Default for S3Access {
    fn default() -> Self {
        Self {
            connection: AwsConnection::default(),
            force_path_style: true,
            unknown: UnknownKeys::default(),
        }
    }
}

impl S3Access {
    /// Settings for one bucket and prefix.
    #[must_use]
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            force_path_style: self.force_path_style,
            ..S3Settings::new(bucket, prefix, self.connection.clone())
        }
    }
}

impl Validate for S3Access {
    fn validate(&self) -> Result<(), Invalid> {
        self.unknown.refuse()
    }
}
