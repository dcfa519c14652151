//! The model file parser on arbitrary bytes: never a panic; a model that loads scores
//! every canary row as a probability and passes (or fails cleanly) its checks. Each
//! input is tried as it is and with its checksum recomputed, so the fuzzer reaches the
//! header and body parsers behind the checksum.
#![no_main]

use fraudstream_core::model::Model;
use fraudstream_core::model::check::canary_rows;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn exercise(bytes: &[u8]) {
    if let Ok(model) = Model::from_bytes(bytes) {
        for tx in canary_rows() {
            let v = model.verdict(&tx, 3);
            assert!(v.score.is_finite() && (0.0..=1.0).contains(&v.score));
        }
        let _checked = model.check(None, &model.canaries());
        let again = Model::from_bytes(&model.to_bytes()).expect("a loaded model round-trips");
        assert_eq!(again.meta(), model.meta());
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= 32 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 32;
        let sum = Sha256::digest(&fixed[..body]);
        fixed[body..].copy_from_slice(&sum);
        exercise(&fixed);
    }
});
