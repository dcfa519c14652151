//! What a verdict costs DynamoDB: an item's size by DynamoDB's published sizing rules, and
//! so the write units a verdict takes (one per started kilobyte). The capacity model
//! (docs/capacity.md) reads its figure from the test below:
//!
//!     cargo test --lib item_size -- --nocapture

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The size of `value` in bytes, its name not included: a string its UTF-8 bytes; a
/// number one byte per two significant digits, plus one; a boolean or null one byte; a
/// list or map 3 bytes, plus each element and one byte per element (a map's elements
/// with their names). Binary and set types count as their bytes, as strings do.
#[must_use]
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|e| value_size(e) + 1).sum::<usize>(),
        AttributeValue::M(m) => 3 + item_size(m) + m.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// One byte per two significant digits (leading and trailing zeros not counted), plus
/// one.
fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

/// The size of an item: every attribute's name and value.
#[must_use]
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write capacity units one put of `item` takes: one per started kilobyte.
#[must_use]
pub fn write_units(item: &HashMap<String, AttributeValue>) -> usize {
    item_size(item).div_ceil(1024).max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::scoring::Contribution;
    use crate::rules::Outcome;
    use crate::sinks::verdicts::VerdictItem;
    use crate::sinks::verdicts::dynamodb::item_of;

    #[test]
    fn numbers_count_their_significant_digits() {
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("12345"), 4);
        assert_eq!(number_size("-0.00039759427"), 5);
        assert_eq!(number_size("1.5e10"), 2);
        assert_eq!(number_size("1200"), 2);
    }

    /// A verdict as the detector writes it: a 36-character id (a UUID), three
    /// contributions, a rule's decision, an expiry. It fits one write unit, with room.
    #[test]
    fn item_size_of_a_verdict() {
        let item = VerdictItem {
            tx_id: "0b7f5a2e-8c1d-4f3a-9e2b-5d6c7a8b9c0d".into(),
            score: 0.873_456_8,
            fraud: true,
            threshold: 0.432_432_442_903_519,
            model_version: Arc::from("20261207T154020Z-cb315e2e"),
            scored_at: Arc::from("2026-12-07T15:41:09.744Z"),
            top_features: [
                ("V14", -0.041_237_8),
                ("V17", 0.030_012_3),
                ("V10", 0.011_9),
            ]
            .into_iter()
            .map(|(f, c)| Contribution {
                feature: Arc::from(f),
                contribution: c,
            })
            .collect(),
            ttl: Some(1_797_000_000),
            outcome: Outcome::Block,
            decided_by: Arc::from("large_amount_new_card"),
            rules: vec![Arc::from("large_amount_new_card")],
            rule_set: Some(Arc::from("20261207T154021Z-68d6ba6b")),
        };
        let dynamo = item_of(&item, "expires_at");
        let size = item_size(&dynamo);
        println!(
            "a verdict's DynamoDB item: {size} bytes, {} write unit(s)",
            write_units(&dynamo)
        );
        assert!((300..1024).contains(&size), "{size}");
        assert_eq!(write_units(&dynamo), 1);
    }
}
