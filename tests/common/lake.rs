//! Lake records for the tests: [`record`] makes row `i` of a two-hour stream with
//! every column kind filled (shadow scores on every other row, a rule's decision on
//! every fifth), and [`settings`] a writer that flushes every 1,000 rows.

use std::time::Duration;

use fraudstream::rules::Outcome;
use fraudstream::schema::{NUM_FIELDS, Transaction};
use fraudstream::sinks::lake::{
    DecisionRecord, LakeCompression, LakeSettings, ScoredRecord, ShadowRecord,
};

/// 2026-11-26T10:15:00Z
pub const T0: i64 = 1_795_688_100_000;

pub fn record(i: usize) -> ScoredRecord {
    let mut values = [0.0; NUM_FIELDS];
    for (j, v) in values.iter_mut().enumerate() {
        *v = (i * 31 + j) as f64 * 0.25 - 7.0;
    }
    ScoredRecord {
        tx: Transaction {
            id: format!("tx-{i}"),
            values,
            label: (!i.is_multiple_of(3)).then_some(u8::from(i.is_multiple_of(7))),
            card_id: None,
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        },
        score: (i % 100) as f32 / 100.0,
        fraud: i % 100 >= 50,
        model_version: "v-test".into(),
        // Records span two hours: 10:15:00 + 1.5 s per record.
        scored_at_ms: T0 + i as i64 * 1500,
        // Every other record carries a shadow model's view (nullable columns).
        shadow: i.is_multiple_of(2).then(|| ShadowRecord {
            score: (i % 10) as f32 / 10.0,
            fraud: i % 10 >= 5,
            version: "v-shadow".into(),
        }),
        // Every fifth record decided by a rule (nullable `rules` and `rule_set`).
        decision: if i.is_multiple_of(5) {
            DecisionRecord {
                outcome: Outcome::Review,
                decided_by: "big_amount".into(),
                rules: vec!["big_amount".into(), "night".into()],
                rule_set: Some("r-1".into()),
            }
        } else {
            DecisionRecord {
                outcome: if i % 100 >= 50 {
                    Outcome::Block
                } else {
                    Outcome::Approve
                },
                decided_by: "model".into(),
                rules: Vec::new(),
                rule_set: None,
            }
        },
        position: None,
    }
}

pub fn settings(compression: LakeCompression) -> LakeSettings {
    LakeSettings {
        max_rows: 1000,
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(60),
        compression,
        writer_id: "d1".into(),
    }
}
