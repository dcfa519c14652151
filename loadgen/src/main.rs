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
    #[arg(long, conflicts_with = "synthetic")]
    input: Option<PathBuf>,
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
    let mut rows = match (&args.input, args.synthetic) {
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
    });
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
        let Some(tx) = rows.next()? else { break };
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
                let mut record = BaseRecord::to(&args.topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "sent_at_ms",
                        value: Some(&stamp),
                    }));
                loop {
                    match p.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((e, _)) => {
                            counter.failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("loadgen: send failed: {e}");
                            break;
                        }
                    }
                }
            }
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            bar.set_position(sent);
        }
    }
    out.flush()?;
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
