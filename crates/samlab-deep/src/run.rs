//! Whole training runs into run directories, with checkpoints, exact resume and fine-tuning.
//!
//! ```text
//! <out>/config.toml           the fully resolved DeepRunConfig (`samlab train --config` re-runs it)
//! <out>/metrics.csv           one row per epoch (an [`EpochRow`]; `run_dir::read_rows` reads it back)
//! <out>/summary.json          status (running | ok | diverged), steps, final and best-by-validation numbers
//! <out>/label_noise.csv       the examples whose labels were changed: split, index, source_index, clean, noisy
//! <out>/checkpoint/last.ckpt  end of the last finished epoch: weights, momentum, BatchNorm statistics, progress
//! <out>/checkpoint/best.ckpt  the epoch with the lowest validation error so far (weights and statistics)
//! ```
//!
//! metrics.csv has two kinds of training numbers. `train_loss`, `train_error` and `train_error_noisy` are running
//! averages over the epoch's training passes (at the point of each descent gradient, i.e. the perturbed weights in
//! SAM steps, with augmentation and BatchNorm in training mode). `train_eval_loss`, `train_eval_error` and
//! `noisy_eval_error` are measured like the authors' code does at each evaluation: in evaluation mode at the epoch's
//! final weights, without augmentation, on a fixed seeded subset of `eval_train_examples` training examples with their
//! training labels (noisy ones included), and on up to as many of the examples whose label was corrupted, with
//! respect to those noisy labels (SPEC 4.6; NaN without label noise or with `eval_train_examples = 0`).
//!
//! Every file is replaced atomically (written beside, then renamed). A run killed at any point resumes from
//! `last.ckpt` with `resume`, and since every random draw is keyed by the run's counters ([`crate::rng`]) it ends
//! with exactly the numbers of an uninterrupted run. Nothing is written before the whole configuration, the data
//! and any checkpoint to start from have been checked.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use samlab_core::ascent::{ObservationMean, SamObservation};
use samlab_core::run_dir::nan_as_null;
use samlab_core::run_dir::{
    self, count, DeepEngine, MetricsRow, RunDirError, RunDirWriter, SummaryHeader,
};
use samlab_core::sam::{AscentSource, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_core::{ConfigError, DataError};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{
    apply_label_noise, assemble, split_validation, Augment, DatasetKind, ImageSet, LabelNoise,
};
use crate::hessian::{curvature, HessianConfig};
use crate::models::{Arch, ModelSpec, Network};
use crate::nn::{init_params, NormKind};
use crate::rng::{Purpose, Stream};
use crate::trainer::{evaluate, Batch, OptimConfig, Precision, TrainState, Trainer, WeightDecay};

/// The model part of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Width (the architecture's default when absent).
    pub width: Option<usize>,
    /// Normalization (the architecture's default when absent).
    pub norm: Option<NormKind>,
    /// A ViT's or Mixer's depth, patch, heads, MLP ratio and pooling (the architecture's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<crate::transformer::TransformerSpec>,
}

/// The data part of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which data set.
    pub dataset: DatasetKind,
    /// Where its files are (Fashion-MNIST: the shipped subset when absent).
    pub dir: Option<PathBuf>,
    /// Fraction of the training set held out for validation (seeded).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Augmentation of training batches (the data set's default when absent).
    pub augment: Option<Augment>,
    /// Label noise on the training split (and, if `noisy_val`, independently on the validation split).
    pub label_noise: Option<LabelNoise>,
    /// Whether the validation split gets noisy labels too (the authors' code: yes).
    #[serde(default = "yes")]
    pub noisy_val: bool,
    /// Use only the first `n` training images (before the validation split); all when absent.
    pub train_limit: Option<usize>,
}

fn default_val_fraction() -> f64 {
    0.1
}

fn yes() -> bool {
    true
}

/// The optimization part of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs (passes over the training split, last incomplete batch dropped).
    pub epochs: usize,
    /// Batch size $B$.
    pub batch_size: usize,
    /// Stop after this many updates (the schedules then span this many); all epochs when absent.
    pub max_steps: Option<usize>,
    /// Seed of everything random.
    pub seed: u64,
    /// Learning-rate schedule over the updates.
    pub lr: LrSchedule,
    /// Momentum, weight decay and BatchNorm policy.
    pub optim: OptimConfig,
    /// Batch size of evaluation passes.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Training examples of the eval-mode training metrics (and at most as many noisy-label ones); 0 disables them.
    #[serde(default = "default_eval_train_examples")]
    pub eval_train_examples: usize,
    /// Backend: `flex` (CPU), or `wgpu` / `vulkan` / `cuda` / `tch` when compiled in.
    #[serde(default = "default_device")]
    pub device: String,
    /// Precision of the training passes (mixed precision below f32; evaluation and analysis stay in f32).
    #[serde(default)]
    pub precision: Precision,
    /// Log the Hessian's top eigenvalue and trace every this many epochs (and after the last one); 0: never.
    #[serde(default)]
    pub curvature_every: usize,
    /// The first this many examples of the eval-mode training subset are the curvature's fixed examples (chunks
    /// of 128 when 128 divides it, else one chunk).
    #[serde(default = "default_curvature_examples")]
    pub curvature_examples: usize,
    /// Rademacher probes of the logged trace (0: no trace).
    #[serde(default = "default_curvature_probes")]
    pub curvature_probes: usize,
}

fn default_eval_batch() -> usize {
    500
}

fn default_eval_train_examples() -> usize {
    1024
}

fn default_curvature_examples() -> usize {
    512
}

fn default_curvature_probes() -> usize {
    10
}

fn default_device() -> String {
    "flex".into()
}

/// A complete deep-net run: what `config.toml` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepRunConfig {
    /// `engine = "deep"` (absent in configs written before it existed).
    #[serde(default)]
    pub engine: DeepEngine,
    /// The network.
    pub model: ModelConfig,
    /// The data.
    pub data: DataConfig,
    /// The optimization.
    pub train: TrainConfig,
    /// The SAM family member.
    pub sam: SamConfig,
    /// Start from the weights (and BatchNorm statistics) of this run directory's last checkpoint; fresh momentum. A
    /// relative path is read from the run directory (`"../erm"` is its sibling `erm`, see
    /// `run_dir::resolve_init_from`).
    pub init_from: Option<PathBuf>,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value that makes no sense.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unusable data or checkpoint files.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A request that cannot be honoured (occupied output, nothing to resume).
    #[error("{0}")]
    Usage(String),
    /// The run directory cannot be used (held by another process, a file in the way, occupied).
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The backend failed while training (burn's GPU backends panic on a lost or failing device). The run stays
    /// `running` with the checkpoints written so far.
    #[error("the device failed during training ({0}); the run keeps its last checkpoint: continue it with `samlab train --resume --out RUN` (on this device or another, `--device`)")]
    Device(String),
    /// A file-system failure while writing the run.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl RunError {
    /// Whether the error is the user's input (exit status 2) rather than a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RunError::Io { .. } | RunError::Device(_) => false,
            RunError::RunDir(e) => e.is_bad_input(),
            _ => true,
        }
    }
}

/// Runs `train`, turning a panic inside it (how burn's GPU backends report a lost or failing device) into
/// [`RunError::Device`], so a failing device ends the command with an error instead of a crash, and what the run
/// has written (its checkpoints, its `running` summary) stays for `--resume`.
fn device_guard<T>(train: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(train)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        Err(RunError::Device(message))
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run observes what SAM did ([`EpochRow::sam`]) at the epoch's batches whose index is a multiple of this.
pub const OBSERVE_EVERY: usize = 8;

/// One row of metrics.csv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Updates done at its end.
    pub step: usize,
    /// Mean cross-entropy over the epoch's training examples, at the point of each descent gradient (the perturbed
    /// weights in SAM steps), with augmentation and BatchNorm in training mode.
    #[serde(with = "nan_as_null")]
    pub train_loss: f64,
    /// Error over the same passes.
    #[serde(with = "nan_as_null")]
    pub train_error: f64,
    /// Error on the examples with noisy labels, with respect to their noisy labels (NaN without label noise).
    #[serde(with = "nan_as_null")]
    pub train_error_noisy: f64,
    /// Validation loss (NaN without a validation split).
    #[serde(with = "nan_as_null")]
    pub val_loss: f64,
    /// Validation error.
    #[serde(with = "nan_as_null")]
    pub val_error: f64,
    /// Test loss.
    #[serde(with = "nan_as_null")]
    pub test_loss: f64,
    /// Test error.
    #[serde(with = "nan_as_null")]
    pub test_error: f64,
    /// Learning rate of the epoch's last update.
    #[serde(with = "nan_as_null")]
    pub lr: f64,
    /// SAM radius of the epoch's last update (0 for ERM steps).
    #[serde(with = "nan_as_null")]
    pub rho: f64,
    /// Wall-clock seconds of the epoch's updates.
    #[serde(with = "nan_as_null")]
    pub seconds: f64,
    /// Training images per second.
    #[serde(with = "nan_as_null")]
    pub images_per_s: f64,
    /// Loss in evaluation mode at the epoch's final weights, without augmentation, on the run's fixed subset of
    /// training examples with their training labels (NaN when `eval_train_examples` is 0).
    #[serde(with = "nan_as_null", default = "nan_as_null::absent")]
    pub train_eval_loss: f64,
    /// Error on the same subset.
    #[serde(with = "nan_as_null", default = "nan_as_null::absent")]
    pub train_eval_error: f64,
    /// Error in evaluation mode on the run's fixed subset of noisy-label examples, with respect to their noisy
    /// labels (NaN without label noise).
    #[serde(with = "nan_as_null", default = "nan_as_null::absent")]
    pub noisy_eval_error: f64,
    /// Top eigenvalue of the training loss's Hessian at the epoch's final weights on the fixed curvature
    /// examples, BatchNorm in batch mode (NaN on epochs without a curvature log).
    #[serde(with = "nan_as_null", default = "nan_as_null::absent")]
    pub hessian_top: f64,
    /// Hutchinson's estimate of the Hessian's trace on the same examples (NaN when not logged).
    #[serde(with = "nan_as_null", default = "nan_as_null::absent")]
    pub hessian_trace: f64,
    /// What SAM did: the mean over the epoch's observed SAM steps, its first and every [`OBSERVE_EVERY`]th
    /// (absent, all NaN, without any: ERM).
    #[serde(default)]
    pub sam: SamObservation,
}

impl MetricsRow for EpochRow {
    const COLUMNS: &'static [&'static str] = &[
        "epoch",
        "step",
        "train_loss",
        "train_error",
        "train_error_noisy",
        "val_loss",
        "val_error",
        "test_loss",
        "test_error",
        "lr",
        "rho",
        "seconds",
        "images_per_s",
        "train_eval_loss",
        "train_eval_error",
        "noisy_eval_error",
        "hessian_top",
        "hessian_trace",
        "sam_weight_norm",
        "sam_delta_norm",
        "sam_grad_cos",
        "sam_sharpness",
        "sam_bn_mean_shift",
        "sam_bn_var_shift",
    ];
    /// Runs written before the SAM columns.
    const REQUIRED: usize = 18;

    fn values(&self) -> Vec<f64> {
        let mut v = vec![
            self.epoch as f64,
            self.step as f64,
            self.train_loss,
            self.train_error,
            self.train_error_noisy,
            self.val_loss,
            self.val_error,
            self.test_loss,
            self.test_error,
            self.lr,
            self.rho,
            self.seconds,
            self.images_per_s,
            self.train_eval_loss,
            self.train_eval_error,
            self.noisy_eval_error,
            self.hessian_top,
            self.hessian_trace,
        ];
        v.extend(self.sam.values());
        v
    }

    fn from_values(v: &[f64]) -> Result<Self, &'static str> {
        Ok(EpochRow {
            epoch: count(v[0], "epoch")?,
            step: count(v[1], "step")?,
            train_loss: v[2],
            train_error: v[3],
            train_error_noisy: v[4],
            val_loss: v[5],
            val_error: v[6],
            test_loss: v[7],
            test_error: v[8],
            lr: v[9],
            rho: v[10],
            seconds: v[11],
            images_per_s: v[12],
            train_eval_loss: v[13],
            train_eval_error: v[14],
            noisy_eval_error: v[15],
            hessian_top: v[16],
            hessian_trace: v[17],
            sam: SamObservation::from_values(&v[18..]),
        })
    }
}

impl EpochRow {
    /// The readable per-epoch log line.
    pub fn line(&self, epochs: usize) -> String {
        let pct = |x: f64| {
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * x)
            }
        };
        format!(
            "epoch {:>3}/{epochs}  step {:>6}  running train loss {:.4} err {} | eval mode: train loss {:.4} err {}  noisy err {}  val err {}  test loss {:.4} err {} | lr {:.4} rho {:.4}  {:.1} s  {:.0} img/s",
            self.epoch,
            self.step,
            self.train_loss,
            pct(self.train_error),
            self.train_eval_loss,
            pct(self.train_eval_error),
            pct(self.noisy_eval_error),
            pct(self.val_error),
            self.test_loss,
            pct(self.test_error),
            self.lr,
            self.rho,
            self.seconds,
            self.images_per_s
        )
    }
}

/// Where training stands: stored in every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Updates done.
    pub steps_done: usize,
    /// Lowest validation error so far, its epoch and the test numbers of that epoch.
    pub best: Option<Best>,
    /// Metrics of every finished epoch.
    pub rows: Vec<EpochRow>,
    /// Seconds spent in updates so far.
    pub train_seconds: f64,
    /// Gradients computed by the updates so far (forward and backward passes); `None` when unknown (a run
    /// started before samlab counted them).
    #[serde(default)]
    pub gradient_evals: Option<u64>,
    /// How many times the run was resumed.
    pub resumes: usize,
    /// The SHA-256 of the config.toml the run started with (hex): `--resume` and the analysis tools refuse a
    /// config.toml edited since, or a checkpoint of another run; `None` for a run started before samlab recorded
    /// it.
    #[serde(default)]
    pub config_sha256: Option<String>,
}

impl Progress {
    /// A run's progress before its first update.
    fn new() -> Self {
        Progress {
            gradient_evals: Some(0),
            ..Progress::default()
        }
    }

    /// Counts updates that took `seconds` and computed `gradients`.
    fn add_updates(&mut self, seconds: f64, gradients: u64) {
        self.train_seconds += seconds;
        if let Some(n) = self.gradient_evals.as_mut() {
            *n = n.saturating_add(gradients);
        }
    }
}

/// The best epoch by validation error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Its validation error.
    pub val_error: f64,
    /// Its test error.
    pub test_error: f64,
    /// Its test loss.
    pub test_loss: f64,
}

/// Status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still running, or killed (resume it).
    Running,
    /// Stopped at the end of an epoch on the observer's request (its output was closed, as by `| head`); resume
    /// it.
    Interrupted,
    /// Finished.
    Ok,
    /// A loss became NaN or infinite; the last good checkpoint is kept.
    Diverged,
}

impl Status {
    /// Whether the run has finished (ok or diverged); a running, killed or interrupted run resumes.
    pub fn finished(self) -> bool {
        matches!(self, Status::Ok | Status::Diverged)
    }
}

/// summary.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// samlab's version.
    pub samlab_version: String,
    /// `"deep"`.
    pub engine: String,
    /// Run status.
    pub status: Status,
    /// Updates done.
    pub steps: usize,
    /// Updates planned.
    pub total_steps: usize,
    /// Epochs finished.
    pub epochs: usize,
    /// Last epoch's training loss (null unless ok).
    pub final_train_loss: Option<f64>,
    /// Last epoch's training error (null unless ok).
    pub final_train_error: Option<f64>,
    /// Last epoch's eval-mode training loss on the fixed subset (null unless ok).
    pub final_train_eval_loss: Option<f64>,
    /// Last epoch's eval-mode training error on the fixed subset (null unless ok).
    pub final_train_eval_error: Option<f64>,
    /// Last epoch's eval-mode error on the noisy-label subset w.r.t. the noisy labels (null unless ok).
    pub final_noisy_eval_error: Option<f64>,
    /// Lowest validation error over the epochs.
    pub best_val_error: Option<f64>,
    /// Its epoch.
    pub best_epoch: Option<usize>,
    /// Final test error (null unless ok).
    pub test_error: Option<f64>,
    /// Final test loss (null unless ok).
    pub test_loss: Option<f64>,
    /// Test error at the epoch of the best validation error (early stopping).
    pub test_error_at_best_val: Option<f64>,
    /// Test loss at that epoch.
    pub test_loss_at_best_val: Option<f64>,
    /// Number of parameters.
    pub num_params: usize,
    /// Seed.
    pub seed: u64,
    /// Seconds spent in updates (over all sessions of a resumed run).
    pub train_seconds: f64,
    /// Mean training images per second.
    pub images_per_s: f64,
    /// Gradients computed by the updates (forward and backward passes): 1 per update for ERM, 2 for SAM; null
    /// when unknown (a run started before samlab counted them).
    #[serde(default)]
    pub gradient_evals: Option<u64>,
    /// Backend.
    pub device: String,
    /// Precision of the training passes.
    #[serde(default)]
    pub precision: Precision,
    /// Times resumed.
    pub resumes: usize,
    /// The SHA-256 of metrics.csv, recorded when the run finishes (ok or diverged) and checked whenever the run is
    /// read back; absent while it runs and in runs written before samlab recorded it (read unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefacts_sha256: Option<std::collections::BTreeMap<String, String>>,
}

/// Receives progress while a run trains (progress bars, logs).
pub trait Observer {
    /// Training starts (or resumes) at update `steps_done` of `total_steps`.
    fn started(&mut self, _steps_done: usize, _total_steps: usize, _steps_per_epoch: usize) {}
    /// An update finished.
    fn step(&mut self, _steps_done: usize) {}
    /// An epoch finished and was checkpointed; return false to stop here (the run stays resumable, status
    /// `interrupted`).
    fn epoch(&mut self, _row: &EpochRow, _line: &str) -> bool {
        true
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// A finished (or stopped) run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Where it was written.
    pub dir: PathBuf,
    /// Its summary.
    pub summary: Summary,
    /// Its metrics rows.
    pub rows: Vec<EpochRow>,
}

/// The data of a run after the split and label noise.
pub struct PreparedData {
    /// Training split.
    pub train: ImageSet,
    /// Training labels used for training (noisy where noise was applied).
    pub train_labels: Vec<u16>,
    /// Whether each training example's label is noisy.
    pub train_noisy: Vec<bool>,
    /// Validation split (labels possibly noisy).
    pub val: ImageSet,
    /// Test set (clean).
    pub test: ImageSet,
    /// `(split, index, source_index, clean, noisy)` of every changed label.
    pub noise_records: Vec<[usize; 5]>,
}

impl PreparedData {
    /// The training examples of the eval-mode training metrics, in ascending order: the first `n` of a seeded
    /// permutation of the training split, and the first `n` noisy-label examples of the same permutation.
    pub fn eval_indices(&self, n: usize, seed: u64) -> [Vec<usize>; 2] {
        let order = Stream::new(seed, Purpose::EvalSubset, 0, 0).permutation(self.train.len());
        [false, true].map(|noisy_only| {
            let mut picked: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| !noisy_only || self.train_noisy[i])
                .take(n)
                .collect();
            picked.sort_unstable();
            picked
        })
    }
}

/// Loads the data set, splits off validation and applies label noise, all seeded by `seed`.
pub fn prepare_data(cfg: &DataConfig, seed: u64) -> Result<PreparedData, RunError> {
    let (mut full, test) = cfg.dataset.load(cfg.dir.as_deref())?;
    if test.is_empty() || full.is_empty() {
        return Err(DataError::Shape(format!(
            "need at least one training and one test image, got {} and {}",
            full.len(),
            test.len()
        ))
        .into());
    }
    if test.shape != full.shape {
        return Err(DataError::Shape(format!(
            "the test images are {:?} (channels, height, width) but the training images are {:?}",
            test.shape, full.shape
        ))
        .into());
    }
    if let Some(n) = cfg.train_limit {
        if n == 0 || n > full.len() {
            return Err(ConfigError::Invalid {
                field: "train_limit",
                reason: format!("must be in 1..={}, got {n}", full.len()),
            }
            .into());
        }
        full = full.select(&(0..n).collect::<Vec<_>>());
    }
    let (mut train, mut val, source) = split_validation(&full, cfg.val_fraction, seed)?;
    let clean_train = train.labels.clone();
    let mut train_noisy = vec![false; train.len()];
    let mut noise_records = Vec::new();
    if let Some(noise) = &cfg.label_noise {
        let idx = apply_label_noise(&mut train, noise, cfg.dataset, seed, 0)?;
        for &i in &idx {
            train_noisy[i] = true;
            noise_records.push([
                0,
                i,
                source[i],
                clean_train[i] as usize,
                train.labels[i] as usize,
            ]);
        }
        if cfg.noisy_val && !val.is_empty() {
            let clean_val = val.labels.clone();
            for i in apply_label_noise(&mut val, noise, cfg.dataset, seed, 1)? {
                noise_records.push([
                    1,
                    i,
                    usize::MAX,
                    clean_val[i] as usize,
                    val.labels[i] as usize,
                ]);
            }
        }
    }
    Ok(PreparedData {
        train_labels: train.labels.clone(),
        train,
        train_noisy,
        val,
        test,
        noise_records,
    })
}

/// Everything a run needs, checked.
struct Plan {
    net: Network,
    data: PreparedData,
    steps_per_epoch: usize,
    total_steps: usize,
    epochs: usize,
    augment: Augment,
    device: burn::tensor::Device,
    /// The eval-mode training metrics' subsets (with their training labels): all examples, noisy-label ones.
    eval_subsets: [ImageSet; 2],
}

/// The model a run config describes, for its training images: what every checkpoint of the run must hold.
pub fn model_spec(model: &ModelConfig, train: &ImageSet) -> ModelSpec {
    ModelSpec {
        arch: model.arch,
        width: model.width.unwrap_or(model.arch.default_width()),
        norm: model.norm.unwrap_or(model.arch.default_norm()),
        input: train.shape,
        classes: train.classes,
        transformer: model.transformer.or(model.arch.default_transformer()),
    }
}

/// Reads the checkpoint at `path` and checks it holds exactly the tensors of `net` (the model of the run that
/// uses it), all finite: the one way every consumer (resume, fine-tuning, analysis) loads checkpoints.
pub fn load_checkpoint(path: &Path, net: &Network) -> Result<Checkpoint, RunError> {
    let ckpt = Checkpoint::load(path)?;
    ckpt.check_model(net, path)?;
    Ok(ckpt)
}

/// Makes `out` a run directory of `config` whose weights are the PyTorch `state_dict` in `file` (see
/// [`Checkpoint::from_state_dict`]): config.toml and checkpoint/last.ckpt, nothing trained. `sharpness`, `hessian`
/// and `interpolate` then read it like any run. An occupied `out` is replaced only with `force`.
pub fn import_state_dict(
    config: &DeepRunConfig,
    file: &Path,
    out: &Path,
    force: bool,
) -> Result<PathBuf, RunError> {
    // config.toml records training flags too: every one is checked as `train` checks it (a run of this
    // directory's config must be one samlab can start), along with the data and the model.
    let spec = plan(config)?.net.spec().clone();
    let ckpt = Checkpoint::from_state_dict(file, &spec)?;
    let writer = run_dir::RunDirWriter::create(out, force)?;
    let config_path = writer.path().join("config.toml");
    run_dir::write_toml(&config_path, config).map_err(io_err(&config_path))?;
    let dir = checkpoint_dir(writer.path());
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join("last.ckpt");
    ckpt.save(&path).map_err(io_err(&path))?;
    Ok(writer.commit()?)
}

/// The model and the number of updates `config` plans, its data read and checked as [`train`] would.
pub fn planned(config: &DeepRunConfig) -> Result<(ModelSpec, usize), RunError> {
    let p = plan(config)?;
    Ok((p.net.spec().clone(), p.total_steps))
}

/// Checks the values of `config` that need neither its data nor a device (counts, optimizer and SAM settings,
/// the curvature log): what [`train`] refuses before it reads anything.
pub fn check_config(config: &DeepRunConfig) -> Result<(), RunError> {
    let t = &config.train;
    let bad = |field, reason: String| RunError::Config(ConfigError::Invalid { field, reason });
    if t.epochs == 0 {
        return Err(bad("epochs", "must be at least 1".into()));
    }
    if t.batch_size == 0 || t.eval_batch_size == 0 {
        return Err(bad("batch_size", "must be at least 1".into()));
    }
    if t.max_steps == Some(0) {
        return Err(bad("max_steps", "must be at least 1".into()));
    }
    if !(t.optim.momentum.is_finite() && (0.0..1.0).contains(&t.optim.momentum)) {
        return Err(bad(
            "momentum",
            format!("must be in [0, 1), got {}", t.optim.momentum),
        ));
    }
    match t.optim.weight_decay {
        WeightDecay::L2 { lambda } | WeightDecay::Decoupled { lambda }
            if !(lambda.is_finite() && lambda >= 0.0) =>
        {
            return Err(bad(
                "weight_decay",
                format!("lambda must be finite and >= 0, got {lambda}"),
            ));
        }
        _ => {}
    }
    t.lr.check()?;
    crate::optim::check(&t.optim, &config.sam)?;
    let norm = config
        .model
        .norm
        .unwrap_or_else(|| config.model.arch.default_norm());
    config.sam.check_applies()?;
    crate::oracle::require_layers(&config.sam.check(t.batch_size)?, config.model.arch, norm)?;
    if t.curvature_every > 0 {
        if t.curvature_examples == 0 || t.curvature_examples > t.eval_train_examples {
            return Err(bad(
                "curvature_examples",
                format!(
                    "must be in 1..={} (eval_train_examples), got {}",
                    t.eval_train_examples, t.curvature_examples
                ),
            ));
        }
        if t.curvature_probes == 1 {
            return Err(bad(
                "curvature_probes",
                "the trace needs 0 (none) or at least 2 probes, got 1".into(),
            ));
        }
        crate::hessian::check_probes("curvature_probes", t.curvature_probes)?;
    }
    Ok(())
}

fn plan(config: &DeepRunConfig) -> Result<Plan, RunError> {
    check_config(config)?;
    let t = &config.train;
    let bad = |field, reason: String| RunError::Config(ConfigError::Invalid { field, reason });
    let device = crate::device(&t.device)?;
    t.precision.check(&device)?;
    let data = prepare_data(&config.data, t.seed)?;
    let net = Network::new(&model_spec(&config.model, &data.train))?;
    let augment = config
        .data
        .augment
        .unwrap_or(config.data.dataset.default_augment());
    if let Augment::Crop { pad } | Augment::CropFlip { pad } = augment {
        let side = data.train.shape[1].max(data.train.shape[2]);
        if pad > side {
            return Err(bad(
                "pad",
                format!("must be at most the image side {side} (a larger pad crops nothing but zeros), got {pad}"),
            ));
        }
    }
    let steps_per_epoch = data.train.len() / t.batch_size;
    if steps_per_epoch == 0 {
        return Err(bad(
            "batch_size",
            format!(
                "{} is larger than the training split ({} images)",
                t.batch_size,
                data.train.len()
            ),
        ));
    }
    let total_steps = t
        .epochs
        .checked_mul(steps_per_epoch)
        .filter(|&n| u64::try_from(n).is_ok())
        .ok_or_else(|| {
            bad(
                "epochs",
                format!(
                    "{} epochs of {steps_per_epoch} steps is more updates than a 64-bit counter holds",
                    t.epochs
                ),
            )
        })?
        .min(t.max_steps.unwrap_or(usize::MAX));
    let eval_subsets = data
        .eval_indices(t.eval_train_examples, t.seed)
        .map(|idx| data.train.select(&idx));
    Ok(Plan {
        epochs: total_steps.div_ceil(steps_per_epoch),
        augment,
        net,
        data,
        steps_per_epoch,
        total_steps,
        device,
        eval_subsets,
    })
}

/// The Hessian's top eigenvalue and trace (NaN without probes) at `state` on the run's fixed curvature examples
/// (both NaN where the loss is not finite: the epoch's divergence check reports that).
fn log_curvature(config: &DeepRunConfig, p: &Plan, state: &TrainState) -> (f64, f64) {
    let t = &config.train;
    let set = &p.eval_subsets[0];
    let n = t.curvature_examples.min(set.len());
    let examples = Batch::unaugmented(set, &set.labels, &(0..n).collect::<Vec<_>>(), &p.device);
    let cfg = HessianConfig {
        m: if n.is_multiple_of(128) { 128 } else { n },
        trace_probes: (t.curvature_probes > 0).then_some(t.curvature_probes),
        ..HessianConfig::default()
    };
    match curvature(&p.net, state, &examples, &cfg) {
        Ok(c) => (c.top(), c.trace.map_or(f64::NAN, |tr| tr.estimate)),
        Err(_) => (f64::NAN, f64::NAN),
    }
}

/// The training batch of update `step` (epoch `step / spe`, position `step % spe`).
fn batch_at(config: &DeepRunConfig, p: &Plan, step: usize) -> Batch {
    let (epoch, b) = (step / p.steps_per_epoch, step % p.steps_per_epoch);
    let order = Stream::new(config.train.seed, Purpose::Shuffle, epoch as u64, 0)
        .permutation(p.data.train.len());
    let bs = config.train.batch_size;
    batch_from_order(config, p, &order, epoch, b, bs)
}

fn batch_from_order(
    config: &DeepRunConfig,
    p: &Plan,
    order: &[usize],
    epoch: usize,
    b: usize,
    bs: usize,
) -> Batch {
    let indices = &order[b * bs..(b + 1) * bs];
    let mut stream = Stream::new(config.train.seed, Purpose::Augment, epoch as u64, b as u64);
    let (images, labels) = assemble(
        &p.data.train,
        &p.data.train_labels,
        indices,
        p.augment,
        &mut stream,
    );
    Batch::new(
        images,
        labels,
        p.data.train.shape,
        p.data.train.classes,
        &p.device,
    )
}

fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Loads the last checkpoint of the run that `init_from` names for the run directory `out` to start from, checking
/// that `out` is not that run, that the checkpoint belongs to `net` and that it was written by a run of that
/// directory's config.toml.
fn load_init(out: &Path, init_from: &Path, net: &Network) -> Result<Checkpoint, RunError> {
    run_dir::check_not_own_parent(out, init_from)?;
    let run = run_dir::resolve_init_from(out, init_from);
    let path = checkpoint_dir(&run).join("last.ckpt");
    let ckpt = load_checkpoint(&path, net)?;
    let text = run_dir::read_text(&run.join("config.toml")).map_err(|e| {
        RunError::Usage(format!(
            "{} (init_from of {}) is not a run directory: config.toml: {e}",
            run.display(),
            out.display()
        ))
    })?;
    check_config_sha256(&ckpt.progress, &text, &run, &path)?;
    Ok(ckpt)
}

/// Runs `config` into the fresh run directory `out` (an occupied `out` is replaced only with `force`, and only
/// once the new run has finished; until then the old one waits beside it as `.<name>.old-<pid>`). The run
/// directory is written in place by a [`RunDirWriter`], which holds its lock from the occupancy check to the end.
pub fn train(
    config: &DeepRunConfig,
    out: &Path,
    force: bool,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let p = plan(config)?;
    let init = match &config.init_from {
        Some(from) => Some(load_init(out, from, &p.net)?),
        None => None,
    };
    let writer = RunDirWriter::in_place(out, force).map_err(|e| match e {
        RunDirError::Exists(_) => RunError::Usage(format!(
            "{} already exists and is not empty (pass --force to replace it, or --resume to continue it)",
            out.display()
        )),
        e => e.into(),
    })?;
    start_fresh(config, &p, init.as_ref(), writer, observer)
}

/// Writes config.toml and label_noise.csv into the locked `out` and trains from the initial (or `init`'s) weights.
fn start_fresh(
    config: &DeepRunConfig,
    p: &Plan,
    init: Option<&Checkpoint>,
    writer: RunDirWriter,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let text = toml::to_string(config).map_err(|e| RunError::Io {
        path: writer.path().join("config.toml"),
        source: io::Error::other(e),
    })?;
    let prepared = (|| {
        let out = writer.path();
        let ckdir = checkpoint_dir(out);
        fs::create_dir_all(&ckdir).map_err(io_err(&ckdir))?;
        let path = out.join("config.toml");
        run_dir::write_atomic(&path, |p| fs::write(p, &text)).map_err(io_err(&path))?;
        write_noise_records(out, &p.data.noise_records)
    })();
    if let Err(e) = prepared {
        abandon(writer, &e);
        return Err(e);
    }
    let state = match init {
        Some(ckpt) => {
            let mut s = ckpt.to_state(&p.device);
            s.velocity = s
                .params
                .iter()
                .map(burn::tensor::Tensor::zeros_like)
                .collect();
            s
        }
        None => TrainState::new(
            &p.net,
            init_params(p.net.params(), config.train.seed, &p.device),
            &p.device,
        ),
    };
    let progress = Progress {
        config_sha256: Some(config_sha256(&text)),
        ..Progress::new()
    };
    run_locked(config, p, writer, state, progress, observer)
}

/// The SHA-256 (hex) of a config.toml's text, as [`Progress::config_sha256`] records it.
pub fn config_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An error unless the progress record `progress` of the checkpoint `path` was written by a run of the config.toml
/// `text` (of the run directory `dir`); a record without the hash (an older run) passes.
pub fn check_config_sha256(
    progress: &serde_json::Value,
    text: &str,
    dir: &Path,
    path: &Path,
) -> Result<(), RunError> {
    let Some(recorded) = progress.get("config_sha256").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let now = config_sha256(text);
    if recorded == now {
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "{} was written by a run of another config.toml (SHA-256 {recorded}) than {}'s (SHA-256 {now}): the \
         config was edited since the run started, or the checkpoint comes from another run; put back the \
         config (or the checkpoint) the run started with, or start a new run (--init-from keeps the weights)",
        path.display(),
        dir.display()
    )))
}

/// Gives up the run of `writer` after `error`: a run that replaced another (`force`) is deleted and the other put
/// back ([`RunDirWriter::abandon`]). Should that fail too, the earlier run stays set aside beside `<out>` (only a
/// successful commit deletes it), and a warning says where.
fn abandon(writer: RunDirWriter, error: &RunError) {
    if let Err(e) = writer.abandon() {
        // Written without panicking on a closed stderr.
        let _ = writeln!(
            io::stderr(),
            "warning: after {error}, the run that --force replaced could not be put back ({e}); it waits beside \
             the run directory as a hidden .<name>.old-<pid> directory"
        );
    }
}

/// [`run_loop`], then (once the run has finished: ok or diverged) commits it, deleting any earlier run that `force`
/// set aside; a failing run is abandoned, putting back the run it was to replace.
fn run_locked(
    config: &DeepRunConfig,
    p: &Plan,
    writer: RunDirWriter,
    state: TrainState,
    progress: Progress,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let outcome =
        match device_guard(|| run_loop(config, p, writer.path(), state, progress, observer)) {
            Ok(outcome) => outcome,
            Err(e) => {
                abandon(writer, &e);
                return Err(e);
            }
        };
    // Only a finished run is committed: one stopped early (killed, interrupted) is continued by `--resume`, and
    // the run it replaces waits beside it until then.
    if outcome.summary.status.finished() {
        writer.commit()?;
    }
    Ok(outcome)
}

/// Continues the run in `out` from its last checkpoint, to the numbers an uninterrupted run would have reached.
/// A run killed before its first checkpoint starts again from scratch; a finished run is left as it is.
pub fn resume(out: &Path, observer: &mut dyn Observer) -> Result<RunOutcome, RunError> {
    resume_on(out, None, observer)
}

/// [`resume`] on the backend `device` instead of the one in config.toml (checkpoints do not depend on the device);
/// summary.json then records the device the run finished on.
pub fn resume_on(
    out: &Path,
    device: Option<&str>,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let config_path = out.join("config.toml");
    if !config_path.exists() {
        return Err(RunError::Usage(format!(
            "nothing to resume in {}: it holds no config.toml",
            out.display()
        )));
    }
    let writer = RunDirWriter::resume(out)?;
    let text = run_dir::read_text(&config_path).map_err(|e| {
        RunError::Usage(format!(
            "nothing to resume in {}: cannot read config.toml ({e})",
            out.display()
        ))
    })?;
    let mut config: DeepRunConfig = toml::from_str(&text).map_err(|e| DataError::Read {
        path: config_path.clone(),
        reason: format!("not a deep-net run config: {e}"),
    })?;
    if let Some(header) = SummaryHeader::read(out).filter(SummaryHeader::finished) {
        return Err(RunError::Usage(format!(
            "{} already finished (status {}); nothing to resume (train into another --out, or pass --force to train it again)",
            out.display(),
            header.status
        )));
    }
    if let Some(d) = device {
        config.train.device = d.to_string();
    }
    let p = plan(&config)?;
    let path = checkpoint_dir(out).join("last.ckpt");
    if !path.exists() {
        // Killed before its first checkpoint: nothing was trained that could be kept.
        let init = match &config.init_from {
            Some(from) => Some(load_init(out, from, &p.net)?),
            None => None,
        };
        return start_fresh(&config, &p, init.as_ref(), writer, observer);
    }
    let ckpt = load_checkpoint(&path, &p.net)?;
    check_config_sha256(&ckpt.progress, &text, out, &path)?;
    let mut progress: Progress =
        serde_json::from_value(ckpt.progress.clone()).map_err(|e| DataError::Read {
            path: path.clone(),
            reason: format!("bad progress record: {e}"),
        })?;
    // Checkpoints are written at the end of epochs, so the progress record has exactly one consistent shape.
    let expected_steps = progress
        .epochs_done
        .saturating_mul(p.steps_per_epoch)
        .min(p.total_steps);
    if progress.steps_done != expected_steps
        || progress.rows.len() != progress.epochs_done
        || progress
            .rows
            .last()
            .is_some_and(|r| r.step != progress.steps_done)
    {
        return Err(DataError::Read {
            path,
            reason: format!(
                "its progress record ({} steps, {} epochs, {} metrics rows) does not fit the run's schedule ({} steps per epoch, {} in all)",
                progress.steps_done,
                progress.epochs_done,
                progress.rows.len(),
                p.steps_per_epoch,
                p.total_steps
            ),
        }
        .into());
    }
    // Every update takes at least one gradient and at most one per example and ascent step, plus the descent.
    let most = (progress.steps_done as u64)
        .saturating_mul(config.train.batch_size as u64)
        .saturating_mul(config.sam.ascent_steps as u64 + 1);
    if let Some(n) = progress
        .gradient_evals
        .filter(|&n| n < progress.steps_done as u64 || n > most)
    {
        return Err(DataError::Read {
            path,
            reason: format!(
                "its gradient count ({n}) does not fit its {} steps",
                progress.steps_done
            ),
        }
        .into());
    }
    progress.resumes += 1;
    let state = ckpt.to_state(&p.device);
    run_locked(&config, &p, writer, state, progress, observer)
}

fn write_noise_records(out: &Path, records: &[[usize; 5]]) -> Result<(), RunError> {
    let mut text = String::from("split,index,source_index,clean_label,noisy_label\n");
    for r in records {
        let split = if r[0] == 0 { "train" } else { "val" };
        let source = if r[2] == usize::MAX {
            String::new()
        } else {
            r[2].to_string()
        };
        text.push_str(&format!("{split},{},{source},{},{}\n", r[1], r[3], r[4]));
    }
    let path = out.join("label_noise.csv");
    run_dir::write_atomic(&path, |p| fs::write(p, text)).map_err(io_err(&path))
}

fn write_metrics(out: &Path, rows: &[EpochRow]) -> Result<(), RunError> {
    let path = out.join("metrics.csv");
    run_dir::write_atomic(&path, |p| fs::write(p, run_dir::rows_text(rows))).map_err(io_err(&path))
}

fn summarize(config: &DeepRunConfig, p: &Plan, progress: &Progress, status: Status) -> Summary {
    let last = progress.rows.last().filter(|_| status == Status::Ok);
    let images: f64 = progress.steps_done as f64 * config.train.batch_size as f64;
    Summary {
        samlab_version: env!("CARGO_PKG_VERSION").into(),
        engine: "deep".into(),
        status,
        steps: progress.steps_done,
        total_steps: p.total_steps,
        epochs: progress.epochs_done,
        final_train_loss: last.map(|r| r.train_loss),
        final_train_error: last.map(|r| r.train_error),
        final_train_eval_loss: last.map(|r| r.train_eval_loss),
        final_train_eval_error: last.map(|r| r.train_eval_error),
        final_noisy_eval_error: last.map(|r| r.noisy_eval_error),
        best_val_error: progress.best.as_ref().map(|b| b.val_error),
        best_epoch: progress.best.as_ref().map(|b| b.epoch),
        test_error: last.map(|r| r.test_error),
        test_loss: last.map(|r| r.test_loss),
        test_error_at_best_val: progress.best.as_ref().map(|b| b.test_error),
        test_loss_at_best_val: progress.best.as_ref().map(|b| b.test_loss),
        num_params: p.net.num_params(),
        seed: config.train.seed,
        train_seconds: progress.train_seconds,
        images_per_s: if progress.train_seconds > 0.0 {
            images / progress.train_seconds
        } else {
            0.0
        },
        gradient_evals: progress.gradient_evals,
        device: config.train.device.clone(),
        precision: config.train.precision,
        resumes: progress.resumes,
        artefacts_sha256: None,
    }
}

fn write_summary(out: &Path, summary: &Summary) -> Result<(), RunError> {
    let path = out.join("summary.json");
    let text =
        serde_json::to_string_pretty(summary).map_err(|e| io_err(&path)(io::Error::other(e)))?;
    run_dir::write_atomic(&path, |p| fs::write(p, text + "\n")).map_err(io_err(&path))
}

fn finish(
    config: &DeepRunConfig,
    p: &Plan,
    out: &Path,
    progress: Progress,
    status: Status,
) -> Result<RunOutcome, RunError> {
    let mut summary = summarize(config, p, &progress, status);
    write_metrics(out, &progress.rows)?;
    if status.finished() {
        let names = ["metrics.csv"];
        summary.artefacts_sha256 =
            Some(run_dir::artefact_hashes(out, &names).map_err(io_err(&out.join(names[0])))?);
    }
    write_summary(out, &summary)?;
    Ok(RunOutcome {
        dir: out.to_path_buf(),
        summary,
        rows: progress.rows,
    })
}

fn run_loop(
    config: &DeepRunConfig,
    p: &Plan,
    out: &Path,
    mut state: TrainState,
    mut progress: Progress,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let t = &config.train;
    let sam = config.sam.check(t.batch_size)?;
    let trainer = Trainer {
        net: &p.net,
        sam: sam.clone(),
        optim: t.optim,
        seed: t.seed,
        device: p.device.clone(),
        precision: t.precision,
    };
    if progress.steps_done >= p.total_steps {
        return finish(config, p, out, progress, Status::Ok);
    }
    write_summary(out, &summarize(config, p, &progress, Status::Running))?;
    observer.started(progress.steps_done, p.total_steps, p.steps_per_epoch);
    let uses_previous = config.sam.ascent_source == AscentSource::PreviousBatch;
    let mut previous: Option<Batch> = (uses_previous && progress.steps_done > 0)
        .then(|| batch_at(config, p, progress.steps_done - 1));
    let bs = t.batch_size;
    let mut step = progress.steps_done;
    while step < p.total_steps {
        let epoch = step / p.steps_per_epoch;
        let order =
            Stream::new(t.seed, Purpose::Shuffle, epoch as u64, 0).permutation(p.data.train.len());
        let first = step % p.steps_per_epoch;
        let last = p
            .steps_per_epoch
            .min(p.total_steps - epoch * p.steps_per_epoch);
        let started = Instant::now();
        let (mut loss_sum, mut wrong, mut seen, mut noisy_wrong, mut noisy_seen) =
            (0.0, 0usize, 0usize, 0usize, 0usize);
        let mut gradient_evals = 0;
        let mut observed = ObservationMean::default();
        let (mut lr, mut rho) = (0.0, 0.0);
        for b in first..last {
            let batch = batch_from_order(config, p, &order, epoch, b, bs);
            (lr, rho) = sam.lr_rho_at(&t.lr, step, p.total_steps);
            let prev = previous.as_ref().unwrap_or(&batch);
            let observe = b.is_multiple_of(OBSERVE_EVERY);
            let outcome =
                trainer.observed_step(&mut state, &batch, prev, lr, rho, step as u64, observe);
            gradient_evals += outcome.gradient_evals;
            if !outcome.finite {
                progress.add_updates(started.elapsed().as_secs_f64(), gradient_evals);
                return finish(config, p, out, progress, Status::Diverged);
            }
            loss_sum += outcome.loss_sum;
            if let Some(o) = &outcome.sam {
                observed.add(o);
            }
            seen += bs;
            for (k, ok) in outcome.correct.iter().enumerate() {
                let noisy = p.data.train_noisy[order[b * bs + k]];
                wrong += usize::from(!ok);
                noisy_seen += usize::from(noisy);
                noisy_wrong += usize::from(noisy && !ok);
            }
            if uses_previous {
                previous = Some(batch);
            }
            step += 1;
            observer.step(step);
        }
        let seconds = started.elapsed().as_secs_f64();
        progress.add_updates(seconds, gradient_evals);
        let eval = |set: &ImageSet| {
            evaluate(
                &p.net,
                &state.params,
                &state.bn,
                set,
                &set.labels,
                t.eval_batch_size,
                &p.device,
            )
        };
        let (val_loss, val_error) = if p.data.val.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            eval(&p.data.val)
        };
        let (test_loss, test_error) = eval(&p.data.test);
        let (train_eval_loss, train_eval_error) = eval(&p.eval_subsets[0]);
        let noisy_eval_error = eval(&p.eval_subsets[1]).1;
        let row = EpochRow {
            epoch: epoch + 1,
            step,
            train_loss: loss_sum / seen as f64,
            train_error: wrong as f64 / seen as f64,
            train_error_noisy: if noisy_seen > 0 {
                noisy_wrong as f64 / noisy_seen as f64
            } else {
                f64::NAN
            },
            val_loss,
            val_error,
            test_loss,
            test_error,
            lr,
            rho,
            seconds,
            images_per_s: seen as f64 / seconds.max(1e-9),
            train_eval_loss,
            train_eval_error,
            noisy_eval_error,
            hessian_top: f64::NAN,
            hessian_trace: f64::NAN,
            sam: observed.mean(),
        };
        let mut row = row;
        if t.curvature_every > 0
            && ((epoch + 1).is_multiple_of(t.curvature_every) || step == p.total_steps)
            && row.train_loss.is_finite()
        {
            (row.hessian_top, row.hessian_trace) = log_curvature(config, p, &state);
        }
        // A finite loss is not enough for a good checkpoint: every tensor must be finite (a BatchNorm running
        // variance can overflow while the loss, in training mode, stays finite), else the run diverged here and
        // the last good checkpoint stays the previous epoch's.
        let last = Checkpoint::capture(&p.net, &state, true, serde_json::Value::Null);
        if !(test_loss.is_finite() && row.train_loss.is_finite())
            || last.impossible_value().is_some()
        {
            progress.steps_done = step;
            progress.rows.push(row);
            return finish(config, p, out, progress, Status::Diverged);
        }
        progress.steps_done = step;
        progress.epochs_done = epoch + 1;
        let improved = !val_error.is_nan()
            && progress
                .best
                .as_ref()
                .is_none_or(|b| val_error < b.val_error);
        if improved {
            progress.best = Some(Best {
                epoch: epoch + 1,
                val_error,
                test_error,
                test_loss,
            });
        }
        progress.rows.push(row.clone());
        let ckdir = checkpoint_dir(out);
        let value = serde_json::to_value(&progress).expect("progress serializes");
        if improved {
            Checkpoint::capture(&p.net, &state, false, value.clone())
                .save(&ckdir.join("best.ckpt"))
                .map_err(io_err(&ckdir))?;
        }
        Checkpoint {
            progress: value,
            ..last
        }
        .save(&ckdir.join("last.ckpt"))
        .map_err(io_err(&ckdir))?;
        write_metrics(out, &progress.rows)?;
        let line = row.line(p.epochs);
        if !observer.epoch(&row, &line) {
            let summary = summarize(config, p, &progress, Status::Interrupted);
            write_summary(out, &summary)?;
            return Ok(RunOutcome {
                dir: out.to_path_buf(),
                summary,
                rows: progress.rows,
            });
        }
    }
    finish(config, p, out, progress, Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_backend_is_a_device_error_not_a_crash() {
        let err = device_guard::<()>(|| panic!("Device lost: {}", 7)).unwrap_err();
        assert!(
            matches!(&err, RunError::Device(m) if m == "Device lost: 7"),
            "{err}"
        );
        assert!(!err.is_bad_input());
        assert!(err.to_string().contains("--resume"), "{err}");
        let err = device_guard::<()>(|| std::panic::panic_any(3u8)).unwrap_err();
        assert!(
            err.to_string().contains("a panic without a message"),
            "{err}"
        );
        assert_eq!(device_guard(|| Ok(5)).unwrap(), 5);
    }
}
