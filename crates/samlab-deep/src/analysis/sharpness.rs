//! Worst-case and average-case m-sharpness (SPEC 1.3, the authors' `eval_sharpness.py`).
//!
//! The examples are cut into chunks of `m`; for each chunk $C$ with loss $L_C$ (mean cross-entropy, no L2 term):
//!
//! - worst case: projected gradient ascent on $\delta$ in $\{\lVert\delta\rVert_2 \le \rho\}$ (over all parameters
//!   at once): $\delta_0 = 0$ (or uniform on the $\rho$-sphere with `random_init`), then `steps` times
//!   $\delta \leftarrow \Pi_\rho(\delta + \eta\, h / \lVert h\rVert)$ with $h = \nabla L_C(w + \delta)$ and
//!   $\eta$ = `step_size_mult` $\cdot\rho$ (raw $h$ without `normalize`). As in the authors' code, a restart's
//!   value is the loss at its last iterate and restarts keep the largest. This is the trainer's own ascent
//!   ([`Trainer::perturbation`]), so it is exactly the perturbation m-SAM trains with;
//! - average case: $\delta = \sigma z$, $z \sim \mathcal N(0, I)$, $\sigma = \rho/\sqrt{P}$ (the trainer's random
//!   perturbation baseline, $\mathbb E\lVert\delta\rVert^2 = \rho^2$), `samples` draws per chunk.
//!
//! Reported: means over chunks of the original loss and error, and of the increases
//! $\max_\delta L_C(w + \delta) - L_C(w)$ and of the error at that maximizer minus the original error.

use std::time::Instant;

use samlab_core::sam::{Grouping, Normalization, Perturbation, SamConfig};
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::{chunks, BnEval, LoadedRun, RunInfo, Split};
use crate::models::Network;
use crate::run::RunError;
use crate::trainer::{
    axpy, batch_loss, sq_norm, Batch, OptimConfig, TrainState, Trainer, WeightDecay,
};

/// The settings of a sharpness evaluation (the defaults are those of `eval_sharpness.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessConfig {
    /// Radius $\rho$ of the ball (L2 over all parameters).
    pub rho: f64,
    /// Ascent steps per restart.
    pub steps: usize,
    /// Step size as a multiple of $\rho$.
    pub step_size_mult: f64,
    /// Restarts (more than one needs `random_init`: without it every restart is the same ascent).
    pub restarts: usize,
    /// Start each restart from a uniformly random point of the $\rho$-sphere.
    pub random_init: bool,
    /// Step along $h/\lVert h\rVert$ (otherwise along the raw gradient $h$; both are projected onto the ball).
    pub normalize: bool,
    /// Chunk size $m$; it must divide `examples`.
    pub m: usize,
    /// How many examples (the first ones of `split`, without augmentation; used by [`run_sharpness`]).
    pub examples: usize,
    /// Which examples (used by [`run_sharpness`]).
    pub split: Split,
    /// BatchNorm in every pass.
    pub bn: BnEval,
    /// Also measure average-case sharpness with this many Gaussian draws per chunk.
    pub average_samples: Option<usize>,
    /// Seed of the random initializations and Gaussian draws.
    pub seed: u64,
}

impl Default for SharpnessConfig {
    fn default() -> Self {
        SharpnessConfig {
            rho: 0.1,
            steps: 20,
            step_size_mult: 0.1,
            restarts: 1,
            random_init: false,
            normalize: true,
            m: 128,
            examples: 256,
            split: Split::Train,
            bn: BnEval::Batch,
            average_samples: None,
            seed: 0,
        }
    }
}

impl SharpnessConfig {
    fn bad(field: &'static str, reason: String) -> ConfigError {
        ConfigError::Invalid { field, reason }
    }

    /// The trainer whose [`Trainer::perturbation`] is this evaluation's ascent (or, with
    /// [`Perturbation::Random`], its Gaussian draw) on chunks of `m` examples; checks every field.
    fn trainer<'a>(
        &self,
        net: &'a Network,
        perturbation: Perturbation,
        device: burn::tensor::Device,
    ) -> Result<Trainer<'a>, ConfigError> {
        if !(self.rho.is_finite() && self.rho > 0.0) {
            return Err(Self::bad(
                "rho",
                format!("must be finite and > 0, got {}", self.rho),
            ));
        }
        if self.restarts == 0 {
            return Err(Self::bad("restarts", "must be at least 1".into()));
        }
        if self.restarts > 1 && !self.random_init {
            return Err(Self::bad(
                "restarts",
                "more than one restart needs random_init (the ascent from 0 is deterministic)"
                    .into(),
            ));
        }
        if self.average_samples == Some(0) {
            return Err(Self::bad("samples", "must be at least 1".into()));
        }
        let sam = SamConfig {
            rho: self.rho,
            grouping: Grouping::WholeBatch,
            normalization: if self.normalize {
                Normalization::Normalized
            } else {
                Normalization::Clipped
            },
            ascent_steps: self.steps,
            ascent_step_mult: self.step_size_mult,
            random_init: self.random_init,
            perturbation,
            ..SamConfig::default()
        }
        .check(self.m)?;
        Ok(Trainer {
            net,
            sam,
            optim: OptimConfig {
                momentum: 0.0,
                weight_decay: WeightDecay::None,
                bn_policy: self.bn.policy(),
            },
            seed: self.seed,
            device,
        })
    }
}

/// One chunk's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkSharpness {
    /// Loss at $w$.
    pub loss: f64,
    /// Error at $w$.
    pub error: f64,
    /// Largest loss found in the ball.
    pub max_loss: f64,
    /// Error at that point.
    pub error_at_max: f64,
    /// $\lVert\delta\rVert$ of that point.
    pub delta_norm: f64,
}

/// Average-case (Gaussian) sharpness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AverageSharpness {
    /// Noise scale $\sigma = \rho/\sqrt{P}$.
    pub sigma: f64,
    /// Draws per chunk.
    pub samples: usize,
    /// Mean over chunks and draws of $L_C(w + \sigma z) - L_C(w)$.
    pub loss_increase: f64,
    /// The same for the error.
    pub error_increase: f64,
}

/// The result of [`sharpness`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sharpness {
    /// Mean over chunks of the loss at $w$.
    pub loss: f64,
    /// Mean over chunks of the error at $w$.
    pub error: f64,
    /// Worst-case sharpness: mean over chunks of (largest loss found - loss at $w$).
    pub loss_increase: f64,
    /// Mean over chunks of (error at the largest loss - error at $w$).
    pub error_increase: f64,
    /// Largest $\lVert\delta\rVert$ over all chunks' maximizers (at most $\rho$ up to rounding).
    pub max_delta_norm: f64,
    /// Average-case sharpness, when asked for.
    pub average: Option<AverageSharpness>,
    /// Per chunk.
    pub chunks: Vec<ChunkSharpness>,
}

/// Worst-case (and optionally average-case) m-sharpness of the network at `state` on `examples`, cut into chunks
/// of `cfg.m` (`cfg.examples` and `cfg.split` are not used here). Nothing in `state` changes.
pub fn sharpness(
    net: &Network,
    state: &TrainState,
    examples: &Batch,
    cfg: &SharpnessConfig,
) -> Result<Sharpness, ConfigError> {
    let device = examples.x.device();
    let ascent = cfg.trainer(net, Perturbation::Ascent, device.clone())?;
    let random = cfg.trainer(net, Perturbation::Random, device)?;
    let chunks = chunks(examples, cfg.m)?;
    let w = &state.params;
    let mode = cfg.bn.mode();
    // Loss and error of a chunk at `w + delta`.
    let at = |delta: &[burn::tensor::Tensor<1>], chunk: &Batch| {
        let point = axpy(w, 1.0, delta);
        let (loss, wrong) = batch_loss(net, &point, chunk, mode, &mut state.bn.clone());
        (loss, wrong as f64 / chunk.len() as f64)
    };
    let mut out = Vec::with_capacity(chunks.len());
    let (mut avg_loss, mut avg_error) = (0.0, 0.0);
    for (c, chunk) in chunks.iter().enumerate() {
        let (loss, wrong) = batch_loss(net, w, chunk, mode, &mut state.bn.clone());
        let error = wrong as f64 / chunk.len() as f64;
        let mut best: Option<ChunkSharpness> = None;
        for r in 0..cfg.restarts {
            let delta = ascent.perturbation(
                w,
                chunk,
                true,
                cfg.rho,
                r as u64,
                c as u64,
                &mut state.bn.clone(),
                &mut false,
            );
            let (max_loss, error_at_max) = at(&delta, chunk);
            if best.as_ref().is_none_or(|b| max_loss > b.max_loss) {
                best = Some(ChunkSharpness {
                    loss,
                    error,
                    max_loss,
                    error_at_max,
                    delta_norm: sq_norm(&delta).sqrt(),
                });
            }
        }
        out.push(best.expect("restarts >= 1"));
        for s in 0..cfg.average_samples.unwrap_or(0) {
            let delta = random.perturbation(
                w,
                chunk,
                true,
                cfg.rho,
                s as u64,
                c as u64,
                &mut state.bn.clone(),
                &mut false,
            );
            let (l, e) = at(&delta, chunk);
            avg_loss += l - loss;
            avg_error += e - error;
        }
    }
    let mean =
        |f: &dyn Fn(&ChunkSharpness) -> f64| out.iter().map(f).sum::<f64>() / out.len() as f64;
    let average = cfg.average_samples.map(|samples| {
        let draws = (samples * out.len()) as f64;
        AverageSharpness {
            sigma: cfg.rho / (net.num_params() as f64).sqrt(),
            samples,
            loss_increase: avg_loss / draws,
            error_increase: avg_error / draws,
        }
    });
    Ok(Sharpness {
        loss: mean(&|c| c.loss),
        error: mean(&|c| c.error),
        loss_increase: mean(&|c| c.max_loss - c.loss),
        error_increase: mean(&|c| c.error_at_max - c.error),
        max_delta_norm: out.iter().map(|c| c.delta_norm).fold(0.0, f64::max),
        average,
        chunks: out,
    })
}

/// What `samlab sharpness` writes to `sharpness.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessReport {
    /// The run and checkpoint.
    pub run: RunInfo,
    /// The settings.
    pub config: SharpnessConfig,
    /// The numbers.
    pub result: Sharpness,
    /// Wall-clock seconds of the evaluation (data and checkpoint loading excluded).
    pub seconds: f64,
}

/// [`sharpness`] of a loaded run on the first `cfg.examples` examples of `cfg.split`.
pub fn run_sharpness(run: &LoadedRun, cfg: &SharpnessConfig) -> Result<SharpnessReport, RunError> {
    let examples = run.examples(cfg.split, cfg.examples)?;
    let started = Instant::now();
    let result = sharpness(&run.net, &run.state, &examples, cfg)?;
    Ok(SharpnessReport {
        run: run.info.clone(),
        config: cfg.clone(),
        result,
        seconds: started.elapsed().as_secs_f64(),
    })
}
