//! F-SAM (Li et al., 2024): $d = g - \sigma m$, $m \leftarrow \lambda m + (1 - \lambda) g$, $\delta = \rho d / \lVert d
//! \rVert$.

use super::{Ascent, Group, Oracle, Space, VariantState};

impl<S: Space> Ascent<S> {
    /// F-SAM's perturbation with `(sigma, lambda)`, its average `m` in `state` (perturbs only).
    pub(super) fn fsam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        (sigma, lambda): (f64, f64),
        state: &mut VariantState<S::Vector>,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        // As the official code: the first direction is g, which starts the average; later ones remove the previous
        // average, which then takes in g.
        match state.direction.as_mut() {
            None => {
                state.direction = Some(self.g.clone());
                self.perturb_along_g(at.rho);
            }
            Some(m) => {
                let mut d = self.g.clone();
                S::axpy(&mut d, -sigma, m);
                S::blend(m, lambda, 1.0 - lambda, &self.g);
                self.perturb_along(at.rho, &d);
            }
        }
        true
    }
}
