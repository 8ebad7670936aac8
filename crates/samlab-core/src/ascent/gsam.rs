//! GSAM (Zhuang et al., 2022): descend along $g_p - \alpha g_\perp$, where $g_\perp$ is the part of $g$ orthogonal to
//! $g_p = \nabla L(w + \delta)$.

use super::{Ascent, Group, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// GSAM's step with `alpha`: SAM's perturbation, then its own descent direction added to `acc`.
    pub(super) fn gsam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        alpha: f64,
        acc: &mut S::Vector,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        self.perturb_along_g(at.rho);
        self.descent(oracle, at.w, at.rows, at.unit);
        // g_perp = g - (g . g_p / ||g_p||^2) g_p; the direction is g_p - alpha g_perp (in descent units).
        let along = S::dot(&self.g, &self.gp) / S::dot(&self.gp, &self.gp);
        let mut perp = self.g.clone();
        S::axpy(&mut perp, -along, &self.gp);
        S::axpy(acc, 1.0, &self.gp);
        S::axpy(acc, -alpha * at.unit, &perp);
        false
    }
}
