//! `fraudstream monitor --report DIR`: the drift and quality report as SVG charts and an
//! HTML page, drawn as `evaluate`'s report is: PSI per variable day by day, the live
//! score distribution against the reference, and precision, recall and AUPRC by week.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::batch::{DayDrift, WeekQuality};
use crate::monitor::Bands;
use crate::report::{Chart, DrawResult, ReportError, escape, finish};

/// Variables drawn in the PSI chart (the worst over the whole range).
const PSI_LINES: usize = 6;

/// Write `psi.svg`, `scores.svg`, `quality.svg` (with labels) and `index.html` into
/// `dir`; `days` ends with the `all` line, `weeks` with the `all` line (or is empty).
/// Returns the page's path.
pub fn write_monitor_report(
    dir: &Path,
    version: &str,
    days: &[DayDrift],
    weeks: &[WeekQuality],
    bands: &Bands,
) -> Result<PathBuf, ReportError> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| ReportError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    let (per_day, all) = match days.split_last() {
        Some((all, per_day)) => (per_day, Some(all)),
        None => (days, None),
    };
    let p = dir.join("psi.svg");
    psi_chart(&p, per_day, all, bands).map_err(|e| fail(&p, &e))?;
    let p = dir.join("scores.svg");
    score_chart(&p, all).map_err(|e| fail(&p, &e))?;
    let per_week = weeks.split_last().map_or(weeks, |(_, w)| w);
    if !per_week.is_empty() {
        let p = dir.join("quality.svg");
        quality_chart(&p, per_week).map_err(|e| fail(&p, &e))?;
    }
    let p = dir.join("index.html");
    std::fs::write(&p, html(version, days, weeks, bands)).map_err(|e| fail(&p, &e))?;
    Ok(p)
}

const COLORS: [RGBColor; PSI_LINES] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A variable's PSI on each day (NaN where the day lacks it).
fn psi_of(day: &DayDrift, name: &str) -> f64 {
    day.drift
        .features
        .iter()
        .chain(&day.drift.score)
        .find(|v| v.name == name)
        .map_or(f64::NAN, |v| v.psi)
}

/// The label of the day or week at `x`, on whole positions only.
fn label_at(labels: &[String], x: f64) -> String {
    if (x - x.round()).abs() > 1e-6 || x < 0.0 {
        return String::new();
    }
    labels.get(x.round() as usize).cloned().unwrap_or_default()
}

/// A line with a dot at each point, in the legend as `name`.
fn line(
    chart: &mut Chart<'_, '_>,
    points: &[(f64, f64)],
    color: RGBColor,
    name: &str,
) -> DrawResult {
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    Ok(())
}

fn psi_chart(path: &Path, days: &[DayDrift], all: Option<&DayDrift>, bands: &Bands) -> DrawResult {
    // The worst variables: by their highest daily PSI.
    let mut names: Vec<(String, f64)> = all
        .map(|a| {
            a.drift
                .features
                .iter()
                .chain(&a.drift.score)
                .map(|v| {
                    let worst = days
                        .iter()
                        .map(|d| psi_of(d, &v.name))
                        .filter(|p| p.is_finite())
                        .fold(0.0f64, f64::max);
                    (v.name.clone(), worst)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| b.1.total_cmp(&a.1));
    names.truncate(PSI_LINES);
    let top = names
        .iter()
        .map(|n| n.1)
        .fold(bands.significant * 1.5, f64::max);
    let n = days.len().max(2);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("PSI against the reference, by day", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..(n - 1) as f64, 0f64..top * 1.05)?;
    let labels: Vec<String> = days.iter().map(|d| d.day.clone()).collect();
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("PSI")
        .x_labels(n)
        .x_label_formatter(&|x| label_at(&labels, *x))
        .draw()?;
    for (band, name, color) in [
        (bands.moderate, "moderate", RGBColor(230, 160, 0)),
        (bands.significant, "significant", RGBColor(200, 0, 0)),
    ] {
        let style = color.mix(0.6).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, band), ((n - 1) as f64, band)],
                8,
                6,
                style,
            ))?
            .label(format!("{name} ({band})"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    }
    for (i, (name, _)) in names.iter().enumerate() {
        let points: Vec<(f64, f64)> = days
            .iter()
            .enumerate()
            .map(|(d, day)| (d as f64, psi_of(day, name)))
            .filter(|p| p.1.is_finite())
            .collect();
        line(&mut chart, &points, COLORS[i % COLORS.len()], name)?;
    }
    finish(&mut chart, &root)
}

fn score_chart(path: &Path, all: Option<&DayDrift>) -> DrawResult {
    let score = all.and_then(|a| a.drift.score.as_ref());
    let (live, reference) = score.map_or((&[][..], &[][..]), |s| (&s.shares[..], &s.reference[..]));
    let bins = live.len().max(1);
    let max = live
        .iter()
        .chain(reference)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Score: share of rows per reference bin, live and reference",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..bins as f64, 0f64..max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("reference bin of the score (low to high)")
        .y_desc("share of rows")
        .draw()?;
    for (shares, offset, color, name) in [
        (reference, 0.1, BLUE, "reference"),
        (live, 0.5, RED, "live"),
    ] {
        chart
            .draw_series(shares.iter().enumerate().map(|(b, &s)| {
                let x0 = b as f64 + offset;
                Rectangle::new([(x0, 0.0), (x0 + 0.4, s)], color.mix(0.5).filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    finish(&mut chart, &root)
}

/// One figure of a week.
type WeekFigure = fn(&WeekQuality) -> Option<f64>;

fn quality_chart(path: &Path, weeks: &[WeekQuality]) -> DrawResult {
    let n = weeks.len().max(2);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Quality by week, from the labels known now",
            ("sans-serif", 24),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..(n - 1) as f64, 0f64..1.02f64)?;
    let labels: Vec<String> = weeks.iter().map(|w| w.week.clone()).collect();
    chart
        .configure_mesh()
        .x_desc("week (Monday)")
        .x_labels(n)
        .x_label_formatter(&|x| label_at(&labels, *x))
        .draw()?;
    let series: [(&str, RGBColor, WeekFigure); 3] = [
        ("precision", COLORS[0], |w| w.precision),
        ("recall", COLORS[1], |w| w.recall),
        ("AUPRC", COLORS[2], |w| w.auprc),
    ];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = weeks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| value(w).map(|v| (i as f64, v)))
            .collect();
        line(&mut chart, &points, color, name)?;
    }
    finish(&mut chart, &root)
}

fn html(version: &str, days: &[DayDrift], weeks: &[WeekQuality], bands: &Bands) -> String {
    let mut drift_rows = String::new();
    for d in days {
        let worst: Vec<String> = d
            .drift
            .ranked()
            .iter()
            .take(5)
            .map(|v| format!("{} {:.3}", escape(&v.name), v.psi))
            .collect();
        drift_rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&d.day),
            d.drift.window_rows,
            d.drift
                .score
                .as_ref()
                .map_or_else(|| "–".into(), |s| format!("{:.3}", s.psi)),
            worst.join(", ")
        ));
    }
    let mut quality = String::new();
    if weeks.is_empty() {
        quality.push_str("<p>No labels given (<code>--labels</code>, <code>--labels-topic</code>): no quality figures.</p>\n");
    } else {
        quality.push_str("<p><a href=\"quality.svg\"><img src=\"quality.svg\" alt=\"precision, recall and AUPRC by week\"></a></p>\n<table><tr><th>week</th><th>verdicts</th><th>alert rate</th><th>unlabelled</th><th>labelled frauds</th><th>precision</th><th>recall</th><th>AUPRC</th></tr>\n");
        for w in weeks {
            let cells: String = w
                .cells()
                .iter()
                .map(|c| format!("<td>{}</td>", escape(c)))
                .collect();
            quality.push_str(&format!("<tr>{cells}</tr>\n"));
        }
        quality.push_str("</table>\n");
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Monitoring: model {version}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}img{{max-width:48%;margin:4px}}</style>
</head><body>
<h1>Monitoring: model {version}</h1>
<p>Drift is the PSI of each day's rows against the model's reference: stable below {moderate}, moderate from {moderate}, significant from {significant}.</p>
<p><a href="psi.svg"><img src="psi.svg" alt="PSI by day"></a>
<a href="scores.svg"><img src="scores.svg" alt="score distribution, live and reference"></a></p>
<h2>Drift by day</h2>
<table><tr><th>day</th><th>rows</th><th>score PSI</th><th>worst variables (PSI)</th></tr>
{drift_rows}</table>
<h2>Quality by week</h2>
{quality}</body></html>
"#,
        version = escape(version),
        moderate = bands.moderate,
        significant = bands.significant,
    )
}
