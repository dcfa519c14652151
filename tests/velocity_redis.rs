//! Entity features on a real Redis (`scripts/services.sh up redis`): the store passes the
//! conformance suite; two engines sharing it, with redeliveries between them, serve the
//! features an offline pass computes and count every transaction once; and while Redis
//! is down the velocity stage waits and retries, losing nothing.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fraudstream::schema::Transaction;
use fraudstream::velocity::config::{StoreKind, VelocityConfig};
use fraudstream::velocity::redis::{RedisSettings, RedisStore};
use fraudstream::velocity::stage::Velocity;
use fraudstream::velocity::{
    Engine, LabelEvent, VelocitySpec, compute_offline, conformance, offline_engine,
};
use loadgen::simulate::{SimParams, simulate_transactions};

fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        prefix: common::unique("fs-test"),
        served_ttl: Duration::from_secs(3_600),
        timeout: Duration::from_secs(2),
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
    let rows = |range: std::ops::Range<usize>| -> Vec<fraudstream::stream::source::Incoming> {
        txs[range]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut t = t.clone();
                t.label = None;
                fraudstream::stream::source::Incoming::now(t, i as u64)
            })
            .collect()
    };
    // The labels feed ran ahead (a replay): labels never age out counters, and the
    // delayed windows read only buckets whose labels are due, so this matches offline.
    let labels: Vec<LabelEvent> = txs.iter().map(label).collect();
    velocity.apply_labels(&labels);
    let half = txs.len() / 2;
    let mut first = rows(0..half);
    let abort = tokio_util::sync::CancellationToken::new();
    velocity.abort_on(abort.clone());
    assert!(velocity.compute(&mut first).unwrap().is_empty());
    redis.kill();
    let v = velocity.clone();
    let mut second = rows(half..txs.len());
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
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
            r.tx.derived, o.derived,
            "tx {}: features after the outage",
            r.tx.id
        );
    }
}
