//! Diagonal-linear-network runs: the config a run directory holds, its checks, and its execution into a run
//! directory (config.toml, summary.json, metrics.csv, u/v/beta.npy and the data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::diag::{self, DiagParams, DiagRun, DiagTrainConfig, StepView};
use anyhow::{bail, Context, Result};
use ndarray::Array1;
use samlab_core::data::{read_array, Dataset, SparseRegression};
use samlab_core::run::{
    read_summary, Observer, RunConfig, RunStatus, Stopped, SummaryHeader, UpdateCounter,
};
use samlab_core::run_dir::{
    artefact_hashes, check_artefacts, check_not_own_parent, nan_as_null, resolve_init_from,
    DiagEngine,
};
use samlab_core::run_dir::{read_rows, write_json, write_rows, write_toml, RunDirWriter};
use serde::{Deserialize, Serialize};

/// Where the data of a run comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The sparse regression generator.
    Synthetic(SparseRegression),
    /// A directory with X_train.npy, y_train.npy, X_test.npy, y_test.npy.
    Dir(PathBuf),
}

impl DataSource {
    /// Generates or reads the dataset.
    pub fn load(&self) -> Result<Dataset> {
        Ok(match self {
            DataSource::Synthetic(spec) => spec.generate()?.0,
            DataSource::Dir(dir) => Dataset::load_dir(dir)?,
        })
    }
}

/// A fully resolved diagonal-net run: what `config.toml` holds and `samlab run --config` replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagRunConfig {
    /// `engine = "diag"` (absent in configs written before it existed).
    #[serde(default)]
    pub engine: DiagEngine,
    /// The training data.
    pub data: DataSource,
    /// Initial scale: u0 = alpha * 1, v0 = 0 (ignored with `init_from`).
    pub alpha: f64,
    /// Start from the final u.npy, v.npy of this run directory instead (warm start / fine-tuning); a relative path
    /// is read from the run directory (`"../erm"` is its sibling `erm`, see `run_dir::resolve_init_from`).
    pub init_from: Option<PathBuf>,
    /// Optimizer and SAM settings.
    pub train: DiagTrainConfig,
}

/// summary.json of a diagonal-net run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiagSummary {
    /// The samlab version that wrote it, `"diag"`, and whether the run finished or diverged.
    #[serde(flatten)]
    pub header: SummaryHeader,
    /// Updates done (where it stopped, if it diverged).
    pub iterations: usize,
    /// Losses after the last update; null if the run diverged.
    pub final_train_loss: Option<f64>,
    /// Test loss after the last update.
    pub final_test_loss: Option<f64>,
    /// Last finite losses logged (equal to the final ones for a run that finished).
    pub last_finite_train_loss: Option<f64>,
    /// Last finite test loss logged.
    pub last_finite_test_loss: Option<f64>,
    /// Mean of sqrt(u^2 - v^2), the effective initialization (Theorem 1); null if not finite.
    #[serde(with = "nan_as_null")]
    pub mean_alpha_eff: f64,
    /// l1 norm of beta = u * v; null if not finite.
    #[serde(with = "nan_as_null")]
    pub l1_norm: f64,
    /// The run's seed.
    pub seed: u32,
    /// Seconds in the training loop.
    pub seconds: f64,
    /// The SHA-256 of the run's [`ARTEFACTS`], checked whenever the run is read back; absent in runs written
    /// before samlab recorded them (read unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefacts_sha256: Option<BTreeMap<String, String>>,
}

/// The files of a run directory that reports judge, whose SHA-256 summary.json records.
pub const ARTEFACTS: [&str; 4] = ["metrics.csv", "u.npy", "v.npy", "beta.npy"];

/// A finished run: its outcome, summary and where it was written.
pub struct DiagOutcome {
    /// The trained run: parameters and loss curve.
    pub run: DiagRun,
    /// Its summary.json.
    pub summary: DiagSummary,
    /// The data it trained on.
    pub data: Dataset,
    /// Its run directory.
    pub dir: PathBuf,
}

impl DiagOutcome {
    /// Final test loss, NaN for a diverged run.
    pub fn test_loss(&self) -> f64 {
        self.summary.final_test_loss.unwrap_or(f64::NAN)
    }

    /// Final train loss, NaN for a diverged run.
    pub fn train_loss(&self) -> f64 {
        self.summary.final_train_loss.unwrap_or(f64::NAN)
    }
}

/// Loads the initial parameters of the run in `run`: the paper's init, or another run's final ones.
fn initial_params(config: &DiagRunConfig, run: &Path, d: usize) -> Result<DiagParams> {
    match &config.init_from {
        None => {
            if !(config.alpha.is_finite() && config.alpha > 0.0) {
                return Err(samlab_core::ConfigError::Invalid {
                    field: "alpha",
                    reason: format!("must be finite and > 0, got {}", config.alpha),
                }
                .into());
            }
            Ok(DiagParams::init(config.alpha, d))
        }
        Some(from) => {
            let dir = resolve_init_from(run, from);
            let load = |name: &str| -> Result<Vec<f64>> {
                let a: Array1<f64> = read_array(&dir.join(name))?;
                Ok(a.to_vec())
            };
            Ok(DiagParams {
                u: load("u.npy")?,
                v: load("v.npy")?,
            })
        }
    }
}

/// The data and initial parameters of `config` for the run directory `run` (which a relative `init_from` is read
/// from), after every check a run makes before touching the file system.
pub fn prepare(config: &DiagRunConfig, run: &Path) -> Result<(Dataset, DiagParams)> {
    let data = config.data.load()?;
    let init = initial_params(config, run, data.d())?;
    config.train.check(data.n(), data.d())?;
    Ok((data, init))
}

impl RunConfig for DiagRunConfig {
    const ENGINE: &'static str = "diag";
    type Outcome = DiagOutcome;

    fn check(&self, dir: &Path) -> Result<()> {
        prepare(self, dir).map(drop)
    }

    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        Some(&mut self.init_from)
    }

    /// A data directory's size is not read here (counted as one example).
    fn work(&self) -> f64 {
        let n = match &self.data {
            DataSource::Synthetic(spec) => spec.n,
            DataSource::Dir(_) => 1,
        };
        let batch = self.train.batch_size.unwrap_or(n);
        self.train.iters as f64 * batch as f64 * self.train.sam.passes()
    }

    /// Runs the config and writes the run directory `out`; `observer` counts updates.
    fn execute(&self, out: &Path, force: bool, observer: &mut dyn Observer) -> Result<DiagOutcome> {
        if let Some(from) = &self.init_from {
            check_not_own_parent(out, from)?;
        }
        let (data, init) = prepare(self, out)?;
        let writer = RunDirWriter::create(out, force)?;
        let start = Instant::now();
        let iters = self.train.iters;
        let mut counter = UpdateCounter::start(observer, iters);
        let run = diag::train(&data, &self.train, init, &mut |step: &StepView| {
            counter.update(step.t)
        })?;
        if run.status == RunStatus::Interrupted {
            bail!(Stopped {
                done: run.iterations,
                total: iters
            });
        }
        counter.finish(run.iterations);
        let seconds = start.elapsed().as_secs_f64();
        let mut summary = summarize(&run, self.train.seed, seconds);
        let dir = writer.path();
        write_toml(&dir.join("config.toml"), self)?;
        write_rows(&dir.join("metrics.csv"), &run.curve)?;
        let params = [
            ("u.npy", run.params.u.clone()),
            ("v.npy", run.params.v.clone()),
            ("beta.npy", run.params.beta()),
        ];
        for (name, values) in params {
            samlab_core::data::write_array(&dir.join(name), &Array1::from(values))?;
        }
        data.save_dir(dir)?;
        summary.artefacts_sha256 = Some(artefact_hashes(dir, &ARTEFACTS)?);
        write_json(&dir.join("summary.json"), &summary)?;
        let dir = writer
            .commit()
            .with_context(|| format!("cannot move the finished run into {}", out.display()))?;
        Ok(DiagOutcome {
            run,
            summary,
            data,
            dir,
        })
    }

    /// The finished run (its [`ARTEFACTS`] checked against their recorded hashes).
    fn load(&self, dir: &Path) -> Result<DiagOutcome> {
        let summary: DiagSummary = read_summary(dir, self)?;
        check_artefacts(dir, summary.artefacts_sha256.as_ref(), &ARTEFACTS)?;
        let params = DiagParams {
            u: read_array::<ndarray::Ix1>(&dir.join("u.npy"))?.to_vec(),
            v: read_array::<ndarray::Ix1>(&dir.join("v.npy"))?.to_vec(),
        };
        let run = DiagRun {
            params,
            curve: read_rows(&dir.join("metrics.csv"))?,
            status: summary.header.status,
            iterations: summary.iterations,
        };
        Ok(DiagOutcome {
            run,
            summary,
            data: Dataset::load_dir(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Checks the summary and the artefacts' hashes without reading the arrays back.
    fn is_finished_in(&self, dir: &Path) -> bool {
        read_summary::<_, DiagSummary>(dir, self)
            .is_ok_and(|s| check_artefacts(dir, s.artefacts_sha256.as_ref(), &ARTEFACTS).is_ok())
    }
}

fn summarize(run: &DiagRun, seed: u32, seconds: f64) -> DiagSummary {
    let last = run.curve.last();
    let ok = run.status == RunStatus::Ok;
    let alpha_eff = run.params.alpha_eff();
    DiagSummary {
        header: SummaryHeader::new(DiagRunConfig::ENGINE, run.status),
        iterations: run.iterations,
        final_train_loss: last.filter(|_| ok).map(|p| p.train_loss),
        final_test_loss: last.filter(|_| ok).map(|p| p.test_loss),
        last_finite_train_loss: last.map(|p| p.train_loss),
        last_finite_test_loss: last.map(|p| p.test_loss),
        mean_alpha_eff: alpha_eff.iter().sum::<f64>() / alpha_eff.len() as f64,
        l1_norm: run.params.beta().iter().map(|b| b.abs()).sum(),
        seed,
        seconds,
        artefacts_sha256: None,
    }
}
