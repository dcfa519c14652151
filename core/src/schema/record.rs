//! Transactions, datasets and the errors that name what is wrong with a record.

use std::fmt;

/// Number of numeric fields in the Kaggle layout: Time, V1..V28, Amount.
pub const NUM_FIELDS: usize = 30;

/// The numeric fields, in the order of the published CSV.
pub const FIELD_NAMES: [&str; NUM_FIELDS] = [
    "Time", "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11", "V12", "V13",
    "V14", "V15", "V16", "V17", "V18", "V19", "V20", "V21", "V22", "V23", "V24", "V25", "V26",
    "V27", "V28", "Amount",
];

/// Index of `Time` in [`FIELD_NAMES`].
pub const TIME: usize = 0;
/// Index of `Amount` in [`FIELD_NAMES`].
pub const AMOUNT: usize = 29;

/// The default model features: V1..V28 and Amount. Time is the event time, not a feature,
/// unless asked for: it counts seconds from the start of one two-day capture and does not
/// generalise to new traffic.
pub const DEFAULT_FEATURES: [&str; 29] = [
    "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11", "V12", "V13", "V14", "V15",
    "V16", "V17", "V18", "V19", "V20", "V21", "V22", "V23", "V24", "V25", "V26", "V27", "V28",
    "Amount",
];

/// Position of a numeric field by name (exact, case-sensitive, as in the published data).
#[must_use]
pub fn field_index(name: &str) -> Option<usize> {
    FIELD_NAMES.iter().position(|&f| f == name)
}

/// One transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    /// Transaction id; derived from the row number when the input has none.
    pub id: String,
    /// Numeric fields in [`FIELD_NAMES`] order; always finite.
    pub values: [f64; NUM_FIELDS],
    /// `Class`: 1 for fraud, 0 for legitimate, `None` when unlabelled.
    pub label: Option<u8>,
    /// Optional card identifier.
    pub card_id: Option<String>,
    /// Optional event time as sent by the producer (for example RFC 3339).
    pub event_time: Option<String>,
    /// Optional terminal (merchant point of sale) identifier.
    pub terminal_id: Option<String>,
    /// Entity features computed for it ([`crate::velocity`]), in the spec's order; empty
    /// when none are configured.
    pub derived: Vec<f32>,
}

impl Transaction {
    /// The `Time` field: seconds since the first transaction of the capture.
    #[must_use]
    pub fn time(&self) -> f64 {
        self.values[TIME]
    }

    /// The `Amount` field.
    #[must_use]
    pub fn amount(&self) -> f64 {
        self.values[AMOUNT]
    }
}

/// What is wrong with one record. The reason string is stable enough to put in a
/// dead-letter message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordErrorKind {
    /// A CSV row with the wrong number of fields.
    #[error("expected {expected} fields, found {found}")]
    ColumnCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A required field is absent or empty.
    #[error("missing required field `{field}`")]
    MissingField {
        /// The field name.
        field: String,
    },
    /// A numeric field that does not parse as a number.
    #[error("field `{field}`: not a number: {value:?}")]
    NotNumber {
        /// The field name.
        field: String,
        /// The offending text (truncated to 40 characters).
        value: String,
    },
    /// NaN or infinity.
    #[error("field `{field}`: value is not finite ({value})")]
    NotFinite {
        /// The field name.
        field: String,
        /// The offending text.
        value: String,
    },
    /// A JSON value of the wrong type (for example a string where a number belongs).
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// The field name.
        field: String,
        /// What the schema wants.
        expected: &'static str,
        /// What the record holds.
        found: String,
    },
    /// A `Class` value other than 0 or 1.
    #[error("field `Class`: unknown label {value:?} (expected 0 or 1)")]
    BadLabel {
        /// The offending text.
        value: String,
    },
    /// A field given twice in one JSON object.
    #[error("field `{field}` appears more than once")]
    DuplicateField {
        /// The field name.
        field: String,
    },
    /// Syntactically invalid JSON.
    #[error("invalid JSON: {message}")]
    Json {
        /// The parser's message.
        message: String,
    },
    /// Bytes that are not UTF-8.
    #[error("not valid UTF-8 at byte {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// A record larger than the configured limit.
    #[error("record is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Record size in bytes.
        size: usize,
        /// Configured limit in bytes.
        limit: usize,
    },
    /// A transaction id outside the input contract (see [`check_id`]).
    #[error("invalid transaction id: {reason}")]
    InvalidId {
        /// What is wrong with it.
        reason: String,
    },
    /// A `card_id` or `terminal_id` outside the same contract (see [`check_entity_id`]).
    #[error("invalid {field}: {reason}")]
    InvalidEntityId {
        /// Which one.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CSV line that does not split into fields.
    #[error("malformed CSV: {message}")]
    Csv {
        /// What is wrong.
        message: String,
    },
}

impl RecordErrorKind {
    /// A short, stable machine-readable name for the kind (for metrics labels).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::ColumnCount { .. } => "column_count",
            Self::MissingField { .. } => "missing_field",
            Self::NotNumber { .. } => "not_a_number",
            Self::NotFinite { .. } => "not_finite",
            Self::WrongType { .. } => "wrong_type",
            Self::BadLabel { .. } => "bad_label",
            Self::DuplicateField { .. } => "duplicate_field",
            Self::Json { .. } => "invalid_json",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidId { .. } => "invalid_id",
            Self::InvalidEntityId { .. } => "invalid_entity_id",
            Self::Csv { .. } => "invalid_csv",
        }
    }
}

/// A bad record, located by file and line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}:{line}: {kind}")]
pub struct RecordError {
    /// The file (or `-` for stdin).
    pub path: String,
    /// 1-based line number in the file (for Parquet: 1-based row number).
    pub line: u64,
    /// What is wrong.
    pub kind: RecordErrorKind,
}

/// Errors reading a whole input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The CSV header does not have the Kaggle layout.
    #[error("{path}: header: {message}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A bad record, and invalid records are not being skipped.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A Parquet or Arrow problem.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// The cause.
        message: String,
    },
    /// The extension does not say which format the file is in.
    #[error("{path}: unknown input format (use .csv, .jsonl/.ndjson/.json or .parquet)")]
    UnknownFormat {
        /// The file.
        path: String,
    },
    /// Entity features could not be computed over the input.
    #[error("{path}: entity features: {message}")]
    Features {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The input holds no valid records.
    #[error("{path}: no valid records")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Cap the length of offending text quoted in errors, so one huge field cannot flood a log.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The longest transaction id accepted, in bytes of UTF-8 (DynamoDB allows 2,048 bytes in
/// a partition key; half leaves room for any prefix a store adds).
pub const MAX_ID_BYTES: usize = 1024;

/// The input contract for transaction ids: non-empty UTF-8 of at most [`MAX_ID_BYTES`]
/// bytes, with no control characters. Every store can key a verdict by such an id.
pub fn check_id(id: &str) -> Result<(), RecordErrorKind> {
    id_problem(id).map_or(Ok(()), |reason| Err(RecordErrorKind::InvalidId { reason }))
}

/// The same contract for an entity id (`field`: `card_id` or `terminal_id`): it keys
/// entity state in every store (a Redis key, a marker per transaction), so one hostile
/// value must not make keys of any size.
pub fn check_entity_id(field: &str, id: &str) -> Result<(), RecordErrorKind> {
    id_problem(id).map_or(Ok(()), |reason| {
        Err(RecordErrorKind::InvalidEntityId {
            field: field.to_owned(),
            reason,
        })
    })
}

/// What makes `id` break the id contract, if anything.
fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("empty".to_owned())
    } else if id.len() > MAX_ID_BYTES {
        Some(format!(
            "{} bytes, over the limit of {MAX_ID_BYTES}",
            id.len()
        ))
    } else {
        id.chars()
            .find(|c| c.is_control())
            .map(|c| format!("contains the control character {c:?}"))
    }
}

/// Check a transaction's id and entity ids against the contract.
pub fn check_ids(
    id: &str,
    card_id: Option<&str>,
    terminal_id: Option<&str>,
) -> Result<(), RecordErrorKind> {
    check_id(id)?;
    if let Some(c) = card_id {
        check_entity_id("card_id", c)?;
    }
    if let Some(t) = terminal_id {
        check_entity_id("terminal_id", t)?;
    }
    Ok(())
}

/// Parse one numeric field strictly: finite decimal numbers only.
pub(crate) fn parse_number(field: &str, text: &str) -> Result<f64, RecordErrorKind> {
    let t = text.trim();
    if t.is_empty() {
        return Err(RecordErrorKind::MissingField {
            field: field.to_owned(),
        });
    }
    let v: f64 = t.parse().map_err(|_| RecordErrorKind::NotNumber {
        field: field.to_owned(),
        value: excerpt(t),
    })?;
    check_finite(field, v, t)
}

pub(crate) fn check_finite(field: &str, v: f64, text: &str) -> Result<f64, RecordErrorKind> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(RecordErrorKind::NotFinite {
            field: field.to_owned(),
            value: excerpt(text),
        })
    }
}

/// Parse a `Class` label: `0` or `1` (the published CSV quotes them).
pub(crate) fn parse_label(text: &str) -> Result<u8, RecordErrorKind> {
    match text.trim() {
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(RecordErrorKind::BadLabel {
            value: excerpt(other),
        }),
    }
}

/// Transactions in columnar form: what training, evaluation and batch scoring work on.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Transaction ids, one per row.
    pub ids: Vec<String>,
    /// One column per entry of [`FIELD_NAMES`].
    pub columns: Vec<Vec<f64>>,
    /// `Class` per row, when known.
    pub labels: Vec<Option<u8>>,
    /// Names of the entity-feature columns that follow the [`FIELD_NAMES`] columns in
    /// `columns` (empty when the rows carry none).
    pub derived: Vec<String>,
}

/// A dataset that should have been labelled has rows without a label.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{missing} of {rows} rows have no `Class` label (first: row {first})")]
pub struct MissingLabels {
    /// Rows in the dataset.
    pub rows: usize,
    /// Rows without a label.
    pub missing: usize,
    /// 0-based index of the first unlabelled row.
    pub first: usize,
}

impl Dataset {
    /// An empty dataset with room for `rows` rows.
    #[must_use]
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            columns: (0..NUM_FIELDS).map(|_| Vec::with_capacity(rows)).collect(),
            labels: Vec::with_capacity(rows),
            derived: Vec::new(),
        }
    }

    /// An empty dataset whose rows carry the entity features `names`.
    #[must_use]
    pub fn with_derived(rows: usize, names: Vec<String>) -> Self {
        let mut d = Self::with_capacity(rows);
        d.columns
            .extend((0..names.len()).map(|_| Vec::with_capacity(rows)));
        d.derived = names;
        d
    }

    /// Position in `columns` of a field or entity-feature name.
    #[must_use]
    pub fn column_index(&self, name: &str) -> Option<usize> {
        field_index(name).or_else(|| {
            self.derived
                .iter()
                .position(|d| d == name)
                .map(|j| NUM_FIELDS + j)
        })
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Append one transaction. Its entity features fill the derived columns (zeros when
    /// it carries fewer than the dataset names).
    pub fn push(&mut self, tx: Transaction) {
        let width = NUM_FIELDS + self.derived.len();
        if self.columns.len() != width {
            self.columns.resize_with(width, Vec::new);
        }
        for (col, v) in self.columns.iter_mut().zip(tx.values) {
            col.push(v);
        }
        for (j, col) in self.columns[NUM_FIELDS..].iter_mut().enumerate() {
            col.push(tx.derived.get(j).map_or(0.0, |&v| f64::from(v)));
        }
        self.ids.push(tx.id);
        self.labels.push(tx.label);
    }

    /// Row `i` as a transaction.
    #[must_use]
    pub fn row(&self, i: usize) -> Transaction {
        let mut values = [0.0; NUM_FIELDS];
        for (v, col) in values.iter_mut().zip(&self.columns) {
            *v = col[i];
        }
        Transaction {
            id: self.ids[i].clone(),
            values,
            label: self.labels[i],
            derived: self.columns[NUM_FIELDS..]
                .iter()
                .map(|c| c[i] as f32)
                .collect(),
            ..Transaction::default()
        }
    }

    /// Whether any row carries a label.
    #[must_use]
    pub fn has_labels(&self) -> bool {
        self.labels.iter().any(Option::is_some)
    }

    /// All labels, or an error saying how many rows lack one.
    pub fn labels(&self) -> Result<Vec<u8>, MissingLabels> {
        let missing = self.labels.iter().filter(|l| l.is_none()).count();
        if missing > 0 {
            let first = self.labels.iter().position(Option::is_none).unwrap_or(0);
            return Err(MissingLabels {
                rows: self.len(),
                missing,
                first,
            });
        }
        Ok(self.labels.iter().map(|l| l.unwrap_or(0)).collect())
    }

    /// Keep only the rows at `indices` (ascending, without repeats), in place: no copy of
    /// the dataset is made, and the memory of the dropped rows is returned.
    ///
    /// # Panics
    /// When `indices` is not ascending or names a row past the end.
    pub fn retain_rows(&mut self, indices: &[usize]) {
        assert!(
            indices.windows(2).all(|w| w[0] < w[1])
                && indices.last().is_none_or(|&i| i < self.len()),
            "retain_rows: indices must be ascending and in range"
        );
        // Row `indices[j]` moves to `j`; `j <= indices[j]`, so nothing is overwritten
        // before it has moved.
        fn compact<T>(v: &mut Vec<T>, indices: &[usize]) {
            for (j, &i) in indices.iter().enumerate() {
                v.swap(j, i);
            }
            v.truncate(indices.len());
            v.shrink_to_fit();
        }
        compact(&mut self.ids, indices);
        compact(&mut self.labels, indices);
        for c in &mut self.columns {
            compact(c, indices);
        }
    }

    /// Remove row `i`, moving the last row into its place (order is not kept).
    ///
    /// # Panics
    /// When `i` is past the end.
    pub fn swap_remove_row(&mut self, i: usize) {
        self.ids.swap_remove(i);
        self.labels.swap_remove(i);
        for c in &mut self.columns {
            c.swap_remove(i);
        }
    }

    /// Append `other`'s rows (the same columns) after these, a column at a time, each of
    /// `other`'s freed once moved: at most one column more than the two datasets is held.
    ///
    /// # Panics
    /// When the two have different columns.
    pub fn append(&mut self, mut other: Self) {
        assert_eq!(
            self.columns.len(),
            other.columns.len(),
            "append: the datasets have different columns"
        );
        let total = self.len() + other.len();
        for (mine, theirs) in self.columns.iter_mut().zip(&mut other.columns) {
            let theirs = std::mem::take(theirs);
            mine.reserve_exact(total - mine.len());
            mine.extend_from_slice(&theirs);
        }
        self.ids.reserve_exact(total - self.ids.len());
        self.ids.append(&mut other.ids);
        self.labels.reserve_exact(total - self.labels.len());
        self.labels.append(&mut other.labels);
    }

    /// The rows at `indices`, in that order.
    #[must_use]
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            ids: indices.iter().map(|&i| self.ids[i].clone()).collect(),
            columns: self
                .columns
                .iter()
                .map(|c| indices.iter().map(|&i| c[i]).collect())
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            derived: self.derived.clone(),
        }
    }

    /// The rows whose `Time` is at least `secs` after the earliest row's: what is left
    /// of a history once its warm-up is dropped (its rows only built entity state up).
    #[must_use]
    pub fn after_warm_up(&self, secs: f64) -> Self {
        let times = &self.columns[TIME];
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| times[i] >= first + secs)
            .collect();
        self.select(&keep)
    }

    /// Row-major `f32` matrix of the given columns (indices into `columns`, as
    /// [`Dataset::column_index`] gives): the layout the forest scores.
    #[must_use]
    pub fn feature_matrix(&self, fields: &[usize]) -> Vec<f32> {
        let k = fields.len();
        let mut out = vec![0f32; self.len() * k];
        for (j, &f) in fields.iter().enumerate() {
            for (i, &v) in self.columns[f].iter().enumerate() {
                out[i * k + j] = v as f32;
            }
        }
        out
    }

    /// [`Dataset::feature_matrix`] of the rows `rows` only, without copying them first.
    #[must_use]
    pub fn feature_matrix_of(&self, fields: &[usize], rows: &[usize]) -> Vec<f32> {
        let k = fields.len();
        let mut out = vec![0f32; rows.len() * k];
        for (j, &f) in fields.iter().enumerate() {
            let column = &self.columns[f];
            for (i, &r) in rows.iter().enumerate() {
                out[i * k + j] = column[r] as f32;
            }
        }
        out
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frauds = self.labels.iter().filter(|l| **l == Some(1)).count();
        write!(f, "{} rows, {} labelled fraud", self.len(), frauds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_number("V1", " -1.5e3 "), Ok(-1500.0));
        assert!(matches!(
            parse_number("V1", "abc"),
            Err(RecordErrorKind::NotNumber { .. })
        ));
        assert!(matches!(
            parse_number("V1", "NaN"),
            Err(RecordErrorKind::NotFinite { .. })
        ));
        assert!(matches!(
            parse_number("V1", "inf"),
            Err(RecordErrorKind::NotFinite { .. })
        ));
        assert!(matches!(
            parse_number("V1", ""),
            Err(RecordErrorKind::MissingField { .. })
        ));
    }

    /// A dataset of `n` rows whose `Amount` and entity feature are the row's number.
    fn numbered(from: usize, n: usize) -> Dataset {
        let mut d = Dataset::with_derived(0, vec!["f".into()]);
        for i in from..from + n {
            let mut values = [0.0; NUM_FIELDS];
            values[AMOUNT] = i as f64;
            d.push(Transaction {
                id: format!("t{i}"),
                values,
                label: Some(u8::from(i % 2 == 0)),
                derived: vec![i as f32],
                ..Transaction::default()
            });
        }
        d
    }

    #[test]
    fn rows_are_kept_in_place_and_appended_whole() {
        let mut d = numbered(0, 10);
        d.retain_rows(&[1, 4, 5, 9]);
        let mut more = numbered(100, 2);
        more.retain_rows(&[]);
        assert!(more.is_empty());
        d.append(numbered(100, 2));
        let rows: Vec<(String, f64, f64, Option<u8>)> = (0..d.len())
            .map(|i| {
                let t = d.row(i);
                (t.id, t.values[AMOUNT], f64::from(t.derived[0]), t.label)
            })
            .collect();
        let want: Vec<(String, f64, f64, Option<u8>)> = [1, 4, 5, 9, 100, 101]
            .into_iter()
            .map(|i| {
                (
                    format!("t{i}"),
                    i as f64,
                    i as f64,
                    Some(u8::from(i % 2 == 0)),
                )
            })
            .collect();
        assert_eq!(rows, want);
    }

    #[test]
    #[should_panic(expected = "ascending")]
    fn retained_rows_must_be_ascending() {
        numbered(0, 5).retain_rows(&[3, 1]);
    }

    #[test]
    fn entity_ids_follow_the_id_contract() {
        assert!(check_ids("t", Some("card-1"), Some("term-1")).is_ok());
        assert!(check_ids("t", None, None).is_ok());
        let long = "c".repeat(MAX_ID_BYTES + 1);
        let e = check_ids("t", Some(&long), None).unwrap_err();
        assert_eq!(e.code(), "invalid_entity_id");
        assert!(
            e.to_string().starts_with("invalid card_id: 1025 bytes"),
            "{e}"
        );
        let e = check_ids("t", None, Some("a\nb")).unwrap_err();
        assert!(e.to_string().contains("invalid terminal_id"), "{e}");
        assert_eq!(
            check_ids("", Some("c"), None).unwrap_err().code(),
            "invalid_id"
        );
    }

    #[test]
    fn labels_are_zero_or_one() {
        assert_eq!(parse_label("0"), Ok(0));
        assert_eq!(parse_label("1"), Ok(1));
        assert!(parse_label("2").is_err());
        assert!(parse_label("yes").is_err());
    }

    #[test]
    fn ids_follow_the_contract() {
        assert!(check_id("tx-1").is_ok());
        assert!(check_id(&"é".repeat(512)).is_ok(), "1,024 bytes");
        for bad in ["", "a\nb", "\u{0}", "tab\there"] {
            assert_eq!(check_id(bad).unwrap_err().code(), "invalid_id", "{bad:?}");
        }
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert!(
            check_id(&long)
                .unwrap_err()
                .to_string()
                .contains("1025 bytes")
        );
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let long = "é".repeat(50);
        let e = excerpt(&long);
        assert!(e.ends_with('…'));
        assert!(e.len() <= 44);
    }

    #[test]
    fn feature_matrix_is_row_major() {
        let mut d = Dataset::with_capacity(2);
        for i in 0..2 {
            let mut values = [0.0; NUM_FIELDS];
            values[1] = i as f64;
            values[AMOUNT] = 10.0 + i as f64;
            d.push(Transaction {
                id: i.to_string(),
                values,
                label: Some(0),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        assert_eq!(d.feature_matrix(&[1, AMOUNT]), vec![0.0, 10.0, 1.0, 11.0]);
    }
}
