//! What the deep-net presets share: the two scales they run at, runs shared between experiments, and statistics
//! over seeds.
//!
//! - **laptop** (the default): an MLP with BatchNorm (2 x 256 hidden units) on the shipped Fashion-MNIST subset
//!   (10,000 training images, 10% held out for validation, 2,000 test images), 20 epochs at batch 128, lr 0.1 with
//!   the paper's piecewise schedule, momentum 0.9, L2 5e-4 in the objective, 3 seeds. Our calibration
//!   (shared/notes/laptop-scale-deep.md, and the runs summarized in docs/DEEP.md) found test error too noisy to
//!   resolve the paper's effects at this size; test cross-entropy resolves them, so the claims report both.
//! - **paper**: SPEC §4 — PreAct ResNet-18 on CIFAR-10, 200 epochs (1000 for label noise), crop+flip, same
//!   optimizer; hours per run on a GPU.
//!
//! Every run goes to `<out>/deep_runs/<name>`, planned once whichever experiments ask for it: the ERM and SAM
//! baselines serve several sections.

use std::path::{Path, PathBuf};

use anyhow::Result;
use samlab_core::run::RunStatus;
use samlab_core::sam::{AscentSource, Grouping, Normalization, Perturbation, SamConfig};
pub use samlab_core::stats::mean_std;
use samlab_deep::analysis::hessian::HessianConfig;
use samlab_deep::data::{Augment, DatasetKind, LabelNoise, NoiseKind};
use samlab_deep::models::Arch;
use samlab_deep::nn::NormKind;
use samlab_deep::run::{DeepRunConfig, RunOutcome};

use samlab_report::{Figure, Scale, Series};

/// Which size the deep presets run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleKind {
    /// Minutes on a laptop CPU: an MLP on the shipped Fashion-MNIST subset.
    Laptop,
    /// The paper's setting: ResNet-18 on CIFAR-10 (needs `--data-dir`; hours per run on a GPU).
    Paper,
}

/// The settings of every deep preset at one scale.
#[derive(Clone, Debug)]
pub struct DeepScale {
    /// Which scale.
    pub kind: ScaleKind,
    /// The ERM run of seed 0 that every other run varies.
    pub base: DeepRunConfig,
    /// Epochs between the curvature logs of the runs the m-sharpness section draws (ERM and m-SAM at `rho` for
    /// every m of `m_grid`; 0: none). The log measures what the section's table measures (`samlab hessian`'s
    /// defaults), so its last point is the table's value; the other runs do not log.
    pub curvature_every: usize,
    /// Seeds of every comparison.
    pub seeds: Vec<u64>,
    /// Radii of SAM (batch and previous-batch) in the Fig. 1 comparison.
    pub rho_grid: Vec<f64>,
    /// The SAM variants' short radius grid (a variant whose step is smaller scales it: see `variants_deep`).
    pub variant_grid: Vec<f64>,
    /// Radii of the random-perturbation baseline (the expected norm of the noise).
    pub random_grid: Vec<f64>,
    /// Group sizes of the m-sharpness comparison (the batch size first).
    pub m_grid: Vec<usize>,
    /// The radius of m-SAM in the m grid, the switching runs and the ablations.
    pub rho: f64,
    /// The small group size of the switching runs, the label-noise runs and the ablations.
    pub small_m: usize,
    /// Radii of unnormalized SAM in the normalization ablation (its scale differs: rho * g).
    pub unnormalized_grid: Vec<f64>,
    /// Ascent steps of the multi-step ablation.
    pub multi_steps: usize,
    /// Epochs of the second phase of the switching runs, and their learning rate.
    pub switch_epochs: usize,
    /// Learning rate of the second phase.
    pub switch_lr: f64,
    /// The label-noise setting (data, epochs; ERM).
    pub noise_base: DeepRunConfig,
    /// rho of small-m SAM with label noise (SPEC notes: m = 16 with rho 0.05 collapses; 0.02 does not).
    pub noise_rho_small_m: f64,
}

fn sam(rho: f64, grouping: Grouping) -> SamConfig {
    SamConfig {
        normalization: Normalization::Normalized,
        ..SamConfig::usam(rho, grouping)
    }
}

impl DeepScale {
    /// The laptop scale (`quick`: 1 seed, half the epochs, one point per grid, 2 ascent steps instead of 3).
    pub fn laptop(quick: bool) -> Self {
        let mut base = samlab_deep::run::defaults();
        base.model.arch = Arch::Mlp;
        base.model.width = Some(256);
        base.model.norm = Some(NormKind::Batch);
        base.train.epochs = if quick { 10 } else { 20 };
        // The curvature log's settings, used only by the runs the m-sharpness figure draws (`with_curvature_log`):
        // `samlab hessian`'s defaults (the first 1,024 training examples, chunks of 128, no trace probes), so that
        // the last logged value is the table's.
        base.train.curvature_every = 0;
        base.train.curvature_examples = HessianConfig::default().examples;
        base.train.curvature_probes = 0;
        let mut noise_base = base.clone();
        noise_base.data.train_limit = Some(3000);
        noise_base.data.val_fraction = 0.2;
        noise_base.data.noisy_val = false;
        noise_base.data.label_noise = Some(LabelNoise {
            fraction: 0.6,
            kind: NoiseKind::Symmetric,
        });
        noise_base.train.epochs = if quick { 30 } else { 100 };
        noise_base.train.curvature_every = 0;
        DeepScale {
            kind: ScaleKind::Laptop,
            // Every 5 epochs of 20 (the ends of the schedule's first half-phase and of its three phases: lr drops
            // at epochs 10 and 15), 3.7 s per log; every 5 of 10 with --quick.
            curvature_every: if quick {
                base.train.epochs / 2
            } else {
                base.train.epochs / 4
            },
            base,
            seeds: if quick { vec![0] } else { vec![0, 1, 2] },
            rho_grid: if quick {
                vec![0.05]
            } else {
                vec![0.05, 0.2, 0.8]
            },
            variant_grid: if quick { vec![0.2] } else { vec![0.05, 0.2] },
            random_grid: if quick {
                vec![3.2]
            } else {
                vec![0.4, 3.2, 25.6]
            },
            m_grid: if quick {
                vec![128, 16]
            } else {
                vec![128, 64, 32, 16, 8]
            },
            rho: 0.05,
            small_m: 16,
            unnormalized_grid: if quick { vec![0.05] } else { vec![0.05, 0.5] },
            multi_steps: if quick { 2 } else { 3 },
            switch_epochs: if quick { 4 } else { 10 },
            switch_lr: 0.01,
            noise_base,
            noise_rho_small_m: 0.02,
        }
    }

    /// The paper's scale on CIFAR-10 in `data_dir` (SPEC §4; `quick` keeps one seed).
    pub fn paper(data_dir: PathBuf, quick: bool) -> Self {
        let mut base = samlab_deep::run::defaults();
        base.model.arch = Arch::PreactResnet18;
        base.model.width = Some(64);
        base.model.norm = Some(NormKind::Batch);
        base.data.dataset = DatasetKind::Cifar10;
        base.data.dir = Some(data_dir);
        base.data.augment = Some(Augment::CropFlip { pad: 4 });
        base.train.epochs = 200;
        let mut noise_base = base.clone();
        noise_base.data.label_noise = Some(LabelNoise {
            fraction: 0.6,
            kind: NoiseKind::Symmetric,
        });
        noise_base.train.epochs = 1000;
        let grid = |k: i32| 0.025 * 2f64.powi(k);
        DeepScale {
            kind: ScaleKind::Paper,
            // An exact Hessian of ResNet-18 on 1,024 images at every few epochs is not budgeted at this scale.
            curvature_every: 0,
            base,
            seeds: if quick { vec![0] } else { vec![0, 1, 2] },
            rho_grid: (0..6).map(grid).collect(),
            variant_grid: vec![0.05, 0.1, 0.2],
            random_grid: vec![0.35, 3.5, 35.0],
            m_grid: vec![128, 64, 32, 16, 8],
            rho: 0.1,
            small_m: 16,
            unnormalized_grid: vec![0.1, 1.0],
            multi_steps: 3,
            switch_epochs: 100,
            switch_lr: 0.001,
            noise_base,
            noise_rho_small_m: 0.05,
        }
    }

    /// The base run with `sam` and `seed`, named `<stem>_s<seed>`.
    pub fn run(&self, stem: String, sam: SamConfig, seed: u64) -> (String, DeepRunConfig) {
        let mut c = self.base.clone();
        c.sam = sam;
        c.train.seed = seed;
        (format!("{stem}_s{seed}"), c)
    }

    /// `make(seed)` for every seed.
    pub fn per_seed(
        &self,
        make: impl Fn(u64) -> (String, DeepRunConfig),
    ) -> Vec<(String, DeepRunConfig)> {
        self.seeds.iter().map(|&s| make(s)).collect()
    }

    /// ERM (with the curvature log: the m-sharpness figure draws it).
    pub fn erm(&self, seed: u64) -> (String, DeepRunConfig) {
        self.with_curvature_log(self.run("erm".into(), SamConfig::erm(), seed))
    }

    /// Normalized m-SAM (`m` = the batch size is standard SAM); with the curvature log at the m-sharpness grid's
    /// points (every m of `m_grid` at `rho`), which its figure draws.
    pub fn msam(&self, m: usize, rho: f64, seed: u64) -> (String, DeepRunConfig) {
        let run = self.run(format!("sam_m{m}_rho{rho}"), self.sam_config(m, rho), seed);
        if rho == self.rho && self.m_grid.contains(&m) {
            self.with_curvature_log(run)
        } else {
            run
        }
    }

    /// `run` with the curvature log every `curvature_every` epochs (the base's examples and probes).
    fn with_curvature_log(
        &self,
        (name, mut c): (String, DeepRunConfig),
    ) -> (String, DeepRunConfig) {
        c.train.curvature_every = self.curvature_every;
        (name, c)
    }

    /// The n-SAM proxy: normalized SAM whose ascent uses the previous batch.
    pub fn previous_batch(&self, rho: f64, seed: u64) -> (String, DeepRunConfig) {
        let mut s = sam(rho, Grouping::WholeBatch);
        s.ascent_source = AscentSource::PreviousBatch;
        self.run(format!("prev_rho{rho}"), s, seed)
    }

    /// Random Gaussian weight noise of expected norm `rho`.
    pub fn random(&self, rho: f64, seed: u64) -> (String, DeepRunConfig) {
        let mut s = sam(rho, Grouping::WholeBatch);
        s.perturbation = Perturbation::Random;
        self.run(format!("random_rho{rho}"), s, seed)
    }

    /// A label-noise run: the noise setting with `sam` and `seed`, named `noise_<stem>_s<seed>`.
    pub fn noise_run(&self, stem: &str, sam: SamConfig, seed: u64) -> (String, DeepRunConfig) {
        let mut c = self.noise_base.clone();
        c.sam = sam;
        c.train.seed = seed;
        (format!("noise_{stem}_s{seed}"), c)
    }

    /// Normalized SAM with group size `m` (the batch size: one perturbation per batch) and radius `rho`.
    pub fn sam_config(&self, m: usize, rho: f64) -> SamConfig {
        let grouping = if m == self.base.train.batch_size {
            Grouping::WholeBatch
        } else {
            Grouping::Size(m)
        };
        sam(rho, grouping)
    }

    /// A short description for the report.
    pub fn describe(&self) -> String {
        let b = &self.base;
        let data = match self.kind {
            ScaleKind::Laptop => "the shipped Fashion-MNIST subset (10,000 training images, 10% held out for validation; 2,000 test images), no augmentation".to_string(),
            ScaleKind::Paper => "CIFAR-10 (45,000/5,000 train/validation split; 10,000 test images), random crop + flip".to_string(),
        };
        format!(
            "{} (width {}, {:?} norm) on {data}; {} epochs, batch {}, SGD momentum 0.9, lr {} with drops x0.1 at 50% and 75%, L2 5e-4 in the objective (also in the ascent); BatchNorm in training mode in every SAM pass (the authors' code); seeds {:?}",
            b.model.arch.name(),
            b.model.width.unwrap_or(b.model.arch.default_width()),
            b.model.norm.unwrap_or(b.model.arch.default_norm()),
            b.train.epochs,
            b.train.batch_size,
            b.train.lr.base,
            self.seeds,
        )
    }
}

/// A number of a finished run (NaN if it diverged).
pub fn metric(o: &RunOutcome, pick: fn(&RunOutcome) -> Option<f64>) -> f64 {
    if o.summary.header.status == RunStatus::Ok {
        pick(o).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// Final test error.
pub fn test_error(o: &RunOutcome) -> Option<f64> {
    o.summary.test_error
}

/// Final test cross-entropy.
pub fn test_loss(o: &RunOutcome) -> Option<f64> {
    o.summary.test_loss
}

/// Final validation error.
pub fn val_error(o: &RunOutcome) -> Option<f64> {
    o.rows.last().map(|r| r.val_error)
}

/// Same-seed differences `a - b`: their mean and standard error (SE 0 with one seed).
pub fn paired(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (mean, std) = mean_std(&d);
    (mean, std / (d.len() as f64).sqrt())
}

/// `a` is clearly below `b` over same-seed pairs: the mean difference plus two standard errors is below 0 (with
/// one seed, just below 0).
pub fn clearly_below(a: &[f64], b: &[f64]) -> bool {
    let (d, se) = paired(a, b);
    d + 2.0 * se < 0.0
}

/// Spearman's rank correlation of `x` and `y` (no ties expected; NaN if either has a NaN or fewer than 2 points).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 2 || x.iter().chain(y).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let rank = |v: &[f64]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        for (k, &i) in idx.iter().enumerate() {
            r[i] = k as f64;
        }
        r
    };
    let (rx, ry) = (rank(x), rank(y));
    let n = x.len() as f64;
    let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// "x.xx% +- y.yy" over seeds.
pub fn fmt_pct(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if m.is_nan() {
        "diverged".into()
    } else {
        format!("{:.2}% +- {:.2}", 100.0 * m, 100.0 * s)
    }
}

/// "x.xxxx +- y.yyyy" over seeds.
pub fn fmt_mean(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if m.is_nan() {
        "diverged".into()
    } else {
        format!("{m:.4} +- {s:.4}")
    }
}

/// A paired difference "d +- se" in percentage points (`pct`) or raw units.
pub fn fmt_paired(a: &[f64], b: &[f64], pct: bool) -> String {
    let (d, se) = paired(a, b);
    if pct {
        format!("{:+.2} +- {:.2} pp", 100.0 * d, 100.0 * se)
    } else {
        format!("{d:+.4} +- {se:.4}")
    }
}

/// One method of a sweep: its label, the swept values, and its runs per value (one per seed).
pub struct Sweep {
    /// Legend label.
    pub label: String,
    /// The swept values (x axis).
    pub xs: Vec<f64>,
    /// Runs per value, one per seed.
    pub runs: Vec<Vec<RunOutcome>>,
}

impl Sweep {
    /// `pick` of every seed at value index `i`.
    pub fn values(&self, i: usize, pick: fn(&RunOutcome) -> Option<f64>) -> Vec<f64> {
        values(&self.runs[i], pick)
    }

    /// The value index with the lowest mean final validation error (diverged values never chosen).
    pub fn select_by_val(&self) -> Option<usize> {
        (0..self.xs.len())
            .map(|i| (i, mean_std(&self.values(i, val_error)).0))
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

/// Which number a sweep figure shows.
pub struct Quantity {
    /// Axis label.
    pub label: &'static str,
    /// The number of a run.
    pub pick: fn(&RunOutcome) -> Option<f64>,
    /// Shown in percent.
    pub percent: bool,
}

/// Test error in percent.
pub const TEST_ERROR: Quantity = Quantity {
    label: "test error (%)",
    pick: test_error,
    percent: true,
};

/// Test cross-entropy.
pub const TEST_LOSS: Quantity = Quantity {
    label: "test cross-entropy",
    pick: test_loss,
    percent: false,
};

/// Mean over seeds against the swept value, with a band of one standard deviation, per method; ERM as a dashed
/// horizontal line with its own band. Written to `<dir>/<stem>.svg|png`.
pub fn sweep_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    q: &Quantity,
    erm: &[RunOutcome],
    sweeps: &[Sweep],
) -> Result<PathBuf> {
    let k = if q.percent { 100.0 } else { 1.0 };
    let mut series = vec![];
    for sw in sweeps {
        let seeds = sw.runs.first().map_or(0, Vec::len);
        let per_seed: Vec<Vec<f64>> = (0..seeds)
            .map(|s| {
                sw.runs
                    .iter()
                    .map(|runs| metric(&runs[s], q.pick))
                    .collect()
            })
            .collect();
        series.push(Series {
            markers: true,
            ..seed_series(sw.label.clone(), &sw.xs, &per_seed, k, false)
        });
    }
    let xs: Vec<f64> = sweeps.iter().flat_map(|s| s.xs.iter().copied()).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    // ERM as a horizontal line across the swept range.
    let erm_flat: Vec<Vec<f64>> = values(erm, q.pick).iter().map(|&v| vec![v, v]).collect();
    series.push(seed_series("ERM".into(), &[lo, hi], &erm_flat, k, true));
    let figure = Figure {
        title: title.into(),
        x_label: x_label.into(),
        y_label: q.label.into(),
        x_scale: Scale::Log,
        y_scale: Scale::Linear,
        series,
        vlines: vec![],
        y_range: None,
    };
    Ok(samlab_report::render(&figure, &dir.join(stem))?.0)
}

/// The mean over seeds of `per_seed[s][i]` at `xs[i]`, times `scale`, with a band of one standard deviation.
pub fn seed_series(
    label: String,
    xs: &[f64],
    per_seed: &[Vec<f64>],
    scale: f64,
    dashed: bool,
) -> Series {
    let stats: Vec<(f64, f64, f64)> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let (m, s) = mean_std(&per_seed.iter().map(|v| v[i]).collect::<Vec<_>>());
            (x, scale * m, scale * s)
        })
        .collect();
    Series {
        name: label,
        points: stats.iter().map(|&(x, m, _)| (x, m)).collect(),
        dashed,
        markers: false,
        color: None,
        band: stats.iter().map(|&(x, m, s)| (x, m - s, m + s)).collect(),
    }
}

/// A per-epoch curve over seeds, in percent: [`seed_series`] of `per_seed[s][epoch]` from epoch `from`
/// (1-based) to the last epoch every seed reached.
pub fn epoch_series(label: String, per_seed: &[Vec<f64>], from: usize, dashed: bool) -> Series {
    let epochs = per_seed.iter().map(Vec::len).min().unwrap_or(0);
    let start = from.saturating_sub(1).min(epochs);
    let xs: Vec<f64> = (start + 1..=epochs).map(|e| e as f64).collect();
    let tails: Vec<Vec<f64>> = per_seed.iter().map(|v| v[start..epochs].to_vec()).collect();
    seed_series(label, &xs, &tails, 100.0, dashed)
}

/// A table row for a set of seeds: label, then test error, test cross-entropy, and their same-seed differences
/// to ERM.
pub fn comparison_row(label: String, runs: &[RunOutcome], erm: &[RunOutcome]) -> Vec<String> {
    let v = values;
    vec![
        label,
        fmt_pct(&v(runs, test_error)),
        fmt_mean(&v(runs, test_loss)),
        fmt_paired(&v(runs, test_error), &v(erm, test_error), true),
        fmt_paired(&v(runs, test_loss), &v(erm, test_loss), false),
    ]
}

/// The header of [`comparison_row`] tables.
pub fn comparison_header() -> Vec<String> {
    [
        "runs",
        "test error (mean +- std)",
        "test cross-entropy",
        "d(error) vs ERM, same seed",
        "d(cross-entropy) vs ERM",
    ]
    .map(String::from)
    .to_vec()
}

/// Values of `pick` over a set of runs (NaN for diverged runs).
pub fn values(runs: &[RunOutcome], pick: fn(&RunOutcome) -> Option<f64>) -> Vec<f64> {
    runs.iter().map(|o| metric(o, pick)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_scale_is_spec_section_4() {
        let s = DeepScale::paper(PathBuf::from("cifar"), false);
        assert_eq!(s.base.model.arch, Arch::PreactResnet18);
        assert_eq!(s.base.data.dataset, DatasetKind::Cifar10);
        assert_eq!(s.base.data.augment, Some(Augment::CropFlip { pad: 4 }));
        assert_eq!((s.base.train.epochs, s.base.train.batch_size), (200, 128));
        assert_eq!(s.rho_grid, vec![0.025, 0.05, 0.1, 0.2, 0.4, 0.8]);
        assert_eq!(s.noise_base.train.epochs, 1000);
        let (name, c) = s.previous_batch(0.1, 2);
        assert_eq!(name, "prev_rho0.1_s2");
        assert_eq!(c.train.seed, 2);
        assert_eq!(c.sam.ascent_source, AscentSource::PreviousBatch);
        assert!(c.sam.check(c.train.batch_size).is_ok());
        // Every laptop preset run is a valid config for its batch size.
        let l = DeepScale::laptop(false);
        for m in &l.m_grid {
            assert!(l.msam(*m, l.rho, 0).1.sam.check(128).is_ok());
        }
    }

    /// The runs the m-sharpness figure draws log the curvature often enough to draw a curve, with the settings of
    /// the table's `samlab hessian` (so their last point is the table's value); no other run pays for a log.
    #[test]
    fn only_the_m_sharpness_runs_log_the_tables_hessian() {
        for quick in [false, true] {
            let l = DeepScale::laptop(quick);
            // Every 5 epochs: 4 points of 20 epochs, 2 of 10 with --quick.
            let every = l.curvature_every;
            assert_eq!(every, 5);
            assert!(l.base.train.epochs / every >= if quick { 2 } else { 4 });
            let logged =
                std::iter::once(l.erm(1)).chain(l.m_grid.iter().map(|&m| l.msam(m, l.rho, 2)));
            for (name, c) in logged {
                assert_eq!(c.train.curvature_every, every, "{name}");
                assert_eq!(
                    c.train.curvature_config(),
                    HessianConfig::default(),
                    "{name}"
                );
            }
            let quiet = [
                l.msam(128, 2.0 * l.rho, 0),
                l.previous_batch(l.rho, 0),
                l.random(l.rho, 0),
                l.noise_run("erm", SamConfig::erm(), 0),
                l.run("other".into(), l.sam_config(16, l.rho), 0),
            ];
            for (name, c) in quiet {
                assert_eq!(c.train.curvature_every, 0, "{name}");
            }
        }
        let paper = DeepScale::paper(PathBuf::from("cifar"), false);
        assert_eq!(paper.erm(0).1.train.curvature_every, 0);
    }

    #[test]
    fn paired_statistics_by_hand() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
        let (d, se) = paired(&[1.0, 2.0, 4.0], &[0.0, 0.0, 0.0]);
        assert!((d - 7.0 / 3.0).abs() < 1e-12);
        let sd = ((16.0 / 9.0 + 1.0 / 9.0 + 25.0 / 9.0) / 2.0f64).sqrt();
        assert!((se - sd / 3f64.sqrt()).abs() < 1e-12);
        assert!(clearly_below(&[0.9, 0.8, 0.85], &[1.0, 1.0, 1.0]));
        assert!(!clearly_below(&[0.9, 1.2, 0.85], &[1.0, 1.0, 1.0]));
        assert!(mean_std(&[]).0.is_nan());
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 30.0, 20.0]), 0.5);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
    }
}
