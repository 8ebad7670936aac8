//! Functional layers over an explicit parameter list.
//!
//! A network is a tree of layer descriptions holding *indices* into a flat list of parameters
//! (`Vec<Tensor<1>>`, one flattened tensor per weight, in the order of [`Builder::param`]). The SAM trainer works
//! on that list directly: a perturbed point $w + \delta$ is just another list, gradients come back as a list of
//! the same shapes, and nothing is shared between two points except what the trainer passes in. BatchNorm running
//! statistics live outside the parameters, in [`BnStats`], and a forward pass only touches them when its
//! [`BnMode`] says so: this is what makes the ascent-pass BatchNorm policy explicit.
//!
//! A pass can also evaluate `G` copies of the network at once ([`Grouped`]): m-SAM's groups, each at its own
//! perturbed point, as one batched pass instead of `G` small ones (`G` batched matrix products, grouped
//! convolutions, BatchNorm statistics per group).

use std::rc::Rc;

use burn::tensor::activation::relu;
use burn::tensor::module::{
    batch_norm, batch_norm_train, conv2d, max_pool2d, max_pool2d_with_indices,
};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::lowrank::LowRank;
use crate::rng::{Purpose, Stream};

/// BatchNorm momentum of the running statistics (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;
/// Epsilon of BatchNorm and GroupNorm (PyTorch's default).
pub const NORM_EPS: f64 = 1e-5;

/// How a parameter is initialized (SPEC section 1.3, the authors' `init_weights_he`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Conv weights: $\mathcal N(0, 2/\text{fan\_out})$, fan_out = out_channels * k * k (kaiming_normal, fan_out, relu).
    HeNormalFanOut,
    /// $U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})$: PyTorch's default for Linear weights and conv biases.
    UniformFanIn(usize),
    /// All zeros (Linear and norm biases).
    Zeros,
    /// All ones (norm scales).
    Ones,
    /// $\mathcal N(0, 0.02^2)$: the transformers' class token and position embeddings (timm's init).
    SmallNormal,
}

/// One parameter of a network: its name, shape and initialization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Dotted name, e.g. `layer2.0.conv1.weight`.
    pub name: String,
    /// Shape (conv weights `[out, in, k, k]`, linear weights `[in, out]`).
    pub shape: Vec<usize>,
    /// Initialization.
    pub init: Init,
}

impl ParamSpec {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Collects the parameters and BatchNorm slots of a network while its layers are created.
#[derive(Debug, Default)]
pub struct Builder {
    params: Vec<ParamSpec>,
    bn_slots: Vec<BnSlot>,
    norm_params: Vec<usize>,
}

/// The running statistics of one BatchNorm layer: its name (that of its `weight` and `bias` without the suffix,
/// e.g. `layer1.0.bn1`) and its number of channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BnSlot {
    /// Dotted layer name.
    pub name: String,
    /// Channels.
    pub channels: usize,
}

impl Builder {
    /// Registers a parameter and returns its index.
    pub fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        self.params.push(ParamSpec { name, shape, init });
        self.params.len() - 1
    }

    /// Registers the running statistics of the BatchNorm layer `name` over `channels` and returns its slot.
    pub fn bn_slot(&mut self, name: &str, channels: usize) -> usize {
        self.bn_slots.push(BnSlot {
            name: name.to_string(),
            channels,
        });
        self.bn_slots.len() - 1
    }

    /// The parameters, BatchNorm slots and normalization layers' parameters (indices) registered so far.
    pub fn finish(self) -> (Vec<ParamSpec>, Vec<BnSlot>, Vec<usize>) {
        (self.params, self.bn_slots, self.norm_params)
    }
}

/// Draws the initial parameters of `specs` from the run's `Init` stream (backend-independent, seeded).
pub fn init_params(specs: &[ParamSpec], seed: u64, device: &Device) -> Vec<Tensor<1>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let n = spec.numel();
            let mut s = Stream::new(seed, Purpose::Init, i as u64, 0);
            let values: Vec<f32> = match spec.init {
                Init::HeNormalFanOut => {
                    let fan_out: usize = spec.shape[0] * spec.shape[2..].iter().product::<usize>();
                    let std = (2.0 / fan_out as f64).sqrt();
                    (0..n).map(|_| (std * s.normal()) as f32).collect()
                }
                Init::UniformFanIn(fan_in) => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    (0..n)
                        .map(|_| (bound * (2.0 * s.uniform() - 1.0)) as f32)
                        .collect()
                }
                Init::SmallNormal => (0..n).map(|_| (0.02 * s.normal()) as f32).collect(),
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
            };
            Tensor::from_data(TensorData::new(values, [n]), device)
        })
        .collect()
}

/// Running means and variances of every BatchNorm layer, indexed by slot (plain tensors, no autodiff).
#[derive(Clone, Debug)]
pub struct BnStats {
    /// Running means.
    pub mean: Vec<Tensor<1>>,
    /// Running (unbiased) variances.
    pub var: Vec<Tensor<1>>,
}

impl BnStats {
    /// Folds a batch's `mean` and unbiased `var` into slot `slot`'s running statistics with weight `momentum`.
    pub fn fold(&mut self, slot: usize, mean: Tensor<1>, var: Tensor<1>, momentum: f64) {
        self.mean[slot] =
            self.mean[slot].clone().mul_scalar(1.0 - momentum) + mean.mul_scalar(momentum);
        self.var[slot] =
            self.var[slot].clone().mul_scalar(1.0 - momentum) + var.mul_scalar(momentum);
    }

    /// Folds the batch statistics a grouped pass recorded into the running statistics as passes over the groups
    /// one by one would have: group by group, and within a group in the order of `passes` (the ascent passes,
    /// then the descent's), each with BatchNorm's momentum.
    pub fn fold_groups(&mut self, passes: &[Vec<(usize, Tensor<2>, Tensor<2>)>], groups: usize) {
        for g in 0..groups {
            for (slot, mean, var) in passes.iter().flatten() {
                let c = mean.dims()[1];
                let at = |t: &Tensor<2>| t.clone().narrow(0, g, 1).reshape([c]);
                self.fold(*slot, at(mean), at(var), BN_MOMENTUM);
            }
        }
    }

    /// Mean 0 and variance 1 for each slot, as PyTorch initializes them.
    pub fn new(channels: &[usize], device: &Device) -> Self {
        BnStats {
            mean: channels
                .iter()
                .map(|&c| Tensor::zeros([c], device))
                .collect(),
            var: channels
                .iter()
                .map(|&c| Tensor::ones([c], device))
                .collect(),
        }
    }
}

/// How BatchNorm layers behave in one forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Normalize with the statistics of the batch; fold them into the running statistics if `update`.
    Batch {
        /// Whether this pass updates the running statistics.
        update: bool,
    },
    /// Normalize with the running statistics (evaluation, or BatchNorm frozen); nothing is updated.
    Running,
    /// Normalize with the statistics of the batch and fold them into the running statistics as a cumulative
    /// average: this is batch number `seen + 1`, so its weight is `1 / (seen + 1)` (PyTorch's `momentum=None`;
    /// after `T` batches from `seen = 0` the running statistics are the exact mean of the `T` batch means and
    /// unbiased batch variances).
    Average {
        /// Batches already averaged into the running statistics.
        seen: usize,
    },
}

/// One piecewise-linear decision of a forward pass.
#[derive(Clone, Debug)]
enum Decision {
    /// Where a ReLU's input was positive (1) or not (0), flattened.
    Relu(Tensor<1>),
    /// The flat `h * w` position of each 2x2 max-pool window's maximum, `[n, c, oh * ow]`.
    Pool(Tensor<3, Int>),
}

/// The ReLU and max-pool decisions of a forward pass, recorded at one point and replayed at others: with them the
/// network is a smooth function of its parameters around that point (ReLU becomes a fixed 0/1 mask, max-pooling a
/// fixed selection), whose derivatives are the network's derivatives almost everywhere. The Hessian tools
/// difference gradients of this function, so a finite step never crosses a kink.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    decisions: Vec<Decision>,
    /// `None` while recording; the next decision to replay otherwise.
    cursor: Option<usize>,
}

impl Tape {
    /// An empty tape that records the decisions of the pass it is given to.
    pub fn recording() -> Self {
        Tape::default()
    }

    /// A copy of a recorded tape that replays its decisions from the first one.
    pub fn replay(&self) -> Self {
        Tape {
            decisions: self.decisions.clone(),
            cursor: Some(0),
        }
    }

    /// Records `fresh` or returns the recorded decision in its place.
    fn decide(&mut self, fresh: impl FnOnce() -> Decision) -> Decision {
        match &mut self.cursor {
            None => {
                let d = fresh();
                self.decisions.push(d.clone());
                d
            }
            Some(next) => {
                let d = self
                    .decisions
                    .get(*next)
                    .expect("a replayed pass makes the recorded pass's decisions")
                    .clone();
                *next += 1;
                d
            }
        }
    }
}

/// A pass over `count` groups at once: group `g` is the examples `g * m..(g + 1) * m` of the input (`m` = rows /
/// `count`) at its own point, the slice `g * n..(g + 1) * n` of every parameter tensor (`n` its size), so the
/// gradient of the sum of the groups' losses is each group's gradient at its point, stacked the same way.
/// BatchNorm normalizes each group with its own batch statistics (ghost BatchNorm, as a pass over the group alone
/// does); a pass that updates the running statistics does not fold them in but records them here, because a
/// loop over the groups folds them in group by group ([`Grouped::batch_stats`]).
#[derive(Debug)]
pub struct Grouped {
    /// `G`.
    pub count: usize,
    /// `(slot, means [G, C], unbiased variances [G, C])` of each BatchNorm layer that would have updated its
    /// running statistics, in the order of the pass.
    pub batch_stats: Vec<(usize, Tensor<2>, Tensor<2>)>,
    /// `Some` when the groups share one copy of the weights, perturbed per group by low-rank terms
    /// ([`crate::lowrank`]), instead of each group's copy being stacked.
    pub low_rank: Option<Rc<LowRank>>,
}

impl Grouped {
    /// A pass over `count` groups.
    pub fn new(count: usize) -> Self {
        Grouped {
            count,
            batch_stats: Vec::new(),
            low_rank: None,
        }
    }
}

/// `[n, c, ...] -> [n / g, g * c, r]` (`r` the trailing size): each group's channels side by side, so that a
/// per-channel operation over the batch is one per group and channel.
fn groups_to_channels<const D: usize>(x: Tensor<D>, g: usize) -> Tensor<3> {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let r = dims[2..].iter().product::<usize>();
    x.reshape([g, n / g, c, r])
        .swap_dims(0, 1)
        .reshape([n / g, g * c, r])
}

/// The inverse of [`groups_to_channels`], back to `dims`.
fn channels_to_groups<const D: usize>(y: Tensor<3>, g: usize, dims: [usize; D]) -> Tensor<D> {
    let [m, gc, r] = y.dims();
    y.reshape([m, g, gc / g, r]).swap_dims(0, 1).reshape(dims)
}

/// What a forward pass reads: the parameters of the point it is evaluated at, and the BatchNorm state.
pub struct Ctx<'a> {
    /// One flattened tensor per parameter.
    pub params: &'a [Tensor<1>],
    /// BatchNorm behaviour of this pass.
    pub mode: BnMode,
    /// Running statistics, read in [`BnMode::Running`] and updated in `Batch { update: true }` and `Average`.
    pub stats: &'a mut BnStats,
    /// Where the ReLU and max-pool decisions are recorded or replayed from; `None` decides afresh.
    pub tape: Option<&'a mut Tape>,
    /// `Some` for a pass over several groups at once (parameters stacked per group); never with a tape or
    /// [`BnMode::Average`].
    pub grouped: Option<&'a mut Grouped>,
}

impl Ctx<'_> {
    /// The number of groups of the pass (1 for an ordinary pass).
    pub(crate) fn groups(&self) -> usize {
        self.grouped.as_ref().map_or(1, |g| g.count)
    }

    /// The low-rank state of a pass whose groups share the weights ([`Grouped::low_rank`]).
    fn low_rank(&self) -> Option<Rc<LowRank>> {
        self.grouped.as_ref().and_then(|g| g.low_rank.clone())
    }

    /// Parameter `index` shaped `shape`, in the precision of the activations `like` (mixed precision runs the
    /// convolutions and matrix products in the activations' bf16/f16; autodiff casts their gradients back).
    pub(crate) fn p<const D: usize, const E: usize>(
        &self,
        index: usize,
        shape: [usize; D],
        like: &Tensor<E>,
    ) -> Tensor<D> {
        self.params[index].clone().reshape(shape).cast(like.dtype())
    }

    /// ReLU (with the tape's mask when there is a tape).
    pub fn relu<const D: usize>(&mut self, x: Tensor<D>) -> Tensor<D> {
        let Some(tape) = self.tape.as_deref_mut() else {
            return relu(x);
        };
        let dims = x.dims();
        let n: usize = dims.iter().product();
        let Decision::Relu(mask) =
            tape.decide(|| Decision::Relu(relu(x.clone().without_autodiff().sign()).reshape([n])))
        else {
            panic!("a replayed pass makes the recorded pass's decisions");
        };
        x * mask.reshape(dims)
    }

    /// 2x2 max pooling with stride 2 (selecting the tape's positions when there is a tape).
    pub fn max_pool2(&mut self, x: Tensor<4>) -> Tensor<4> {
        let options = MaxPoolOptions::new([2, 2]);
        let Some(tape) = self.tape.as_deref_mut() else {
            return max_pool2d(x, options);
        };
        let [n, c, h, w] = x.dims();
        let (oh, ow) = (h / 2, w / 2);
        let Decision::Pool(at) = tape.decide(|| {
            let (_, at) = max_pool2d_with_indices(x.clone().without_autodiff(), options);
            Decision::Pool(at.reshape([n, c, oh * ow]))
        }) else {
            panic!("a replayed pass makes the recorded pass's decisions");
        };
        x.reshape([n, c, h * w])
            .gather(2, at)
            .reshape([n, c, oh, ow])
    }
}

/// A 2D convolution (square kernel, symmetric zero padding).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: usize,
    bias: Option<usize>,
    shape: [usize; 4],
    stride: usize,
    pad: usize,
}

impl Conv2d {
    /// A `k x k` convolution from `cin` to `cout` channels.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Self {
        let shape = [cout, cin, k, k];
        let weight = b.param(
            format!("{name}.weight"),
            shape.to_vec(),
            Init::HeNormalFanOut,
        );
        let bias = bias.then(|| {
            b.param(
                format!("{name}.bias"),
                vec![cout],
                Init::UniformFanIn(cin * k * k),
            )
        });
        Conv2d {
            weight,
            bias,
            shape,
            stride,
            pad,
        }
    }

    /// `[n, cin, h, w] -> [n, cout, h', w']` (a grouped pass: one convolution with `G` groups over the groups'
    /// channels side by side).
    pub fn forward(&self, ctx: &Ctx, x: Tensor<4>) -> Tensor<4> {
        let g = ctx.groups();
        let [cout, cin, k, _] = self.shape;
        let options = ConvOptions::new([self.stride, self.stride], [self.pad, self.pad], [1, 1], g);
        let bias = self.bias.map(|i| ctx.p(i, [g * cout], &x));
        let weight = ctx.p(self.weight, [g * cout, cin, k, k], &x);
        if g == 1 {
            return conv2d(x, weight, bias, options);
        }
        let [n, _, h, w] = x.dims();
        let x: Tensor<4> =
            x.reshape([g, n / g, cin, h, w])
                .swap_dims(0, 1)
                .reshape([n / g, g * cin, h, w]);
        let y = conv2d(x, weight, bias, options);
        let [m, _, oh, ow] = y.dims();
        y.reshape([m, g, cout, oh, ow])
            .swap_dims(0, 1)
            .reshape([n, cout, oh, ow])
    }
}

/// A fully connected layer `y = x W + b` (`W` is `[in, out]`).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: usize,
    bias: usize,
    shape: [usize; 2],
}

impl Linear {
    /// A layer from `din` to `dout` features.
    pub fn new(b: &mut Builder, name: &str, din: usize, dout: usize) -> Self {
        let weight = b.param(
            format!("{name}.weight"),
            vec![din, dout],
            Init::UniformFanIn(din),
        );
        let bias = b.param(format!("{name}.bias"), vec![dout], Init::Zeros);
        Linear {
            weight,
            bias,
            shape: [din, dout],
        }
    }

    /// `[n, in] -> [n, out]` (a grouped pass: `G` batched products).
    pub fn forward(&self, ctx: &Ctx, x: Tensor<2>) -> Tensor<2> {
        let [din, dout] = self.shape;
        if let Some(low) = ctx.low_rank() {
            let bias = ctx.p(self.bias, [1, dout], &x);
            let weight = ctx.p(self.weight, self.shape, &x);
            return low.linear(x, weight, bias, [self.weight, self.bias]);
        }
        let g = ctx.groups();
        if g == 1 {
            let bias: Tensor<2> = ctx.p(self.bias, [1, dout], &x);
            let weight = ctx.p(self.weight, self.shape, &x);
            return x.matmul(weight) + bias;
        }
        let n = x.dims()[0];
        let bias: Tensor<3> = ctx.p(self.bias, [g, 1, dout], &x);
        let weight: Tensor<3> = ctx.p(self.weight, [g, din, dout], &x);
        (x.reshape([g, n / g, din]).matmul(weight) + bias).reshape([n, dout])
    }
}

/// Which normalization layers a network uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// No normalization.
    None,
    /// BatchNorm (batch statistics in training mode, running statistics at evaluation).
    Batch,
    /// GroupNorm (no running statistics; the same in training and evaluation).
    Group,
    /// LayerNorm over each token's features (the transformers' only normalization, [`LayerNorm`]).
    Layer,
}

#[derive(Clone, Debug)]
enum NormImpl {
    Batch { slot: usize },
    Group { groups: usize },
}

/// A BatchNorm or GroupNorm layer with a learnable scale and shift.
#[derive(Clone, Debug)]
pub struct Norm {
    gamma: usize,
    beta: usize,
    channels: usize,
    kind: NormImpl,
}

impl Norm {
    /// A normalization of `channels` channels; `None` for [`NormKind::None`]. GroupNorm uses `groups` groups.
    pub fn new(
        b: &mut Builder,
        name: &str,
        kind: NormKind,
        channels: usize,
        groups: usize,
    ) -> Option<Self> {
        let kind = match kind {
            // The convnets take no LayerNorm (`Network::new` refuses it); the transformers build [`LayerNorm`].
            NormKind::None | NormKind::Layer => return None,
            NormKind::Batch => NormImpl::Batch {
                slot: b.bn_slot(name, channels),
            },
            NormKind::Group => NormImpl::Group { groups },
        };
        let gamma = b.param(format!("{name}.weight"), vec![channels], Init::Ones);
        let beta = b.param(format!("{name}.bias"), vec![channels], Init::Zeros);
        b.norm_params.extend([gamma, beta]);
        Some(Norm {
            gamma,
            beta,
            channels,
            kind,
        })
    }

    /// Normalizes `[n, c, ...]` over the batch (BatchNorm) or over channel groups (GroupNorm), in the precision of
    /// the parameters (mixed precision normalizes in f32, as PyTorch's autocast does, and returns the
    /// activations' precision).
    pub fn forward<const D: usize>(&self, ctx: &mut Ctx, x: Tensor<D>) -> Tensor<D> {
        let low = x.dtype();
        let gamma: Tensor<1> = ctx.params[self.gamma].clone();
        let beta: Tensor<1> = ctx.params[self.beta].clone();
        let x = x.cast(gamma.dtype());
        let Some(rank) = ctx.low_rank() else {
            return self.normalize(ctx, x, gamma, beta).cast(low);
        };
        // Low-rank passes run on the MLP only: BatchNorm of [n, c] ([`crate::lowrank`]).
        let NormImpl::Batch { slot } = self.kind else {
            panic!("low-rank passes take BatchNorm only");
        };
        let dims = x.dims();
        let xhat = ghost_normalize(ctx, slot, x.reshape([dims[0], self.channels]));
        rank.norm(xhat, gamma, beta, [self.gamma, self.beta])
            .reshape(dims)
            .cast(low)
    }

    fn normalize<const D: usize>(
        &self,
        ctx: &mut Ctx,
        x: Tensor<D>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
    ) -> Tensor<D> {
        let c = self.channels;
        let g = ctx.groups();
        match self.kind {
            NormImpl::Batch { slot } => match g {
                1 => batch_norm_pass(ctx, slot, x, gamma, beta),
                // Each group's channels side by side: BatchNorm over `g * c` channels is one per group.
                _ => {
                    let dims = x.dims();
                    let y = batch_norm_pass(ctx, slot, groups_to_channels(x, g), gamma, beta);
                    channels_to_groups(y, g, dims)
                }
            },
            NormImpl::Group { groups } => {
                let dims = x.dims();
                let n = dims[0];
                let per_group = dims.iter().skip(1).product::<usize>() / groups;
                let x: Tensor<3> = x.reshape([n, groups, per_group]);
                let mean = x.clone().mean_dim(2);
                let centered = x - mean;
                let var = centered.clone().square().mean_dim(2);
                let normed = centered / var.add_scalar(NORM_EPS).sqrt();
                // The scale and shift of each group's copy, on its rows.
                let r = per_group * groups / c;
                let normed: Tensor<4> = normed.reshape([g, n / g, c, r]);
                let out = normed * gamma.reshape([g, 1, c, 1]) + beta.reshape([g, 1, c, 1]);
                out.reshape(dims)
            }
        }
    }
}

/// BatchNorm of `x` (`[n, channels, ...]`, channels of every group side by side in a grouped pass) in the pass's
/// mode, updating slot `slot`'s running statistics (or recording its groups' batch statistics) as the mode says.
fn batch_norm_pass<const D: usize>(
    ctx: &mut Ctx,
    slot: usize,
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
) -> Tensor<D> {
    let g = ctx.groups();
    if ctx.mode == BnMode::Running {
        return batch_norm(
            x,
            gamma,
            beta,
            ctx.stats.mean[slot].clone().repeat_dim(0, g),
            ctx.stats.var[slot].clone().repeat_dim(0, g),
            NORM_EPS,
        );
    }
    let dims = x.dims();
    let count = dims.iter().product::<usize>() / dims[1];
    let out = batch_norm_train(x, gamma, beta, NORM_EPS);
    take_batch_stats(ctx, slot, out.mean, out.variance, count);
    out.output
}

/// Takes a pass's batch `mean` and biased `var` (`[G * C]`, group-major in a pass over `G` groups; `count` values
/// per channel) into slot `slot`'s running statistics as the pass's mode says, or records them per group in a pass
/// over groups ([`Grouped::batch_stats`]).
fn take_batch_stats(ctx: &mut Ctx, slot: usize, mean: Tensor<1>, var: Tensor<1>, count: usize) {
    let momentum = match ctx.mode {
        BnMode::Batch { update: true } => BN_MOMENTUM,
        BnMode::Average { seen } => 1.0 / (seen + 1) as f64,
        _ => return,
    };
    // PyTorch's rule: the running variance tracks the unbiased batch variance.
    let unbias = count as f64 / (count.max(2) - 1) as f64;
    let mean = mean.without_autodiff();
    let var = var.without_autodiff().mul_scalar(unbias);
    match ctx.grouped.as_deref_mut() {
        Some(grouped) => {
            let (g, c) = (grouped.count, mean.dims()[0] / grouped.count);
            grouped
                .batch_stats
                .push((slot, mean.reshape([g, c]), var.reshape([g, c])));
        }
        None => ctx.stats.fold(slot, mean, var, momentum),
    }
}

/// BatchNorm's normalization, without scale and shift, of `x` `[n, c]` in the rows of each of the pass's `G` groups
/// with that group's batch statistics (or the running ones), as `[G, n / G, c]`; the groups' statistics are
/// recorded where the mode updates the running statistics ([`take_batch_stats`]).
fn ghost_normalize(ctx: &mut Ctx, slot: usize, x: Tensor<2>) -> Tensor<3> {
    let g = ctx.groups();
    let [n, c] = x.dims();
    let x: Tensor<3> = x.reshape([g, n / g, c]);
    if ctx.mode == BnMode::Running {
        let mean = ctx.stats.mean[slot].clone().reshape([1, 1, c]);
        let var = ctx.stats.var[slot].clone().reshape([1, 1, c]);
        return (x - mean) / var.add_scalar(NORM_EPS).sqrt();
    }
    let mean = x.clone().mean_dim(1);
    let centered = x - mean.clone();
    let var = centered.clone().square().mean_dim(1);
    let out = centered / var.clone().add_scalar(NORM_EPS).sqrt();
    take_batch_stats(
        ctx,
        slot,
        mean.reshape([g * c]),
        var.reshape([g * c]),
        n / g,
    );
    out
}

/// LayerNorm over the last axis with a learnable scale and shift (PyTorch's `nn.LayerNorm(d)`, eps 1e-5).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    gamma: usize,
    beta: usize,
    dim: usize,
}

impl LayerNorm {
    /// A LayerNorm of `dim` features named `name` (`name.weight`, `name.bias`), a normalization layer for SAM-ON.
    pub fn new(b: &mut Builder, name: &str, dim: usize) -> Self {
        let gamma = b.param(format!("{name}.weight"), vec![dim], Init::Ones);
        let beta = b.param(format!("{name}.bias"), vec![dim], Init::Zeros);
        b.norm_params.extend([gamma, beta]);
        LayerNorm { gamma, beta, dim }
    }

    /// Normalizes `[n, ..., dim]` over its last axis (biased variance), in the parameters' precision as [`Norm`]
    /// does. A grouped pass scales group `g`'s rows (`g * n / G..`) by its own copy of the scale and shift.
    pub fn forward<const D: usize>(&self, ctx: &Ctx, x: Tensor<D>) -> Tensor<D> {
        let low = x.dtype();
        let dims = x.dims();
        let g = ctx.groups();
        let d = self.dim;
        let gamma: Tensor<3> = ctx.params[self.gamma].clone().reshape([g, 1, d]);
        let beta: Tensor<3> = ctx.params[self.beta].clone().reshape([g, 1, d]);
        let rows = dims.iter().product::<usize>() / (g * d);
        let x: Tensor<3> = x.cast(gamma.dtype()).reshape([g, rows, d]);
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = centered / var.add_scalar(NORM_EPS).sqrt();
        (normed * gamma + beta).reshape(dims).cast(low)
    }
}

/// `norm` then ReLU (identity norm when `None`).
pub fn norm_relu<const D: usize>(norm: &Option<Norm>, ctx: &mut Ctx, x: Tensor<D>) -> Tensor<D> {
    match norm {
        Some(n) => {
            let y = n.forward(ctx, x);
            ctx.relu(y)
        }
        None => ctx.relu(x),
    }
}

/// Global average pooling `[n, c, h, w] -> [n, c]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}
