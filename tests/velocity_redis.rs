//! Entity features on a real Redis (`scripts/services.sh up redis`): the store passes the
//! conformance suite; two engines sharing it, with redeliveries between them, serve the
//! features an offline pass computes and count every transaction once; while Redis is
//! down the velocity stage waits and retries, losing nothing; and two detector processes
//! on Kafka sharing Redis, killed with SIGKILL and restarted mid-stream, count every
//! transaction and every label once and re-serve the recorded features on redelivery.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::group::Kills;
use fraudstream::schema::Transaction;
use fraudstream::velocity::config::{StoreKind, VelocityConfig};
use fraudstream::velocity::redis::{RedisSettings, RedisStore};
use fraudstream::velocity::stage::Velocity;
use fraudstream::velocity::{
    Engine, Entity, LabelEvent, StateStore, VelocitySpec, compute_offline, conformance,
    offline_engine,
};
use loadgen::simulate::{SimParams, simulate_transactions};

fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        prefix: common::unique("fs-test"),
        served_ttl: Duration::from_secs(3_600),
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
    }
}

fn settings_with_prefix(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        prefix: prefix.to_owned(),
        ..settings(url)
    }
}

fn history() -> Vec<Transaction> {
    let p = SimParams {
        customers: 80,
        terminals: 800,
        days: 40,
        seed: 11,
        ..SimParams::default()
    };
    simulate_transactions(&p)
}

fn label(t: &Transaction) -> LabelEvent {
    LabelEvent {
        tx_id: t.id.clone(),
        time: t.time(),
        label: t.label.unwrap_or(0),
        card_id: t.card_id.clone(),
        terminal_id: t.terminal_id.clone(),
    }
}

#[test]
fn redis_store_conforms() {
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    conformance::run(|| RedisStore::new(settings(&url), 10_000, 3_600).unwrap());
}

/// State written by an earlier version (three fields per bucket: `c`, `f`, `s`) is still
/// read, added to what this version writes (one field per bucket), and trimmed with it.
#[test]
fn an_earlier_versions_buckets_are_read_and_trimmed() {
    use fraudstream::velocity::store::{Commit, Label};
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    let s = settings(&url);
    let prefix = s.prefix.clone();
    let key = format!("{prefix}:e:c:card-1");
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            "c100", "2", "s100", "10.25", "f100", "1", "c101", "1", "s101", "4", "lo", "100",
        ])
        .query::<()>(&mut raw)
        .unwrap();
    let mut store = RedisStore::new(s, 10_000, 3_600).unwrap();
    let card = [(Entity::CardId, "card-1")];
    let read = |store: &mut RedisStore| {
        store.buckets(&card, 0).unwrap()[0]
            .iter()
            .map(|b| (b.idx, b.count, b.frauds, b.sum))
            .collect::<Vec<_>>()
    };
    assert_eq!(read(&mut store), [(100, 2, 1, 10.25), (101, 1, 0, 4.0)]);
    store
        .commit(&[Commit {
            tx_id: "t-1",
            features: &[1.0],
            keys: &card,
            bucket: 100,
            amount: 0.1,
        }])
        .unwrap();
    assert_eq!(
        store
            .label(&[Label {
                tx_id: "t-0",
                keys: &card,
                bucket: 101,
            }])
            .unwrap(),
        1
    );
    assert_eq!(
        read(&mut store),
        [(100, 3, 1, 10.25 + 0.1), (101, 1, 1, 4.0)]
    );
    // Past what the watermark keeps, both forms of the old buckets are deleted.
    let mut store = RedisStore::new(settings_with_prefix(&url, &prefix), 2, 3_600).unwrap();
    store.expire_before(198);
    store
        .commit(&[Commit {
            tx_id: "t-2",
            features: &[1.0],
            keys: &card,
            bucket: 200,
            amount: 1.0,
        }])
        .unwrap();
    let mut names: Vec<String> = redis::cmd("HKEYS").arg(&key).query(&mut raw).unwrap();
    names.sort();
    assert_eq!(names, ["b200", "lo"]);
    assert_eq!(read(&mut store), [(200, 1, 0, 1.0)]);
}

#[test]
fn two_engines_sharing_redis_serve_offline_features_once() {
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    let spec = VelocitySpec::handbook();
    let shared = settings(&url);
    let horizon = spec.horizon_buckets();
    let store = || RedisStore::new(shared.clone(), horizon, 3_600).unwrap();
    let mut a = Engine::new(spec.clone(), store()).unwrap();
    let mut b = Engine::new(spec.clone(), store()).unwrap();
    let txs = history();
    let mut offline = txs.clone();
    compute_offline(&mut offline_engine(spec.clone()).unwrap(), &mut offline).unwrap();

    let delay = spec.label_delay.secs() as f64;
    let mut served: Vec<Option<Vec<f32>>> = vec![None; txs.len()];
    let mut pending: std::collections::VecDeque<LabelEvent> = Default::default();
    let (mut start, mut turn) = (0, 0usize);
    while start < txs.len() {
        let end = (start + 97).min(txs.len());
        let now = txs[end - 1].time();
        let mut due = Vec::new();
        while pending.front().is_some_and(|l| l.time + delay <= now) {
            due.extend(pending.pop_front());
        }
        // Labels go to either engine: they land in the shared store once.
        a.label(&due).unwrap();
        b.label(&due).unwrap();
        let engine = if turn % 2 == 0 { &mut a } else { &mut b };
        let mut batch = txs[start..end].to_vec();
        engine.process(&mut batch).unwrap();
        for (i, t) in (start..end).zip(batch) {
            served[i] = Some(t.derived);
        }
        // Every third batch is delivered again to the other engine (a rebalance after a
        // crash): the same features come back and nothing is counted twice.
        if turn % 3 == 0 {
            let other = if turn % 2 == 0 { &mut b } else { &mut a };
            let mut again = txs[start..end].to_vec();
            let r = other.process(&mut again).unwrap();
            assert_eq!(r.replayed, end - start, "a redelivery is recognised");
            for (i, t) in (start..end).zip(again) {
                assert_eq!(
                    served[i].as_ref(),
                    Some(&t.derived),
                    "tx {i}: same features again"
                );
            }
        }
        pending.extend(txs[start..end].iter().map(label));
        start = end;
        turn += 1;
    }
    let mut risky = 0;
    for (i, (s, o)) in served.iter().zip(&offline).enumerate() {
        assert_eq!(s.as_ref(), Some(&o.derived), "tx {i}: served vs offline");
        risky += usize::from(o.derived[9..12].iter().any(|&r| r > 0.0));
    }
    assert!(risky > 20, "terminal risk exercised ({risky})");
}

/// A Redis server of this test's own, so it can be killed and started again.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh up redis installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn while_redis_is_down_batches_wait_and_nothing_is_lost() {
    // The shared server must exist: this test also needs its binary.
    common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    let mut redis = OwnRedis::start();
    let mut cfg = VelocityConfig {
        enabled: true,
        store: StoreKind::Redis,
        ..VelocityConfig::default()
    };
    cfg.redis.url = fraudstream::secret::Secret::new(format!("redis://127.0.0.1:{}", redis.port));
    cfg.redis.timeout = Duration::from_millis(500);
    let velocity = std::sync::Arc::new(Velocity::from_config(&cfg).unwrap().unwrap());
    let txs = history();
    let mut offline = txs.clone();
    compute_offline(
        &mut offline_engine(VelocitySpec::handbook()).unwrap(),
        &mut offline,
    )
    .unwrap();
    let rows =
        |range: std::ops::Range<usize>| -> Vec<Transaction> { common::unlabelled(&txs[range]) };
    // The labels feed ran ahead (a replay): labels never age out counters, and the
    // delayed windows read only buckets whose labels are due, so this matches offline.
    let labels: Vec<LabelEvent> = txs.iter().map(label).collect();
    velocity.apply_labels(&labels).unwrap();
    let half = txs.len() / 2;
    let mut first = rows(0..half);
    let abort = tokio_util::sync::CancellationToken::new();
    velocity.abort_on(abort.clone());
    assert!(velocity.compute(&mut first).unwrap().notices.is_empty());
    redis.kill();
    let v = velocity.clone();
    let mut second = rows(half..txs.len());
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        v.compute(&mut second).unwrap();
        (second, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(!waiting.is_finished(), "the batch waits for Redis");
    redis.up();
    let (second, waited) = waiting.join().unwrap();
    assert!(waited >= Duration::from_millis(1_400), "{waited:?}");
    for (r, o) in first.iter().chain(&second).zip(&offline) {
        assert_eq!(
            r.derived, o.derived,
            "tx {}: features after the outage",
            r.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_detectors_killed_mid_stream_count_every_update_once() {
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    common::group::count_every_update_once(&url, "velkill", Kills::Yes, 0, |_| {}).await;
}

/// `txs` with wrong times inserted (issue 22): milliseconds sent as seconds, ±1e300, a
/// year back, and far ahead of the stream while before the wall clock; each on a card
/// and terminal the stream uses.
fn with_wrong_times(txs: &[Transaction]) -> Vec<Transaction> {
    let mut out = Vec::with_capacity(txs.len() + txs.len() / 50);
    for (i, t) in txs.iter().enumerate() {
        if i > 10 && i % 50 == 0 {
            let mut p = txs[i / 2].clone();
            p.id = format!("wrong-{i}");
            p.values[fraudstream::schema::TIME] = match (i / 50) % 5 {
                0 => t.time() * 1_000.0,
                1 => 1e300,
                2 => -1e300,
                3 => t.time() - 365.0 * 86_400.0,
                _ => t.time() + 120.0 * 86_400.0,
            };
            out.push(p);
        }
        out.push(t.clone());
    }
    out
}

/// Each entity's buckets: `(bucket, count, frauds)`.
type EntityState = Vec<(String, Vec<(i64, u32, u32)>)>;

/// Every bucket from `since` on of every entity `txs` touches, as stored under
/// `settings`' prefix.
fn entity_state(settings: &RedisSettings, txs: &[Transaction], since: i64) -> EntityState {
    let mut store = RedisStore::new(settings.clone(), 10_000, 3_600).unwrap();
    let mut keys: Vec<(Entity, String)> = txs
        .iter()
        .flat_map(|t| {
            [
                t.card_id.clone().map(|c| (Entity::CardId, c)),
                t.terminal_id.clone().map(|c| (Entity::TerminalId, c)),
            ]
        })
        .flatten()
        .collect();
    keys.sort();
    keys.dedup();
    let refs: Vec<(Entity, &str)> = keys.iter().map(|(e, id)| (*e, id.as_str())).collect();
    let buckets = store.buckets(&refs, since).unwrap();
    keys.iter()
        .zip(buckets)
        .map(|((e, id), b)| {
            (
                format!("{}:{id}", e.field()),
                b.iter().map(|x| (x.idx, x.count, x.frauds)).collect(),
            )
        })
        .collect()
}

/// The reproduction of issue 22 on Redis: wrong times (a millisecond `Time` once moved the
/// store's clock and deleted the buckets of every card it touched, for good) count in no
/// entity; every other row gets the offline features, and the stored state is the state
/// of the clean stream.
#[test]
fn wrong_times_neither_count_nor_trim_on_redis() {
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    let spec = VelocitySpec::handbook();
    let clean = history();
    let rows = with_wrong_times(&clean);
    let mut offline = clean.clone();
    compute_offline(&mut offline_engine(spec.clone()).unwrap(), &mut offline).unwrap();
    let run = |rows: &[Transaction]| {
        let s = settings(&url);
        let mut engine = Engine::new(
            spec.clone(),
            RedisStore::new(s.clone(), spec.horizon_buckets(), 3_600).unwrap(),
        )
        .unwrap();
        let mut features: HashMap<String, Vec<f32>> = HashMap::new();
        let mut refused = Vec::new();
        for chunk in rows.chunks(61) {
            let mut batch = chunk.to_vec();
            let r = engine.process(&mut batch).unwrap();
            refused.extend(r.out_of_range.into_iter().map(|o| o.tx_id));
            // Labels as they come (the delayed windows read only buckets a week old):
            // those of the clean rows, as the offline reference has them.
            let labels: Vec<LabelEvent> = chunk
                .iter()
                .filter(|t| !t.id.starts_with("wrong-"))
                .map(label)
                .collect();
            engine.label(&labels).unwrap();
            features.extend(batch.into_iter().map(|t| (t.id, t.derived)));
        }
        (s, features, refused)
    };
    let (poisoned, features, refused) = run(&rows);
    for o in &offline {
        assert_eq!(features[&o.id], o.derived, "tx {}", o.id);
    }
    let wrong: Vec<&str> = rows
        .iter()
        .filter(|t| t.id.starts_with("wrong-"))
        .map(|t| t.id.as_str())
        .collect();
    assert!(wrong.len() >= 10, "{}", wrong.len());
    for w in &wrong {
        assert!(refused.iter().any(|r| r == w), "{w} counted");
    }
    let (clean_run, _, none) = run(&clean);
    assert!(none.is_empty(), "{none:?}");
    // What the features still read (older buckets are trimmed as batches happen to fall).
    let newest = clean.iter().map(Transaction::time).fold(f64::MIN, f64::max);
    let since = (newest / 3_600.0).floor() as i64 - spec.horizon_buckets() - 1;
    let (a, b) = (
        entity_state(&poisoned, &clean, since),
        entity_state(&clean_run, &clean, since),
    );
    let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(3).collect();
    assert!(
        differ.is_empty(),
        "the stored state differs from the clean stream's: {differ:?}"
    );
}

/// A hash whose oldest bucket is far behind what is kept (a far-past bucket counted
/// before any watermark) is trimmed in one update, not 64 buckets at a time for ever.
#[test]
fn trimming_catches_up_from_a_far_past_bucket_in_one_update() {
    use fraudstream::velocity::store::Commit;
    let url = common::require("FRAUDSTREAM_TEST_REDIS", "redis");
    let s = settings(&url);
    let key = format!("{}:e:c:card-1", s.prefix);
    let mut store = RedisStore::new(s, 100, 3_600).unwrap();
    let card = [(Entity::CardId, "card-1")];
    let commit = |store: &mut RedisStore, id: &str, bucket: i64| {
        store
            .commit(&[Commit {
                tx_id: id,
                features: &[1.0],
                keys: &card,
                bucket,
                amount: 1.0,
            }])
            .unwrap();
    };
    commit(&mut store, "far", i64::MIN / 2);
    commit(&mut store, "a", 1_000);
    commit(&mut store, "b", 1_010);
    store.expire_before(1_005);
    commit(&mut store, "c", 1_020);
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut names: Vec<String> = redis::cmd("HKEYS").arg(&key).query(&mut raw).unwrap();
    names.sort();
    assert_eq!(names, ["b1010", "b1020", "lo"]);
    let lo: i64 = redis::cmd("HGET")
        .arg(&key)
        .arg("lo")
        .query(&mut raw)
        .unwrap();
    assert_eq!(lo, 1_010);
}
