//! Helpers shared by the ReLU-network presets: parallel runs, medians, and the learned-function figure.

use std::path::{Path, PathBuf};

use anyhow::Result;
use samlab_analytic::relu::data::{twelve_point_inputs, twelve_point_targets};
use samlab_analytic::relu::{LossReduction, ReluInit, ReluTrainConfig, StopRule};
use samlab_core::run::LogSchedule;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_report::{Figure, Scale, Series};

use super::fmt_loss;
use samlab_analytic::relu::run::{
    MetricSettings, ReluData, ReluMetricsRow, ReluOutcome, ReluRunConfig,
};

/// A width-100 network with SPEC §3's initialization (seed `seed`) on the 12-point problem, summed loss.
pub fn twelve_point_run(
    seed: u32,
    lr: LrSchedule,
    iters: usize,
    batch_size: Option<usize>,
    sam: SamConfig,
    stop: Option<StopRule>,
) -> ReluRunConfig {
    ReluRunConfig {
        engine: Default::default(),
        data: ReluData::TwelvePoints,
        width: 100,
        bias: true,
        init: ReluInit::Blanc { scale: 1.0 },
        init_seed: seed,
        train: ReluTrainConfig {
            lr,
            iters,
            batch_size,
            seed,
            sam,
            loss: LossReduction::Sum,
            stop,
            log: LogSchedule::Notebook,
        },
        metrics: MetricSettings::default(),
    }
}

/// `value` of a run that finished, NaN for a diverged one (so that it never counts in a claim's favour: NaN
/// sorts last in [`median`] and fails every comparison).
pub fn if_ok(o: &ReluOutcome, value: f64) -> f64 {
    if o.summary.header.status == samlab_core::run::RunStatus::Ok {
        value
    } else {
        f64::NAN
    }
}

/// Median of `values` (mean of the middle two for an even count; NaN for none). NaNs sort last.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// The 12 data points as black markers (no line): NaN points between them break the line.
pub fn data_points() -> Series {
    let points = twelve_point_inputs()
        .into_iter()
        .zip(twelve_point_targets())
        .flat_map(|p| [p, (f64::NAN, f64::NAN)])
        .collect();
    Series {
        name: "data".into(),
        points,
        dashed: false,
        markers: true,
        color: None,
        band: vec![],
    }
}

/// Learned 1D functions of `runs` (label, outcome) with the data points, y range as the notebooks plot it.
pub fn functions_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    runs: &[(String, &ReluOutcome)],
) -> Result<PathBuf> {
    // Functions take palette colours 1, 2, ...; the data go last (drawn on top) at an index the palette maps to
    // black again (it has 7 colours, black first); absent series in between draw nothing.
    let mut series = vec![Series::default()];
    for (k, (name, o)) in runs.iter().enumerate() {
        let points = o.function.as_ref().map_or_else(Vec::new, |f| {
            f.rows().into_iter().map(|r| (r[0], r[1])).collect()
        });
        series.push(Series {
            name: name.clone(),
            points,
            dashed: k % 2 == 1 && runs.len() <= 2,
            markers: false,
            color: None,
            band: vec![],
        });
    }
    while series.len() % 7 != 0 {
        series.push(Series::default());
    }
    series.push(data_points());
    let y = twelve_point_targets();
    let (lo, hi) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let figure = Figure {
        title: title.into(),
        x_label: "x".into(),
        y_label: "f(x)".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        series,
        vlines: vec![],
        // The notebooks' lower limit; room above the data for the legend.
        y_range: Some((1.3 * lo, 2.0 * hi)),
    };
    Ok(samlab_report::render(&figure, &dir.join(stem))?.0)
}

/// A quantity logged along training (losses from the curve, network measurements) for several runs, against
/// the iteration on a linear axis; `log_y` for losses.
pub fn along_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    y_label: &str,
    log_y: bool,
    runs: &[(String, &ReluOutcome)],
    value: impl Fn(&ReluMetricsRow) -> f64,
) -> Result<PathBuf> {
    let series = runs
        .iter()
        .map(|(name, o)| Series {
            name: name.clone(),
            points: o
                .rows
                .iter()
                .map(|r| (r.iteration as f64, value(r)))
                .collect(),
            dashed: false,
            markers: false,
            color: None,
            band: vec![],
        })
        .collect();
    let figure = Figure {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: y_label.into(),
        x_scale: Scale::Linear,
        y_scale: if log_y { Scale::Log } else { Scale::Linear },
        series,
        vlines: vec![],
        y_range: None,
    };
    Ok(samlab_report::render(&figure, &dir.join(stem))?.0)
}

/// One table row per run: name, iterations, final train and test loss, kinks, distinct active neurons, feature
/// sparsity, status, seconds.
pub fn relu_table(names: &[String], outcomes: &[ReluOutcome]) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "run",
        "updates",
        "final train loss",
        "final test loss",
        "kinks",
        "active neurons",
        "feature sparsity",
        "status",
        "seconds",
    ]
    .map(String::from)
    .to_vec()];
    for (name, o) in names.iter().zip(outcomes) {
        let s = &o.summary;
        rows.push(vec![
            name.clone(),
            format!(
                "{}{}",
                s.iterations,
                if s.stopped_early { " (stopped)" } else { "" }
            ),
            fmt_loss(o.train_loss()),
            fmt_loss(o.test_loss()),
            s.metrics.kinks.map_or("-".into(), |k| k.to_string()),
            s.metrics.active_neurons.to_string(),
            format!("{:.4}", s.metrics.feature_sparsity),
            format!("{:?}", s.header.status).to_lowercase(),
            format!("{:.2}", s.seconds),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
