//! Analysis of trained networks, on the weights of a run directory's checkpoint:
//!
//! - [`sharpness`]: worst-case m-sharpness by projected gradient ascent in the $\rho$-ball (the authors'
//!   `eval_sharpness.py`) and average-case Gaussian sharpness;
//! - [`interpolate`]: train/test loss and error along the line between two runs' weights, BatchNorm statistics
//!   re-estimated at every point (the authors' `eval_loss_surface.py`);
//! - [`hessian`]: the top eigenvalue of the training loss's Hessian by power iteration on finite-difference
//!   Hessian-vector products;
//! - [`features`]: the feature-sparsity coefficient of the penultimate (post-ReLU) features (SPEC section 9).
//! - [`ntk`]: the NTK feature matrix (the Jacobian of the logits with respect to the parameters) on fixed examples.
//!
//! Every tool works on the first `N` examples of a split, without augmentation; losses are the plain mean
//! cross-entropy (no L2 term). Each report writes the files `samlab` writes for it (`write`), so that every caller
//! of the library leaves the same files.

pub mod features;
pub mod hessian;
pub mod interpolate;
pub mod ntk;
pub mod sharpness;

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use samlab_core::run_dir::{write_atomic, write_json};
use samlab_core::{ConfigError, DataError};
use samlab_report::{render, Figure, PlotError};
use serde::{Deserialize, Serialize};

pub use crate::hessian::{chunks, BnEval, Split};

use crate::data::DatasetKind;
use crate::models::{ModelSpec, Network};
use crate::run::{
    load_checkpoint, model_spec, prepare_data, DeepRunConfig, PreparedData, RunError,
};
use crate::trainer::{Batch, TrainState};

/// Which checkpoint of a run to analyse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// `checkpoint/last.ckpt`: the end of the last finished epoch.
    Last,
    /// `checkpoint/best.ckpt`: the epoch with the lowest validation error (early stopping).
    Best,
}

impl CheckpointKind {
    /// The file name inside `<run>/checkpoint/`.
    pub fn file_name(self) -> &'static str {
        match self {
            CheckpointKind::Last => "last.ckpt",
            CheckpointKind::Best => "best.ckpt",
        }
    }
}

/// Which run and checkpoint a result is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run directory.
    pub dir: PathBuf,
    /// The checkpoint.
    pub checkpoint: CheckpointKind,
    /// Its model.
    pub model: ModelSpec,
    /// The data set.
    pub dataset: DatasetKind,
    /// Number of parameters.
    pub num_params: usize,
    /// Epochs finished when the checkpoint was written.
    pub epochs_done: Option<u64>,
    /// Updates done when the checkpoint was written.
    pub steps_done: Option<u64>,
}

/// A run directory's config, data (split and label noise as in training), network and checkpointed state.
pub struct LoadedRun {
    /// Its config.toml.
    pub config: DeepRunConfig,
    /// The network of the checkpoint's model spec.
    pub net: Network,
    /// The data as the run saw it.
    pub data: PreparedData,
    /// Weights and BatchNorm statistics of the checkpoint.
    pub state: TrainState,
    /// The device the analysis runs on (the run's own unless [`LoadedRun::load_on`] named another).
    pub device: Device,
    /// What was loaded from where.
    pub info: RunInfo,
}

/// The files an analysis's `write` wrote.
#[derive(Debug)]
pub struct Written {
    /// The files written: the numbers first, then the figure's SVG and PNG when it was drawn.
    pub files: Vec<PathBuf>,
    /// Why the figure could not be drawn, if it could not (the numbers are written regardless).
    pub figure_error: Option<PlotError>,
}

impl Written {
    /// Draws `fig` to `stem.svg` and `stem.png`, recording the files or why they could not be drawn.
    fn figure(&mut self, fig: &Figure, stem: &Path) {
        match render(fig, stem) {
            Ok((svg, png)) => self.files.extend([svg, png]),
            Err(e) => self.figure_error = Some(e),
        }
    }
}

/// Writes `value` to `path` as pretty JSON, atomically (readers never see half a file).
fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    write_atomic(path, |p| write_json(p, value)).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn usage(dir: &Path, why: String) -> RunError {
    RunError::Usage(format!("{}: {why}", dir.display()))
}

impl LoadedRun {
    /// Loads `dir/config.toml`, the run's data and `dir/checkpoint/<kind>`, checking that they fit together.
    pub fn load(dir: &Path, kind: CheckpointKind) -> Result<Self, RunError> {
        Self::load_on(dir, kind, None)
    }

    /// [`LoadedRun::load`] onto the backend `device` instead of the one the run trained on.
    pub fn load_on(
        dir: &Path,
        kind: CheckpointKind,
        device: Option<&str>,
    ) -> Result<Self, RunError> {
        let config_path = dir.join("config.toml");
        let text = fs::read_to_string(&config_path).map_err(|e| {
            usage(
                dir,
                format!("not a deep-net run directory (config.toml: {e})"),
            )
        })?;
        let config: DeepRunConfig = toml::from_str(&text).map_err(|e| DataError::Read {
            path: config_path,
            reason: format!("not a deep-net run config: {e}"),
        })?;
        let path = dir.join("checkpoint").join(kind.file_name());
        if !path.exists() {
            let hint = match kind {
                CheckpointKind::Last => "the run has not finished an epoch yet",
                CheckpointKind::Best => {
                    "no epoch was evaluated on a validation split; use the last checkpoint"
                }
            };
            return Err(usage(
                dir,
                format!("no checkpoint {} ({hint})", path.display()),
            ));
        }
        let data = prepare_data(&config.data, config.train.seed)?;
        let net = Network::new(&model_spec(&config.model, &data.train))?;
        let ckpt = load_checkpoint(&path, &net)?;
        crate::run::check_config_sha256(&ckpt.progress, &text, dir, &path)?;
        let device = crate::device(device.unwrap_or(&config.train.device))?;
        let progress = |key: &str| ckpt.progress.get(key).and_then(|v| v.as_u64());
        let info = RunInfo {
            dir: dir.to_path_buf(),
            checkpoint: kind,
            model: ckpt.model.clone(),
            dataset: config.data.dataset,
            num_params: net.num_params(),
            epochs_done: progress("epochs_done"),
            steps_done: progress("steps_done"),
        };
        Ok(LoadedRun {
            state: ckpt.to_state(&device),
            config,
            net,
            data,
            device,
            info,
        })
    }

    /// The first `n` examples of `split`, without augmentation ([`PreparedData::examples`]).
    pub fn examples(&self, split: Split, n: usize) -> Result<Batch, ConfigError> {
        self.data.examples(split, n, &self.device)
    }
}
