//! One optimizer step of the SAM family on a deep net: SPEC section 1.3 ("the deep-net training loop exactly as
//! coded"), with every option of [`SamConfig`](samlab_core::sam::SamConfig).
//!
//! A batch of $B$ examples is split into $A = B/m$ micro-batches $G_a$ of $m$ consecutive examples. For each, with
//! $f_a(w) = \mathrm{CE}_{G_a}(w) + \tfrac{\lambda}{2}\lVert w\rVert^2$ (the L2 term only with
//! [`WeightDecay::L2`], over every parameter including norm scales and biases):
//!
//! - the perturbation: $\delta_0 = 0$ (or $\rho z/\lVert z\rVert$, $z \sim \mathcal N(0, I)$, with `random_init`);
//!   for $j = 1..k$: $h = \nabla f_a(w + \delta_{j-1})$ on the ascent examples (this micro-batch, or the same
//!   positions of the previous batch), $\delta_j = \delta_{j-1} + \eta h / (\lVert h\rVert + 10^{-12})$ (normalized)
//!   or $+\eta h$ (unnormalized, clipped), $\eta = \rho \cdot$ `ascent_step_mult`; normalized and clipped project
//!   $\delta_j$ onto the $\rho$-ball. The random baseline uses $\delta = \sigma z$, $\sigma = \rho/\sqrt{P}$ instead.
//! - the descent gradient $g_a = \nabla f_a(w + \delta)$ on the micro-batch.
//!
//! Then $v \leftarrow \mu v + \frac1A \sum_a g_a$ and $w \leftarrow w - \gamma v$ (PyTorch's SGD: momentum $\mu$,
//! no dampening, no Nesterov), or $w \leftarrow w - \gamma (v + \lambda w)$ with decoupled weight decay. With
//! $\rho_t = 0$ (ERM, or outside the SAM window) each micro-batch gets one plain gradient pass at $w$.
//!
//! Differences from the authors' code, all deliberate: the ascent gradient of an unnormalized/clipped step is the
//! micro-batch mean gradient (the code scales it by $1/A$); random perturbations are drawn per micro-batch (the
//! code draws one per batch); the very first step's "previous batch" is the current one (the code uses zeros).
//!
//! This module holds the trainer, its passes and batches; [`Trainer::step`] itself is written in the `step`
//! module, above the [`crate::oracle`] through which it runs each group's passes. Below it lie the optimizer's
//! settings and update rule ([`crate::optim`]) and the state a step changes ([`crate::state`]), whose types this
//! module re-exports.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use samlab_core::ascent::SamObservation;
use samlab_core::sam::CheckedSam;
use serde::{Deserialize, Serialize};

use crate::models::Network;
use crate::nn::{BnMode, BnStats, Ctx, Grouped, Tape};
use crate::rng::{Purpose, Stream};

pub use crate::optim::{BnPolicy, OptimConfig, WeightDecay};
pub use crate::state::{axpy, dot, scale, sq_norm, to_host, ParamVec, TrainState};

/// The precision of a training step's forward and backward passes.
///
/// Low precision is mixed precision: the master weights, momentum, perturbation, gradients and every norm stay in
/// f32. A pass casts the point's weights and the images to bf16/f16, runs the convolutions and matrix products
/// there, normalizes (BatchNorm, GroupNorm) and takes the softmax cross-entropy in f32, and autodiff casts the
/// gradients back to f32 at the weights. The SAM ascent therefore divides by an f32 norm of f32 gradients: naive
/// AMP's failure, a half-precision `||g||` that overflows past 65504 (f16) or loses its digits, cannot happen.
/// f16 also scales the loss by [`F16_LOSS_SCALE`] before the backward pass (and the gradients back by its
/// inverse in f32), so that small gradients do not flush to zero; bf16 has f32's exponent range and needs none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Passes in bfloat16.
    Bf16,
    /// Passes in IEEE half precision, with a static loss scale.
    F16,
}

/// The loss scale of [`Precision::F16`] passes (a power of two: scaling and unscaling are exact). A gradient that
/// overflows with it makes the step non-finite, and the run ends as diverged.
pub const F16_LOSS_SCALE: f64 = 1024.0;

impl Precision {
    /// The dtype of the passes' activations.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }

    /// Factor applied to the loss before the backward pass.
    fn loss_scale(self) -> f64 {
        match self {
            Precision::F16 => F16_LOSS_SCALE,
            _ => 1.0,
        }
    }

    /// An error unless `device` computes in this precision.
    pub fn check(self, device: &Device) -> Result<(), samlab_core::ConfigError> {
        if device.supports_dtype(DType::from(self.dtype())) {
            return Ok(());
        }
        Err(samlab_core::ConfigError::Invalid {
            field: "precision",
            reason: format!("{self:?} passes are not supported on the device {device:?}"),
        })
    }
}

/// Images, labels and one-hot targets of a batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, c, h, w]`.
    pub x: Tensor<4>,
    /// `[n, classes]`.
    pub onehot: Tensor<2>,
    /// The labels.
    pub labels: Vec<u16>,
}

impl Batch {
    /// A batch from assembled images (`[n, c, h, w]` floats) and labels.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u16>,
        shape: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Self {
        let n = labels.len();
        let [c, h, w] = shape;
        let mut onehot = vec![0.0f32; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * classes + l as usize] = 1.0;
        }
        Batch {
            x: Tensor::from_data(TensorData::new(images, [n, c, h, w]), device),
            onehot: Tensor::from_data(TensorData::new(onehot, [n, classes]), device),
            labels,
        }
    }

    /// The images at `indices` of `set` with their labels from `labels`, without augmentation.
    pub fn unaugmented(
        set: &crate::data::ImageSet,
        labels: &[u16],
        indices: &[usize],
        device: &Device,
    ) -> Self {
        let mut unused = Stream::new(0, Purpose::Augment, u64::MAX, 0);
        let (images, ys) = crate::data::assemble(
            set,
            labels,
            indices,
            crate::data::Augment::None,
            &mut unused,
        );
        Batch::new(images, ys, set.shape, set.classes, device)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples at `rows` (indices into this batch).
    pub fn select(&self, rows: &[usize]) -> Batch {
        let device = self.x.device();
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
        Batch {
            x: self.x.clone().select(0, idx.clone()),
            onehot: self.onehot.clone().select(0, idx),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
        }
    }

    /// Examples `start..start + len`.
    pub fn slice(&self, start: usize, len: usize) -> Batch {
        if start == 0 && len == self.len() {
            return self.clone();
        }
        Batch {
            x: self.x.clone().narrow(0, start, len),
            onehot: self.onehot.clone().narrow(0, start, len),
            labels: self.labels[start..start + len].to_vec(),
        }
    }
}

/// Mean cross-entropy of `logits` against one-hot targets.
pub fn cross_entropy(logits: Tensor<2>, onehot: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0];
    mean_cross_entropy(logits, onehot, n)
}

/// The cross-entropy summed over the rows of `logits`, divided by `per` (the rows for the mean; the rows of one
/// group for the sum of the groups' means).
fn mean_cross_entropy(logits: Tensor<2>, onehot: Tensor<2>, per: usize) -> Tensor<1> {
    // A multiplication, not `div_scalar`: burn-autodiff 0.22.1 differentiates `div_scalar` with the divisor
    // rounded to f32, which put a 3e-8 relative error into f64 gradients (the Hessian's exact products).
    (log_softmax(logits, 1) * onehot)
        .sum()
        .neg()
        .mul_scalar(1.0 / per as f64)
}

/// What a step reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// Sum over the batch of the per-example cross-entropy at the point of the descent gradient.
    pub loss_sum: f64,
    /// Whether each example was classified correctly at that point.
    pub correct: Vec<bool>,
    /// False if a loss or the gradient was NaN or infinite: then nothing was updated.
    pub finite: bool,
    /// Gradients computed (forward and backward passes), as the SAM variant promises: 1 for ERM and MSAM, 2 for
    /// SAM, about 1 + 1/k for LookSAM.
    pub gradient_evals: u64,
    /// What SAM did, the mean over the step's groups ([`Trainer::observed_step`] with a radius; `None`
    /// otherwise).
    pub sam: Option<SamObservation>,
}

/// Standard normal draws from `stream`, shaped like the parameters of `net` (parameter by parameter, in order).
pub fn normal_like(net: &Network, stream: &mut Stream, device: &Device) -> ParamVec {
    net.params()
        .iter()
        .map(|spec| {
            let n = spec.numel();
            Tensor::from_data(TensorData::new(stream.normals_f32(n), [n]), device)
        })
        .collect()
}

/// What one forward and backward pass yields.
pub struct Pass {
    /// Gradient with respect to every parameter.
    pub grads: ParamVec,
    /// The loss (a one-element tensor, detached).
    pub loss: Tensor<1>,
    /// The logits (detached).
    pub logits: Tensor<2>,
}

/// Forward and backward at `point` on `batch`: the gradient of the mean cross-entropy, the loss and the logits.
/// BatchNorm behaves as `mode` says (running statistics in `stats` are read or updated accordingly).
pub fn ce_pass(
    net: &Network,
    point: &[Tensor<1>],
    batch: &Batch,
    mode: BnMode,
    stats: &mut BnStats,
) -> Pass {
    taped_ce_pass(net, point, batch, mode, stats, None)
}

/// [`ce_pass`] recording the pass's ReLU and max-pool decisions on `tape`, or replaying them from it.
pub fn taped_ce_pass(
    net: &Network,
    point: &[Tensor<1>],
    batch: &Batch,
    mode: BnMode,
    stats: &mut BnStats,
    tape: Option<&mut Tape>,
) -> Pass {
    precise_pass(net, point, batch, mode, stats, tape, None, Precision::F32)
}

/// [`taped_ce_pass`] in `precision` (see [`Precision`]); the gradients, loss and logits are in the point's dtype.
///
/// A pass over groups (`grouped`, the point's parameters stacked per group) gives the gradient of the sum of the
/// groups' mean losses, i.e. each group's mean-loss gradient at its own point, and that sum as the loss.
#[allow(clippy::too_many_arguments)]
fn precise_pass(
    net: &Network,
    point: &[Tensor<1>],
    batch: &Batch,
    mode: BnMode,
    stats: &mut BnStats,
    tape: Option<&mut Tape>,
    grouped: Option<&mut Grouped>,
    precision: Precision,
) -> Pass {
    let leaves: ParamVec = point
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let master = point.first().map_or(DType::F32, Tensor::dtype);
    let groups = grouped.as_ref().map_or(1, |g| g.count);
    let mut ctx = Ctx {
        params: &leaves,
        mode,
        stats,
        tape,
        grouped,
    };
    let compute = match precision {
        Precision::F32 => master,
        low => low.dtype().into(),
    };
    let x = batch.x.clone().cast(compute);
    let logits = net.forward(&mut ctx, x).cast(master);
    let loss = mean_cross_entropy(logits.clone(), batch.onehot.clone(), batch.len() / groups);
    let scale = precision.loss_scale();
    let grads = if scale == 1.0 {
        loss.backward()
    } else {
        loss.clone().mul_scalar(scale).backward()
    };
    let grads = leaves
        .iter()
        .zip(point)
        .map(|(leaf, p)| {
            let g = leaf.grad(&grads).unwrap_or_else(|| p.zeros_like());
            if scale == 1.0 {
                g
            } else {
                g.mul_scalar(1.0 / scale)
            }
        })
        .collect();
    Pass {
        grads,
        loss: loss.without_autodiff(),
        logits: logits.without_autodiff(),
    }
}

/// Mean cross-entropy and number of misclassified examples of `batch` at `params` (forward only).
pub fn batch_loss(
    net: &Network,
    params: &[Tensor<1>],
    batch: &Batch,
    mode: BnMode,
    stats: &mut BnStats,
) -> (f64, usize) {
    let mut ctx = Ctx {
        params,
        mode,
        stats,
        tape: None,
        grouped: None,
    };
    let logits = net.forward(&mut ctx, batch.x.clone());
    let loss = cross_entropy(logits.clone(), batch.onehot.clone()).into_scalar::<f32>() as f64;
    let classes = logits.dims()[1];
    let values = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 logits");
    let wrong = values
        .chunks(classes)
        .zip(&batch.labels)
        .filter(|(row, &y)| argmax(row) != y as usize)
        .count();
    (loss, wrong)
}

/// The trainer: a network, a checked SAM configuration and the optimizer, shared by every step of a run.
pub struct Trainer<'a> {
    /// The network.
    pub net: &'a Network,
    /// SAM settings, checked against the batch size.
    pub sam: CheckedSam,
    /// Optimizer settings.
    pub optim: OptimConfig,
    /// Seed of the run (keys the perturbation noise).
    pub seed: u64,
    /// Device of the tensors.
    pub device: Device,
    /// Precision of the forward and backward passes.
    pub precision: Precision,
}

impl Trainer<'_> {
    /// [`ce_pass`] plus the gradient of the L2 term when weight decay is [`WeightDecay::L2`].
    pub(crate) fn pass(
        &self,
        point: &[Tensor<1>],
        batch: &Batch,
        mode: BnMode,
        stats: &mut BnStats,
    ) -> Pass {
        self.pass_in(point, batch, mode, stats, None)
    }

    /// [`Trainer::pass`] over the groups of `grouped` at once (`point` stacked per group, see [`Grouped`]).
    pub(crate) fn grouped_pass(
        &self,
        point: &[Tensor<1>],
        batch: &Batch,
        mode: BnMode,
        stats: &mut BnStats,
        grouped: &mut Grouped,
    ) -> Pass {
        self.pass_in(point, batch, mode, stats, Some(grouped))
    }

    fn pass_in(
        &self,
        point: &[Tensor<1>],
        batch: &Batch,
        mode: BnMode,
        stats: &mut BnStats,
        grouped: Option<&mut Grouped>,
    ) -> Pass {
        let precision = self.precision;
        let mut pass = precise_pass(
            self.net, point, batch, mode, stats, None, grouped, precision,
        );
        if let WeightDecay::L2 { lambda } = self.optim.weight_decay {
            pass.grads = pass
                .grads
                .into_iter()
                .zip(point)
                .map(|(g, p)| g + p.clone().mul_scalar(lambda))
                .collect();
        }
        pass
    }

    /// The BatchNorm mode of a pass of a step whose groups are computed together: `Some(at_w)` for an ascent pass,
    /// `at_w` when it is at `w` over the whole group (the one that updates the running statistics under
    /// [`BnPolicy::CleanPassOnly`]), `None` for the descent.
    pub(crate) fn step_mode(&self, ascent_at_w: Option<bool>) -> BnMode {
        match (self.optim.bn_policy, ascent_at_w) {
            (BnPolicy::Frozen, _) => BnMode::Running,
            (BnPolicy::BothPasses, _) => BnMode::Batch { update: true },
            (BnPolicy::CleanPassOnly, at_w) => BnMode::Batch {
                update: at_w == Some(true),
            },
        }
    }

    /// A forward pass at `w` whose only effect is to update the running statistics (BatchNorm, clean pass only).
    pub(crate) fn update_stats_at(&self, w: &[Tensor<1>], batch: &Batch, stats: &mut BnStats) {
        self.forward_in(w, batch, stats, None);
    }

    /// [`Trainer::update_stats_at`] for the groups of `grouped` at once, at their stacked weights `w`: the batch
    /// statistics are recorded in `grouped`.
    pub(crate) fn grouped_forward(
        &self,
        w: &[Tensor<1>],
        batch: &Batch,
        stats: &mut BnStats,
        grouped: &mut Grouped,
    ) {
        self.forward_in(w, batch, stats, Some(grouped));
    }

    fn forward_in(
        &self,
        w: &[Tensor<1>],
        batch: &Batch,
        stats: &mut BnStats,
        grouped: Option<&mut Grouped>,
    ) {
        let mut ctx = Ctx {
            params: w,
            mode: BnMode::Batch { update: true },
            stats,
            tape: None,
            grouped,
        };
        let _ = self.net.forward(&mut ctx, batch.x.clone());
    }

    /// The update of a step whose descent direction (the mean over its groups) is `grad`, from the summed loss and
    /// the logits of its descent passes: momentum and weights, unless a loss, a logit or the gradient is NaN or
    /// infinite (then `state` is left as it is and `finite` is false). The caller adds the gradient count.
    pub(crate) fn descend(
        &self,
        state: &mut TrainState,
        grad: ParamVec,
        loss_sum: f64,
        logits: Tensor<2>,
        labels: &[u16],
        lr: f64,
    ) -> StepOutput {
        let classes = logits.dims()[1];
        let values = logits
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 logits");
        // A gradient can overflow where the loss does not (f16 passes above all): that step is not taken either.
        let finite = loss_sum.is_finite()
            && values.iter().all(|v| v.is_finite())
            && sq_norm(&grad).is_finite();
        if !finite {
            return StepOutput {
                loss_sum,
                correct: vec![false; labels.len()],
                finite,
                gradient_evals: 0,
                sam: None,
            };
        }
        let correct = values
            .chunks(classes)
            .zip(labels)
            .map(|(row, &y)| argmax(row) == y as usize)
            .collect();
        crate::optim::update(&self.optim, state, grad, lr);
        StepOutput {
            loss_sum,
            correct,
            finite,
            gradient_evals: 0,
            sam: None,
        }
    }
}

/// Index of the largest value (the first one on ties, like PyTorch's argmax on CPU).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Mean cross-entropy and error (fraction misclassified) of the model on `labels` (one per image of `set`), in
/// evaluation mode (BatchNorm with running statistics), in chunks of `batch_size`, without augmentation.
pub fn evaluate(
    net: &Network,
    params: &[Tensor<1>],
    bn: &BnStats,
    set: &crate::data::ImageSet,
    labels: &[u16],
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    let n = labels.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut stats = bn.clone();
    let mut loss_sum = 0.0;
    let mut wrong = 0usize;
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = Batch::unaugmented(set, labels, chunk, device);
        let (loss, w) = batch_loss(net, params, &batch, BnMode::Running, &mut stats);
        loss_sum += loss * chunk.len() as f64;
        wrong += w;
    }
    (loss_sum / n as f64, wrong as f64 / n as f64)
}
