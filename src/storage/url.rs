//! Storage locations as URLs: `file:///dir` (or a plain path), `s3://bucket/prefix`,
//! `hdfs://namenode:port/dir`.

use std::sync::Arc;

use super::hdfs::HdfsStore;
use super::local::LocalStore;
use super::s3::S3Store;
use super::{BlobStore, StorageError};
use crate::aws::AwsConnection;

/// How to reach one bucket and prefix on S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Region, endpoint and credentials.
    pub connection: AwsConnection,
    /// Path-style addressing (needed by most local servers).
    pub force_path_style: bool,
}

impl S3Settings {
    /// `bucket`/`prefix` over `connection`, path-style.
    #[must_use]
    pub fn new(bucket: &str, prefix: &str, connection: AwsConnection) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into(),
            connection,
            force_path_style: true,
        }
    }
}

/// A parsed storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(String),
    /// A bucket and prefix.
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
    /// An HDFS NameNode URL and a directory.
    Hdfs {
        /// `hdfs://host:port`.
        url: String,
        /// Directory.
        path: String,
    },
}

impl Location {
    /// Parse `s3://bucket/prefix`, `hdfs://host:port/dir`, `file:///dir` or a plain path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{s}: no bucket"));
            }
            return Ok(Self::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some(rest) = s.strip_prefix("hdfs://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            if authority.is_empty() {
                return Err(format!("{s}: no NameNode host"));
            }
            return Ok(Self::Hdfs {
                url: format!("hdfs://{authority}"),
                path: format!("/{}", path.trim_matches('/')),
            });
        }
        if s.contains("://") && !s.starts_with("file://") {
            return Err(format!(
                "{s}: unsupported scheme (use file://, s3:// or hdfs://)"
            ));
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() {
            return Err("empty path".into());
        }
        Ok(Self::Local(path.into()))
    }
}

/// Open a store at `location`. `s3` supplies endpoint, region and credentials for `s3://`
/// locations (bucket and prefix come from the URL).
pub async fn open(
    location: &str,
    s3: Option<&S3Settings>,
) -> Result<Arc<dyn BlobStore>, StorageError> {
    let bad = |message: String| StorageError::Other {
        store: location.into(),
        message,
        retryable: false,
    };
    Ok(match Location::parse(location).map_err(bad)? {
        Location::Local(dir) => Arc::new(LocalStore::new(dir)?),
        Location::S3 { bucket, prefix } => {
            let mut settings = s3
                .cloned()
                .unwrap_or_else(|| S3Settings::new("", "", AwsConnection::default()));
            settings.bucket = bucket;
            settings.prefix = prefix;
            Arc::new(S3Store::new(&settings).await)
        }
        Location::Hdfs { url, path } => Arc::new(HdfsStore::new(&url, &path, None)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("s3://b/models/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "models".into()
            }
        );
        assert_eq!(
            Location::parse("hdfs://127.0.0.1:8020/lake").unwrap(),
            Location::Hdfs {
                url: "hdfs://127.0.0.1:8020".into(),
                path: "/lake".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/x").unwrap(),
            Location::Local("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("out/lake").unwrap(),
            Location::Local("out/lake".into())
        );
        assert!(Location::parse("gs://x").is_err());
        assert!(Location::parse("s3:///x").is_err());
    }
}
