//! LookSAM (Liu et al., 2022): a SAM step every `k` steps, storing $g_v$, the part of its gradient orthogonal to
//! $g$; in between, $g + \alpha (\lVert g \rVert / \lVert g_v \rVert) g_v$ with one gradient.

use super::{Ascent, Group, Oracle, Space, VariantState};

impl<S: Space> Ascent<S> {
    /// LookSAM's step with `(k, alpha)`, `g_v` and the step count in `state`: its descent direction added to `acc`.
    pub(super) fn look_sam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        at: &Group<S>,
        (k, alpha): (usize, f64),
        state: &mut VariantState<S::Vector>,
        acc: &mut S::Vector,
    ) -> bool {
        self.unperturbed(oracle, at.w, at.ascent_rows);
        let full = state.steps.is_multiple_of(k as u64) || state.direction.is_none();
        if !full {
            // Reuse the stored orthogonal component, scaled to this gradient: one gradient per step.
            let gv = state.direction.as_ref().expect("stored by a full step");
            let c = alpha * S::norm(&self.g) / (S::norm(gv) + 1e-12);
            let mut d = self.g.clone();
            S::axpy(&mut d, c, gv);
            S::axpy(acc, at.unit, &d);
            return false;
        }
        self.perturb_along_g(at.rho);
        self.descent(oracle, at.w, at.rows, at.unit);
        // g_v: the part of the SAM gradient of the mean loss orthogonal to g.
        let along = S::dot(&self.g, &self.gp) / S::dot(&self.g, &self.g);
        let mut gv = self.gp.clone();
        S::axpy(&mut gv, -along, &self.g);
        S::scale(&mut gv, 1.0 / at.unit);
        state.direction = Some(gv);
        S::axpy(acc, 1.0, &self.gp);
        false
    }
}
