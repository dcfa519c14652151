//! Generated data for unit tests: random transactions with a learnable label.

use crate::schema::{Dataset, NUM_FIELDS, Transaction};

/// `n` transactions with values uniform in [-2, 2] and label `V4 + V10 > 1.5`.
pub fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = crate::rng::Rng::new(seed);
    let mut d = Dataset::with_capacity(n);
    for i in 0..n {
        let mut values = [0.0; NUM_FIELDS];
        for v in &mut values {
            *v = rng.unit() * 4.0 - 2.0;
        }
        d.push(Transaction {
            id: format!("t{i}"),
            values,
            label: Some(u8::from(values[4] + values[10] > 1.5)),
            card_id: None,
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        });
    }
    d
}
