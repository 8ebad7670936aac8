//! Throughput of one training step (forward + backward [+ ascent passes] + SGD-momentum update) on a fixed batch of
//! random CIFAR-shaped images: `samlab bench-step`, the `step` cargo bench and the GPU benchmark (`bench/gpu`).
//!
//! Each step ends with a host read of the loss and logits (the trainer reads them to detect divergence), so
//! asynchronous backends (wgpu, cuda) are synchronized inside the clock. The first steps (`warmup`) compile the
//! GPU kernels and are timed separately.

use std::collections::HashMap;
use std::time::Instant;

use burn::tensor::Device;
use samlab_core::sam::{CheckedSam, Grouping, Normalization, Perturbation, SamConfig, Variant};
use samlab_core::ConfigError;
use serde::Serialize;

use crate::models::{ModelSpec, Network, MAX_PARAMS};
use crate::nn::init_params;
use crate::rng::{Purpose, Stream};
use crate::run::{planned, DeepRunConfig, RunError};
use crate::trainer::{Batch, BnPolicy, OptimConfig, Precision, TrainState, Trainer, WeightDecay};

/// What to time.
#[derive(Clone, Debug)]
pub struct StepBench {
    /// The network (its `input` and `classes` shape the random batch).
    pub spec: ModelSpec,
    /// Batch size.
    pub batch: usize,
    /// SAM radius; 0 is an ERM step.
    pub rho: f64,
    /// Group size of m-SAM; `None` is one perturbation for the whole batch.
    pub m: Option<usize>,
    /// The SAM variant (for `rho > 0`).
    pub variant: Variant,
    /// How m-SAM's groups are computed.
    pub groups: GroupPath,
    /// Precision of the passes.
    pub precision: Precision,
    /// Untimed steps first.
    pub warmup: usize,
    /// Most timed steps.
    pub steps: usize,
    /// Stop timing after this many seconds of timed steps (at least one step is timed).
    pub max_seconds: f64,
}

/// How a step computes m-SAM's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPath {
    /// As training does ([`Trainer::step`]): low-rank perturbations where they apply, the loop otherwise.
    Auto,
    /// One group after the other ([`Trainer::looped_step`]).
    Loop,
    /// Each group's copy of the weights stacked, in one batched pass ([`Trainer::grouped_step`]).
    Stacked,
}

/// What [`time_steps`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    /// Parameters of the network.
    pub params: usize,
    /// Steps timed.
    pub steps: usize,
    /// Seconds of the warm-up steps together (kernel compilation and autotuning on GPU backends).
    pub warmup_s: f64,
    /// Median seconds of a timed step.
    pub median_step_s: f64,
    /// Mean seconds of a timed step (what a variant that alternates cheap and full steps, LookSAM, costs).
    pub mean_step_s: f64,
    /// `batch / median_step_s`.
    pub images_per_s: f64,
}

impl StepBench {
    /// The SAM configuration of the step: ERM for `rho == 0`, else normalized SAM or its variant, with group size
    /// `m`.
    pub fn sam(&self) -> SamConfig {
        if self.rho == 0.0 {
            // ERM with groups of m: micro-batch ("ghost") BatchNorm passes, as the trainer takes them.
            return SamConfig {
                grouping: self.m.map_or(Grouping::WholeBatch, Grouping::Size),
                variant: self.variant,
                ..SamConfig::erm()
            };
        }
        SamConfig {
            rho: self.rho,
            grouping: self.m.map_or(Grouping::WholeBatch, Grouping::Size),
            normalization: Normalization::Normalized,
            variant: self.variant,
            ..SamConfig::erm()
        }
    }
}

/// Most timed or warm-up steps of one benchmark.
pub const MAX_BENCH_STEPS: usize = 1_000_000;

impl StepBench {
    /// Checks the sizes and options before anything is allocated: batch and step counts, the random batch's
    /// size (at most `MAX_PARAMS` values), the time budget, and the SAM options; returns the SAM config.
    pub fn check(&self) -> Result<CheckedSam, ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.batch == 0 {
            return bad("batch-size", "must be at least 1".into());
        }
        if !(1..=MAX_BENCH_STEPS).contains(&self.steps) {
            return bad(
                "steps",
                format!("must be in [1, {MAX_BENCH_STEPS}], got {}", self.steps),
            );
        }
        if self.warmup > MAX_BENCH_STEPS {
            return bad(
                "warmup",
                format!("must be at most {MAX_BENCH_STEPS}, got {}", self.warmup),
            );
        }
        if !(self.max_seconds.is_finite() && self.max_seconds > 0.0) {
            return bad(
                "max-seconds",
                format!("must be finite and > 0, got {}", self.max_seconds),
            );
        }
        let mut dims = vec![self.batch];
        dims.extend(self.spec.input);
        samlab_core::limits::product("batch-size", &dims, MAX_PARAMS)?;
        let config = self.sam();
        config.check_applies()?;
        let sam = config.check(self.batch)?;
        crate::oracle::require_layers(&sam, self.spec.arch, self.spec.norm)?;
        Ok(sam)
    }
}

/// Times `bench` on `device`; a non-finite loss is an error (the random batch does not diverge at lr 0.01).
pub fn time_steps(bench: &StepBench, device: &Device) -> Result<StepTiming, ConfigError> {
    let bad = |field, reason: String| ConfigError::Invalid { field, reason };
    let sam = bench.check()?;
    bench.precision.check(device)?;
    let net = Network::new(&bench.spec)?;
    let mut state = TrainState::new(&net, init_params(net.params(), 0, device), device);
    let trainer = Trainer {
        net: &net,
        sam,
        optim: OptimConfig {
            momentum: 0.9,
            weight_decay: WeightDecay::None,
            bn_policy: BnPolicy::BothPasses,
            optimizer: Default::default(),
        },
        seed: 0,
        device: device.clone(),
        precision: bench.precision,
    };
    let groups = bench.batch / trainer.sam.group_size();
    if bench.groups == GroupPath::Stacked && !trainer.can_take_groups_together(groups, bench.rho) {
        return Err(bad(
            "groups",
            format!(
                "the groups of a step are stacked only for plain SAM or ERM with a group size below the batch size \
                 (here {groups} group(s){})",
                if bench.rho > 0.0 && bench.variant != Variant::Sam {
                    format!(", variant {}", bench.variant.label())
                } else {
                    String::new()
                }
            ),
        ));
    }
    let [c, h, w] = bench.spec.input;
    let mut s = Stream::new(0, Purpose::Augment, 0, 0);
    let images: Vec<f32> = (0..bench.batch * c * h * w)
        .map(|_| s.uniform() as f32)
        .collect();
    let labels: Vec<u16> = (0..bench.batch)
        .map(|_| s.below(bench.spec.classes) as u16)
        .collect();
    let b = Batch::new(images, labels, bench.spec.input, bench.spec.classes, device);
    let mut step = |i: usize| {
        let (rho, key) = (bench.rho, i as u64);
        let out = match bench.groups {
            GroupPath::Auto => trainer.step(&mut state, &b, &b, 0.01, rho, key),
            GroupPath::Loop => trainer.looped_step(&mut state, &b, &b, 0.01, rho, key, false),
            GroupPath::Stacked => trainer.grouped_step(&mut state, &b, &b, 0.01, rho, key),
        };
        if out.finite {
            Ok(())
        } else {
            Err(bad("bench", format!("non-finite loss at step {i}")))
        }
    };
    let started = Instant::now();
    for i in 0..bench.warmup {
        step(i)?;
    }
    let warmup_s = started.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(bench.steps);
    let timed = Instant::now();
    for i in 0..bench.steps {
        let t = Instant::now();
        step(bench.warmup + i)?;
        times.push(t.elapsed().as_secs_f64());
        if timed.elapsed().as_secs_f64() > bench.max_seconds {
            break;
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(StepTiming {
        params: net.num_params(),
        steps: times.len(),
        warmup_s,
        median_step_s: median,
        mean_step_s: mean,
        images_per_s: bench.batch as f64 / median,
    })
}

/// Median step times already measured, by model, batch, group size and kind of step.
pub type StepTimes = HashMap<String, f64>;

/// Estimated seconds of the updates of `config` on `device`: its planned updates at the median times of one ERM
/// step and, if it uses SAM, one SAM step of its model, batch and group size (each timed once per `times`: one
/// warm-up and up to 3 steps). A k-step ascent costs k + 1 passes where the timed SAM step makes 2; SAM's window
/// bounds its share of the updates. Evaluation passes are not included.
pub fn estimate_seconds(
    config: &DeepRunConfig,
    device: &Device,
    times: &mut StepTimes,
) -> Result<f64, RunError> {
    let (spec, steps) = planned(config)?;
    let sam = &config.sam;
    let batch = config.train.batch_size;
    let m = match sam.grouping {
        Grouping::WholeBatch => None,
        Grouping::Size(m) => Some(m),
    };
    let mut time = |rho: f64| -> Result<f64, RunError> {
        // The variants' SAM steps take the loop over groups.
        let looped = rho > 0.0 && sam.variant != Variant::Sam;
        let key = format!(
            "{spec:?} batch {batch} m {m:?} sam {} loop {looped}",
            rho > 0.0
        );
        if let Some(&t) = times.get(&key) {
            return Ok(t);
        }
        let bench = StepBench {
            spec: spec.clone(),
            batch,
            rho,
            m,
            variant: Variant::Sam,
            groups: GroupPath::Auto,
            precision: config.train.precision,
            warmup: 1,
            steps: 3,
            max_seconds: 10.0,
        };
        let t = time_steps(&bench, device)?.median_step_s;
        times.insert(key, t);
        Ok(t)
    };
    let erm = time(0.0)?;
    if sam.rho == 0.0 {
        return Ok(erm * steps as f64);
    }
    let passes = (sam.ascent_steps + 1) as f64 / 2.0;
    let per_sam = match sam.perturbation {
        Perturbation::Random => erm,
        Perturbation::Ascent => time(sam.rho)? * passes,
    };
    let share = (sam.window.end - sam.window.start).clamp(0.0, 1.0);
    Ok(steps as f64 * (share * per_sam + (1.0 - share) * erm))
}
