//! The SAM step written once, against a gradient oracle: the perturbation of a group (plain SAM's multi-step,
//! normalized, clipped or random ascent, and each [`Variant`]'s rule) and the descent direction it yields.
//!
//! An engine provides an [`Oracle`] over a flat parameter vector; [`Ascent::group`] adds one group's descent
//! direction $\sum_{i \in G} \nabla \ell_i(w + \delta_G)$ (or the variant's replacement for it) to an accumulator,
//! which the engine scales by $-\gamma / B$. Norms are $\lVert x \rVert + 10^{-12}$ everywhere, so a variant at its
//! reducing options (ASAM without scaling, GSAM with $\alpha = 0$, Fisher-SAM with $\eta = 0$, F-SAM with
//! $\sigma = 0$, VaSSO with $\theta = 1$, LookSAM with $k = 1$, ESAM with $\beta = \gamma = 1$) computes plain
//! normalized SAM bit for bit.

use serde::{Deserialize, Serialize};

use crate::numpy_rng::NumpyRandomState;
use crate::sam::{Normalization, Perturbation, SamConfig, Variant};
use crate::theory::linalg::{dot, norm};

/// What an engine provides: per-example gradients and losses of its model at a flat parameter vector, and the
/// layout of that vector.
pub trait Oracle {
    /// `out += scale * sum over i in rows of grad l_i(w)`; returns `sum over i in rows of l_i(w)` when the oracle
    /// computes it on the way (0 otherwise).
    fn add_gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64;
    /// `out = scale * sum over i in rows of grad l_i(w)`, returning what [`Oracle::add_gradient`] returns (an
    /// oracle may write `out` directly instead of clearing it first).
    fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64 {
        out.fill(0.0);
        self.add_gradient(w, rows, scale, out)
    }
    /// `out[k] = l_{rows[k]}(w)`.
    fn losses(&mut self, w: &[f64], rows: &[usize], out: &mut [f64]);
    /// The factor of the ascent gradient of a group of `rows` examples: `1 / rows`, the mean loss's, unless the
    /// engine's loss is a sum.
    fn ascent_scale(&self, rows: usize) -> f64 {
        1.0 / rows as f64
    }
    /// Coordinates of the vector that are not parameters (a network without biases): every perturbation leaves them
    /// at 0.
    fn frozen(&self) -> std::ops::Range<usize> {
        0..0
    }
}

/// What a variant carries from step to step (serializable, for the checkpoints of engines that resume).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantState {
    /// F-SAM's moving average of gradients, VaSSO's averaged direction, or LookSAM's stored component `g_v`.
    pub direction: Option<Vec<f64>>,
    /// Steps taken (LookSAM's period).
    pub steps: u64,
}

/// Scratch vectors for [`Ascent::group`], and the gradient evaluations it made.
pub struct Ascent {
    g: Vec<f64>,
    delta: Vec<f64>,
    point: Vec<f64>,
    gp: Vec<f64>,
    /// Gradient evaluations (one per group gradient), as each variant promises: LookSAM about 1 + 1/k per step.
    pub gradient_evals: u64,
    /// The loss sum the oracle returned with the last gradient (the descent's, at the end of a group).
    loss: f64,
}

/// `x / (||x|| + 1e-12)` scaled by `r`, into `out` (the zero vector stays zero).
fn scaled_unit(r: f64, x: &[f64], out: &mut [f64]) {
    let c = r / (norm(x) + 1e-12);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = c * v;
    }
}

impl Ascent {
    /// Scratch for `dim` parameters.
    pub fn new(dim: usize) -> Self {
        let z = || vec![0.0; dim];
        Ascent {
            g: z(),
            delta: z(),
            point: z(),
            gp: z(),
            gradient_evals: 0,
            loss: 0.0,
        }
    }

    /// `g` = the gradient of the mean loss over `rows` at `w + delta`.
    fn mean_gradient(&mut self, oracle: &mut dyn Oracle, w: &[f64], rows: &[usize]) {
        self.set_point(w);
        let scale = oracle.ascent_scale(rows.len());
        self.loss = oracle.gradient(&self.point, rows, scale, &mut self.g);
        self.gradient_evals += 1;
    }

    /// `gp` = `scale` times the summed gradient over `rows` at `w + delta`.
    fn point_gradient(&mut self, oracle: &mut dyn Oracle, w: &[f64], rows: &[usize], scale: f64) {
        self.set_point(w);
        self.loss = oracle.gradient(&self.point, rows, scale, &mut self.gp);
        self.gradient_evals += 1;
    }

    fn set_point(&mut self, w: &[f64]) {
        for ((p, &x), &d) in self.point.iter_mut().zip(w).zip(&self.delta) {
            *p = x + d;
        }
    }

    /// Adds the descent direction of one group at `w` to `acc`: $\sum_{i \in G} \nabla \ell_i(w + \delta_G)$ for
    /// SAM with radius `rho` (the gradient at `w` for `rho = 0`), or the variant's replacement. The ascent uses the
    /// gradient of the mean loss over `ascent_rows` (the group itself, or its previous-batch stand-in). Returns the
    /// loss sum the oracle gave with the descent gradient (over the group, at the descent point).
    #[allow(clippy::too_many_arguments)]
    pub fn group(
        &mut self,
        oracle: &mut dyn Oracle,
        sam: &SamConfig,
        rho: f64,
        w: &[f64],
        rows: &[usize],
        ascent_rows: &[usize],
        state: &mut VariantState,
        rng: &mut NumpyRandomState,
        acc: &mut [f64],
    ) -> f64 {
        if rho == 0.0 {
            self.delta.fill(0.0);
            self.point_gradient(oracle, w, rows, 1.0);
            add(acc, &self.gp);
            return self.loss;
        }
        let size = rows.len() as f64;
        match sam.variant {
            Variant::Sam => self.sam_delta(oracle, sam, rho, w, ascent_rows, rng),
            Variant::Asam { eta } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                let t: Vec<f64> = w.iter().map(|w| w.abs() + eta).collect();
                scaled_delta(rho, &t, &self.g, &mut self.delta);
            }
            Variant::FisherSam { eta } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                fisher_delta(rho, eta, &self.g, &mut self.delta);
            }
            Variant::Fsam { sigma, lambda } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                // As the official code: the first direction is g, which starts the average; later ones remove the
                // previous average, which then takes in g.
                match state.direction.as_mut() {
                    None => {
                        scaled_unit(rho, &self.g, &mut self.delta);
                        state.direction = Some(self.g.clone());
                    }
                    Some(m) => {
                        let d: Vec<f64> = self
                            .g
                            .iter()
                            .zip(m.iter())
                            .map(|(g, m)| g - sigma * m)
                            .collect();
                        for (m, &g) in m.iter_mut().zip(&self.g) {
                            *m = lambda * *m + (1.0 - lambda) * g;
                        }
                        scaled_unit(rho, &d, &mut self.delta);
                    }
                }
            }
            Variant::Vasso { theta } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                let d = match state.direction.as_mut() {
                    None => state.direction.insert(self.g.clone()),
                    Some(d) => {
                        for (d, &g) in d.iter_mut().zip(&self.g) {
                            *d = (1.0 - theta) * *d + theta * g;
                        }
                        d
                    }
                };
                scaled_unit(rho, d, &mut self.delta);
            }
            Variant::Gsam { alpha } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                scaled_unit(rho, &self.g, &mut self.delta);
                self.point_gradient(oracle, w, rows, 1.0);
                // g_perp = g - (g . g_p / ||g_p||^2) g_p; the direction is g_p - alpha g_perp (summed over G).
                let along = dot(&self.g, &self.gp) / dot(&self.gp, &self.gp);
                for ((a, &gp), &g) in acc.iter_mut().zip(&self.gp).zip(&self.g) {
                    *a += gp - alpha * size * (g - along * gp);
                }
                state.steps += 1;
                return self.loss;
            }
            Variant::LookSam { k, alpha } => {
                self.unperturbed_gradient(oracle, w, ascent_rows);
                let full = state.steps.is_multiple_of(k as u64) || state.direction.is_none();
                state.steps += 1;
                if !full {
                    // Reuse the stored orthogonal component, scaled to this gradient: one gradient per step.
                    let gv = state.direction.as_ref().expect("stored by a full step");
                    let c = alpha * norm(&self.g) / (norm(gv) + 1e-12);
                    for ((a, &g), &v) in acc.iter_mut().zip(&self.g).zip(gv) {
                        *a += size * (g + c * v);
                    }
                    return self.loss;
                }
                scaled_unit(rho, &self.g, &mut self.delta);
                self.point_gradient(oracle, w, rows, 1.0);
                // g_v: the part of the SAM gradient of the mean loss (g_p is summed over G) orthogonal to g.
                let along = dot(&self.g, &self.gp) / dot(&self.g, &self.g);
                let gv = self
                    .gp
                    .iter()
                    .zip(&self.g)
                    .map(|(s, g)| (s - along * g) / size)
                    .collect();
                state.direction = Some(gv);
                add(acc, &self.gp);
                return self.loss;
            }
            Variant::Esam { beta, gamma } => {
                let mask: Vec<bool> = if beta >= 1.0 {
                    vec![true; w.len()]
                } else {
                    (0..w.len()).map(|_| rng.random_sample() < beta).collect()
                };
                self.esam(oracle, w, rows, ascent_rows, rho, (beta, gamma), &mask, acc);
                state.steps += 1;
                return self.loss;
            }
            Variant::Msam | Variant::SamOn => {
                unreachable!("SamConfig::check refuses {:?} here", sam.variant)
            }
        }
        self.point_gradient(oracle, w, rows, 1.0);
        add(acc, &self.gp);
        state.steps += 1;
        self.loss
    }

    /// ESAM's group step with the coordinates `mask` keeps: the perturbation of [`esam_delta`], then the descent on
    /// the fraction `gamma` of `rows` whose loss rises most (scaled to stand for the whole group).
    #[allow(clippy::too_many_arguments)]
    pub fn esam(
        &mut self,
        oracle: &mut dyn Oracle,
        w: &[f64],
        rows: &[usize],
        ascent_rows: &[usize],
        rho: f64,
        (beta, gamma): (f64, f64),
        mask: &[bool],
        acc: &mut [f64],
    ) {
        self.unperturbed_gradient(oracle, w, ascent_rows);
        esam_delta(rho, beta, mask, &self.g, &mut self.delta);
        let selected = self.sharpest(oracle, w, rows, gamma);
        self.point_gradient(
            oracle,
            w,
            &selected,
            rows.len() as f64 / selected.len() as f64,
        );
        add(acc, &self.gp);
    }

    /// `g` = the gradient of the mean loss over `rows` at `w` itself (and `delta` = 0).
    fn unperturbed_gradient(&mut self, oracle: &mut dyn Oracle, w: &[f64], rows: &[usize]) {
        self.delta.fill(0.0);
        let scale = oracle.ascent_scale(rows.len());
        self.loss = oracle.gradient(w, rows, scale, &mut self.g);
        self.gradient_evals += 1;
    }

    /// ESAM's sharpness-sensitive data selection: the examples whose loss rises most from `w` to `w + delta`, the
    /// fraction `gamma` of `rows` (all of them for `gamma >= 0.99`, as the official code).
    fn sharpest(
        &mut self,
        oracle: &mut dyn Oracle,
        w: &[f64],
        rows: &[usize],
        gamma: f64,
    ) -> Vec<usize> {
        if gamma >= 0.99 {
            return rows.to_vec();
        }
        let (mut before, mut after) = (vec![0.0; rows.len()], vec![0.0; rows.len()]);
        oracle.losses(w, rows, &mut before);
        self.set_point(w);
        oracle.losses(&self.point, rows, &mut after);
        let rise: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let keep = ((rows.len() as f64 * gamma) as usize).max(1);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| rise[b].total_cmp(&rise[a]));
        let mut kept: Vec<usize> = order[..keep].to_vec();
        kept.sort_unstable();
        kept.into_iter().map(|k| rows[k]).collect()
    }

    /// Plain SAM's perturbation: `ascent_steps` steps of (normalized) gradient ascent from 0 or a random point of
    /// the sphere, projected onto the rho-ball unless unnormalized; or Gaussian noise for the random baseline.
    fn sam_delta(
        &mut self,
        oracle: &mut dyn Oracle,
        sam: &SamConfig,
        rho: f64,
        w: &[f64],
        rows: &[usize],
        rng: &mut NumpyRandomState,
    ) {
        if sam.perturbation == Perturbation::Random || sam.random_init {
            rng.fill_standard_normal(&mut self.delta);
            let frozen = oracle.frozen();
            let params = self.delta.len() - frozen.len();
            self.delta[frozen].fill(0.0);
            let scale = if sam.perturbation == Perturbation::Random {
                rho / (params as f64).sqrt()
            } else {
                rho / norm(&self.delta)
            };
            self.delta.iter_mut().for_each(|x| *x *= scale);
            if sam.perturbation == Perturbation::Random {
                return;
            }
        } else {
            self.delta.fill(0.0);
        }
        // One normalized step from 0 is inside the ball (up to rounding): only longer ascents are projected.
        let project = sam.normalization == Normalization::Clipped
            || (sam.normalization == Normalization::Normalized
                && (sam.ascent_steps > 1 || sam.random_init));
        let eta = rho * sam.ascent_step_mult;
        for _ in 0..sam.ascent_steps {
            self.mean_gradient(oracle, w, rows);
            let scale = match sam.normalization {
                Normalization::Normalized => norm(&self.g) + 1e-12,
                Normalization::Unnormalized | Normalization::Clipped => 1.0,
            };
            let c = eta / scale;
            for (d, &g) in self.delta.iter_mut().zip(&self.g) {
                *d += c * g;
            }
            if project {
                let n = norm(&self.delta);
                if n > rho {
                    let shrink = rho / n;
                    self.delta.iter_mut().for_each(|x| *x *= shrink);
                }
            }
        }
    }
}

fn add(acc: &mut [f64], x: &[f64]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// The perturbation $\delta = \rho\, T^2 g / \lVert T g \rVert$ for a diagonal scaling $T$: ASAM's with
/// $T = |w| + \eta$ (every parameter scaled: the analytic engines have weights only), plain SAM's with $T = 1$.
pub fn scaled_delta(rho: f64, t: &[f64], g: &[f64], delta: &mut [f64]) {
    let tg: Vec<f64> = t.iter().zip(g).map(|(t, g)| t * g).collect();
    scaled_unit(rho, &tg, delta);
    for (d, t) in delta.iter_mut().zip(t) {
        *d *= t;
    }
}

/// ESAM's stochastic weight perturbation: the normalized gradient on the coordinates `mask` keeps, scaled by
/// $\rho / \beta$ (as the official code, normalized over the kept coordinates).
pub fn esam_delta(rho: f64, beta: f64, mask: &[bool], g: &[f64], delta: &mut [f64]) {
    let kept: Vec<f64> = g
        .iter()
        .zip(mask)
        .map(|(&g, &m)| if m { g } else { 0.0 })
        .collect();
    scaled_unit(rho / beta, &kept, delta);
}

/// Fisher-SAM's perturbation: $f = g / (1 + \eta g^2)$, $\delta = \rho f / \sqrt{g \cdot f}$.
pub fn fisher_delta(rho: f64, eta: f64, g: &[f64], delta: &mut [f64]) {
    let f: Vec<f64> = g.iter().map(|g| g / (1.0 + eta * g * g)).collect();
    let c = rho / (dot(g, &f).sqrt() + 1e-12);
    for (d, f) in delta.iter_mut().zip(&f) {
        *d = c * f;
    }
}

/// The variants at the options that reduce them to plain normalized SAM (for the engines' tests).
#[cfg(test)]
pub(crate) const REDUCING: [Variant; 6] = [
    Variant::Gsam { alpha: 0.0 },
    Variant::FisherSam { eta: 0.0 },
    Variant::Fsam {
        sigma: 0.0,
        lambda: 0.9,
    },
    Variant::Vasso { theta: 1.0 },
    Variant::LookSam { k: 1, alpha: 0.7 },
    Variant::Esam {
        beta: 1.0,
        gamma: 1.0,
    },
];

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
        scaled_unit(0.3, &g, &mut sam);
        let mut other = vec![0.0; 9];
        scaled_delta(0.3, &[1.0; 9], &g, &mut other);
        assert_eq!(other, sam);
        fisher_delta(0.3, 0.0, &g, &mut other);
        assert_eq!(other, sam);
        esam_delta(0.3, 1.0, &[true; 9], &g, &mut other);
        assert_eq!(other, sam);
        // ...and the scalings do change the perturbation.
        scaled_delta(
            0.3,
            &[2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            &g,
            &mut other,
        );
        assert_ne!(other, sam);
    }
}
