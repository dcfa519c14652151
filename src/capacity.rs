//! The capacity model (docs/capacity.md): what a fleet needs for a peak rate, from
//! measured unit costs. `fraudstream capacity --rate R` prints it, and docs/capacity.md's
//! tables are this module's output (`tests/docs.rs` checks), so the two cannot drift
//! apart. Each unit cost names the command that measured it.

/// Every resource at or below this share of busy at the peak.
pub const HEADROOM: f64 = 0.6;

/// The measured unit costs the model multiplies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitCosts {
    /// Detector CPU per transaction on the Kafka path, every sink on, exactly-once
    /// outputs (µs).
    pub detector_us: f64,
    /// One Redis server (with its replica) per transaction of entity features (µs).
    pub redis_server_us: f64,
    /// A Redis Cluster's masters (each with a replica), summed, per transaction (µs).
    pub redis_cluster_us: f64,
    /// Bytes one transaction adds to one Redis server's data, kept `served_ttl`.
    pub redis_server_bytes: f64,
    /// Bytes one transaction adds to a cluster's masters, kept `served_ttl`.
    pub redis_cluster_bytes: f64,
    /// How long a transaction's record is kept (`velocity.redis.served_ttl`, s).
    pub served_ttl_secs: f64,
    /// Memory of one Redis node (bytes), of which at most [`HEADROOM`] is planned.
    pub redis_node_bytes: f64,
    /// Verdicts per DynamoDB `BatchWriteItem`.
    pub verdicts_per_batch: f64,
    /// Bytes of one lake row (zstd Parquet, no entity features).
    pub lake_row_bytes: f64,
    /// Rows per lake file (`lake.writer.max_rows`).
    pub lake_file_rows: f64,
    /// Seconds between flushes of a quiet partition (`lake.writer.max_age`).
    pub lake_file_secs: f64,
    /// Transactions per second one Kafka partition is given at most.
    pub partition_rate: f64,
}

impl UnitCosts {
    /// The figures in docs/capacity.md, each measured by the command named there.
    pub const MEASURED: Self = Self {
        // 17 µs (the top of the Kaggle model's range, `scripts/bench/kafka.sh --hotpath`)
        // × 1.09 for exactly-once outputs.
        detector_us: 18.5,
        // `scripts/bench/velocity-redis.sh --rounds 3`: 18.4–22.5 µs, a server with one
        // replica.
        redis_server_us: 23.0,
        // The same run: 27.1–32.8 µs over three masters, each with a replica.
        redis_cluster_us: 33.0,
        // The same bench's `used_memory` growth: 270–292 bytes on one server, 425–466
        // over a cluster's masters (a transaction's record, its markers, its share of
        // the entities' hashes).
        redis_server_bytes: 292.0,
        redis_cluster_bytes: 466.0,
        // `velocity.redis.served_ttl`'s default: at least `features.label_delay`.
        served_ttl_secs: 7.0 * 86_400.0,
        // An assumption, not a measurement: a 64 GB node (`--redis-node-gb`).
        redis_node_bytes: 64e9,
        verdicts_per_batch: 25.0,
        // `fraudstream run` on the Kaggle file: 62,492,885 bytes for 284,807 rows.
        lake_row_bytes: 219.0,
        lake_file_rows: 100_000.0,
        lake_file_secs: 60.0,
        partition_rate: 10_000.0,
    };
}

/// Where entity state lives, as sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisPlan {
    /// One server is enough (its share of a core at the peak).
    Server,
    /// A Redis Cluster of this many masters.
    Cluster(u32),
}

/// What a fleet needs for one peak rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fleet {
    /// Transactions per second at the peak.
    pub rate: f64,
    /// Detector cores, busy at the peak ÷ [`HEADROOM`].
    pub detector_cores: f64,
    /// Detectors of one core (two at least: one takes over from the other).
    pub detectors: u32,
    /// Redis cores, busy ÷ [`HEADROOM`], with one server.
    pub redis_server_cores: f64,
    /// Entity features on Redis: one server, or a cluster of N masters.
    pub redis: RedisPlan,
    /// The data Redis holds (bytes; the masters' on a cluster): every transaction of the
    /// last `served_ttl`.
    pub redis_bytes: f64,
    /// DynamoDB write units a second (one per verdict).
    pub write_units: f64,
    /// `BatchWriteItem` requests a second.
    pub batch_requests: f64,
    /// Kafka partitions of the input topic.
    pub partitions: u32,
    /// Lake bytes an hour.
    pub lake_bytes_per_hour: f64,
    /// Lake files an hour (size or age limit, plus one per partition at the hour).
    pub lake_files_per_hour: f64,
    /// Store writes an hour (two per file: the marker-log entry, then the file).
    pub lake_writes_per_hour: f64,
}

/// The fleet for `rate` transactions a second.
#[must_use]
pub fn plan(rate: f64, c: &UnitCosts) -> Fleet {
    let detector_cores = rate * c.detector_us * 1e-6 / HEADROOM;
    let detectors = (detector_cores.ceil() as u32).max(2);
    let redis_server_cores = rate * c.redis_server_us * 1e-6 / HEADROOM;
    // What one node may hold: its memory, at most 60% full.
    let node_bytes = c.redis_node_bytes * HEADROOM;
    let redis = if redis_server_cores <= 1.0
        && rate * c.served_ttl_secs * c.redis_server_bytes <= node_bytes
    {
        RedisPlan::Server
    } else {
        // Masters for the CPU and for the data, whichever needs more; three at least
        // (a failover needs a majority).
        let cores = rate * c.redis_cluster_us * 1e-6 / HEADROOM;
        let memory = rate * c.served_ttl_secs * c.redis_cluster_bytes / node_bytes;
        RedisPlan::Cluster((cores.max(memory).ceil() as u32).max(3))
    };
    let per_tx = match redis {
        RedisPlan::Server => c.redis_server_bytes,
        RedisPlan::Cluster(_) => c.redis_cluster_bytes,
    };
    let partitions = detectors
        .max((rate / c.partition_rate).ceil() as u32)
        .next_power_of_two();
    let rows_per_partition_hour = rate * 3_600.0 / f64::from(partitions);
    let files_per_partition = (rows_per_partition_hour / c.lake_file_rows)
        .ceil()
        .max(3_600.0 / c.lake_file_secs)
        + 1.0;
    let lake_files_per_hour = files_per_partition * f64::from(partitions);
    Fleet {
        rate,
        detector_cores,
        detectors,
        redis_server_cores,
        redis,
        redis_bytes: rate * c.served_ttl_secs * per_tx,
        write_units: rate,
        batch_requests: rate / c.verdicts_per_batch,
        partitions,
        lake_bytes_per_hour: rate * 3_600.0 * c.lake_row_bytes,
        lake_files_per_hour,
        lake_writes_per_hour: 2.0 * lake_files_per_hour,
    }
}

/// `n` with thousands separators (rounded).
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.round());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes as GB (10⁹) or, from 1,000 GB, TB (10¹²), with a sensible precision.
fn gigabytes(b: f64) -> String {
    let gb = b / 1e9;
    if gb < 10.0 {
        format!("{gb:.2} GB")
    } else if gb < 1_000.0 {
        format!("{gb:.1} GB")
    } else {
        format!("{:.1} TB", gb / 1_000.0)
    }
}

/// The fleets of `rates` as a Markdown table, with the unit costs it used.
#[must_use]
pub fn markdown(rates: &[f64], c: &UnitCosts) -> String {
    let mut out = String::new();
    out.push_str("| peak | detector cores (busy ÷ 0.6) | detectors | entity features on Redis (busy ÷ 0.6) | DynamoDB write units / batch requests a second | Kafka partitions | lake per hour: bytes / files / store writes |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for &rate in rates {
        let f = plan(rate, c);
        let redis = match f.redis {
            RedisPlan::Server => format!(
                "1 server: {:.2} of a core, {} of data",
                f.redis_server_cores,
                gigabytes(f.redis_bytes)
            ),
            RedisPlan::Cluster(n) => format!(
                "a cluster of {n} masters: {:.1} cores, {} of data",
                rate * c.redis_cluster_us * 1e-6 / HEADROOM,
                gigabytes(f.redis_bytes)
            ),
        };
        out.push_str(&format!(
            "| {} tx/s | {:.2} | {}, 1 core each | {redis} | {} / {} | {} | {} / {} / {} |\n",
            thousands(rate),
            f.detector_cores,
            f.detectors,
            thousands(f.write_units),
            thousands(f.batch_requests),
            f.partitions,
            gigabytes(f.lake_bytes_per_hour),
            thousands(f.lake_files_per_hour),
            thousands(f.lake_writes_per_hour),
        ));
    }
    out.push_str(&format!(
        "\nUnit costs used: detector {} µs per transaction; Redis {} µs per transaction on one \
         server, {} µs over a cluster's masters (both with replicas), and {} or {} bytes of \
         data per transaction kept {} days (`velocity.redis.served_ttl`), a node of {} GB; {} verdicts per \
         `BatchWriteItem`; {} bytes per lake row; a lake file every {} rows or {} s per \
         partition; at most {} transactions a second per partition; every resource at most \
         {:.0}% busy.\n",
        c.detector_us,
        c.redis_server_us,
        c.redis_cluster_us,
        c.redis_server_bytes,
        c.redis_cluster_bytes,
        c.served_ttl_secs / 86_400.0,
        c.redis_node_bytes / 1e9,
        c.verdicts_per_batch,
        c.lake_row_bytes,
        thousands(c.lake_file_rows),
        c.lake_file_secs,
        thousands(c.partition_rate),
        HEADROOM * 100.0
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arithmetic_of_a_large_fleet() {
        let f = plan(100_000.0, &UnitCosts::MEASURED);
        // 100,000 × 18.5 µs = 1.85 cores busy; ÷ 0.6.
        assert!((f.detector_cores - 3.083).abs() < 0.01, "{f:?}");
        assert_eq!(f.detectors, 4);
        // CPU: 100,000 × 33 µs = 3.3 cores, ÷ 0.6 = 5.5 masters; but the data, a week of
        // transactions (100,000 × 604,800 × 466 bytes = 28.2 TB), needs 734 nodes of 64
        // GB at 60%.
        assert!(
            (f.redis_bytes - 28.18e12).abs() < 0.01e12,
            "{}",
            f.redis_bytes
        );
        assert_eq!(f.redis, RedisPlan::Cluster(734));
        // A record kept an hour: the CPU decides.
        let hour = UnitCosts {
            served_ttl_secs: 3_600.0,
            ..UnitCosts::MEASURED
        };
        assert_eq!(plan(100_000.0, &hour).redis, RedisPlan::Cluster(6));
        assert_eq!(f.partitions, 16);
        // 6,250 tx/s a partition: 225 files an hour by size, plus one at the hour.
        assert!((f.lake_files_per_hour - 16.0 * 226.0).abs() < 1e-9);
        assert!((f.lake_bytes_per_hour - 78.84e9).abs() < 1e6);
    }

    #[test]
    fn a_small_fleet_keeps_two_detectors_and_one_redis_server() {
        let f = plan(
            1_000.0,
            &UnitCosts {
                served_ttl_secs: 86_400.0,
                ..UnitCosts::MEASURED
            },
        );
        assert_eq!((f.detectors, f.partitions), (2, 2));
        // 1,000 × 86,400 × 292 bytes = 25 GB: one 64 GB node.
        assert_eq!(f.redis, RedisPlan::Server);
        // Quiet partitions flush on age: 60 files an hour, plus the hour's.
        assert!((f.lake_files_per_hour - 2.0 * 61.0).abs() < 1e-9);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
