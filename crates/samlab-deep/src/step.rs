//! [`Trainer::step`]: one optimizer step of the SAM family, group by group, each group's passes made through a
//! [`DeepOracle`] on which [`samlab_core::ascent`]'s rule runs (the step itself is defined in [`crate::trainer`]'s
//! module doc). It sits above the trainer, whose passes the oracle calls, and the oracle; [`crate::lowrank`]
//! (which [`Trainer::step`] takes where it applies) and [`crate::grouped`] compute the same step with the groups
//! together.

use burn::tensor::Tensor;
use samlab_core::ascent::Ascent;
use samlab_core::param_space::Space;
use samlab_core::sam::{AscentSource, Perturbation};

use crate::nn::BnStats;
use crate::oracle::{DeepOracle, Tensors};
use crate::rng::{Purpose, Stream};
use crate::trainer::{Batch, ParamVec, StepOutput, TrainState, Trainer};

impl Trainer<'_> {
    /// Plain SAM's perturbation $\delta$ of radius `rho` at `w` for one micro-batch, computed on `ascent` (see
    /// [`crate::trainer`]'s module doc): the k-step ascent, or $\sigma z$ for random perturbations; `(step, group)` key the noise.
    /// BatchNorm reads and updates `stats` as in an ascent of a training step on `ascent`.
    pub fn perturbation(
        &self,
        w: &ParamVec,
        ascent: &Batch,
        rho: f64,
        step: u64,
        group: u64,
        stats: &mut BnStats,
    ) -> ParamVec {
        let mut oracle = DeepOracle::new(self, w, None, ascent.clone(), None, stats);
        let mut sam = Ascent::<Tensors>::new(w);
        let rows: Vec<usize> = (0..ascent.len()).collect();
        let mut noise = Stream::new(self.seed, Purpose::Perturb, step, group);
        sam.sam_delta(&mut oracle, self.sam.config(), rho, w, &rows, &mut noise);
        match sam.delta() {
            Some(delta) => delta.clone(),
            None => w.iter().map(Tensor::zeros_like).collect(),
        }
    }

    /// One optimizer step on `batch` (`previous` is the previous batch, for [`AscentSource::PreviousBatch`]) with
    /// learning rate `lr` and radius `rho` (0 for an ERM step); `step` keys the perturbation noise. m-SAM's groups
    /// go one after the other ([`Trainer::looped_step`]), or together as low-rank perturbations where that applies
    /// ([`Trainer::observed_step`]).
    ///
    /// If any loss or the gradient is NaN or infinite the state is left untouched and `finite` is false.
    pub fn step(
        &self,
        state: &mut TrainState,
        batch: &Batch,
        previous: &Batch,
        lr: f64,
        rho: f64,
        step: u64,
    ) -> StepOutput {
        self.observed_step(state, batch, previous, lr, rho, step, false)
    }

    /// [`Trainer::step`], which also reports what SAM did (`StepOutput::sam`) if `observe` and `rho > 0` (at
    /// some cost: the `observe` module); the update is the same either way. It takes m-SAM's groups as low-rank
    /// perturbations where [`Trainer::can_take_low_rank`] (equal to the loop to f32 rounding; 2.6x faster at m = 16
    /// on the MLP, 4-5x at m = 8: docs/BENCHMARKS.md; an observed step whose ascent is on the previous batch keeps
    /// the loop), and the loop otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn observed_step(
        &self,
        state: &mut TrainState,
        batch: &Batch,
        previous: &Batch,
        lr: f64,
        rho: f64,
        step: u64,
        observe: bool,
    ) -> StepOutput {
        let groups = batch.len() / self.sam.group_size();
        // The low-rank step observes SAM where the ascent starts from w on the batch itself (a clean pass).
        let same_batch = self.sam.config().ascent_source == AscentSource::SameBatch;
        if self.can_take_low_rank(groups, rho) && (same_batch || !observe || rho == 0.0) {
            return self.low_rank_step(state, batch, previous, lr, rho, observe);
        }
        self.looped_step(state, batch, previous, lr, rho, step, observe)
    }

    /// [`Trainer::observed_step`] with m-SAM's groups one after the other, each group's passes over its own
    /// examples (every SAM variant).
    #[allow(clippy::too_many_arguments)]
    pub fn looped_step(
        &self,
        state: &mut TrainState,
        batch: &Batch,
        previous: &Batch,
        lr: f64,
        rho: f64,
        step: u64,
        observe: bool,
    ) -> StepOutput {
        let m = self.sam.group_size();
        let groups = batch.len() / m;
        assert_eq!(
            groups * m,
            batch.len(),
            "the group size divides the batch (checked by SamConfig)"
        );
        let c = self.sam.config();
        let mut bn = state.bn.clone();
        let mut variant = state.variant.clone();
        let w = &state.params;
        let mut sam = Ascent::<Tensors>::new(w);
        let mut accum: ParamVec = w.iter().map(Tensor::zeros_like).collect();
        let same_batch =
            c.ascent_source == AscentSource::SameBatch || c.perturbation == Perturbation::Random;
        let rows: Vec<usize> = (0..m).collect();
        let ascent_rows: Vec<usize> = if same_batch {
            rows.clone()
        } else {
            (m..2 * m).collect()
        };
        let mut losses = Vec::with_capacity(groups);
        let mut logits = Vec::with_capacity(groups);
        let mut observed = Vec::new();
        let observe = observe && rho != 0.0;
        for g in 0..groups {
            let mut oracle = DeepOracle::new(
                self,
                w,
                Some(&state.velocity),
                batch.slice(g * m, m),
                (!same_batch).then(|| previous.slice(g * m, m)),
                &mut bn,
            );
            let mut noise = Stream::new(self.seed, Purpose::Perturb, step, g as u64);
            sam.group(
                &mut oracle,
                c,
                rho,
                w,
                &rows,
                &ascent_rows,
                &mut variant,
                &mut noise,
                &mut accum,
            );
            if observe {
                let record = oracle.take_record();
                observed.push(crate::observe::group_parts(&sam, w, record));
            }
            let (loss, seen) = oracle.seen();
            losses.push(loss);
            logits.push(seen);
        }
        if groups > 1 {
            Tensors::scale(&mut accum, 1.0 / groups as f64);
        }
        let channels = self.net.bn_channels().iter().sum();
        let observation =
            (!observed.is_empty()).then(|| crate::observe::step_observation(observed, w, channels));
        let loss_sum = Tensor::cat(losses, 0).sum().into_scalar::<f32>() as f64;
        let out = self.descend(
            state,
            accum,
            loss_sum,
            Tensor::cat(logits, 0),
            &batch.labels,
            lr,
        );
        if out.finite {
            state.bn = bn;
            state.variant = variant;
        }
        StepOutput {
            gradient_evals: sam.gradient_evals,
            sam: observation,
            ..out
        }
    }
}
