//! The SAM step written once, against a gradient oracle: the perturbation of a group (plain SAM's multi-step,
//! normalized, clipped or random ascent, and each [`Variant`]'s rule) and the descent direction it yields.
//!
//! An engine provides an [`Oracle`] over its [`Space`] of parameter vectors (the analytic engines a [`HostOracle`]
//! over flat `f64` vectors, the deep-net engine its device's tensors); [`Ascent::group`] adds one group's descent
//! direction $\sum_{i \in G} \nabla \ell_i(w + \delta_G)$ (or the variant's replacement for it, counted in
//! [`Oracle::descent_unit`]s) to an accumulator, which the engine scales into its update. Norms are
//! $\lVert x \rVert + 10^{-12}$ everywhere, so a variant at its reducing options (ASAM without scaling, GSAM with
//! $\alpha = 0$, Fisher-SAM with $\eta = 0$, F-SAM with $\sigma = 0$, VaSSO with $\theta = 1$, LookSAM with $k = 1$,
//! ESAM with $\beta = \gamma = 1$) computes plain normalized SAM bit for bit.
//!
//! Each variant's rule is a file of its own: an `impl Ascent` method that either sets the perturbation, after
//! which [`Ascent::group`] takes the plain descent at `w + delta` (it returns `true`), or adds its own descent
//! direction to the accumulator (GSAM, LookSAM, ESAM: `false`).

mod asam;
mod esam;
mod fisher_sam;
mod fsam;
mod gsam;
mod look_sam;
mod msam;
mod observe;
mod sam_on;
mod vasso;

use std::ops::Range;

use crate::numpy_rng::NumpyRandomState;
pub use crate::param_space::{Host, Space};
use crate::sam::{Normalization, Perturbation, SamConfig, Variant};
pub use asam::scaled_delta;
pub use esam::esam_delta;
pub use fisher_sam::fisher_delta;
pub use observe::{cosine, GroupParts, ObservationMean, SamObservation};

/// A parameter vector of oracle `O`'s space.
pub type Vector<O> = <<O as Oracle>::Space as Space>::Vector;

/// Which pass of the step a gradient is taken for (the deep-net engine chooses its BatchNorm mode from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The one pass of a step without perturbation (ERM, or outside the SAM window).
    Plain,
    /// An ascent pass; `at_w` when its point is `w` itself.
    Ascent {
        /// Whether the pass is at the unperturbed weights.
        at_w: bool,
    },
    /// The descent pass, at the perturbed point.
    Descent,
}

/// What an engine provides: per-example gradients and losses of its model at a parameter vector, the layout of
/// that vector, and its noise.
pub trait Oracle {
    /// The parameter vectors.
    type Space: Space;
    /// The source of the perturbations' randomness.
    type Rng;
    /// `out = scale * sum over i in rows of grad l_i(w)` for `pass` (`out` holds any vector of the right shape: it
    /// is overwritten); returns `sum over i in rows of l_i(w)` when the oracle computes it on the way (0 otherwise).
    fn gradient(
        &mut self,
        pass: Pass,
        w: &Vector<Self>,
        rows: &[usize],
        scale: f64,
        out: &mut Vector<Self>,
    ) -> f64;
    /// `out[k] = l_{rows[k]}(w)`.
    fn losses(&mut self, w: &Vector<Self>, rows: &[usize], out: &mut [f64]);
    /// The factor of the ascent gradient of a group of `rows` examples: `1 / rows`, the mean loss's, unless the
    /// engine's loss is a sum.
    fn ascent_scale(&self, rows: usize) -> f64 {
        1.0 / rows as f64
    }
    /// What the descent direction of a group of `rows` examples counts a gradient of its mean loss as: `rows` (the
    /// accumulator holds summed gradients) unless the engine averages.
    fn descent_unit(&self, rows: usize) -> f64 {
        rows as f64
    }
    /// Number of parameters (coordinates that are not frozen).
    fn num_params(&self) -> usize;
    /// `out` = standard normal noise on the parameters, 0 elsewhere.
    fn normal(&mut self, rng: &mut Self::Rng, out: &mut Vector<Self>);
    /// A vector that is 1 on each parameter with probability `beta` and 0 elsewhere (ESAM).
    fn keep(&mut self, rng: &mut Self::Rng, beta: f64) -> Vector<Self>;
    /// ASAM's scaling $T$ at `w`: $|w| + \eta$ on the scaled parameters (the official code: those named
    /// `weight`), 1 on the rest.
    fn asam_scaling(&self, w: &Vector<Self>, eta: f64) -> Vector<Self>;
    /// The optimizer's momentum buffer, where the engine has one (MSAM).
    fn momentum(&self) -> Option<&Vector<Self>> {
        None
    }
    /// 1 on the normalization layers' affine parameters and 0 elsewhere, where the model has any (SAM-ON).
    fn normalization_mask(&self) -> Option<Vector<Self>> {
        None
    }
}

/// An analytic engine's oracle, over a flat `f64` vector in host memory. Every such oracle is an [`Oracle`] with
/// NumPy-compatible noise, ASAM scaling every parameter, no momentum and no normalization layers.
pub trait HostOracle {
    /// The length of the parameter vector.
    fn dim(&self) -> usize;
    /// [`Oracle::gradient`] (the pass does not matter here).
    fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64;
    /// [`Oracle::losses`].
    fn losses(&mut self, w: &[f64], rows: &[usize], out: &mut [f64]);
    /// [`Oracle::ascent_scale`].
    fn ascent_scale(&self, rows: usize) -> f64 {
        1.0 / rows as f64
    }
    /// Coordinates of the vector that are not parameters (a network without biases): every perturbation leaves them
    /// at 0.
    fn frozen(&self) -> Range<usize> {
        0..0
    }
}

impl<T: HostOracle> Oracle for T {
    type Space = Host;
    type Rng = NumpyRandomState;

    fn gradient(
        &mut self,
        _: Pass,
        w: &Vec<f64>,
        rows: &[usize],
        scale: f64,
        out: &mut Vec<f64>,
    ) -> f64 {
        HostOracle::gradient(self, w, rows, scale, out)
    }

    fn losses(&mut self, w: &Vec<f64>, rows: &[usize], out: &mut [f64]) {
        HostOracle::losses(self, w, rows, out)
    }

    fn ascent_scale(&self, rows: usize) -> f64 {
        HostOracle::ascent_scale(self, rows)
    }

    fn num_params(&self) -> usize {
        self.dim() - self.frozen().len()
    }

    fn normal(&mut self, rng: &mut NumpyRandomState, out: &mut Vec<f64>) {
        rng.fill_standard_normal(out);
        out[self.frozen()].fill(0.0);
    }

    fn keep(&mut self, rng: &mut NumpyRandomState, beta: f64) -> Vec<f64> {
        (0..self.dim())
            .map(|_| f64::from(u8::from(rng.random_sample() < beta)))
            .collect()
    }

    fn asam_scaling(&self, w: &Vec<f64>, eta: f64) -> Vec<f64> {
        w.iter().map(|w| w.abs() + eta).collect()
    }
}

/// What a variant carries from step to step (the deep-net engine keeps it in its checkpoints).
#[derive(Clone, Debug)]
pub struct VariantState<V> {
    /// F-SAM's moving average of gradients, VaSSO's averaged direction, or LookSAM's stored component `g_v`.
    pub direction: Option<V>,
    /// Steps taken (LookSAM's period).
    pub steps: u64,
}

impl<V> Default for VariantState<V> {
    fn default() -> Self {
        VariantState {
            direction: None,
            steps: 0,
        }
    }
}

/// Scratch vectors for [`Ascent::group`], and the gradient evaluations it made.
pub struct Ascent<S: Space> {
    g: S::Vector,
    delta: S::Vector,
    point: S::Vector,
    gp: S::Vector,
    /// Whether `delta` is zero: the point is `w` itself (and `delta` is not read).
    at_w: bool,
    /// Gradient evaluations (one per group gradient), as each variant promises: LookSAM about 1 + 1/k per step.
    pub gradient_evals: u64,
    /// The loss sum the oracle returned with the last gradient (the descent's, at the end of a group).
    loss: f64,
    /// Whether `g` was last taken at `w` itself.
    g_at_w: bool,
    /// Whether `g` is the gradient at `w` of the last group's own examples ([`Ascent::clean_gradient`]).
    clean: bool,
    /// Whether `gp` is the last group's descent gradient ([`Ascent::perturbed_gradient`]).
    descended: bool,
    /// The loss sum the oracle returned with `g`.
    g_loss: f64,
    /// The number of the last group's examples ([`Ascent::group_parts`]).
    rows: usize,
    /// The number of examples of its last descent pass.
    descent_rows: usize,
    /// Whether the last group's step had a radius.
    perturbed: bool,
}

/// One group's step as the variants see it.
struct Group<'a, S: Space> {
    /// The weights.
    w: &'a S::Vector,
    /// The group's examples.
    rows: &'a [usize],
    /// The examples of the ascent (the group, or its previous-batch stand-in).
    ascent_rows: &'a [usize],
    /// The radius.
    rho: f64,
    /// The oracle's descent unit for the group.
    unit: f64,
}

/// `out = r x / (||x|| + 1e-12)` (the zero vector stays zero).
fn scaled_unit<S: Space>(r: f64, x: &S::Vector, out: &mut S::Vector) {
    S::set_scaled(out, r / (S::norm(x) + 1e-12), x);
}

impl<S: Space> Ascent<S> {
    /// Scratch shaped like `like` (whose values are never read).
    pub fn new(like: &S::Vector) -> Self {
        Ascent {
            g: like.clone(),
            delta: like.clone(),
            point: like.clone(),
            gp: like.clone(),
            at_w: true,
            gradient_evals: 0,
            loss: 0.0,
            g_at_w: false,
            clean: false,
            descended: false,
            g_loss: f64::NAN,
            rows: 0,
            descent_rows: 0,
            perturbed: false,
        }
    }

    /// The perturbation of the last group (zero at `w` itself); `None` before any.
    pub fn delta(&self) -> Option<&S::Vector> {
        (!self.at_w).then_some(&self.delta)
    }

    /// `g` (`into_g`) or `gp` = `scale` times the summed gradient over `rows` at `w + delta`, for `pass`.
    #[allow(clippy::too_many_arguments)]
    fn gradient<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        pass: Pass,
        w: &S::Vector,
        rows: &[usize],
        scale: f64,
        into_g: bool,
    ) {
        let point = if self.at_w {
            w
        } else {
            S::set_sum(&mut self.point, w, &self.delta);
            &self.point
        };
        if into_g {
            self.g_at_w = self.at_w;
        }
        let out = if into_g { &mut self.g } else { &mut self.gp };
        self.loss = oracle.gradient(pass, point, rows, scale, out);
        if into_g {
            self.g_loss = self.loss;
        }
        self.gradient_evals += 1;
    }

    /// `g` = the gradient of the mean loss over `rows` at `w` itself (and `delta` = 0).
    fn unperturbed<O: Oracle<Space = S>>(&mut self, oracle: &mut O, w: &S::Vector, rows: &[usize]) {
        self.at_w = true;
        let scale = oracle.ascent_scale(rows.len());
        self.gradient(oracle, Pass::Ascent { at_w: true }, w, rows, scale, true);
    }

    /// `gp` = the descent gradient over `rows` at `w + delta`, in units of `unit` mean gradients for the
    /// examples (`unit / rows` times their summed gradient).
    fn descent<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        w: &S::Vector,
        rows: &[usize],
        unit: f64,
    ) {
        self.descended = true;
        self.descent_rows = rows.len();
        self.gradient(
            oracle,
            Pass::Descent,
            w,
            rows,
            unit / rows.len() as f64,
            false,
        );
    }

    /// `delta` = `r x / ||x||` (a perturbation from now on).
    fn perturb_along(&mut self, r: f64, x: &S::Vector) {
        scaled_unit::<S>(r, x, &mut self.delta);
        self.at_w = false;
    }

    /// `delta` = `r g / ||g||`.
    fn perturb_along_g(&mut self, r: f64) {
        scaled_unit::<S>(r, &self.g, &mut self.delta);
        self.at_w = false;
    }

    /// Adds the descent direction of one group at `w` to `acc`: $\sum_{i \in G} \nabla \ell_i(w + \delta_G)$ for
    /// SAM with radius `rho` (the gradient at `w` for `rho = 0`), or the variant's replacement, in
    /// [`Oracle::descent_unit`]s. The ascent uses the gradient of the mean loss over `ascent_rows` (the group
    /// itself, or its previous-batch stand-in). Returns the loss sum the oracle gave with the last gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn group<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        sam: &SamConfig,
        rho: f64,
        w: &S::Vector,
        rows: &[usize],
        ascent_rows: &[usize],
        state: &mut VariantState<S::Vector>,
        rng: &mut O::Rng,
        acc: &mut S::Vector,
    ) -> f64 {
        let unit = oracle.descent_unit(rows.len());
        (self.g_at_w, self.clean, self.descended) = (false, false, false);
        (self.rows, self.perturbed) = (rows.len(), rho != 0.0);
        if rho == 0.0 {
            self.at_w = true;
            self.gradient(
                oracle,
                Pass::Plain,
                w,
                rows,
                unit / rows.len() as f64,
                false,
            );
            S::axpy(acc, 1.0, &self.gp);
            return self.loss;
        }
        let at = Group {
            w,
            rows,
            ascent_rows,
            rho,
            unit,
        };
        // Whether the plain descent at w + delta remains (the variants that only perturb).
        let descend = match sam.variant {
            Variant::Sam => {
                self.sam_delta(oracle, sam, rho, w, ascent_rows, rng);
                true
            }
            Variant::Asam { eta } => self.asam(oracle, &at, eta),
            Variant::FisherSam { eta } => self.fisher_sam(oracle, &at, eta),
            Variant::Fsam { sigma, lambda } => self.fsam(oracle, &at, (sigma, lambda), state),
            Variant::Vasso { theta } => self.vasso(oracle, &at, theta, state),
            Variant::Msam => self.msam(oracle, rho),
            Variant::SamOn => self.sam_on(oracle, &at),
            Variant::Gsam { alpha } => self.gsam(oracle, &at, alpha, acc),
            Variant::LookSam { k, alpha } => self.look_sam(oracle, &at, (k, alpha), state, acc),
            Variant::Esam { beta, gamma } => {
                let mask = (beta < 1.0).then(|| oracle.keep(rng, beta));
                let pair = (beta, gamma);
                self.esam(oracle, w, rows, ascent_rows, rho, pair, mask.as_ref(), acc);
                false
            }
        };
        self.clean = self.g_at_w && ascent_rows == rows;
        if descend {
            self.descent(oracle, w, rows, unit);
            S::axpy(acc, 1.0, &self.gp);
        }
        state.steps += 1;
        self.loss
    }

    /// Plain SAM's perturbation of radius `rho` at `w` from the gradients on `rows`: `ascent_steps` steps of
    /// (normalized) gradient ascent from 0 or a random point of the sphere, projected onto the rho-ball unless
    /// unnormalized; or Gaussian noise of standard deviation $\rho / \sqrt{P}$ for the random baseline. Its
    /// result is [`Ascent::delta`].
    pub fn sam_delta<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        sam: &SamConfig,
        rho: f64,
        w: &S::Vector,
        rows: &[usize],
        rng: &mut O::Rng,
    ) {
        self.at_w = true;
        if sam.perturbation == Perturbation::Random || sam.random_init {
            oracle.normal(rng, &mut self.delta);
            let scale = if sam.perturbation == Perturbation::Random {
                rho / (oracle.num_params() as f64).sqrt()
            } else {
                rho / S::norm(&self.delta)
            };
            S::scale(&mut self.delta, scale);
            self.at_w = false;
            if sam.perturbation == Perturbation::Random {
                return;
            }
        }
        // One normalized step from 0 is inside the ball (up to rounding): only longer ascents are projected.
        let project = sam.normalization == Normalization::Clipped
            || (sam.normalization == Normalization::Normalized
                && (sam.ascent_steps > 1 || sam.random_init));
        let eta = rho * sam.ascent_step_mult;
        let scale = oracle.ascent_scale(rows.len());
        for _ in 0..sam.ascent_steps {
            let pass = Pass::Ascent { at_w: self.at_w };
            self.gradient(oracle, pass, w, rows, scale, true);
            let c = match sam.normalization {
                Normalization::Normalized => eta / (S::norm(&self.g) + 1e-12),
                Normalization::Unnormalized | Normalization::Clipped => eta,
            };
            if self.at_w {
                S::set_scaled(&mut self.delta, c, &self.g);
                self.at_w = false;
            } else {
                S::axpy(&mut self.delta, c, &self.g);
            }
            if project {
                let n = S::norm(&self.delta);
                if n > rho {
                    S::scale(&mut self.delta, rho / n);
                }
            }
        }
    }
}

/// The variants at the options that reduce them to plain normalized SAM (the `reducing` column of
/// [`crate::sam::VARIANTS`], for the engines' tests).
pub fn reducing() -> impl Iterator<Item = Variant> {
    crate::sam::VARIANTS.iter().filter_map(|row| row.reducing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASAM without its adaptive scaling (T = 1) is plain normalized SAM bit for bit; Fisher-SAM with eta = 0 and
    /// ESAM keeping every coordinate are too.
    #[test]
    fn scalings_of_one_reduce_to_plain_sam_exactly() {
        let mut rng = NumpyRandomState::new(5);
        let mut g = vec![0.0; 9];
        rng.fill_standard_normal(&mut g);
        let mut sam = vec![0.0; 9];
        scaled_unit::<Host>(0.3, &g, &mut sam);
        let mut other = vec![0.0; 9];
        scaled_delta::<Host>(0.3, &vec![1.0; 9], &g, &mut other);
        assert_eq!(other, sam);
        fisher_delta::<Host>(0.3, 0.0, &g, &mut other);
        assert_eq!(other, sam);
        esam_delta::<Host>(0.3, 1.0, Some(&vec![1.0; 9]), &g, &mut other);
        assert_eq!(other, sam);
        esam_delta::<Host>(0.3, 1.0, None, &g, &mut other);
        assert_eq!(other, sam);
        // ...and the scalings do change the perturbation.
        let mut t = vec![1.0; 9];
        t[0] = 2.0;
        scaled_delta::<Host>(0.3, &t, &g, &mut other);
        assert_ne!(other, sam);
    }
}
