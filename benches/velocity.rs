//! The cost of entity features: the handbook's features over the handbook's simulated
//! data (`loadgen::simulate`), through the in-memory store, as the detector runs them:
//! batches of 512 in stream order, each batch's labels (sent a week after their
//! transactions) applied as they fall due. Prints the thread's CPU µs per transaction
//! (from the kernel's schedstat: robust to a busy machine); asserts nothing.
//!
//! `cargo bench --bench velocity [-- DAYS]` (default 60 days, about 580,000 transactions).
//!
//! `cargo bench --bench velocity -- redis redis://127.0.0.1:PORT [DAYS]` runs the same
//! stream through a Redis store (the engine's batch path: one pipelined round trip per
//! call) and prints wall time too: the detector's thread waits on the network; and the
//! Redis server's own CPU per transaction (`INFO cpu`), the group's shared cost.
//!
//! With `redis+cluster://HOST:PORT,…` the same stream goes through a Redis Cluster, and
//! the server CPU is read from every node (`CLUSTER NODES`, then `INFO cpu` on each):
//! summed over the masters (what one transaction costs the shards together), per master
//! (how evenly the slots share it), and over the replicas. The fleet's ceiling is about
//! one core per master divided by the masters' share of a transaction.
//!
//! `cargo bench --bench velocity -- distinct N` instead streams N transactions of N
//! distinct cards (one new card each, 10,000 terminals) through a store bounded at
//! 1,000,000 entities, and prints what it holds and the peak RSS: memory stays bounded.

use fraudstream::schema::Transaction;
use fraudstream::velocity::redis::{RedisSettings, RedisStore};
use fraudstream::velocity::{
    Engine, LabelEvent, MemoryLimits, MemoryStore, StateStore, VelocitySpec,
};
use loadgen::simulate::{SimParams, simulate_transactions};

/// This thread's CPU time in seconds (`/proc/thread-self/schedstat`, nanoseconds):
/// what the engine costs, however busy the machine.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field");
    ns as f64 * 1e-9
}

const BATCH: usize = 512;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// N transactions of N distinct cards through a bounded store.
fn distinct(n: usize) {
    let spec = VelocitySpec::handbook();
    let limits = MemoryLimits {
        horizon: spec.horizon_buckets(),
        max_entities: 1_000_000,
        max_served: 1_000_000,
    };
    let mut engine = Engine::new(spec, MemoryStore::new(limits)).expect("valid spec");
    let start = loadgen::simulate::HANDBOOK_START as f64;
    let mut cpu = 0.0;
    let mut done = 0;
    while done < n {
        let mut batch: Vec<Transaction> = (done..(done + BATCH).min(n))
            .map(|i| {
                let mut t = Transaction {
                    id: format!("tx{i}"),
                    card_id: Some(format!("card-{i}")),
                    terminal_id: Some(format!("t{}", i % 10_000)),
                    ..Default::default()
                };
                t.values[fraudstream::schema::TIME] = start + (i / 100) as f64;
                t.values[fraudstream::schema::AMOUNT] = 10.0;
                t
            })
            .collect();
        let t = cpu_seconds();
        engine.process(&mut batch).expect("memory store");
        cpu += cpu_seconds() - t;
        done += batch.len();
    }
    let s = engine.stats();
    println!(
        "{n} distinct cards: {} entities held (bound 1,000,000), {} evicted, {:.0} MiB of entity state ({:.0} bytes/entity), {:.0} MiB of remembered ids; {:.2} us CPU/tx; peak RSS {:.0} MiB",
        s.entities,
        s.evicted,
        s.entity_bytes as f64 / (1 << 20) as f64,
        s.bytes_per_entity(),
        s.served_bytes as f64 / (1 << 20) as f64,
        cpu * 1e6 / n as f64,
        vm_hwm_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "distinct") {
        let n = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000);
        distinct(n);
        return;
    }
    let days: u32 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(60);
    let p = SimParams {
        days,
        ..SimParams::default()
    };
    let txs = simulate_transactions(&p);
    let spec = VelocitySpec::handbook();
    let delay = spec.label_delay.secs() as f64;
    println!(
        "{} transactions, {} days; features: {}",
        txs.len(),
        days,
        spec.names().len()
    );
    let redis = args
        .iter()
        .position(|a| a == "redis")
        .and_then(|i| args.get(i + 1))
        .cloned();
    for run in 1..=3 {
        let server_before = redis.as_deref().map(server_cpu);
        let (engine_cpu, wall, labels_cpu, stats) = match &redis {
            None => {
                let limits = MemoryLimits {
                    horizon: spec.horizon_buckets(),
                    max_entities: 5_000_000,
                    max_served: 1_000_000,
                };
                let engine =
                    Engine::new(spec.clone(), MemoryStore::new(limits)).expect("valid spec");
                replay(engine, &txs, delay)
            }
            Some(url) => {
                let settings = RedisSettings {
                    url: url.clone(),
                    prefix: format!("bench-{}-{run}", std::process::id()),
                    served_ttl: std::time::Duration::from_secs(3_600),
                    timeout: std::time::Duration::from_secs(5),
                    wait_replicas: 0,
                };
                let store = RedisStore::new(settings, spec.horizon_buckets(), spec.bucket.secs())
                    .expect("redis url");
                replay(
                    Engine::new(spec.clone(), store).expect("valid spec"),
                    &txs,
                    delay,
                )
            }
        };
        let n = txs.len() as f64;
        println!(
            "run {run} ({}): features {:.2} us CPU/tx ({:.2} us wall/tx), labels {:.2} us CPU/tx; {} entities, {:.0} bytes/entity, {} ids remembered ({:.0} MiB)",
            if redis.is_some() { "redis" } else { "memory" },
            engine_cpu * 1e6 / n,
            wall * 1e6 / n,
            labels_cpu * 1e6 / n,
            stats.entities,
            stats.bytes_per_entity(),
            stats.served,
            stats.served_bytes as f64 / (1 << 20) as f64,
        );
        if let (Some(url), Some(before)) = (&redis, server_before) {
            print_server_cpu(&before, &server_cpu(url), n);
        }
    }
}

/// What the server CPU did between `before` and `after`, per transaction of `n`.
fn print_server_cpu(before: &[Node], after: &[Node], n: f64) {
    let used = |addr: &str, cpu: f64| {
        let was = before
            .iter()
            .find(|b| b.addr == addr)
            .map_or(0.0, |b| b.cpu);
        (cpu - was) * 1e6 / n
    };
    // Bytes of data the masters gained per transaction (nothing expires within a run).
    let grew: f64 = after
        .iter()
        .filter(|x| x.master)
        .map(|x| {
            x.memory
                - before
                    .iter()
                    .find(|b| b.addr == x.addr)
                    .map_or(0.0, |b| b.memory)
        })
        .sum::<f64>()
        / n;
    if let [one] = after {
        println!(
            "  the Redis server meanwhile (INFO cpu; features and labels, and anything else it served): {:.2} us CPU/tx; memory +{grew:.0} bytes/tx",
            used(&one.addr, one.cpu)
        );
        return;
    }
    let masters: Vec<(String, f64)> = after
        .iter()
        .filter(|x| x.master)
        .map(|x| (x.addr.clone(), used(&x.addr, x.cpu)))
        .collect();
    let replicas: f64 = after
        .iter()
        .filter(|x| !x.master)
        .map(|x| used(&x.addr, x.cpu))
        .sum();
    let total: f64 = masters.iter().map(|m| m.1).sum();
    let busiest = masters.iter().map(|m| m.1).fold(0.0, f64::max);
    println!(
        "  the cluster meanwhile (INFO cpu per node): masters {total:.2} us CPU/tx summed over {} shards (per master: {}), replicas {replicas:.2} us/tx; ceiling about {:.0} tx/s (one core per master, the busiest master's share {busiest:.2} us/tx); masters' memory +{grew:.0} bytes/tx",
        masters.len(),
        masters
            .iter()
            .map(|(a, c)| format!("{a} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        1e6 / busiest.max(1e-9),
    );
}

/// One Redis process: its address, whether it is a master, and the CPU seconds (user +
/// system, all its threads) it has used.
struct Node {
    addr: String,
    master: bool,
    cpu: f64,
    /// `used_memory`, bytes.
    memory: f64,
}

/// The CPU of the server at `url`, or of every node of the cluster at
/// `redis+cluster://…`.
fn server_cpu(url: &str) -> Vec<Node> {
    let Some(hosts) = url.strip_prefix("redis+cluster://") else {
        let (cpu, memory) = node_stats(url);
        return vec![Node {
            addr: url.to_owned(),
            master: true,
            cpu,
            memory,
        }];
    };
    let first = hosts.split(',').next().expect("a node");
    let mut c = redis::Client::open(format!("redis://{first}"))
        .and_then(|c| c.get_connection())
        .expect("cluster node reachable");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut c)
        .expect("CLUSTER NODES");
    nodes
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?.to_owned();
            let master = f.get(2)?.contains("master");
            let (cpu, memory) = node_stats(&format!("redis://{addr}"));
            Some(Node {
                addr,
                master,
                cpu,
                memory,
            })
        })
        .collect()
}

/// The CPU seconds (user + system, all its threads) the Redis server at `url` has used,
/// and the bytes its data takes (`used_memory`).
fn node_stats(url: &str) -> (f64, f64) {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis reachable");
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("memory")
        .query(&mut c)
        .expect("INFO cpu memory");
    let field = |name: &str| -> f64 {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| *k == name)
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum()
    };
    (
        field("used_cpu_user") + field("used_cpu_sys"),
        field("used_memory"),
    )
}

/// The stream through `engine` in batches, labels as they fall due: (features CPU s,
/// features wall s, labels CPU s, store sizes).
fn replay<S: StateStore>(
    mut engine: Engine<S>,
    txs: &[Transaction],
    delay: f64,
) -> (f64, f64, f64, fraudstream::velocity::StoreStats) {
    let mut rows = txs.to_vec();
    let mut pending = std::collections::VecDeque::new();
    let (mut features_s, mut wall_s, mut labels_s) = (0.0, 0.0, 0.0);
    for batch in rows.chunks_mut(BATCH) {
        let now = batch[0].time();
        let mut due = Vec::new();
        while pending
            .front()
            .is_some_and(|l: &LabelEvent| l.time + delay <= now)
        {
            due.extend(pending.pop_front());
        }
        let t = cpu_seconds();
        engine.label(&due).expect("store");
        labels_s += cpu_seconds() - t;
        let (t, w) = (cpu_seconds(), std::time::Instant::now());
        engine.process(batch).expect("store");
        features_s += cpu_seconds() - t;
        wall_s += w.elapsed().as_secs_f64();
        for tx in batch.iter() {
            pending.push_back(LabelEvent {
                tx_id: tx.id.clone(),
                time: tx.time(),
                label: tx.label.unwrap_or(0),
                card_id: tx.card_id.clone(),
                terminal_id: tx.terminal_id.clone(),
            });
        }
    }
    (features_s, wall_s, labels_s, engine.stats())
}
