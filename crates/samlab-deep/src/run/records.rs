//! What a run records: its metrics rows, progress, status and summary.

use super::*;

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
    /// Top eigenvalue of the training loss's Hessian at the epoch's final weights, as `samlab hessian` measures it
    /// with [`TrainConfig::curvature_config`] (the first `curvature_examples` of the training split, BatchNorm in
    /// batch mode; NaN on epochs without a curvature log).
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
    pub(super) fn new() -> Self {
        Progress {
            gradient_evals: Some(0),
            ..Progress::default()
        }
    }

    /// Counts updates that took `seconds` and computed `gradients`.
    pub(super) fn add_updates(&mut self, seconds: f64, gradients: u64) {
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

/// summary.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// samlab's version, `"deep"`, and the run's status.
    #[serde(flatten)]
    pub header: SummaryHeader,
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
