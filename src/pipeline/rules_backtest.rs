//! Backtests of a draft rule set on the lake: every scored row replayed through the draft
//! and, beside it, the active set, with the score and the entity features the row was
//! served with. What each rule would have matched, the frauds it would have stopped and
//! the legitimate transactions it would have hit (with labels: the rows' own `Class`, or
//! labels given separately), the frauds its allow rules would have let through, and how
//! every outcome would change.
//!
//! Rows are read column-wise from the lake's Parquet files and evaluated without building
//! a transaction: the facts of a row point into the columns. Files are decoded and
//! evaluated on every core (rayon), a few at a time, so memory holds a handful of files.

use std::collections::HashMap;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;

use crate::rules::{Action, DecidedBy, Facts, Lists, Outcome, RuleSet};
use crate::schema::{FIELD_NAMES, NUM_FIELDS, Transaction};
use crate::storage::S3Settings;

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The lake could not be listed or read.
    #[error(transparent)]
    Remote(#[from] super::remote::RemoteError),
    /// A file that is not a lake file.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The lake holds no Parquet file.
    #[error("{0}: no .parquet files")]
    Empty(String),
}

/// What is backtested.
#[derive(Debug, Clone, Copy)]
pub struct Sets<'a> {
    /// The draft rule set and its name (a version, or a file).
    pub draft: (&'a RuleSet, &'a str),
    /// The active one, if any, and its version.
    pub active: Option<(&'a RuleSet, &'a str)>,
    /// The lists both compiled against.
    pub lists: &'a Lists,
    /// `decisions.model_outcome`.
    pub model_outcome: Outcome,
    /// Labels by transaction id, for rows without their own `Class`.
    pub labels: &'a HashMap<String, u8>,
    /// The entity features the rule sets were compiled with, in catalog order.
    pub derived: &'a [String],
}

/// One rule's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleFigures {
    /// The rule.
    pub name: String,
    /// `allow`, `review` or `block`.
    pub action: String,
    /// Rows it matches, whatever else matches them.
    pub matches: u64,
    /// Of those, labelled frauds.
    pub frauds: u64,
    /// Of those, labelled legitimate.
    pub legit: u64,
    /// Rows it decides under the set's mode.
    pub decided: u64,
    /// Labelled frauds it approves (an allow rule deciding on a fraud).
    pub overrides: u64,
}

/// A rule set's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SetFigures {
    /// Its name: a version, or the file backtested.
    pub name: String,
    /// Its mode.
    pub mode: String,
    /// Outcomes: approve, review, block.
    pub approve: u64,
    /// Rows to review.
    pub review: u64,
    /// Rows blocked.
    pub block: u64,
    /// Labelled frauds sent to review or blocked.
    pub frauds_stopped: u64,
    /// Labelled legitimate rows sent to review or blocked.
    pub legit_stopped: u64,
    /// Per rule, in file order.
    pub rules: Vec<RuleFigures>,
}

/// Rows whose outcome moves from one to another between the active set and the draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// The active set's outcome.
    #[schema(value_type = String)]
    pub from: Outcome,
    /// The draft's.
    #[schema(value_type = String)]
    pub to: Outcome,
    /// Rows.
    pub rows: u64,
    /// Of those, labelled frauds.
    pub frauds: u64,
}

/// A backtest's report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Where the rows came from.
    pub history: String,
    /// Files read.
    pub files: usize,
    /// Rows replayed.
    pub rows: u64,
    /// Rows with a label.
    pub labelled: u64,
    /// Labelled frauds.
    pub frauds: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_second: f64,
    /// The draft.
    pub draft: SetFigures,
    /// The active set (none: the model's rule alone, `decisions.model_outcome` at or
    /// over the threshold).
    pub active: SetFigures,
    /// Outcome changes from the active set to the draft (rows whose outcome moves).
    pub changes: Vec<Change>,
}

/// Counts for one rule set, as rows go by.
#[derive(Debug, Clone, Default)]
struct Tally {
    outcomes: [u64; 3],
    frauds_stopped: u64,
    legit_stopped: u64,
    matches: Vec<[u64; 3]>,
    decided: Vec<u64>,
    overrides: Vec<u64>,
}

impl Tally {
    fn new(rules: usize) -> Self {
        Self {
            matches: vec![[0; 3]; rules],
            decided: vec![0; rules],
            overrides: vec![0; rules],
            ..Self::default()
        }
    }

    fn merge(&mut self, other: &Self) {
        for k in 0..3 {
            self.outcomes[k] += other.outcomes[k];
        }
        self.frauds_stopped += other.frauds_stopped;
        self.legit_stopped += other.legit_stopped;
        for (a, b) in self.matches.iter_mut().zip(&other.matches) {
            for k in 0..3 {
                a[k] += b[k];
            }
        }
        for (a, b) in self.decided.iter_mut().zip(&other.decided) {
            *a += b;
        }
        for (a, b) in self.overrides.iter_mut().zip(&other.overrides) {
            *a += b;
        }
    }

    fn figures(&self, set: Option<&RuleSet>, name: &str) -> SetFigures {
        SetFigures {
            name: name.into(),
            mode: set.map_or_else(|| "model".into(), |s| s.mode().to_string()),
            approve: self.outcomes[0],
            review: self.outcomes[1],
            block: self.outcomes[2],
            frauds_stopped: self.frauds_stopped,
            legit_stopped: self.legit_stopped,
            rules: set.map_or_else(Vec::new, |s| {
                (0..s.len())
                    .map(|i| RuleFigures {
                        name: s.name(i).to_string(),
                        action: s.action(i).to_string(),
                        matches: self.matches[i].iter().sum(),
                        frauds: self.matches[i][1],
                        legit: self.matches[i][0],
                        decided: self.decided[i],
                        overrides: self.overrides[i],
                    })
                    .collect()
            }),
        }
    }
}

/// Label slot: 0 legitimate, 1 fraud, 2 unlabelled.
fn slot(label: Option<u8>) -> usize {
    match label {
        Some(0) => 0,
        Some(_) => 1,
        None => 2,
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Approve => 0,
        Outcome::Review => 1,
        Outcome::Block => 2,
    }
}

/// Both sets' tallies, and the outcome moves, for some rows.
#[derive(Debug, Clone)]
struct Partial {
    rows: u64,
    labelled: u64,
    frauds: u64,
    draft: Tally,
    active: Tally,
    /// [from][to][all, frauds].
    changes: [[[u64; 2]; 3]; 3],
}

impl Partial {
    fn new(sets: &Sets<'_>) -> Self {
        Self {
            rows: 0,
            labelled: 0,
            frauds: 0,
            draft: Tally::new(sets.draft.0.len()),
            active: Tally::new(sets.active.map_or(0, |a| a.0.len())),
            changes: [[[0; 2]; 3]; 3],
        }
    }

    fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        self.labelled += other.labelled;
        self.frauds += other.frauds;
        self.draft.merge(&other.draft);
        self.active.merge(&other.active);
        for (a, b) in self
            .changes
            .iter_mut()
            .flatten()
            .zip(other.changes.iter().flatten())
        {
            a[0] += b[0];
            a[1] += b[1];
        }
    }
}

/// One set's decision on one row, counted.
fn count(
    tally: &mut Tally,
    set: Option<&RuleSet>,
    facts: &Facts<'_>,
    sets: &Sets<'_>,
    label: Option<u8>,
    matched: &mut Vec<u16>,
    each: &mut Vec<bool>,
) -> Outcome {
    let l = slot(label);
    let outcome = match set {
        None => {
            if facts.fraud {
                sets.model_outcome
            } else {
                Outcome::Approve
            }
        }
        Some(set) => {
            set.each_match(facts, sets.lists, each);
            for (i, _) in each.iter().enumerate().filter(|(_, m)| **m) {
                tally.matches[i][l] += 1;
            }
            let decided = set.decide(facts, sets.lists, sets.model_outcome, matched);
            if let DecidedBy::Rule(i) = decided.by {
                tally.decided[i] += 1;
                if set.action(i) == Action::Allow && label == Some(1) {
                    tally.overrides[i] += 1;
                }
            }
            decided.outcome
        }
    };
    tally.outcomes[outcome_index(outcome)] += 1;
    if outcome != Outcome::Approve {
        match label {
            Some(1) => tally.frauds_stopped += 1,
            Some(0) => tally.legit_stopped += 1,
            _ => {}
        }
    }
    outcome
}

/// The columns of one lake batch, as the rules read them.
struct Columns {
    values: Vec<arrow::array::Float64Array>,
    score: arrow::array::Float32Array,
    fraud: arrow::array::BooleanArray,
    label: Option<arrow::array::Int64Array>,
    id: Option<StringArray>,
    card: Option<StringArray>,
    terminal: Option<StringArray>,
    derived: Vec<Option<arrow::array::Float32Array>>,
}

impl Columns {
    fn new(batch: &RecordBatch, derived: &[String]) -> Result<Self, String> {
        let get = |name: &str, ty: &DataType| -> Result<Option<arrow::array::ArrayRef>, String> {
            batch
                .column_by_name(name)
                .map(|c| cast(c, ty).map_err(|e| format!("column {name:?}: {e}")))
                .transpose()
        };
        let need = |name: &str, ty: &DataType| {
            get(name, ty)?.ok_or_else(|| format!("missing column {name:?}: not a lake file"))
        };
        let mut values = Vec::with_capacity(NUM_FIELDS);
        for name in FIELD_NAMES {
            values.push(
                need(name, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            );
        }
        let text = |name: &str| -> Result<Option<StringArray>, String> {
            Ok(get(name, &DataType::Utf8)?.map(|c| c.as_string::<i32>().clone()))
        };
        Ok(Self {
            values,
            score: need("score", &DataType::Float32)?
                .as_primitive::<Float32Type>()
                .clone(),
            fraud: need("fraud", &DataType::Boolean)?.as_boolean().clone(),
            label: get("Class", &DataType::Int64)?.map(|c| c.as_primitive::<Int64Type>().clone()),
            id: text("id")?,
            card: text("card_id")?,
            terminal: text("terminal_id")?,
            derived: derived
                .iter()
                .map(|n| {
                    Ok(
                        get(n, &DataType::Float32)?
                            .map(|c| c.as_primitive::<Float32Type>().clone()),
                    )
                })
                .collect::<Result<_, String>>()?,
        })
    }
}

fn text_at(c: Option<&StringArray>, i: usize) -> Option<&str> {
    c.filter(|c| c.is_valid(i))
        .map(|c| c.value(i))
        .filter(|s| !s.is_empty())
}

/// Replay one file's rows.
fn replay_file(name: &str, data: Bytes, sets: &Sets<'_>) -> Result<Partial, BacktestError> {
    let err = |message: String| BacktestError::File {
        file: name.into(),
        message,
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| err(e.to_string()))?
        .with_batch_size(8192)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut out = Partial::new(sets);
    let mut matched = Vec::with_capacity(sets.draft.0.len().max(64));
    let mut each = Vec::with_capacity(sets.draft.0.len().max(64));
    let mut values = [0.0f64; NUM_FIELDS];
    let mut derived = vec![f32::NAN; sets.derived.len()];
    // Facts borrow a transaction's fields; this one is reused, its id and entities
    // pointed at by the facts instead.
    let blank = Transaction {
        id: String::new(),
        values,
        label: None,
        card_id: None,
        event_time: None,
        terminal_id: None,
        derived: Vec::new(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let cols = Columns::new(&batch, sets.derived).map_err(&err)?;
        for i in 0..batch.num_rows() {
            for (v, c) in values.iter_mut().zip(&cols.values) {
                *v = if c.is_valid(i) { c.value(i) } else { f64::NAN };
            }
            for (d, c) in derived.iter_mut().zip(&cols.derived) {
                *d = c
                    .as_ref()
                    .filter(|c| c.is_valid(i))
                    .map_or(f32::NAN, |c| c.value(i));
            }
            let id = text_at(cols.id.as_ref(), i).unwrap_or("");
            let label = cols
                .label
                .as_ref()
                .filter(|l| l.is_valid(i))
                .map(|l| u8::from(l.value(i) == 1))
                .or_else(|| sets.labels.get(id).copied());
            let mut facts = Facts::new(&blank, cols.score.value(i), cols.fraud.value(i));
            facts.values = &values;
            facts.derived = &derived;
            facts.id = id;
            facts.card_id = text_at(cols.card.as_ref(), i);
            facts.terminal_id = text_at(cols.terminal.as_ref(), i);
            out.rows += 1;
            if let Some(l) = label {
                out.labelled += 1;
                out.frauds += u64::from(l == 1);
            }
            let to = count(
                &mut out.draft,
                Some(sets.draft.0),
                &facts,
                sets,
                label,
                &mut matched,
                &mut each,
            );
            let from = count(
                &mut out.active,
                sets.active.map(|a| a.0),
                &facts,
                sets,
                label,
                &mut matched,
                &mut each,
            );
            let c = &mut out.changes[outcome_index(from)][outcome_index(to)];
            c[0] += 1;
            c[1] += u64::from(label == Some(1));
        }
    }
    Ok(out)
}

/// Replay every Parquet file under `history` (a directory or prefix; local, `s3://` or
/// `hdfs://`). It blocks its thread while rows are evaluated: call it from the CLI's
/// runtime, or inside `spawn_blocking`.
pub async fn run(history: &str, s3: &S3Settings, sets: &Sets<'_>) -> Result<Report, BacktestError> {
    let started = Instant::now();
    let mut location = history.to_owned();
    if !location.ends_with('/') {
        location.push('/');
    }
    let (store, keys) = super::remote::objects(&location, s3, |k| k.ends_with(".parquet")).await?;
    if keys.is_empty() {
        return Err(BacktestError::Empty(location));
    }
    let mut total = Partial::new(sets);
    // A few files in memory at a time: two per core.
    let at_once = rayon::current_num_threads().max(1) * 2;
    for chunk in keys.chunks(at_once) {
        let mut blobs = Vec::with_capacity(chunk.len());
        for key in chunk {
            let blob = store
                .get(key)
                .await
                .map_err(super::remote::RemoteError::from)?;
            blobs.push((key.clone(), blob.data));
        }
        // Evaluated on rayon's pool; this task waits (run it where blocking is fine).
        let parts: Vec<Result<Partial, BacktestError>> = blobs
            .into_par_iter()
            .map(|(key, data)| replay_file(&format!("{location}{key}"), data, sets))
            .collect();
        for p in parts {
            total.merge(&p?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut changes = Vec::new();
    for (f, row) in total.changes.iter().enumerate() {
        for (t, c) in row.iter().enumerate() {
            if f != t && c[0] > 0 {
                let o = [Outcome::Approve, Outcome::Review, Outcome::Block];
                changes.push(Change {
                    from: o[f],
                    to: o[t],
                    rows: c[0],
                    frauds: c[1],
                });
            }
        }
    }
    Ok(Report {
        history: location,
        files: keys.len(),
        rows: total.rows,
        labelled: total.labelled,
        frauds: total.frauds,
        seconds,
        rows_per_second: total.rows as f64 / seconds.max(1e-9),
        draft: total.draft.figures(Some(sets.draft.0), sets.draft.1),
        active: total.active.figures(
            sets.active.map(|a| a.0),
            sets.active.map_or("model", |a| a.1),
        ),
        changes,
    })
}
