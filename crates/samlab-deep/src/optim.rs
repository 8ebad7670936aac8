//! The base optimizers that take a step's descent direction $g$ (the SAM gradient, or the clean one in ERM):
//!
//! - SGD with momentum (PyTorch's `SGD`): $v \leftarrow \mu v + g$, $w \leftarrow w - \gamma v$, or with decoupled
//!   weight decay $w \leftarrow w - \gamma (v + \lambda w)$;
//! - AdamW (Loshchilov & Hutter, ICLR'19; PyTorch's `AdamW`): $w \leftarrow (1 - \gamma\lambda) w$,
//!   $m \leftarrow \beta_1 m + (1 - \beta_1) g$, $v \leftarrow \beta_2 v + (1 - \beta_2) g^2$, and after $t$ steps
//!   $w \leftarrow w - \frac{\gamma}{1 - \beta_1^t}\, m \,/\, (\sqrt{v / (1 - \beta_2^t)} + \epsilon)$.
//!
//! AdamW's first moments are the momentum buffers ([`TrainState::velocity`]), its second moments and step count
//! [`TrainState::adam`]; both are saved in checkpoints, so a resumed run takes the same steps.
//!
//! The optimizer's settings ([`OptimConfig`]: momentum, [`WeightDecay`], the [`BnPolicy`] of the SAM passes and
//! the [`Optimizer`]) live here too, below the trainer that runs them; the state they update is in
//! [`crate::state`].

use burn::tensor::Tensor;
use samlab_core::sam::{SamConfig, Variant};
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::state::{axpy, ParamVec, TrainState};

pub use crate::state::AdamState;

/// The base optimizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with momentum (`momentum`).
    #[default]
    Sgd,
    /// AdamW (decoupled weight decay: [`WeightDecay::Decoupled`]).
    Adamw {
        /// $\beta_1$ (PyTorch: 0.9).
        beta1: f64,
        /// $\beta_2$ (PyTorch: 0.999).
        beta2: f64,
        /// $\epsilon$ (PyTorch: 1e-8).
        eps: f64,
    },
}

impl Optimizer {
    /// AdamW with PyTorch's defaults.
    pub const ADAMW: Optimizer = Optimizer::Adamw {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };

    /// Whether it is SGD (the default, left out of configs).
    pub fn is_sgd(&self) -> bool {
        *self == Optimizer::Sgd
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adamw { .. } => "adamw",
        }
    }
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Momentum $\mu$ (0.9 in the paper).
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: WeightDecay,
    /// BatchNorm in the SAM passes.
    pub bn_policy: BnPolicy,
    /// The base optimizer (SGD unless given).
    #[serde(default, skip_serializing_if = "Optimizer::is_sgd")]
    pub optimizer: Optimizer,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            momentum: 0.9,
            weight_decay: WeightDecay::None,
            bn_policy: BnPolicy::BothPasses,
            optimizer: Optimizer::Sgd,
        }
    }
}

/// Where weight decay acts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WeightDecay {
    /// None.
    None,
    /// $\tfrac{\lambda}{2}\lVert w\rVert^2$ inside the objective, so also in the ascent (the paper's setting).
    L2 {
        /// $\lambda$ (the paper: 5e-4).
        lambda: f64,
    },
    /// Decoupled: $w \leftarrow w - \gamma(v + \lambda w)$, outside the momentum and the ascent.
    Decoupled {
        /// $\lambda$.
        lambda: f64,
    },
}

/// What BatchNorm does in the passes of a SAM step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BnPolicy {
    /// The authors' code: every pass (ascent passes and the descent pass) normalizes with its micro-batch's
    /// statistics and folds them into the running statistics, i.e. they are updated `k + 1` times per
    /// micro-batch of a SAM step.
    BothPasses,
    /// Every pass normalizes with batch statistics, but the running statistics are updated once per
    /// micro-batch, from the current micro-batch at the unperturbed weights $w$, exactly as in an ERM step
    /// (by the first ascent pass when it is that pass, otherwise by an extra forward-only pass).
    CleanPassOnly,
    /// The code's `--freeze_bn_stats`: every pass, ERM steps included, normalizes with the running statistics,
    /// which never change.
    Frozen,
}

/// Fails unless `optim`'s optimizer settings can train with `sam`: AdamW's betas in [0, 1), a finite positive
/// epsilon, weight decay none, decoupled or L2 at 0 (AdamW with an L2 term inside the loss is Adam, not AdamW),
/// and no MSAM (which perturbs along SGD's momentum buffer; AdamW's first moment is another vector).
pub fn check(optim: &OptimConfig, sam: &SamConfig) -> Result<(), ConfigError> {
    let bad = |field, reason: String| ConfigError::Invalid { field, reason };
    if let Optimizer::Adamw { beta1, beta2, eps } = optim.optimizer {
        for (field, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(bad(field, format!("must be in [0, 1), got {b}")));
            }
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(bad("eps", format!("must be finite and > 0, got {eps}")));
        }
        if sam.variant == Variant::Msam {
            return Err(bad(
                "optimizer",
                "MSAM perturbs along SGD's momentum buffer; it does not combine with adamw".into(),
            ));
        }
        if let WeightDecay::L2 { lambda } = optim.weight_decay {
            if lambda != 0.0 {
                return Err(bad(
                    "weight_decay",
                    format!("adamw decays the weights outside the gradient: use decoupled weight decay (--decoupled-wd), not l2 (lambda {lambda}; --l2 0 turns it off)"),
                ));
            }
        }
    }
    Ok(())
}

/// One update of `state` along `grad` at learning rate `lr`.
pub fn update(optim: &OptimConfig, state: &mut TrainState, grad: ParamVec, lr: f64) {
    let w = &state.params;
    match optim.optimizer {
        Optimizer::Sgd => {
            let mu = optim.momentum;
            let velocity: ParamVec = state
                .velocity
                .iter()
                .zip(&grad)
                .map(|(v, g)| v.clone().mul_scalar(mu) + g.clone())
                .collect();
            state.params = match optim.weight_decay {
                WeightDecay::Decoupled { lambda } => w
                    .iter()
                    .zip(&velocity)
                    .map(|(p, v)| {
                        p.clone() - (v.clone() + p.clone().mul_scalar(lambda)).mul_scalar(lr)
                    })
                    .collect(),
                _ => axpy(w, -lr, &velocity),
            };
            state.velocity = velocity;
        }
        Optimizer::Adamw { beta1, beta2, eps } => {
            let lambda = match optim.weight_decay {
                WeightDecay::Decoupled { lambda } => lambda,
                _ => 0.0,
            };
            let adam = state.adam.get_or_insert_with(|| AdamState {
                second_moment: w.iter().map(Tensor::zeros_like).collect(),
                steps: 0,
            });
            adam.steps += 1;
            let t = adam.steps as f64;
            let step = lr / (1.0 - beta1.powf(t));
            let root = (1.0 - beta2.powf(t)).sqrt();
            let mut params = Vec::with_capacity(w.len());
            for (i, g) in grad.into_iter().enumerate() {
                let m =
                    state.velocity[i].clone().mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1);
                let v = adam.second_moment[i].clone().mul_scalar(beta2)
                    + g.clone().mul(g).mul_scalar(1.0 - beta2);
                let denom = v.clone().sqrt().div_scalar(root).add_scalar(eps);
                let decayed = w[i].clone().mul_scalar(1.0 - lr * lambda);
                params.push(decayed - m.clone().div(denom).mul_scalar(step));
                state.velocity[i] = m;
                adam.second_moment[i] = v;
            }
            state.params = params;
        }
    }
}
