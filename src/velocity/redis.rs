//! The shared entity-state store: Redis (or Valkey), used by every detector of a group.
//!
//! Keys, under a prefix (`velocity.redis.prefix`):
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

use std::time::Duration;

use redis::{Client, Connection, Value};

use super::store::{Commit, Key, Label};
use super::{Bucket, Entity, StateStore, StoreError, StoreStats};

/// The scripts' shared function: bucket `b` of hash `k` (zeros when absent) and the
/// oldest bucket kept (`nil` when none), in one call.
macro_rules! read_bucket {
    () => {
        r"
local function read(k, b)
  local v = redis.call('HMGET', k, 'b' .. b, 'lo')
  local lo = tonumber(v[2])
  if not v[1] then return 0, 0, 0, lo end
  local c, f, s = string.match(v[1], '^(%S+) (%S+) (%S+)$')
  return tonumber(c) or 0, tonumber(f) or 0, tonumber(s) or 0, lo
end
"
    };
}

/// The commit script's trimming: delete the buckets of hash `k` before `oldest`, from its
/// oldest kept `lo`. Up to 64 a call, walking from `lo`; when `lo` is further behind than
/// that (an entity idle for days, or a far-past bucket counted before any watermark), one
/// pass over the hash's fields instead, so trimming always catches up in one call.
macro_rules! trim_buckets {
    () => {
        r"
local function trim(k, lo, oldest)
  if oldest - lo <= 64 then
    for x = lo, oldest - 1 do redis.call('HDEL', k, 'b' .. x, 'c' .. x, 'f' .. x, 's' .. x) end
    redis.call('HSET', k, 'lo', oldest)
    return
  end
  local keep = nil
  for _, f in ipairs(redis.call('HKEYS', k)) do
    local x = tonumber(string.sub(f, 2))
    if x and f ~= 'lo' then
      if x < oldest then redis.call('HDEL', k, f) elseif keep == nil or x < keep then keep = x end
    end
  end
  redis.call('HSET', k, 'lo', keep or oldest)
end
"
    };
}

/// Counts transactions, each once: KEYS = for each transaction its served marker, then
/// its entity hashes; ARGV = served TTL, oldest bucket kept, entity TTL, then for each
/// transaction its features, bucket, amount and number of entity hashes. One call per
/// chunk of a batch ([`COMMIT_CHUNK`]): the script's per-call cost is shared.
const COMMIT: &str = concat!(
    read_bucket!(),
    trim_buckets!(),
    r"
local served_ttl = ARGV[1]
local oldest = tonumber(ARGV[2])
local entity_ttl = ARGV[3]
local ki = 1
for ai = 4, #ARGV, 4 do
  local n = tonumber(ARGV[ai + 3])
  if redis.call('SET', KEYS[ki], ARGV[ai], 'NX', 'EX', served_ttl) then
    local b = tonumber(ARGV[ai + 1])
    local amount = tonumber(ARGV[ai + 2])
    for j = ki + 1, ki + n do
      local k = KEYS[j]
      local c, f, s, lo = read(k, b)
      local v = string.format('%d %d %.17g', c + 1, f, s + amount)
      if lo == nil or b < lo then
        redis.call('HSET', k, 'b' .. b, v, 'lo', b)
      else
        redis.call('HSET', k, 'b' .. b, v)
        if lo < oldest then trim(k, lo, oldest) end
      end
      redis.call('EXPIRE', k, entity_ttl)
    end
  end
  ki = ki + 1 + n
end
return 1
"
);

/// Transactions per commit script call: long enough to share the call's cost, short
/// enough not to hold the server (which runs one script at a time) for long.
const COMMIT_CHUNK: usize = 64;

/// Counts a fraud label once: KEYS = label marker, then entity hashes; ARGV = marker TTL,
/// bucket, entity TTL.
const LABEL: &str = concat!(
    read_bucket!(),
    r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local b = tonumber(ARGV[2])
for i = 2, #KEYS do
  local k = KEYS[i]
  local c, f, s, lo = read(k, b)
  local v = string.format('%d %d %.17g', c, f + 1, s)
  if lo == nil or b < lo then
    redis.call('HSET', k, 'b' .. b, v, 'lo', b)
  else
    redis.call('HSET', k, 'b' .. b, v)
  end
  redis.call('EXPIRE', k, ARGV[3])
end
return 1
"
);

/// Takes back transactions counted provisionally, each only while its served marker is
/// there: KEYS = for each transaction its served marker, then its entity hashes; ARGV =
/// for each transaction its bucket, amount and number of entity hashes. A bucket left
/// with nothing is deleted. Returns how many were taken back.
const UNCOUNT: &str = concat!(
    read_bucket!(),
    r"
local taken = 0
local ki = 1
for ai = 1, #ARGV, 3 do
  local n = tonumber(ARGV[ai + 2])
  if redis.call('DEL', KEYS[ki]) == 1 then
    taken = taken + 1
    local b = tonumber(ARGV[ai])
    local amount = tonumber(ARGV[ai + 1])
    for j = ki + 1, ki + n do
      local k = KEYS[j]
      local c, f, s = read(k, b)
      if c <= 1 and f == 0 then
        redis.call('HDEL', k, 'b' .. b, 'c' .. b, 'f' .. b, 's' .. b)
      elseif c > 0 then
        redis.call('HSET', k, 'b' .. b, string.format('%d %d %.17g', c - 1, f, s - amount))
      end
    end
  end
  ki = ki + 1 + n
end
return taken
"
);

/// Where and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` (a secret when it carries a password).
    pub url: String,
    /// Key prefix, so groups (or tests) can share a server.
    pub prefix: String,
    /// How long a transaction's served features (and a label's marker) are kept: the
    /// longest a redelivery can come after the first delivery and still count once.
    pub served_ttl: Duration,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
}

/// The SHA-1s of the loaded scripts.
struct Scripts {
    commit: String,
    label: String,
    uncount: String,
}

/// Entity state in Redis.
pub struct RedisStore {
    client: Client,
    settings: RedisSettings,
    conn: Option<(Connection, Scripts)>,
    /// Buckets kept: the spec's horizon.
    horizon: i64,
    /// The bucket width in seconds (for TTLs).
    bucket_secs: u64,
    /// Buckets before this are trimmed (the engine's watermark sets it).
    keep_from: i64,
    commits: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.settings.prefix)
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
        let client = Client::open(settings.url.as_str()).map_err(|e| err(&e))?;
        Ok(Self {
            client,
            settings,
            conn: None,
            horizon,
            bucket_secs,
            keep_from: i64::MIN,
            commits: 0,
        })
    }

    /// Check that the server answers (for start-up).
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.with_conn(|c, _| redis::cmd("PING").query::<String>(c).map(drop))
    }

    /// Run `f` on a connection (with the scripts' SHA-1s), connecting first if needed;
    /// any error drops the connection.
    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Scripts) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let mut c = self
                .client
                .get_connection_with_timeout(self.settings.timeout)
                .map_err(|e| err(&e))?;
            c.set_read_timeout(Some(self.settings.timeout))
                .map_err(|e| err(&e))?;
            c.set_write_timeout(Some(self.settings.timeout))
                .map_err(|e| err(&e))?;
            let commit: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(COMMIT)
                .query(&mut c)
                .map_err(|e| err(&e))?;
            let label: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(LABEL)
                .query(&mut c)
                .map_err(|e| err(&e))?;
            let uncount: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(UNCOUNT)
                .query(&mut c)
                .map_err(|e| err(&e))?;
            self.conn = Some((
                c,
                Scripts {
                    commit,
                    label,
                    uncount,
                },
            ));
        }
        let Some((c, scripts)) = self.conn.as_mut() else {
            return Err(StoreError("redis: not connected".into()));
        };
        let r = f(c, scripts);
        if r.is_err() {
            self.conn = None;
        }
        r.map_err(|e| err(&e))
    }

    fn entity_key(&self, (e, id): Key<'_>) -> String {
        let tag = match e {
            Entity::CardId => 'c',
            Entity::TerminalId => 't',
        };
        format!("{}:e:{tag}:{id}", self.settings.prefix)
    }

    fn entity_ttl(&self) -> u64 {
        (self.horizon.max(1) as u64 + 1) * self.bucket_secs
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
        let keys: Vec<String> = tx_ids
            .iter()
            .map(|id| format!("{}:s:{id}", self.settings.prefix))
            .collect();
        let values: Vec<Option<Vec<u8>>> =
            self.with_conn(|c, _| redis::cmd("MGET").arg(&keys).query(c))?;
        Ok(values
            .into_iter()
            .map(|v| {
                v.map(|bytes| {
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                })
            })
            .collect())
    }

    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|&k| self.entity_key(k)).collect();
        let hashes: Vec<Value> = self.with_conn(|c, _| {
            let mut p = redis::pipe();
            for n in &names {
                p.cmd("HGETALL").arg(n);
            }
            p.query(c)
        })?;
        hashes
            .iter()
            .map(|h| Ok(parse_buckets(hash_fields(h)?, since)))
            .collect()
    }

    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        if txs.is_empty() {
            return Ok(());
        }
        let oldest = self.keep_from;
        let (prefix, served_ttl, entity_ttl) = (
            self.settings.prefix.clone(),
            self.settings.served_ttl.as_secs().max(1),
            self.entity_ttl(),
        );
        let entity_keys: Vec<Vec<String>> = txs
            .iter()
            .map(|c| c.keys.iter().map(|&k| self.entity_key(k)).collect())
            .collect();
        let txs: Vec<(&Commit<'_>, &Vec<String>)> = txs.iter().zip(&entity_keys).collect();
        self.with_conn(|conn, scripts| {
            let mut p = redis::pipe();
            for chunk in txs.chunks(COMMIT_CHUNK) {
                let cmd = p.cmd("EVALSHA").arg(&scripts.commit);
                cmd.arg(chunk.iter().map(|(_, keys)| 1 + keys.len()).sum::<usize>());
                for (c, keys) in chunk {
                    cmd.arg(format!("{prefix}:s:{}", c.tx_id)).arg(*keys);
                }
                cmd.arg(served_ttl).arg(oldest).arg(entity_ttl);
                for (c, keys) in chunk {
                    let features: Vec<u8> =
                        c.features.iter().flat_map(|f| f.to_le_bytes()).collect();
                    cmd.arg(features)
                        .arg(c.bucket)
                        .arg(c.amount)
                        .arg(keys.len());
                }
                cmd.ignore();
            }
            p.query::<()>(conn)
        })?;
        self.commits += txs.len() as u64;
        Ok(())
    }

    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
        if labels.is_empty() {
            return Ok(0);
        }
        let (prefix, ttl, entity_ttl) = (
            self.settings.prefix.clone(),
            self.settings.served_ttl.as_secs().max(1),
            self.entity_ttl(),
        );
        let entity_keys: Vec<Vec<String>> = labels
            .iter()
            .map(|l| l.keys.iter().map(|&k| self.entity_key(k)).collect())
            .collect();
        let applied: Vec<Value> = self.with_conn(|conn, scripts| {
            let mut p = redis::pipe();
            for (l, keys) in labels.iter().zip(&entity_keys) {
                p.cmd("EVALSHA")
                    .arg(&scripts.label)
                    .arg(1 + keys.len())
                    .arg(format!("{prefix}:l:{}", l.tx_id))
                    .arg(keys)
                    .arg(ttl)
                    .arg(l.bucket)
                    .arg(entity_ttl);
            }
            p.query(conn)
        })?;
        Ok(applied
            .iter()
            .filter(|v| matches!(v, Value::Int(1)))
            .count())
    }

    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError> {
        if txs.is_empty() {
            return Ok(0);
        }
        let prefix = self.settings.prefix.clone();
        let entity_keys: Vec<Vec<String>> = txs
            .iter()
            .map(|c| c.keys.iter().map(|&k| self.entity_key(k)).collect())
            .collect();
        let taken: i64 = self.with_conn(|conn, scripts| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&scripts.uncount)
                .arg(entity_keys.iter().map(|k| 1 + k.len()).sum::<usize>());
            for (c, keys) in txs.iter().zip(&entity_keys) {
                cmd.arg(format!("{prefix}:s:{}", c.tx_id)).arg(keys);
            }
            for (c, keys) in txs.iter().zip(&entity_keys) {
                cmd.arg(c.bucket).arg(c.amount).arg(keys.len());
            }
            cmd.query(conn)
        })?;
        Ok(usize::try_from(taken).unwrap_or(0))
    }

    fn expire_before(&mut self, bucket: i64) {
        self.keep_from = self.keep_from.max(bucket);
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
