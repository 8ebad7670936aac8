//! Fisher-SAM (Kim et al., 2022): $\delta = \rho F^{-1} g / \sqrt{g^\top F^{-1} g}$ with $F = 1 + \eta\, g^2$.

use super::{Ascent, Group, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// Fisher-SAM's perturbation with `eta` (perturbs only).
    pub(super) fn fisher_sam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        eta: f64,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        fisher_delta::<S>(at.rho, eta, &self.g, &mut self.delta);
        self.at_w = false;
        true
    }
}

/// Fisher-SAM's perturbation: $f = g / (1 + \eta g^2)$, $\delta = \rho f / \sqrt{g \cdot f}$.
pub fn fisher_delta<S: Space>(rho: f64, eta: f64, g: &S::Vector, delta: &mut S::Vector) {
    let f = S::inverse_fisher(g, eta);
    S::set_scaled(delta, rho / (S::dot(g, &f).sqrt() + 1e-12), &f);
}
