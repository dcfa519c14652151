//! The Kaggle CSV layout, exactly as published: a quoted header
//! (`"Time","V1",…,"V28","Amount","Class"`) and `Class` quoted as `"0"`/`"1"`.
//! `Class` may be absent (unlabelled traffic); `id`, `card_id`, `terminal_id` and `event_time` columns
//! are optional extras. Anything else in the header is refused.
//!
//! One record per line: lines are framed by [`BoundedLines`] (so a line over the limit,
//! or an unclosed quote, costs the limit in memory and no more) and each is split into
//! fields by `csv_core`, without allocating per row. A quoted field cannot span lines.

use std::io::BufRead;

use super::lines::{BoundedLines, Line};
use super::record::{
    FIELD_NAMES, NUM_FIELDS, ReadError, RecordError, RecordErrorKind, Transaction, check_ids,
    excerpt, field_index, parse_label, parse_number,
};

/// Longest CSV line kept; a Kaggle row is about 700 bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Most columns a line may have (the layout has at most 34).
const MAX_COLUMNS: usize = 64;

/// What one CSV column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Field(usize),
    Class,
    Id,
    CardId,
    TerminalId,
    EventTime,
}

/// The column layout read from a header.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    columns: Vec<Column>,
    has_label: bool,
}

impl CsvLayout {
    /// Interpret a header row. Every numeric field of the Kaggle layout must be present
    /// exactly once.
    pub fn from_header<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut columns = Vec::new();
        let mut seen = [false; NUM_FIELDS];
        for raw in names {
            let name = raw.trim().trim_start_matches('\u{feff}');
            let col = match name {
                "Class" => Column::Class,
                "id" => Column::Id,
                "card_id" => Column::CardId,
                "terminal_id" => Column::TerminalId,
                "event_time" => Column::EventTime,
                other => match field_index(other) {
                    Some(i) => Column::Field(i),
                    None => return Err(format!("unexpected column {:?}", excerpt(other))),
                },
            };
            if columns.contains(&col) {
                return Err(format!("column {name:?} appears more than once"));
            }
            if let Column::Field(i) = col {
                seen[i] = true;
            }
            columns.push(col);
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(format!("missing required column {:?}", FIELD_NAMES[i]));
        }
        let has_label = columns.contains(&Column::Class);
        Ok(Self { columns, has_label })
    }

    /// The Kaggle header (with `Class` when `labelled`).
    #[must_use]
    pub fn kaggle_header(labelled: bool) -> Vec<&'static str> {
        let mut h: Vec<&str> = FIELD_NAMES.to_vec();
        if labelled {
            h.push("Class");
        }
        h
    }

    /// Whether the layout carries `Class`.
    #[must_use]
    pub fn has_label(&self) -> bool {
        self.has_label
    }

    /// Number of columns.
    #[must_use]
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True for a header with no columns (never produced by [`CsvLayout::from_header`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Decode one row. `default_id` is used when the layout has no `id` column (or the
    /// row's is empty).
    pub fn decode(
        &self,
        fields: &Fields,
        default_id: impl FnOnce() -> String,
    ) -> Result<Transaction, RecordErrorKind> {
        if fields.len() != self.columns.len() {
            return Err(RecordErrorKind::ColumnCount {
                expected: self.columns.len(),
                found: fields.len(),
            });
        }
        let mut values = [0.0; NUM_FIELDS];
        let mut label = None;
        let mut id = None;
        let mut card_id = None;
        let mut terminal_id = None;
        let mut event_time = None;
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        for (col, text) in self.columns.iter().zip(fields.texts()) {
            let text = text.map_err(|offset| RecordErrorKind::NotUtf8 { offset })?;
            match *col {
                Column::Field(i) => values[i] = parse_number(FIELD_NAMES[i], text)?,
                Column::Class => {
                    if text.trim().is_empty() {
                        return Err(RecordErrorKind::MissingField {
                            field: "Class".into(),
                        });
                    }
                    label = Some(parse_label(text)?);
                }
                Column::Id => id = non_empty(text),
                Column::CardId => card_id = non_empty(text),
                Column::TerminalId => terminal_id = non_empty(text),
                Column::EventTime => event_time = non_empty(text),
            }
        }
        let id = id.unwrap_or_else(default_id);
        check_ids(&id, card_id.as_deref(), terminal_id.as_deref())?;
        Ok(Transaction {
            id,
            values,
            label,
            card_id,
            event_time,
            terminal_id,
            derived: Vec::new(),
        })
    }
}

/// The fields of one line, split into reused buffers: field `i` is
/// `data[starts[i]..ends[i]]`.
#[derive(Debug)]
pub struct Fields {
    splitter: csv_core::Reader,
    data: Vec<u8>,
    starts: Vec<usize>,
    ends: Vec<usize>,
    count: usize,
    /// `data` is known to be UTF-8 (the fast path checked the whole line at once).
    utf8: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            splitter: csv_core::Reader::new(),
            data: Vec::new(),
            starts: vec![0; MAX_COLUMNS],
            ends: vec![0; MAX_COLUMNS],
            count: 0,
            utf8: false,
        }
    }
}

impl Fields {
    /// Split `line` (one whole record, without its newline) into fields.
    pub fn split(&mut self, line: &[u8]) -> Result<(), RecordErrorKind> {
        if self.split_plain(line) {
            return Ok(());
        }
        self.split_csv(line)?;
        self.contiguous();
        Ok(())
    }

    /// The CSV state machine (`csv_core`): quotes, doubled quotes, `\r`, anything.
    fn split_csv(&mut self, line: &[u8]) -> Result<(), RecordErrorKind> {
        if line.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
            return Err(RecordErrorKind::Csv {
                message: "unterminated quoted field (a quoted field cannot span lines)".into(),
            });
        }
        self.data.clear();
        self.data.resize(line.len(), 0);
        self.splitter.reset();
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        // The whole line, then the end of input: csv_core ends the record there.
        for input in [line, &[][..]] {
            let mut rest = input;
            loop {
                let (result, i, o, e) =
                    self.splitter
                        .read_record(rest, &mut self.data[nout..], &mut self.ends[nend..]);
                rest = &rest[i..];
                nin += i;
                nout += o;
                nend += e;
                match result {
                    csv_core::ReadRecordResult::InputEmpty => break,
                    csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => {
                        self.count = nend;
                        return Ok(());
                    }
                    csv_core::ReadRecordResult::OutputFull => {
                        // Fields are never longer than their line; grow anyway.
                        let len = self.data.len();
                        self.data.resize(len * 2 + 16, 0);
                    }
                    csv_core::ReadRecordResult::OutputEndsFull => {
                        return Err(RecordErrorKind::ColumnCount {
                            expected: MAX_COLUMNS,
                            found: MAX_COLUMNS + 1,
                        });
                    }
                }
            }
        }
        debug_assert!(nin <= line.len());
        self.count = nend;
        Ok(())
    }

    /// Fields laid end to end in `data` (the state machine's output): each starts where
    /// the one before ends.
    fn contiguous(&mut self) {
        self.utf8 = false;
        for i in 0..self.count {
            self.starts[i] = if i == 0 { 0 } else { self.ends[i - 1] };
        }
    }

    /// The fast path of [`Fields::split`]: a line whose quotes, if any, each wrap a whole
    /// field with no quote or comma inside (the Kaggle file quotes its `Class`) splits on
    /// commas, with the same result as the CSV state machine. Anything else (empty,
    /// a `\r`, a quote elsewhere, too many fields) returns `false` and takes the slow path.
    fn split_plain(&mut self, line: &[u8]) -> bool {
        if line.is_empty() || memchr::memchr2(b'\r', b'\n', line).is_some() {
            return false;
        }
        self.data.clear();
        self.data.extend_from_slice(line);
        let (mut n, mut start, mut quoted) = (0, 0, 0);
        let ends = memchr::memchr_iter(b',', line).chain(std::iter::once(line.len()));
        for end in ends {
            if n == MAX_COLUMNS {
                return false;
            }
            let (mut s, mut e) = (start, end);
            if e - s >= 2 && line[s] == b'"' && line[e - 1] == b'"' {
                (s, e) = (s + 1, e - 1);
                quoted += 1;
            }
            self.starts[n] = s;
            self.ends[n] = e;
            n += 1;
            start = end + 1;
        }
        // Every quote must be one that wraps a whole field (two per quoted field).
        if memchr::memchr_iter(b'"', line).count() != 2 * quoted {
            return false;
        }
        self.count = n;
        // One check of the whole line: fields split at ASCII bytes stay UTF-8.
        self.utf8 = std::str::from_utf8(line).is_ok();
        true
    }

    /// Number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the line had no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The fields' bytes, unquoted.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.starts[..self.count]
            .iter()
            .zip(&self.ends[..self.count])
            .map(|(&s, &e)| &self.data[s..e])
    }

    /// The fields as text, with the byte offset of the first invalid UTF-8 in a field
    /// that is not.
    fn texts(&self) -> impl Iterator<Item = Result<&str, usize>> {
        let whole = if self.utf8 {
            std::str::from_utf8(&self.data).ok()
        } else {
            None
        };
        self.starts[..self.count]
            .iter()
            .zip(&self.ends[..self.count])
            .map(move |(&s, &e)| match whole.and_then(|w| w.get(s..e)) {
                Some(text) => Ok(text),
                None => std::str::from_utf8(&self.data[s..e]).map_err(|err| err.valid_up_to()),
            })
    }
}

/// Reads transactions from a CSV stream, one `Result` per data row.
pub struct CsvReader<R> {
    path: String,
    lines: BoundedLines<R>,
    layout: CsvLayout,
    fields: Fields,
    row: u64,
}

impl<R: BufRead> CsvReader<R> {
    /// Read and check the header. `path` is only used in error messages.
    pub fn new(path: &str, reader: R) -> Result<Self, ReadError> {
        Self::with_limit(path, reader, DEFAULT_MAX_LINE_BYTES)
    }

    /// [`CsvReader::new`] keeping at most `limit` bytes of a line.
    pub fn with_limit(path: &str, reader: R, limit: usize) -> Result<Self, ReadError> {
        let mut lines = BoundedLines::new(reader, limit);
        let mut fields = Fields::default();
        let header_error = |message: String| ReadError::Header {
            path: path.into(),
            message,
        };
        let header = loop {
            match lines.next_line() {
                None => return Err(ReadError::Empty { path: path.into() }),
                Some(Err(source)) => {
                    return Err(ReadError::Io {
                        path: path.into(),
                        source,
                    });
                }
                Some(Ok((_, Line::TooLong { size }))) => {
                    return Err(header_error(format!("{size} bytes long, over the limit")));
                }
                Some(Ok((_, Line::Text(t)))) if t.trim_ascii().is_empty() => {}
                Some(Ok((_, Line::Text(t)))) => {
                    fields.split(t).map_err(|e| header_error(e.to_string()))?;
                    break fields
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect::<Vec<String>>();
                }
            }
        };
        let layout =
            CsvLayout::from_header(header.iter().map(String::as_str)).map_err(header_error)?;
        Ok(Self {
            path: path.into(),
            lines,
            layout,
            fields,
            row: 0,
        })
    }

    /// The layout read from the header.
    #[must_use]
    pub fn layout(&self) -> &CsvLayout {
        &self.layout
    }
}

impl<R: BufRead> Iterator for CsvReader<R> {
    type Item = Result<Transaction, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let limit = self.lines.limit();
        loop {
            let (number, line) = match self.lines.next_line()? {
                Err(source) => {
                    return Some(Err(ReadError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
                Ok((_, Line::Text(t))) if t.trim_ascii().is_empty() => continue,
                Ok((n, Line::Text(t))) => (n, Ok(t)),
                Ok((n, Line::TooLong { size })) => {
                    (n, Err(RecordErrorKind::TooLarge { size, limit }))
                }
            };
            let row = self.row;
            self.row += 1;
            let decoded = line.and_then(|t| {
                self.fields.split(t)?;
                self.layout.decode(&self.fields, || row.to_string())
            });
            return Some(decoded.map_err(|kind| {
                ReadError::Record(RecordError {
                    path: self.path.clone(),
                    line: number,
                    kind,
                })
            }));
        }
    }
}

/// Write transactions in the Kaggle layout (with `Class` when `labelled`, and `id`,
/// `card_id`, `terminal_id` and `event_time` columns when `with_ids`).
pub fn write_kaggle_csv<W: std::io::Write>(
    out: W,
    rows: impl IntoIterator<Item = Transaction>,
    labelled: bool,
    with_ids: bool,
) -> csv::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out);
    let mut header: Vec<String> = Vec::new();
    if with_ids {
        header.push("id".into());
    }
    header.extend(
        CsvLayout::kaggle_header(labelled)
            .into_iter()
            .map(str::to_owned),
    );
    if with_ids {
        header.extend(["card_id", "terminal_id", "event_time"].map(str::to_owned));
    }
    w.write_record(&header)?;
    let mut buf: Vec<String> = Vec::with_capacity(header.len());
    for tx in rows {
        buf.clear();
        if with_ids {
            buf.push(tx.id.clone());
        }
        buf.extend(tx.values.iter().map(|v| format!("{v}")));
        if labelled {
            buf.push(tx.label.unwrap_or(0).to_string());
        }
        if with_ids {
            for v in [&tx.card_id, &tx.terminal_id, &tx.event_time] {
                buf.push(v.clone().unwrap_or_default());
            }
        }
        w.write_record(&buf)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;
