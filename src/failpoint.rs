//! Crash points for the crash tests: `FRAUDSTREAM_FAILPOINT=<name>@<n>` makes the process
//! abort (as `kill -9` would end it: no unwinding, no flush, no commit) at the `n`-th time
//! it reaches the point `name` (`n` defaults to 1). Unset, a point costs one load of a
//! cached value.
//!
//! Points: `lake_file_written` (a lake file is in the store, its offsets not yet
//! committed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The configured point and its count, read once.
fn configured() -> Option<&'static (String, u64)> {
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let spec = std::env::var("FRAUDSTREAM_FAILPOINT").ok()?;
            let (name, n) = spec.split_once('@').unwrap_or((spec.as_str(), "1"));
            Some((name.to_owned(), n.parse().unwrap_or(1)))
        })
        .as_ref()
}

/// The process reached point `name`: abort if it is the configured one and its count is
/// reached.
pub fn hit(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((point, n)) = configured() else {
        return;
    };
    if point == name && HITS.fetch_add(1, Ordering::AcqRel) + 1 >= *n {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
