//! Worst-case and average-case m-sharpness (SPEC 1.3, the authors' `eval_sharpness.py` in
//! tml-epfl/understanding-sam; adaptive sharpness as `--adaptive` in tml-epfl/sharpness-vs-generalization).
//!
//! The examples are cut into chunks of `m`; for each chunk $C$ with loss $L_C$ (mean cross-entropy, no L2 term):
//!
//! - worst case: projected gradient ascent on $\delta$ in $\{\lVert\delta\rVert_2 \le \rho\}$ (over all parameters
//!   at once): $\delta_0 = 0$ (or uniform on the $\rho$-sphere with `random_init`), then `steps` times
//!   $\delta \leftarrow \Pi_\rho(\delta + \eta\, h / \lVert h\rVert)$ with $h = \nabla L_C(w + \delta)$ and
//!   $\eta$ = `step_size_mult` $\cdot\rho$ (raw $h$ without `normalize`). With [`AscentTarget::Labels`] and no
//!   `adaptive` this is the trainer's own ascent ([`Trainer::perturbation`]), so it is exactly the perturbation
//!   m-SAM trains with. With [`AscentTarget::RandomWrong`] (the authors' random-init restarts) $h$ is instead the
//!   gradient of $-L_C$ against labels drawn uniformly among each example's wrong classes (fresh per restart): the
//!   ascent moves toward random wrong labels;
//! - adaptive worst case (`adaptive`): the same ascent in the ellipsoid
//!   $\{\lVert\delta \oslash \lvert w\rvert\rVert_2 \le \rho\}$: the step is $\eta\, (h \odot \lvert w\rvert) /
//!   \lVert h\rVert$ and the projection is the Euclidean one onto the ellipsoid,
//!   $\delta_i \leftarrow \delta_i / (1 + \lambda / w_i^2)$ with $\lambda \ge 0$ found by bisection (no offset is
//!   added to $\lvert w\rvert$, as in sharpness-vs-generalization; coordinates with $w_i = 0$ are not perturbed);
//!   the random start is $\rho\, \lvert w\rvert \odot z / \lVert z\rVert$ on the ellipsoid's boundary;
//! - average case: $\delta = \sigma z$, $z \sim \mathcal N(0, I)$, $\sigma = \rho/\sqrt{P}$ (the trainer's random
//!   perturbation baseline, $\mathbb E\lVert\delta\rVert^2 = \rho^2$), `samples` draws per chunk.
//!
//! As in the authors' code, a restart's value is the loss (and error, on the true labels) at its last iterate;
//! over restarts [`Select::Error`] (their rule) keeps the restart with the largest error, the first one on ties,
//! [`Select::Loss`] the one with the largest loss.
//!
//! Reported: means over chunks of the original loss and error, and of the increases
//! $L_C(w + \delta^*) - L_C(w)$ and of the error at $\delta^*$ minus the original error, $\delta^*$ the kept restart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::sam::{Grouping, Normalization, Perturbation, SamConfig};
use samlab_core::sharpness::{constraint_norm, BallNorm};
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::{chunks, write_json_file, BnEval, LoadedRun, RunInfo, Split};
use crate::models::Network;
use crate::nn::BnMode;
use crate::rng::{Purpose, Stream};
use crate::run::RunError;
use crate::trainer::{
    axpy, batch_loss, ce_pass, normal_like, scale, sq_norm, Batch, OptimConfig, ParamVec,
    Precision, TrainState, Trainer, WeightDecay,
};

/// Which restart of a chunk is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The largest error at the last iterate, the first restart on ties (`eval_sharpness.py`).
    Error,
    /// The largest loss at the last iterate, the first restart on ties.
    Loss,
}

/// The labels the worst-case ascent climbs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AscentTarget {
    /// Ascend the loss on the examples' own labels.
    Labels,
    /// Descend the loss on labels drawn uniformly among each example's wrong classes, fresh for every restart and
    /// chunk (`eval_sharpness.py` with `--sharpness_rand_init`).
    RandomWrong,
}

impl AscentTarget {
    /// The authors' rule: random wrong labels exactly when the restarts start at random points.
    pub fn authors(random_init: bool) -> Self {
        if random_init {
            AscentTarget::RandomWrong
        } else {
            AscentTarget::Labels
        }
    }
}

/// The settings of a sharpness evaluation (the defaults are those of `eval_sharpness.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessConfig {
    /// Radius $\rho$ of the ball (L2 over all parameters).
    pub rho: f64,
    /// Ascent steps per restart.
    pub steps: usize,
    /// Step size as a multiple of $\rho$.
    pub step_size_mult: f64,
    /// Restarts (more than one needs `random_init` or [`AscentTarget::RandomWrong`]: without either every restart
    /// is the same ascent); `select` says which is kept.
    pub restarts: usize,
    /// Start each restart from a uniformly random point of the $\rho$-sphere (of the ellipsoid's boundary with
    /// `adaptive`).
    pub random_init: bool,
    /// The labels of the ascent (the authors: [`AscentTarget::authors`]).
    pub target: AscentTarget,
    /// Which restart is kept.
    pub select: Select,
    /// Adaptive sharpness: the ellipsoid $\lVert\delta \oslash \lvert w\rvert\rVert \le \rho$ instead of the ball.
    pub adaptive: bool,
    /// Step along $h/\lVert h\rVert$ (otherwise along the raw gradient $h$; both are projected onto the ball, or
    /// the ellipsoid).
    pub normalize: bool,
    /// Chunk size $m$; it must divide `examples`.
    pub m: usize,
    /// How many examples (the first ones of `split`, without augmentation; used by [`run_sharpness`]).
    pub examples: usize,
    /// Which examples (used by [`run_sharpness`]).
    pub split: Split,
    /// BatchNorm in every pass ([`BnEval::Running`], evaluation mode, as `eval_sharpness.py`).
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
            target: AscentTarget::Labels,
            select: Select::Error,
            adaptive: false,
            normalize: true,
            m: 128,
            examples: 256,
            split: Split::Train,
            bn: BnEval::Running,
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
        if self.restarts > 1 && !self.random_init && self.target == AscentTarget::Labels {
            return Err(Self::bad(
                "restarts",
                "more than one restart needs random_init or random wrong targets (the ascent from 0 on the \
                 labels is deterministic)"
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
                optimizer: Default::default(),
            },
            seed: self.seed,
            device,
            precision: Precision::F32,
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
    /// Loss at the last iterate of the kept restart (the largest over restarts with [`Select::Loss`]).
    pub max_loss: f64,
    /// Error at that point (the largest over restarts with [`Select::Error`]).
    pub error_at_max: f64,
    /// $\lVert\delta\rVert$ of that point ($\lVert\delta \oslash \lvert w\rvert\rVert$ with `adaptive`).
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
    /// Worst-case sharpness: mean over chunks of (loss at the kept restart - loss at $w$).
    pub loss_increase: f64,
    /// Mean over chunks of (error at the kept restart - error at $w$).
    pub error_increase: f64,
    /// Largest [`ChunkSharpness::delta_norm`] over all chunks (at most $\rho$ up to rounding).
    pub max_delta_norm: f64,
    /// Average-case sharpness, when asked for.
    pub average: Option<AverageSharpness>,
    /// Per chunk.
    pub chunks: Vec<ChunkSharpness>,
}

/// Host copy of a parameter-shaped list, in f64.
fn host(v: &[Tensor<1>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|t| {
            t.to_data()
                .try_into_vec::<f32>()
                .expect("f32 parameters")
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect()
}

/// Device copy of a host list.
fn to_device(v: &[Vec<f64>], device: &Device) -> ParamVec {
    v.iter()
        .map(|x| {
            let values: Vec<f32> = x.iter().map(|&y| y as f32).collect();
            Tensor::from_data(TensorData::new(values, [x.len()]), device)
        })
        .collect()
}

/// $\lVert\delta \oslash s\rVert_2$ over the coordinates with $s_i > 0$ (the others are never perturbed): core's
/// [`constraint_norm`] of the concatenated tensors.
pub fn weighted_norm(delta: &[Vec<f64>], s: &[Vec<f64>]) -> f64 {
    constraint_norm(&delta.concat(), BallNorm::L2, Some(&s.concat()))
}

/// The Euclidean projection of `delta` onto the ellipsoid $\{x : \lVert x \oslash s\rVert_2 \le \rho\}$, tensor by
/// tensor: [`samlab_core::sharpness::project_ellipsoid`] on the concatenated vectors (inside, `delta` up to
/// rounding; coordinates with $s_i = 0$ set to 0).
pub fn project_ellipsoid(delta: &[Vec<f64>], s: &[Vec<f64>], rho: f64) -> Vec<Vec<f64>> {
    let mut flat = delta.concat();
    samlab_core::sharpness::project_ellipsoid(&mut flat, &s.concat(), rho);
    let mut rest = flat.as_slice();
    delta
        .iter()
        .map(|d| {
            let (head, tail) = rest.split_at(d.len());
            rest = tail;
            head.to_vec()
        })
        .collect()
}

/// Labels drawn uniformly among each example's wrong classes, keyed by `(seed, restart, chunk)`.
fn random_wrong(chunk: &Batch, seed: u64, restart: u64, index: u64) -> Batch {
    let classes = chunk.onehot.dims()[1];
    let mut stream = Stream::new(seed, Purpose::Analysis, 2, (restart << 32) | index);
    let labels: Vec<u16> = chunk
        .labels
        .iter()
        .map(|&y| {
            let k = stream.below(classes - 1) as u16;
            if k >= y {
                k + 1
            } else {
                k
            }
        })
        .collect();
    let mut onehot = vec![0.0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * classes + l as usize] = 1.0;
    }
    Batch {
        x: chunk.x.clone(),
        onehot: Tensor::from_data(
            TensorData::new(onehot, [labels.len(), classes]),
            &chunk.x.device(),
        ),
        labels,
    }
}

/// The ascent of one restart when the trainer's does not apply (random wrong targets or `adaptive`; see the
/// module doc). `abs_w`: $\lvert w\rvert$ on the host when `adaptive`. Returns $\delta$ and its norm.
#[allow(clippy::too_many_arguments)]
fn own_ascent(
    net: &Network,
    w: &[Tensor<1>],
    abs_w: Option<&[Vec<f64>]>,
    chunk: &Batch,
    cfg: &SharpnessConfig,
    mode: BnMode,
    state: &TrainState,
    restart: u64,
    index: u64,
) -> (ParamVec, f64) {
    let device = chunk.x.device();
    let (target, sign) = match cfg.target {
        AscentTarget::Labels => (chunk.clone(), 1.0),
        AscentTarget::RandomWrong => (random_wrong(chunk, cfg.seed, restart, index), -1.0),
    };
    let rho = cfg.rho;
    let project = |d: ParamVec| -> (ParamVec, f64) {
        match abs_w {
            Some(s) => {
                let x = project_ellipsoid(&host(&d), s, rho);
                let n = weighted_norm(&x, s);
                (to_device(&x, &device), n)
            }
            None => {
                let n = sq_norm(&d).sqrt();
                if n > rho {
                    (scale(&d, rho / n), rho)
                } else {
                    (d, n)
                }
            }
        }
    };
    let mut delta: ParamVec = if cfg.random_init {
        // The trainer's noise stream, so that both ascents start from the same point.
        let mut stream = Stream::new(cfg.seed, Purpose::Perturb, restart, index);
        let z = normal_like(net, &mut stream, &device);
        match abs_w {
            Some(s) => {
                let zs: Vec<Vec<f64>> = host(&z)
                    .iter()
                    .zip(s)
                    .map(|(z, s)| z.iter().zip(s).map(|(z, s)| z * s).collect())
                    .collect();
                let n = weighted_norm(&zs, s);
                let d: Vec<Vec<f64>> = zs
                    .iter()
                    .map(|v| v.iter().map(|x| x * rho / n).collect())
                    .collect();
                to_device(&d, &device)
            }
            None => {
                let n = sq_norm(&z).sqrt();
                scale(&z, rho / n)
            }
        }
    } else {
        w.iter().map(|t| t.zeros_like()).collect()
    };
    let abs_w_device = abs_w.map(|s| to_device(s, &device));
    let mut norm = 0.0;
    let eta = rho * cfg.step_size_mult;
    for _ in 0..cfg.steps {
        let point = axpy(w, 1.0, &delta);
        let h = ce_pass(net, &point, &target, mode, &mut state.bn.clone()).grads;
        let step = sign
            * if cfg.normalize {
                eta / (sq_norm(&h).sqrt() + 1e-12)
            } else {
                eta
            };
        let direction: ParamVec = match &abs_w_device {
            Some(s) => h
                .iter()
                .zip(s)
                .map(|(g, s)| g.clone() * s.clone())
                .collect(),
            None => h,
        };
        (delta, norm) = project(axpy(&delta, step, &direction));
    }
    (delta, norm)
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
    let abs_w: Option<Vec<Vec<f64>>> = cfg.adaptive.then(|| {
        host(w)
            .into_iter()
            .map(|v| v.into_iter().map(f64::abs).collect())
            .collect()
    });
    let own = cfg.adaptive || cfg.target != AscentTarget::Labels;
    // Loss and error of a chunk at `w + delta`.
    let at = |delta: &[Tensor<1>], chunk: &Batch| {
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
            let (delta, delta_norm) = if own {
                own_ascent(
                    net,
                    w,
                    abs_w.as_deref(),
                    chunk,
                    cfg,
                    mode,
                    state,
                    r as u64,
                    c as u64,
                )
            } else {
                let delta = ascent.perturbation(
                    w,
                    chunk,
                    cfg.rho,
                    r as u64,
                    c as u64,
                    &mut state.bn.clone(),
                );
                let n = sq_norm(&delta).sqrt();
                (delta, n)
            };
            let (max_loss, error_at_max) = at(&delta, chunk);
            let better = best.as_ref().is_none_or(|b| match cfg.select {
                Select::Error => error_at_max > b.error_at_max,
                Select::Loss => max_loss > b.max_loss,
            });
            if better {
                best = Some(ChunkSharpness {
                    loss,
                    error,
                    max_loss,
                    error_at_max,
                    delta_norm,
                });
            }
        }
        out.push(best.expect("restarts >= 1"));
        for s in 0..cfg.average_samples.unwrap_or(0) {
            let delta =
                random.perturbation(w, chunk, cfg.rho, s as u64, c as u64, &mut state.bn.clone());
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

impl SharpnessReport {
    /// The file [`SharpnessReport::write`] writes in a run directory.
    pub const FILE: &'static str = "sharpness.json";

    /// Writes the report to `dir/sharpness.json` (pretty JSON, atomically) and returns that path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, RunError> {
        let path = dir.join(Self::FILE);
        write_json_file(&path, self)?;
        Ok(path)
    }
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
