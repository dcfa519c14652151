//! Crash points for the crash tests: `FRAUDSTREAM_FAILPOINT=<name>@<n>` makes the process
//! abort (as `kill -9` would end it: no unwinding, no flush, no commit) at the `n`-th time
//! it reaches the point `name` (`n` defaults to 1); `<name>@<n>:stop` stops it instead
//! (SIGSTOP, as a freeze would: `SIGCONT` resumes it where it was). Unset, a point costs
//! one load of a cached value.
//!
//! Points: `lake_file_written` (a lake file is in the store, its offsets not yet
//! committed), `lake_file_put` (a stream file's intent is in the marker log, the file not
//! yet written), `kafka_transaction_produced` (a transaction's messages and offsets are
//! sent, not committed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The configured point, its count, and whether it stops rather than aborts; read once.
fn configured() -> Option<&'static (String, u64, bool)> {
    static POINT: OnceLock<Option<(String, u64, bool)>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let spec = std::env::var("FRAUDSTREAM_FAILPOINT").ok()?;
            let (spec, stop) = match spec.strip_suffix(":stop") {
                Some(s) => (s.to_owned(), true),
                None => (spec, false),
            };
            let (name, n) = spec.split_once('@').unwrap_or((spec.as_str(), "1"));
            Some((name.to_owned(), n.parse().unwrap_or(1), stop))
        })
        .as_ref()
}

/// The process reached point `name`: abort (or stop) if it is the configured one and its
/// count is reached (a stop happens once).
pub fn hit(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((point, n, stop)) = configured() else {
        return;
    };
    if point != name {
        return;
    }
    let hits = HITS.fetch_add(1, Ordering::AcqRel) + 1;
    if *stop {
        if hits == *n {
            eprintln!("failpoint {name}: stopping");
            // The workspace forbids `unsafe` (no raise()): kill(1) stops this process.
            let stopped = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
            if let Err(e) = stopped {
                eprintln!("failpoint {name}: could not stop: {e}");
            }
        }
    } else if hits >= *n {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
