//! The lake's unit tests (its conformance suite is `tests/lake.rs`).

use super::*;

#[test]
fn civil_dates() {
    assert_eq!(utc_hour(0), (1970, 1, 1, 0));
    // 2024-02-29T23:59:59.999Z
    assert_eq!(utc_hour(1_709_251_199_999), (2024, 2, 29, 23));
    // 2026-11-26T10:15:00Z
    assert_eq!(utc_hour(1_795_688_100_000), (2026, 11, 26, 10));
    assert_eq!(partition(1_709_251_199_999), "dt=2024-02-29/hour=23");
    assert_eq!(utc_hour(-1), (1969, 12, 31, 23));
}

#[test]
fn settings_parse_human_durations() {
    let s: LakeSettings = toml::from_str(
        "max_rows = 10\nmax_bytes = 1000\nmax_age = \"250ms\"\ncompression = \"snappy\"\nwriter_id = \"d1\"\n",
    )
    .unwrap();
    assert_eq!(s.max_age, Duration::from_millis(250));
    assert_eq!(s.compression, LakeCompression::Snappy);
    assert!(toml::from_str::<LakeSettings>("max_rowz = 1").is_err());
}
