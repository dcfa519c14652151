//! The shared entity-state store: Redis (or Valkey), one server or a cluster, used by
//! every detector of a group.
//!
//! Keys, under a prefix (`velocity.redis.prefix`), on one server (`redis://`):
//! - `{p}:e:{c|t}:{id}`, one hash per entity: a field `b<bucket>` per bucket holding
//!   `"<count> <frauds> <sum of amounts>"` (the sum written with 17 significant digits, so
//!   it reads back as the exact `f64`), and `lo` (the oldest bucket kept); the key expires
//!   a horizon after its last update, and each update deletes the buckets before the
//!   engine's watermark allows (up to 64 walked from `lo`, or one pass over the hash when
//!   `lo` is further behind), so a busy entity's hash stays bounded too. (Earlier versions kept three
//!   fields per bucket, `c<bucket>`, `f<bucket>` and `s<bucket>`: a read adds them to the
//!   bucket's one field, and they age out like it. One field per bucket is a third of the
//!   fields to store, send and parse.)
//! - `{p}:s:{tx id}`: the features served for a transaction (little-endian `f32`s),
//!   kept `velocity.redis.served_ttl`;
//! - `{p}:l:{tx id}`: a label already counted, kept as long.
//!
//! A Lua script sets each transaction's `{p}:s:{id}` only if absent and, only then,
//! counts the transaction in its entities' buckets (a script runs whole, so nothing
//! interleaves): a transaction is counted once and entirely, whichever detector commits
//! it and however often (a redelivery after a kill -9, a rebalance). One call covers up to
//! 64 transactions. Labels work the same way, a call each. A transaction taken back (held
//! ahead of the watermark and not followed: `crate::velocity::clock`) goes in one call:
//! its marker is deleted and, only if it was there, its counts are subtracted. Each batch is one pipelined
//! round trip per store method. A connection error drops the connection: the engine retries the batch
//! with backoff (nothing of a failed batch was recorded that a retry would record twice,
//! thanks to the per-id guards).
//!
//! On a cluster (`redis+cluster://host:port,…`) the same hashes are keyed under the hash
//! tag of the entity's group (one of 256), and each entity's update is made idempotent
//! on its own, by a marker per entity and transaction in the entity's slot: [`cluster`].

mod cluster;
mod scripts;
mod single;

use std::time::Duration;

use redis::{ConnectionLike, RedisResult, Value};

use super::store::{Commit, Key, Label};
use super::{Bucket, Entity, StateStore, StoreError, StoreStats};

/// Where and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` for one server, `redis+cluster://host:port,host:port` for a
    /// cluster (any of its nodes; a secret when it carries a password).
    pub url: String,
    /// Key prefix, so groups (or tests) can share a server.
    pub prefix: String,
    /// How long a transaction's served features (and a label's marker) are kept: the
    /// longest a redelivery can come after the first delivery and still count once.
    pub served_ttl: Duration,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
    /// Replicas that must acknowledge a batch's writes (`WAIT`) before it counts as
    /// stored; 0 for none.
    pub wait_replicas: u32,
}

/// Whether `url` names a cluster (`redis+cluster://`).
#[must_use]
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://")
}

/// The scripts, and their SHA-1s (`EVALSHA`).
struct Scripts {
    code: [&'static str; 3],
    sha: [String; 3],
}

impl Scripts {
    fn new(code: [&'static str; 3]) -> Self {
        Self {
            code,
            sha: code.map(|c| redis::Script::new(c).get_hash().to_owned()),
        }
    }

    /// Load them on the server (on a cluster, on every node).
    fn load(&self, c: &mut dyn ConnectionLike) -> RedisResult<()> {
        for code in self.code {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(code)
                .query::<Value>(c)?;
        }
        Ok(())
    }
}

/// What both layouts need to know.
struct Shared {
    settings: RedisSettings,
    /// Buckets kept: the spec's horizon.
    horizon: i64,
    /// The bucket width in seconds (for TTLs).
    bucket_secs: u64,
    /// Buckets before this are trimmed (the engine's watermark sets it).
    keep_from: i64,
}

impl Shared {
    fn entity_ttl(&self) -> u64 {
        (self.horizon.max(1) as u64 + 1) * self.bucket_secs
    }

    fn served_ttl(&self) -> u64 {
        self.settings.served_ttl.as_secs().max(1)
    }

    /// After writes on `c`: wait until `wait_replicas` replicas hold them (`WAIT`; on a
    /// cluster every master is asked, and the fewest counts). Too few is an error: the
    /// batch is retried, and its guards make the retry count nothing twice.
    fn wait_replicas(&self, c: &mut dyn ConnectionLike) -> RedisResult<()> {
        let want = self.settings.wait_replicas;
        if want == 0 {
            return Ok(());
        }
        // Half the answer timeout: the answer must come back within it.
        let ms = u64::try_from(self.settings.timeout.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        let got: i64 = redis::cmd("WAIT").arg(want).arg(ms).query(c)?;
        if got < i64::from(want) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "too few replicas acknowledged the writes",
                format!("{got} of the {want} velocity.redis.wait_replicas asks for"),
            )));
        }
        Ok(())
    }
}

fn entity_letter(e: Entity) -> char {
    match e {
        Entity::CardId => 'c',
        Entity::TerminalId => 't',
    }
}

/// One server or a cluster (boxed: a connection is large, and the store is made once).
enum Backend {
    Single(Box<single::Single>),
    Cluster(Box<cluster::Cluster>),
}

/// Entity state in Redis.
pub struct RedisStore {
    shared: Shared,
    backend: Backend,
    commits: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.settings.prefix)
            .field("cluster", &matches!(self.backend, Backend::Cluster(_)))
            .finish_non_exhaustive()
    }
}

fn err(e: &redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// A store on `settings` for a spec keeping `horizon` buckets of `bucket_secs`. It
    /// connects on first use (and again after any error).
    pub fn new(
        settings: RedisSettings,
        horizon: i64,
        bucket_secs: u64,
    ) -> Result<Self, StoreError> {
        let backend = if is_cluster_url(&settings.url) {
            Backend::Cluster(Box::new(cluster::Cluster::new(&settings.url)?))
        } else {
            Backend::Single(Box::new(single::Single::new(&settings.url)?))
        };
        Ok(Self {
            shared: Shared {
                settings,
                horizon,
                bucket_secs,
                keep_from: i64::MIN,
            },
            backend,
            commits: 0,
        })
    }

    /// Check that the server answers (for start-up).
    pub fn ping(&mut self) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Single(b) => b.ping(&self.shared),
            Backend::Cluster(b) => b.ping(&self.shared),
        }
    }
}

/// Buckets from a hash's fields: `b<b>` (`"<count> <frauds> <sum>"`), or an earlier
/// version's `c<b>`, `f<b>`, `s<b>`; `lo` and anything else skipped.
fn parse_buckets<'a>(fields: impl IntoIterator<Item = Field<'a>>, since: i64) -> Vec<Bucket> {
    fn num<T: std::str::FromStr + Default>(b: &[u8]) -> T {
        std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_default()
    }
    let mut by: std::collections::BTreeMap<i64, Bucket> = std::collections::BTreeMap::new();
    for (name, value) in fields {
        let Some((&kind, idx)) = name.split_first() else {
            continue;
        };
        let Some(idx) = std::str::from_utf8(idx)
            .ok()
            .and_then(|i| i.parse::<i64>().ok())
        else {
            continue;
        };
        if idx < since {
            continue;
        }
        let b = by.entry(idx).or_insert(Bucket {
            idx,
            ..Bucket::default()
        });
        match kind {
            b'b' => {
                let mut parts = value.split(|&c| c == b' ');
                let mut next = || parts.next().unwrap_or_default();
                b.count += num::<u32>(next());
                b.frauds += num::<u32>(next());
                b.sum += num::<f64>(next());
            }
            b'c' => b.count += num::<u32>(value),
            b'f' => b.frauds += num::<u32>(value),
            b's' => b.sum += num::<f64>(value),
            _ => {}
        }
    }
    by.into_values().collect()
}

/// A hash field's name and value, as bytes.
type Field<'a> = (&'a [u8], &'a [u8]);

/// A hash's field/value pairs from an `HGETALL` reply (RESP2 array or RESP3 map), read in
/// place, without a string per field.
fn hash_fields(reply: &Value) -> Result<Vec<Field<'_>>, StoreError> {
    fn bytes(v: &Value) -> Option<&[u8]> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    match reply {
        Value::Array(items) => Ok(items
            .chunks_exact(2)
            .filter_map(|p| Some((bytes(&p[0])?, bytes(&p[1])?)))
            .collect()),
        Value::Map(pairs) => Ok(pairs
            .iter()
            .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
            .collect()),
        Value::Nil => Ok(Vec::new()),
        Value::ServerError(e) => Err(StoreError(format!("redis: HGETALL: {e:?}"))),
        other => Err(StoreError(format!(
            "redis: HGETALL answered {other:?}, not a hash"
        ))),
    }
}

impl StateStore for RedisStore {
    fn served(&mut self, tx_ids: &[&str]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        if tx_ids.is_empty() {
            return Ok(Vec::new());
        }
        match &mut self.backend {
            Backend::Single(b) => {
                let p = &self.shared.settings.prefix;
                let keys: Vec<String> = tx_ids.iter().map(|id| format!("{p}:s:{id}")).collect();
                let values = b.served(&self.shared, &keys)?;
                Ok(values
                    .into_iter()
                    .map(|v| v.map(|bytes| single::features(&bytes)))
                    .collect())
            }
            Backend::Cluster(b) => b.served(&self.shared, tx_ids),
        }
    }

    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let p = &self.shared.settings.prefix;
        let hashes = match &mut self.backend {
            Backend::Single(b) => {
                let names: Vec<String> = keys.iter().map(|&k| single::entity_key(p, k)).collect();
                b.hashes(&self.shared, &names)?
            }
            Backend::Cluster(b) => {
                let names: Vec<String> = keys.iter().map(|&k| cluster::entity_key(p, k)).collect();
                b.hashes(&self.shared, &names)?
            }
        };
        hashes
            .iter()
            .map(|h| Ok(parse_buckets(hash_fields(h)?, since)))
            .collect()
    }

    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        if txs.is_empty() {
            return Ok(());
        }
        match &mut self.backend {
            Backend::Single(b) => b.commit(&self.shared, txs)?,
            Backend::Cluster(b) => b.commit(&self.shared, txs)?,
        }
        self.commits += txs.len() as u64;
        Ok(())
    }

    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
        if labels.is_empty() {
            return Ok(0);
        }
        match &mut self.backend {
            Backend::Single(b) => b.label(&self.shared, labels),
            Backend::Cluster(b) => b.label(&self.shared, labels),
        }
    }

    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError> {
        if txs.is_empty() {
            return Ok(0);
        }
        match &mut self.backend {
            Backend::Single(b) => b.uncount(&self.shared, txs),
            Backend::Cluster(b) => b.uncount(&self.shared, txs),
        }
    }

    fn expire_before(&mut self, bucket: i64) {
        self.shared.keep_from = self.shared.keep_from.max(bucket);
    }

    fn stats(&self) -> StoreStats {
        // Sizes live on the server (`INFO memory`, `DBSIZE`); this process knows what it
        // committed.
        StoreStats {
            served: self.commits,
            ..StoreStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Field<'a>> {
        pairs
            .iter()
            .map(|&(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn hash_fields_become_sorted_buckets() {
        let b = parse_buckets(
            fields(&[
                ("b12", "2 1 10.5"),
                ("b9", "1 0 0.10000000000000001"),
                ("lo", "9"),
                ("b3", "7 0 1"),
            ]),
            5,
        );
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].idx, b[0].count, b[0].sum), (9, 1, 0.1));
        assert_eq!(
            (b[1].idx, b[1].count, b[1].frauds, b[1].sum),
            (12, 2, 1, 10.5)
        );
    }

    #[test]
    fn an_earlier_versions_three_fields_still_read() {
        let b = parse_buckets(
            fields(&[
                ("c12", "2"),
                ("s12", "10.5"),
                ("c9", "1"),
                ("f12", "1"),
                ("lo", "9"),
                ("c3", "7"),
                ("b13", "1 0 2.5"),
            ]),
            5,
        );
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].idx, b[0].count, b[0].sum), (9, 1, 0.0));
        assert_eq!(
            (b[1].idx, b[1].count, b[1].frauds, b[1].sum),
            (12, 2, 1, 10.5)
        );
        assert_eq!((b[2].idx, b[2].count, b[2].sum), (13, 1, 2.5));
    }
}
