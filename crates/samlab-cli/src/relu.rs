//! `samlab relu train`: flags to a [`ReluRunConfig`], run with a progress bar.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, ValueEnum};
use samlab_analytic::relu::metrics::KinkTolerances;
use samlab_analytic::relu::run::{MetricSettings, ReluData, ReluRunConfig};
use samlab_analytic::relu::{
    LossReduction, ReluInit, ReluTrainConfig, StopOn, StopRule, TeacherStudent,
};
use samlab_core::run::LogSchedule;

use crate::train_args::{LrArgs, SamArgs};
use crate::{progress, UsageError};

/// Trains `config` into `out` with a progress bar and prints a one-line result.
pub fn train_and_report(config: &ReluRunConfig, out: &Path, force: bool) -> Result<()> {
    let outcome = progress::execute(config, out, force)?;
    let s = &outcome.summary;
    let kinks = s
        .metrics
        .kinks
        .map_or(String::new(), |k| format!(", {k} kinks"));
    match s.final_train_loss {
        Some(train) => say!(
            "ok: {} updates{} in {:.3} s, train loss {train:.6e}{kinks}, {} active neurons, feature sparsity {:.4} -> {}",
            s.iterations,
            if s.stopped_early { " (stopped early)" } else { "" },
            s.seconds,
            s.metrics.active_neurons,
            s.metrics.feature_sparsity,
            outcome.dir.display()
        ),
        None => say!(
            "diverged after {} updates (last finite train loss {:.6e}) -> {}",
            s.iterations,
            s.last_finite_train_loss.unwrap_or(f64::NAN),
            outcome.dir.display()
        ),
    }
    Ok(())
}

/// Built-in data sets of `--dataset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    /// The 12-point 1D regression (SPEC §3).
    TwelvePoints,
    /// Teacher-student data on the unit sphere (SPEC §9).
    TeacherStudent,
}

/// Initializations of `--init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// SPEC §3: w = +-2.5 s, b = 2.5 s N(0,1), a = 4 s N(0,1) (s = --init-scale).
    Blanc,
    /// w = --w-scale N(0,1), b = 0, a = --a-scale N(0,1).
    Gaussian,
    /// w ~ N(0, 2/d), b = 0, a ~ N(0, 1/width).
    He,
    /// PyTorch's nn.Linear default (uniform).
    Uniform,
}

impl InitArg {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            InitArg::Blanc => "blanc",
            InitArg::Gaussian => "gaussian",
            InitArg::He => "he",
            InitArg::Uniform => "uniform",
        }
    }
}

/// Which loss `--stop-below` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopOnArg {
    /// The batch loss at the current parameters.
    Clean,
    /// The batch loss where the descent gradient is taken (the perturbed point under SAM, as the 1D notebook).
    Descent,
}

/// Flags of `samlab relu train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Directory with X_train.npy, y_train.npy (f64) and optionally X_test.npy, y_test.npy.
    #[arg(long, conflicts_with_all = ["dataset", "n", "d", "teacher_width", "n_test", "data_seed"])]
    pub data: Option<PathBuf>,
    /// Built-in data set.
    #[arg(long, value_enum, default_value = "twelve-points")]
    pub dataset: DatasetArg,
    /// Teacher-student: training examples [default: 15].
    #[arg(long)]
    pub n: Option<usize>,
    /// Teacher-student: input dimension [default: 2].
    #[arg(long)]
    pub d: Option<usize>,
    /// Teacher-student: teacher neurons [default: 3].
    #[arg(long)]
    pub teacher_width: Option<usize>,
    /// Teacher-student: test examples [default: 1000].
    #[arg(long)]
    pub n_test: Option<usize>,
    /// Teacher-student: seed of the data (NumPy RandomState).
    #[arg(long, default_value_t = 0)]
    pub data_seed: u32,
    /// Hidden neurons.
    #[arg(long, default_value_t = 100)]
    pub width: usize,
    /// No hidden biases.
    #[arg(long)]
    pub no_bias: bool,
    /// Initialization.
    #[arg(long, value_enum, default_value = "blanc")]
    pub init: InitArg,
    /// Scale s of the blanc initialization [default: 1].
    #[arg(long)]
    pub init_scale: Option<f64>,
    /// Standard deviation of the hidden weights (gaussian initialization) [default: 1].
    #[arg(long)]
    pub w_scale: Option<f64>,
    /// Standard deviation of the output weights (gaussian initialization) [default: 1].
    #[arg(long)]
    pub a_scale: Option<f64>,
    /// Seed of the initialization, SGD sampling and random perturbations.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    #[command(flatten)]
    pub sam: SamArgs,
    #[command(flatten)]
    pub lr: LrArgs,
    /// Number of updates (at most, with --stop-below).
    #[arg(long)]
    pub iters: usize,
    /// Sum (0.5 sum (f - y)^2, the 1D notebook's) or mean of the per-example losses.
    #[arg(long, value_enum, default_value = "sum")]
    pub loss: LossArg,
    /// Stop once an update's batch loss is at most this.
    #[arg(long)]
    pub stop_below: Option<f64>,
    /// Which batch loss --stop-below reads.
    #[arg(long, value_enum, default_value = "clean", requires = "stop_below")]
    pub stop_on: StopOnArg,
    /// Breakpoints closer than this form one kink.
    #[arg(long, default_value_t = 0.02)]
    pub kink_merge: f64,
    /// A kink counts when its absolute slope change exceeds this.
    #[arg(long, default_value_t = 1.0)]
    pub kink_min_slope: f64,
    /// Correlation above which two neurons count as one (feature sparsity, active neurons).
    #[arg(long, default_value_t = 0.99)]
    pub corr_threshold: f64,
    /// Spacing of the 1D grid of function.npy / function.csv.
    #[arg(long, default_value_t = 0.01)]
    pub grid_step: f64,
    /// Which iterations go into metrics.csv (with the network measurements at each).
    #[arg(long, value_parser = crate::diag::parse_log, default_value = "notebook")]
    pub log: LogSchedule,
    /// Output run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it already holds a run.
    #[arg(long)]
    pub force: bool,
}

/// `--loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// 0.5 * sum of squared residuals.
    Sum,
    /// 0.5 * mean of squared residuals.
    Mean,
}

impl TrainArgs {
    /// Resolves the flags into a run config, rejecting combinations that make no sense.
    pub fn to_config(&self) -> Result<ReluRunConfig> {
        let (sam, batch_size) = self.sam.resolve()?;
        let ts_flags = self.n.is_some()
            || self.d.is_some()
            || self.teacher_width.is_some()
            || self.n_test.is_some();
        let data = match (&self.data, self.dataset) {
            (Some(dir), _) => ReluData::Dir(dir.clone()),
            (None, DatasetArg::TwelvePoints) if ts_flags => {
                anyhow::bail!(UsageError(
                    "--n, --d, --teacher-width and --n-test are for --dataset teacher-student"
                        .into()
                ))
            }
            (None, DatasetArg::TwelvePoints) => ReluData::TwelvePoints,
            (None, DatasetArg::TeacherStudent) => ReluData::TeacherStudent(TeacherStudent {
                n: self.n.unwrap_or(15),
                d: self.d.unwrap_or(2),
                teacher_width: self.teacher_width.unwrap_or(3),
                n_test: self.n_test.unwrap_or(1000),
                seed: self.data_seed,
            }),
        };
        // An initialization option of another initialization would be ignored: refused, naming both.
        for (flag, given, owner) in [
            ("--init-scale", self.init_scale.is_some(), InitArg::Blanc),
            ("--w-scale", self.w_scale.is_some(), InitArg::Gaussian),
            ("--a-scale", self.a_scale.is_some(), InitArg::Gaussian),
        ] {
            if given && self.init != owner {
                anyhow::bail!(UsageError(format!(
                    "{flag} is an option of --init {} and --init is {} (it would be ignored)",
                    owner.name(),
                    self.init.name()
                )));
            }
        }
        let init = match self.init {
            InitArg::Blanc => ReluInit::Blanc {
                scale: self.init_scale.unwrap_or(1.0),
            },
            InitArg::Gaussian => ReluInit::Gaussian {
                w_scale: self.w_scale.unwrap_or(1.0),
                a_scale: self.a_scale.unwrap_or(1.0),
            },
            InitArg::He => ReluInit::He,
            InitArg::Uniform => ReluInit::Uniform,
        };
        Ok(ReluRunConfig {
            engine: Default::default(),
            data,
            width: self.width,
            bias: !self.no_bias,
            init,
            init_seed: self.seed,
            train: ReluTrainConfig {
                lr: self.lr.resolve()?,
                iters: self.iters,
                batch_size,
                seed: self.seed,
                sam,
                loss: match self.loss {
                    LossArg::Sum => LossReduction::Sum,
                    LossArg::Mean => LossReduction::Mean,
                },
                stop: self.stop_below.map(|below| StopRule {
                    below,
                    on: match self.stop_on {
                        StopOnArg::Clean => StopOn::Clean,
                        StopOnArg::Descent => StopOn::Descent,
                    },
                }),
                log: self.log,
            },
            metrics: MetricSettings {
                kinks: KinkTolerances {
                    merge: self.kink_merge,
                    min_slope_change: self.kink_min_slope,
                },
                corr_threshold: self.corr_threshold,
                grid_step: self.grid_step,
            },
        })
    }
}
