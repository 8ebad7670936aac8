//! Linear interpolation between two runs' weights (SPEC 1.3 and 4.5, the authors' `eval_loss_surface.py`).
//!
//! $\theta(a) = (1-a)\,\theta_A + a\,\theta_B$ for every parameter (so $a = 0$ and $a = 1$ are the two checkpoints
//! exactly). At every $a$ the BatchNorm running statistics are re-estimated from scratch with one pass over the
//! first `bn_examples` images of run A's training split, augmented as run A trained (same draws at every $a$), in
//! batches of [`BN_BATCH`], as a cumulative average over images (the authors' `bn_update`: momentum $b/(N+b)$ for
//! a batch of $b$ images after $N$, i.e. the batch means and unbiased batch variances weighted by batch size);
//! networks without BatchNorm skip this. Then the loss and error on the first
//! `examples` un-augmented images of run A's training split (with its training labels) and of the test set, in
//! evaluation mode.

use std::fs;
use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use samlab_core::run_dir::{write_atomic, write_csv};
use samlab_core::ConfigError;
use samlab_report::{Figure, Series};
use serde::{Deserialize, Serialize};

use super::{write_json_file, LoadedRun, RunInfo, Written};
use crate::data::{assemble, Augment, ImageSet};
use crate::models::Network;
use crate::nn::{BnMode, BnStats, Ctx};
use crate::rng::{Purpose, Stream};
use crate::run::RunError;
use crate::trainer::{evaluate, Batch};

/// Batch size of the BatchNorm re-estimation pass (the authors' loader).
pub const BN_BATCH: usize = 128;

/// The settings of an interpolation (the defaults are those of `eval_loss_surface.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterpolationConfig {
    /// First coefficient.
    pub from: f64,
    /// Last coefficient (included when the grid reaches it).
    pub to: f64,
    /// Grid step.
    pub step: f64,
    /// Training images of the BatchNorm re-estimation pass.
    pub bn_examples: usize,
    /// Training and test images the losses and errors are measured on.
    pub examples: usize,
}

impl Default for InterpolationConfig {
    fn default() -> Self {
        InterpolationConfig {
            from: -1.0,
            to: 2.0,
            step: 0.05,
            bn_examples: 5000,
            examples: 1024,
        }
    }
}

/// Most grid points accepted.
const MAX_POINTS: usize = 100_000;

impl InterpolationConfig {
    /// The coefficients: `from, from + step, ..., <= to`, plus 0 and 1 if the grid misses them, sorted (values
    /// rounded to 1e-9 so that e.g. -1 + 20 * 0.05 is exactly 0).
    pub fn alphas(&self) -> Result<Vec<f64>, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            field: "interpolation",
            reason,
        };
        if !(self.from.is_finite() && self.to.is_finite() && self.from <= self.to) {
            return Err(bad(format!(
                "needs finite from <= to, got from {} to {}",
                self.from, self.to
            )));
        }
        // Points from, from + step, ..., <= to (with a 1e-9 tolerance at the end).
        let n = samlab_core::limits::grid_len(
            "interpolation step",
            self.from,
            self.to + 1e-9 * self.step,
            self.step,
            MAX_POINTS,
        )?;
        let snap = |a: f64| (a * 1e9).round() / 1e9;
        let mut alphas: Vec<f64> = (0..n)
            .map(|i| snap(self.from + i as f64 * self.step))
            .collect();
        alphas.extend([0.0, 1.0]);
        alphas.sort_by(f64::total_cmp);
        alphas.dedup();
        Ok(alphas)
    }
}

/// The numbers at one coefficient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterpolationPoint {
    /// The coefficient $a$.
    pub alpha: f64,
    /// Mean cross-entropy on the training images.
    pub train_loss: f64,
    /// Error on the training images.
    pub train_error: f64,
    /// Mean cross-entropy on the test images.
    pub test_loss: f64,
    /// Error on the test images.
    pub test_error: f64,
}

/// The headline numbers of a curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterpolationSummary {
    /// Run A ($a = 0$).
    pub at_0: InterpolationPoint,
    /// Run B ($a = 1$).
    pub at_1: InterpolationPoint,
    /// Lowest test error over the grid.
    pub min_test_error: f64,
    /// Its coefficient (the first on ties).
    pub min_test_error_alpha: f64,
    /// Highest training loss over the coefficients in [0, 1].
    pub max_train_loss_01: f64,
    /// Its coefficient.
    pub max_train_loss_01_alpha: f64,
    /// The barrier: `max_train_loss_01` minus the larger of the endpoints' training losses (0 when the largest
    /// is at an endpoint; > 0 means the path climbs between the two solutions; NaN when a training loss on
    /// [0, 1] is not finite).
    pub train_loss_barrier: f64,
}

/// The result of [`interpolate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interpolation {
    /// Run A.
    pub run_a: RunInfo,
    /// Run B.
    pub run_b: RunInfo,
    /// The settings.
    pub config: InterpolationConfig,
    /// Whether BatchNorm statistics were re-estimated (false for networks without BatchNorm).
    pub bn_reestimated: bool,
    /// Headline numbers.
    pub summary: InterpolationSummary,
    /// The curve.
    pub points: Vec<InterpolationPoint>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Interpolation {
    /// The table [`Interpolation::write`] writes in its directory.
    pub const CSV: &'static str = "interpolation.csv";
    /// The report, as JSON.
    pub const JSON: &'static str = "interpolation.json";
    /// The stem of the figure (`.svg` and `.png`).
    pub const FIGURE: &'static str = "interpolation";

    /// Training (dashed) and test cross-entropy against the coefficient, the two runs marked.
    pub fn figure(&self) -> Figure {
        let mut fig = Figure::new(
            "Linear interpolation (train dashed, test solid)",
            "interpolation coefficient a (0: run A, 1: run B)",
            "cross-entropy",
        );
        let curve = |f: fn(&InterpolationPoint) -> f64| {
            self.points.iter().map(|q| (q.alpha, f(q))).collect()
        };
        fig.series.push(Series {
            dashed: true,
            ..Series::new("train loss", curve(|q| q.train_loss))
        });
        fig.series
            .push(Series::new("test loss", curve(|q| q.test_loss)));
        fig.vlines = vec![(0.0, "run A".into()), (1.0, "run B".into())];
        fig
    }

    /// Creates `out` and writes `out/interpolation.csv` (one row per coefficient: alpha, train loss and error, test
    /// loss and error), `out/interpolation.json` (the whole result) and the figure `out/interpolation.svg` and
    /// `.png`, each atomically. A figure that cannot be drawn is not an error: [`Written`] says why.
    pub fn write(&self, out: &Path) -> Result<Written, RunError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunError::Io { path, source }
        };
        fs::create_dir_all(out).map_err(io(out))?;
        let csv = out.join(Self::CSV);
        write_atomic(&csv, |p| {
            write_csv(
                p,
                &[
                    "alpha",
                    "train_loss",
                    "train_error",
                    "test_loss",
                    "test_error",
                ],
                self.points.iter().map(|q| {
                    vec![
                        q.alpha,
                        q.train_loss,
                        q.train_error,
                        q.test_loss,
                        q.test_error,
                    ]
                }),
            )
        })
        .map_err(io(&csv))?;
        let json = out.join(Self::JSON);
        write_json_file(&json, self)?;
        let mut written = Written {
            files: vec![csv, json],
            figure_error: None,
        };
        written.figure(&self.figure(), &out.join(Self::FIGURE));
        Ok(written)
    }
}

/// Fresh BatchNorm running statistics of the network at `params`: one pass over the first `n` images of `set` in
/// batches of [`BN_BATCH`], augmented with `augment` (draws keyed by `seed`), folded in as a cumulative average
/// over images, as the authors' `bn_update`: a batch of $b$ images after $N$ images gets momentum $b / (N + b)$, so
/// the result is the mean of the batch means and unbiased batch variances weighted by batch size (a last batch of
/// 8 after 4,992 images weighs 8/5,000, not 1/40).
pub fn reestimate_bn(
    net: &Network,
    params: &[Tensor<1>],
    set: &ImageSet,
    n: usize,
    augment: Augment,
    seed: u64,
    device: &Device,
) -> BnStats {
    let mut stats = BnStats::new(net.bn_channels(), device);
    let indices: Vec<usize> = (0..n.min(set.len())).collect();
    let mut seen = 0usize;
    for (t, chunk) in indices.chunks(BN_BATCH).enumerate() {
        let mut stream = Stream::new(seed, Purpose::Analysis, 0, t as u64);
        let (images, labels) = assemble(set, &set.labels, chunk, augment, &mut stream);
        let batch = Batch::new(images, labels, set.shape, set.classes, device);
        // This batch's own statistics (momentum 1 on fresh statistics), then folded in with weight b / (N + b).
        let mut own = BnStats::new(net.bn_channels(), device);
        let mut ctx = Ctx {
            params,
            mode: BnMode::Average { seen: 0 },
            stats: &mut own,
            tape: None,
            grouped: None,
        };
        let _ = net.forward(&mut ctx, batch.x);
        let b = chunk.len();
        let m = b as f64 / (seen + b) as f64;
        let fold = |old: &mut [Tensor<1>], new: Vec<Tensor<1>>| {
            for (o, x) in old.iter_mut().zip(new) {
                *o = o.clone().mul_scalar(1.0 - m) + x.mul_scalar(m);
            }
        };
        fold(&mut stats.mean, own.mean);
        fold(&mut stats.var, own.var);
        seen += b;
    }
    stats
}

/// Fails unless runs A and B have the same model (architecture, width, normalization, input, classes) and the
/// same data set.
pub fn check_compatible(a: &LoadedRun, b: &LoadedRun) -> Result<(), RunError> {
    let (ia, ib) = (&a.info, &b.info);
    if ia.model != ib.model {
        return Err(RunError::Usage(format!(
            "cannot interpolate between different models: {} is {:?}, {} is {:?}",
            ia.dir.display(),
            ia.model,
            ib.dir.display(),
            ib.model
        )));
    }
    if ia.dataset != ib.dataset {
        return Err(RunError::Usage(format!(
            "cannot interpolate between runs on different data sets: {} is on {}, {} on {}",
            ia.dir.display(),
            ia.dataset.name(),
            ib.dir.display(),
            ib.dataset.name()
        )));
    }
    Ok(())
}

/// The loss and error curves between runs A and B (data, augmentation and evaluation batch size of run A).
pub fn interpolate(
    a: &LoadedRun,
    b: &LoadedRun,
    cfg: &InterpolationConfig,
) -> Result<Interpolation, RunError> {
    check_compatible(a, b)?;
    let alphas = cfg.alphas()?;
    let data = &a.data;
    let limit = data.train.len().min(data.test.len());
    if cfg.examples == 0 || cfg.examples > limit {
        return Err(ConfigError::Invalid {
            field: "examples",
            reason: format!(
                "must be in 1..={limit} (the smaller of the training split and the test set), got {}",
                cfg.examples
            ),
        }
        .into());
    }
    let has_bn = !a.net.bn_channels().is_empty();
    if has_bn && (cfg.bn_examples == 0 || cfg.bn_examples > data.train.len()) {
        return Err(ConfigError::Invalid {
            field: "bn_examples",
            reason: format!(
                "must be in 1..={} (the training split's size), got {}",
                data.train.len(),
                cfg.bn_examples
            ),
        }
        .into());
    }
    let started = Instant::now();
    let augment = a
        .config
        .data
        .augment
        .unwrap_or(a.config.data.dataset.default_augment());
    let eval_batch = a.config.train.eval_batch_size;
    let points: Vec<InterpolationPoint> = alphas
        .iter()
        .map(|&alpha| {
            let params: Vec<Tensor<1>> = a
                .state
                .params
                .iter()
                .zip(&b.state.params)
                .map(|(pa, pb)| pa.clone().mul_scalar(1.0 - alpha) + pb.clone().mul_scalar(alpha))
                .collect();
            let bn = if has_bn {
                reestimate_bn(
                    &a.net,
                    &params,
                    &data.train,
                    cfg.bn_examples,
                    augment,
                    a.config.train.seed,
                    &a.device,
                )
            } else {
                a.state.bn.clone()
            };
            let eval = |set: &ImageSet, labels: &[u16]| {
                evaluate(
                    &a.net,
                    &params,
                    &bn,
                    set,
                    &labels[..cfg.examples],
                    eval_batch,
                    &a.device,
                )
            };
            let (train_loss, train_error) = eval(&data.train, &data.train_labels);
            let (test_loss, test_error) = eval(&data.test, &data.test.labels);
            InterpolationPoint {
                alpha,
                train_loss,
                train_error,
                test_loss,
                test_error,
            }
        })
        .collect();
    Ok(Interpolation {
        run_a: a.info.clone(),
        run_b: b.info.clone(),
        config: cfg.clone(),
        bn_reestimated: has_bn,
        summary: summarize(&points),
        points,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The headline numbers of a curve that contains $a = 0$ and $a = 1$.
fn summarize(points: &[InterpolationPoint]) -> InterpolationSummary {
    let at = |alpha: f64| {
        *points
            .iter()
            .find(|p| p.alpha == alpha)
            .expect("0 and 1 are on the grid")
    };
    let (at_0, at_1) = (at(0.0), at(1.0));
    // NaN values (a diverged point) never win a comparison.
    let argbest = |pts: &mut dyn Iterator<Item = &InterpolationPoint>,
                   key: fn(&InterpolationPoint) -> f64,
                   better: fn(f64, f64) -> bool| {
        pts.fold((f64::NAN, f64::NAN), |(best, alpha), p| {
            if best.is_nan() || better(key(p), best) {
                (key(p), p.alpha)
            } else {
                (best, alpha)
            }
        })
    };
    let (min_test_error, min_test_error_alpha) =
        argbest(&mut points.iter(), |p| p.test_error, |x, y| x < y);
    let (max_train_loss_01, max_train_loss_01_alpha) = argbest(
        &mut points.iter().filter(|p| (0.0..=1.0).contains(&p.alpha)),
        |p| p.train_loss,
        |x, y| x > y,
    );
    // A loss that is not finite on the path (a diverged endpoint) leaves the barrier unknown: `max` would skip it.
    let finite = points
        .iter()
        .filter(|p| (0.0..=1.0).contains(&p.alpha))
        .all(|p| p.train_loss.is_finite());
    InterpolationSummary {
        at_0,
        at_1,
        min_test_error,
        min_test_error_alpha,
        max_train_loss_01,
        max_train_loss_01_alpha,
        train_loss_barrier: match finite {
            true => max_train_loss_01 - at_0.train_loss.max(at_1.train_loss),
            false => f64::NAN,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(alpha: f64, train_loss: f64) -> InterpolationPoint {
        InterpolationPoint {
            alpha,
            train_loss,
            train_error: 0.0,
            test_loss: 0.0,
            test_error: 0.0,
        }
    }

    /// The barrier over [0, 1]; a loss that is not finite there (a diverged endpoint) makes it unknown, not 0.
    #[test]
    fn the_barrier_is_nan_where_a_loss_on_the_path_is_not_finite() {
        let path = [point(0.0, 0.5), point(0.5, 0.9), point(1.0, 0.3)];
        assert!((summarize(&path).train_loss_barrier - 0.4).abs() < 1e-12);
        for bad in [f64::NAN, f64::INFINITY] {
            let path = [point(0.0, 0.5), point(0.5, 0.9), point(1.0, bad)];
            assert!(summarize(&path).train_loss_barrier.is_nan());
        }
        // Outside [0, 1] a non-finite loss does not matter.
        let path = [point(-0.5, f64::NAN), point(0.0, 0.5), point(1.0, 0.3)];
        assert_eq!(summarize(&path).train_loss_barrier, 0.0);
    }
}
