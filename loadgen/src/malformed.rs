//! Malformed messages, one of each kind the detector must dead-letter.

use fraudstream_core::rng::Rng;
use fraudstream_core::schema::Transaction;
use fraudstream_core::schema::json::encode_transaction;

/// The kinds of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// JSON cut off part-way.
    Truncated,
    /// A string where a number belongs.
    WrongType,
    /// A required field removed.
    MissingField,
    /// A NaN value (as the string "NaN": JSON has no NaN literal).
    NaN,
    /// A message far larger than the detector accepts.
    Oversized,
    /// Bytes that are not UTF-8.
    NotUtf8,
}

/// Every kind, in a fixed order.
pub const ALL: [Damage; 6] = [
    Damage::Truncated,
    Damage::WrongType,
    Damage::MissingField,
    Damage::NaN,
    Damage::Oversized,
    Damage::NotUtf8,
];

/// A broken version of `tx`'s JSON encoding, with one kind of damage.
#[must_use]
pub fn damage(tx: &Transaction, kind: Damage, rng: &mut Rng) -> Vec<u8> {
    let json = encode_transaction(tx);
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let field = format!("V{}", 1 + rng.below(28));
    match kind {
        Damage::Truncated => {
            let cut = 1 + rng.below(json.len() - 2);
            json.as_bytes()[..cut].to_vec()
        }
        Damage::WrongType => {
            v[&field] = serde_json::Value::String("twelve".into());
            v.to_string().into_bytes()
        }
        Damage::MissingField => {
            v.as_object_mut().expect("object").remove(&field);
            v.to_string().into_bytes()
        }
        Damage::NaN => {
            v[&field] = serde_json::Value::String("NaN".into());
            v.to_string().into_bytes()
        }
        Damage::Oversized => {
            v["padding"] = serde_json::Value::String("x".repeat(200 * 1024));
            v.to_string().into_bytes()
        }
        Damage::NotUtf8 => {
            let mut b = json.into_bytes();
            let at = rng.below(b.len());
            b[at] = 0xFF;
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fraudstream_core::schema::json::{DEFAULT_MAX_MESSAGE_BYTES, decode_transaction_limited};

    #[test]
    fn every_kind_is_refused_by_the_detector_decoder() {
        let mut g = crate::synthetic::Synthetic::new(3, 10, 0.5, 0);
        let mut rng = Rng::new(9);
        for _ in 0..50 {
            let tx = g.next_tx();
            for kind in ALL {
                let bytes = damage(&tx, kind, &mut rng);
                assert!(
                    decode_transaction_limited(&bytes, DEFAULT_MAX_MESSAGE_BYTES, || "x".into())
                        .is_err(),
                    "{kind:?} was accepted"
                );
                assert!(!bytes.contains(&b'\n'), "{kind:?}: one message per line");
            }
        }
    }
}
