//! A group of two detectors sharing entity state on Redis (one server or a cluster),
//! through kills and the store's own disturbances: every update counted once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::TestConfig;
use super::detector::{Deployment, Detector, committed_offsets};
use super::{lake_features, publish_velocity_model, unique, unlabelled};
use fraudstream::schema::Transaction;
use fraudstream::velocity::redis::{RedisSettings, RedisStore};
use fraudstream::velocity::{Entity, StateStore, VelocitySpec};
use loadgen::simulate::{SimParams, label_json, simulate_transactions};

/// What one entity's buckets must add up to.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    count: u64,
    frauds: u64,
    sum: f64,
}

/// The sum of a counter's series whose line contains `filter`, from a `/metrics` text.
fn counter(metrics: &str, name: &str, filter: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What a detector's `/metrics` says of the run: transactions the velocity stage
/// recognised as redelivered, and store calls that failed (and were retried).
fn replays_and_errors(metrics: &str) -> (u64, u64) {
    (
        counter(
            metrics,
            "fraudstream_velocity_transactions_total",
            "outcome=\"replayed\"",
        ),
        counter(metrics, "fraudstream_velocity_store_errors_total", ""),
    )
}

/// What a group run went through.
#[derive(Debug, Clone, Copy)]
pub struct GroupRun {
    /// Detectors killed.
    pub kills: usize,
    /// Transactions the velocity stages recognised as redelivered.
    pub replayed: u64,
    /// Store calls that failed and were retried.
    pub store_errors: u64,
}

/// Produce the labels of `burst` to `topic`.
async fn produce_labels(d: &Deployment, topic: &str, burst: &[Transaction]) {
    let keys: Vec<&str> = burst.iter().map(|t| t.id.as_str()).collect();
    let payloads: Vec<String> = burst
        .iter()
        .map(|t| label_json(t, t.label.unwrap()))
        .collect();
    d.produce_to(topic, &keys, &payloads).await;
}

/// Start detector `i` of the group (1 or 2) as a process; `n` numbers its log.
fn start_detector(d: &Deployment, base: &TestConfig, group: &str, i: usize, n: u32) -> Detector {
    let name = format!("{group}-d{i}");
    let config = d.write(&base.clone().member(&name), &format!("{name}.toml"));
    d.spawn(&config, n)
}

/// Whether the group's detectors are killed (SIGKILL) and restarted mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kills {
    /// One detector killed in each of the first seven of eight bursts.
    Yes,
    /// None: the disturbance is elsewhere (the store's servers).
    No,
}

/// Two detector processes on Kafka sharing the Redis store at `url` (one server or a
/// cluster), fed a simulated stream in eight bursts with its labels a burst behind:
/// `disturb(k)` runs after burst `k` is produced (a reshard, a failover), and with
/// [`Kills::Yes`] a detector is killed in each of the first seven bursts and restarted;
/// the detectors run with `velocity.redis.wait_replicas = wait_replicas`.
/// At the end every card's and terminal's buckets add up to exactly its transactions
/// and its frauds, there is one verdict per transaction, and every lake row holds the
/// features recorded for its transaction.
pub async fn count_every_update_once(
    url: &str,
    name: &str,
    kill: Kills,
    wait_replicas: u32,
    mut disturb: impl FnMut(usize),
) -> GroupRun {
    let d = Deployment::new(name).await;
    let dir = d.dir.path();
    let spec = VelocitySpec::handbook();
    // 20 days: no bucket leaves the 30-day windows, so the buckets must add up to every
    // transaction exactly.
    let txs = simulate_transactions(&SimParams {
        customers: 150,
        terminals: 1_000,
        days: 20,
        seed: 21,
        ..SimParams::default()
    });

    // A model with the handbook's features, published where the detectors look.
    publish_velocity_model(dir, &txs);

    // Labels come on a topic the group reads once (`<group>.labels`), a burst behind the
    // transactions (chargebacks arrive later).
    let labels_topic = format!("{}.labels", d.topic);
    let prefix = unique(name);
    let base = d
        .config(true)
        .velocity_on_redis(url, &prefix)
        .set("velocity.redis.wait_replicas", i64::from(wait_replicas))
        .set("velocity.labels_topic", labels_topic.as_str());
    let mut detectors = [
        Some(start_detector(&d, &base, name, 1, 1)),
        Some(start_detector(&d, &base, name, 2, 2)),
    ];
    let mut starts = 2;

    // The stream in eight bursts, keyed by card (each card's transactions in order on one
    // partition); a detector is killed while it works through a burst, and restarted.
    let stream = unlabelled(&txs);
    let (mut kills, mut replayed, mut store_errors) = (0, 0, 0);
    let bursts: Vec<(&[Transaction], &[Transaction])> = stream
        .chunks(stream.len().div_ceil(8))
        .zip(txs.chunks(stream.len().div_ceil(8)))
        .collect();
    for (k, (burst, labelled)) in bursts.iter().enumerate() {
        d.produce_txs(burst, |t| t.card_id.as_deref().unwrap_or(&t.id))
            .await;
        if k > 0 {
            produce_labels(&d, &labels_topic, bursts[k - 1].1).await;
        }
        if k == bursts.len() - 1 {
            produce_labels(&d, &labels_topic, labelled).await;
        }
        disturb(k);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if kill == Kills::Yes && k < 7 {
            let i = k % 2;
            let mut victim = detectors[i].take().unwrap();
            assert!(
                victim.alive(),
                "d{} exited on its own:\n{}",
                i + 1,
                victim.log_text()
            );
            let (r, e) = replays_and_errors(&victim.metrics().await);
            (replayed, store_errors) = (replayed + r, store_errors + e);
            victim.signal("KILL");
            victim.wait(Duration::from_secs(10)).expect("killed");
            kills += 1;
            starts += 1;
            let restarted = start_detector(&d, &base, name, i + 1, starts);
            // Up again (serving its API) before the next burst, so the next kill lands
            // on a detector at work.
            let up_by = Instant::now() + Duration::from_secs(60);
            while !restarted.log_text().contains("api: http://") {
                assert!(
                    Instant::now() < up_by,
                    "d{} did not restart:\n{}",
                    i + 1,
                    restarted.log_text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            detectors[i] = Some(restarted);
        }
    }

    // Catch up: every partition of both topics committed to its end, then SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(240);
    let labels_group = format!("{}.labels", d.group);
    let behind = || {
        let mut o = d.offsets();
        o.extend(committed_offsets(&d.brokers, &labels_topic, &labels_group));
        o.iter().any(|(at, end)| at != end).then_some(o)
    };
    while let Some(o) = behind() {
        assert!(
            Instant::now() < deadline,
            "the detectors did not catch up: {o:?}\n{}",
            detectors
                .iter()
                .flatten()
                .map(Detector::log_text)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (i, slot) in detectors.iter_mut().enumerate() {
        let p = slot.as_mut().unwrap();
        let (r, e) = replays_and_errors(&p.metrics().await);
        (replayed, store_errors) = (replayed + r, store_errors + e);
        p.signal("TERM");
        let status = p.wait(Duration::from_secs(60)).expect("stops on SIGTERM");
        assert!(
            status.success(),
            "d{} stopped with {status}:\n{}",
            i + 1,
            p.log_text()
        );
    }
    // The lake and the verdicts are durable: a killed detector's last second of work is
    // uncommitted, so its successor is handed those transactions again.
    assert!(
        kill == Kills::No || replayed > 0,
        "no transaction was redelivered after {kills} kills: the test proves nothing"
    );

    // One verdict per transaction.
    assert_eq!(d.verdict_count().await, txs.len() as u64, "verdict items");

    // Every card's and terminal's buckets add up to its transactions and its frauds, each
    // counted once.
    let mut want: HashMap<(Entity, String), Totals> = HashMap::new();
    for t in &txs {
        let fraud = u64::from(t.label == Some(1));
        for (e, id) in [
            (Entity::CardId, t.card_id.clone().unwrap()),
            (Entity::TerminalId, t.terminal_id.clone().unwrap()),
        ] {
            let w = want.entry((e, id)).or_default();
            w.count += 1;
            w.sum += t.amount();
            // The handbook counts frauds per terminal only.
            if e == Entity::TerminalId {
                w.frauds += fraud;
            }
        }
    }
    let settings = RedisSettings {
        url: url.to_owned(),
        prefix: prefix.clone(),
        served_ttl: Duration::from_secs(3_600),
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
    };
    let mut store = RedisStore::new(settings, spec.horizon_buckets(), 3_600).unwrap();
    let entities: Vec<(Entity, String)> = want.keys().cloned().collect();
    let keys: Vec<(Entity, &str)> = entities.iter().map(|(e, id)| (*e, id.as_str())).collect();
    let buckets = store.buckets(&keys, i64::MIN).unwrap();
    let mut wrong = Vec::new();
    for (key, bs) in entities.iter().zip(&buckets) {
        let got = bs.iter().fold(Totals::default(), |t, b| Totals {
            count: t.count + u64::from(b.count),
            frauds: t.frauds + u64::from(b.frauds),
            sum: t.sum + b.sum,
        });
        let w = want[key];
        if got.count != w.count
            || got.frauds != w.frauds
            || (got.sum - w.sum).abs() > 0.01 * w.count as f64
        {
            wrong.push(format!("{key:?}: {got:?}, want {w:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} entities miscounted after {kills} kills, e.g. {:?}",
        wrong.len(),
        entities.len(),
        &wrong[..wrong.len().min(5)]
    );
    let frauds: u64 = want.values().map(|w| w.frauds).sum();
    assert!(frauds > 50, "labels exercised ({frauds} frauds)");

    // Features were recorded for every transaction, and every lake row (a redelivery's
    // too) holds exactly the recorded features.
    let ids: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    let served: HashMap<&str, Vec<f32>> = ids
        .chunks(1_000)
        .flat_map(|c| c.iter().copied().zip(store.served(c).unwrap()))
        .map(|(id, f)| {
            (
                id,
                f.unwrap_or_else(|| panic!("no features recorded for {id}")),
            )
        })
        .collect();
    let lake = lake_features(&dir.join("lake"), &spec);
    let mut distinct = std::collections::HashSet::new();
    for (id, features) in &lake {
        assert_eq!(
            Some(features),
            served.get(id.as_str()),
            "{id}: lake row vs recorded features"
        );
        distinct.insert(id.as_str());
    }
    assert_eq!(distinct.len(), txs.len(), "every transaction in the lake");
    println!(
        "{name}: {} transactions, {kills} kills, {replayed} redelivered to the velocity stage, {store_errors} store errors retried, {} lake rows ({} twice), {} entities, {frauds} frauds: all counted once",
        txs.len(),
        lake.len(),
        lake.len() - distinct.len(),
        entities.len(),
    );
    GroupRun {
        kills,
        replayed,
        store_errors,
    }
}
