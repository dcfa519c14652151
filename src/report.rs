//! The evaluation report: SVG charts and an HTML page that links them.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::eval::metrics::{Metrics, pr_curve, roc_curve};

/// Score histogram resolution.
const SCORE_BINS: usize = 50;
/// Features shown in the importance chart.
const TOP_IMPORTANCES: usize = 20;

/// What a report shows.
pub struct ReportInput<'a> {
    /// Page title (for example the model version and data set).
    pub title: &'a str,
    /// Scores of the evaluated rows.
    pub scores: &'a [f32],
    /// Their labels.
    pub labels: &'a [u8],
    /// Metrics of those scores.
    pub metrics: &'a Metrics,
    /// Feature importances, by name.
    pub importances: &'a [(String, f64)],
}

/// Report writing failed.
#[derive(Debug, thiserror::Error)]
#[error("writing report to {path}: {message}")]
pub struct ReportError {
    /// The file being written.
    pub path: String,
    /// The cause.
    pub message: String,
}

/// Write `pr.svg`, `roc.svg`, `scores.svg`, `importance.svg` and `index.html` into `dir`.
/// Returns the path of the HTML page.
pub fn write_report(dir: &Path, input: &ReportInput<'_>) -> Result<PathBuf, ReportError> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| ReportError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    let p = dir.join("pr.svg");
    curve_chart(
        &p,
        "Precision-recall",
        ("recall", "precision"),
        &pr_curve(input.scores, input.labels),
        false,
    )
    .map_err(|e| fail(&p, &e))?;
    let p = dir.join("roc.svg");
    curve_chart(
        &p,
        "ROC",
        ("false positive rate", "true positive rate"),
        &roc_curve(input.scores, input.labels),
        true,
    )
    .map_err(|e| fail(&p, &e))?;
    let p = dir.join("scores.svg");
    score_histogram(&p, input.scores, input.labels).map_err(|e| fail(&p, &e))?;
    let p = dir.join("importance.svg");
    importance_chart(&p, input.importances).map_err(|e| fail(&p, &e))?;
    let p = dir.join("index.html");
    std::fs::write(&p, html(input)).map_err(|e| fail(&p, &e))?;
    Ok(p)
}

pub(crate) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A chart over `f64 × f64`, drawn to SVG.
pub(crate) type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draw the chart's legend, then write the file.
pub(crate) fn finish<'b>(
    chart: &mut Chart<'b, 'b>,
    root: &DrawingArea<SVGBackend<'b>, Shift>,
) -> DrawResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn curve_chart(
    path: &Path,
    title: &str,
    (xl, yl): (&str, &str),
    points: &[(f64, f64)],
    diagonal: bool,
) -> DrawResult {
    let root = SVGBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
    chart.configure_mesh().x_desc(xl).y_desc(yl).draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        BLUE.stroke_width(2),
    ))?;
    if diagonal {
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))?;
    }
    root.present()?;
    Ok(())
}

fn score_histogram(path: &Path, scores: &[f32], labels: &[u8]) -> DrawResult {
    let mut counts = [[0usize; SCORE_BINS]; 2];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((f64::from(s) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
        counts[usize::from(l == 1)][b] += 1;
    }
    let totals = [
        counts[0].iter().sum::<usize>().max(1),
        counts[1].iter().sum::<usize>().max(1),
    ];
    let share = |c: usize, b: usize| counts[c][b] as f64 / totals[c] as f64;
    let max = (0..SCORE_BINS)
        .flat_map(|b| [share(0, b), share(1, b)])
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let root = SVGBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Score distribution by class", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("score")
        .y_desc("share of class")
        .draw()?;
    let w = 1.0 / SCORE_BINS as f64;
    for (class, color, name) in [(0, BLUE, "legitimate"), (1, RED, "fraud")] {
        chart
            .draw_series((0..SCORE_BINS).map(|b| {
                let x0 = b as f64 * w;
                Rectangle::new(
                    [(x0, 0.0), (x0 + w, share(class, b))],
                    color.mix(0.45).filled(),
                )
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    finish(&mut chart, &root)
}

fn importance_chart(path: &Path, importances: &[(String, f64)]) -> DrawResult {
    let mut top: Vec<&(String, f64)> = importances.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(TOP_IMPORTANCES);
    let k = top.len().max(1) as u32;
    let max = top.first().map_or(1.0, |t| t.1).max(1e-9);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Feature importance (impurity decrease)", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0u32..k).into_segmented(), 0f64..max * 1.05)?;
    let names: Vec<String> = top.iter().map(|t| t.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(k as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_desc("importance")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.mix(0.6).filled())
            .margin(4)
            .data(top.iter().enumerate().map(|(i, t)| (i as u32, t.1))),
    )?;
    root.present()?;
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.4}"))
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html(input: &ReportInput<'_>) -> String {
    let m = input.metrics;
    let mut rows = String::new();
    for (k, v) in [
        ("rows", m.rows.to_string()),
        ("frauds", m.frauds.to_string()),
        ("AUPRC (average precision)", fmt_opt(m.auprc)),
        ("ROC-AUC", fmt_opt(m.roc_auc)),
        (
            "recall at precision ≥ 0.90",
            fmt_opt(m.recall_at_precision_90),
        ),
        ("threshold", format!("{:.4}", m.threshold)),
        ("precision", format!("{:.4}", m.precision)),
        ("recall", format!("{:.4}", m.recall)),
        ("F1", format!("{:.4}", m.f1)),
        (
            "TP / FP / TN / FN",
            format!("{} / {} / {} / {}", m.tp, m.fp, m.tn, m.fn_),
        ),
    ] {
        rows.push_str(&format!("<tr><th>{k}</th><td>{v}</td></tr>\n"));
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}img{{max-width:48%;margin:4px}}</style>
</head><body>
<h1>{title}</h1>
<table>
{rows}</table>
<h2>Charts</h2>
<p><a href="pr.svg"><img src="pr.svg" alt="precision-recall curve"></a>
<a href="roc.svg"><img src="roc.svg" alt="ROC curve"></a></p>
<p><a href="scores.svg"><img src="scores.svg" alt="score histogram by class"></a>
<a href="importance.svg"><img src="importance.svg" alt="feature importances"></a></p>
</body></html>
"#,
        title = escape(input.title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluate;

    #[test]
    fn writes_all_files() {
        let dir = tempfile::tempdir().unwrap();
        let scores = [0.9, 0.2, 0.7, 0.1, 0.05];
        let labels = [1, 0, 1, 0, 0];
        let m = evaluate(&scores, &labels, 0.5);
        let imp = vec![("V14".to_string(), 0.6), ("V4".to_string(), 0.4)];
        let page = write_report(
            dir.path(),
            &ReportInput {
                title: "test <report>",
                scores: &scores,
                labels: &labels,
                metrics: &m,
                importances: &imp,
            },
        )
        .unwrap();
        let html = std::fs::read_to_string(page).unwrap();
        assert!(html.contains("test &lt;report&gt;"));
        for f in ["pr.svg", "roc.svg", "scores.svg", "importance.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{f}");
            assert!(html.contains(f));
        }
        let imp_svg = std::fs::read_to_string(dir.path().join("importance.svg")).unwrap();
        assert!(imp_svg.contains("V14"));
    }
}
