//! S3 as a [`BlobStore`] (aws-sdk-s3).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::url::S3Settings;
use super::{Blob, BlobStore, Condition, ObjectInfo, StorageError, check_key};

/// Objects above this size are uploaded in parts of this size.
pub const MULTIPART_PART_SIZE: usize = 8 << 20;

/// A bucket (and optional key prefix) on S3 or an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl S3Store {
    /// Build a client from settings. Without explicit credentials, the AWS default chain
    /// (environment, profile, instance metadata) is used.
    pub async fn new(s: &S3Settings) -> Self {
        let sdk = s
            .connection
            .sdk_config(
                Duration::from_secs(60),
                aws_config::retry::RetryConfig::standard().with_max_attempts(3),
            )
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(s.force_path_style)
            .build();
        let prefix = s.prefix.trim_matches('/');
        Self {
            client: Client::from_conf(conf),
            bucket: s.bucket.clone(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: s.connection.endpoint_name("s3"),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Map an SDK error to a [`StorageError`] for `key`.
    fn error<E>(&self, key: &str, e: SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().unwrap_or_default().to_owned();
        match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                return StorageError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: crate::aws::error_chain(&e),
                };
            }
            SdkError::ConstructionFailure(_) => {
                return StorageError::Other {
                    store: self.describe(),
                    message: crate::aws::error_chain(&e),
                    retryable: false,
                };
            }
            _ => {}
        }
        match (status, code.as_str()) {
            (_, "NoSuchKey") | (Some(404), "" | "NotFound") => StorageError::NotFound {
                store: self.describe(),
                key: key.into(),
            },
            (_, "NoSuchBucket") => StorageError::NoContainer {
                store: self.describe(),
                message: code,
            },
            (_, "PreconditionFailed" | "ConditionalRequestConflict") | (Some(412), _) => {
                StorageError::PreconditionFailed {
                    store: self.describe(),
                    key: key.into(),
                }
            }
            (
                _,
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken",
            )
            | (Some(401 | 403), _) => StorageError::Denied {
                endpoint: self.endpoint.clone(),
                message: if code.is_empty() {
                    format!("HTTP {}", status.unwrap_or(403))
                } else {
                    code
                },
            },
            (s, c) => StorageError::Other {
                store: self.describe(),
                message: format!(
                    "{key}: HTTP {} {c}: {}",
                    s.unwrap_or(0),
                    crate::aws::error_chain(&e)
                ),
                retryable: s.is_none_or(|s| s >= 500 || s == 429)
                    || c.contains("Throttl")
                    || c == "SlowDown",
            },
        }
    }

    async fn put_multipart(&self, key: &str, full: &str, data: Bytes) -> Result<(), StorageError> {
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        let upload_id = up.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(MULTIPART_PART_SIZE).enumerate() {
                let n = i as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(data.slice_ref(chunk)))
                    .send()
                    .await
                    .map_err(|e| self.error(key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.error(key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Leave no orphaned parts behind; the original error is what matters.
            let _aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        if data.len() > MULTIPART_PART_SIZE {
            return self.put_multipart(key, &full, data).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn put_if(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition,
    ) -> Result<String, StorageError> {
        let full = self.full_key(key)?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(data));
        let req = match &condition {
            Condition::IfAbsent => req.if_none_match("*"),
            Condition::IfMatch(etag) => req.if_match(etag),
        };
        let out = req.send().await.map_err(|e| self.error(key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    async fn get(&self, key: &str) -> Result<Blob, StorageError> {
        // Without an entity tag there is no 304, so `None` cannot come back; treat it as
        // missing rather than trusting that.
        self.get_if_changed(key, None)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                store: self.describe(),
                key: key.into(),
            })
    }

    async fn get_if_changed(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<Blob>, StorageError> {
        let full = self.full_key(key)?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some(t) = etag {
            req = req.if_none_match(t);
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 304) => {
                return Ok(None);
            }
            Err(e) => return Err(self.error(key, e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Other {
                store: self.describe(),
                message: format!("{key}: reading body: {e}"),
                retryable: true,
            })?
            .into_bytes();
        Ok(Some(Blob { data, etag }))
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("", e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error(prefix, e))?;
            for o in resp.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(ObjectInfo {
                        key: k.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }
}
