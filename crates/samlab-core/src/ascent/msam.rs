//! MSAM (Becker et al., 2024): $\delta = -\rho v / \lVert v \rVert$ along the optimizer's momentum buffer $v$, one
//! gradient per step.

use super::{Ascent, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// MSAM's perturbation: along the momentum buffer, against the coming update; none while the buffer is zero
    /// (perturbs only, without an ascent gradient).
    pub(super) fn msam<O: Oracle<Space = S>>(&mut self, oracle: &mut O, rho: f64) -> bool {
        self.at_w = true;
        if let Some(v) = oracle.momentum() {
            let n = S::norm(v);
            if n > 0.0 {
                S::set_scaled(&mut self.delta, -rho / (n + 1e-12), v);
                self.at_w = false;
            }
        }
        true
    }
}
