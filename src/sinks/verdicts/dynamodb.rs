//! DynamoDB as the verdict store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{VerdictError, VerdictItem, VerdictStore, dedupe_last};
use crate::aws::AwsConnection;
use crate::metric_names as names;
use crate::model::scoring::Contribution;
use crate::retry::{RetryPolicy, retry};
use crate::rng::Rng;
use crate::validate::{Invalid, UnknownKeys, Validate};

/// DynamoDB's limit on items per BatchWriteItem call.
pub const BATCH_LIMIT: usize = 25;

/// How to reach the verdict table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamoSettings {
    /// Table name; its partition key is the string attribute `tx_id`.
    pub table: String,
    /// Region, endpoint (DynamoDB Local) and credentials.
    #[serde(flatten)]
    pub connection: AwsConnection,
    /// Create the table (on-demand billing) when it is missing.
    #[serde(default)]
    pub create_table: bool,
    /// Attribute holding the expiry (Unix seconds); TTL is enabled on tables we create.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
    /// BatchWriteItem calls (of up to 25 items) in flight at once for one batch.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Keys none of the above knows (refused by validation).
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownKeys,
}

impl DynamoSettings {
    /// Settings for `table` over `connection`, with the defaults.
    #[must_use]
    pub fn new(table: &str, connection: AwsConnection) -> Self {
        Self {
            table: table.into(),
            connection,
            create_table: false,
            ttl_attribute: None,
            concurrency: default_concurrency(),
            unknown: UnknownKeys::default(),
        }
    }
}

impl Validate for DynamoSettings {
    fn validate(&self) -> Result<(), Invalid> {
        self.unknown.refuse()?;
        if self.table.is_empty() {
            return Err(Invalid::new("table", "must not be empty"));
        }
        crate::validate::in_range("concurrency", self.concurrency, 1..=64)
    }
}

/// The default for [`DynamoSettings::concurrency`].
#[must_use]
pub fn default_concurrency() -> usize {
    4
}

/// Verdicts in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoVerdictStore {
    client: Client,
    table: String,
    endpoint: String,
    ttl_attribute: String,
    policy: RetryPolicy,
    concurrency: usize,
}

impl DynamoVerdictStore {
    /// Connect, check the table exists (creating it if configured), and wait until it is
    /// active. A server that is down gives an error naming the endpoint after a bounded
    /// retry.
    pub async fn connect(s: &DynamoSettings) -> Result<Self, VerdictError> {
        Self::connect_with(s, RetryPolicy::default()).await
    }

    /// [`DynamoVerdictStore::connect`] with a chosen retry policy.
    pub async fn connect_with(
        s: &DynamoSettings,
        policy: RetryPolicy,
    ) -> Result<Self, VerdictError> {
        // Our own retry loop decides; the SDK's would multiply attempts.
        let sdk = s
            .connection
            .sdk_config(
                Duration::from_secs(30),
                aws_config::retry::RetryConfig::disabled(),
            )
            .await;
        let store = Self {
            client: Client::new(&sdk),
            table: s.table.clone(),
            endpoint: s.connection.endpoint_name("dynamodb"),
            ttl_attribute: s.ttl_attribute.clone().unwrap_or_else(|| "ttl".into()),
            policy,
            concurrency: s.concurrency,
        };
        store
            .ensure_table(s.create_table, s.ttl_attribute.is_some())
            .await?;
        Ok(store)
    }

    fn error<E>(&self, e: SdkError<E, HttpResponse>) -> VerdictError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
            return VerdictError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: crate::aws::error_chain(&e),
            };
        }
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().unwrap_or_default().to_owned();
        match code.as_str() {
            "ResourceNotFoundException" => VerdictError::NoTable {
                table: self.table.clone(),
                endpoint: self.endpoint.clone(),
            },
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "AccessDeniedException"
            | "MissingAuthenticationTokenException"
            | "ExpiredTokenException" => VerdictError::Denied {
                endpoint: self.endpoint.clone(),
                message: code,
            },
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable" => VerdictError::Transient {
                endpoint: self.endpoint.clone(),
                message: code,
            },
            "ValidationException" => VerdictError::Invalid {
                store: self.describe(),
                message: crate::aws::error_chain(&e),
            },
            _ if status.is_none_or(|s| s >= 500) => VerdictError::Transient {
                endpoint: self.endpoint.clone(),
                message: format!(
                    "HTTP {}: {}",
                    status.unwrap_or(0),
                    crate::aws::error_chain(&e)
                ),
            },
            _ => VerdictError::Other {
                store: self.describe(),
                message: format!("{code}: {}", crate::aws::error_chain(&e)),
            },
        }
    }

    async fn ensure_table(&self, create: bool, ttl: bool) -> Result<(), VerdictError> {
        let described = retry(self.policy, "describe table", || async {
            self.client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.error(e))
        })
        .await;
        match described {
            Ok(d) => {
                let status = d.table().and_then(|t| t.table_status().cloned());
                if status != Some(TableStatus::Active) {
                    self.wait_active().await?;
                }
                Ok(())
            }
            Err(VerdictError::NoTable { .. }) if create => {
                let created = self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .billing_mode(BillingMode::PayPerRequest)
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name("tx_id")
                            .key_type(KeyType::Hash)
                            .build()
                            .map_err(|e| self.build_error(&e))?,
                    )
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("tx_id")
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(|e| self.build_error(&e))?,
                    )
                    .send()
                    .await;
                match created.map_err(|e| self.error(e)) {
                    // Another detector created it first: fine.
                    Ok(_) | Err(VerdictError::Other { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.wait_active().await?;
                if ttl {
                    let spec = TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(&self.ttl_attribute)
                        .build()
                        .map_err(|e| self.build_error(&e))?;
                    if let Err(e) = self
                        .client
                        .update_time_to_live()
                        .table_name(&self.table)
                        .time_to_live_specification(spec)
                        .send()
                        .await
                    {
                        tracing::warn!(table = %self.table, error = %self.error(e), "could not enable TTL");
                    }
                }
                tracing::info!(table = %self.table, endpoint = %self.endpoint, "created verdict table");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn wait_active(&self) -> Result<(), VerdictError> {
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.error(e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(VerdictError::Transient {
            endpoint: self.endpoint.clone(),
            message: format!("table {} did not become active", self.table),
        })
    }

    fn build_error(&self, e: &dyn std::fmt::Display) -> VerdictError {
        VerdictError::Other {
            store: self.describe(),
            message: e.to_string(),
        }
    }

    fn to_item(&self, it: &VerdictItem) -> HashMap<String, AttributeValue> {
        item_of(it, &self.ttl_attribute)
    }

    fn parse_item(&self, m: &HashMap<String, AttributeValue>) -> Result<VerdictItem, VerdictError> {
        let bad = |field: &str| VerdictError::Other {
            store: self.describe(),
            message: format!("item has no valid `{field}`"),
        };
        let s = |k: &str| {
            m.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| bad(k))
        };
        let n = |k: &str| {
            m.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| bad(k))
        };
        let top = match m.get("top_features") {
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|v| {
                    let mm = v.as_m().map_err(|_| bad("top_features"))?;
                    Ok(Contribution {
                        feature: mm
                            .get("feature")
                            .and_then(|f| f.as_s().ok())
                            .cloned()
                            .ok_or_else(|| bad("top_features.feature"))?
                            .into(),
                        contribution: mm
                            .get("contribution")
                            .and_then(|c| c.as_n().ok())
                            .and_then(|c| c.parse().ok())
                            .ok_or_else(|| bad("top_features.contribution"))?,
                    })
                })
                .collect::<Result<_, VerdictError>>()?,
            _ => Vec::new(),
        };
        let fraud = m
            .get("fraud")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| bad("fraud"))?;
        // Items written before decisions: the outcome the model's rule implies.
        let (implied, implied_by) = VerdictItem::implied_outcome(fraud);
        let outcome = match m.get("outcome") {
            Some(v) => v
                .as_s()
                .ok()
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| bad("outcome"))?,
            None => implied,
        };
        let rules = match m.get("rules") {
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|r| {
                    r.as_s()
                        .map(|s| Arc::from(s.as_str()))
                        .map_err(|_| bad("rules"))
                })
                .collect::<Result<_, VerdictError>>()?,
            _ => Vec::new(),
        };
        Ok(VerdictItem {
            tx_id: s("tx_id")?,
            score: n("score")? as f32,
            fraud,
            threshold: n("threshold")?,
            model_version: s("model_version")?.into(),
            scored_at: s("scored_at")?.into(),
            top_features: top,
            ttl: n(&self.ttl_attribute).ok().map(|t| t as i64),
            outcome,
            decided_by: s("decided_by").map_or(implied_by, Arc::from),
            rules,
            rule_set: s("rule_set").ok().map(Arc::from),
        })
    }

    /// Put `it` unless its id has an item that has not expired by `now` (Unix seconds);
    /// whether it was written.
    async fn put_if_new(&self, it: &VerdictItem, now: &str) -> Result<bool, VerdictError> {
        retry(self.policy, "conditional put", || async {
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.to_item(it)))
                .condition_expression("attribute_not_exists(tx_id) OR #ttl < :now")
                .expression_attribute_names("#ttl", &self.ttl_attribute)
                .expression_attribute_values(":now", AttributeValue::N(now.to_owned()))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error(e)),
            }
        })
        .await
    }

    /// Write one chunk; when DynamoDB refuses the request as invalid, write its items one
    /// by one to find those it refuses. Returns the refused ids with the reason.
    async fn write_chunk_isolating(
        &self,
        chunk: &[&VerdictItem],
    ) -> Result<Vec<(String, String)>, VerdictError> {
        match self.write_chunk(chunk).await {
            Ok(()) => Ok(Vec::new()),
            Err(VerdictError::Invalid { .. }) => {
                let mut refused = Vec::new();
                for it in chunk {
                    match self.write_chunk(&[*it]).await {
                        Ok(()) => {}
                        Err(VerdictError::Invalid { message, .. }) => {
                            refused.push((it.tx_id.clone(), message));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(refused)
            }
            Err(e) => Err(e),
        }
    }

    /// Write one chunk of at most 25 distinct items, resubmitting unprocessed items with
    /// exponential backoff and jitter.
    async fn write_chunk(&self, chunk: &[&VerdictItem]) -> Result<(), VerdictError> {
        let mut pending: Vec<WriteRequest> = chunk
            .iter()
            .map(|it| {
                PutRequest::builder()
                    .set_item(Some(self.to_item(it)))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| self.build_error(&e))
            })
            .collect::<Result<_, _>>()?;
        let mut rng = Rng::new(pending.len() as u64 ^ 0x5eed);
        for attempt in 1..=self.policy.max_attempts {
            let out = retry(self.policy, "batch write", || async {
                self.client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| self.error(e))
            })
            .await?;
            pending = out
                .unprocessed_items()
                .and_then(|u| u.get(&self.table))
                .cloned()
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            metrics::counter!(names::VERDICT_UNPROCESSED_ITEMS).increment(pending.len() as u64);
            tokio::time::sleep(self.policy.delay(attempt, &mut rng)).await;
        }
        Err(VerdictError::Unprocessed {
            endpoint: self.endpoint.clone(),
            count: pending.len(),
            attempts: self.policy.max_attempts,
        })
    }
}

#[async_trait]
impl VerdictStore for DynamoVerdictStore {
    fn describe(&self) -> String {
        format!("dynamodb://{}/{}", self.endpoint, self.table)
    }

    async fn put_batch(&self, items: &[VerdictItem]) -> Result<(), VerdictError> {
        let unique = dedupe_last(items);
        // Chunks are independent puts of distinct keys: write several at once. On an
        // error the caller retries the whole batch, which rewrites the same items.
        let writes: Vec<_> = unique
            .chunks(BATCH_LIMIT)
            .map(|c| Box::pin(self.write_chunk_isolating(c)))
            .collect();
        let refused: Vec<Vec<(String, String)>> = stream::iter(writes)
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        let refused: Vec<(String, String)> = refused.into_iter().flatten().collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(VerdictError::Refused {
                store: self.describe(),
                refused,
            })
        }
    }

    async fn put_new(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError> {
        // One conditional PutItem per item (BatchWriteItem takes no conditions), several
        // at once.
        let now = crate::clock::now_secs().to_string();
        let puts: Vec<_> = items
            .iter()
            .map(|it| Box::pin(self.put_if_new(it, &now)))
            .collect();
        stream::iter(puts)
            .buffered(self.concurrency.max(1) * 4)
            .try_collect()
            .await
    }

    async fn delete(&self, tx_id: &str) -> Result<(), VerdictError> {
        retry(self.policy, "delete item", || async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("tx_id", AttributeValue::S(tx_id.to_owned()))
                .send()
                .await
                .map_err(|e| self.error(e))
        })
        .await
        .map(drop)
    }

    async fn get(&self, tx_id: &str) -> Result<Option<VerdictItem>, VerdictError> {
        let out = retry(self.policy, "get item", || async {
            self.client
                .get_item()
                .table_name(&self.table)
                .key("tx_id", AttributeValue::S(tx_id.to_owned()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.error(e))
        })
        .await?;
        out.item().map(|m| self.parse_item(m)).transpose()
    }
}

/// The DynamoDB item of a verdict, its expiry (if any) in `ttl_attribute`.
pub fn item_of(it: &VerdictItem, ttl_attribute: &str) -> HashMap<String, AttributeValue> {
    let top = it
        .top_features
        .iter()
        .map(|c| {
            AttributeValue::M(HashMap::from([
                (
                    "feature".to_owned(),
                    AttributeValue::S(c.feature.to_string()),
                ),
                (
                    "contribution".to_owned(),
                    AttributeValue::N(c.contribution.to_string()),
                ),
            ]))
        })
        .collect();
    let mut m = HashMap::from([
        ("tx_id".to_owned(), AttributeValue::S(it.tx_id.clone())),
        ("score".to_owned(), AttributeValue::N(it.score.to_string())),
        ("fraud".to_owned(), AttributeValue::Bool(it.fraud)),
        (
            "threshold".to_owned(),
            AttributeValue::N(it.threshold.to_string()),
        ),
        (
            "model_version".to_owned(),
            AttributeValue::S(it.model_version.to_string()),
        ),
        (
            "scored_at".to_owned(),
            AttributeValue::S(it.scored_at.to_string()),
        ),
        ("top_features".to_owned(), AttributeValue::L(top)),
        (
            "outcome".to_owned(),
            AttributeValue::S(it.outcome.as_str().to_owned()),
        ),
        (
            "decided_by".to_owned(),
            AttributeValue::S(it.decided_by.to_string()),
        ),
        (
            "rules".to_owned(),
            AttributeValue::L(
                it.rules
                    .iter()
                    .map(|r| AttributeValue::S(r.to_string()))
                    .collect(),
            ),
        ),
    ]);
    if let Some(v) = &it.rule_set {
        m.insert("rule_set".to_owned(), AttributeValue::S(v.to_string()));
    }
    if let Some(t) = it.ttl {
        m.insert(ttl_attribute.to_owned(), AttributeValue::N(t.to_string()));
    }
    m
}
