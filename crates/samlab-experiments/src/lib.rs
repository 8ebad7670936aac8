//! The paper's experiments as data: each preset declares its runs (named run configs) and judges its claims from
//! the finished run directories. [`reproduce`] plans, trains and reports them; [`plan`] is the list of runs.
#![deny(missing_docs)]

mod deep_ablations;
pub mod deep_common;
mod deep_msharpness;
mod deep_noise;
mod deep_perturbations;
mod deep_switch;
mod diag_finetune;
mod diag_long;
mod diag_notebook;
mod edge_of_stability;
mod full_batch;
mod large_step_deep;
mod relu_common;
mod relu_kinks;
mod relu_sparse;
mod theory_bias;
mod theory_convergence;
mod transformers;
mod variants_deep;
mod variants_diag;
mod which_sharpness;

pub mod plan;
pub mod reproduce;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use samlab_analytic::diag::run::{DataSource, DiagOutcome, DiagRunConfig};
use samlab_analytic::diag::DiagTrainConfig;
use samlab_analytic::relu::run::{ReluOutcome, ReluRunConfig};
use samlab_core::data::SparseRegression;
use samlab_core::run::RunConfig;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_report::{Claim, Figure, Scale, Section, Series, Verdict};
use samlab_runs::AnyRunConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use samlab_deep::run::{DeepRunConfig, RunOutcome};

use deep_common::DeepScale;

/// A bad request to `reproduce` or `report` (an unknown experiment, a scale without its data): core's one bad-input
/// kind under the name these modules give it.
pub use samlab_core::BadInput as BadRequest;

/// A training run an experiment judges: its run directory and its config.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    /// The run directory.
    pub dir: PathBuf,
    /// What it trains.
    pub config: AnyRunConfig,
}

/// What every experiment gets: where the runs are, at which scale, and the progress bar to tick.
pub struct Ctx<'a> {
    /// The results root (`results/` by default).
    pub out: PathBuf,
    /// Shorter runs.
    pub quick: bool,
    /// Also what is too large for the main job's budget (`--extended`).
    pub extended: bool,
    /// Ticks once per finished piece of work.
    pub progress: &'a ProgressBar,
    /// The scale of the deep-net presets.
    pub deep: &'a DeepScale,
}

impl Ctx<'_> {
    /// The directory of experiment `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.out.join(id)
    }

    /// The run directory of deep-net run `name` (shared by every experiment that asks for it).
    pub fn deep_dir(&self, name: &str) -> PathBuf {
        self.out.join("deep_runs").join(name)
    }

    /// Named runs of experiment `id` (diagonal or ReLU nets), planned into `<out>/<id>/<name>`.
    pub fn planned<C: Into<AnyRunConfig>>(
        &self,
        id: &str,
        runs: Vec<(String, C)>,
    ) -> Vec<PlannedRun> {
        runs.into_iter()
            .map(|(name, c)| PlannedRun {
                dir: self.dir(id).join(name),
                config: c.into(),
            })
            .collect()
    }

    /// Named deep-net runs, planned into `<out>/deep_runs/<name>`.
    pub fn deep_planned(&self, runs: &[(String, DeepRunConfig)]) -> Vec<PlannedRun> {
        runs.iter()
            .map(|(name, c)| PlannedRun {
                dir: self.deep_dir(name),
                config: AnyRunConfig::Deep(Box::new(c.clone())),
            })
            .collect()
    }

    /// The finished diagonal-net runs `<out>/<id>/<name>` of these configs, read back; results in input order.
    pub fn diag_runs(
        &self,
        id: &str,
        runs: Vec<(String, DiagRunConfig)>,
    ) -> Result<Vec<DiagOutcome>> {
        self.load_runs(id, &runs)
    }

    /// The finished ReLU-net runs `<out>/<id>/<name>` of these configs, read back; results in input order.
    pub fn relu_runs(
        &self,
        id: &str,
        runs: Vec<(String, ReluRunConfig)>,
    ) -> Result<Vec<ReluOutcome>> {
        self.load_runs(id, &runs)
    }

    /// `load` of every run `<out>/<id>/<name>` (in parallel); results in input order.
    fn load_runs<C>(&self, id: &str, runs: &[(String, C)]) -> Result<Vec<C::Outcome>>
    where
        C: RunConfig + Sync,
        C::Outcome: Send,
    {
        par_map(runs, |(name, c)| c.load(&self.dir(id).join(name)))
            .into_iter()
            .collect()
    }

    /// The finished deep-net runs `<out>/deep_runs/<name>` of these configs, read back; results in input order.
    pub fn deep_get(&self, runs: &[(String, DeepRunConfig)]) -> Result<Vec<RunOutcome>> {
        runs.iter()
            .map(|(name, c)| c.load(&self.deep_dir(name)))
            .collect()
    }

    /// Groups of deep-net runs (see [`Ctx::deep_get`]): the outcomes in the same groups.
    pub fn deep_groups(
        &self,
        groups: &[Vec<(String, DeepRunConfig)>],
    ) -> Result<Vec<Vec<RunOutcome>>> {
        groups.iter().map(|g| self.deep_get(g)).collect()
    }

    /// [`par_map`] over pieces of work, each ticking the progress bar when it finishes.
    pub fn par_runs<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        self.progress.inc_length(items.len() as u64);
        par_map(items, |item| {
            let r = f(item);
            self.progress.inc(1);
            r
        })
    }
}

/// An analysis kept in a file with the SHA-256 of every file it read.
#[derive(Serialize, Deserialize)]
struct Cached<T> {
    inputs: Vec<(PathBuf, String)>,
    value: T,
}

/// `compute()`, kept in `path` with the SHA-256 of every file it reads (`inputs`): computed again only when one
/// of them changed (a run trained again), so that `samlab report` does not repeat a reproduce's analyses. The
/// hashes decide, not the paths, so a results directory that moved keeps its analyses.
pub fn cached<T: Serialize + DeserializeOwned>(
    path: &Path,
    inputs: &[PathBuf],
    compute: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let hashes = inputs
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            Ok((f.clone(), format!("{:x}", Sha256::digest(&bytes))))
        })
        .collect::<Result<Vec<_>>>()?;
    let kept = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached<T>>(&b).ok())
        .filter(|c| {
            c.inputs
                .iter()
                .map(|i| &i.1)
                .eq(hashes.iter().map(|h| &h.1))
        });
    if let Some(c) = kept {
        return Ok(c.value);
    }
    let value = compute()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let entry = Cached {
        inputs: hashes,
        value,
    };
    samlab_core::run_dir::write_json(path, &entry)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(entry.value)
}

/// The last checkpoint of a deep-net run (what its analyses read).
pub fn last_checkpoint(run: &Path) -> PathBuf {
    run.join("checkpoint").join("last.ckpt")
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
    /// Stable id, prefixed by area (`diag.`, `deep.`, ...).
    pub id: &'static str,
    /// The claim in words.
    pub claim: &'static str,
    /// What the paper (or the authors' code) reports.
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
    /// Every training run it judges, declared before anything trains (`reproduce` trains every experiment's
    /// together, so both cores stay busy; `reproduce --plan` lists them).
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun>;
    /// Judges the finished runs, read from their run directories (nothing trains here): the report section.
    fn judge(&self, ctx: &Ctx) -> Result<Section>;
    /// What runs only with `--extended` (too large for the main job's budget), as the report names it when it is
    /// left out: [`Extended::Whole`] leaves the experiment out of the main job, [`Extended::Part`] only the runs
    /// its `runs` plans when `ctx.extended` is set.
    fn extended(&self) -> Extended {
        Extended::None
    }
}

/// Which part of an experiment only `--extended` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extended {
    /// Everything runs in the main job.
    None,
    /// The whole experiment runs only with `--extended`.
    Whole,
    /// The main job runs the experiment without this part (its description, e.g. "the ResNet-18 runs").
    Part(&'static str),
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
        Box::new(variants_diag::VariantsDiag),
        Box::new(deep_perturbations::Perturbations),
        Box::new(deep_msharpness::MSharpness),
        Box::new(deep_switch::Switching),
        Box::new(deep_noise::LabelNoise),
        Box::new(deep_ablations::Ablations),
        Box::new(variants_deep::VariantsDeep),
        Box::new(which_sharpness::WhichSharpness),
        Box::new(edge_of_stability::EdgeOfStability),
        Box::new(large_step_deep::LargeStepDeep),
        Box::new(transformers::Transformers),
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

/// Labelled runs ("1-SAM rho=0.1") named by their directories ("1-SAM_rho_0.1").
pub fn by_dir<C>(runs: Vec<(String, C)>) -> Vec<(String, C)> {
    runs.into_iter()
        .map(|(label, c)| (dir_name(&label), c))
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
            if o.summary.header.status == samlab_core::run::RunStatus::Diverged {
                "diverged".into()
            } else {
                fmt_compact(o.summary.mean_alpha_eff)
            },
            format!("{:?}", o.summary.header.status).to_lowercase(),
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
    use crate::plan::Plan;

    /// Every preset at both scales: its runs are declared before anything trains, each planned once with a config
    /// its engine accepts, and judging it without its runs names a missing run instead of panicking.
    #[test]
    fn every_preset_plans_checked_runs_and_judges_only_finished_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let bar = ProgressBar::hidden();
        for deep in [
            DeepScale::laptop(false),
            DeepScale::laptop(true),
            DeepScale::paper(tmp.path().join("cifar"), false),
        ] {
            let ctx = Ctx {
                out: tmp.path().join("results"),
                quick: false,
                extended: true,
                progress: &bar,
                deep: &deep,
            };
            let experiments = all();
            let plan = Plan::new(&ctx, &experiments).unwrap();
            for exp in &experiments {
                let runs = exp.runs(&ctx);
                // Theorem 2's study computes its trajectories in place: it has no training runs.
                assert_eq!(
                    runs.is_empty(),
                    exp.id() == "theory_convergence",
                    "{}",
                    exp.id()
                );
                let mut dirs: Vec<&PathBuf> = runs.iter().map(|r| &r.dir).collect();
                dirs.sort();
                dirs.dedup();
                assert_eq!(
                    dirs.len(),
                    runs.len(),
                    "{}: a directory planned twice",
                    exp.id()
                );
                for run in &runs {
                    assert!(plan.runs.contains(run), "{}", run.dir.display());
                    if run.config.starts_from(&run.dir).is_none() {
                        run.config
                            .check(&run.dir)
                            .unwrap_or_else(|e| panic!("{}: {e:#}", run.dir.display()));
                    }
                }
                if !runs.is_empty() {
                    let err = format!("{:#}", exp.judge(&ctx).err().unwrap());
                    assert!(err.contains("no finished run here"), "{}: {err}", exp.id());
                }
            }
            // Runs that start from others come in a later wave than them.
            for (run, &wave) in plan.runs.iter().zip(&plan.wave) {
                if let Some(from) = run.config.starts_from(&run.dir) {
                    let source = plan.runs.iter().position(|r| r.dir == from).unwrap();
                    assert!(plan.wave[source] < wave, "{}", run.dir.display());
                }
            }
        }
    }

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
