//! m-SAM's groups as low-rank perturbations of one set of weights: [`Trainer::step`] for the `G = B / m` groups of
//! a plain-SAM step on the MLP, with products over the whole batch where [`crate::grouped`] stacks one copy of the
//! weights per group.
//!
//! On a Linear layer `y = x W + b`, group `g`'s gradient of its mean loss is `X_gᵀ dY_g` (and `1ᵀ dY_g` for the
//! bias): `X_g` the layer's inputs over the group's `m` examples, `dY_g` the loss gradient at its outputs, both from
//! one ascent pass over the batch. Weights perturbed by `c_g` times that gradient act on another pass's inputs
//! `X'_g` as `X'_g W + b + c_g (X'_g X_gᵀ + 1 1ᵀ) dY_g`: one product over the batch plus two `m x m` ones per group,
//! and autodiff through that expression gives the gradient at the perturbed weights. The products of two such
//! gradients come from the same Gram matrices, `(X_gᵀ dY_g) · (X'_gᵀ dY'_g) = Σ (X'_g X_gᵀ) ∘ (dY'_g dY_gᵀ)`. The
//! BatchNorm layers' scale and shift are small: their per-group gradients are formed directly, and each group's
//! normalization uses its own perturbed copy (ghost BatchNorm per group, as the loop has).
//!
//! A k-step ascent makes k such passes, each at the point the previous ones reached: group `g`'s perturbation is
//! `α_g w + Σ_j β_jg ∇CE_jg` (the weights' own term from L2, which adds `λ w` to every gradient), and each step's
//! norms and projection onto the ρ-ball come from the Gram matrix of `w` and the passes' gradients, per group, on
//! the host. Every parameter of group `g`'s point is then `s_g w + ...` with `s_g = 1 + α_g`: the layers scale their
//! outputs by `s_g`, and the descent weighs group `g`'s loss by `1 / s_g`, which makes the gradient with respect to
//! `w` the gradient at the perturbed point. The L2 term's own gradient there, `λ (w + mean_g δ_g)`, is added from
//! the recorded passes.
//!
//! When the ascent is on the batch itself, the first layer's inputs are the same in every pass: its outputs come
//! from the first pass's product and Gram matrices, and its gradient is formed from theirs (one product over the
//! batch per pass fewer, the largest layer's).
//!
//! It takes plain SAM (normalized, unnormalized or clipped; one or several ascent steps from `w`; on the same or the
//! previous batch; every BatchNorm policy) and ERM steps with ghost BatchNorm, on networks of Linear, BatchNorm and
//! ReLU layers (the MLP) in f32 ([`Trainer::can_take_low_rank`]). Everything else keeps the loop: random-start
//! ascents and the random baseline perturb each group by its own full-rank noise, convolutions have no cheap Gram
//! form, and the variants' rules ([`samlab_core::ascent`]) carry state across groups. It equals the loop to f32
//! rounding (tests/grouped.rs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Gradients, Tensor, TensorData};
use samlab_core::ascent::SamObservation;
use samlab_core::sam::{AscentSource, Normalization, Perturbation, Variant};

use crate::models::Arch;
use crate::nn::{BnMode, BnStats, Ctx, Grouped};
use crate::observe::{mean_observation, stat_shifts, PARTS};
use crate::trainer::{
    sq_norm, to_host, Batch, BnPolicy, ParamVec, Precision, StepOutput, TrainState, Trainer,
    WeightDecay,
};

/// One Linear or BatchNorm layer as a pass over the groups saw it.
#[derive(Debug)]
struct Layer {
    /// The parameters' indices: a Linear layer's weight and bias, a BatchNorm's scale and shift.
    params: [usize; 2],
    /// Whether it is a BatchNorm layer.
    norm: bool,
    /// Linear: the inputs `X` `[B, in]`; BatchNorm: the normalized inputs `[B, C]`.
    x: Tensor<2>,
    /// Linear: `X W + b`, unperturbed; BatchNorm: the shared scale and shift, `[2, C]`.
    y: Tensor<2>,
    /// Linear: `X_g X_jᵀ` `[G, m, m]` for each earlier pass `j` whose gradient perturbs this one.
    cross: Vec<Tensor<3>>,
    /// The leaf at the outputs (a zero probe, or the first layer's outputs).
    out: Tensor<2>,
    /// After the backward: the gradient of the groups' own losses at the outputs, `[B, out]`.
    dy: Option<Tensor<2>>,
    /// After the backward, a Linear layer's: the Gram matrices `X_g X_gᵀ` `[G, m, m]`.
    gram: Option<Tensor<3>>,
    /// After the backward, a BatchNorm's: the per-group gradients of the scale and of the shift, `[G, C]` each.
    affine: Option<[Tensor<2>; 2]>,
}

impl Layer {
    /// A layer as a pass saw it, before the backward.
    fn new(
        params: [usize; 2],
        norm: bool,
        x: Tensor<2>,
        y: Tensor<2>,
        cross: Vec<Tensor<3>>,
        out: Tensor<2>,
    ) -> Self {
        Layer {
            params,
            norm,
            x,
            y,
            cross,
            out,
            dy: None,
            gram: None,
            affine: None,
        }
    }
}

/// The state of one step's passes over its groups (see the module doc), shared through [`Grouped`].
#[derive(Debug)]
pub struct LowRank {
    groups: usize,
    /// The ascent passes whose gradients perturb the next passes.
    terms: RefCell<Vec<Vec<Layer>>>,
    /// Each group's factor on each term, `β_j` `[G]`, and its scale `s` `[G]` (none: the unperturbed weights).
    factors: RefCell<Option<(Vec<Tensor<1>>, Tensor<1>)>>,
    /// The layers of the pass in progress, when it keeps them.
    current: RefCell<Vec<Layer>>,
    /// Whether the pass in progress keeps its layers, with a probe on each output.
    keep: Cell<bool>,
    /// The next layer of the pass in progress.
    cursor: Cell<usize>,
    /// Whether every pass is over the same examples: then the first layer's inputs are the same in each.
    same_inputs: Cell<bool>,
    /// The first layer's outputs in the descent, a leaf when they come from the first pass: the first layer's
    /// gradient is then formed from theirs ([`LowRank::extra_gradient`]).
    first: RefCell<Option<Tensor<2>>>,
}

/// A row weight per group `[G]` repeated over the group's rows, `[B, 1]`.
fn rows(v: &Tensor<1>, g: usize, b: usize) -> Tensor<2> {
    v.clone()
        .reshape([g, 1, 1])
        .repeat_dim(1, b / g)
        .reshape([b, 1])
}

/// `[B, k] -> [G, k]`, summed over each group's rows.
fn group_sums(t: Tensor<2>, g: usize) -> Tensor<2> {
    let [n, k] = t.dims();
    t.reshape([g, n / g, k]).sum_dim(1).reshape([g, k])
}

impl LowRank {
    fn new(groups: usize) -> Rc<Self> {
        Rc::new(LowRank {
            groups,
            terms: RefCell::new(Vec::new()),
            factors: RefCell::new(None),
            current: RefCell::new(Vec::new()),
            keep: Cell::new(false),
            cursor: Cell::new(0),
            same_inputs: Cell::new(false),
            first: RefCell::new(None),
        })
    }

    /// Starts a pass that keeps its layers (`keep`) or not.
    fn start(&self, keep: bool) {
        self.keep.set(keep);
        self.cursor.set(0);
        self.current.borrow_mut().clear();
    }

    /// The index of the pass's next Linear or BatchNorm layer.
    fn next_layer(&self) -> usize {
        let k = self.cursor.get();
        self.cursor.set(k + 1);
        k
    }

    /// `out` with a zero probe added and the layer kept (`layer` of the probe), when the pass keeps its layers.
    fn kept(&self, out: Tensor<2>, layer: impl FnOnce(Tensor<2>) -> Layer) -> Tensor<2> {
        if !self.keep.get() {
            return out;
        }
        let probe = Tensor::zeros(out.dims(), &out.device())
            .autodiff()
            .require_grad();
        self.current.borrow_mut().push(layer(probe.clone()));
        out + probe
    }

    /// A Linear layer `x W + b` (`w` `[in, out]`, `b` `[1, out]`; `params` their indices) in this pass.
    pub(crate) fn linear(
        &self,
        x: Tensor<2>,
        w: Tensor<2>,
        b: Tensor<2>,
        params: [usize; 2],
    ) -> Tensor<2> {
        let k = self.next_layer();
        let factors = self.factors.borrow();
        let terms = self.terms.borrow();
        let [n, din] = x.dims();
        let (g, m) = (self.groups, n / self.groups);
        let Some((c, s)) = factors.as_ref() else {
            let y = x.clone().matmul(w) + b;
            let layer = |probe| {
                let (x, y) = (x.without_autodiff(), y.clone().without_autodiff());
                Layer::new(params, false, x, y, Vec::new(), probe)
            };
            return self.kept(y.clone(), layer);
        };
        // c_j (X_g X_jgᵀ + 1 1ᵀ) dY_jg over the perturbing passes j.
        let low = |cross: &[Tensor<3>]| {
            let parts = terms.iter().zip(cross).zip(c).map(|((term, gram), c)| {
                let dy = term[k].dy.clone().expect("dY after the pass's backward");
                let dout = dy.dims()[1];
                (gram
                    .clone()
                    .add_scalar(1.0)
                    .matmul(dy.reshape([g, m, dout]))
                    * c.clone().reshape([g, 1, 1]))
                .reshape([n, dout])
            });
            parts.reduce(|a, b| a + b).expect("a perturbing pass")
        };
        let first = &terms[0][k];
        if k == 0 && self.same_inputs.get() {
            // The first pass's inputs: its product and Gram matrices serve again.
            let Some(gram) = &first.gram else {
                panic!("the first pass's Gram matrices");
            };
            let cross = vec![gram.clone(); terms.len()];
            let value = first.y.clone() * rows(s, g, n) + low(&cross);
            // A leaf: its gradient gives the first layer's ([`LowRank::extra_gradient`]) and the pass's `dY`.
            let leaf = value.autodiff().require_grad();
            *self.first.borrow_mut() = Some(leaf.clone());
            if self.keep.get() {
                let (x, y) = (first.x.clone(), first.y.clone());
                let layer = Layer::new(params, false, x, y, cross, leaf.clone());
                self.current.borrow_mut().push(layer);
            }
            return leaf;
        }
        let xg = x.clone().reshape([g, m, din]);
        let cross: Vec<Tensor<3>> = terms
            .iter()
            .map(|term| {
                xg.clone()
                    .matmul(term[k].x.clone().reshape([g, m, din]).swap_dims(1, 2))
            })
            .collect();
        let y = x.clone().matmul(w) + b;
        let out = y.clone() * rows(s, g, n) + low(&cross);
        let layer = |probe| {
            let cross = cross.into_iter().map(|t| t.without_autodiff()).collect();
            Layer::new(
                params,
                false,
                x.without_autodiff(),
                y.without_autodiff(),
                cross,
                probe,
            )
        };
        self.kept(out, layer)
    }

    /// A BatchNorm layer's output `[B, C]` from its inputs normalized per group, `xhat` `[G, m, C]`, and its scale
    /// and shift (`[C]` each, indices `params`), each group's perturbed where the pass is perturbed.
    pub(crate) fn norm(
        &self,
        xhat: Tensor<3>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        params: [usize; 2],
    ) -> Tensor<2> {
        let k = self.next_layer();
        let [g, m, c] = xhat.dims();
        let shared = |t: &Tensor<1>| t.clone().reshape([1, 1, c]);
        let (gamma_g, beta_g) = match self.factors.borrow().as_ref() {
            None => (shared(&gamma), shared(&beta)),
            Some((cs, s)) => {
                let s = s.clone().reshape([g, 1, 1]);
                let (mut gm, mut bt) = (shared(&gamma) * s.clone(), shared(&beta) * s);
                for (term, cf) in self.terms.borrow().iter().zip(cs) {
                    let Some([dg, db]) = &term[k].affine else {
                        panic!("per-group gradients of the scale and shift");
                    };
                    let cf = cf.clone().reshape([g, 1, 1]);
                    gm = gm + dg.clone().reshape([g, 1, c]) * cf.clone();
                    bt = bt + db.clone().reshape([g, 1, c]) * cf;
                }
                (gm, bt)
            }
        };
        let out = (xhat.clone() * gamma_g + beta_g).reshape([g * m, c]);
        let layer = |probe| {
            let x = xhat.reshape([g * m, c]).without_autodiff();
            let y = Tensor::stack::<2>(vec![gamma, beta], 0).without_autodiff();
            Layer::new(params, true, x, y, Vec::new(), probe)
        };
        self.kept(out, layer)
    }

    /// After the backward (`grads`) of a pass that kept its layers: each layer's `dY` (the backward's times
    /// `scale`, the descent's loss weights undone), and each group's products of this pass's loss gradient `A`
    /// with every perturbing pass's `A_j`, with itself and with the weights, `[G, J + 2]`: `A_j · A`, `|A|²`,
    /// `w · A`. The layers are returned.
    fn products(&self, grads: &Gradients, scale: Option<&Tensor<1>>) -> (Vec<Layer>, Tensor<2>) {
        let g = self.groups;
        let terms = self.terms.borrow();
        let mut layers = std::mem::take(&mut *self.current.borrow_mut());
        let mut parts: Vec<Tensor<2>> = Vec::new();
        for (k, layer) in layers.iter_mut().enumerate() {
            let mut dy = layer
                .out
                .grad(grads)
                .unwrap_or_else(|| layer.out.zeros_like().without_autodiff());
            let [n, out] = dy.dims();
            if let Some(s) = scale {
                dy = dy * rows(s, g, n);
            }
            let m = n / g;
            let mut cols: Vec<Tensor<2>> = Vec::new();
            if layer.norm {
                // BatchNorm: the per-group gradients of the scale and shift directly.
                let dg = group_sums(dy.clone() * layer.x.clone(), g);
                let db = group_sums(dy.clone(), g);
                let dot = |a: &Tensor<2>, b: &Tensor<2>| (a.clone() * b.clone()).sum_dim(1);
                for term in terms.iter() {
                    let Some([tg, tb]) = &term[k].affine else {
                        panic!("per-group gradients of the scale and shift");
                    };
                    cols.push(dot(tg, &dg) + dot(tb, &db));
                }
                let gamma = layer.y.clone().narrow(0, 0, 1);
                let beta = layer.y.clone().narrow(0, 1, 1);
                cols.push(dot(&dg, &dg) + dot(&db, &db));
                cols.push((dg.clone() * gamma + db.clone() * beta).sum_dim(1));
                layer.affine = Some([dg, db]);
            } else {
                let din = layer.x.dims()[1];
                let grouped = |t: Tensor<2>, k: usize| t.reshape([g, m, k]);
                let dyg = grouped(dy.clone(), out);
                let total = |t: Tensor<3>| t.reshape([g, m * m]).sum_dim(1);
                let bias = |a: &Tensor<2>, b: &Tensor<2>| {
                    (group_sums(a.clone(), g) * group_sums(b.clone(), g)).sum_dim(1)
                };
                for (term, cross) in terms.iter().zip(&layer.cross) {
                    let tdy = term[k].dy.clone().expect("dY");
                    let d = dyg
                        .clone()
                        .matmul(grouped(tdy.clone(), out).swap_dims(1, 2));
                    cols.push(total(cross.clone() * d) + bias(&tdy, &dy));
                }
                let gram = match layer
                    .cross
                    .first()
                    .filter(|_| k == 0 && self.same_inputs.get())
                {
                    Some(gram) => gram.clone(),
                    None => {
                        let xg = grouped(layer.x.clone(), din);
                        xg.clone().matmul(xg.swap_dims(1, 2))
                    }
                };
                let d = dyg.clone().matmul(dyg.clone().swap_dims(1, 2));
                cols.push(total(gram.clone() * d) + bias(&dy, &dy));
                cols.push(
                    (layer.y.clone() * dy.clone())
                        .reshape([g, m * out])
                        .sum_dim(1),
                );
                layer.gram = Some(gram);
            }
            parts.push(Tensor::cat(cols, 1));
            layer.dy = Some(dy);
        }
        let stacked: Tensor<3> = Tensor::stack(parts, 0);
        let j = terms.len() + 2;
        (layers, stacked.sum_dim(0).reshape([g, j]))
    }

    /// What the descent's backward (`grads`) leaves out of `G` times the descent gradient, per parameter (of
    /// `params`): the first layer's gradient where its outputs came from the first pass, and with L2 (`lambda`) the
    /// part of `λ Σ_g δ_g` along the passes' loss gradients, `λ Σ_j Σ_g β_jg ∇CE_jg`.
    fn extra_gradient(
        &self,
        grads: &Gradients,
        lambda: f64,
        params: usize,
    ) -> Vec<Option<Tensor<1>>> {
        let g = self.groups;
        let mut out: Vec<Option<Tensor<1>>> = vec![None; params];
        let factors = self.factors.borrow();
        let Some((cs, s)) = factors.as_ref() else {
            return out;
        };
        let add = |slot: &mut Option<Tensor<1>>, t: Tensor<1>| {
            *slot = Some(match slot.take() {
                Some(a) => a + t,
                None => t,
            });
        };
        let terms = self.terms.borrow();
        let first = self.first.borrow();
        let layers = terms[0].len();
        for k in 0..layers {
            let [a, b] = terms[0][k].params;
            let n = terms[0][k].x.dims()[0];
            // The layer's extra gradient as row weights on the inputs, where the inputs are the same in every pass.
            let mut shared: Option<Tensor<2>> = None;
            if let (0, Some(y)) = (k, first.as_ref()) {
                shared = Some(y.grad(grads).expect("the first layer's gradient") * rows(s, g, n));
            }
            if lambda > 0.0 {
                for (term, c) in terms.iter().zip(cs) {
                    let c = c.clone().mul_scalar(lambda);
                    let layer = &term[k];
                    match &layer.affine {
                        Some([dg, db]) => {
                            let c = c.reshape([g, 1]);
                            let sum = |t: &Tensor<2>| {
                                (t.clone() * c.clone()).sum_dim(0).reshape([t.dims()[1]])
                            };
                            add(&mut out[a], sum(dg));
                            add(&mut out[b], sum(db));
                        }
                        _ => {
                            let rows = layer.dy.clone().expect("dY") * rows(&c, g, n);
                            if shared.is_some() {
                                shared = shared.map(|r| r + rows);
                            } else {
                                let (x, dout) = (layer.x.clone(), rows.dims()[1]);
                                let din = x.dims()[1];
                                add(
                                    &mut out[a],
                                    x.transpose().matmul(rows.clone()).reshape([din * dout]),
                                );
                                add(&mut out[b], rows.sum_dim(0).reshape([dout]));
                            }
                        }
                    }
                }
            }
            if let Some(r) = shared {
                let (x, dout) = (terms[0][k].x.clone(), r.dims()[1]);
                let din = x.dims()[1];
                add(
                    &mut out[a],
                    x.transpose().matmul(r.clone()).reshape([din * dout]),
                );
                add(&mut out[b], r.sum_dim(0).reshape([dout]));
            }
        }
        out
    }

    /// The descent gradient, the mean over the groups of the gradient at their perturbed points, from the descent's
    /// backward (`grads`, with respect to `leaves`, the weights `w`), with L2's (`lambda`) own term; `alpha_sum` is
    /// `Σ_g α_g`.
    fn descent_gradient(
        &self,
        grads: &Gradients,
        leaves: &[Tensor<1>],
        w: &[Tensor<1>],
        lambda: f64,
        alpha_sum: f64,
    ) -> ParamVec {
        let g = self.groups as f64;
        // G times the descent gradient: the backward's, `G λ w + λ Σ_g δ_g` with L2, and what the backward left out.
        let own = lambda * (g + alpha_sum);
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
                d.mul_scalar(1.0 / g)
            })
            .collect()
    }
}

/// One group's perturbation in the basis `w, A_0, A_1, ...` (the weights and the ascent passes' loss gradients),
/// with the Gram matrix of that basis.
#[derive(Clone, Debug)]
struct Basis {
    /// `M[i][j]`, the products of the basis vectors.
    gram: Vec<Vec<f64>>,
    /// The perturbation's coefficients.
    delta: Vec<f64>,
}

impl Basis {
    /// The basis `{w}` with `|w|² = w2` and no perturbation.
    fn new(w2: f64) -> Self {
        Basis {
            gram: vec![vec![w2]],
            delta: vec![0.0],
        }
    }

    /// `aᵀ M b`.
    fn dot(&self, a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .enumerate()
            .map(|(i, x)| x * b.iter().zip(&self.gram[i]).map(|(y, m)| y * m).sum::<f64>())
            .sum()
    }

    /// Adds a pass's loss gradient `A` from its products `p` (`A_j · A` for the earlier passes, `|A|²`, `w · A`).
    fn push(&mut self, p: &[f64]) {
        let j = self.gram.len() - 1;
        let (with_terms, sq, with_w) = (&p[..j], p[j], p[j + 1]);
        let mut row = vec![with_w];
        row.extend_from_slice(with_terms);
        for (i, r) in self.gram.iter_mut().enumerate() {
            r.push(row[i]);
        }
        row.push(sq);
        self.gram.push(row);
        self.delta.push(0.0);
    }

    /// The ascent direction `A_last + λ (w + δ)`, the last pass's full gradient.
    fn gradient(&self, lambda: f64) -> Vec<f64> {
        let mut h: Vec<f64> = self.delta.iter().map(|d| lambda * d).collect();
        h[0] += lambda;
        *h.last_mut().expect("a pass") += 1.0;
        h
    }
}

impl Trainer<'_> {
    /// Whether [`Trainer::low_rank_step`] computes the `groups` groups of a step at radius `rho`: several groups, a
    /// network of Linear, BatchNorm and ReLU layers (the MLP) in f32, and an ERM step or plain SAM whose ascent
    /// starts from `w`.
    pub fn can_take_low_rank(&self, groups: usize, rho: f64) -> bool {
        let c = self.sam.config();
        let spec = self.net.spec();
        groups > 1
            && spec.arch == Arch::Mlp
            && self.precision == Precision::F32
            && (rho == 0.0
                || (c.variant == Variant::Sam
                    && c.perturbation == Perturbation::Ascent
                    && !c.random_init))
    }

    /// A forward pass over the groups of `low` at `params` on `batch`, its BatchNorm statistics added to
    /// `recorded`; the logits.
    fn low_rank_forward(
        &self,
        params: &[Tensor<1>],
        batch: &Batch,
        mode: BnMode,
        bn: &mut BnStats,
        low: &Rc<LowRank>,
        recorded: &mut Vec<Vec<(usize, Tensor<2>, Tensor<2>)>>,
    ) -> Tensor<2> {
        let mut grouped = Grouped::new(low.groups);
        grouped.low_rank = Some(low.clone());
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

    /// Sets `low`'s factors from each group's perturbation (`bases`), for the next pass.
    fn set_factors(&self, low: &LowRank, bases: &[Basis]) {
        let g = bases.len();
        let to_device = |v: Vec<f64>| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Tensor::<1>::from_data(TensorData::new(v, [g]), &self.device)
        };
        let terms = bases[0].delta.len() - 1;
        let factors = (1..=terms)
            .map(|j| to_device(bases.iter().map(|b| b.delta[j]).collect()))
            .collect();
        let scale = to_device(bases.iter().map(|b| 1.0 + b.delta[0]).collect());
        *low.factors.borrow_mut() = Some((factors, scale));
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
        let low = LowRank::new(g);
        low.same_inputs.set(same_batch);
        let mut bases = vec![Basis::new(0.0); g];
        let mut clean_losses = None;
        let mut steps = 0;
        if rho != 0.0 {
            let ascent = if same_batch { batch } else { previous };
            let w2 = if lambda > 0.0 || observe {
                sq_norm(w)
            } else {
                0.0
            };
            bases = vec![Basis::new(w2); g];
            // One normalized step from 0 is inside the ball (up to rounding): only longer ascents are projected.
            let project = c.normalization == Normalization::Clipped
                || (c.normalization == Normalization::Normalized && c.ascent_steps > 1);
            let eta = rho * c.ascent_step_mult;
            for step in 0..c.ascent_steps {
                low.start(true);
                let mode = self.step_mode(Some(step == 0 && same_batch));
                let logits = self.low_rank_forward(w, ascent, mode, &mut bn, &low, &mut recorded);
                let logp = log_softmax(logits, 1);
                let ce = (logp.clone() * ascent.onehot.clone())
                    .sum()
                    .neg()
                    .mul_scalar(1.0 / m as f64);
                let (layers, products) = low.products(&ce.backward(), None);
                if step == 0 && observe {
                    clean_losses = Some(group_losses(logp.without_autodiff(), ascent, g));
                }
                low.terms.borrow_mut().push(layers);
                let products = to_host(products);
                for (basis, p) in bases.iter_mut().zip(products.chunks(products.len() / g)) {
                    basis.push(p);
                    let h = basis.gradient(lambda);
                    let norm = basis.dot(&h, &h).max(0.0).sqrt();
                    let coef = match c.normalization {
                        Normalization::Normalized => eta / (norm + 1e-12),
                        Normalization::Unnormalized | Normalization::Clipped => eta,
                    };
                    for (d, h) in basis.delta.iter_mut().zip(&h) {
                        *d += coef * h;
                    }
                    let length = basis.dot(&basis.delta, &basis.delta).max(0.0).sqrt();
                    if project && length > rho {
                        basis.delta.iter_mut().for_each(|d| *d *= rho / length);
                    }
                }
                self.set_factors(&low, &bases);
            }
            steps = c.ascent_steps;
            if self.optim.bn_policy == BnPolicy::CleanPassOnly && !same_batch {
                // The running statistics take in each group once, at w, as in an ERM step.
                let plain = LowRank::new(g);
                let update = BnMode::Batch { update: true };
                let _ = self.low_rank_forward(w, batch, update, &mut bn, &plain, &mut recorded);
            }
        }
        // The descent: the perturbed pass, its gradient with respect to w weighed per group.
        low.start(observe);
        let leaves: ParamVec = w
            .iter()
            .map(|p| p.clone().autodiff().require_grad())
            .collect();
        let mode = self.step_mode(if rho == 0.0 { Some(true) } else { None });
        let logits = self.low_rank_forward(&leaves, batch, mode, &mut bn, &low, &mut recorded);
        let logp = log_softmax(logits.clone(), 1);
        let scale = low.factors.borrow().as_ref().map(|(_, s)| s.clone());
        // Group g's loss weighed by 1 / s_g: the gradient with respect to w is then the gradient at its point.
        let onehot = match &scale {
            Some(s) => batch.onehot.clone() / rows(s, g, batch.len()),
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
        let sam = clean_losses.map(|clean| {
            let (_, products) = low.products(&grads, scale.as_ref());
            let channels = self.net.bn_channels().iter().sum();
            let perturbed = group_losses(logp, batch, g);
            let losses = [clean, perturbed];
            observation(
                &bases,
                &to_host(products),
                losses,
                &recorded,
                lambda,
                channels,
            )
        });
        let alpha_sum = bases.iter().map(|b| b.delta[0]).sum();
        let grad = low.descent_gradient(&grads, &leaves, w, lambda, alpha_sum);
        let mut variant = state.variant.clone();
        let gradient_evals = ((steps + 1) * g) as u64;
        if rho != 0.0 {
            variant.steps += g as u64;
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

/// Each group's mean cross-entropy from the log-probabilities `logp` of `batch`, `G` values.
fn group_losses(logp: Tensor<2>, batch: &Batch, g: usize) -> Vec<f64> {
    let n = batch.len();
    to_host(
        (logp * batch.onehot.clone())
            .sum_dim(1)
            .reshape([g, n / g])
            .mean_dim(1)
            .neg(),
    )
}

/// The step's observation ([`crate::observe::mean_observation`]) from each group's perturbation (`bases`), the
/// descent's products (`B · A_j`, `|B|²`, `w · B` per group, [`LowRank::products`]), the groups' mean losses at `w`
/// and at their perturbed points, the passes' `recorded` BatchNorm statistics (the first pass's and the last one's)
/// and L2's `lambda`, for a network of `channels` BatchNorm channels.
fn observation(
    bases: &[Basis],
    products: &[f64],
    [clean, perturbed]: [Vec<f64>; 2],
    recorded: &[Vec<(usize, Tensor<2>, Tensor<2>)>],
    lambda: f64,
    channels: usize,
) -> SamObservation {
    let g = bases.len();
    let shifts = bn_shifts(recorded);
    let mut values = Vec::with_capacity(g * PARTS);
    for (k, (basis, p)) in bases
        .iter()
        .zip(products.chunks(products.len() / g))
        .enumerate()
    {
        let j = basis.delta.len() - 1;
        let (with_terms, bb, wb) = (&p[..j], p[j], p[j + 1]);
        // B's products with the basis w, A_0, A_1, ...
        let mut with_b = vec![wb];
        with_b.extend_from_slice(with_terms);
        let along = |v: &[f64]| v.iter().zip(&with_b).map(|(x, y)| x * y).sum::<f64>();
        // The clean gradient u = A_0 + λ w against the SAM gradient B + λ (w + δ).
        let mut u = vec![0.0; j + 1];
        (u[0], u[1]) = (lambda, 1.0);
        let mut wd = basis.delta.clone();
        wd[0] += 1.0;
        let dot = along(&u) + lambda * basis.dot(&u, &wd);
        let sam_sq = bb + 2.0 * lambda * along(&wd) + lambda * lambda * basis.dot(&wd, &wd);
        let [mean_shift, var_shift] = shifts.as_ref().map_or([f64::NAN; 2], |v| v[k]);
        // The clean gradient is the observation's only for a one-step ascent, as the loop keeps it
        // ([`samlab_core::ascent::Ascent::clean_gradient`]): the cosine is not measured after several steps.
        let cosine = if j == 1 {
            [dot, basis.dot(&u, &u), sam_sq]
        } else {
            [f64::NAN; 3]
        };
        values.extend([
            basis.dot(&basis.delta, &basis.delta),
            cosine[0],
            cosine[1],
            cosine[2],
            clean[k],
            perturbed[k],
            mean_shift,
            var_shift,
        ]);
    }
    mean_observation(&values, bases[0].gram[0][0], channels)
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
        let [m, v] = stat_shifts((mc.clone(), vc.clone()), (mp.clone(), vp.clone()));
        mean.push(m.sum_dim(1));
        var.push(v.sum_dim(1));
    }
    let sum = |parts: Vec<Tensor<2>>| Tensor::cat(parts, 1).sum_dim(1);
    let values = to_host(Tensor::cat(vec![sum(mean), sum(var)], 1));
    Some(values.chunks(2).map(|v| [v[0], v[1]]).collect())
}
