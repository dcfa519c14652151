//! One server (`redis://`): a transaction's served marker and its entities' hashes change
//! together in one script call, so a transaction is counted once and entirely.

use redis::{Client, Connection, Value};

use super::scripts::{COMMIT, COMMIT_CHUNK, LABEL, UNCOUNT};
use super::{Scripts, Shared, entity_letter, err};
use crate::velocity::StoreError;
use crate::velocity::store::{Commit, Key, Label};

/// A connection to one server (made on first use, and again after any error).
pub(super) struct Single {
    client: Client,
    conn: Option<Connection>,
    scripts: Scripts,
}

impl Single {
    pub(super) fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: Client::open(url).map_err(|e| err(&e))?,
            conn: None,
            scripts: Scripts::new([COMMIT, LABEL, UNCOUNT]),
        })
    }

    /// Run `f` on a connection, connecting (and loading the scripts) first if needed; any
    /// error drops the connection.
    fn with_conn<T>(
        &mut self,
        shared: &Shared,
        f: impl FnOnce(&mut Connection, &Scripts) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let timeout = shared.settings.timeout;
            let mut c = self
                .client
                .get_connection_with_timeout(timeout)
                .map_err(|e| err(&e))?;
            c.set_read_timeout(Some(timeout)).map_err(|e| err(&e))?;
            c.set_write_timeout(Some(timeout)).map_err(|e| err(&e))?;
            self.scripts.load(&mut c).map_err(|e| err(&e))?;
            self.conn = Some(c);
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(StoreError("redis: not connected".into()));
        };
        let r = f(c, &self.scripts);
        if r.is_err() {
            self.conn = None;
        }
        r.map_err(|e| err(&e))
    }

    pub(super) fn ping(&mut self, shared: &Shared) -> Result<(), StoreError> {
        self.with_conn(shared, |c, _| {
            redis::cmd("PING").query::<String>(c).map(drop)
        })
    }

    pub(super) fn served(
        &mut self,
        shared: &Shared,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.with_conn(shared, |c, _| redis::cmd("MGET").arg(keys).query(c))
    }

    pub(super) fn hashes(
        &mut self,
        shared: &Shared,
        names: &[String],
    ) -> Result<Vec<Value>, StoreError> {
        self.with_conn(shared, |c, _| {
            let mut p = redis::pipe();
            for n in names {
                p.cmd("HGETALL").arg(n);
            }
            p.query(c)
        })
    }

    pub(super) fn commit(&mut self, shared: &Shared, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        let prefix = &shared.settings.prefix;
        let entity_keys = keys_of(prefix, txs.iter().map(|c| c.keys));
        let (served_ttl, oldest, entity_ttl) =
            (shared.served_ttl(), shared.keep_from, shared.entity_ttl());
        let txs: Vec<(&Commit<'_>, &Vec<String>)> = txs.iter().zip(&entity_keys).collect();
        self.with_conn(shared, |conn, scripts| {
            let mut p = redis::pipe();
            for chunk in txs.chunks(COMMIT_CHUNK) {
                let cmd = p.cmd("EVALSHA").arg(&scripts.sha[0]);
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
            p.query::<()>(conn)?;
            shared.wait_replicas(conn)
        })
    }

    pub(super) fn label(
        &mut self,
        shared: &Shared,
        labels: &[Label<'_>],
    ) -> Result<usize, StoreError> {
        let prefix = &shared.settings.prefix;
        let entity_keys = keys_of(prefix, labels.iter().map(|l| l.keys));
        let (ttl, entity_ttl) = (shared.served_ttl(), shared.entity_ttl());
        let applied: Vec<Value> = self.with_conn(shared, |conn, scripts| {
            let mut p = redis::pipe();
            for (l, keys) in labels.iter().zip(&entity_keys) {
                p.cmd("EVALSHA")
                    .arg(&scripts.sha[1])
                    .arg(1 + keys.len())
                    .arg(format!("{prefix}:l:{}", l.tx_id))
                    .arg(keys)
                    .arg(ttl)
                    .arg(l.bucket)
                    .arg(entity_ttl);
            }
            let applied = p.query(conn)?;
            shared.wait_replicas(conn)?;
            Ok(applied)
        })?;
        Ok(applied
            .iter()
            .filter(|v| matches!(v, Value::Int(1)))
            .count())
    }

    pub(super) fn uncount(
        &mut self,
        shared: &Shared,
        txs: &[Commit<'_>],
    ) -> Result<usize, StoreError> {
        let prefix = &shared.settings.prefix;
        let entity_keys = keys_of(prefix, txs.iter().map(|c| c.keys));
        let taken: i64 = self.with_conn(shared, |conn, scripts| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&scripts.sha[2])
                .arg(entity_keys.iter().map(|k| 1 + k.len()).sum::<usize>());
            for (c, keys) in txs.iter().zip(&entity_keys) {
                cmd.arg(format!("{prefix}:s:{}", c.tx_id)).arg(keys);
            }
            for (c, keys) in txs.iter().zip(&entity_keys) {
                cmd.arg(c.bucket).arg(c.amount).arg(keys.len());
            }
            let taken = cmd.query(conn)?;
            shared.wait_replicas(conn)?;
            Ok(taken)
        })?;
        Ok(usize::try_from(taken).unwrap_or(0))
    }
}

/// The features a served value holds: little-endian `f32`s.
pub(super) fn features(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An entity's hash: `{p}:e:{c|t}:{id}`.
pub(super) fn entity_key(prefix: &str, (e, id): Key<'_>) -> String {
    format!("{prefix}:e:{}:{id}", entity_letter(e))
}

/// The entity hashes of each item's keys.
fn keys_of<'a>(prefix: &str, items: impl Iterator<Item = &'a [Key<'a>]>) -> Vec<Vec<String>> {
    items
        .map(|keys| keys.iter().map(|&k| entity_key(prefix, k)).collect())
        .collect()
}
