//! `samlab diag train`: flags to a [`DiagRunConfig`], run by its `RunConfig`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use samlab_analytic::diag::run::{DataSource, DiagRunConfig};
use samlab_analytic::diag::DiagTrainConfig;
use samlab_core::data::SparseRegression;
use samlab_core::run::LogSchedule;
use samlab_core::schedule::LrSchedule;

use crate::train_args::SamArgs;

/// Flags of `samlab diag train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Directory with X_train.npy, y_train.npy, X_test.npy, y_test.npy (f64); else the synthetic generator.
    #[arg(long, conflicts_with_all = ["n", "d", "r", "n_test"])]
    pub data: Option<PathBuf>,
    /// Training examples of the synthetic sparse regression [default: 20].
    #[arg(long)]
    pub n: Option<usize>,
    /// Input dimension [default: 30].
    #[arg(long)]
    pub d: Option<usize>,
    /// Non-zero entries of the target vector [default: 3].
    #[arg(long)]
    pub r: Option<usize>,
    /// Test examples [default: 1000].
    #[arg(long)]
    pub n_test: Option<usize>,
    /// Seed of the data generator (NumPy RandomState) and of SGD sampling / random perturbations.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// The SAM family: --method, --m, --batch-size, --rho, --normalize / --clip, ascent and window options.
    #[command(flatten)]
    pub sam: SamArgs,
    /// Step size.
    #[arg(long)]
    pub lr: f64,
    /// Initialization scale: u0 = alpha * 1, v0 = 0.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Number of updates.
    #[arg(long)]
    pub iters: usize,
    /// Start from the final u, v of this run directory (and its data, unless data flags are given).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Which iterations go into metrics.csv: the notebook's dense-then-log-spaced ones, or only the ends.
    #[arg(long, value_parser = parse_log, default_value = "notebook")]
    pub log: LogSchedule,
    /// Output run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it already holds a run.
    #[arg(long)]
    pub force: bool,
}

impl TrainArgs {
    /// Resolves the flags into a run config, rejecting combinations that make no sense.
    pub fn to_config(&self) -> Result<DiagRunConfig> {
        let data_flags_given =
            self.n.is_some() || self.d.is_some() || self.r.is_some() || self.n_test.is_some();
        let (sam, batch_size) = self.sam.resolve()?;
        let data = match (&self.data, &self.init_from) {
            (Some(dir), _) => DataSource::Dir(dir.clone()),
            // The parent run's data, named absolutely (a data directory is read from the current directory).
            (None, Some(run)) if !data_flags_given => DataSource::Dir(std::path::absolute(run)?),
            _ => DataSource::Synthetic(SparseRegression {
                n: self.n.unwrap_or(20),
                d: self.d.unwrap_or(30),
                r: self.r.unwrap_or(3),
                n_test: self.n_test.unwrap_or(1000),
                seed: self.seed,
            }),
        };
        Ok(DiagRunConfig {
            engine: Default::default(),
            data,
            alpha: self.alpha,
            init_from: self
                .init_from
                .as_deref()
                .map(|from| samlab_core::run_dir::init_from_record(&self.out, from))
                .transpose()?,
            train: DiagTrainConfig {
                lr: LrSchedule::constant(self.lr),
                iters: self.iters,
                batch_size,
                seed: self.seed,
                sam,
                log: self.log,
            },
        })
    }
}

pub(crate) fn parse_log(s: &str) -> std::result::Result<LogSchedule, String> {
    match s {
        "notebook" => Ok(LogSchedule::Notebook),
        "ends" => Ok(LogSchedule::Ends),
        _ => Err(format!("expected notebook or ends, got {s}")),
    }
}
