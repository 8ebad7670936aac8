//! The deep net as a gradient oracle of [`samlab_core::ascent`]: its parameter space ([`Tensors`], f32 tensors on
//! the device) and [`DeepOracle`], which passes over one micro-batch with the BatchNorm mode each pass of a SAM
//! step calls for.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use samlab_core::ascent::{Oracle, Pass};
use samlab_core::param_space::Space;
use samlab_core::sam::CheckedSam;
use samlab_core::ConfigError;

use crate::models::Arch;
use crate::nn::{BnMode, BnStats, Ctx, NormKind};
use crate::rng::Stream;
use crate::trainer::{axpy, dot, normal_like, scale, to_host, Batch, BnPolicy, ParamVec, Trainer};

/// A network's parameters as one vector: a list of flat tensors on the device. Reductions synchronize once.
pub struct Tensors;

/// `f(y_i, x_i)` for every tensor.
fn zip_map(
    y: &[Tensor<1>],
    x: &[Tensor<1>],
    f: impl Fn(Tensor<1>, Tensor<1>) -> Tensor<1>,
) -> ParamVec {
    y.iter()
        .zip(x)
        .map(|(y, x)| f(y.clone(), x.clone()))
        .collect()
}

impl Space for Tensors {
    type Vector = ParamVec;

    fn dot(a: &ParamVec, b: &ParamVec) -> f64 {
        dot(a, b)
    }

    fn axpy(y: &mut ParamVec, a: f64, x: &ParamVec) {
        *y = axpy(y, a, x);
    }

    fn set_scaled(y: &mut ParamVec, a: f64, x: &ParamVec) {
        *y = scale(x, a);
    }

    fn blend(y: &mut ParamVec, a: f64, b: f64, x: &ParamVec) {
        *y = zip_map(y, x, |y, x| y.mul_scalar(a) + x.mul_scalar(b));
    }

    fn scale(y: &mut ParamVec, a: f64) {
        *y = scale(y, a);
    }

    fn set_sum(y: &mut ParamVec, a: &ParamVec, b: &ParamVec) {
        *y = axpy(a, 1.0, b);
    }

    fn mul(y: &mut ParamVec, x: &ParamVec) {
        *y = zip_map(y, x, |y, x| y * x);
    }

    fn inverse_fisher(g: &ParamVec, eta: f64) -> ParamVec {
        g.iter()
            .map(|g| g.clone() / g.clone().square().mul_scalar(eta).add_scalar(1.0))
            .collect()
    }
}

/// What one pass of a group leaves for the step's observation ([`crate::observe`]): its mean loss and, where it
/// updated the running statistics, those before and after it.
pub(crate) struct PassRecord {
    /// The mean cross-entropy over the micro-batch (one element).
    pub loss: Tensor<1>,
    /// The running statistics before and after the pass.
    pub bn: Option<(BnStats, BnStats)>,
}

/// The clean pass (at `w`, on the micro-batch) and the perturbed one (the descent, at `w + delta`) of a group.
#[derive(Default)]
pub(crate) struct GroupRecord {
    /// The clean pass, where the step made one.
    pub clean: Option<PassRecord>,
    /// The perturbed pass, where the step made one over the whole micro-batch.
    pub perturbed: Option<PassRecord>,
}

/// Refuses a SAM variant that needs what a network `arch` with normalization `norm` lacks: SAM-ON needs
/// normalization layers (MSAM's momentum buffer is always there).
pub fn require_layers(sam: &CheckedSam, arch: Arch, norm: NormKind) -> Result<(), ConfigError> {
    sam.require_layers(
        &format!("{} without normalization", arch.name()),
        true,
        norm != NormKind::None,
    )
}

/// One micro-batch of a step as an [`Oracle`]. Rows `0..m` are the micro-batch's examples, rows `m..2m` the
/// previous batch's examples at the same positions (the ascent's stand-in); the ascent and descent gradients are
/// of the mean loss, so a group's descent direction is one mean gradient ([`Oracle::descent_unit`] is 1).
pub struct DeepOracle<'a, 'n> {
    trainer: &'a Trainer<'n>,
    /// The unperturbed weights.
    w: &'a [Tensor<1>],
    velocity: Option<&'a ParamVec>,
    current: Batch,
    previous: Option<Batch>,
    bn: &'a mut BnStats,
    /// Whether the running statistics took in this micro-batch at `w` (the clean-pass BatchNorm policy).
    clean_done: bool,
    /// The loss (summed over the micro-batch) and logits of the last pass over the whole micro-batch.
    seen: Option<(Tensor<1>, Tensor<2>)>,
    /// The clean and perturbed passes, for the step's observation.
    record: GroupRecord,
}

impl<'a, 'n> DeepOracle<'a, 'n> {
    /// The oracle of micro-batch `current` at weights `w` (with the optimizer's momentum buffer `velocity`, and
    /// `previous`, the ascent's stand-in, if the ascent uses the previous batch), reading and updating the
    /// running statistics in `bn`.
    pub fn new(
        trainer: &'a Trainer<'n>,
        w: &'a [Tensor<1>],
        velocity: Option<&'a ParamVec>,
        current: Batch,
        previous: Option<Batch>,
        bn: &'a mut BnStats,
    ) -> Self {
        DeepOracle {
            trainer,
            w,
            velocity,
            current,
            previous,
            bn,
            clean_done: false,
            seen: None,
            record: GroupRecord::default(),
        }
    }

    /// The clean and perturbed passes the group made ([`crate::observe`]).
    pub(crate) fn take_record(&mut self) -> GroupRecord {
        std::mem::take(&mut self.record)
    }

    /// The loss summed over the micro-batch and the logits of the last pass over all of it (the descent's, or for
    /// a step without one, the pass closest to it).
    pub fn seen(self) -> (Tensor<1>, Tensor<2>) {
        self.seen.expect("every group passes over its examples")
    }

    /// The examples of `rows`, and whether they are the whole micro-batch.
    fn batch(&self, rows: &[usize]) -> (Batch, bool) {
        let m = self.current.len();
        match (rows.first(), &self.previous) {
            (Some(&r), Some(previous)) if r >= m => (previous.clone(), false),
            _ if rows.len() == m => (self.current.clone(), true),
            _ => (self.current.select(rows), false),
        }
    }

    fn policy(&self) -> BnPolicy {
        self.trainer.optim.bn_policy
    }

    /// The BatchNorm mode of a gradient pass over `rows`.
    fn mode(&mut self, pass: Pass, whole: bool) -> BnMode {
        match (self.policy(), pass) {
            (BnPolicy::Frozen, _) => BnMode::Running,
            (BnPolicy::BothPasses, _) | (_, Pass::Plain) => BnMode::Batch { update: true },
            (BnPolicy::CleanPassOnly, Pass::Ascent { at_w }) => {
                let update = at_w && whole;
                self.clean_done |= update;
                BnMode::Batch { update }
            }
            (BnPolicy::CleanPassOnly, Pass::Descent) => {
                if !self.clean_done {
                    self.trainer.update_stats_at(self.w, &self.current, self.bn);
                    self.clean_done = true;
                }
                BnMode::Batch { update: false }
            }
        }
    }
}

impl Oracle for DeepOracle<'_, '_> {
    type Space = Tensors;
    type Rng = Stream;

    fn gradient(
        &mut self,
        pass: Pass,
        w: &ParamVec,
        rows: &[usize],
        scale: f64,
        out: &mut ParamVec,
    ) -> f64 {
        let (batch, whole) = self.batch(rows);
        let mode = self.mode(pass, whole);
        let observed = whole && matches!(pass, Pass::Ascent { at_w: true } | Pass::Descent);
        let before = (observed && mode == BnMode::Batch { update: true }).then(|| self.bn.clone());
        let p = self.trainer.pass(w, &batch, mode, self.bn);
        if observed {
            let record = Some(PassRecord {
                loss: p.loss.clone(),
                bn: before.map(|b| (b, self.bn.clone())),
            });
            match pass {
                Pass::Descent => self.record.perturbed = record,
                _ => self.record.clean = record,
            }
        }
        // The pass gives the mean gradient: the summed one is `rows` times it.
        let factor = scale * rows.len() as f64;
        *out = if (factor - 1.0).abs() < 1e-12 {
            p.grads
        } else {
            crate::trainer::scale(&p.grads, factor)
        };
        if whole {
            self.seen = Some((p.loss.mul_scalar(rows.len() as f64), p.logits));
        }
        0.0
    }

    fn losses(&mut self, w: &ParamVec, rows: &[usize], out: &mut [f64]) {
        let (batch, whole) = self.batch(rows);
        let mode = match self.policy() {
            BnPolicy::Frozen => BnMode::Running,
            _ => BnMode::Batch { update: false },
        };
        let mut ctx = Ctx {
            params: w,
            mode,
            stats: self.bn,
            tape: None,
            grouped: None,
        };
        let logits = self.trainer.net.forward(&mut ctx, batch.x.clone());
        let each: Tensor<1> = (log_softmax(logits.clone(), 1) * batch.onehot.clone())
            .sum_dim(1)
            .neg()
            .squeeze_dim(1);
        let values = to_host(each.clone());
        out.copy_from_slice(&values);
        if whole {
            self.seen = Some((each.sum(), logits));
        }
    }

    fn descent_unit(&self, _: usize) -> f64 {
        1.0
    }

    fn num_params(&self) -> usize {
        self.trainer.net.num_params()
    }

    fn normal(&mut self, rng: &mut Stream, out: &mut ParamVec) {
        *out = normal_like(self.trainer.net, rng, &self.trainer.device);
    }

    fn keep(&mut self, rng: &mut Stream, beta: f64) -> ParamVec {
        self.trainer
            .net
            .params()
            .iter()
            .map(|spec| {
                let n = spec.numel();
                let kept: Vec<f32> = (0..n)
                    .map(|_| f32::from(u8::from(rng.uniform() < beta)))
                    .collect();
                Tensor::from_data(TensorData::new(kept, [n]), &self.trainer.device)
            })
            .collect()
    }

    fn asam_scaling(&self, w: &ParamVec, eta: f64) -> ParamVec {
        // The official code scales the parameters whose name contains "weight" (convolutions, linear layers and
        // normalization scales), not the biases.
        self.trainer
            .net
            .params()
            .iter()
            .zip(w)
            .map(|(spec, w)| match spec.name.contains("weight") {
                true => w.clone().abs().add_scalar(eta),
                false => w.ones_like(),
            })
            .collect()
    }

    fn momentum(&self) -> Option<&ParamVec> {
        self.velocity
    }

    fn normalization_mask(&self) -> Option<ParamVec> {
        let norm = self.trainer.net.norm_params();
        (!norm.is_empty()).then(|| {
            self.w
                .iter()
                .enumerate()
                .map(|(i, w)| match norm.contains(&i) {
                    true => w.ones_like(),
                    false => w.zeros_like(),
                })
                .collect()
        })
    }
}
