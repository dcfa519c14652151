//! A detector deployment against the real services: topics, a configuration file, the
//! detector built from it (in-process with [`Deployment::start`], exactly as
//! `fraudstream run` builds it, or as a separate `fraudstream` process with
//! [`Deployment::spawn`] for tests that kill it), and reading back what it wrote
//! (DynamoDB verdicts, committed offsets, lake rows).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fraudstream::config::Config;

use super::TestConfig;
use fraudstream::detector::{Detector as Built, DetectorError, Handles, Summary};
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{Dataset, ReadOptions, Transaction, read_dataset};
use fraudstream::shutdown::Shutdown;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
/// Partitions of the input topic.
pub const PARTITIONS: i32 = 3;

/// One detector deployment: its topics, table, group, files.
pub struct Deployment {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// DynamoDB endpoint.
    pub dynamodb: String,
    /// Input topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Verdict table.
    pub table: String,
    /// Working directory (config, logs, lake, model store).
    pub dir: tempfile::TempDir,
    /// The sample rows that `produce` replays.
    pub data: Dataset,
}

/// A detector running in this process.
pub struct InProcess {
    /// Its shared state.
    pub handles: Handles,
    /// Stops it.
    pub shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<Summary, DetectorError>>,
}

impl InProcess {
    /// Still running?
    pub fn alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stop it (drain, flush, commit) and return its summary.
    pub async fn stop(self) -> Result<Summary, DetectorError> {
        self.shutdown.stop();
        self.task.await.unwrap()
    }

    /// [`InProcess::stop`], which must end cleanly within `limit`.
    pub async fn stop_within(self, limit: Duration) -> Summary {
        tokio::time::timeout(limit, self.stop())
            .await
            .expect("stops within its deadline")
            .expect("a clean stop")
    }

    /// This process's `/metrics` text (one recorder per test binary).
    pub fn metrics(&self) -> String {
        fraudstream::telemetry::recorder().unwrap().render()
    }
}

/// A running detector process.
pub struct Detector {
    /// The process.
    pub child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Deployment {
    /// Topics (input, dead letters, alerts, labels) and names for one test.
    pub async fn new(prefix: &str) -> Self {
        let brokers = super::require("FRAUDSTREAM_TEST_KAFKA", "kafka");
        let dynamodb = super::require("FRAUDSTREAM_TEST_DYNAMODB", "dynamodb");
        let topic = super::unique(prefix);
        let names = [
            topic.clone(),
            format!("{topic}.dlq"),
            format!("{topic}.alerts"),
            format!("{topic}.labels"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        super::create_topics(&brokers, &refs, PARTITIONS).await;
        let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
        Self {
            brokers,
            dynamodb,
            group: super::unique("group"),
            table: super::unique("verdicts"),
            topic,
            dir: tempfile::tempdir().unwrap(),
            data,
        }
    }

    /// The configuration: Kafka source, DynamoDB verdicts, a local lake (durable when
    /// `lake_durable`), a local model store trained from the sample on first start, the
    /// S3 test server as `[s3]`.
    pub fn config(&self, lake_durable: bool) -> TestConfig {
        let d = self.dir.path().display();
        let durable = if lake_durable {
            vec!["verdicts", "alerts", "lake"]
        } else {
            vec!["verdicts", "alerts"]
        };
        TestConfig::empty()
            .set("source.kind", "kafka")
            .set("scoring.batch_size", 200)
            .set("scoring.batch_timeout", "5ms")
            .set("alerts.stdout", false)
            .set("delivery.durable", durable)
            .set("delivery.shutdown_deadline", "30s")
            .set("bootstrap.history", SAMPLE)
            .set("kafka.brokers", self.brokers.as_str())
            .set("kafka.topics", vec![self.topic.as_str()])
            .set("kafka.group_id", self.group.as_str())
            .set("kafka.dlq_topic", format!("{}.dlq", self.topic))
            .set("kafka.alerts_topic", format!("{}.alerts", self.topic))
            .kafka_property("session.timeout.ms", "6000")
            // A killed member is dropped from a rebalance after this (the broker waits
            // that long).
            .kafka_property("max.poll.interval.ms", "10000")
            // A restarted detector takes its own place in the group at once.
            .kafka_property("group.instance.id", "detector-1")
            .kafka_property("statistics.interval.ms", "1000")
            .with_test_dynamodb(&self.table)
            .set("lake.location", format!("{d}/lake"))
            .set("lake.writer.max_rows", 1000)
            .set("lake.writer.max_age", "1s")
            .set("lake.writer.writer_id", "detector")
            .set("models.location", format!("{d}/registry"))
            .set("models.poll_interval", "10s")
            .with_test_s3()
            .set("api.address", "127.0.0.1:0")
    }

    /// [`Deployment::config`] written to `detector.toml` in the working directory.
    pub fn write_config(&self, lake_durable: bool) -> PathBuf {
        self.write(&self.config(lake_durable), "detector.toml")
    }

    /// `config` written to `name` in the working directory.
    pub fn write(&self, config: &TestConfig, name: &str) -> PathBuf {
        config.write(self.dir.path().join(name))
    }

    /// Build the detector from `config` in this process and run it on a task.
    pub async fn start(&self, config: &Path) -> InProcess {
        let cfg = Config::load(config).unwrap();
        let detector = Built::build(&cfg).await.unwrap();
        let shutdown = Shutdown::new(cfg.delivery.shutdown_deadline);
        InProcess {
            handles: detector.handles(),
            shutdown: shutdown.clone(),
            task: tokio::spawn(detector.run(shutdown)),
        }
    }

    /// Start `fraudstream run --config CONFIG`; `n` numbers its log file.
    pub fn spawn(&self, config: &Path, n: u32) -> Detector {
        self.spawn_command("run", config, n)
    }

    /// Start `fraudstream COMMAND --config CONFIG` (`run`, `serve`); `n` numbers its log.
    pub fn spawn_command(&self, command: &str, config: &Path, n: u32) -> Detector {
        self.spawn_with_env(command, config, n, &[])
    }

    /// [`Deployment::spawn_command`] with environment variables (`FRAUDSTREAM_FAILPOINT`).
    pub fn spawn_with_env(
        &self,
        command: &str,
        config: &Path,
        n: u32,
        env: &[(&str, &str)],
    ) -> Detector {
        let log = self.dir.path().join(format!("{command}-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = super::fraudstream()
            .args([command, "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("FRAUDSTREAM_TEST_DETECTOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Detector { child, log }
    }

    /// Produce transactions `from..to` (sample rows, cycled; ids `tx-<i>`, keyed by id).
    pub async fn produce(&self, from: usize, to: usize) {
        let txs: Vec<Transaction> = (from..to)
            .map(|i| {
                let mut tx = self.data.row(i % self.data.len());
                tx.id = format!("tx-{i}");
                tx
            })
            .collect();
        self.produce_txs(&txs, |t| &t.id).await;
    }

    /// Produce `txs` as JSON, each keyed by `key` (its partition), in order.
    pub async fn produce_txs(&self, txs: &[Transaction], key: impl Fn(&Transaction) -> &str) {
        let payloads: Vec<String> = txs.iter().map(encode_transaction).collect();
        let keys: Vec<&str> = txs.iter().map(key).collect();
        self.produce_to(&self.topic, &keys, &payloads).await;
    }

    /// Produce `payloads` to `topic`, the i-th keyed by `keys[i]`, in order.
    pub async fn produce_to(&self, topic: &str, keys: &[&str], payloads: &[String]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let sends = keys.iter().zip(payloads).map(|(k, p)| {
            producer.send(
                FutureRecord::to(topic).key(*k).payload(p),
                Duration::from_secs(30),
            )
        });
        for s in futures_util::future::join_all(sends).await {
            s.map_err(|(e, _)| e).unwrap();
        }
    }

    /// Produce `payloads` to `topic` in one transaction of a transactional producer
    /// (`transactional.id` = `id`), the i-th keyed by `keys[i]`; committed when `commit`,
    /// else aborted. Each partition written gets a marker after the messages.
    pub async fn produce_transaction(
        &self,
        id: &str,
        topic: &str,
        keys: &[&str],
        payloads: &[String],
        commit: bool,
    ) {
        produce_transaction(&self.brokers, id, topic, keys, payloads, commit).await;
    }

    /// A DynamoDB client for the test server.
    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        super::dynamo_at(&self.dynamodb)
    }

    /// Verdict items in the table (0 before the detector has created it).
    pub async fn verdict_count(&self) -> u64 {
        let client = self.dynamo();
        let mut total = 0u64;
        let mut start = None;
        loop {
            let Ok(out) = client
                .scan()
                .table_name(&self.table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
            else {
                return 0;
            };
            total += out.count() as u64;
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return total;
            }
        }
    }

    /// Every verdict item's transaction id and model version.
    pub async fn verdict_versions(&self) -> Vec<(String, String)> {
        let client = self.dynamo();
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&self.table)
                .projection_expression("tx_id, model_version")
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let s = |k: &str| match item.get(k) {
                    Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
                    _ => String::new(),
                };
                out.push((s("tx_id"), s("model_version")));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return out;
            }
        }
    }

    /// Every verdict item's transaction id.
    pub async fn verdict_ids(&self) -> Vec<String> {
        let client = self.dynamo();
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let out = client
                .scan()
                .table_name(&self.table)
                .projection_expression("tx_id")
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in out.items() {
                if let Some(aws_sdk_dynamodb::types::AttributeValue::S(id)) = item.get("tx_id") {
                    ids.push(id.clone());
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return ids;
            }
        }
    }

    /// Wait until the table holds at least `n` verdicts; false on timeout.
    pub async fn wait_for_verdicts(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.verdict_count().await >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Committed offset and end offset of every input partition.
    pub fn offsets(&self) -> Vec<(i64, i64)> {
        committed_offsets(&self.brokers, &self.topic, &self.group)
    }

    /// The ids of the lake's rows whose verdict alerts (review or block).
    pub fn lake_frauds(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for p in super::parquet_files(&self.dir.path().join("lake")) {
            let data = bytes::Bytes::from(std::fs::read(&p).unwrap());
            for row in super::parquet_columns(data, &["id", "outcome"]) {
                if row[1] != "approve" {
                    ids.push(row[0].clone());
                }
            }
        }
        ids
    }

    /// Transaction ids in the lake's Parquet files, with duplicates.
    pub fn lake_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for p in super::parquet_files(&self.dir.path().join("lake")) {
            let (data, _) = match read_dataset(p.to_str().unwrap(), ReadOptions::default()) {
                // An empty file: a takeover fenced an unfinished write with it.
                Err(fraudstream::schema::ReadError::Empty { .. }) => continue,
                other => other.unwrap(),
            };
            ids.extend((0..data.len()).map(|i| data.row(i).id));
        }
        ids
    }
}

impl Detector {
    /// Send a signal (`"KILL"`, `"TERM"`, `"STOP"`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; its status, or `None` after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Stopped by a signal (state `T` in `/proc/<pid>/stat`)?
    pub fn stopped(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.split_whitespace().next().map(|state| state == "T")
            })
            .unwrap_or(false)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` text, from the address it logged.
    pub async fn metrics(&self) -> String {
        let log = self.log_text();
        let Some(addr) = log
            .lines()
            .find_map(|l| l.split("api: http://").nth(1))
            .and_then(|rest| rest.split('/').next())
        else {
            return String::new();
        };
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return String::new();
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut out = String::new();
        let _read = s.read_to_string(&mut out).await;
        out
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        if self.alive() {
            let _killed = self.child.kill();
            let _waited = self.child.wait();
        }
    }
}

/// Distinct ids and whether every one of `tx-0..tx-<n>` is among them.
pub fn covers(ids: &[String], n: usize) -> (usize, bool) {
    let set: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let all = (0..n).all(|i| set.contains(format!("tx-{i}").as_str()));
    (set.len(), all)
}

/// Committed offset (-1 for none) and end offset of every partition of `topic` for `group`.
pub fn committed_offsets(brokers: &str, topic: &str, group: &str) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| {
            let (_, high) = c
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
                .unwrap();
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (at, high)
        })
        .collect()
}

/// All messages of a topic, read from the beginning by a throwaway consumer.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expect: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // As the detector sets it: some brokers (noida-db) answer one fetch with the whole
        // backlog, past librdkafka's default limit of 100 MB (then `BadMessage`).
        .set("receive.message.max.bytes", "1000000000")
        // Transactional outputs: only what was committed, once.
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    // Thirty seconds without a message ends the read (a long topic takes longer).
    let mut deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            deadline = Instant::now() + Duration::from_secs(30);
            out.push(m.detach());
            if out.len() >= expect {
                // Keep polling briefly to catch anything beyond what we expect.
                let extra_deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < extra_deadline {
                    if let Some(m) = c.poll(Duration::from_millis(100)) {
                        out.push(m.unwrap().detach());
                    }
                }
                break;
            }
        }
    }
    out
}

/// [`Deployment::produce_transaction`] on any brokers.
pub async fn produce_transaction(
    brokers: &str,
    id: &str,
    topic: &str,
    keys: &[&str],
    payloads: &[String],
    commit: bool,
) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (brokers, id, topic) = (brokers.to_owned(), id.to_owned(), topic.to_owned());
    let messages: Vec<(String, String)> = keys
        .iter()
        .map(|k| (*k).to_owned())
        .zip(payloads.iter().cloned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("transactional.id", &id)
            .create()
            .unwrap();
        let timeout = Duration::from_secs(30);
        producer.init_transactions(timeout).unwrap();
        producer.begin_transaction().unwrap();
        for (key, payload) in &messages {
            loop {
                match producer.send(BaseRecord::to(&topic).key(key).payload(payload)) {
                    Ok(()) => break,
                    Err((e, _))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => panic!("send: {e}"),
                }
            }
        }
        if commit {
            producer.commit_transaction(timeout).unwrap();
        } else {
            producer.flush(timeout).unwrap();
            producer.abort_transaction(timeout).unwrap();
        }
    })
    .await
    .unwrap();
}
