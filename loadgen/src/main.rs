//! loadgen: replays credit-card transactions into Kafka (or stdout as JSON lines).
//!
//! Sources: the Kaggle CSV (the real file or the shipped sample), or `--synthetic N`.
//! Pacing: `--rate N` per second, or `--speedup X` to follow the `Time` column.
//! Every message is keyed by its transaction id and carries a `sent_at_ms` header (and
//! field) so end-to-end latency can be measured. `--malformed-ratio R` replaces that share
//! of messages with broken or poison ones of every kind (`loadgen::malformed`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use fraudstream_core::rng::Rng;
use fraudstream_core::schema::Transaction;
use fraudstream_core::schema::csv::CsvReader;
use fraudstream_core::schema::json::encode_transaction;
use loadgen::malformed::{ALL, Damage, damage_message};
use loadgen::simulate::{AmountDrift, SimParams, SimTx, label_json, simulate};
use loadgen::synthetic::Synthetic;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

/// Replay credit-card transactions into Kafka or stdout.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Kaggle-layout CSV to replay (the real file or data/creditcard-sample.csv).
    #[arg(long, conflicts_with_all = ["synthetic", "simulate"])]
    input: Option<PathBuf>,
    /// Simulate cards, terminals and the handbook's three fraud scenarios (see
    /// `loadgen::simulate`). Transactions go out unlabelled (Time in Unix seconds, with
    /// card_id, terminal_id and event_time); labels go to --labels-topic or
    /// --labels-file, --label-delay after each transaction.
    #[arg(long, conflicts_with = "synthetic")]
    simulate: bool,
    /// Simulated customers (cards).
    #[arg(long, default_value_t = 5_000, requires = "simulate")]
    customers: u32,
    /// Simulated terminals.
    #[arg(long, default_value_t = 10_000, requires = "simulate")]
    terminals: u32,
    /// Simulated days (from 2018-04-01).
    #[arg(long, default_value_t = 183, requires = "simulate")]
    days: u32,
    /// Drift scenario: from this day (0-based) on, every amount is --drift-factor times
    /// as large, and the amount scenario's line (220) moves with it.
    #[arg(long, requires = "simulate")]
    drift_day: Option<u32>,
    /// Multiplier of every amount from --drift-day on.
    #[arg(long, default_value_t = 2.0, requires = "drift_day")]
    drift_factor: f64,
    /// How long after a transaction its label (a chargeback) is sent, in event time.
    #[arg(long, default_value = "7d", value_parser = parse_span, requires = "simulate")]
    label_delay: u64,
    /// Kafka topic for the simulated labels.
    #[arg(long, requires = "simulate")]
    labels_topic: Option<String>,
    /// File (JSON lines) for the simulated labels.
    #[arg(long, requires = "simulate", conflicts_with = "labels_topic")]
    labels_file: Option<PathBuf>,
    /// Write the whole simulated history, labelled, to this file (.csv or .jsonl) and
    /// send nothing: the input of `fraudstream preprocess` and `train`.
    #[arg(long, requires = "simulate")]
    out: Option<PathBuf>,
    /// Generate this many Kaggle-shaped transactions instead of reading a file.
    #[arg(long)]
    synthetic: Option<u64>,
    /// Fraud rate of synthetic data (the real data's is 0.0017).
    #[arg(long, default_value_t = 0.0017)]
    fraud_rate: f64,
    /// Give synthetic transactions card ids from a pool of this size (0: none).
    #[arg(long, default_value_t = 0)]
    cards: u32,
    /// Seed for synthetic data and malformed messages.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "transactions")]
    topic: String,
    /// Write JSON lines to stdout instead of Kafka (for `| fraudstream run --source -`).
    #[arg(long)]
    stdout: bool,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0, conflicts_with = "speedup")]
    rate: f64,
    /// Follow the Time column, this many times faster than real time.
    #[arg(long)]
    speedup: Option<f64>,
    /// Stop after this many messages.
    #[arg(long)]
    limit: Option<u64>,
    /// Start again from the first row at the end of the input (ids get a pass suffix).
    #[arg(long = "loop")]
    repeat: bool,
    /// Skip this many rows of the input first.
    #[arg(long, default_value_t = 0)]
    start_offset: u64,
    /// Share of messages replaced by malformed or poison ones, every kind alike: cut-off
    /// JSON, wrong types, missing fields, NaN, oversized, not UTF-8, an empty key with no
    /// id, an id past the contract, a key with a control character (0..1).
    #[arg(long, default_value_t = 0.0)]
    malformed_ratio: f64,
    /// Extra librdkafka producer properties, `key=value`.
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
}

fn parse_span(s: &str) -> Result<u64, String> {
    s.parse::<fraudstream_core::velocity::Span>()
        .map(fraudstream_core::velocity::Span::secs)
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected key=value"))
}

/// Counts deliveries as the broker acknowledges them.
#[derive(Default)]
struct Counter {
    acked: AtomicU64,
    failed: AtomicU64,
}

struct Context_(Arc<Counter>);

impl ClientContext for Context_ {}

impl ProducerContext for Context_ {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Where rows come from.
enum Rows {
    File {
        path: PathBuf,
        rows: Box<dyn Iterator<Item = Transaction>>,
        pass: u64,
        repeat: bool,
    },
    Synthetic(Synthetic, u64),
    Simulated {
        txs: Vec<SimTx>,
        next: usize,
        start: i64,
    },
}

fn open_csv(path: &PathBuf) -> anyhow::Result<Box<dyn Iterator<Item = Transaction>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let r = CsvReader::new(&path.display().to_string(), std::io::BufReader::new(f))?;
    // loadgen replays what it can read; bad rows in the input are reported, not sent.
    Ok(Box::new(r.filter_map(|row| match row {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("loadgen: skipping input row: {e}");
            None
        }
    })))
}

impl Rows {
    fn next(&mut self) -> anyhow::Result<Option<Transaction>> {
        match self {
            Self::Synthetic(g, left) => {
                if *left == 0 {
                    return Ok(None);
                }
                *left -= 1;
                Ok(Some(g.next_tx()))
            }
            Self::Simulated { txs, next, start } => {
                let Some(t) = txs.get(*next) else {
                    return Ok(None);
                };
                let mut tx = t.to_transaction(*next, *start, true);
                *next += 1;
                tx.label = Some(t.label());
                Ok(Some(tx))
            }
            Self::File {
                path,
                rows,
                pass,
                repeat,
            } => loop {
                if let Some(mut t) = rows.next() {
                    if *pass > 0 {
                        t.id = format!("{}-p{pass}", t.id);
                    }
                    return Ok(Some(t));
                }
                if !*repeat {
                    return Ok(None);
                }
                *pass += 1;
                *rows = open_csv(path)?;
            },
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.malformed_ratio),
        "--malformed-ratio must be in [0, 1]"
    );
    anyhow::ensure!(
        args.drift_factor > 0.0 && args.drift_factor <= 1_000.0,
        "--drift-factor must be above 0 and at most 1000"
    );
    let mut rows = match (&args.input, args.synthetic) {
        _ if args.simulate => {
            let params = SimParams {
                customers: args.customers,
                terminals: args.terminals,
                days: args.days,
                seed: args.seed,
                drift: args.drift_day.map(|day| AmountDrift {
                    day,
                    factor: args.drift_factor,
                }),
                ..SimParams::default()
            };
            let txs = simulate(&params);
            let frauds = txs.iter().filter(|t| t.label() == 1).count();
            eprintln!(
                "loadgen: simulated {} transactions, {frauds} frauds ({:.3}%), {} cards, {} terminals, {} days",
                txs.len(),
                100.0 * frauds as f64 / txs.len().max(1) as f64,
                params.customers,
                params.terminals,
                params.days
            );
            if let Some(out) = &args.out {
                return write_history(out, &txs, params.start);
            }
            Rows::Simulated {
                txs,
                next: 0,
                start: params.start,
            }
        }
        (Some(p), _) => Rows::File {
            path: p.clone(),
            rows: open_csv(p)?,
            pass: 0,
            repeat: args.repeat,
        },
        (None, Some(n)) => {
            Rows::Synthetic(Synthetic::new(args.seed, n, args.fraud_rate, args.cards), n)
        }
        (None, None) => anyhow::bail!("give --input FILE or --synthetic N"),
    };
    for _ in 0..args.start_offset {
        if rows.next()?.is_none() {
            break;
        }
    }

    let counter = Arc::new(Counter::default());
    let producer: Option<ThreadedProducer<Context_>> = if args.stdout {
        None
    } else {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &args.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000");
        for (k, v) in &args.properties {
            c.set(k, v);
        }
        Some(c.create_with_context(Context_(counter.clone()))?)
    };
    let total = args.limit.or(match &rows {
        Rows::Synthetic(_, n) => Some(*n),
        Rows::File { .. } => None,
        Rows::Simulated { txs, .. } => Some(txs.len() as u64),
    });
    let mut labels = Labels::open(&args)?;
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let mut rng = Rng::new(args.seed ^ 0xBAD);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let started = Instant::now();
    let (mut sent, mut malformed, mut invalid) = (0u64, 0u64, 0u64);
    // On stdout there are no keys, so the kinds that live in the key are left out.
    let kinds: Vec<Damage> = ALL
        .into_iter()
        .filter(|k| producer.is_some() || !k.needs_key())
        .collect();
    let mut first_time: Option<f64> = None;
    while args.limit.is_none_or(|l| sent < l) {
        let Some(mut tx) = rows.next()? else { break };
        if args.simulate {
            // The label travels separately, later.
            let label = tx.label.take().unwrap_or(0);
            labels.due(tx.time(), producer.as_ref())?;
            labels.push(&tx, label, args.label_delay);
        }
        // Pacing.
        let due = if let Some(x) = args.speedup {
            let t0 = *first_time.get_or_insert(tx.time());
            Some(Duration::from_secs_f64(((tx.time() - t0) / x).max(0.0)))
        } else if args.rate > 0.0 {
            Some(Duration::from_secs_f64(sent as f64 / args.rate))
        } else {
            None
        };
        if let Some(due) = due {
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let sent_at = now_ms();
        let (key, payload) = if rng.unit() < args.malformed_ratio {
            malformed += 1;
            let kind = kinds[rng.below(kinds.len())];
            invalid += u64::from(kind.is_invalid());
            let m = damage_message(&tx, kind, &mut rng);
            (
                m.key.unwrap_or_else(|| tx.id.clone().into_bytes()),
                m.payload,
            )
        } else {
            let mut v: serde_json::Value = serde_json::from_str(&encode_transaction(&tx))?;
            v["sent_at_ms"] = sent_at.into();
            (tx.id.clone().into_bytes(), v.to_string().into_bytes())
        };
        match &producer {
            None => {
                out.write_all(&payload)?;
                out.write_all(b"\n")?;
                counter.acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(p) => {
                let stamp = sent_at.to_string();
                let record = BaseRecord::to(&args.topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "sent_at_ms",
                        value: Some(&stamp),
                    }));
                if let Err(e) = send_queued(p, record) {
                    counter.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("loadgen: send failed: {e}");
                }
            }
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            bar.set_position(sent);
        }
    }
    out.flush()?;
    let labels_sent = labels.finish(producer.as_ref())?;
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(60))?;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "sent": sent,
        "acknowledged": counter.acked.load(Ordering::Relaxed),
        "failed": counter.failed.load(Ordering::Relaxed),
        "malformed": malformed,
        "labels": labels_sent,
        "invalid": invalid,
        "seconds": secs,
        "rate_per_second": sent as f64 / secs.max(1e-9),
        "target": if args.stdout { "stdout".to_owned() } else { format!("{}/{}", args.brokers, args.topic) },
    });
    eprintln!("{report}");
    anyhow::ensure!(
        counter.failed.load(Ordering::Relaxed) == 0,
        "some messages were not acknowledged"
    );
    Ok(())
}

/// Hand `record` to the producer, waiting while its queue is full.
fn send_queued<K, P>(
    p: &ThreadedProducer<Context_>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Write a simulated history, labelled, as CSV or JSON lines (by extension).
fn write_history(path: &PathBuf, txs: &[SimTx], start: i64) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let rows = txs
        .iter()
        .enumerate()
        .map(|(n, t)| t.to_transaction(n, start, true));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("csv") {
        fraudstream_core::schema::csv::write_kaggle_csv(&mut w, rows, true, true)?;
    } else {
        for tx in rows {
            w.write_all(encode_transaction(&tx).as_bytes())?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    eprintln!("loadgen: wrote {} rows to {}", txs.len(), path.display());
    Ok(())
}

/// Labels waiting for their delay, and where they go.
struct Labels {
    pending: std::collections::VecDeque<(f64, String, String)>,
    topic: Option<String>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    sent: u64,
}

impl Labels {
    fn open(args: &Args) -> anyhow::Result<Self> {
        let file = match &args.labels_file {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        anyhow::ensure!(
            !args.simulate || args.out.is_some() || file.is_some() || args.labels_topic.is_some(),
            "--simulate sends labels separately: give --labels-topic or --labels-file"
        );
        anyhow::ensure!(
            args.labels_topic.is_none() || !args.stdout,
            "--labels-topic needs Kafka (not --stdout)"
        );
        Ok(Self {
            pending: std::collections::VecDeque::new(),
            topic: args.labels_topic.clone(),
            file,
            sent: 0,
        })
    }

    fn push(&mut self, tx: &Transaction, label: u8, delay: u64) {
        self.pending.push_back((
            tx.time() + delay as f64,
            tx.id.clone(),
            label_json(tx, label),
        ));
    }

    /// Send the labels due by event time `now`.
    fn due(
        &mut self,
        now: f64,
        producer: Option<&ThreadedProducer<Context_>>,
    ) -> anyhow::Result<()> {
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, key, payload)) = self.pending.pop_front() {
                self.send(&key, &payload, producer)?;
            }
        }
        Ok(())
    }

    /// Send the rest (the stream ended; their time has come) and flush.
    fn finish(&mut self, producer: Option<&ThreadedProducer<Context_>>) -> anyhow::Result<u64> {
        self.due(f64::INFINITY, producer)?;
        if let Some(f) = self.file.as_mut() {
            f.flush()?;
        }
        Ok(self.sent)
    }

    fn send(
        &mut self,
        key: &str,
        payload: &str,
        producer: Option<&ThreadedProducer<Context_>>,
    ) -> anyhow::Result<()> {
        self.sent += 1;
        if let Some(f) = self.file.as_mut() {
            f.write_all(payload.as_bytes())?;
            f.write_all(b"\n")?;
        }
        if let (Some(topic), Some(p)) = (&self.topic, producer) {
            let record = BaseRecord::to(topic).key(key).payload(payload);
            send_queued(p, record).map_err(|e| anyhow::anyhow!("sending a label: {e}"))?;
        }
        Ok(())
    }
}
