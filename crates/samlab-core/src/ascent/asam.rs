//! ASAM (Kwon et al., 2021): $\delta = \rho\, T^2 g / \lVert T g \rVert$ with $T = |w| + \eta$ on the parameters
//! the oracle scales (1 elsewhere).

use super::{scaled_unit, Ascent, Group, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// ASAM's perturbation with `eta` (perturbs only).
    pub(super) fn asam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        eta: f64,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        let t = oracle.asam_scaling(at.w, eta);
        scaled_delta::<S>(at.rho, &t, &self.g, &mut self.delta);
        self.at_w = false;
        true
    }
}

/// The perturbation $\delta = \rho\, T^2 g / \lVert T g \rVert$ for a diagonal scaling $T$: ASAM's with
/// $T = |w| + \eta$ on its scaled parameters, plain SAM's with $T = 1$.
pub fn scaled_delta<S: Space>(rho: f64, t: &S::Vector, g: &S::Vector, delta: &mut S::Vector) {
    let mut tg = g.clone();
    S::mul(&mut tg, t);
    scaled_unit::<S>(rho, &tg, delta);
    S::mul(delta, t);
}
