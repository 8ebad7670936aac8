//! Throughput of one training step (forward + backward [+ ascent passes] + SGD-momentum update) on a fixed batch of
//! random CIFAR-shaped images: `samlab bench-step`, the `step` cargo bench and the GPU benchmark (`bench/gpu`).
//!
//! Each step ends with a host read of the loss and logits (the trainer reads them to detect divergence), so
//! asynchronous backends (wgpu, cuda) are synchronized inside the clock. The first steps (`warmup`) compile the
//! GPU kernels and are timed separately.

use std::time::Instant;

use burn::tensor::Device;
use samlab_core::sam::{Grouping, Normalization, SamConfig};
use samlab_core::ConfigError;
use serde::Serialize;

use crate::models::{ModelSpec, Network};
use crate::nn::init_params;
use crate::rng::{Purpose, Stream};
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
    /// Precision of the passes.
    pub precision: Precision,
    /// Untimed steps first.
    pub warmup: usize,
    /// Most timed steps.
    pub steps: usize,
    /// Stop timing after this many seconds of timed steps (at least one step is timed).
    pub max_seconds: f64,
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
    /// `batch / median_step_s`.
    pub images_per_s: f64,
}

impl StepBench {
    /// The SAM configuration of the step: ERM for `rho == 0`, else normalized SAM with group size `m`.
    pub fn sam(&self) -> SamConfig {
        if self.rho == 0.0 {
            return SamConfig::erm();
        }
        SamConfig {
            rho: self.rho,
            grouping: self.m.map_or(Grouping::WholeBatch, Grouping::Size),
            normalization: Normalization::Normalized,
            ..SamConfig::erm()
        }
    }
}

/// Times `bench` on `device`; a non-finite loss is an error (the random batch does not diverge at lr 0.01).
pub fn time_steps(bench: &StepBench, device: &Device) -> Result<StepTiming, ConfigError> {
    let bad = |field, reason: String| ConfigError::Invalid { field, reason };
    if bench.batch == 0 || bench.steps == 0 {
        return Err(bad(
            "steps",
            "batch size and steps must be at least 1".into(),
        ));
    }
    let sam = bench.sam().check(bench.batch)?;
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
        },
        seed: 0,
        device: device.clone(),
        precision: bench.precision,
    };
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
        let out = trainer.step(&mut state, &b, &b, 0.01, bench.rho, i as u64);
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
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(StepTiming {
        params: net.num_params(),
        steps: times.len(),
        warmup_s,
        median_step_s: median,
        images_per_s: bench.batch as f64 / median,
    })
}
