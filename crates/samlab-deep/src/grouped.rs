//! m-SAM's groups in one pass: [`Trainer::step`] with the `G = B / m` groups of a batch computed together. Every
//! group's copy of the weights is stacked (group-major), each group gets its own perturbation, and BatchNorm
//! normalizes each group with its own statistics ([`Grouped`]): `G` batched matrix products and grouped
//! convolutions in place of `G` small passes.
//!
//! It takes plain SAM (normalized, unnormalized or clipped; multi-step and random-start ascents; the random
//! baseline; the ascent on the same or the previous batch; every BatchNorm policy) and ERM steps. The variants
//! keep the loop over groups: their rules ([`samlab_core::ascent`]) are written against one point at a time and
//! some carry state across groups (LookSAM's period, F-SAM's and VaSSO's averages, MSAM's momentum).
//!
//! It equals the loop to f32 rounding (tests/grouped.rs): the same passes over the same examples at the same
//! points, the same perturbation noise, and the running statistics folded in the loop's order (group by group,
//! each group's passes in turn). The step below restates plain SAM's perturbation
//! ([`samlab_core::ascent::Ascent::sam_delta`]) with one coefficient per group where the core has one scalar;
//! those tests hold the two to each other.
//!
//! Not what [`Trainer::step`] takes: on the flex backend it is slower than the loop (batch 128, m = 16: MLP
//! 768-256-256-10 with BatchNorm 0.49-0.53x the loop's speed, CNN 0.70-0.73x, PreAct ResNet-18 width 16 0.96-1.05x;
//! docs/BENCHMARKS.md). Stacking every group's copy of the weights costs more than the loop saves, and flex's
//! batched matrix products run at a quarter of one large product's speed. On the MLP the groups are computed
//! together as low-rank perturbations instead ([`crate::lowrank`]). `samlab bench-step --groups stacked` times it.

use burn::tensor::{Tensor, TensorData};
use samlab_core::sam::{AscentSource, Normalization, Perturbation, Variant};

use crate::nn::Grouped;
use crate::rng::{Purpose, Stream};
use crate::trainer::{
    axpy, normal_like, to_host, Batch, BnPolicy, ParamVec, StepOutput, TrainState, Trainer,
};

/// Every tensor of `w` repeated `g` times, group-major.
fn stack(w: &[Tensor<1>], g: usize) -> ParamVec {
    w.iter()
        .map(|t| {
            let n = t.dims()[0];
            t.clone().reshape([1, n]).repeat_dim(0, g).reshape([g * n])
        })
        .collect()
}

/// Each group's squared L2 norm over every tensor of the stacked `v` (one host synchronization).
fn group_sq_norms(v: &[Tensor<1>], g: usize) -> Vec<f64> {
    let parts: Vec<Tensor<2>> = v
        .iter()
        .map(|t| {
            let n = t.dims()[0] / g;
            t.clone().reshape([g, n]).square().sum_dim(1)
        })
        .collect();
    to_host(Tensor::cat(parts, 1).sum_dim(1))
}

/// Group `g`'s slice of the stacked `v` times `c[g]`, for every group.
fn scale_groups(v: &[Tensor<1>], c: &[f64]) -> ParamVec {
    let g = c.len();
    let factors = |like: &Tensor<1>| {
        let values: Vec<f32> = c.iter().map(|&x| x as f32).collect();
        Tensor::<2>::from_data(TensorData::new(values, [g, 1]), &like.device()).cast(like.dtype())
    };
    let c = factors(&v[0]);
    v.iter()
        .map(|t| {
            let n = t.dims()[0] / g;
            (t.clone().reshape([g, n]) * c.clone()).reshape([g * n])
        })
        .collect()
}

/// The mean over the groups of the stacked `v`.
fn mean_over_groups(v: &[Tensor<1>], g: usize) -> ParamVec {
    v.iter()
        .map(|t| {
            let n = t.dims()[0] / g;
            t.clone()
                .reshape([g, n])
                .sum_dim(0)
                .reshape([n])
                .mul_scalar(1.0 / g as f64)
        })
        .collect()
}

/// The BatchNorm statistics a step's passes recorded, pass by pass ([`crate::nn::BnStats::fold_groups`]).
type RecordedStats = Vec<Vec<(usize, Tensor<2>, Tensor<2>)>>;

impl Trainer<'_> {
    /// Whether [`Trainer::grouped_step`] can compute the `groups` groups of a step together: several groups, and
    /// plain SAM or an ERM step (`rho = 0`).
    pub fn can_take_groups_together(&self, groups: usize, rho: f64) -> bool {
        groups > 1 && (rho == 0.0 || self.sam.config().variant == Variant::Sam)
    }

    /// Each group's plain SAM perturbation of radius `rho` at the stacked weights `w`, from gradients on `ascent`
    /// (the batch itself when `whole`), recording the passes' BatchNorm statistics in `recorded`; with whether a
    /// pass at `w` updated the running statistics (the clean-pass policy) and the gradients computed.
    #[allow(clippy::too_many_arguments)]
    fn grouped_delta(
        &self,
        w: &ParamVec,
        ascent: &Batch,
        whole: bool,
        rho: f64,
        step: u64,
        bn: &mut crate::nn::BnStats,
        recorded: &mut RecordedStats,
    ) -> (ParamVec, bool, u64) {
        let c = self.sam.config();
        let g = ascent.len() / self.sam.group_size();
        let mut delta: Option<ParamVec> = None;
        if c.perturbation == Perturbation::Random || c.random_init {
            let noise: Vec<ParamVec> = (0..g as u64)
                .map(|group| {
                    let mut s = Stream::new(self.seed, Purpose::Perturb, step, group);
                    normal_like(self.net, &mut s, &self.device)
                })
                .collect();
            let z: ParamVec = (0..w.len())
                .map(|i| Tensor::cat(noise.iter().map(|z| z[i].clone()).collect(), 0))
                .collect();
            let factors = match c.perturbation {
                Perturbation::Random => vec![rho / (self.net.num_params() as f64).sqrt(); g],
                Perturbation::Ascent => group_sq_norms(&z, g)
                    .iter()
                    .map(|s| rho / s.sqrt())
                    .collect(),
            };
            let z = scale_groups(&z, &factors);
            if c.perturbation == Perturbation::Random {
                return (z, false, 0);
            }
            delta = Some(z);
        }
        // One normalized step from 0 is inside the ball (up to rounding): only longer ascents are projected.
        let project = c.normalization == Normalization::Clipped
            || (c.normalization == Normalization::Normalized
                && (c.ascent_steps > 1 || c.random_init));
        let eta = rho * c.ascent_step_mult;
        let mut clean_done = false;
        for _ in 0..c.ascent_steps {
            let at_w = delta.is_none() && whole;
            clean_done |= at_w && self.optim.bn_policy == BnPolicy::CleanPassOnly;
            let point = match &delta {
                None => w.clone(),
                Some(d) => axpy(w, 1.0, d),
            };
            let mut grouped = Grouped::new(g);
            let h = self
                .grouped_pass(&point, ascent, self.step_mode(Some(at_w)), bn, &mut grouped)
                .grads;
            recorded.push(grouped.batch_stats);
            let coef: Vec<f64> = match c.normalization {
                Normalization::Normalized => group_sq_norms(&h, g)
                    .iter()
                    .map(|s| eta / (s.sqrt() + 1e-12))
                    .collect(),
                Normalization::Unnormalized | Normalization::Clipped => vec![eta; g],
            };
            let h = scale_groups(&h, &coef);
            let mut d = match delta {
                None => h,
                Some(d) => axpy(&d, 1.0, &h),
            };
            if project {
                let norms: Vec<f64> = group_sq_norms(&d, g).iter().map(|s| s.sqrt()).collect();
                if norms.iter().any(|&n| n > rho) {
                    let shrink: Vec<f64> = norms
                        .iter()
                        .map(|&n| if n > rho { rho / n } else { 1.0 })
                        .collect();
                    d = scale_groups(&d, &shrink);
                }
            }
            delta = Some(d);
        }
        let evals = (c.ascent_steps * g) as u64;
        let delta = delta.unwrap_or_else(|| w.iter().map(Tensor::zeros_like).collect());
        (delta, clean_done, evals)
    }

    /// [`Trainer::step`] with the groups computed together (see the module doc), where
    /// [`Trainer::can_take_groups_together`].
    pub fn grouped_step(
        &self,
        state: &mut TrainState,
        batch: &Batch,
        previous: &Batch,
        lr: f64,
        rho: f64,
        step: u64,
    ) -> StepOutput {
        let c = self.sam.config();
        let m = self.sam.group_size();
        let g = batch.len() / m;
        let w = stack(&state.params, g);
        let mut bn = state.bn.clone();
        let mut recorded = RecordedStats::new();
        let mut gradient_evals = g as u64;
        let (point, mode) = if rho == 0.0 {
            (w.clone(), self.step_mode(Some(true)))
        } else {
            let same_batch = c.ascent_source == AscentSource::SameBatch
                || c.perturbation == Perturbation::Random;
            let ascent = if same_batch { batch } else { previous };
            let (delta, clean_done, evals) =
                self.grouped_delta(&w, ascent, same_batch, rho, step, &mut bn, &mut recorded);
            gradient_evals += evals;
            if self.optim.bn_policy == BnPolicy::CleanPassOnly && !clean_done {
                // The running statistics take in each group once, at w, as in an ERM step.
                let mut grouped = Grouped::new(g);
                self.grouped_forward(&w, batch, &mut bn, &mut grouped);
                recorded.push(grouped.batch_stats);
            }
            (axpy(&w, 1.0, &delta), self.step_mode(None))
        };
        let mut grouped = Grouped::new(g);
        let pass = self.grouped_pass(&point, batch, mode, &mut bn, &mut grouped);
        recorded.push(grouped.batch_stats);
        let grad = mean_over_groups(&pass.grads, g);
        let loss_sum = pass.loss.into_scalar::<f32>() as f64 * m as f64;
        let mut variant = state.variant.clone();
        if rho != 0.0 {
            variant.steps += g as u64;
        }
        let out = self.descend(state, grad, loss_sum, pass.logits, &batch.labels, lr);
        if out.finite {
            bn.fold_groups(&recorded, g);
            state.bn = bn;
            state.variant = variant;
        }
        StepOutput {
            gradient_evals,
            ..out
        }
    }
}
