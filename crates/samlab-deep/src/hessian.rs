//! The Hessian of the training loss: exact Hessian-vector products, and its spectrum from them.
//!
//! **Products.** [`HessianOperator`] evaluates the network in f64 with its ReLU masks and max-pool selections
//! frozen at $w$ (a [`Tape`] recorded there): that function is smooth around $w$ and has the network's gradient
//! and Hessian at $w$ (the Hessian almost everywhere: a ReLU or max-pool kink has measure zero). BatchNorm's batch
//! statistics stay part of the function when [`BnEval::Batch`] says so. $Hv$ is the central difference
//! $(g(w + \varepsilon v) - g(w - \varepsilon v)) / 2\varepsilon$ of its f64 autodiff gradients with
//! $\lVert \varepsilon v\rVert$ = `eps_rel` $\cdot\max(\lVert w\rVert, 1)$: the truncation error is
//! $O(\varepsilon^2)$ of a smooth function and the rounding error about $10^{-16}/\varepsilon$, both far below
//! $10^{-6}$ relative (the test `hessian_reference` checks them against hyper-dual arithmetic). The product no
//! longer crosses kinks, which is what made the f32 differences of earlier versions lock onto gradient jumps.
//!
//! **Spectrum** (from [`samlab_core::spectral`], on the flattened parameter vector): the top-$k$ eigenvalues and
//! the bottom one by Lanczos with full reorthogonalization, each with its true residual $\lVert Hx - \theta
//! x\rVert$ (`converged` is false when a residual exceeds `tol` times the largest $|\theta|$); the trace by
//! Hutchinson's method with Rademacher probes and its standard error; the eigenvalue density by stochastic
//! Lanczos quadrature.
//!
//! The loss is the mean over chunks of `m` examples of the chunk's mean cross-entropy (BatchNorm as [`BnEval`]
//! says; no L2 term).
//!
//! The tools' evaluation settings ([`Split`], [`BnEval`], [`chunks`]) are here too, shared with
//! [`crate::analysis::sharpness`]: a run's per-epoch curvature log ([`crate::run`]) uses this module, so it
//! depends on nothing above the trainer. `samlab hessian` on a run directory is [`crate::analysis::hessian`],
//! which re-exports these items.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, Tensor, TensorData};
use samlab_core::spectral::{
    extreme_eigenpairs, hutchinson_trace, norm, slq_density, Density, DensityConfig, Eigenpair,
    LanczosConfig, SymmetricOperator, TraceEstimate,
};
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::models::Network;
use crate::nn::{BnMode, BnStats, Tape};
use crate::trainer::{taped_ce_pass, Batch, BnPolicy, ParamVec, TrainState};

/// The examples a tool is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The run's training split (validation excluded), with the run's training labels (noisy where it used
    /// label noise).
    Train,
    /// The test set (clean labels).
    Test,
}

/// What BatchNorm does in the passes of the sharpness and Hessian tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BnEval {
    /// Training mode: every pass normalizes with the statistics of its chunk of examples; the stored running
    /// statistics are neither used nor changed. This is how BatchNorm behaves in the SAM passes during training
    /// (SPEC 1.3), so it measures the quantity m-SAM's ascent actually sees.
    Batch,
    /// Evaluation mode: the checkpoint's running statistics, never changed.
    Running,
}

impl BnEval {
    /// The forward-pass mode.
    pub fn mode(self) -> BnMode {
        match self {
            BnEval::Batch => BnMode::Batch { update: false },
            BnEval::Running => BnMode::Running,
        }
    }

    /// The trainer's policy whose ascent passes normalize the same way (with the clean-pass policy the only
    /// update is to a throwaway copy of the statistics, which batch-mode passes never read).
    pub fn policy(self) -> BnPolicy {
        match self {
            BnEval::Batch => BnPolicy::CleanPassOnly,
            BnEval::Running => BnPolicy::Frozen,
        }
    }
}

/// `examples` cut into chunks of `m`; `m` must divide the number of examples (no example is silently dropped).
pub fn chunks(examples: &Batch, m: usize) -> Result<Vec<Batch>, ConfigError> {
    let n = examples.len();
    if m == 0 || !n.is_multiple_of(m) {
        return Err(ConfigError::Invalid {
            field: "m",
            reason: format!("the chunk size must divide the number of examples {n}, got {m}"),
        });
    }
    Ok((0..n / m).map(|c| examples.slice(c * m, m)).collect())
}

/// The settings of a Hessian evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HessianConfig {
    /// How many examples (the first ones of `split`, without augmentation; used by
    /// [`run_hessian`](crate::analysis::hessian::run_hessian)).
    pub examples: usize,
    /// Chunk size; it must divide `examples`.
    pub m: usize,
    /// Which examples (used by [`run_hessian`](crate::analysis::hessian::run_hessian)).
    pub split: Split,
    /// BatchNorm in every pass.
    pub bn: BnEval,
    /// How many of the largest eigenvalues.
    pub top_k: usize,
    /// Most Lanczos steps.
    pub max_steps: usize,
    /// Residual, relative to the largest eigenvalue in magnitude, that counts as converged.
    pub tol: f64,
    /// Finite-difference step relative to $\max(\lVert w\rVert, 1)$.
    pub eps_rel: f64,
    /// Seed of the Lanczos start vector.
    pub seed: u64,
    /// Rademacher probes of the trace estimate (`None`: no trace).
    pub trace_probes: Option<usize>,
    /// The spectral density (`None`: not computed).
    pub density: Option<DensityConfig>,
}

impl Default for HessianConfig {
    fn default() -> Self {
        HessianConfig {
            examples: 1024,
            m: 128,
            split: Split::Train,
            bn: BnEval::Batch,
            top_k: 1,
            max_steps: 100,
            tol: 1e-3,
            eps_rel: 1e-6,
            seed: 0,
            trace_probes: None,
            density: None,
        }
    }
}

impl HessianConfig {
    /// Checks every setting that does not depend on the network (the number of eigenvalues is checked against
    /// the number of parameters by [`curvature`]).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.lanczos().check_settings()?;
        check_eps_rel(self.eps_rel)?;
        if let Some(p) = self.trace_probes {
            if p < 2 {
                return Err(invalid(
                    "probes",
                    format!("the trace needs at least 2 probes, got {p}"),
                ));
            }
            check_probes("probes", p)?;
        }
        if let Some(d) = &self.density {
            d.check()?;
            check_probes("density_probes", d.probes)?;
        }
        Ok(())
    }

    fn lanczos(&self) -> LanczosConfig {
        LanczosConfig {
            k: self.top_k,
            max_steps: self.max_steps,
            tol: self.tol,
            seed: self.seed,
        }
    }
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

/// Most probes of a trace or density estimate: each costs Hessian-vector products over the examples, so 10^5 is
/// days of work, and the samples (and a density's Ritz values) are held in memory.
pub const MAX_PROBES: usize = 100_000;

/// A probe count read from a flag or config, bounded before anything is allocated from it.
pub fn check_probes(field: &'static str, probes: usize) -> Result<(), ConfigError> {
    if probes > MAX_PROBES {
        return Err(invalid(
            field,
            format!("at most {MAX_PROBES} probes (each is a pass of Hessian-vector products), got {probes}"),
        ));
    }
    Ok(())
}

/// The finite-difference step must be positive and small: (0, 0.01].
fn check_eps_rel(eps_rel: f64) -> Result<(), ConfigError> {
    if eps_rel.is_finite() && eps_rel > 0.0 && eps_rel <= 1e-2 {
        Ok(())
    } else {
        Err(invalid(
            "eps_rel",
            format!("must be in (0, 0.01], got {eps_rel}"),
        ))
    }
}

/// Flattens f64 tensors into one host vector.
fn to_host(v: &[Tensor<1>]) -> Vec<f64> {
    v.iter()
        .flat_map(|t| {
            t.to_data()
                .try_into_vec_as::<f64>()
                .expect("a float tensor")
        })
        .collect()
}

/// `device` if it computes in f64, else flex. A device may hold f64 tensors and still not compute in f64: wgpu
/// on Vulkan accepts them, but Vulkan's exp and log take no f64 (GLSL.std.450), and its log-softmax came out shifted by
/// -56.6 on lavapipe (the matrix product was right). So a probe decides: an f64 log-softmax and matrix product against their values on the host, to
/// 1e-13. The exact products of such a device's runs are computed on the CPU.
fn f64_device(device: Device) -> Device {
    if device.supports_dtype(DType::F64) && computes_f64(&device) {
        device
    } else {
        host_device(device)
    }
}

/// The flex CPU device; a build without flex (the fuzz targets, which run no network) keeps `device`.
#[cfg(feature = "flex")]
fn host_device(_: Device) -> Device {
    Device::flex()
}

#[cfg(not(feature = "flex"))]
fn host_device(device: Device) -> Device {
    device
}

fn computes_f64(device: &Device) -> bool {
    let x: [f64; 3] = [1.0 / 3.0, -1.25, 2.0 + 1e-9];
    let t = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [1, 3]), (device, DType::F64));
    let lse = x.iter().map(|v| v.exp()).sum::<f64>().ln();
    let expected_lsm: Vec<f64> = x.iter().map(|v| v - lse).collect();
    let lsm = log_softmax(t.clone(), 1).into_data().try_into_vec::<f64>();
    let expected_dot = x.iter().map(|v| v * v).sum::<f64>();
    let dot = t
        .clone()
        .matmul(t.transpose())
        .into_data()
        .try_into_vec::<f64>();
    let near = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(p, q)| (p - q).abs() <= 1e-13 * q.abs().max(1.0))
    };
    matches!((lsm, dot), (Ok(l), Ok(d)) if near(&l, &expected_lsm) && near(&d, &[expected_dot]))
}

/// The Hessian of the loss at one point, as an operator on flat f64 vectors in the order of the network's
/// parameters (each parameter flattened as stored).
pub struct HessianOperator<'a> {
    net: &'a Network,
    w: ParamVec,
    chunks: Vec<Batch>,
    tapes: Vec<Tape>,
    bn: BnStats,
    mode: BnMode,
    eps: f64,
    loss: f64,
    gradient: Vec<f64>,
    weight_norm: f64,
    device: Device,
}

impl<'a> HessianOperator<'a> {
    /// The Hessian of the loss at `state.params` on `examples` cut into chunks of `m`, BatchNorm as `bn` says.
    /// Fails on a chunk size that does not divide the examples, a bad `eps_rel`, or non-finite weights, loss or
    /// gradient.
    pub fn new(
        net: &'a Network,
        state: &TrainState,
        examples: &Batch,
        m: usize,
        bn: BnEval,
        eps_rel: f64,
    ) -> Result<Self, ConfigError> {
        check_eps_rel(eps_rel)?;
        let device = f64_device(examples.x.device());
        let f64s = |v: &[Tensor<1>]| -> Vec<Tensor<1>> {
            v.iter()
                .map(|t| t.clone().to_device(&device).cast(DType::F64))
                .collect()
        };
        let w = f64s(&state.params);
        let host_w = to_host(&w);
        if let Some(i) = host_w.iter().position(|x| !x.is_finite()) {
            return Err(invalid(
                "weights",
                format!("the checkpoint holds a non-finite weight at flat index {i}"),
            ));
        }
        let weight_norm = norm(&host_w);
        let chunks = chunks(examples, m)?
            .into_iter()
            .map(|c| Batch {
                x: c.x.to_device(&device).cast(DType::F64),
                onehot: c.onehot.to_device(&device).cast(DType::F64),
                labels: c.labels,
            })
            .collect();
        let bn_stats = BnStats {
            mean: f64s(&state.bn.mean),
            var: f64s(&state.bn.var),
        };
        let mut op = HessianOperator {
            net,
            w,
            chunks,
            tapes: Vec::new(),
            bn: bn_stats,
            mode: bn.mode(),
            eps: eps_rel * weight_norm.max(1.0),
            loss: 0.0,
            gradient: Vec::new(),
            weight_norm,
            device,
        };
        let mut tapes: Vec<Tape> = (0..op.chunks.len()).map(|_| Tape::recording()).collect();
        let (loss, gradient) = op.gradient_at(&op.w, &mut tapes);
        if !(loss.is_finite() && gradient.iter().all(|g| g.is_finite())) {
            return Err(invalid(
                "weights",
                format!("the loss ({loss}) or its gradient is not finite at these weights"),
            ));
        }
        op.tapes = tapes;
        op.loss = loss;
        op.gradient = gradient;
        Ok(op)
    }

    /// The loss at $w$.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The gradient at $w$, flattened.
    pub fn gradient(&self) -> &[f64] {
        &self.gradient
    }

    /// $\lVert w\rVert$.
    pub fn weight_norm(&self) -> f64 {
        self.weight_norm
    }

    /// The length of the finite-difference step, $\lVert\varepsilon v\rVert$.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The loss and flattened gradient at `point`, each chunk's pass recording to or replaying from its tape.
    fn gradient_at(&self, point: &[Tensor<1>], tapes: &mut [Tape]) -> (f64, Vec<f64>) {
        let k = self.chunks.len() as f64;
        let mut loss = 0.0;
        let mut grad = vec![0.0; self.dim()];
        for (chunk, tape) in self.chunks.iter().zip(tapes) {
            let pass = taped_ce_pass(
                self.net,
                point,
                chunk,
                self.mode,
                &mut self.bn.clone(),
                Some(tape),
            );
            loss += pass.loss.into_scalar::<f64>() / k;
            for (g, x) in grad.iter_mut().zip(to_host(&pass.grads)) {
                *g += x / k;
            }
        }
        (loss, grad)
    }

    /// $w + s v$ as f64 tensors.
    fn moved(&self, s: f64, v: &[f64]) -> ParamVec {
        let mut at = 0;
        self.w
            .iter()
            .map(|p| {
                let n = p.dims()[0];
                let step = TensorData::new(v[at..at + n].to_vec(), [n]);
                at += n;
                p.clone() + Tensor::from_data(step, (&self.device, DType::F64)).mul_scalar(s)
            })
            .collect()
    }
}

impl SymmetricOperator for HessianOperator<'_> {
    fn dim(&self) -> usize {
        self.net.num_params()
    }

    fn apply(&self, v: &[f64]) -> Vec<f64> {
        let length = norm(v);
        if length == 0.0 {
            return vec![0.0; v.len()];
        }
        let h = self.eps / length;
        let replay = || -> Vec<Tape> { self.tapes.iter().map(Tape::replay).collect() };
        let (_, plus) = self.gradient_at(&self.moved(h, v), &mut replay());
        let (_, minus) = self.gradient_at(&self.moved(-h, v), &mut replay());
        plus.iter()
            .zip(&minus)
            .map(|(p, m)| (p - m) / (2.0 * h))
            .collect()
    }
}

/// What the Hessian tools find at one point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curvature {
    /// The `top_k` largest eigenvalues, decreasing, each with its residual.
    pub top_eigenvalues: Vec<Eigenpair>,
    /// The smallest eigenvalue with its residual.
    pub bottom_eigenvalue: Eigenpair,
    /// Whether the top eigenvalues' residuals met `tol` (see [`HessianConfig::tol`]).
    pub converged: bool,
    /// Whether the smallest eigenvalue's residual did too (Lanczos stops on the top ones).
    pub bottom_converged: bool,
    /// Lanczos steps taken.
    pub lanczos_steps: usize,
    /// Hessian-vector products of the eigenvalue search (two f64 gradients each).
    pub products: usize,
    /// Hutchinson's trace estimate, when asked for.
    pub trace: Option<TraceEstimate>,
    /// The spectral density, when asked for.
    pub density: Option<Density>,
    /// The finite-difference step $\lVert\varepsilon v\rVert$.
    pub eps: f64,
    /// The loss at $w$.
    pub loss: f64,
    /// $\lVert\nabla L(w)\rVert$.
    pub grad_norm: f64,
    /// $\lVert w\rVert$.
    pub weight_norm: f64,
}

impl Curvature {
    /// The largest eigenvalue.
    pub fn top(&self) -> f64 {
        self.top_eigenvalues[0].value
    }
}

/// The Hessian's extreme eigenvalues (and trace and density where `cfg` asks) at `state` on `examples` cut into
/// chunks of `cfg.m` (`cfg.examples` and `cfg.split` are not used here).
pub fn curvature(
    net: &Network,
    state: &TrainState,
    examples: &Batch,
    cfg: &HessianConfig,
) -> Result<Curvature, ConfigError> {
    cfg.check()?;
    let lanczos = cfg.lanczos();
    lanczos.check(net.num_params())?;
    let op = HessianOperator::new(net, state, examples, cfg.m, cfg.bn, cfg.eps_rel)?;
    let density = cfg
        .density
        .as_ref()
        .map(|d| slq_density(&op, d))
        .transpose()?;
    let extremes = extreme_eigenpairs(&op, &lanczos)?;
    let trace = cfg
        .trace_probes
        .map(|p| hutchinson_trace(&op, p, cfg.seed.wrapping_add(1)))
        .transpose()?;
    Ok(Curvature {
        top_eigenvalues: extremes.top,
        bottom_eigenvalue: extremes.bottom,
        converged: extremes.converged,
        bottom_converged: extremes.bottom_converged,
        lanczos_steps: extremes.steps,
        products: extremes.products,
        trace,
        density,
        eps: op.eps(),
        loss: op.loss(),
        grad_norm: norm(op.gradient()),
        weight_norm: op.weight_norm(),
    })
}
