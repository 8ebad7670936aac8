//! The top eigenvalue of the Hessian of the training loss, by power iteration on Hessian-vector products.
//!
//! burn 0.22 has no double backward, so $Hv$ is a central difference of gradients,
//! $Hv \approx (g(w + \varepsilon v) - g(w - \varepsilon v)) / 2\varepsilon$ with $\lVert v\rVert = 1$ and
//! $\varepsilon$ = `eps_rel` $\cdot \max(\lVert w\rVert, 1)$. The truncation error is $O(\varepsilon^2)$ (third
//! derivatives; ReLU kinks crossed within $\pm\varepsilon$ add a little more); in f32 the rounding error of the
//! perturbed weights is about $u / $ `eps_rel` relative per coordinate ($u \approx 6\cdot10^{-8}$, so $6\cdot10^{-4}$
//! at the default $10^{-4}$: the step is $10^{-4}$ of the weights' size, which keeps $w \pm \varepsilon v$
//! resolvable in f32 for every coordinate), and the cancellation in the gradient difference adds about
//! $u_g \lVert g\rVert / (\varepsilon\lambda)$, with $u_g$ the gradient's own f32 error.
//!
//! The loss is the mean over chunks of `m` examples of the chunk's mean cross-entropy (BatchNorm as
//! [`BnEval`] says). Power iteration from a seeded Gaussian start: $\lambda_k = v_k^\top H v_k$,
//! $v_{k+1} = Hv_k / \lVert Hv_k\rVert$, until $|\lambda_k - \lambda_{k-1}| \le$ `tol` $|\lambda_k|$, or
//! $|\lambda_k - \lambda_{k-2}| \le$ `tol` $|\lambda_k|$: finite differences across ReLU and max-pool kinks make
//! the product slightly nonlinear in $v$, and the iteration can settle into a 2-cycle instead of a fixed point
//! (seen on the CNN: estimates alternating 49.90 / 50.05). The estimate is the mean of the last two values and
//! `spread` their difference. Power iteration finds the eigenvalue of largest magnitude; when that one is
//! negative, a second power iteration on $H - \mu I$ ($\mu$ the negative estimate, so every eigenvalue of the
//! shifted operator is $\ge 0$) finds the top one.

use std::time::Instant;

use burn::tensor::Tensor;
use samlab_core::relu_net::metrics::FeatureStats;
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::features::{feature_sparsity, DEEP_CORR_THRESHOLD};
use super::{chunks, BnEval, LoadedRun, RunInfo, Split};
use crate::models::Network;
use crate::nn::BnStats;
use crate::rng::{Purpose, Stream};
use crate::run::RunError;
use crate::trainer::{
    axpy, ce_pass, dot, normal_like, scale, sq_norm, Batch, ParamVec, TrainState,
};

/// The settings of a Hessian evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HessianConfig {
    /// How many examples (the first ones of `split`, without augmentation; used by [`run_hessian`]).
    pub examples: usize,
    /// Chunk size; it must divide `examples`.
    pub m: usize,
    /// Which examples (used by [`run_hessian`]).
    pub split: Split,
    /// BatchNorm in every pass.
    pub bn: BnEval,
    /// Most power iterations.
    pub max_iters: usize,
    /// Relative change of the estimate that stops the iteration.
    pub tol: f64,
    /// Finite-difference step relative to $\max(\lVert w\rVert, 1)$.
    pub eps_rel: f64,
    /// Seed of the start vector.
    pub seed: u64,
}

impl Default for HessianConfig {
    fn default() -> Self {
        HessianConfig {
            examples: 1024,
            m: 128,
            split: Split::Train,
            bn: BnEval::Batch,
            max_iters: 100,
            tol: 1e-3,
            eps_rel: 1e-4,
            seed: 0,
        }
    }
}

impl HessianConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.max_iters < 2 {
            return bad(
                "max_iters",
                format!("must be at least 2, got {}", self.max_iters),
            );
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return bad("tol", format!("must be > 0, got {}", self.tol));
        }
        if !(self.eps_rel.is_finite() && self.eps_rel > 0.0) {
            return bad("eps_rel", format!("must be > 0, got {}", self.eps_rel));
        }
        Ok(())
    }
}

/// The result of [`top_eigenvalue`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopEigenvalue {
    /// The mean of the last two estimates $v_k^\top H v_k$.
    pub eigenvalue: f64,
    /// The difference of the last two estimates.
    pub spread: f64,
    /// 0, or the (negative) dominant eigenvalue found first, when a second power iteration on $H - $ `shift` $I$
    /// was needed to reach the top eigenvalue.
    pub shift: f64,
    /// Power iterations done (one Hessian-vector product, i.e. two gradients, each).
    pub iterations: usize,
    /// Whether the relative change over one or two iterations fell below `tol`.
    pub converged: bool,
    /// The estimate after every iteration.
    pub trace: Vec<f64>,
    /// The finite-difference step $\varepsilon$ used.
    pub eps: f64,
    /// The loss at $w$.
    pub loss: f64,
    /// $\lVert\nabla L(w)\rVert$.
    pub grad_norm: f64,
    /// $\lVert w\rVert$.
    pub weight_norm: f64,
}

/// The loss and its gradient at `w`: means over `chunks` of each chunk's mean cross-entropy.
pub fn gradient(
    net: &Network,
    w: &[Tensor<1>],
    chunks: &[Batch],
    bn: &BnStats,
    mode: BnEval,
) -> (f64, ParamVec) {
    let k = chunks.len() as f64;
    let mut grads: Option<ParamVec> = None;
    let mut losses = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let pass = ce_pass(net, w, chunk, mode.mode(), &mut bn.clone());
        losses.push(pass.loss);
        grads = Some(match grads {
            None => scale(&pass.grads, 1.0 / k),
            Some(acc) => axpy(&acc, 1.0 / k, &pass.grads),
        });
    }
    let loss = Tensor::cat(losses, 0).sum().into_scalar::<f32>() as f64 / k;
    (loss, grads.expect("at least one chunk"))
}

/// $Hv \approx (g(w + \varepsilon v) - g(w - \varepsilon v)) / 2\varepsilon$ for the loss of [`gradient`].
pub fn hessian_vector_product(
    net: &Network,
    w: &[Tensor<1>],
    v: &[Tensor<1>],
    eps: f64,
    chunks: &[Batch],
    bn: &BnStats,
    mode: BnEval,
) -> ParamVec {
    let (_, plus) = gradient(net, &axpy(w, eps, v), chunks, bn, mode);
    let (_, minus) = gradient(net, &axpy(w, -eps, v), chunks, bn, mode);
    scale(&axpy(&plus, -1.0, &minus), 0.5 / eps)
}

/// The mean of the last two values of a power-iteration trace and their difference.
fn estimate(trace: &[f64]) -> (f64, f64) {
    let last_two = &trace[trace.len().saturating_sub(2)..];
    (
        last_two.iter().sum::<f64>() / last_two.len() as f64,
        (last_two[0] - last_two[last_two.len() - 1]).abs(),
    )
}

/// Power iteration of the symmetric operator `apply` from the unit vector `v0`: the Rayleigh quotients
/// $v_k^\top A v_k$ and whether they settled (see the module doc).
fn power_iteration(
    v0: &[Tensor<1>],
    apply: &dyn Fn(&ParamVec) -> ParamVec,
    cfg: &HessianConfig,
) -> (Vec<f64>, bool) {
    let mut v = v0.to_vec();
    let mut trace: Vec<f64> = Vec::new();
    let mut converged = false;
    while trace.len() < cfg.max_iters {
        let av = apply(&v);
        let lambda = dot(&v, &av);
        let settled = |back: usize| {
            trace.len() >= back
                && (lambda - trace[trace.len() - back]).abs() <= cfg.tol * lambda.abs()
        };
        converged = settled(1) || settled(2);
        trace.push(lambda);
        if converged {
            break;
        }
        let norm = sq_norm(&av).sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            break;
        }
        v = scale(&av, 1.0 / norm);
    }
    (trace, converged)
}

/// The trace of the power iteration that reaches the top eigenvalue of `apply`, whether it settled, and the shift
/// used (0 unless the dominant eigenvalue is negative: then the iteration is repeated on `apply - shift I` and its
/// estimates are shifted back; the trace holds both runs).
fn top_of(
    v0: &[Tensor<1>],
    apply: &dyn Fn(&ParamVec) -> ParamVec,
    cfg: &HessianConfig,
) -> (Vec<f64>, bool, f64) {
    let (mut trace, converged) = power_iteration(v0, apply, cfg);
    let dominant = estimate(&trace).0;
    if dominant >= 0.0 {
        return (trace, converged, 0.0);
    }
    let shifted = |v: &ParamVec| axpy(&apply(v), -dominant, v);
    let (t, converged) = power_iteration(v0, &shifted, cfg);
    trace.extend(t.iter().map(|x| x + dominant));
    (trace, converged, dominant)
}

/// The Hessian's top eigenvalue at `state` on `examples` cut into chunks of `cfg.m` (`cfg.examples` and
/// `cfg.split` are not used here).
pub fn top_eigenvalue(
    net: &Network,
    state: &TrainState,
    examples: &Batch,
    cfg: &HessianConfig,
) -> Result<TopEigenvalue, ConfigError> {
    cfg.check()?;
    let chunks = chunks(examples, cfg.m)?;
    let w = &state.params;
    let (loss, grad) = gradient(net, w, &chunks, &state.bn, cfg.bn);
    let weight_norm = sq_norm(w).sqrt();
    let eps = cfg.eps_rel * weight_norm.max(1.0);
    let device = examples.x.device();
    let start = normal_like(
        net,
        &mut Stream::new(cfg.seed, Purpose::Analysis, 1, 0),
        &device,
    );
    let v0 = scale(&start, 1.0 / sq_norm(&start).sqrt());
    let hvp = |v: &ParamVec| hessian_vector_product(net, w, v, eps, &chunks, &state.bn, cfg.bn);
    let (trace, converged, shift) = top_of(&v0, &hvp, cfg);
    let (eigenvalue, spread) = estimate(&trace);
    Ok(TopEigenvalue {
        eigenvalue,
        spread,
        shift,
        iterations: trace.len(),
        converged,
        trace,
        eps,
        loss,
        grad_norm: sq_norm(&grad).sqrt(),
        weight_norm,
    })
}

/// What `samlab hessian` writes to `hessian.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HessianReport {
    /// The run and checkpoint.
    pub run: RunInfo,
    /// The settings.
    pub config: HessianConfig,
    /// The top Hessian eigenvalue.
    pub top_eigenvalue: TopEigenvalue,
    /// Feature sparsity of the penultimate features on the same examples, in evaluation mode, correlation
    /// threshold [`DEEP_CORR_THRESHOLD`].
    pub feature_sparsity: FeatureStats,
    /// Number of penultimate features (neurons).
    pub feature_neurons: usize,
    /// Wall-clock seconds (data and checkpoint loading excluded).
    pub seconds: f64,
}

/// [`top_eigenvalue`] and [`feature_sparsity`] of a loaded run on the first `cfg.examples` examples of `cfg.split`.
pub fn run_hessian(run: &LoadedRun, cfg: &HessianConfig) -> Result<HessianReport, RunError> {
    let examples = run.examples(cfg.split, cfg.examples)?;
    let started = Instant::now();
    let top = top_eigenvalue(&run.net, &run.state, &examples, cfg)?;
    let (features, neurons) = feature_sparsity(
        &run.net,
        &run.state.params,
        &run.state.bn,
        &examples,
        DEEP_CORR_THRESHOLD,
    );
    Ok(HessianReport {
        run: run.info.clone(),
        config: cfg.clone(),
        top_eigenvalue: top,
        feature_sparsity: features,
        feature_neurons: neurons,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    /// A diagonal operator on one tensor.
    fn diag(d: &'static [f32]) -> impl Fn(&ParamVec) -> ParamVec {
        move |v: &ParamVec| {
            let t = Tensor::<1>::from_data(TensorData::new(d.to_vec(), [d.len()]), &v[0].device());
            vec![v[0].clone() * t]
        }
    }

    #[test]
    fn a_negative_dominant_eigenvalue_is_shifted_away() {
        let device = Device::default();
        let v0 = vec![Tensor::<1>::from_data(
            TensorData::new(vec![0.5f32; 4], [4]),
            &device,
        )];
        let cfg = HessianConfig {
            max_iters: 500,
            tol: 1e-7,
            ..HessianConfig::default()
        };
        let (trace, converged, shift) = top_of(&v0, &diag(&[-5.0, 1.0, 2.0, 0.5]), &cfg);
        assert!(converged);
        assert!((shift + 5.0).abs() < 1e-3, "{shift}");
        assert!((estimate(&trace).0 - 2.0).abs() < 1e-3, "{trace:?}");
        // A positive dominant eigenvalue needs no shift.
        let (trace, _, shift) = top_of(&v0, &diag(&[-1.0, 3.0, 2.0, 0.5]), &cfg);
        assert_eq!(shift, 0.0);
        assert!((estimate(&trace).0 - 3.0).abs() < 1e-3, "{trace:?}");
    }
}
