//! Tables, JSON summaries and progress bars.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::eval::Metrics;

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner(message: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A counted progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.4}"))
}

/// The metrics as `(label, value)` rows for a table.
pub fn metric_rows(m: &Metrics) -> Vec<(&'static str, String)> {
    vec![
        ("rows", m.rows.to_string()),
        ("frauds", m.frauds.to_string()),
        ("AUPRC", opt(m.auprc)),
        ("ROC-AUC", opt(m.roc_auc)),
        ("recall @ precision>=0.90", opt(m.recall_at_precision_90)),
        ("threshold", format!("{:.4}", m.threshold)),
        ("precision", format!("{:.4}", m.precision)),
        ("recall", format!("{:.4}", m.recall)),
        ("F1", format!("{:.4}", m.f1)),
        (
            "confusion (TP FP TN FN)",
            format!("{} {} {} {}", m.tp, m.fp, m.tn, m.fn_),
        ),
    ]
}

/// Print a two-column table.
pub fn table(title: &str, rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{title}");
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
}

/// The metrics as the JSON keys scripts rely on (`auprc`, `roc_auc`,
/// `recall_at_precision_90`, `precision`, `recall`, `threshold`, `rows`, `frauds`), plus the
/// confusion matrix and F1.
pub fn metrics_json(m: &Metrics) -> Value {
    json!({
        "auprc": m.auprc,
        "roc_auc": m.roc_auc,
        "recall_at_precision_90": m.recall_at_precision_90,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "threshold": m.threshold,
        "rows": m.rows,
        "frauds": m.frauds,
        "tp": m.tp,
        "fp": m.fp,
        "tn": m.tn,
        "fn": m.fn_,
    })
}

/// Merge extra keys into a JSON object.
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}
