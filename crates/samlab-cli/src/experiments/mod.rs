//! Paper experiments as data: each preset is a set of run configs plus the claims it checks.

mod deep_ablations;
pub mod deep_common;
mod deep_msharpness;
mod deep_noise;
mod deep_perturbations;
mod deep_switch;
mod diag_finetune;
mod diag_long;
mod diag_notebook;
mod relu_common;
mod relu_kinks;
mod relu_sparse;
mod theory_bias;
mod theory_convergence;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use indicatif::ProgressBar;
use samlab_core::data::SparseRegression;
use samlab_core::diag_net::DiagTrainConfig;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_report::{Claim, Figure, Scale, Section, Series, Verdict};

use samlab_deep::run::{DeepRunConfig, RunOutcome};

use deep_common::{DeepRuns, DeepScale};

use samlab_runs::diag::{execute, DataSource, DiagOutcome, DiagRunConfig};

/// What every experiment gets: where to write, how long to run, and the progress bar to tick.
pub struct Ctx<'a> {
    /// The results root (`results/` by default).
    pub out: PathBuf,
    /// Shorter runs.
    pub quick: bool,
    /// Ticks once per finished run.
    pub progress: &'a ProgressBar,
    /// The scale of the deep-net presets.
    pub deep: &'a DeepScale,
    /// Deep-net runs trained so far (shared between experiments).
    pub deep_runs: &'a DeepRuns,
}

impl Ctx<'_> {
    /// The directory of experiment `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.out.join(id)
    }

    /// Trains the named deep-net runs not trained yet in this `reproduce` (see [`DeepRuns`]).
    pub fn deep_get(&self, runs: &[(String, DeepRunConfig)]) -> Result<Vec<RunOutcome>> {
        self.deep_runs.get(self, runs)
    }

    /// Groups of deep-net runs (see [`Ctx::deep_get`]), trained together: the outcomes in the same groups.
    pub fn deep_groups(
        &self,
        groups: &[Vec<(String, DeepRunConfig)>],
    ) -> Result<Vec<Vec<RunOutcome>>> {
        let mut all = self.deep_get(&groups.concat())?.into_iter();
        Ok(groups
            .iter()
            .map(|g| all.by_ref().take(g.len()).collect())
            .collect())
    }

    /// The run directory of deep-net run `name`.
    pub fn deep_dir(&self, name: &str) -> PathBuf {
        self.out.join("deep_runs").join(name)
    }

    /// [`par_map`] over training runs, each ticking the progress bar when it finishes.
    pub fn par_runs<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        self.progress.inc_length(items.len() as u64);
        par_map(items, |item| {
            let r = f(item);
            self.progress.inc(1);
            r
        })
    }

    /// Runs named configs in parallel (one worker per core) into `<out>/<id>/<name>`; results in input order.
    pub fn diag_runs(
        &self,
        id: &str,
        runs: Vec<(String, DiagRunConfig)>,
    ) -> Result<Vec<DiagOutcome>> {
        self.par_runs(&runs, |(name, config)| {
            execute(config, &self.dir(id).join(name), true, &mut |_| {})
        })
        .into_iter()
        .collect()
    }
}

/// `f` over `items` on one worker thread per core; results in input order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().expect("no worker panicked")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every item was taken by a worker"))
        .collect()
}

/// A claim's fixed part; [`ClaimSpec::judge`] adds what we measured.
pub struct ClaimSpec {
    pub id: &'static str,
    pub claim: &'static str,
    pub paper: &'static str,
}

impl ClaimSpec {
    /// The claim with our measurement and verdict.
    pub fn judge(&self, measured: String, ok: bool) -> Claim {
        self.with(measured, Verdict::from_bool(ok))
    }

    /// The claim marked not run, with the reason.
    pub fn not_run(&self, why: &str) -> Claim {
        self.with(why.to_string(), Verdict::NotRun)
    }

    fn with(&self, measured: String, verdict: Verdict) -> Claim {
        Claim {
            id: self.id.into(),
            claim: self.claim.into(),
            paper: self.paper.into(),
            measured,
            verdict,
        }
    }
}

/// A paper experiment.
pub trait Experiment: Sync {
    /// Directory name and claim-id stem.
    fn id(&self) -> &'static str;
    /// Section heading.
    fn title(&self) -> &'static str;
    /// The claims it checks (used to mark them not-run if it fails).
    fn claims(&self) -> &'static [ClaimSpec];
    /// Runs everything and returns the report section.
    fn run(&self, ctx: &Ctx) -> Result<Section>;
    /// The deep-net runs it needs before it can start, in groups (`reproduce` trains every experiment's together,
    /// so both cores stay busy).
    fn deep_runs(&self, _scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
        vec![]
    }
}

/// Every experiment, in report order.
pub fn all() -> Vec<Box<dyn Experiment>> {
    vec![
        Box::new(diag_notebook::GdVsNsam),
        Box::new(diag_notebook::GdVs1Sam),
        Box::new(diag_notebook::SgdVs1Sam),
        Box::new(diag_notebook::RhoGrid),
        Box::new(diag_long::LongRun),
        Box::new(diag_finetune::FineTune),
        Box::new(theory_bias::ImplicitBiasStudy),
        Box::new(theory_convergence::Convergence),
        Box::new(relu_kinks::Kinks),
        Box::new(relu_sparse::LargeStepDiag),
        Box::new(relu_sparse::LargeStepRelu1d),
        Box::new(relu_sparse::TeacherStudentSparsity),
        Box::new(deep_perturbations::Perturbations),
        Box::new(deep_msharpness::MSharpness),
        Box::new(deep_switch::Switching),
        Box::new(deep_noise::LabelNoise),
        Box::new(deep_ablations::Ablations),
    ]
}

/// A diagonal-net run config on synthetic data from `u0 = alpha`, full batch unless `batch_size`.
pub fn diag_config(
    data: SparseRegression,
    alpha: f64,
    lr: f64,
    iters: usize,
    sam: SamConfig,
) -> DiagRunConfig {
    DiagRunConfig {
        engine: Default::default(),
        data: DataSource::Synthetic(data),
        alpha,
        init_from: None,
        train: DiagTrainConfig {
            lr: LrSchedule::constant(lr),
            iters,
            batch_size: None,
            seed: data.seed,
            sam,
            log: Default::default(),
        },
    }
}

/// A file-system-friendly name for a run label such as "1-SAM rho=0.1".
pub fn dir_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Relative difference |a - b| / |b|.
pub fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// A loss formatted for tables: 4 significant digits, or "diverged".
pub fn fmt_loss(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4e}")
    } else {
        "diverged".into()
    }
}

/// A number formatted compactly for tables: 4 decimals in [1e-3, 1e5), scientific notation beyond (so a huge
/// value never takes hundreds of digits), "diverged" when not finite.
pub fn fmt_compact(x: f64) -> String {
    if !x.is_finite() {
        "diverged".into()
    } else if x == 0.0 || (1e-3..1e5).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// The standard table of a set of runs: name, final train and test loss, mean effective alpha, seconds.
pub fn runs_table(names: &[String], outcomes: &[DiagOutcome]) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "run",
        "final train loss",
        "final test loss",
        "mean alpha_eff",
        "status",
        "seconds",
    ]
    .map(String::from)
    .to_vec()];
    for (name, o) in names.iter().zip(outcomes) {
        rows.push(vec![
            name.clone(),
            fmt_loss(o.train_loss()),
            fmt_loss(o.test_loss()),
            // A diverged run's parameters mean nothing.
            if o.summary.status == samlab_core::diag_net::RunStatus::Diverged {
                "diverged".into()
            } else {
                fmt_compact(o.summary.mean_alpha_eff)
            },
            format!("{:?}", o.summary.status).to_lowercase(),
            format!("{:.3}", o.summary.seconds),
        ]);
    }
    rows
}

/// Loss curves (test or train) of several runs against iterations, log-log, written to `<dir>/<stem>.svg|png`.
pub fn curves_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    test: bool,
    runs: &[(String, &DiagOutcome)],
) -> Result<PathBuf> {
    let series = runs
        .iter()
        .enumerate()
        .map(|(k, (name, o))| Series {
            name: name.clone(),
            points: o
                .run
                .curve
                .iter()
                .map(|p| {
                    let loss = if test { p.test_loss } else { p.train_loss };
                    (p.iteration.max(1) as f64, loss)
                })
                .collect(),
            dashed: k > 0 && name.contains("n-SAM"),
            markers: false,
            color: None,
            band: vec![],
        })
        .collect();
    let figure = Figure {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: if test { "test loss" } else { "train loss" }.into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series,
        vlines: vec![],
        y_range: None,
    };
    Ok(samlab_report::render(&figure, &dir.join(stem))?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_numbers_stay_short() {
        assert_eq!(fmt_compact(0.12345), "0.1235");
        assert_eq!(fmt_compact(0.0), "0.0000");
        assert_eq!(fmt_compact(1e300), "1.000e300");
        assert_eq!(fmt_compact(-2.5e-7), "-2.500e-7");
        assert_eq!(fmt_compact(f64::NAN), "diverged");
        assert_eq!(fmt_compact(f64::INFINITY), "diverged");
    }
}
