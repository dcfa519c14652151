//! Wall-clock helpers: Unix milliseconds and RFC 3339 timestamps, UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Now as RFC 3339 with milliseconds, UTC (`2026-12-03T14:27:29.123Z`).
#[must_use]
pub fn now_rfc3339_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
