//! The deep engine's [`SamObservation`] of every SAM step, from what the step computes anyway: its perturbation,
//! the ascent's gradient at `w` (the clean gradient, when the ascent starts at `w` on the micro-batch itself), the
//! group's descent direction, the mean losses of the clean and the perturbed pass, and the BatchNorm running
//! statistics around them. Nothing is recomputed and the step's arithmetic is untouched; the step synchronizes
//! once more with the host, for all its groups together. The products over every parameter still cost about a
//! fifth of a step of the paper's m-SAM MLP (m = 16 of 128, CPU backend): a run observes every
//! [`crate::run::OBSERVE_EVERY`]th step (then within the noise of its update time).
//!
//! The batch statistics of a pass are recovered from the running statistics it updated ($r' = (1 - \mu) r +
//! \mu b$, so $b = (r' - (1 - \mu) r) / \mu$; in f32 that resolves shifts above about $10^{-6}$): the BatchNorm
//! shift is measured under [`crate::trainer::BnPolicy::BothPasses`], where both passes update them, and absent
//! under the other policies.

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::ascent::{Ascent, GroupParts, ObservationMean, SamObservation};

use crate::nn::{BnStats, BN_MOMENTUM, NORM_EPS};
use crate::oracle::{GroupRecord, PassRecord, Tensors};
use crate::trainer::{to_host, ParamVec};

/// Number of scalars [`group_parts`] gives per group.
pub(crate) const PARTS: usize = 8;

/// `sum_i <a_i, b_i>` as a one-element tensor on the device.
fn inner(a: &[Tensor<1>], b: &[Tensor<1>]) -> Tensor<1> {
    let parts: Vec<Tensor<1>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.clone() * y.clone()).sum())
        .collect();
    Tensor::cat(parts, 0).sum()
}

/// A one-element tensor holding `x` on `device`.
fn scalar(x: f32, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![x], [1]), device)
}

/// The batch statistics (mean and unbiased variance per slot) a pass folded into `before` to give `after`.
fn batch_stats((before, after): &(BnStats, BnStats)) -> Vec<(Tensor<1>, Tensor<1>)> {
    let recover = |b: &Tensor<1>, a: &Tensor<1>| {
        (a.clone() - b.clone().mul_scalar(1.0 - BN_MOMENTUM)).mul_scalar(1.0 / BN_MOMENTUM)
    };
    (0..before.mean.len())
        .map(|s| {
            (
                recover(&before.mean[s], &after.mean[s]),
                recover(&before.var[s], &after.var[s]),
            )
        })
        .collect()
}

/// The squared shifts of BatchNorm batch statistics, channel by channel, from the `clean` pass's `(mean, unbiased
/// variance)` to the `perturbed` one's: the mean's in clean standard deviations, the variance's relative.
pub(crate) fn stat_shifts<const D: usize>(
    (mc, vc): (Tensor<D>, Tensor<D>),
    (mp, vp): (Tensor<D>, Tensor<D>),
) -> [Tensor<D>; 2] {
    let scale = vc.clone().add_scalar(NORM_EPS);
    [
        (mp - mc).square() / scale.clone(),
        ((vp - vc) / scale).square(),
    ]
}

/// The summed squared shifts of the BatchNorm batch statistics from `clean` to `perturbed` (mean in clean
/// standard deviations, variance relative), or `None` without both.
fn bn_shift(clean: &PassRecord, perturbed: &PassRecord) -> Option<[Tensor<1>; 2]> {
    let (c, p) = (
        batch_stats(clean.bn.as_ref()?),
        batch_stats(perturbed.bn.as_ref()?),
    );
    let (mut mean, mut var) = (Vec::new(), Vec::new());
    for (clean, perturbed) in c.into_iter().zip(p) {
        let [m, v] = stat_shifts(clean, perturbed);
        mean.push(m.sum());
        var.push(v.sum());
    }
    (!mean.is_empty()).then(|| [Tensor::cat(mean, 0).sum(), Tensor::cat(var, 0).sum()])
}

/// A group's observation, still on the device: `PARTS` scalars (squared perturbation norm, the products of the
/// clean and the SAM gradient, both losses, the BatchNorm sums), NaN where not measured.
pub(crate) fn group_parts(sam: &Ascent<Tensors>, w: &ParamVec, record: GroupRecord) -> Tensor<1> {
    let device = w[0].device();
    let nan = || scalar(f32::NAN, &device);
    let delta = sam
        .delta()
        .map_or_else(|| scalar(0.0, &device), |d| inner(d, d));
    let [gp, gg, pp] = match (sam.clean_gradient(), sam.perturbed_gradient()) {
        (Some(g), Some(p)) => [inner(g, p), inner(g, g), inner(p, p)],
        _ => [nan(), nan(), nan()],
    };
    let [clean_loss, perturbed_loss] = match (&record.clean, &record.perturbed) {
        (Some(c), Some(p)) => [c.loss.clone(), p.loss.clone()],
        _ => [nan(), nan()],
    };
    let bn = match (&record.clean, &record.perturbed) {
        (Some(c), Some(p)) => bn_shift(c, p),
        _ => None,
    };
    let [bn_mean, bn_var] = bn.unwrap_or_else(|| [nan(), nan()]);
    let parts: [Tensor<1>; PARTS] = [
        delta,
        gp,
        gg,
        pp,
        clean_loss,
        perturbed_loss,
        bn_mean,
        bn_var,
    ];
    Tensor::cat(parts.to_vec(), 0)
}

/// The step's observation, the mean over its groups' `parts` at weights `w` of `bn_channels` BatchNorm
/// channels (one host synchronization).
pub(crate) fn step_observation(
    parts: Vec<Tensor<1>>,
    w: &[Tensor<1>],
    bn_channels: usize,
) -> SamObservation {
    let mut all = parts;
    all.push(inner(w, w));
    let values = to_host(Tensor::cat(all, 0));
    let (groups, ww) = values.split_at(values.len() - 1);
    mean_observation(groups, ww[0], bn_channels)
}

/// The mean over groups of their observations, from their [`PARTS`] values each (`groups`, group after group, in
/// [`group_parts`]'s order), at weights of squared norm `ww` with `bn_channels` BatchNorm channels.
pub(crate) fn mean_observation(groups: &[f64], ww: f64, bn_channels: usize) -> SamObservation {
    let mut mean = ObservationMean::default();
    for p in groups.chunks(PARTS) {
        let per_channel = |s: f64| (s / bn_channels as f64).sqrt();
        let parts = GroupParts {
            delta_sq: p[0],
            clean_dot_sam: p[1],
            clean_sq: p[2],
            sam_sq: p[3],
            clean_loss: p[4],
            perturbed_loss: p[5],
        };
        mean.add(&SamObservation {
            bn_mean_shift: per_channel(p[6]),
            bn_var_shift: per_channel(p[7]),
            ..parts.observation(ww.sqrt())
        });
    }
    mean.mean()
}
