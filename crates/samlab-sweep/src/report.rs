//! The sweep's table and figures: finished runs grouped by every axis but the seeds (keys ending in `seed`), each
//! metric of their summary.json as mean ± sample standard deviation over the group.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use samlab_core::run_dir::write_atomic;
use samlab_core::stats::mean_std;
use samlab_report::plot::{render, Figure, Series};
use serde_json::Value;

use crate::manifest::{run_dir, Manifest};
use crate::status::{finished_status, State};
use crate::{invalid, io_error, SweepError};

/// One row: the runs that differ only in their seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The non-seed axis values.
    pub values: Vec<(String, Value)>,
    /// Runs in the group.
    pub runs: usize,
    /// Runs in the group that diverged.
    pub diverged: usize,
    /// Per metric: [`mean_std`] of its finite values (std 0 for one value) and their number.
    pub metrics: Vec<(f64, f64, usize)>,
}

/// The aggregated sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The metrics, in column order.
    pub metrics: Vec<String>,
    /// One row per group, in manifest order.
    pub rows: Vec<Row>,
    /// Runs without a result: (index, id).
    pub unfinished: Vec<(usize, String)>,
}

/// The numeric leaves of a JSON value, with dotted keys.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        _ => {}
    }
}

/// Aggregates the finished runs of the sweep in `dir`: `metrics` (dotted summary.json keys), or every numeric
/// key the finished runs' summaries share when empty.
pub fn aggregate(
    dir: &Path,
    manifest: &Manifest,
    metrics: &[String],
) -> Result<Report, SweepError> {
    /// Runs sharing their non-seed axis values.
    struct Group {
        values: Vec<(String, Value)>,
        summaries: Vec<BTreeMap<String, f64>>,
        runs: usize,
        diverged: usize,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut unfinished = Vec::new();
    for (i, run) in manifest.runs.iter().enumerate() {
        let key: Vec<(String, Value)> = run
            .values
            .iter()
            .filter(|(k, _)| !k.rsplit('.').next().unwrap_or(k).ends_with("seed"))
            .cloned()
            .collect();
        let g = match groups.iter().position(|g| g.values == key) {
            Some(g) => g,
            None => {
                groups.push(Group {
                    values: key,
                    summaries: Vec::new(),
                    runs: 0,
                    diverged: 0,
                });
                groups.len() - 1
            }
        };
        groups[g].runs += 1;
        let out = run_dir(dir, run);
        match finished_status(&out) {
            Some(state) => {
                let path = out.join("summary.json");
                let text = fs::read(&path).map_err(io_error("read", &path))?;
                let summary: Value = serde_json::from_slice(&text).map_err(|e| {
                    SweepError::Invalid(format!("{} is damaged: {e}", path.display()))
                })?;
                let mut values = BTreeMap::new();
                leaves("", &summary, &mut values);
                groups[g].summaries.push(values);
                if state == State::Diverged {
                    groups[g].diverged += 1;
                }
            }
            None => unfinished.push((i, run.id.clone())),
        }
    }
    let summaries = || groups.iter().flat_map(|g| &g.summaries);
    let metrics: Vec<String> = if metrics.is_empty() {
        let mut shared: Option<Vec<String>> = None;
        for s in summaries() {
            let keys: Vec<String> = s.keys().cloned().collect();
            shared = Some(match shared {
                None => keys,
                Some(k) => k.into_iter().filter(|x| s.contains_key(x)).collect(),
            });
        }
        shared.unwrap_or_default()
    } else {
        if let Some(m) = metrics
            .iter()
            .find(|m| summaries().next().is_some() && !summaries().any(|s| s.contains_key(*m)))
        {
            return invalid(format!("no finished run's summary.json has a number `{m}`"));
        }
        metrics.to_vec()
    };
    let rows = groups
        .into_iter()
        .map(|g| Row {
            metrics: metrics
                .iter()
                .map(|m| {
                    let finite: Vec<f64> = g
                        .summaries
                        .iter()
                        .filter_map(|s| s.get(m).copied().filter(|x| x.is_finite()))
                        .collect();
                    let (mean, std) = mean_std(&finite);
                    (mean, std, finite.len())
                })
                .collect(),
            values: g.values,
            runs: g.runs,
            diverged: g.diverged,
        })
        .collect();
    Ok(Report {
        metrics,
        rows,
        unfinished,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.6e}")
    }
}

impl Report {
    /// The CSV text: axis columns, `runs`, `diverged`, then `<metric>_mean`, `<metric>_std`, `<metric>_n`.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let mut header: Vec<String> = self
            .rows
            .first()
            .map(|r| r.values.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        header.extend(["runs".into(), "diverged".into()]);
        for m in &self.metrics {
            header.extend([format!("{m}_mean"), format!("{m}_std"), format!("{m}_n")]);
        }
        let field = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let line =
            |cells: Vec<String>| cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",");
        out += &line(header);
        out.push('\n');
        for r in &self.rows {
            let mut cells: Vec<String> = r.values.iter().map(|(_, v)| cell(v)).collect();
            cells.extend([r.runs.to_string(), r.diverged.to_string()]);
            for &(mean, std, n) in &r.metrics {
                let x = |v: f64| {
                    if v.is_nan() {
                        String::new()
                    } else {
                        format!("{v:e}")
                    }
                };
                cells.extend([x(mean), x(std), n.to_string()]);
            }
            out += &line(cells);
            out.push('\n');
        }
        out
    }

    /// The Markdown table (`mean ± std (n)`), then the runs without a result.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Sweep report\n\n");
        let keys: Vec<String> = self
            .rows
            .first()
            .map(|r| r.values.iter().map(|(k, _)| format!("`{k}`")).collect())
            .unwrap_or_default();
        let mut header = keys.clone();
        header.extend(["runs".into(), "diverged".into()]);
        header.extend(self.metrics.iter().map(|m| format!("`{m}`")));
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for r in &self.rows {
            let mut cells: Vec<String> = r.values.iter().map(|(_, v)| cell(v)).collect();
            cells.extend([r.runs.to_string(), r.diverged.to_string()]);
            for &(mean, std, n) in &r.metrics {
                cells.push(if n == 0 {
                    "-".into()
                } else {
                    format!("{} ± {} ({n})", number(mean), number(std))
                });
            }
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out += "\nMean ± sample standard deviation (0 for one value) over the runs that differ only in their seed, \
                (n) finite values; diverged runs count where their summary has a finite value.\n";
        if !self.unfinished.is_empty() {
            let _ = writeln!(
                out,
                "\n{} runs have no result yet (`samlab sweep status` says why): {}",
                self.unfinished.len(),
                self.unfinished
                    .iter()
                    .map(|(i, id)| format!("{i} ({id})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out
    }

    /// The first axis (in loop order) with numbers only and at least two values: the x axis of the figures.
    fn x_axis(&self) -> Option<usize> {
        let keys = self.rows.first()?.values.len();
        (0..keys).find(|&k| {
            let xs: Vec<f64> = self
                .rows
                .iter()
                .filter_map(|r| r.values[k].1.as_f64())
                .collect();
            xs.len() == self.rows.len() && xs.iter().any(|&x| x != xs[0])
        })
    }

    /// One figure per metric, `figures/<metric>.{svg,png}` in `dir`: the mean against the first numeric axis, a
    /// band of ± one standard deviation, one line per value of the other non-seed axes. None when no axis is
    /// numeric; metrics without a finite mean are left out.
    pub fn figures(&self, dir: &Path) -> Result<Vec<PathBuf>, SweepError> {
        let Some(x) = self.x_axis() else {
            return Ok(Vec::new());
        };
        let x_key = self.rows[0].values[x].0.clone();
        let mut lines: Vec<(String, Vec<&Row>)> = Vec::new();
        for r in &self.rows {
            let label: Vec<String> = r
                .values
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != x)
                .map(|(_, (key, v))| format!("{key}={}", cell(v)))
                .collect();
            let label = label.join(", ");
            match lines.iter_mut().find(|(l, _)| *l == label) {
                Some((_, rows)) => rows.push(r),
                None => lines.push((label, vec![r])),
            }
        }
        let mut written = Vec::new();
        for (m, metric) in self.metrics.iter().enumerate() {
            let mut fig = Figure::new(
                metric.as_str(),
                x_key.as_str(),
                format!("{metric} (mean ± std over seeds)"),
            );
            for (label, rows) in &lines {
                let mut points: Vec<(f64, f64, f64)> = rows
                    .iter()
                    .filter_map(|r| Some((r.values[x].1.as_f64()?, r.metrics[m].0, r.metrics[m].1)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut series =
                    Series::new(label.as_str(), points.iter().map(|p| (p.0, p.1)).collect());
                series.markers = true;
                series.band = points
                    .iter()
                    .filter(|p| p.2.is_finite())
                    .map(|p| (p.0, p.1 - p.2, p.1 + p.2))
                    .collect();
                fig.series.push(series);
            }
            if fig.series.iter().all(|s| s.points.is_empty()) {
                continue;
            }
            let stem = dir.join("figures").join(metric.replace(['/', '\\'], "_"));
            let (svg, _) = render(&fig, &stem).map_err(|e| SweepError::Plot(e.to_string()))?;
            written.push(svg);
        }
        Ok(written)
    }

    /// Writes `dir/report.csv`, `dir/report.md` and the figures.
    pub fn write(&self, dir: &Path) -> Result<(), SweepError> {
        for (name, text) in [("report.csv", self.csv()), ("report.md", self.markdown())] {
            let path = dir.join(name);
            write_atomic(&path, |p| fs::write(p, &text)).map_err(io_error("write", &path))?;
        }
        self.figures(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_are_the_numeric_leaves() {
        let mut out = BTreeMap::new();
        leaves(
            "",
            &serde_json::json!({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": null}),
            &mut out,
        );
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            [("a".into(), 1.0), ("b.c".into(), 2.5)]
        );
    }
}
