//! Entity features on a real Redis Cluster (`scripts/services.sh up redis-cluster`: three
//! masters and three replicas on 127.0.0.1): the store passes the conformance suite; two
//! detectors sharing it count every transaction and label once through kill -9s; and
//! through a slot migration (`redis-cli --cluster reshard`) and a master failover
//! (`DEBUG SLEEP` on a master until its replica is promoted) under load; and, with
//! `velocity.redis.wait_replicas = 1`, through a master killed outright.
//!
//! The tests take turns (one lock): a reshard or a failover would otherwise land in the
//! middle of another test's measurements.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::group::{Kills, count_every_update_once};
use fraudstream::velocity::conformance;
use fraudstream::velocity::redis::{RedisSettings, RedisStore};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_url() -> String {
    common::require("FRAUDSTREAM_TEST_REDIS_CLUSTER", "redis-cluster")
}

/// The cluster's nodes as `(port, id, is master, slots it serves)`, from one node's view.
fn nodes(url: &str) -> Vec<(u16, String, bool, usize)> {
    let port = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .next()
        .and_then(|h| h.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a port in the cluster URL");
    let out = redis_cli(port, &["cluster", "nodes"]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let master = f.get(2)?.contains("master") && !f[2].contains("fail");
            let slots = f
                .get(8..)
                .unwrap_or_default()
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                    }
                    None => 1,
                })
                .sum();
            Some((port, f[0].to_owned(), master, slots))
        })
        .collect()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli (scripts/services.sh up redis-cluster installs it)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until every node agrees the cluster is whole (all slots served, no migration).
fn wait_healthy(url: &str) {
    let port = nodes(url)[0].0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(["--cluster", "check", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster did not heal");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn cluster_store_conforms() {
    let _turn = TURN.blocking_lock();
    let url = cluster_url();
    wait_healthy(&url);
    conformance::run(|| {
        let settings = RedisSettings {
            url: url.clone(),
            prefix: common::unique("fs-cluster"),
            served_ttl: Duration::from_secs(3_600),
            timeout: Duration::from_secs(2),
            wait_replicas: 0,
        };
        RedisStore::new(settings, 10_000, 3_600).unwrap()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_detectors_killed_mid_stream_on_a_cluster_count_every_update_once() {
    let _turn = TURN.lock().await;
    let url = cluster_url();
    wait_healthy(&url);
    count_every_update_once(&url, "clkill", Kills::Yes, 0, |_| {}).await;
}

/// While two detectors work through the stream, 1,000 slots move from one master to
/// another, then a master sleeps past the node timeout and its replica takes over: the
/// detectors' batches wait and retry, and every update still counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_and_a_failover_under_two_detectors_count_every_update_once() {
    let _turn = TURN.lock().await;
    let url = cluster_url();
    wait_healthy(&url);
    let before = nodes(&url);
    let mut masters: Vec<&(u16, String, bool, usize)> = before.iter().filter(|n| n.2).collect();
    assert!(masters.len() >= 3, "three masters: {before:?}");
    // From the master with the most slots to the one with the fewest (earlier runs on
    // the same cluster moved slots too).
    masters.sort_by_key(|n| std::cmp::Reverse(n.3));
    let (from, to) = (masters[0].clone(), masters[masters.len() - 1].clone());
    let sleeper = masters[1].clone();
    let mut reshard: Option<std::thread::JoinHandle<std::process::Output>> = None;
    let mut sleep: Option<Child> = None;
    let run = count_every_update_once(&url, "clmove", Kills::No, 0, |k| match k {
        1 => {
            let (port, from, to) = (from.0, from.1.clone(), to.1.clone());
            reshard = Some(std::thread::spawn(move || {
                Command::new("redis-cli")
                    .args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
                    .args(["--cluster-from", &from, "--cluster-to", &to])
                    .args(["--cluster-slots", "1000", "--cluster-yes"])
                    .output()
                    .expect("redis-cli --cluster reshard")
            }));
        }
        4 => {
            let out = reshard.take().expect("reshard started").join().unwrap();
            assert!(
                out.status.success(),
                "reshard failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Asleep past the node timeout (2 s): its replica is promoted meanwhile.
            sleep = Some(
                Command::new("redis-cli")
                    .args(["-p", &sleeper.0.to_string(), "debug", "sleep", "8"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-cli debug sleep"),
            );
        }
        _ => {}
    })
    .await;
    if let Some(mut s) = sleep {
        s.wait().expect("the sleep ends");
    }
    wait_healthy(&url);
    let after = nodes(&url);
    let slots = |id: &str| after.iter().find(|n| n.1 == id).map_or(0, |n| n.3);
    assert_eq!(
        slots(&to.1),
        to.3 + 1_000,
        "the reshard moved 1,000 slots: {after:?}"
    );
    let slept = after
        .iter()
        .find(|n| n.1 == sleeper.1)
        .expect("the slept node");
    assert!(
        !slept.2,
        "the slept master was replaced by its replica: {after:?}"
    );
    assert!(
        run.store_errors > 0,
        "the detectors never waited for the store: the test proves nothing ({run:?})"
    );
}

/// A master killed outright (SIGKILL) while two detectors run with
/// `velocity.redis.wait_replicas = 1`: its replica is promoted, the detectors' batches
/// wait (no master may lack its replica) until the killed node is started again and
/// rejoins as the new master's replica, and nothing they were told was stored is lost:
/// every update counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_outright_loses_nothing_with_wait_replicas() {
    let _turn = TURN.lock().await;
    let url = cluster_url();
    wait_healthy(&url);
    let before = nodes(&url);
    let victim = before
        .iter()
        .find(|n| n.2 && n.3 > 0)
        .expect("a master with slots")
        .clone();
    let info = redis_cli(victim.0, &["info", "server"]);
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("the master's process id");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = count_every_update_once(&url, "clkill9", Kills::No, 1, |k| match k {
        2 => {
            let killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success(), "kill -9 {pid}");
            // Its replica must be promoted before it comes back: a master restarted from
            // its append-only file first would make its replica resynchronise from it.
            let deadline = Instant::now() + Duration::from_secs(30);
            let other = before
                .iter()
                .find(|n| n.0 != victim.0)
                .expect("another node");
            while !redis_cli(other.0, &["cluster", "nodes"])
                .lines()
                .any(|l| l.starts_with(&victim.1) && l.contains("fail") && !l.contains("fail?"))
                || redis_cli(other.0, &["cluster", "info"]).contains("cluster_state:fail")
            {
                assert!(Instant::now() < deadline, "no failover after the kill");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        4 => {
            // Started again by the script that runs it (same state directory and ports).
            let up = Command::new(format!("{root}/scripts/services.sh"))
                .args(["up", "redis-cluster"])
                .stdout(Stdio::null())
                .status()
                .expect("scripts/services.sh");
            assert!(up.success(), "scripts/services.sh up redis-cluster");
        }
        _ => {}
    })
    .await;
    wait_healthy(&url);
    let after = nodes(&url);
    let back = after
        .iter()
        .find(|n| n.1 == victim.1)
        .expect("the killed node");
    assert!(
        !back.2,
        "the killed master came back as a replica: {after:?}"
    );
    assert!(
        run.store_errors > 0,
        "the detectors never waited for the store: the test proves nothing ({run:?})"
    );
}
