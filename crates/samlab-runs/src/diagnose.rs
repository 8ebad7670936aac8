//! `samlab diagnose`: what SAM did in a run, from the SAM columns of its metrics ([`SamObservation`]:
//! perturbation norm, clean/SAM gradient cosine, realised sharpness, BatchNorm shift), as one verdict with its
//! numbers. A deep-net run's rows hold the means over each epoch's observed steps; an analytic run's (diagonal and
//! ReLU nets) the SAM step taken from each logged iteration, its radius recomputed from the run's config.
//!
//! The verdicts, checked in this order over the log points where SAM was measured:
//!
//! - **inactive**: no log point has a radius or a measurement (ERM, `rho = 0`);
//! - **not measured**: the run has a radius but no measurement (written before samlab logged them);
//! - **rho dominating the gradient**: the cosine between the clean and the SAM gradient is negative at more than
//!   [`DOMINATING_FRACTION`] of the log points (the step goes against the clean gradient);
//! - **rho too small to matter**: the cosine stays above [`NEGLIGIBLE_COS`] and the realised sharpness below
//!   [`NEGLIGIBLE_SHARPNESS`] of the training loss (the SAM gradient is the clean one to three digits);
//! - **active** otherwise.

use std::path::{Path, PathBuf};

use samlab_analytic::relu::run::ReluMetricsRow;
use samlab_analytic::relu::LossReduction;
use samlab_core::ascent::SamObservation;
use samlab_core::data::Dataset;
use samlab_core::run::CurvePoint;
use samlab_core::run_dir::read_rows;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_core::BadInput;
use samlab_deep::run::EpochRow;
use serde::Serialize;

use crate::AnyRunConfig;

/// The share of log points with a negative cosine above which rho dominates the gradient.
pub const DOMINATING_FRACTION: f64 = 0.25;
/// The mean cosine above which the SAM gradient is the clean one (with [`NEGLIGIBLE_SHARPNESS`]).
pub const NEGLIGIBLE_COS: f64 = 0.999;
/// The mean realised sharpness, relative to the mean training loss, below which it is negligible.
pub const NEGLIGIBLE_SHARPNESS: f64 = 1e-3;

/// One log point of a run: its radius, its training loss and what SAM did over the period it closes (a deep-net
/// epoch) or at the step taken from it (an analytic run).
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// The radius (of the period's last update; of the step from the point in an analytic run, 0 at its end).
    pub rho: f64,
    /// The training loss, as a mean over examples (as the realised sharpness is).
    pub train_loss: f64,
    /// The mean observation (absent where SAM did not step).
    pub sam: SamObservation,
}

/// The verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No radius and no measurement: an ERM run.
    Inactive,
    /// A radius but no measurement.
    NotMeasured,
    /// The SAM gradient points against the clean one at many log points.
    RhoDominating,
    /// The SAM gradient is the clean one and the loss does not rise at the perturbed point.
    RhoTooSmall,
    /// None of the above.
    Active,
}

/// What `diagnose` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    /// The run directory.
    pub run: PathBuf,
    /// Its engine.
    pub engine: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict as a sentence, with its numbers.
    pub message: String,
    /// Log points in the run.
    pub points: usize,
    /// Log points where SAM was measured.
    pub measured: usize,
    /// The largest radius logged.
    pub rho_max: f64,
    /// The mean over the measured log points of `||delta|| / ||w||`.
    pub delta_over_w: Option<f64>,
    /// The mean cosine between the clean and the SAM gradient.
    pub grad_cos_mean: Option<f64>,
    /// The smallest logged cosine.
    pub grad_cos_min: Option<f64>,
    /// The share of the log points with a measured cosine where it is negative.
    pub grad_cos_negative: Option<f64>,
    /// The mean realised sharpness `L(w + delta) - L(w)`.
    pub sharpness_mean: Option<f64>,
    /// The mean realised sharpness over the mean training loss of the same log points.
    pub sharpness_relative: Option<f64>,
    /// The mean BatchNorm batch-mean shift (clean standard deviations).
    pub bn_mean_shift: Option<f64>,
    /// The mean BatchNorm batch-variance relative change.
    pub bn_var_shift: Option<f64>,
}

/// A finite value, or `None`.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The mean of the finite values of `xs` (`None` without any).
fn mean_of(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = xs
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Reads the run in `dir` and diagnoses it.
pub fn diagnose_dir(dir: &Path) -> anyhow::Result<Diagnosis> {
    let not_a_run =
        |why: String| BadInput(format!("{} is not a run directory: {why}", dir.display()));
    let config_path = dir.join("config.toml");
    let text = samlab_core::run_dir::read_text(&config_path)
        .map_err(|e| not_a_run(format!("config.toml: {e}")))?;
    let config = AnyRunConfig::parse(&config_path, &text).map_err(|e| not_a_run(e.to_string()))?;
    let metrics = dir.join("metrics.csv");
    let bad_metrics = |e: samlab_core::DataError| not_a_run(e.to_string());
    let points: Vec<Point> = match &config {
        AnyRunConfig::Deep(_) => read_rows::<EpochRow>(&metrics)
            .map_err(|e| not_a_run(e.to_string()))?
            .iter()
            .map(|r| Point {
                rho: r.rho,
                train_loss: r.train_loss,
                sam: r.sam,
            })
            .collect(),
        AnyRunConfig::Diag(c) => {
            let rows = read_rows::<CurvePoint>(&metrics).map_err(bad_metrics)?;
            let at = Schedule::new(&c.train.sam, &c.train.lr, c.train.iters);
            rows.iter().map(|r| at.point(r, r.train_loss)).collect()
        }
        AnyRunConfig::Relu(c) => {
            let rows = read_rows::<ReluMetricsRow>(&metrics).map_err(bad_metrics)?;
            // The realised sharpness is of mean losses: a summed training loss is divided by n.
            let per_example = match c.train.loss {
                LossReduction::Mean => 1.0,
                LossReduction::Sum => {
                    let data = Dataset::load_dir(dir)
                        .map_err(|e| not_a_run(format!("its training data: {e}")))?;
                    LossReduction::Mean.factor(data.n())
                }
            };
            let at = Schedule::new(&c.train.sam, &c.train.lr, c.train.iters);
            rows.iter()
                .map(|r| {
                    let point = CurvePoint {
                        sam: r.sam,
                        ..CurvePoint::new(r.iteration, r.train_loss, r.test_loss)
                    };
                    at.point(&point, per_example * r.train_loss)
                })
                .collect()
        }
    };
    Ok(diagnose(dir, config.engine(), &points))
}

/// The radii of an analytic run, from its config.
struct Schedule<'a> {
    sam: &'a SamConfig,
    lr: &'a LrSchedule,
    iters: usize,
}

impl<'a> Schedule<'a> {
    fn new(sam: &'a SamConfig, lr: &'a LrSchedule, iters: usize) -> Self {
        Schedule { sam, lr, iters }
    }

    /// The log point of `p` with training loss `train_loss`: the radius of the step taken from it (none at the
    /// end).
    fn point(&self, p: &CurvePoint, train_loss: f64) -> Point {
        let rho = if p.iteration < self.iters {
            self.sam.lr_rho_at(self.lr, p.iteration, self.iters).1
        } else {
            0.0
        };
        Point {
            rho,
            train_loss,
            sam: p.sam,
        }
    }
}

/// The diagnosis of the log points `points` of the `engine` run in `dir`.
pub fn diagnose(dir: &Path, engine: &'static str, points: &[Point]) -> Diagnosis {
    let rho_max = points.iter().map(|p| p.rho).fold(0.0, f64::max);
    let measured: Vec<&Point> = points.iter().filter(|p| !p.sam.is_absent()).collect();
    let over = |f: &dyn Fn(&Point) -> f64| mean_of(measured.iter().map(|p| f(p)));
    let cosines: Vec<f64> = measured
        .iter()
        .map(|p| p.sam.grad_cos)
        .filter(|c| !c.is_nan())
        .collect();
    let sharpness = over(&|p| p.sam.sharpness);
    // The training loss of the log points whose sharpness was measured.
    let loss = over(&|p| {
        if p.sam.sharpness.is_nan() {
            f64::NAN
        } else {
            p.train_loss
        }
    });
    let mut d = Diagnosis {
        run: dir.to_path_buf(),
        engine,
        verdict: Verdict::Active,
        message: String::new(),
        points: points.len(),
        measured: measured.len(),
        rho_max,
        delta_over_w: over(&|p| p.sam.delta_norm / p.sam.weight_norm),
        grad_cos_mean: mean_of(cosines.iter().copied()),
        grad_cos_min: cosines.iter().copied().reduce(f64::min),
        grad_cos_negative: (!cosines.is_empty())
            .then(|| cosines.iter().filter(|&&c| c < 0.0).count() as f64 / cosines.len() as f64),
        sharpness_mean: sharpness,
        sharpness_relative: sharpness.zip(loss).and_then(|(s, l)| finite(s / l)),
        bn_mean_shift: over(&|p| p.sam.bn_mean_shift),
        bn_var_shift: over(&|p| p.sam.bn_var_shift),
    };
    let numbers = numbers(&d);
    (d.verdict, d.message) = if measured.is_empty() && rho_max == 0.0 {
        (
            Verdict::Inactive,
            "SAM inactive (rho = 0 / ERM run)".to_string(),
        )
    } else if measured.is_empty() {
        (
            Verdict::NotMeasured,
            format!("SAM not measured: rho up to {rho_max} but no SAM diagnostics in metrics.csv (a run written before samlab logged them; train it again)"),
        )
    } else if d.grad_cos_negative.is_some_and(|f| f > DOMINATING_FRACTION) {
        (
            Verdict::RhoDominating,
            format!(
                "rho dominating the gradient (cos < 0 at {:.0}% of log points): {numbers}",
                100.0 * d.grad_cos_negative.unwrap_or(0.0)
            ),
        )
    } else if d.grad_cos_mean.is_none_or(|c| c > NEGLIGIBLE_COS)
        && d.sharpness_relative
            .is_none_or(|s| s.abs() < NEGLIGIBLE_SHARPNESS)
        && (d.grad_cos_mean.is_some() || d.sharpness_relative.is_some())
    {
        (
            Verdict::RhoTooSmall,
            format!("rho too small to matter: {numbers}"),
        )
    } else {
        (Verdict::Active, format!("SAM active: {numbers}"))
    };
    d
}

/// The measured numbers of `d` as one line.
fn numbers(d: &Diagnosis) -> String {
    let show = |name: &str, x: Option<f64>| match x {
        Some(x) => format!("{name} = {x:.4}"),
        None => format!("{name} not measured"),
    };
    let mut parts = vec![
        format!("rho up to {}", d.rho_max),
        match d.delta_over_w {
            Some(r) => format!("||delta|| / ||w|| = {r:.3e}"),
            None => "||delta|| not measured".into(),
        },
        show("mean cos(clean, SAM gradient)", d.grad_cos_mean),
        show("min cos", d.grad_cos_min),
        match (d.sharpness_mean, d.sharpness_relative) {
            (Some(s), Some(r)) => format!(
                "realised sharpness L(w+delta) - L(w) = {s:.3e} ({:.2}% of the loss)",
                100.0 * r
            ),
            _ => "realised sharpness not measured".into(),
        },
    ];
    if let (Some(m), Some(v)) = (d.bn_mean_shift, d.bn_var_shift) {
        parts.push(format!(
            "BatchNorm batch statistics moved by {m:.3e} std (mean), {:.2}% (variance)",
            100.0 * v
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rho: f64, cos: f64, sharpness: f64) -> Point {
        Point {
            rho,
            train_loss: 0.5,
            sam: SamObservation {
                weight_norm: 20.0,
                delta_norm: rho,
                grad_cos: cos,
                sharpness,
                ..SamObservation::ABSENT
            },
        }
    }

    fn verdict(points: &[Point]) -> Diagnosis {
        diagnose(Path::new("run"), "deep", points)
    }

    #[test]
    fn each_verdict_at_its_threshold() {
        let erm = Point {
            sam: SamObservation::ABSENT,
            ..point(0.0, 0.0, 0.0)
        };
        assert_eq!(verdict(&[erm; 3]).verdict, Verdict::Inactive);
        let old = Point { rho: 0.05, ..erm };
        assert_eq!(verdict(&[old; 3]).verdict, Verdict::NotMeasured);

        let d = verdict(&[point(1e-6, 0.99999, 1e-8); 4]);
        assert_eq!(d.verdict, Verdict::RhoTooSmall, "{}", d.message);
        assert_eq!(d.delta_over_w, Some(1e-6 / 20.0));
        assert!(d.message.starts_with(
            "rho too small to matter: rho up to 0.000001, ||delta|| / ||w|| = 5.000e-8"
        ));
        // Sharpness of 0.1% of the loss is no longer negligible.
        let d = verdict(&[point(1e-3, 0.99999, 0.5 * NEGLIGIBLE_SHARPNESS * 1.01); 4]);
        assert_eq!(d.verdict, Verdict::Active, "{}", d.message);

        let normal = point(0.05, 0.98, 0.07);
        let d = verdict(&[normal; 4]);
        assert_eq!(d.verdict, Verdict::Active);
        assert_eq!(d.sharpness_relative, Some(0.07 / 0.5));

        // One of four log points against the clean gradient is at the threshold; two are above it.
        let against = point(0.8, -0.1, 0.4);
        assert_eq!(
            verdict(&[normal, normal, normal, against]).verdict,
            Verdict::Active
        );
        let d = verdict(&[normal, normal, against, against]);
        assert_eq!(d.verdict, Verdict::RhoDominating);
        assert_eq!(
            (d.grad_cos_negative, d.grad_cos_min),
            (Some(0.5), Some(-0.1))
        );
        assert!(
            d.message.contains("cos < 0 at 50% of log points"),
            "{}",
            d.message
        );

        // ERM epochs (before a SAM window) are left out of the means.
        let d = verdict(&[erm, erm, normal]);
        assert_eq!((d.points, d.measured, d.grad_cos_mean), (3, 1, Some(0.98)));
    }
}
