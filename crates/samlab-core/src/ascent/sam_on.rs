//! SAM-ON (Mueller et al., 2023): plain SAM's perturbation restricted to the normalization layers' affine
//! parameters.

use super::{Ascent, Group, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// SAM-ON's perturbation (perturbs only).
    pub(super) fn sam_on<O: Oracle<Space = S>>(&mut self, oracle: &mut O, at: &Group<S>) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        let mask = oracle
            .normalization_mask()
            .expect("SAM-ON is refused on a model without normalization layers");
        let mut kept = self.g.clone();
        S::mul(&mut kept, &mask);
        self.perturb_along(at.rho, &kept);
        true
    }
}
