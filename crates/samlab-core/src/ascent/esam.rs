//! ESAM (Du et al., 2022): stochastic weight perturbation (each coordinate kept with probability $\beta$, the step
//! scaled by $1/\beta$) and sharpness-sensitive data selection (the descent on the fraction $\gamma$ of the group
//! whose loss rises most).

use super::{scaled_unit, Ascent, Oracle, Space};

impl<S: Space> Ascent<S> {
    /// ESAM's group step with the coordinates `mask` keeps (all of them for `None`): the perturbation of
    /// [`esam_delta`], then the descent on the fraction `gamma` of `rows` whose loss rises most (standing for the
    /// whole group).
    #[allow(clippy::too_many_arguments)]
    pub fn esam<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        w: &S::Vector,
        rows: &[usize],
        ascent_rows: &[usize],
        rho: f64,
        (beta, gamma): (f64, f64),
        mask: Option<&S::Vector>,
        acc: &mut S::Vector,
    ) {
        let unit = oracle.descent_unit(rows.len());
        self.unperturbed(oracle, w, ascent_rows);
        esam_delta::<S>(rho, beta, mask, &self.g, &mut self.delta);
        self.at_w = false;
        let selected = self.sharpest(oracle, w, rows, gamma);
        self.descent(oracle, w, &selected, unit);
        S::axpy(acc, 1.0, &self.gp);
    }

    /// ESAM's sharpness-sensitive data selection: the examples whose loss rises most from `w` to `w + delta`, the
    /// fraction `gamma` of `rows` (all of them for `gamma >= 0.99`, as the official code).
    fn sharpest<O: Oracle<Space = S>>(
        &mut self,
        oracle: &mut O,
        w: &S::Vector,
        rows: &[usize],
        gamma: f64,
    ) -> Vec<usize> {
        if gamma >= 0.99 {
            return rows.to_vec();
        }
        let (mut before, mut after) = (vec![0.0; rows.len()], vec![0.0; rows.len()]);
        oracle.losses(w, rows, &mut before);
        S::set_sum(&mut self.point, w, &self.delta);
        oracle.losses(&self.point, rows, &mut after);
        let rise: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let keep = ((rows.len() as f64 * gamma) as usize).max(1);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| rise[b].total_cmp(&rise[a]));
        let mut kept: Vec<usize> = order[..keep].to_vec();
        kept.sort_unstable();
        kept.into_iter().map(|k| rows[k]).collect()
    }
}

/// ESAM's stochastic weight perturbation: the normalized gradient on the coordinates `mask` keeps (every one for
/// `None`), scaled by $\rho / \beta$ (as the official code, normalized over the kept coordinates).
pub fn esam_delta<S: Space>(
    rho: f64,
    beta: f64,
    mask: Option<&S::Vector>,
    g: &S::Vector,
    delta: &mut S::Vector,
) {
    let mut kept = g.clone();
    if let Some(mask) = mask {
        S::mul(&mut kept, mask);
    }
    scaled_unit::<S>(rho / beta, &kept, delta);
}
