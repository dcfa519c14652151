//! Malformed and poison messages: every kind of input the detector must dead-letter, and
//! the messages that broke detectors before (an empty key and no id, ids past the
//! contract).

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
    /// A valid transaction with no `id` field and an empty key: the detector derives
    /// its id from the message's position (a poison pill before the id contract).
    EmptyKeyNoId,
    /// An `id` of 3,000 bytes, past the id contract (and DynamoDB's key limit).
    LongId,
    /// No `id` field, and a key holding a control character.
    ControlKey,
}

/// Every kind, in a fixed order.
pub const ALL: [Damage; 9] = [
    Damage::Truncated,
    Damage::WrongType,
    Damage::MissingField,
    Damage::NaN,
    Damage::Oversized,
    Damage::NotUtf8,
    Damage::EmptyKeyNoId,
    Damage::LongId,
    Damage::ControlKey,
];

impl Damage {
    /// Whether the detector must refuse it (all but [`Damage::EmptyKeyNoId`]).
    #[must_use]
    pub fn is_invalid(self) -> bool {
        self != Self::EmptyKeyNoId
    }

    /// Whether the damage is in the message key (so it needs a Kafka message).
    #[must_use]
    pub fn needs_key(self) -> bool {
        matches!(self, Self::EmptyKeyNoId | Self::ControlKey)
    }
}

/// A damaged message: its key (`None`: keep the transaction id) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The message key to send instead of the id.
    pub key: Option<Vec<u8>>,
    /// The message bytes.
    pub payload: Vec<u8>,
}

/// A damaged message from `tx`: the key it must be sent with, and its bytes.
#[must_use]
pub fn damage_message(tx: &Transaction, kind: Damage, rng: &mut Rng) -> Damaged {
    let without_id = || {
        let mut v: serde_json::Value =
            serde_json::from_str(&encode_transaction(tx)).expect("valid JSON");
        v.as_object_mut().expect("object").remove("id");
        v.to_string().into_bytes()
    };
    match kind {
        Damage::EmptyKeyNoId => Damaged {
            key: Some(Vec::new()),
            payload: without_id(),
        },
        Damage::ControlKey => Damaged {
            key: Some(format!("{}\u{1}", tx.id).into_bytes()),
            payload: without_id(),
        },
        Damage::LongId => {
            let mut long = tx.clone();
            long.id = format!("{}-{}", tx.id, "x".repeat(3000));
            Damaged {
                key: None,
                payload: encode_transaction(&long).into_bytes(),
            }
        }
        other => Damaged {
            key: None,
            payload: damage(tx, other, rng),
        },
    }
}

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
        Damage::EmptyKeyNoId | Damage::LongId | Damage::ControlKey => {
            damage_message(tx, kind, rng).payload
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
                let m = damage_message(&tx, kind, &mut rng);
                // The detector's rule: the key when the JSON has no id, unless empty.
                let key = m.key.clone().unwrap_or_else(|| tx.id.clone().into_bytes());
                let default_id = || match std::str::from_utf8(&key) {
                    Ok(k) if !k.is_empty() => k.to_owned(),
                    _ => "topic-0-7".to_owned(),
                };
                let decoded =
                    decode_transaction_limited(&m.payload, DEFAULT_MAX_MESSAGE_BYTES, default_id);
                assert_eq!(decoded.is_err(), kind.is_invalid(), "{kind:?}: {decoded:?}");
                assert!(
                    !m.payload.contains(&b'\n'),
                    "{kind:?}: one message per line"
                );
            }
        }
    }
}
