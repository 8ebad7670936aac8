//! Deep-net runs: the config every `samlab train` flag and every deep preset is laid over (the runs themselves
//! are `samlab_deep::run`).

use std::path::Path;

use samlab_core::run_dir::{check_artefacts, read_rows};
use samlab_core::sam::{Normalization, SamConfig};
use samlab_core::schedule::{LrSchedule, LrShape, Warmup};
use samlab_deep::data::DatasetKind;
use samlab_deep::models::Arch;
use samlab_deep::run::{DataConfig, DeepRunConfig, ModelConfig, RunOutcome, Summary, TrainConfig};
use samlab_deep::trainer::{BnPolicy, OptimConfig, Precision, WeightDecay};

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

/// The finished run of `config` in `dir`, read back (an error if `dir` holds no finished run of `config`, or one
/// still running or killed: resume it with `samlab train --resume`; or if its metrics.csv is not the file the run
/// wrote).
pub fn load(dir: &Path, config: &DeepRunConfig) -> anyhow::Result<RunOutcome> {
    let summary: Summary = crate::finished(dir, config)?;
    if !summary.status.finished() {
        return Err(crate::NotFinished {
            dir: dir.display().to_string(),
            why: format!(
                "the run has not finished (status {}): resume it",
                serde_json::to_value(summary.status).expect("a status serializes")
            ),
        }
        .into());
    }
    check_artefacts(dir, summary.artefacts_sha256.as_ref(), &["metrics.csv"])?;
    Ok(RunOutcome {
        dir: dir.to_path_buf(),
        rows: read_rows(&dir.join("metrics.csv"))?,
        summary,
    })
}
