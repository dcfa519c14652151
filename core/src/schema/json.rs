//! JSON transactions: one object per line in files, one object per message on the stream.
//!
//! Field names follow the Kaggle CSV (`Time`, `V1`..`V28`, `Amount`, `Class`), plus `id`,
//! `card_id`, `terminal_id` and `event_time`. Numbers must be JSON numbers; `Class` may be `0`/`1` or
//! `"0"`/`"1"`; `id` may be a string or an integer. Unknown fields are ignored so that
//! producers can add fields without breaking detectors.

use std::fmt;
use std::io::BufRead;

use super::lines::{BoundedLines, Line};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::record::{
    FIELD_NAMES, NUM_FIELDS, ReadError, RecordError, RecordErrorKind, Transaction, check_finite,
    check_ids, excerpt, parse_label,
};

/// Default cap on one message's size; larger messages are rejected, not parsed.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Decode one JSON transaction. `default_id` is used when the object has no `id`.
pub fn decode_transaction(
    bytes: &[u8],
    default_id: impl FnOnce() -> String,
) -> Result<Transaction, RecordErrorKind> {
    let text = std::str::from_utf8(bytes).map_err(|e| RecordErrorKind::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let partial = de::Deserializer::deserialize_map(&mut de, TxVisitor).map_err(json_error)?;
    de.end().map_err(json_error)?;
    partial.finish(default_id)
}

/// Like [`decode_transaction`], but refuses messages over `limit` bytes before parsing.
pub fn decode_transaction_limited(
    bytes: &[u8],
    limit: usize,
    default_id: impl FnOnce() -> String,
) -> Result<Transaction, RecordErrorKind> {
    if bytes.len() > limit {
        return Err(RecordErrorKind::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    decode_transaction(bytes, default_id)
}

fn json_error(e: serde_json::Error) -> RecordErrorKind {
    RecordErrorKind::Json {
        message: excerpt_message(&e.to_string()),
    }
}

fn excerpt_message(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        s.to_owned()
    } else {
        excerpt(s)
    }
}

/// Encode a transaction as one JSON object (the inverse of [`decode_transaction`]).
#[must_use]
pub fn encode_transaction(tx: &Transaction) -> String {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), tx.id.clone().into());
    for (name, v) in FIELD_NAMES.iter().zip(tx.values) {
        m.insert((*name).into(), v.into());
    }
    if let Some(l) = tx.label {
        m.insert("Class".into(), l.into());
    }
    if let Some(c) = &tx.card_id {
        m.insert("card_id".into(), c.clone().into());
    }
    if let Some(t) = &tx.terminal_id {
        m.insert("terminal_id".into(), t.clone().into());
    }
    if let Some(t) = &tx.event_time {
        m.insert("event_time".into(), t.clone().into());
    }
    serde_json::Value::Object(m).to_string()
}

/// Reads JSON lines; blank lines are skipped, and lines over the limit
/// ([`DEFAULT_MAX_MESSAGE_BYTES`] unless given) are refused like oversized stream messages,
/// without ever being held in memory whole.
pub struct JsonLinesReader<R> {
    path: String,
    lines: BoundedLines<R>,
    row: u64,
}

impl<R: BufRead> JsonLinesReader<R> {
    /// A reader over `inner`; `path` is only used in error messages.
    pub fn new(path: &str, inner: R) -> Self {
        Self::with_limit(path, inner, DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A reader keeping at most `limit` bytes of a line.
    pub fn with_limit(path: &str, inner: R, limit: usize) -> Self {
        Self {
            path: path.into(),
            lines: BoundedLines::new(inner, limit),
            row: 0,
        }
    }
}

impl<R: BufRead> Iterator for JsonLinesReader<R> {
    type Item = Result<Transaction, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let limit = self.lines.limit();
        loop {
            let (line, decoded) = match self.lines.next_line()? {
                Err(source) => {
                    return Some(Err(ReadError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
                Ok((_, Line::Text(t))) if t.trim_ascii().is_empty() => continue,
                Ok((n, Line::Text(t))) => {
                    let row = self.row;
                    (n, decode_transaction(t.trim_ascii(), || row.to_string()))
                }
                Ok((n, Line::TooLong { size })) => {
                    (n, Err(RecordErrorKind::TooLarge { size, limit }))
                }
            };
            self.row += 1;
            return Some(decoded.map_err(|kind| {
                ReadError::Record(RecordError {
                    path: self.path.clone(),
                    line,
                    kind,
                })
            }));
        }
    }
}

/// A field name, decoded without allocating.
enum Key {
    Field(usize),
    Class,
    Id,
    CardId,
    TerminalId,
    EventTime,
    Other,
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "Class" => Key::Class,
            "id" => Key::Id,
            "card_id" => Key::CardId,
            "terminal_id" => Key::TerminalId,
            "event_time" => Key::EventTime,
            "Time" => Key::Field(0),
            "Amount" => Key::Field(NUM_FIELDS - 1),
            other => other
                .strip_prefix('V')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=28).contains(n) && !other.starts_with("V0"))
                .map_or(Key::Other, Key::Field),
        })
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

/// A JSON value seen where a scalar belongs: kept as-is so that type errors can name the
/// field instead of aborting the parse.
enum Scalar {
    Num(f64),
    Int(i128),
    Str(String),
    Null,
    Other(&'static str),
}

impl Scalar {
    fn kind(&self) -> String {
        match self {
            Self::Num(_) | Self::Int(_) => "a number".into(),
            Self::Str(s) => format!("the string {:?}", excerpt(s)),
            Self::Null => "null".into(),
            Self::Other(k) => (*k).into(),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other("a boolean"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(i128::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(i128::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an object"))
    }
}

impl<'de> DeserializeSeed<'de> for ScalarVisitor {
    type Value = Scalar;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

/// Everything read from one object, before validation.
#[derive(Default)]
struct Partial {
    values: [Option<f64>; NUM_FIELDS],
    label: Option<u8>,
    id: Option<String>,
    card_id: Option<String>,
    terminal_id: Option<String>,
    event_time: Option<String>,
    error: Option<RecordErrorKind>,
}

impl Partial {
    fn fail(&mut self, kind: RecordErrorKind) {
        if self.error.is_none() {
            self.error = Some(kind);
        }
    }

    fn number(&mut self, i: usize, v: Scalar) {
        let field = FIELD_NAMES[i];
        if self.values[i].is_some() {
            return self.fail(RecordErrorKind::DuplicateField {
                field: field.into(),
            });
        }
        let parsed = match v {
            // Formatted only for the error message of a number that is not finite.
            Scalar::Num(x) if x.is_finite() => Ok(x),
            Scalar::Num(x) => check_finite(field, x, &x.to_string()),
            Scalar::Int(x) => Ok(x as f64),
            Scalar::Null => Err(RecordErrorKind::MissingField {
                field: field.into(),
            }),
            Scalar::Str(s) if is_non_finite_word(&s) => Err(RecordErrorKind::NotFinite {
                field: field.into(),
                value: excerpt(&s),
            }),
            other => Err(RecordErrorKind::WrongType {
                field: field.into(),
                expected: "a number",
                found: other.kind(),
            }),
        };
        match parsed {
            Ok(x) => self.values[i] = Some(x),
            Err(e) => self.fail(e),
        }
    }

    fn label(&mut self, v: Scalar) {
        let parsed = match v {
            Scalar::Int(x) => parse_label(&x.to_string()),
            Scalar::Str(s) => parse_label(&s),
            Scalar::Num(x) => parse_label(&x.to_string()),
            Scalar::Null => return,
            other => Err(RecordErrorKind::WrongType {
                field: "Class".into(),
                expected: "0 or 1",
                found: other.kind(),
            }),
        };
        match parsed {
            Ok(l) => self.label = Some(l),
            Err(e) => self.fail(e),
        }
    }

    fn text(&mut self, field: &str, v: Scalar, allow_int: bool) -> Option<String> {
        match v {
            Scalar::Str(s) if !s.trim().is_empty() => Some(s),
            Scalar::Int(i) if allow_int => Some(i.to_string()),
            Scalar::Null | Scalar::Str(_) => None,
            other => {
                self.fail(RecordErrorKind::WrongType {
                    field: field.into(),
                    expected: if allow_int {
                        "a string or an integer"
                    } else {
                        "a string"
                    },
                    found: other.kind(),
                });
                None
            }
        }
    }

    fn finish(self, default_id: impl FnOnce() -> String) -> Result<Transaction, RecordErrorKind> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut values = [0.0; NUM_FIELDS];
        for (i, v) in self.values.iter().enumerate() {
            values[i] = v.ok_or_else(|| RecordErrorKind::MissingField {
                field: FIELD_NAMES[i].into(),
            })?;
        }
        let id = self.id.unwrap_or_else(default_id);
        check_ids(&id, self.card_id.as_deref(), self.terminal_id.as_deref())?;
        Ok(Transaction {
            id,
            values,
            label: self.label,
            card_id: self.card_id,
            event_time: self.event_time,
            terminal_id: self.terminal_id,
            derived: Vec::new(),
        })
    }
}

fn is_non_finite_word(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "nan" | "inf" | "-inf" | "+inf" | "infinity" | "-infinity" | "+infinity"
    )
}

struct TxVisitor;

impl<'de> Visitor<'de> for TxVisitor {
    type Value = Partial;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with the transaction fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Partial, A::Error> {
        let mut p = Partial::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Field(i) => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.number(i, v);
                }
                Key::Class => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.label(v);
                }
                Key::Id => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.id = p.text("id", v, true);
                }
                Key::CardId => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.card_id = p.text("card_id", v, true);
                }
                Key::TerminalId => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.terminal_id = p.text("terminal_id", v, true);
                }
                Key::EventTime => {
                    let v = map.next_value_seed(ScalarVisitor)?;
                    p.event_time = p.text("event_time", v, false);
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: Option<u8>) -> Transaction {
        let mut values = [0.0; NUM_FIELDS];
        for (i, v) in values.iter_mut().enumerate() {
            *v = i as f64 * 0.5 - 3.0;
        }
        Transaction {
            id: "tx-1".into(),
            values,
            label,
            card_id: Some("card-9".into()),
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        }
    }

    #[test]
    fn round_trip() {
        let tx = sample(Some(1));
        let s = encode_transaction(&tx);
        assert_eq!(decode_transaction(s.as_bytes(), || "x".into()), Ok(tx));
    }

    #[test]
    fn accepts_quoted_label_and_integer_id() {
        let mut v: serde_json::Value =
            serde_json::from_str(&encode_transaction(&sample(None))).unwrap();
        v["Class"] = "1".into();
        v["id"] = 42.into();
        v["extra"] = serde_json::json!({"nested": [1, 2]});
        let tx = decode_transaction(v.to_string().as_bytes(), || "x".into()).unwrap();
        assert_eq!(tx.label, Some(1));
        assert_eq!(tx.id, "42");
    }

    fn reason(v: &serde_json::Value) -> String {
        decode_transaction(v.to_string().as_bytes(), || "x".into())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_the_bad_field() {
        let base: serde_json::Value =
            serde_json::from_str(&encode_transaction(&sample(None))).unwrap();
        let mut v = base.clone();
        v["V7"] = "abc".into();
        assert_eq!(
            reason(&v),
            "field `V7`: expected a number, found the string \"abc\""
        );
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("Amount");
        assert_eq!(reason(&v), "missing required field `Amount`");
        let mut v = base.clone();
        v["V2"] = "NaN".into();
        assert!(reason(&v).starts_with("field `V2`: value is not finite"));
        let mut v = base.clone();
        v["Class"] = 3.into();
        assert!(reason(&v).contains("unknown label"));
        let mut v = base.clone();
        v["V1"] = serde_json::Value::Null;
        assert_eq!(reason(&v), "missing required field `V1`");
        // An entity id is bounded like the transaction's: one hostile value must not
        // become a key of any size in the entity store.
        let mut v = base;
        v["card_id"] = "c".repeat(5_000).into();
        assert_eq!(
            reason(&v),
            "invalid card_id: 5000 bytes, over the limit of 1024"
        );
    }

    #[test]
    fn rejects_malformed_bytes() {
        assert!(matches!(
            decode_transaction(b"{\"Time\": 1", || "x".into()),
            Err(RecordErrorKind::Json { .. })
        ));
        assert!(matches!(
            decode_transaction(b"[1,2]", || "x".into()),
            Err(RecordErrorKind::Json { .. })
        ));
        assert!(matches!(
            decode_transaction(b"{\"id\": \"\xff\"}", || "x".into()),
            Err(RecordErrorKind::NotUtf8 { offset: 8 })
        ));
        assert!(matches!(
            decode_transaction(b"{} {}", || "x".into()),
            Err(RecordErrorKind::Json { .. })
        ));
        assert!(matches!(
            decode_transaction_limited(&[b' '; 100], 10, || "x".into()),
            Err(RecordErrorKind::TooLarge {
                size: 100,
                limit: 10
            })
        ));
    }

    #[test]
    fn duplicate_field_is_refused() {
        let s = encode_transaction(&sample(None));
        let dup = s.replacen('{', "{\"V3\":1.0,", 1);
        assert_eq!(
            decode_transaction(dup.as_bytes(), || "x".into()),
            Err(RecordErrorKind::DuplicateField { field: "V3".into() })
        );
    }

    #[test]
    fn lines_reader_counts_lines_and_skips_blanks() {
        let a = encode_transaction(&sample(Some(0)));
        let text = format!("{a}\n\n{{\"Time\":\"x\"}}\n");
        let out: Vec<_> = JsonLinesReader::new("f.jsonl", text.as_bytes()).collect();
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        let e = out[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("f.jsonl:3: field `Time`"), "{e}");
    }
}
