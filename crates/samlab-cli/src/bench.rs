//! `samlab bench-step`: the throughput of one training step on a fixed random batch (`samlab_deep::bench`), as
//! one JSON line; `bench/gpu/bench.py` runs it beside PyTorch.

use anyhow::Result;
use clap::{Args, ValueEnum};
use samlab_core::sam::Variant;
use samlab_deep::bench::{time_steps, GroupPath, StepBench};
use samlab_deep::models::{Arch, ModelSpec};
use samlab_deep::nn::NormKind;
use serde_json::json;

use crate::train::{NormArg, PrecisionArg};
use crate::variant_args::VariantArgs;

/// Flags of `samlab bench-step`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture (as in `samlab train --model`).
    #[arg(long, default_value = "preact_resnet18")]
    pub model: String,
    /// Width [default: the architecture's].
    #[arg(long)]
    pub width: Option<usize>,
    /// Normalization layers [default: batch; none for the MLP].
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// SAM radius (normalized SAM); 0 times an ERM step.
    #[arg(long, default_value_t = 0.0)]
    pub rho: f64,
    /// m-SAM group size [default: the whole batch].
    #[arg(long)]
    pub m: Option<usize>,
    /// How m-SAM's groups are computed: as training does (auto: low-rank perturbations of one copy of the weights
    /// on the MLP, one group after the other elsewhere), one after the other (loop), or with each group's copy of
    /// the weights stacked in one batched pass (stacked: plain SAM or ERM with --m below the batch size).
    #[arg(long, value_enum, default_value = "auto")]
    pub groups: GroupsArg,
    /// Image side (square images).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Untimed warm-up steps (GPU kernels compile here).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Most timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Stop timing after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub max_seconds: f64,
    /// Backend: flex, or wgpu / vulkan / cuda / tch when compiled in.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Precision of the passes.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// The SAM variant (with --rho > 0).
    #[command(flatten)]
    pub variant: VariantArgs,
}

/// `--groups`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GroupsArg {
    Auto,
    Loop,
    Stacked,
}

impl From<GroupsArg> for GroupPath {
    fn from(g: GroupsArg) -> Self {
        match g {
            GroupsArg::Auto => GroupPath::Auto,
            GroupsArg::Loop => GroupPath::Loop,
            GroupsArg::Stacked => GroupPath::Stacked,
        }
    }
}

/// Times the step and prints `{"model", ..., "images_per_s"}`.
pub fn bench_step(args: &BenchArgs) -> Result<()> {
    let (arch, norm) = Arch::parse(&args.model)?;
    let device = samlab_deep::device(&args.device)?;
    let bench = StepBench {
        spec: ModelSpec {
            arch,
            width: args.width.unwrap_or(arch.default_width()),
            norm: args
                .norm
                .map(NormKind::from)
                .or(norm)
                .unwrap_or(arch.default_norm()),
            input: [3, args.image_size, args.image_size],
            classes: 10,
            transformer: None,
        },
        batch: args.batch_size,
        rho: args.rho,
        m: args.m,
        variant: args.variant.variant()?.unwrap_or(Variant::Sam),
        groups: args.groups.into(),
        precision: args.precision.into(),
        warmup: args.warmup,
        steps: args.steps,
        max_seconds: args.max_seconds,
    };
    let t = time_steps(&bench, &device)?;
    say!(
        "{}",
        json!({
            "engine": format!("samlab {} ({})", env!("CARGO_PKG_VERSION"), args.device),
            "model": args.model,
            "width": bench.spec.width,
            "norm": bench.spec.norm,
            "batch": bench.batch,
            "rho": bench.rho,
            "m": bench.m.unwrap_or(bench.batch),
            "variant": bench.variant,
            "groups": bench.groups,
            "precision": bench.precision,
            "timing": t,
        })
    );
    Ok(())
}
