//! m-SAM's groups as low-rank perturbations of one set of weights: [`Trainer::step`] for the `G = B / m` groups of
//! a plain-SAM step on the MLP, with products over the whole batch where [`crate::grouped`] stacks one copy of the
//! weights per group.
//!
//! On a Linear layer `y = x W + b`, group `g`'s gradient of its mean loss at `w` is `X_gᵀ dY_g` (and `1ᵀ dY_g`
//! for the bias): `X_g` the layer's inputs over the group's `m` examples, `dY_g` the loss gradient at its outputs,
//! both from one ascent pass over the batch. Weights perturbed by `c_g` times that gradient act on the perturbed
//! pass's inputs `X'_g` as `X'_g W + b + c_g (X'_g X_gᵀ + 1 1ᵀ) dY_g`: one product over the batch plus two `m x m`
//! ones per group, and autodiff through that expression gives the gradient at the perturbed weights. The group's
//! squared gradient norm comes from the same Gram matrices, `|X_gᵀ dY_g|² = Σ (X_g X_gᵀ) ∘ (dY_g dY_gᵀ)`. The
//! BatchNorm layers' scale and shift are small: their per-group gradients are formed directly, and
//! each group's normalization uses its own perturbed copy (ghost BatchNorm per group, as the loop has).
//!
//! L2 in the objective adds `λ w` to every gradient, so group `g`'s perturbed point is `s_g w + c_g ∇CE_g` with
//! `s_g = 1 + c_g λ` for every parameter: the layers scale their outputs by `s_g`, and the descent weighs group
//! `g`'s loss by `1 / s_g`, which makes the gradient with respect to `w` the gradient at the perturbed point. The
//! L2 term's own gradient there, `λ (w + mean_g δ_g)`, is added from the recorded factors.
//!
//! When the ascent is on the batch itself, the first layer's inputs are the same in both passes: its perturbed
//! outputs come from the ascent pass's products and Gram matrices, and its gradient is formed from theirs (one
//! product over the batch fewer, the largest layer's).
//!
//! It takes plain SAM with one ascent step from `w` (normalized, unnormalized or clipped; on the same or the previous
//! batch; every BatchNorm policy) and ERM steps with ghost BatchNorm, on networks of Linear, BatchNorm or GroupNorm
//! and ReLU layers (the MLP) in f32 ([`Trainer::can_take_low_rank`]). Everything else keeps the loop: multi-step and
//! random-start ascents and the random baseline perturb by more than one gradient (each step's gradient would be
//! another low-rank term at another point), convolutions have no cheap Gram form, and the variants' rules
//! ([`samlab_core::ascent`]) carry state across groups. It equals the loop to f32 rounding (tests/grouped.rs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use samlab_core::ascent::SamObservation;
use samlab_core::sam::{AscentSource, Normalization, Perturbation, Variant};

use crate::models::Arch;
use crate::nn::{BnMode, BnStats, Ctx, Grouped, NORM_EPS};
use crate::observe::{mean_observation, PARTS};
use crate::trainer::{
    sq_norm, Batch, BnPolicy, ParamVec, Precision, StepOutput, TrainState, Trainer, WeightDecay,
};

/// What a pass over groups with shared weights does at each Linear and normalization layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The groups share the weights (ghost BatchNorm only).
    Plain,
    /// The ascent pass: each layer records its inputs and a zero probe on its outputs, whose gradient is `dY`.
    Record,
    /// The perturbed pass: each layer adds its groups' low-rank perturbations, from the recorded pass.
    Apply,
}

/// One Linear or normalization layer as the ascent pass saw it.
#[derive(Debug)]
struct Site {
    /// The parameters' indices: a Linear layer's weight and bias, a normalization's scale and shift.
    params: [usize; 2],
    /// Whether it is a normalization layer.
    norm: bool,
    /// Linear: the inputs `[B, in]`; normalization: the normalized inputs `[B, C]`.
    x: Tensor<2>,
    /// Linear: the outputs `x W + b`; normalization: the scale and shift `[2, C]` (for the L2 cross term).
    y: Tensor<2>,
    /// The zero leaf added to the outputs.
    probe: Tensor<2>,
    /// The loss gradient at the outputs `[B, out]`, after the backward.
    dy: Option<Tensor<2>>,
    /// Normalization: each group's gradient of the scale and of the shift, `[G, C]` each.
    affine: Option<(Tensor<2>, Tensor<2>)>,
    /// Linear: the Gram matrices `X_g X_gᵀ` `[G, m, m]`, after the backward.
    gram: Option<Tensor<3>>,
}

/// One Linear or normalization layer as the perturbed pass saw it, for the step's observation.
#[derive(Debug)]
struct Applied {
    /// Linear: the inputs `X'` `[B, in]`; normalization: the normalized inputs.
    x: Tensor<2>,
    /// Linear: `X' W + b` and the Gram matrices `X'_g X_gᵀ` `[G, m, m]`.
    linear: Option<(Tensor<2>, Tensor<3>)>,
    /// The leaf at the outputs (a zero probe, or the first layer's outputs).
    out: Tensor<2>,
}

/// The low-rank state of one step's passes over its groups (see the module doc), shared through [`Grouped`].
#[derive(Debug)]
pub struct LowRank {
    groups: usize,
    phase: Cell<Phase>,
    sites: RefCell<Vec<Site>>,
    cursor: Cell<usize>,
    /// Each group's ascent factor `c_g` and scale `s_g` (`[G]`), for [`Phase::Apply`].
    factors: RefCell<Option<(Tensor<1>, Tensor<1>)>>,
    /// Whether the perturbed pass is over the ascent's examples: then the first layer's inputs are the same, and
    /// its outputs come from the ascent pass's products ([`LowRank::first`]).
    same_inputs: Cell<bool>,
    /// The first layer's outputs in the perturbed pass, a leaf when they come from the ascent pass: the first
    /// layer's gradient is then formed from theirs ([`LowRank::extra_gradient`]).
    first: RefCell<Option<Tensor<2>>>,
    /// Whether the perturbed pass keeps what the step's observation needs ([`LowRank::applied`]).
    observe: Cell<bool>,
    /// The perturbed pass's layers, when observed.
    applied: RefCell<Vec<Applied>>,
}

impl LowRank {
    fn new(groups: usize, phase: Phase) -> Rc<Self> {
        Rc::new(LowRank {
            groups,
            phase: Cell::new(phase),
            sites: RefCell::new(Vec::new()),
            cursor: Cell::new(0),
            factors: RefCell::new(None),
            same_inputs: Cell::new(false),
            first: RefCell::new(None),
            observe: Cell::new(false),
            applied: RefCell::new(Vec::new()),
        })
    }

    /// A value per group `[G]` repeated over the group's rows, `[B, 1]`.
    fn rows(&self, v: &Tensor<1>, b: usize) -> Tensor<2> {
        let g = self.groups;
        v.clone()
            .reshape([g, 1, 1])
            .repeat_dim(1, b / g)
            .reshape([b, 1])
    }

    /// `out` with a zero probe added, recorded with the layer's inputs `x` (and for a Linear layer `X' W + b` and
    /// `X'_g X_gᵀ`) when the perturbed pass is observed.
    fn observed(
        &self,
        out: Tensor<2>,
        x: Tensor<2>,
        linear: Option<(Tensor<2>, Tensor<3>)>,
    ) -> Tensor<2> {
        if !self.observe.get() {
            return out;
        }
        let probe = Tensor::zeros(out.dims(), &out.device())
            .autodiff()
            .require_grad();
        self.applied.borrow_mut().push(Applied {
            x: x.without_autodiff(),
            linear: linear.map(|(y, gram)| (y.without_autodiff(), gram.without_autodiff())),
            out: probe.clone(),
        });
        out + probe
    }

    /// The recorded site of the next layer of an [`Phase::Apply`] pass.
    fn next(&self) -> usize {
        let k = self.cursor.get();
        self.cursor.set(k + 1);
        k
    }

    /// A Linear layer `x W + b` (`w` `[in, out]`, `b` `[1, out]`; `params` their indices) in this pass.
    pub(crate) fn linear(
        &self,
        x: Tensor<2>,
        w: Tensor<2>,
        b: Tensor<2>,
        params: [usize; 2],
    ) -> Tensor<2> {
        match self.phase.get() {
            Phase::Plain => x.matmul(w) + b,
            Phase::Record => {
                let y = x.clone().matmul(w) + b;
                let probe = Tensor::zeros(y.dims(), &y.device())
                    .autodiff()
                    .require_grad();
                self.sites.borrow_mut().push(Site {
                    params,
                    norm: false,
                    x: x.without_autodiff(),
                    y: y.clone().without_autodiff(),
                    probe: probe.clone(),
                    dy: None,
                    affine: None,
                    gram: None,
                });
                y + probe
            }
            Phase::Apply => {
                let sites = self.sites.borrow();
                let k = self.next();
                let site = &sites[k];
                let (c, s) = self.factors.borrow().clone().expect("factors before Apply");
                let [n, din] = x.dims();
                let (g, m) = (self.groups, n / self.groups);
                let dy = site.dy.clone().expect("dY after the ascent's backward");
                let dout = dy.dims()[1];
                let low = |gram: Tensor<3>| {
                    (gram.add_scalar(1.0).matmul(dy.reshape([g, m, dout])) * c.reshape([g, 1, 1]))
                        .reshape([n, dout])
                };
                if k == 0 && self.same_inputs.get() {
                    // The same inputs as the ascent pass: its products and Gram matrices serve again.
                    let gram = site.gram.clone().expect("Gram matrices");
                    let y = (site.y.clone() * self.rows(&s, n) + low(gram.clone()))
                        .autodiff()
                        .require_grad();
                    *self.first.borrow_mut() = Some(y.clone());
                    if self.observe.get() {
                        self.applied.borrow_mut().push(Applied {
                            x: site.x.clone(),
                            linear: Some((site.y.clone(), gram)),
                            out: y.clone(),
                        });
                    }
                    return y;
                }
                let gram = x
                    .clone()
                    .reshape([g, m, din])
                    .matmul(site.x.clone().reshape([g, m, din]).swap_dims(1, 2));
                let y = x.clone().matmul(w) + b;
                let out = y.clone() * self.rows(&s, n) + low(gram.clone());
                self.observed(out, x, Some((y, gram)))
            }
        }
    }

    /// A BatchNorm layer's output `[B, C]` from its inputs normalized per group, `xhat` `[G, m, C]`, and its scale
    /// and shift (`[C]` each, indices `params`): while recording, with a probe on it (and `xhat` recorded); in the
    /// perturbed pass, each group's own perturbed scale and shift.
    pub(crate) fn norm(
        &self,
        xhat: Tensor<3>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        params: [usize; 2],
    ) -> Tensor<2> {
        let [g, m, c] = xhat.dims();
        let shared = |t: &Tensor<1>| t.clone().reshape([1, 1, c]);
        match self.phase.get() {
            Phase::Plain => (xhat * shared(&gamma) + shared(&beta)).reshape([g * m, c]),
            Phase::Record => {
                let y = (xhat.clone() * shared(&gamma) + shared(&beta)).reshape([g * m, c]);
                let probe = Tensor::zeros(y.dims(), &y.device())
                    .autodiff()
                    .require_grad();
                self.sites.borrow_mut().push(Site {
                    params,
                    norm: true,
                    x: xhat.reshape([g * m, c]).without_autodiff(),
                    y: Tensor::stack::<2>(vec![gamma, beta], 0).without_autodiff(),
                    probe: probe.clone(),
                    dy: None,
                    affine: None,
                    gram: None,
                });
                y + probe
            }
            Phase::Apply => {
                let sites = self.sites.borrow();
                let site = &sites[self.next()];
                let (cf, s) = self.factors.borrow().clone().expect("factors before Apply");
                let (dg, db) = site.affine.clone().expect("per-group gradients");
                let (cf, s) = (cf.reshape([g, 1, 1]), s.reshape([g, 1, 1]));
                let perturbed = |t: &Tensor<1>, d: Tensor<2>| {
                    shared(t) * s.clone() + d.reshape([g, 1, c]) * cf.clone()
                };
                let (gamma, beta) = (perturbed(&gamma, dg), perturbed(&beta, db));
                let out = (xhat.clone() * gamma + beta).reshape([g * m, c]);
                self.observed(out, xhat.reshape([g * m, c]), None)
            }
        }
    }

    /// After the ascent's backward: each site's `dY`, and each group's squared norm of the loss gradient and its
    /// dot product with the weights, `[G, 2]`.
    fn gradient_parts(&self, grads: &burn::tensor::Gradients) -> Tensor<2> {
        let g = self.groups;
        let mut sites = self.sites.borrow_mut();
        let mut parts: Vec<Tensor<2>> = Vec::new();
        for site in sites.iter_mut() {
            let dy = site
                .probe
                .grad(grads)
                .unwrap_or_else(|| site.probe.clone().without_autodiff());
            let [n, out] = dy.dims();
            let m = n / g;
            let dyg: Tensor<3> = dy.clone().reshape([g, m, out]);
            if site.norm {
                let sum = |t: Tensor<2>| t.reshape([g, m, out]).sum_dim(1).reshape([g, out]);
                let dg = sum(dy.clone() * site.x.clone());
                let db = sum(dy.clone());
                let gamma = site.y.clone().narrow(0, 0, 1);
                let beta = site.y.clone().narrow(0, 1, 1);
                let sq = (dg.clone().square() + db.clone().square()).sum_dim(1);
                let cross = (dg.clone() * gamma + db.clone() * beta).sum_dim(1);
                parts.push(Tensor::cat(vec![sq, cross], 1));
                site.affine = Some((dg, db));
            } else {
                let din = site.x.dims()[1];
                let xg: Tensor<3> = site.x.clone().reshape([g, m, din]);
                let gx = xg.clone().matmul(xg.swap_dims(1, 2));
                let gd = dyg.clone().matmul(dyg.clone().swap_dims(1, 2));
                site.gram = Some(gx.clone());
                let sq = (gx * gd).reshape([g, m * m]).sum_dim(1)
                    + dyg.sum_dim(1).square().reshape([g, out]).sum_dim(1);
                let cross = (site.y.clone() * dy.clone())
                    .reshape([g, m * out])
                    .sum_dim(1);
                parts.push(Tensor::cat(vec![sq, cross], 1));
            }
            site.dy = Some(dy);
        }
        let stacked: Tensor<3> = Tensor::stack(parts, 0);
        stacked.sum_dim(0).reshape([g, 2])
    }

    /// After an observed perturbed pass's backward: for each group, the products of the loss gradients at `w`
    /// (`A_g`) and at its perturbed point (`B_g`) that its observation needs, `[G, 3]`: `A_g · B_g`, `|B_g|²` and
    /// `w · B_g`.
    fn observed_parts(&self, grads: &burn::tensor::Gradients) -> Tensor<2> {
        let g = self.groups;
        let (_, s) = self.factors.borrow().clone().expect("factors");
        let sum = |t: Tensor<2>| {
            let [n, c] = t.dims();
            t.reshape([g, n / g, c]).sum_dim(1).reshape([g, c])
        };
        let mut parts: Vec<Tensor<2>> = Vec::new();
        for (site, ap) in self.sites.borrow().iter().zip(self.applied.borrow().iter()) {
            let dy = site.dy.clone().expect("dY");
            let [n, out] = dy.dims();
            let m = n / g;
            // The gradient at the outputs of group g's own loss: the backward's was weighed by 1 / s_g.
            let dyt = ap.out.grad(grads).expect("the outputs' gradient") * self.rows(&s, n);
            let [ab, bb, wb] = match &ap.linear {
                None => {
                    let (dg, db) = site.affine.clone().expect("per-group gradients");
                    let (bg, bb) = (sum(dyt.clone() * ap.x.clone()), sum(dyt));
                    let gamma = site.y.clone().narrow(0, 0, 1);
                    let beta = site.y.clone().narrow(0, 1, 1);
                    [
                        dg * bg.clone() + db * bb.clone(),
                        bg.clone().square() + bb.clone().square(),
                        bg * gamma + bb * beta,
                    ]
                    .map(|t| t.sum_dim(1))
                }
                Some((y, cross)) => {
                    let din = ap.x.dims()[1];
                    let grouped = |t: Tensor<2>, k: usize| t.reshape([g, m, k]);
                    let (dyg, dytg) = (grouped(dy.clone(), out), grouped(dyt.clone(), out));
                    let xg = grouped(ap.x.clone(), din);
                    let own = xg.clone().matmul(xg.swap_dims(1, 2));
                    let total = |t: Tensor<3>| t.reshape([g, m * m]).sum_dim(1);
                    let bias =
                        |a: &Tensor<2>, b: &Tensor<2>| (sum(a.clone()) * sum(b.clone())).sum_dim(1);
                    [
                        total(cross.clone() * dytg.clone().matmul(dyg.swap_dims(1, 2)))
                            + bias(&dy, &dyt),
                        total(own * dytg.clone().matmul(dytg.swap_dims(1, 2))) + bias(&dyt, &dyt),
                        (y.clone() * dyt).reshape([g, m * out]).sum_dim(1),
                    ]
                }
            };
            parts.push(Tensor::cat(vec![ab, bb, wb], 1));
        }
        let stacked: Tensor<3> = Tensor::stack(parts, 0);
        stacked.sum_dim(0).reshape([g, 3])
    }

    /// What the perturbed pass's backward (`grads`) leaves out of `G` times the descent gradient, per parameter
    /// (`like` the weights): the first layer's gradient where its outputs came from the ascent pass, and with L2
    /// (`lambda`) `λ Σ_g δ_g`'s part along the loss gradients, `λ Σ_g c_g ∇CE_g`.
    fn extra_gradient(
        &self,
        grads: &burn::tensor::Gradients,
        lambda: f64,
        params: usize,
    ) -> Vec<Option<Tensor<1>>> {
        let g = self.groups;
        let mut out = vec![None; params];
        let factors = self.factors.borrow();
        let first = self.first.borrow();
        for (k, site) in self.sites.borrow().iter().enumerate() {
            let [a, b] = site.params;
            let c = factors
                .as_ref()
                .filter(|_| lambda > 0.0)
                .map(|(c, _)| c.clone().mul_scalar(lambda));
            if let Some((dg, db)) = &site.affine {
                if let Some(c) = c {
                    let c = c.reshape([g, 1]);
                    out[a] = Some((dg.clone() * c.clone()).sum_dim(0).reshape([dg.dims()[1]]));
                    out[b] = Some((db.clone() * c).sum_dim(0).reshape([db.dims()[1]]));
                }
                continue;
            }
            let n = site.x.dims()[0];
            let dy = site.dy.clone().expect("dY");
            // Row weights on dY whose product with the inputs is the layer's extra gradient.
            let mut rows = c.map(|c| dy * self.rows(&c, n));
            if let (0, Some(y)) = (k, first.as_ref()) {
                let (_, s) = factors.as_ref().expect("factors");
                let own = y.grad(grads).expect("the first layer's gradient") * self.rows(s, n);
                rows = Some(match rows {
                    Some(r) => r + own,
                    None => own,
                });
            }
            if let Some(rows) = rows {
                let [din, dout] = [site.x.dims()[1], rows.dims()[1]];
                out[a] = Some(
                    site.x
                        .clone()
                        .transpose()
                        .matmul(rows.clone())
                        .reshape([din * dout]),
                );
                out[b] = Some(rows.sum_dim(0).reshape([dout]));
            }
        }
        out
    }
}

impl Trainer<'_> {
    /// Whether [`Trainer::low_rank_step`] computes the `groups` groups of a step at radius `rho`: several groups, a
    /// network of Linear, BatchNorm and ReLU layers (the MLP) in f32, and an ERM step or plain SAM with one
    /// ascent step from `w`.
    pub fn can_take_low_rank(&self, groups: usize, rho: f64) -> bool {
        let c = self.sam.config();
        let spec = self.net.spec();
        groups > 1
            && spec.arch == Arch::Mlp
            && self.precision == Precision::F32
            && (rho == 0.0
                || (c.variant == Variant::Sam
                    && c.perturbation == Perturbation::Ascent
                    && !c.random_init
                    && c.ascent_steps == 1))
    }

    /// The BatchNorm mode of a pass: the ascent's at `w` when `ascent`, the descent's otherwise.
    fn low_rank_mode(&self, ascent: bool) -> BnMode {
        match (self.optim.bn_policy, ascent) {
            (BnPolicy::Frozen, _) => BnMode::Running,
            (BnPolicy::BothPasses, _) => BnMode::Batch { update: true },
            (BnPolicy::CleanPassOnly, at_w) => BnMode::Batch { update: at_w },
        }
    }

    /// A forward pass over the groups of `lr` at `params` on `batch`; the logits.
    fn low_rank_forward(
        &self,
        params: &[Tensor<1>],
        batch: &Batch,
        mode: BnMode,
        bn: &mut BnStats,
        lr: &Rc<LowRank>,
        recorded: &mut Vec<Vec<(usize, Tensor<2>, Tensor<2>)>>,
    ) -> Tensor<2> {
        let mut grouped = Grouped::new(lr.groups);
        grouped.low_rank = Some(lr.clone());
        let mut ctx = Ctx {
            params,
            mode,
            stats: bn,
            tape: None,
            grouped: Some(&mut grouped),
        };
        let logits = self.net.forward(&mut ctx, batch.x.clone());
        recorded.push(grouped.batch_stats);
        logits
    }

    /// Each group's ascent factor `c_g` from its squared gradient norm `|∇CE_g|² + 2 λ w · ∇CE_g + λ² |w|²`
    /// (`parts` `[G, 2]` as [`LowRank::gradient_parts`] gives them, `w2 = |w|²`), as plain SAM's perturbation of
    /// radius `rho` scales the gradient ([`samlab_core::ascent::Ascent::sam_delta`]); with the squared norms.
    fn factors(&self, parts: &[f64], lambda: f64, w2: f64, rho: f64) -> (Vec<f64>, Vec<f64>) {
        let c = self.sam.config();
        let eta = rho * c.ascent_step_mult;
        parts
            .chunks(2)
            .map(|p| {
                let sq = (p[0] + 2.0 * lambda * p[1] + lambda * lambda * w2).max(0.0);
                let norm = sq.sqrt();
                let factor = match c.normalization {
                    Normalization::Normalized => eta / (norm + 1e-12),
                    Normalization::Unnormalized => eta,
                    Normalization::Clipped if eta * norm > rho => rho / norm,
                    Normalization::Clipped => eta,
                };
                (factor, sq)
            })
            .unzip()
    }

    /// [`Trainer::step`] with the groups as low-rank perturbations of `w` (see the module doc), where
    /// [`Trainer::can_take_low_rank`]; with what SAM did if `observe` (and the ascent is on the batch itself).
    pub fn low_rank_step(
        &self,
        state: &mut TrainState,
        batch: &Batch,
        previous: &Batch,
        lr: f64,
        rho: f64,
        observe: bool,
    ) -> StepOutput {
        let c = self.sam.config();
        let m = self.sam.group_size();
        let g = batch.len() / m;
        let w = &state.params;
        let lambda = match self.optim.weight_decay {
            WeightDecay::L2 { lambda } => lambda,
            _ => 0.0,
        };
        let same_batch = c.ascent_source == AscentSource::SameBatch;
        let observe = observe && rho != 0.0 && same_batch;
        let mut bn = state.bn.clone();
        let mut recorded = Vec::new();
        let device = &self.device;
        let to_device = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<1>::from_data(TensorData::new(v, [g]), device)
        };
        // The ascent: each group's factor, and what the observation needs from it.
        let mut clean = None;
        let (low, mode) = if rho == 0.0 {
            (LowRank::new(g, Phase::Plain), self.low_rank_mode(true))
        } else {
            let ascent = if same_batch { batch } else { previous };
            let low = LowRank::new(g, Phase::Record);
            let mode = self.low_rank_mode(same_batch);
            let logits = self.low_rank_forward(w, ascent, mode, &mut bn, &low, &mut recorded);
            let logp = log_softmax(logits, 1);
            let ce = (logp.clone() * ascent.onehot.clone())
                .sum()
                .neg()
                .mul_scalar(1.0 / m as f64);
            let parts = low.gradient_parts(&ce.backward());
            let parts: Vec<f64> = parts
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .expect("f64 parts");
            let w2 = if lambda > 0.0 || observe {
                sq_norm(w)
            } else {
                0.0
            };
            let (factors, sq) = self.factors(&parts, lambda, w2, rho);
            let scales: Vec<f64> = factors.iter().map(|f| 1.0 + f * lambda).collect();
            *low.factors.borrow_mut() = Some((to_device(&factors), to_device(&scales)));
            low.phase.set(Phase::Apply);
            low.same_inputs.set(same_batch);
            low.observe.set(observe);
            if observe {
                let losses = group_losses(logp.without_autodiff(), ascent, g);
                clean = Some(Clean {
                    parts,
                    factors,
                    scales,
                    sq,
                    w2,
                    losses,
                });
            }
            if self.optim.bn_policy == BnPolicy::CleanPassOnly && !same_batch {
                // The running statistics take in each group once, at w, as in an ERM step.
                let plain = LowRank::new(g, Phase::Plain);
                let update = BnMode::Batch { update: true };
                let _ = self.low_rank_forward(w, batch, update, &mut bn, &plain, &mut recorded);
            }
            (low, self.low_rank_mode(false))
        };
        // The descent: the perturbed pass, its gradient with respect to w weighed per group.
        let leaves: ParamVec = w
            .iter()
            .map(|p| p.clone().autodiff().require_grad())
            .collect();
        let logits = self.low_rank_forward(&leaves, batch, mode, &mut bn, &low, &mut recorded);
        let logp = log_softmax(logits.clone(), 1);
        // Group g's loss weighed by 1 / s_g: the gradient with respect to w is then the gradient at its point.
        let onehot = match &*low.factors.borrow() {
            Some((_, s)) => batch.onehot.clone() / low.rows(s, batch.len()),
            None => batch.onehot.clone(),
        };
        let loss = (logp.clone() * onehot)
            .sum()
            .neg()
            .mul_scalar(1.0 / m as f64);
        let grads = loss.backward();
        let logp = logp.without_autodiff();
        let loss_sum = (logp.clone() * batch.onehot.clone())
            .sum()
            .neg()
            .into_scalar::<f32>() as f64;
        let sam = clean.map(|clean| {
            let perturbed = low.observed_parts(&grads);
            let losses = group_losses(logp, batch, g);
            let channels = self.net.bn_channels().iter().sum();
            clean.observation(perturbed, losses, &recorded, lambda, channels)
        });
        let grad = low.descent_gradient(&grads, &leaves, w, lambda);
        let mut variant = state.variant.clone();
        let mut gradient_evals = g as u64;
        if rho != 0.0 {
            variant.steps += g as u64;
            gradient_evals += g as u64;
        }
        let out = self.descend(
            state,
            grad,
            loss_sum,
            logits.without_autodiff(),
            &batch.labels,
            lr,
        );
        if out.finite {
            bn.fold_groups(&recorded, g);
            state.bn = bn;
            state.variant = variant;
        }
        StepOutput {
            gradient_evals,
            sam,
            ..out
        }
    }
}

impl LowRank {
    /// The descent gradient, the mean over the groups of the gradient at their perturbed points, from the perturbed
    /// pass's backward (`grads`, with respect to `leaves`, the weights `w`) and with L2 (`lambda`) its own term.
    fn descent_gradient(
        &self,
        grads: &burn::tensor::Gradients,
        leaves: &[Tensor<1>],
        w: &[Tensor<1>],
        lambda: f64,
    ) -> ParamVec {
        let g = self.groups;
        // G times the descent gradient: the backward's, `G λ w + λ Σ_g δ_g` with L2, and what the backward left out.
        let c_sum = match (&*self.factors.borrow(), lambda > 0.0) {
            (Some((c, _)), true) => c.clone().sum().into_scalar::<f32>() as f64,
            _ => 0.0,
        };
        let own = lambda * (g as f64 + lambda * c_sum);
        let extra = self.extra_gradient(grads, lambda, w.len());
        leaves
            .iter()
            .zip(w)
            .zip(extra)
            .map(|((leaf, p), e)| {
                let d = match (leaf.grad(grads), e) {
                    (Some(d), Some(e)) => d + e,
                    (d, e) => d.or(e).unwrap_or_else(|| p.zeros_like()),
                };
                let d = if own > 0.0 {
                    d + p.clone().mul_scalar(own)
                } else {
                    d
                };
                d.mul_scalar(1.0 / g as f64)
            })
            .collect()
    }
}

/// Each group's mean cross-entropy from the log-probabilities `logp` of `batch`, `G` values.
fn group_losses(logp: Tensor<2>, batch: &Batch, g: usize) -> Vec<f64> {
    let n = batch.len();
    (logp * batch.onehot.clone())
        .sum_dim(1)
        .reshape([g, n / g])
        .mean_dim(1)
        .neg()
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 losses")
}

/// What an observed step's ascent leaves for its observation, per group.
struct Clean {
    /// `|A_g|²` and `w · A_g` (`A_g` the loss gradient at `w`), `[G, 2]` flat.
    parts: Vec<f64>,
    /// `c_g` and `s_g`.
    factors: Vec<f64>,
    scales: Vec<f64>,
    /// The squared norms of the clean gradients `A_g + λ w`.
    sq: Vec<f64>,
    /// `|w|²`.
    w2: f64,
    /// The groups' mean losses at `w`.
    losses: Vec<f64>,
}

impl Clean {
    /// The step's observation ([`crate::observe::mean_observation`]) from the perturbed pass's products
    /// ([`LowRank::observed_parts`]), its groups' `losses`, the passes' `recorded` BatchNorm statistics (the first
    /// pass's and the last one's, the ascent's and the descent's) and L2's `lambda`, for a network of `channels`
    /// BatchNorm channels.
    fn observation(
        &self,
        perturbed: Tensor<2>,
        losses: Vec<f64>,
        recorded: &[Vec<(usize, Tensor<2>, Tensor<2>)>],
        lambda: f64,
        channels: usize,
    ) -> SamObservation {
        let g = self.factors.len();
        let products: Vec<f64> = perturbed
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64 products");
        let shifts = bn_shifts(recorded);
        let (l, w2) = (lambda, self.w2);
        let mut values = Vec::with_capacity(g * PARTS);
        for k in 0..g {
            let (a2, wa) = (self.parts[2 * k], self.parts[2 * k + 1]);
            let (ab, bb, wb) = (products[3 * k], products[3 * k + 1], products[3 * k + 2]);
            let (c, s) = (self.factors[k], self.scales[k]);
            // The clean gradient A + λ w against the SAM gradient B + λ (w + δ) = B + λ s w + λ c A.
            let dot = ab + l * s * wa + l * c * a2 + l * wb + l * l * s * w2 + l * l * c * wa;
            let sam_sq = bb
                + l * l * s * s * w2
                + l * l * c * c * a2
                + 2.0 * l * s * wb
                + 2.0 * l * c * ab
                + 2.0 * l * l * s * c * wa;
            let [mean_shift, var_shift] = shifts.as_ref().map_or([f64::NAN; 2], |v| v[k]);
            values.extend([
                c * c * self.sq[k],
                dot,
                self.sq[k],
                sam_sq,
                self.losses[k],
                losses[k],
                mean_shift,
                var_shift,
            ]);
        }
        mean_observation(&values, w2, channels)
    }
}

/// Each group's summed squared shifts of the BatchNorm batch statistics from the first pass of `recorded` to the
/// last (as [`crate::observe`] measures them), where both updated the running statistics.
fn bn_shifts(recorded: &[Vec<(usize, Tensor<2>, Tensor<2>)>]) -> Option<Vec<[f64; 2]>> {
    let (clean, perturbed) = (recorded.first()?, recorded.last()?);
    if clean.is_empty() || perturbed.is_empty() || recorded.len() < 2 {
        return None;
    }
    let (mut mean, mut var) = (Vec::new(), Vec::new());
    for ((_, mc, vc), (_, mp, vp)) in clean.iter().zip(perturbed) {
        let scale = vc.clone().add_scalar(NORM_EPS);
        mean.push(((mp.clone() - mc.clone()).square() / scale.clone()).sum_dim(1));
        var.push(((vp.clone() - vc.clone()) / scale).square().sum_dim(1));
    }
    let sum = |parts: Vec<Tensor<2>>| Tensor::cat(parts, 1).sum_dim(1);
    let values = Tensor::cat(vec![sum(mean), sum(var)], 1)
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 shifts");
    Some(values.chunks(2).map(|v| [v[0], v[1]]).collect())
}
