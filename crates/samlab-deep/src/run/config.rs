//! A deep run's config ([`DeepRunConfig`]: model, data, training) and its defaults.

use super::*;
use crate::trainer::BnPolicy;
use samlab_core::sam::Normalization;
use samlab_core::schedule::{LrShape, Warmup};

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

pub(super) fn default_val_fraction() -> f64 {
    0.1
}

pub(super) fn yes() -> bool {
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
    /// The log is `samlab hessian` with [`TrainConfig::curvature_config`]'s settings, at the epoch's weights.
    #[serde(default)]
    pub curvature_every: usize,
    /// The curvature log's examples: the first this many of the training split in file order, unaugmented, with
    /// the training labels (`samlab hessian --examples N`'s; chunks of 128 when 128 divides it, else one chunk).
    #[serde(default = "default_curvature_examples")]
    pub curvature_examples: usize,
    /// Rademacher probes of the logged trace (0: no trace).
    #[serde(default = "default_curvature_probes")]
    pub curvature_probes: usize,
}

impl TrainConfig {
    /// The settings of the curvature log: `samlab hessian`'s defaults ([`HessianConfig::default`]: BatchNorm in
    /// batch mode, Lanczos from seed 0 to tolerance 1e-3, at most 100 steps) on the first `curvature_examples`
    /// examples of the training split in chunks of 128 (one chunk when 128 does not divide them), with
    /// `curvature_probes` trace probes. [`curvature_on`] with these settings on a run's final checkpoint is the
    /// last logged value.
    pub fn curvature_config(&self) -> HessianConfig {
        let n = self.curvature_examples;
        HessianConfig {
            examples: n,
            m: if n.is_multiple_of(128) { 128 } else { n.max(1) },
            split: Split::Train,
            trace_probes: (self.curvature_probes > 0).then_some(self.curvature_probes),
            ..HessianConfig::default()
        }
    }
}

pub(super) fn default_eval_batch() -> usize {
    500
}

pub(super) fn default_eval_train_examples() -> usize {
    1024
}

pub(super) fn default_curvature_examples() -> usize {
    512
}

pub(super) fn default_curvature_probes() -> usize {
    10
}

pub(super) fn default_device() -> String {
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

/// The configuration every flag and file value is laid over.
pub fn defaults() -> DeepRunConfig {
    DeepRunConfig {
        engine: Default::default(),
        model: ModelConfig {
            arch: Arch::Cnn,
            width: None,
            norm: None,
            transformer: None,
        },
        data: DataConfig {
            dataset: DatasetKind::FashionMnist,
            dir: None,
            val_fraction: 0.1,
            augment: None,
            label_noise: None,
            noisy_val: true,
            train_limit: None,
        },
        train: TrainConfig {
            epochs: 1,
            batch_size: 128,
            max_steps: None,
            seed: 0,
            lr: LrSchedule {
                base: 0.1,
                shape: LrShape::Step {
                    at: vec![0.5, 0.75],
                    factors: vec![0.1, 0.1],
                },
                warmup: Warmup::None,
            },
            optim: OptimConfig {
                momentum: 0.9,
                weight_decay: WeightDecay::L2 { lambda: 5e-4 },
                bn_policy: BnPolicy::BothPasses,
                optimizer: Default::default(),
            },
            eval_batch_size: 500,
            eval_train_examples: 1024,
            device: "flex".into(),
            precision: Precision::F32,
            curvature_every: 0,
            curvature_examples: 512,
            curvature_probes: 10,
        },
        sam: SamConfig {
            normalization: Normalization::Normalized,
            ..SamConfig::default()
        },
        init_from: None,
    }
}
