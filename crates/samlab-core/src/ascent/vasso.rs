//! VaSSO (Li & Giannakis, 2023): $d \leftarrow (1 - \theta) d + \theta g$ ($d$ starting at the first gradient),
//! $\delta = \rho d / \lVert d \rVert$.

use super::{Ascent, Group, Oracle, Space, VariantState};

impl<S: Space> Ascent<S> {
    /// VaSSO's perturbation with `theta`, its direction `d` in `state` (perturbs only).
    pub(super) fn vasso<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        theta: f64,
        state: &mut VariantState<S::Vector>,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        let d = match state.direction.as_mut() {
            None => state.direction.insert(self.g.clone()),
            Some(d) => {
                S::blend(d, 1.0 - theta, theta, &self.g);
                d
            }
        };
        self.perturb_along(at.rho, d);
        true
    }
}
