//! A Redis Cluster (`redis+cluster://host:port,host:port`). A script may only touch keys
//! of one slot, so nothing here spans two: each entity's state is in its own slot, and so
//! is each transaction's record.
//!
//! Keys, under the prefix `p` (the part in braces is the hash tag that picks the slot):
//! - `p:e:{c:<card>}`, `p:e:{t:<terminal>}`: the entity's hash, as on one server;
//! - `p:m:{c:<card>}:<tx>`: the transaction is counted in this entity (a marker in the
//!   entity's slot, kept `served_ttl`); `p:lm:{…}:<tx>`: its label is;
//! - `p:s:{<tx>}`: the features served for the transaction, followed by what its commit
//!   counts (bucket, amount, entities), kept `served_ttl`.
//!
//! A commit first records each transaction (`SET … NX`), then counts it in each entity
//! with a script that sets the entity's marker only if absent and, only then, adds to its
//! bucket. A redelivery finds the record, and its read finishes the counting (each
//! entity's marker makes that a no-op where it was done): a detector killed between the
//! two steps leaves nothing counted twice nor lost, and its successor serves the recorded
//! features. Taking back is the reverse: each entity's marker deleted (and, only if it was
//! there, the counts subtracted), then the record. Both steps are pipelines the client
//! splits by node, one round trip per node each.

use std::collections::HashMap;

use redis::cluster::{ClusterClient, ClusterConfig, ClusterConnection, ClusterPipeline};
use redis::{ErrorKind, RedisResult, ServerErrorKind, Value};

use super::scripts::{COMMIT_CHUNK, ENTITY_COMMIT, ENTITY_LABEL, ENTITY_UNCOUNT};
use super::{Scripts, Shared, err, tag};
use crate::velocity::store::{Commit, Key, Label};
use crate::velocity::{Entity, StoreError};

const COMMIT: usize = 0;
const LABEL: usize = 1;
const UNCOUNT: usize = 2;

/// Connections to the cluster's nodes (made on first use, and again after any error).
pub(super) struct Cluster {
    client: ClusterClient,
    conn: Option<ClusterConnection>,
    scripts: Scripts,
}

/// The nodes of `redis+cluster://[user:password@]host:port,host:port[/]`, each as a
/// `redis://` URL carrying the credentials.
pub(super) fn nodes(url: &str) -> Result<Vec<String>, StoreError> {
    let rest = url
        .strip_prefix("redis+cluster://")
        .ok_or_else(|| StoreError("redis: a cluster URL starts with redis+cluster://".into()))?;
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(StoreError(
            "redis: a cluster URL names at least one host:port".into(),
        ));
    }
    Ok(nodes)
}

impl Cluster {
    pub(super) fn new(url: &str) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(nodes(url)?)
            // Few retries inside the client: an outage surfaces as an error, and the
            // engine's own backoff (with its metrics) takes over.
            .retries(2)
            .build()
            .map_err(|e| err(&e))?;
        Ok(Self {
            client,
            conn: None,
            scripts: Scripts::new([ENTITY_COMMIT, ENTITY_LABEL, ENTITY_UNCOUNT]),
        })
    }

    /// Run `f` on the cluster, connecting first if needed. `f` is told whether to send
    /// scripts whole (`EVAL`): after a node lost its script cache (a restart, a new
    /// replica promoted), its `NOSCRIPT` makes the call run again that way, which also
    /// caches them on that node. Every call here may run twice: each is guarded by the
    /// markers. Any other error drops the connection.
    fn with_conn<T>(
        &mut self,
        shared: &Shared,
        f: impl Fn(&mut ClusterConnection, &Scripts, bool) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let timeout = shared.settings.timeout;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let mut c = self
                .client
                .get_connection_with_config(config)
                .map_err(|e| err(&e))?;
            // Best effort: a node that misses them answers NOSCRIPT, handled below.
            if let Err(e) = self.scripts.load(&mut c) {
                tracing::debug!(error = %e, "velocity: loading the scripts on every node failed; they are sent whole where missing");
            }
            self.conn = Some(c);
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(StoreError("redis: not connected".into()));
        };
        let r = match f(c, &self.scripts, false) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                f(c, &self.scripts, true)
            }
            r => r,
        };
        if r.is_err() {
            self.conn = None;
        }
        r.map_err(|e| err(&e))
    }

    pub(super) fn ping(&mut self, shared: &Shared) -> Result<(), StoreError> {
        self.with_conn(shared, |c, _, _| {
            redis::cmd("PING").query::<Value>(c).map(drop)
        })
    }

    /// The hashes of `names` (entity keys), one `HGETALL` each, routed by slot.
    pub(super) fn hashes(
        &mut self,
        shared: &Shared,
        names: &[String],
    ) -> Result<Vec<Value>, StoreError> {
        self.with_conn(shared, |c, _, _| {
            let mut p = ClusterPipeline::new();
            for n in names {
                p.cmd("HGETALL").arg(n);
            }
            p.query(c)
        })
    }

    /// The features recorded for `tx_ids`. A record found is a redelivery: its counting
    /// is finished first (a no-op where it was done).
    pub(super) fn served(
        &mut self,
        shared: &Shared,
        tx_ids: &[&str],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        let prefix = &shared.settings.prefix;
        let values: Vec<Option<Vec<u8>>> = self.with_conn(shared, |c, _, _| {
            let mut p = ClusterPipeline::new();
            for id in tx_ids {
                p.cmd("GET").arg(format!("{prefix}:s:{{{id}}}"));
            }
            p.query(c)
        })?;
        let records: Vec<Option<Record>> = values
            .iter()
            .map(|v| v.as_deref().and_then(Record::decode))
            .collect();
        let found: Vec<(&str, &Record)> = tx_ids
            .iter()
            .zip(&records)
            .filter_map(|(id, r)| Some((*id, r.as_ref()?)))
            .collect();
        if !found.is_empty() {
            let updates: Vec<Update<'_>> = found
                .iter()
                .flat_map(|(id, r)| {
                    r.keys.iter().map(move |(e, k)| Update {
                        tag: tag((*e, k)),
                        tx_id: id,
                        bucket: r.bucket,
                        amount: r.amount,
                    })
                })
                .collect();
            self.count(shared, &updates)?;
        }
        Ok(records.into_iter().map(|r| r.map(|r| r.features)).collect())
    }

    pub(super) fn commit(&mut self, shared: &Shared, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        let prefix = &shared.settings.prefix;
        let ttl = shared.served_ttl();
        let records: Vec<(String, Vec<u8>)> = txs
            .iter()
            .map(|c| (format!("{prefix}:s:{{{}}}", c.tx_id), Record::encode(c)))
            .collect();
        self.with_conn(shared, |conn, _, _| {
            let mut p = ClusterPipeline::new();
            for (key, value) in &records {
                p.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
            p.query::<()>(conn)
        })?;
        let updates: Vec<Update<'_>> = txs
            .iter()
            .flat_map(|c| {
                c.keys.iter().map(move |&k| Update {
                    tag: tag(k),
                    tx_id: c.tx_id,
                    bucket: c.bucket,
                    amount: c.amount,
                })
            })
            .collect();
        self.count(shared, &updates)
    }

    /// Count each update in its entity once: one script call per entity (and 64 of its
    /// transactions), all in one pipeline.
    fn count(&mut self, shared: &Shared, updates: &[Update<'_>]) -> Result<(), StoreError> {
        let prefix = &shared.settings.prefix;
        let (ttl, oldest, entity_ttl) =
            (shared.served_ttl(), shared.keep_from, shared.entity_ttl());
        let groups = by_entity(updates);
        self.with_conn(shared, |conn, scripts, eval| {
            let mut p = ClusterPipeline::new();
            for (tag, group) in &groups {
                for chunk in group.chunks(COMMIT_CHUNK) {
                    let cmd = script(&mut p, scripts, COMMIT, eval);
                    cmd.arg(1 + chunk.len()).arg(format!("{prefix}:e:{tag}"));
                    for u in chunk {
                        cmd.arg(format!("{prefix}:m:{tag}:{}", u.tx_id));
                    }
                    cmd.arg(ttl).arg(oldest).arg(entity_ttl);
                    for u in chunk {
                        cmd.arg(u.bucket).arg(u.amount);
                    }
                    cmd.ignore();
                }
            }
            p.query::<()>(conn)
        })
    }

    pub(super) fn label(
        &mut self,
        shared: &Shared,
        labels: &[Label<'_>],
    ) -> Result<usize, StoreError> {
        let prefix = &shared.settings.prefix;
        let (ttl, entity_ttl) = (shared.served_ttl(), shared.entity_ttl());
        // Per entity, the labels (by index) it gets.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for (i, l) in labels.iter().enumerate() {
            for &k in l.keys {
                let t = tag(k);
                let g = *at.entry(t.clone()).or_insert_with(|| {
                    groups.push((t, Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
        }
        let unkeyed: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].keys.is_empty())
            .collect();
        let calls: Vec<(&String, &[usize])> = groups
            .iter()
            .flat_map(|(t, ix)| ix.chunks(COMMIT_CHUNK).map(move |c| (t, c)))
            .collect();
        let replies: Vec<Value> = self.with_conn(shared, |conn, scripts, eval| {
            let mut p = ClusterPipeline::new();
            for (tag, ix) in &calls {
                let cmd = script(&mut p, scripts, LABEL, eval);
                cmd.arg(1 + ix.len()).arg(format!("{prefix}:e:{tag}"));
                for &i in *ix {
                    cmd.arg(format!("{prefix}:lm:{tag}:{}", labels[i].tx_id));
                }
                cmd.arg(ttl).arg(entity_ttl);
                for &i in *ix {
                    cmd.arg(labels[i].bucket);
                }
            }
            // A label without entities is only remembered, in its transaction's slot.
            for &i in &unkeyed {
                p.cmd("SET")
                    .arg(format!("{prefix}:l:{{{}}}", labels[i].tx_id))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl);
            }
            p.query(conn)
        })?;
        let mut applied = vec![false; labels.len()];
        for ((_, ix), reply) in calls.iter().zip(&replies) {
            if let Value::Array(flags) = reply {
                for (&i, flag) in ix.iter().zip(flags) {
                    applied[i] |= matches!(flag, Value::Int(1));
                }
            }
        }
        for (&i, reply) in unkeyed.iter().zip(&replies[calls.len()..]) {
            applied[i] = matches!(reply, Value::Okay | Value::SimpleString(_));
        }
        Ok(applied.iter().filter(|&&a| a).count())
    }

    pub(super) fn uncount(
        &mut self,
        shared: &Shared,
        txs: &[Commit<'_>],
    ) -> Result<usize, StoreError> {
        let prefix = &shared.settings.prefix;
        let updates: Vec<Update<'_>> = txs
            .iter()
            .flat_map(|c| {
                c.keys.iter().map(move |&k| Update {
                    tag: tag(k),
                    tx_id: c.tx_id,
                    bucket: c.bucket,
                    amount: c.amount,
                })
            })
            .collect();
        let groups = by_entity(&updates);
        self.with_conn(shared, |conn, scripts, eval| {
            let mut p = ClusterPipeline::new();
            for (tag, group) in &groups {
                for chunk in group.chunks(COMMIT_CHUNK) {
                    let cmd = script(&mut p, scripts, UNCOUNT, eval);
                    cmd.arg(1 + chunk.len()).arg(format!("{prefix}:e:{tag}"));
                    for u in chunk {
                        cmd.arg(format!("{prefix}:m:{tag}:{}", u.tx_id));
                    }
                    for u in chunk {
                        cmd.arg(u.bucket).arg(u.amount);
                    }
                    cmd.ignore();
                }
            }
            if groups.is_empty() {
                return Ok(());
            }
            p.query::<()>(conn)
        })?;
        let deleted: Vec<i64> = self.with_conn(shared, |conn, _, _| {
            let mut p = ClusterPipeline::new();
            for c in txs {
                p.cmd("DEL").arg(format!("{prefix}:s:{{{}}}", c.tx_id));
            }
            p.query(conn)
        })?;
        Ok(deleted.iter().filter(|&&d| d == 1).count())
    }
}

/// One transaction's update of one entity.
struct Update<'a> {
    /// The entity's hash tag, `{c:<card>}`.
    tag: String,
    tx_id: &'a str,
    bucket: i64,
    amount: f64,
}

/// `updates` grouped by entity, in first-seen order (a transaction's order within its
/// entity is kept).
fn by_entity<'u, 'a>(updates: &'u [Update<'a>]) -> Vec<(&'u str, Vec<&'u Update<'a>>)> {
    let mut groups: Vec<(&str, Vec<&Update<'_>>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for u in updates {
        let g = *at.entry(u.tag.as_str()).or_insert_with(|| {
            groups.push((u.tag.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(u);
    }
    groups
}

/// A script call added to `p` (its arguments follow): `EVALSHA <sha>`, or `EVAL <code>`
/// when `eval`.
fn script<'p>(
    p: &'p mut ClusterPipeline,
    scripts: &Scripts,
    which: usize,
    eval: bool,
) -> &'p mut ClusterPipeline {
    if eval {
        p.cmd("EVAL").arg(scripts.code[which])
    } else {
        p.cmd("EVALSHA").arg(&scripts.sha[which])
    }
}

/// What `p:s:{<tx>}` holds: the features served, then the commit that counts the
/// transaction (so a redelivery can finish it). Little-endian: `u16` feature count,
/// the `f32`s, the `i64` bucket, the `f64` amount, a `u8` entity count, and per entity a
/// byte (`c` card, `t` terminal), a `u16` length and the id.
#[derive(Debug, PartialEq)]
struct Record {
    features: Vec<f32>,
    bucket: i64,
    amount: f64,
    keys: Vec<(Entity, String)>,
}

impl Record {
    fn encode(c: &Commit<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 * c.features.len() + 32);
        let n = u16::try_from(c.features.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for f in c.features.iter().take(usize::from(n)) {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out.extend_from_slice(&c.bucket.to_le_bytes());
        out.extend_from_slice(&c.amount.to_le_bytes());
        let keys: Vec<&Key<'_>> = c
            .keys
            .iter()
            .filter(|(_, id)| id.len() <= usize::from(u16::MAX))
            .take(usize::from(u8::MAX))
            .collect();
        out.push(keys.len() as u8);
        for (e, id) in keys {
            out.push(match e {
                Entity::CardId => b'c',
                Entity::TerminalId => b't',
            });
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// `None` for a value this layout did not write.
    fn decode(mut b: &[u8]) -> Option<Self> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(head)
        }
        fn array<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
            take(b, N)?.try_into().ok()
        }
        let n = usize::from(u16::from_le_bytes(array(&mut b)?));
        let features = take(&mut b, 4 * n)?
            .chunks_exact(4)
            .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .collect();
        let bucket = i64::from_le_bytes(array(&mut b)?);
        let amount = f64::from_le_bytes(array(&mut b)?);
        let count = take(&mut b, 1)?[0];
        let mut keys = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let e = match take(&mut b, 1)?[0] {
                b'c' => Entity::CardId,
                b't' => Entity::TerminalId,
                _ => return None,
            };
            let len = usize::from(u16::from_le_bytes(array(&mut b)?));
            let id = std::str::from_utf8(take(&mut b, len)?).ok()?;
            keys.push((e, id.to_owned()));
        }
        b.is_empty().then_some(Self {
            features,
            bucket,
            amount,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_whole_and_a_foreign_value_does_not() {
        let keys = [(Entity::CardId, "card-7"), (Entity::TerminalId, "t}{9")];
        let c = Commit {
            tx_id: "tx",
            features: &[1.5, -0.0, f32::MAX],
            keys: &keys,
            bucket: -3,
            amount: 12.25,
        };
        let bytes = Record::encode(&c);
        let r = Record::decode(&bytes).unwrap();
        assert_eq!(r.features, vec![1.5, -0.0, f32::MAX]);
        assert_eq!((r.bucket, r.amount), (-3, 12.25));
        assert_eq!(
            r.keys,
            vec![
                (Entity::CardId, "card-7".to_owned()),
                (Entity::TerminalId, "t}{9".to_owned())
            ]
        );
        // One server's layout (features only), a truncated record, a trailing byte.
        assert_eq!(Record::decode(&1.0f32.to_le_bytes()), None);
        assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), None);
    }

    #[test]
    fn a_cluster_url_names_its_nodes_with_their_credentials() {
        assert_eq!(
            nodes("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001/").unwrap(),
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            nodes("redis+cluster://u:p@h1:1,h2:2").unwrap(),
            vec!["redis://u:p@h1:1", "redis://u:p@h2:2"]
        );
        assert!(nodes("redis+cluster://").is_err());
        assert!(nodes("redis://h:1").is_err());
    }
}
