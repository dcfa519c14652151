//! A Redis Cluster (`redis+cluster://host:port,host:port`). A script may only touch keys
//! of one slot, so nothing here spans two: each entity's state is in its own slot, and so
//! is each transaction's record.
//!
//! Every entity is in one of [`GROUPS`] tag groups, by a hash of its id, and the
//! group's hash tag picks the slot of its keys. The tags are chosen so that group `i`
//! lands in slots `i·64 .. i·64+63`: an even split of the slots over the masters gives
//! each the same number of groups, and a reshard moves whole groups. Grouping is what
//! makes a batch cheap: Redis runs a script whose keys share a slot, so one call counts
//! all of a batch's updates of a group, and a script call's own cost (about 6 µs of
//! server CPU on Redis 7.0, more than an update's) is shared, as one server shares it
//! over 64 transactions. (A tag per entity, `{c:<card>}`, gives a call per update:
//! docs/benchmarks.md has both measured.)
//!
//! Keys, under the prefix `p` (the part in braces is the group's hash tag):
//! - `p:e:{g}:c:<card>`, `p:e:{g}:t:<terminal>`: the entity's hash, as on one server;
//! - `p:m:{g}:c:<card>:<tx>`: the transaction is counted in this entity (a marker in the
//!   entity's slot, kept `served_ttl`); `p:lm:{g}:…:<tx>`: its label is;
//! - `p:s:{<tx>}`: the features served for the transaction, followed by what its commit
//!   counts (bucket, amount, entities), kept `served_ttl`, in the transaction's own slot.
//!
//! A commit first records each transaction (`SET … NX`), then counts it in each entity
//! with a script that sets the entity's marker only if absent and, only then, adds to its
//! bucket. A redelivery finds the record, and its read finishes the counting (each
//! entity's marker makes that a no-op where it was done): a detector killed between the
//! two steps leaves nothing counted twice nor lost, and its successor serves the recorded
//! features. Taking back is the reverse: each entity's marker deleted (and, only if it was
//! there, the counts subtracted), then the record; a crash between the two leaves the
//! record, and a redelivery counts the transaction again, once (the take-back is lost,
//! nothing is counted twice). Both steps are pipelines the client
//! splits by node, one round trip per node each.

use redis::cluster::{ClusterClient, ClusterConfig, ClusterConnection, ClusterPipeline};
use redis::{ErrorKind, RedisResult, ServerErrorKind, Value};

use super::scripts::{ENTITY_COMMIT, ENTITY_LABEL, ENTITY_UNCOUNT};
use super::{Scripts, Shared, entity_letter, err};
use crate::velocity::store::{Commit, Key, Label};
use crate::velocity::{Entity as Kind, StoreError};

/// Tag groups (see the module's notes).
pub(super) const GROUPS: usize = 256;

/// Entity updates (pairs of keys) per script call: long enough to share the call's cost,
/// short enough not to hold a master for long.
const PAIRS_PER_CALL: usize = 128;

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
                        entity: Entity::of((*e, k)),
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
        let updates = updates_of(txs);
        self.count(shared, &updates)
    }

    /// Count each update in its entity once: one script call per group (and
    /// [`PAIRS_PER_CALL`] of its updates), all in one pipeline.
    fn count(&mut self, shared: &Shared, updates: &[Update<'_>]) -> Result<(), StoreError> {
        let prefix = &shared.settings.prefix;
        let (ttl, oldest, entity_ttl) =
            (shared.served_ttl(), shared.keep_from, shared.entity_ttl());
        let calls = by_group(updates, |u| u.entity.group);
        self.with_conn(shared, |conn, scripts, eval| {
            let mut p = ClusterPipeline::new();
            for call in &calls {
                let cmd = script(&mut p, scripts, COMMIT, eval);
                cmd.arg(2 * call.len());
                for u in call {
                    cmd.arg(u.entity.hash(prefix))
                        .arg(u.entity.markers(prefix, "m", u.bucket));
                }
                cmd.arg(ttl).arg(oldest).arg(entity_ttl);
                for u in call {
                    cmd.arg(u.entity.field(u.tx_id)).arg(u.bucket).arg(u.amount);
                }
                cmd.ignore();
            }
            if !calls.is_empty() {
                p.query::<()>(conn)?;
            }
            // The records written before the counting are covered too.
            shared.wait_replicas(conn)
        })
    }

    pub(super) fn label(
        &mut self,
        shared: &Shared,
        labels: &[Label<'_>],
    ) -> Result<usize, StoreError> {
        let prefix = &shared.settings.prefix;
        let (ttl, entity_ttl) = (shared.served_ttl(), shared.entity_ttl());
        // Each (label, entity) pair, by group.
        let pairs: Vec<(usize, Entity)> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.keys.iter().map(move |&k| (i, Entity::of(k))))
            .collect();
        let calls = by_group(&pairs, |(_, e)| e.group);
        let unkeyed: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].keys.is_empty())
            .collect();
        let replies: Vec<Value> = self.with_conn(shared, |conn, scripts, eval| {
            let mut p = ClusterPipeline::new();
            for call in &calls {
                let cmd = script(&mut p, scripts, LABEL, eval);
                cmd.arg(2 * call.len());
                for (i, e) in call {
                    cmd.arg(e.hash(prefix))
                        .arg(e.markers(prefix, "lm", labels[*i].bucket));
                }
                cmd.arg(ttl).arg(entity_ttl);
                for (i, e) in call {
                    cmd.arg(e.field(labels[*i].tx_id)).arg(labels[*i].bucket);
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
            let replies = p.query(conn)?;
            shared.wait_replicas(conn)?;
            Ok(replies)
        })?;
        // A label applies when any of its entities took it.
        let mut applied = vec![false; labels.len()];
        for (call, reply) in calls.iter().zip(&replies) {
            if let Value::Array(flags) = reply {
                for ((i, _), flag) in call.iter().zip(flags) {
                    applied[*i] |= matches!(flag, Value::Int(1));
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
        let updates = updates_of(txs);
        let calls = by_group(&updates, |u| u.entity.group);
        if !calls.is_empty() {
            self.with_conn(shared, |conn, scripts, eval| {
                let mut p = ClusterPipeline::new();
                for call in &calls {
                    let cmd = script(&mut p, scripts, UNCOUNT, eval);
                    cmd.arg(2 * call.len());
                    for u in call {
                        cmd.arg(u.entity.hash(prefix))
                            .arg(u.entity.markers(prefix, "m", u.bucket));
                    }
                    for u in call {
                        cmd.arg(u.entity.field(u.tx_id)).arg(u.bucket).arg(u.amount);
                    }
                    cmd.ignore();
                }
                p.query::<()>(conn)
            })?;
        }
        let deleted: Vec<i64> = self.with_conn(shared, |conn, _, _| {
            let mut p = ClusterPipeline::new();
            for c in txs {
                p.cmd("DEL").arg(format!("{prefix}:s:{{{}}}", c.tx_id));
            }
            let deleted = p.query(conn)?;
            shared.wait_replicas(conn)?;
            Ok(deleted)
        })?;
        Ok(deleted.iter().filter(|&&d| d == 1).count())
    }
}

/// An entity as the cluster keys it: its name in keys (`c:<card>`) and its group.
#[derive(Debug, Clone)]
struct Entity {
    name: String,
    group: usize,
}

impl Entity {
    fn of((e, id): Key<'_>) -> Self {
        let name = format!("{}:{id}", entity_letter(e));
        let group = usize::from(crc16(name.as_bytes())) % GROUPS;
        Self { name, group }
    }

    /// Its hash: `p:e:{g}:c:<card>`.
    fn hash(&self, prefix: &str) -> String {
        format!("{prefix}:e:{{{}}}:{}", group_tags()[self.group], self.name)
    }

    /// The marker hash of `kind` (`m` counted, `lm` label counted) of its group for
    /// `bucket`: `p:m:{g}:<bucket>`. A transaction's event time picks the bucket, so a
    /// redelivery finds the same hash.
    fn markers(&self, prefix: &str, kind: &str, bucket: i64) -> String {
        format!("{prefix}:{kind}:{{{}}}:{bucket}", group_tags()[self.group])
    }

    /// Its field in a marker hash for transaction `tx`: `c:<card>:<tx>`.
    fn field(&self, tx: &str) -> String {
        format!("{}:{tx}", self.name)
    }
}

/// The hash of entity `key` on a cluster.
pub(super) fn entity_key(prefix: &str, key: Key<'_>) -> String {
    Entity::of(key).hash(prefix)
}

/// CRC-16/XMODEM, the hash Redis Cluster takes modulo 16384 for a key's slot.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The groups' hash tags: tag `i` is the first `g<i>.<n>` whose slot is in
/// `i·64 .. i·64+63`.
fn group_tags() -> &'static [String] {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let width = 16_384 / GROUPS;
        (0..GROUPS)
            .map(|i| {
                (0u32..)
                    .map(|n| format!("g{i}.{n}"))
                    .find(|t| usize::from(crc16(t.as_bytes()) % 16_384) / width == i)
                    .unwrap_or_else(|| format!("g{i}"))
            })
            .collect()
    })
}

/// One transaction's update of one entity.
struct Update<'a> {
    entity: Entity,
    tx_id: &'a str,
    bucket: i64,
    amount: f64,
}

/// Every entity update of `txs`.
fn updates_of<'a>(txs: &'a [Commit<'a>]) -> Vec<Update<'a>> {
    txs.iter()
        .flat_map(|c| {
            c.keys.iter().map(move |&k| Update {
                entity: Entity::of(k),
                tx_id: c.tx_id,
                bucket: c.bucket,
                amount: c.amount,
            })
        })
        .collect()
}

/// `items` split into script calls: by group, in first-seen order (so a transaction's
/// order within its entity is kept), at most [`PAIRS_PER_CALL`] a call.
fn by_group<T>(items: &[T], group: impl Fn(&T) -> usize) -> Vec<Vec<&T>> {
    let mut by: Vec<Vec<&T>> = (0..GROUPS).map(|_| Vec::new()).collect();
    let mut order: Vec<usize> = Vec::new();
    for item in items {
        let g = group(item);
        if by[g].is_empty() {
            order.push(g);
        }
        by[g].push(item);
    }
    order
        .into_iter()
        .flat_map(|g| {
            std::mem::take(&mut by[g])
                .chunks(PAIRS_PER_CALL)
                .map(<[&T]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
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
    keys: Vec<(Kind, String)>,
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
                Kind::CardId => b'c',
                Kind::TerminalId => b't',
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
                b'c' => Kind::CardId,
                b't' => Kind::TerminalId,
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
        let keys = [(Kind::CardId, "card-7"), (Kind::TerminalId, "t}{9")];
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
                (Kind::CardId, "card-7".to_owned()),
                (Kind::TerminalId, "t}{9".to_owned())
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

    #[test]
    fn slots_are_redis_clusters_and_groups_spread_evenly() {
        // `CLUSTER KEYSLOT a` and `b` on a real cluster.
        assert_eq!(crc16(b"a") % 16_384, 15_495);
        assert_eq!(crc16(b"b") % 16_384, 3_300);
        let tags = group_tags();
        assert_eq!(tags.len(), GROUPS);
        for (i, t) in tags.iter().enumerate() {
            assert_eq!(
                usize::from(crc16(t.as_bytes()) % 16_384) / (16_384 / GROUPS),
                i,
                "{t}"
            );
        }
        // Entities spread over the groups.
        let mut per = vec![0usize; GROUPS];
        for n in 0..25_600 {
            per[Entity::of((Kind::CardId, &format!("card-{n}"))).group] += 1;
        }
        assert!(per.iter().all(|&c| (50..=150).contains(&c)), "{per:?}");
        // A key's tag is its group's: the hash and its markers share a slot.
        let e = Entity::of((Kind::TerminalId, "t{1}"));
        let tag = &tags[e.group];
        assert!(e.hash("p").starts_with(&format!("p:e:{{{tag}}}:")));
        assert_eq!(e.markers("p", "m", -7), format!("p:m:{{{tag}}}:-7"));
    }
}
