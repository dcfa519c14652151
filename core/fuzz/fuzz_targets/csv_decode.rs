//! The CSV reader on arbitrary bytes, with and without a valid Kaggle header in front:
//! never a panic, every line costs at most the limit, and decoded rows satisfy the
//! schema.
#![no_main]

use fraudstream_core::schema::csv::CsvReader;
use fraudstream_core::schema::{FIELD_NAMES, check_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, body) = data.split_first().unwrap_or((&0, &[]));
    let mut input = Vec::new();
    if flags & 1 == 1 {
        input.extend_from_slice(FIELD_NAMES.join(",").as_bytes());
        if flags & 2 == 2 {
            input.extend_from_slice(b",Class,id");
        }
        input.push(b'\n');
    }
    input.extend_from_slice(body);
    let Ok(reader) = CsvReader::with_limit("fuzz.csv", input.as_slice(), 512) else {
        return;
    };
    for row in reader.take(256) {
        if let Ok(tx) = row {
            assert!(tx.values.iter().all(|v| v.is_finite()));
            assert!(check_id(&tx.id).is_ok());
            assert!(tx.label.is_none_or(|l| l <= 1));
        }
    }
});
