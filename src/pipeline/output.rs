//! Writing verdicts: CSV, JSON lines or Parquet, chosen by the output's extension.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float32Builder, Float64Array, Int32Array, ListBuilder,
    RecordBatch, StringArray, StringBuilder, StructBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::PipelineError;
use crate::model::Verdict;
use crate::schema::Format;

/// Write verdicts (and labels, when known) to `path`; `-` writes JSON lines to stdout.
pub fn write_verdicts(
    path: &str,
    verdicts: &[Verdict],
    labels: &[Option<u8>],
) -> Result<(), PipelineError> {
    let fail = |e: &dyn std::fmt::Display| PipelineError::Output {
        path: path.into(),
        message: e.to_string(),
    };
    if path == "-" {
        let stdout = std::io::stdout();
        return write_jsonl(&mut stdout.lock(), verdicts, labels).map_err(|e| fail(&e));
    }
    let format = Format::from_path(path).ok_or_else(|| PipelineError::Option {
        name: "out",
        message: format!("{path}: use a .csv, .jsonl or .parquet extension"),
    })?;
    let file = File::create(path).map_err(|e| fail(&e))?;
    let mut w = BufWriter::new(file);
    match format {
        Format::Csv => write_csv(&mut w, verdicts, labels).map_err(|e| fail(&e))?,
        Format::JsonLines => write_jsonl(&mut w, verdicts, labels).map_err(|e| fail(&e))?,
        Format::Parquet => write_parquet(w, verdicts, labels).map_err(|e| fail(&*e))?,
    }
    Ok(())
}

fn top_text(v: &Verdict) -> String {
    v.top_features
        .iter()
        .map(|c| format!("{}:{:+.4}", c.feature, c.contribution))
        .collect::<Vec<_>>()
        .join(";")
}

fn write_csv<W: Write>(w: W, verdicts: &[Verdict], labels: &[Option<u8>]) -> csv::Result<()> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "id",
        "score",
        "fraud",
        "threshold",
        "model_version",
        "top_features",
        "label",
    ])?;
    for (v, l) in verdicts.iter().zip(labels) {
        out.write_record([
            v.tx_id.as_str(),
            &format!("{:.6}", v.score),
            if v.fraud { "1" } else { "0" },
            &format!("{:.6}", v.threshold),
            &v.model_version,
            &top_text(v),
            &l.map(|l| l.to_string()).unwrap_or_default(),
        ])?;
    }
    out.flush()?;
    Ok(())
}

fn write_jsonl<W: Write>(
    w: &mut W,
    verdicts: &[Verdict],
    labels: &[Option<u8>],
) -> std::io::Result<()> {
    for (v, l) in verdicts.iter().zip(labels) {
        let mut obj = serde_json::to_value(v).map_err(std::io::Error::other)?;
        if let Some(l) = l {
            obj["label"] = (*l).into();
        }
        serde_json::to_writer(&mut *w, &obj).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

fn write_parquet<W: Write + Send>(
    w: W,
    verdicts: &[Verdict],
    labels: &[Option<u8>],
) -> Result<(), Box<dyn std::error::Error>> {
    let contribution_fields = Fields::from(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("contribution", DataType::Float32, false),
    ]);
    let item = Field::new("item", DataType::Struct(contribution_fields.clone()), true);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("fraud", DataType::Boolean, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new(
            "top_features",
            DataType::List(Arc::new(item.clone())),
            false,
        ),
        Field::new("label", DataType::Int32, true),
    ]));
    let mut top = ListBuilder::new(StructBuilder::new(
        contribution_fields,
        vec![
            Box::new(StringBuilder::new()),
            Box::new(Float32Builder::new()),
        ],
    ))
    .with_field(Arc::new(item));
    for v in verdicts {
        let s = top.values();
        for c in &v.top_features {
            s.field_builder::<StringBuilder>(0)
                .expect("feature column")
                .append_value(&c.feature);
            s.field_builder::<Float32Builder>(1)
                .expect("contribution column")
                .append_value(c.contribution);
            s.append(true);
        }
        top.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            verdicts.iter().map(|v| &v.tx_id),
        )),
        Arc::new(Float32Array::from_iter_values(
            verdicts.iter().map(|v| v.score),
        )),
        Arc::new(BooleanArray::from_iter(
            verdicts.iter().map(|v| Some(v.fraud)),
        )),
        Arc::new(Float64Array::from_iter_values(
            verdicts.iter().map(|v| v.threshold),
        )),
        Arc::new(StringArray::from_iter_values(
            verdicts.iter().map(|v| &v.model_version),
        )),
        Arc::new(top.finish()),
        Arc::new(Int32Array::from_iter(
            labels.iter().map(|l| l.map(i32::from)),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(w, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}
