//! The stream message decoder and the JSON lines reader on arbitrary bytes: never a
//! panic, and whatever decodes satisfies the schema (finite values, an id within the
//! contract).
#![no_main]

use fraudstream_core::schema::check_id;
use fraudstream_core::schema::json::{JsonLinesReader, decode_transaction_limited};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = decode_transaction_limited(data, 4096, || "key".into()) {
        assert!(tx.values.iter().all(|v| v.is_finite()));
        assert!(check_id(&tx.id).is_ok());
    }
    for row in JsonLinesReader::with_limit("fuzz", data, 256).take(64) {
        if let Ok(tx) = row {
            assert!(tx.values.iter().all(|v| v.is_finite()));
            assert!(check_id(&tx.id).is_ok());
        }
    }
});
