//! Property tests for the CSV and JSON decoders: anything encoded decodes to the same
//! transaction, and arbitrary bytes give an error, never a panic.

use fraudstream::schema::csv::{CsvReader, write_kaggle_csv};
use fraudstream::schema::json::{decode_transaction, encode_transaction};
use fraudstream::schema::{NUM_FIELDS, Transaction};
use proptest::prelude::*;

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        Just(0.0),
        Just(-0.0),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (
        "[a-zA-Z0-9_\\-]{1,20}",
        prop::collection::vec(finite(), NUM_FIELDS),
        prop::option::of(0u8..=1),
        prop::option::of("[a-z0-9]{1,8}"),
    )
        .prop_map(|(id, v, label, card)| {
            let mut values = [0.0; NUM_FIELDS];
            values.copy_from_slice(&v);
            Transaction {
                id,
                values,
                label,
                card_id: card,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            }
        })
}

proptest! {
    #[test]
    fn json_round_trips(tx in transaction()) {
        let s = encode_transaction(&tx);
        let back = decode_transaction(s.as_bytes(), || unreachable!()).unwrap();
        prop_assert_eq!(back, tx);
    }

    #[test]
    fn csv_round_trips(txs in prop::collection::vec(transaction(), 1..20), labelled in any::<bool>()) {
        let txs: Vec<Transaction> = txs
            .into_iter()
            .map(|mut t| {
                t.card_id = None;
                t.label = if labelled { Some(t.label.unwrap_or(0)) } else { None };
                t
            })
            .collect();
        let mut buf = Vec::new();
        write_kaggle_csv(&mut buf, txs.clone(), labelled, true).unwrap();
        let back: Vec<Transaction> = CsvReader::new("p.csv", buf.as_slice())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, txs);
    }

    #[test]
    fn json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(tx) = decode_transaction(&bytes, || "x".into()) {
            prop_assert!(tx.values.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn json_mutations_never_panic(tx in transaction(), pos in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut s = encode_transaction(&tx).into_bytes();
        let i = pos.index(s.len());
        s[i] = b;
        if let Ok(t) = decode_transaction(&s, || "x".into()) {
            prop_assert!(t.values.iter().all(|v| v.is_finite()));
            prop_assert!(t.label.is_none_or(|l| l <= 1));
        }
    }

    #[test]
    fn csv_never_panics(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut text = fraudstream::schema::FIELD_NAMES.join(",").into_bytes();
        text.push(b'\n');
        text.extend(body);
        if let Ok(r) = CsvReader::new("f.csv", text.as_slice()) {
            for tx in r.flatten() {
                prop_assert!(tx.values.iter().all(|v| v.is_finite()));
            }
        }
    }
}
