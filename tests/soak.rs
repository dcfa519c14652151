//! The chaos soak: two detector processes in one consumer group (DynamoDB verdicts, the
//! HDFS lake, the alerts topic, all durable) consume what loadgen replays, with 2% of the
//! messages malformed or poison of every kind, while a seeded fault scheduler kill -9s and
//! restarts detectors, freezes (SIGSTOP) the broker, DynamoDB Local or the HDFS DataNode
//! for 5–30 s, and restarts HDFS. When the load ends and the faults stop, the detectors
//! catch up and are stopped with SIGTERM, and a verifier reads everything back and prints
//! one line:
//! - every valid transaction has exactly one verdict item (none missing, none extra);
//! - every invalid message is in the dead-letter topic with its reason (duplicates
//!   counted);
//! - every valid transaction is in the lake (duplicates counted);
//! - every fraud verdict has an alert (duplicates counted);
//! - no detector exited except by a kill or the final SIGTERM (status 0);
//! - the peak RSS of each detector.
//!
//! `make test` runs it for 3 minutes; `scripts/soak.sh --minutes N [--seed S]` for longer.
//! Settings: `FRAUDSTREAM_SOAK_MINUTES` (3), `FRAUDSTREAM_SOAK_SEED` (from the clock),
//! `FRAUDSTREAM_SOAK_RATE` (messages per second, 300).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::detector::{Deployment, Detector, read_topic};
use fraudstream::rng::Rng;
use fraudstream::schema::json::{DEFAULT_MAX_MESSAGE_BYTES, decode_transaction_limited};
use fraudstream::storage::BlobStore;
use fraudstream::storage::hdfs::HdfsStore;
use rdkafka::message::{Headers, Message};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn services(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let ok = Command::new("bash")
        .arg(script)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "services.sh {args:?} failed");
}

/// Peak resident memory (VmHWM) of a live process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One detector slot: its configuration and its current process.
struct Slot {
    config: PathBuf,
    process: Option<Detector>,
    starts: u32,
    peak_kib: u64,
    unexpected_exits: Vec<String>,
}

impl Slot {
    fn sample(&mut self) {
        if let Some(d) = &self.process
            && let Some(k) = peak_kib(d.child.id())
        {
            self.peak_kib = self.peak_kib.max(k);
        }
    }

    /// A detector that exited when nobody killed it: record it (with its log) and start
    /// another.
    fn watch(&mut self, d: &Deployment, id: usize) {
        let exited = self
            .process
            .as_mut()
            .and_then(|p| p.child.try_wait().unwrap());
        if let Some(status) = exited {
            let log = self.process.as_ref().unwrap().log_text();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            self.unexpected_exits
                .push(format!("d{id} exited with {status}; last lines:\n{tail}"));
            self.start(d, id);
        }
    }

    fn start(&mut self, d: &Deployment, id: usize) {
        self.starts += 1;
        self.process = Some(d.spawn(&self.config, (id * 1000) as u32 + self.starts));
    }

    fn kill(&mut self) {
        if let Some(p) = &mut self.process {
            self.peak_kib = self.peak_kib.max(peak_kib(p.child.id()).unwrap_or(0));
            p.signal("KILL");
            p.wait(Duration::from_secs(10)).expect("killed");
        }
        self.process = None;
    }
}

/// A fault, applied and then undone.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillDetector(usize),
    Freeze(&'static str),
    RestartHdfs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let minutes: f64 = env_or("FRAUDSTREAM_SOAK_MINUTES", 3.0);
    let seed: u64 = env_or(
        "FRAUDSTREAM_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let rate: u64 = env_or("FRAUDSTREAM_SOAK_RATE", 300);
    let hdfs = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    println!("soak: seed {seed}, {minutes} minutes, {rate} messages/s");
    let d = Deployment::new("soak").await;

    // Two detectors, one group, every sink durable, the lake on HDFS.
    let lake_dir = format!("/{}", common::unique("soak-lake"));
    let base = std::fs::read_to_string(d.write_config(true)).unwrap();
    let lake_local = format!("location = \"{}/lake\"", d.dir.path().display());
    assert!(base.contains(&lake_local));
    let mut slots: Vec<Slot> = (1..=2)
        .map(|i| {
            let text = base
                .replace(&lake_local, &format!("location = \"{hdfs}{lake_dir}\""))
                .replace("\"detector-1\"", &format!("\"soak-d{i}\""))
                .replace("writer_id = \"detector\"", &format!("writer_id = \"d{i}\""))
                .replace("max_age = \"1s\"", "max_age = \"2s\"");
            let config = d.dir.path().join(format!("soak-d{i}.toml"));
            std::fs::write(&config, text).unwrap();
            Slot {
                config,
                process: None,
                starts: 0,
                peak_kib: 0,
                unexpected_exits: Vec::new(),
            }
        })
        .collect();
    // The first detector trains and publishes the model; the second finds it.
    slots[0].start(&d, 1);
    assert!(
        wait_for_file(&d.dir.path().join("registry/models/LATEST"), 120).await,
        "no model published:\n{}",
        slots[0].process.as_ref().unwrap().log_text()
    );
    slots[1].start(&d, 2);

    // The load: the real file when present, else the shipped sample, looped.
    let full = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/creditcard.csv"
    ));
    let input = if full.exists() {
        full.to_path_buf()
    } else {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/creditcard-sample.csv"
        ))
    };
    let total = (minutes * 60.0) as u64 * rate;
    let loadgen = Path::new(env!("CARGO_BIN_EXE_fraudstream")).with_file_name("loadgen");
    let mut load: Child = Command::new(&loadgen)
        .arg("--input")
        .arg(&input)
        .args(["--loop", "--brokers", &d.brokers, "--topic", &d.topic])
        .args(["--rate", &rate.to_string(), "--limit", &total.to_string()])
        .args(["--malformed-ratio", "0.02", "--seed", &seed.to_string()])
        // The broker is frozen at times: wait it out rather than fail a send.
        .args(["--property", "message.timeout.ms=300000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it: cargo build -p loadgen)",
                loadgen.display()
            )
        });

    // The faults, from a seeded schedule, while the load runs.
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut faults: Vec<String> = Vec::new();
    let mut next_fault = started + Duration::from_secs(5 + rng.below(6) as u64);
    let mut restarts = 0;
    while load.try_wait().unwrap().is_none() {
        for (i, s) in slots.iter_mut().enumerate() {
            s.sample();
            s.watch(&d, i + 1);
        }
        if Instant::now() >= next_fault {
            let fault = match rng.below(10) {
                0..=2 => Fault::KillDetector(rng.below(2)),
                3 | 4 => Fault::Freeze("kafka"),
                5 | 6 => Fault::Freeze("dynamodb"),
                7 | 8 => Fault::Freeze("hdfs-datanode"),
                _ if restarts < 2 => Fault::RestartHdfs,
                _ => Fault::Freeze("kafka"),
            };
            let hold = Duration::from_secs(5 + rng.below(26) as u64);
            let at = started.elapsed().as_secs_f64();
            match fault {
                Fault::KillDetector(i) => {
                    slots[i].kill();
                    tokio::time::sleep(Duration::from_secs(1 + rng.below(3) as u64)).await;
                    slots[i].start(&d, i + 1);
                    faults.push(format!("t={at:.0}s kill -9 d{}", i + 1));
                }
                Fault::Freeze(service) => {
                    services(&["pause", service]);
                    let thaw = Thaw(service);
                    let until = Instant::now() + hold;
                    while Instant::now() < until {
                        for s in &mut slots {
                            s.sample();
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    drop(thaw);
                    faults.push(format!("t={at:.0}s SIGSTOP {service} {}s", hold.as_secs()));
                }
                Fault::RestartHdfs => {
                    restarts += 1;
                    services(&["restart", "hdfs"]);
                    faults.push(format!("t={at:.0}s restart hdfs"));
                }
            }
            println!("soak: fault {}", faults.last().unwrap());
            next_fault = Instant::now() + Duration::from_secs(3 + rng.below(8) as u64);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load_out = load.wait_with_output().unwrap();
    let load_report = String::from_utf8_lossy(&load_out.stderr).into_owned();
    assert!(load_out.status.success(), "loadgen failed: {load_report}");

    // Catch up: every partition committed to its end, then stop both with SIGTERM. The
    // backlog left by the faults can take a while (the services were frozen for much of
    // the run); what fails is a stall: no partition's commit moving for STALL, or a catch-up
    // longer than the load itself plus five minutes.
    const STALL: Duration = Duration::from_secs(120);
    let caught_up_by = Instant::now() + Duration::from_secs_f64(minutes * 60.0 + 300.0);
    let catch_up = Instant::now();
    let mut last = d.offsets();
    let mut moved_at = Instant::now();
    println!("soak: catching up from {last:?} (committed, end) per partition");
    while last.iter().any(|(at, high)| at != high) {
        for (i, s) in slots.iter_mut().enumerate() {
            s.sample();
            s.watch(&d, i + 1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = d.offsets();
        if now != last {
            moved_at = Instant::now();
            last = now;
        }
        assert!(
            moved_at.elapsed() < STALL,
            "the detectors stalled: no commit moved for {STALL:?} at {last:?}"
        );
        assert!(
            Instant::now() < caught_up_by,
            "the detectors did not catch up in time: {last:?}"
        );
    }
    println!(
        "soak: caught up in {:.0} s",
        catch_up.elapsed().as_secs_f64()
    );
    for (i, s) in slots.iter_mut().enumerate() {
        s.sample();
        let p = s.process.as_mut().unwrap();
        p.signal("TERM");
        let status = p.wait(Duration::from_secs(60)).expect("stops on SIGTERM");
        if !status.success() {
            s.unexpected_exits.push(format!(
                "d{} stopped with {status}:\n{}",
                i + 1,
                p.log_text()
            ));
        }
    }

    let report = verify(&d, &hdfs, &lake_dir).await;
    let exits: Vec<&String> = slots.iter().flat_map(|s| &s.unexpected_exits).collect();
    let line = format!(
        "soak: seed {seed}, {minutes} min, {} faults | {} | unexpected exits {} | peak RSS d1 {} MiB, d2 {} MiB",
        faults.len(),
        report.line,
        exits.len(),
        slots[0].peak_kib / 1024,
        slots[1].peak_kib / 1024,
    );
    println!("{line}");
    println!("soak: schedule: {}", faults.join("; "));
    for e in &exits {
        println!("soak: {e}");
    }
    assert!(report.ok, "{line}");
    assert!(exits.is_empty(), "{line}");
    assert!(
        !faults.is_empty(),
        "no fault was injected: the soak proves nothing"
    );
}

/// Resumes a frozen service even when the test fails half-way.
struct Thaw(&'static str);

impl Drop for Thaw {
    fn drop(&mut self) {
        services(&["resume", self.0]);
    }
}

async fn wait_for_file(path: &Path, seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

struct Report {
    line: String,
    ok: bool,
}

/// Read everything back and compare with what was produced.
async fn verify(d: &Deployment, hdfs: &str, lake_dir: &str) -> Report {
    // What was produced, classified by the detector's own rules.
    let produced: u64 = d.offsets().iter().map(|(_, high)| *high as u64).sum();
    let messages = read_topic(&d.brokers, &d.topic, produced as usize);
    assert_eq!(
        messages.len() as u64,
        produced,
        "could not read the input back"
    );
    let mut valid: HashSet<String> = HashSet::new();
    let mut invalid: HashMap<(i32, i64), &'static str> = HashMap::new();
    for m in &messages {
        let key = m.key();
        let default_id = || match key.map(std::str::from_utf8) {
            Some(Ok(k)) if !k.is_empty() => k.to_owned(),
            _ => format!("{}-{}-{}", m.topic(), m.partition(), m.offset()),
        };
        match decode_transaction_limited(
            m.payload().unwrap_or_default(),
            DEFAULT_MAX_MESSAGE_BYTES,
            default_id,
        ) {
            Ok(tx) => {
                valid.insert(tx.id);
            }
            Err(kind) => {
                invalid.insert((m.partition(), m.offset()), kind.code());
            }
        }
    }

    // Verdicts: exactly the valid ids.
    let items = scan_verdicts(d).await;
    let stored: HashSet<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
    let missing_verdicts = valid
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .count();
    let extra_verdicts = stored.iter().filter(|id| !valid.contains(**id)).count();

    // Dead letters: every invalid message, with its reason.
    let dead = read_topic(&d.brokers, &format!("{}.dlq", d.topic), invalid.len());
    let mut seen: HashMap<(i32, i64), u32> = HashMap::new();
    let mut wrong_reason = 0;
    for m in &dead {
        let h = |k: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == k))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let at = (
            h("source_partition").parse().unwrap_or(-1),
            h("source_offset").parse().unwrap_or(-1),
        );
        *seen.entry(at).or_default() += 1;
        if invalid
            .get(&at)
            .is_some_and(|code| *code != h("reason_code"))
        {
            wrong_reason += 1;
        }
    }
    let missing_dead = invalid.keys().filter(|k| !seen.contains_key(k)).count();
    let dup_dead: u32 = seen.values().map(|n| n - 1).sum();

    // The lake: every valid transaction.
    let lake = HdfsStore::new(hdfs, lake_dir, None).unwrap();
    let mut lake_rows = 0usize;
    let mut lake_ids: HashSet<String> = HashSet::new();
    for o in lake.list("").await.unwrap() {
        if !o.key.ends_with(".parquet") {
            continue;
        }
        let blob = lake.get(&o.key).await.unwrap();
        for id in parquet_ids(blob.data) {
            lake_rows += 1;
            lake_ids.insert(id);
        }
    }
    let missing_lake = valid.iter().filter(|id| !lake_ids.contains(*id)).count();
    let dup_lake = lake_rows - lake_ids.len();

    // Alerts: one for every fraud verdict.
    let frauds: HashSet<&str> = items
        .iter()
        .filter(|(_, fraud)| *fraud)
        .map(|(id, _)| id.as_str())
        .collect();
    let alerts = read_topic(&d.brokers, &format!("{}.alerts", d.topic), frauds.len());
    let alert_ids: Vec<String> = alerts
        .iter()
        .map(|m| String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
        .collect();
    let alerted: HashSet<&str> = alert_ids.iter().map(String::as_str).collect();
    let missing_alerts = frauds.iter().filter(|id| !alerted.contains(**id)).count();
    let dup_alerts = alert_ids.len() - alerted.len();

    let line = format!(
        "{produced} messages, {} valid, {} invalid | verdicts missing {missing_verdicts} extra {extra_verdicts} | \
         dead letters missing {missing_dead} wrong reason {wrong_reason} duplicated {dup_dead} | \
         lake missing {missing_lake} duplicated {dup_lake} | alerts {} missing {missing_alerts} duplicated {dup_alerts}",
        valid.len(),
        invalid.len(),
        frauds.len(),
    );
    let ok = missing_verdicts == 0
        && extra_verdicts == 0
        && missing_dead == 0
        && wrong_reason == 0
        && missing_lake == 0
        && missing_alerts == 0;
    Report { line, ok }
}

/// Every verdict item's id and fraud flag.
async fn scan_verdicts(d: &Deployment) -> Vec<(String, bool)> {
    let client = d.dynamo();
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&d.table)
            .projection_expression("tx_id, fraud")
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let id = match item.get("tx_id") {
                Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            let fraud = matches!(
                item.get("fraud"),
                Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            );
            out.push((id, fraud));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return out;
        }
    }
}

/// The `id` column of a Parquet file.
fn parquet_ids(data: bytes::Bytes) -> Vec<String> {
    use arrow::array::AsArray;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("id").unwrap().as_string::<i32>();
        ids.extend(col.iter().map(|v| v.unwrap_or_default().to_owned()));
    }
    ids
}
