//! The effective initialization of SAM on diagonal networks (Theorem 1) and its bookkeeping along training.
//!
//! For any single-step SAM update of a diagonal network, exact algebra (no approximation) gives
//!
//! $$u_{t+1}^2 - v_{t+1}^2 = (u_t^2 - v_t^2) \odot \big((1 - \gamma Q_t)^2 - \gamma^2 P_t^2\big)$$
//!
//! with $P = \frac{1}{B}\sum_G \sum_{i\in G} \tilde r_i x_i$ (the descent factor; $\tilde r_i$ is example $i$'s
//! residual at its group's perturbed point) and $Q = \frac{1}{B}\sum_G \rho_G\, g_G \odot \sum_{i\in G}\tilde r_i x_i$
//! (the SAM correction; $g_G = \frac1m\sum_{i\in G} r_i x_i$, $\rho_G$ the group's effective radius: $\rho$ for
//! unnormalized SAM, $\rho/\lVert\nabla\rVert$ normalized). So $\alpha_{\mathrm{eff}} = \alpha_0 \odot e^{-\Delta}$ with
//! $\Delta = -\frac12\sum_t \log((1 - \gamma Q_t)^2 - \gamma^2 P_t^2)$, whose first-order SAM part is
//! $\Delta_{\mathrm{SAM}} = \sum_t \gamma Q_t$: for n-SAM $\rho\int \nabla L(\tilde\beta) \odot \nabla L(\beta)$, for
//! 1-SAM $\rho \int \frac1n \sum_i \tilde r_i r_i x_i^2$ (SPEC §2.6). GD has $Q = 0$ and shrinks only by $\gamma^2 P^2$.

use crate::diag::{self, loss, DiagParams, DiagRun, DiagTrainConfig, StepView};
use samlab_core::data::Dataset;
use samlab_core::sam::{AscentSource, Normalization, Perturbation};
use samlab_core::ConfigError;

/// What was accumulated along a run.
#[derive(Clone, Debug)]
pub struct Accounting {
    /// $\Delta_{\mathrm{SAM}} = \sum_t \gamma_t Q_t$ per coordinate (first-order SAM shrinkage).
    pub delta_sam: Vec<f64>,
    /// $\Delta = -\frac12\sum_t \log((1-\gamma Q)^2 - \gamma^2 P^2)$ per coordinate (exact, GD's part included).
    pub delta_total: Vec<f64>,
    /// $\int L\,ds \approx \sum_t \gamma_t L(\beta_t)$ (training loss over "time" $s = \sum \gamma$).
    pub int_loss: f64,
    /// Largest $|(u^2 - v^2)_{t+1} - \text{identity}| / \alpha_0^2$ over the run (the identity's check).
    pub identity_error: f64,
}

/// $(P, Q)$ of one update at `p` on `batch` (see the module docs), computed from their definitions.
fn factors(
    data: &Dataset,
    p: &DiagParams,
    batch: &[usize],
    m: usize,
    rho: f64,
    normalized: bool,
    clipped: bool,
) -> (Vec<f64>, Vec<f64>) {
    let d = p.u.len();
    let x = |i: usize| data.x_train.row(i);
    let resid = |i: usize, u: &[f64], v: &[f64]| -> f64 {
        x(i).iter()
            .zip(u.iter().zip(v))
            .map(|(x, (u, v))| x * u * v)
            .sum::<f64>()
            - data.y_train[i]
    };
    let (mut big_p, mut big_q) = (vec![0.0; d], vec![0.0; d]);
    for group in batch.chunks(m) {
        let mut g = vec![0.0; d];
        for &i in group {
            let r = resid(i, &p.u, &p.v);
            for (gj, xj) in g.iter_mut().zip(x(i)) {
                *gj += r * xj / m as f64;
            }
        }
        // Ascent gradient (g v, g u); its norm sets the normalized / clipped radius.
        let gnorm = g
            .iter()
            .zip(p.u.iter().zip(&p.v))
            .map(|(g, (u, v))| g * g * (u * u + v * v))
            .sum::<f64>()
            .sqrt();
        let rho_g = if normalized {
            rho / (gnorm + 1e-12)
        } else if clipped && gnorm > 1.0 {
            rho / gnorm
        } else {
            rho
        };
        let ut: Vec<f64> = (0..d).map(|j| p.u[j] + rho_g * g[j] * p.v[j]).collect();
        let vt: Vec<f64> = (0..d).map(|j| p.v[j] + rho_g * g[j] * p.u[j]).collect();
        for &i in group {
            let rt = resid(i, &ut, &vt);
            for j in 0..d {
                big_p[j] += rt * x(i)[j] / batch.len() as f64;
                big_q[j] += rho_g * g[j] * rt * x(i)[j] / batch.len() as f64;
            }
        }
    }
    (big_p, big_q)
}

/// Trains like [`diag::train`] while accumulating [`Accounting`]. Covers single-step ascent SAM on the
/// descent batch (any m; normalized, unnormalized or clipped), ERM and GD; other variants are rejected, since
/// their perturbation is not of the form $(c \odot v, c \odot u)$ the identity needs.
pub fn train_with_accounting(
    data: &Dataset,
    config: &DiagTrainConfig,
    init: DiagParams,
) -> Result<(DiagRun, Accounting), ConfigError> {
    let sam = &config.sam;
    if sam.ascent_steps != 1
        || sam.perturbation != Perturbation::Ascent
        || sam.random_init
        || sam.ascent_source != AscentSource::SameBatch
        || sam.variant != samlab_core::sam::Variant::Sam
    {
        return Err(ConfigError::Invalid {
            field: "sam",
            reason: "the Theorem-1 accounting covers single-step ascent SAM on the descent batch (no random, multi-step or previous-batch perturbations, no variants)".into(),
        });
    }
    let m = sam
        .check(config.batch_size.unwrap_or(data.n()))?
        .group_size();
    let (normalized, clipped) = (
        sam.normalization == Normalization::Normalized,
        sam.normalization == Normalization::Clipped,
    );
    let x = data
        .x_train
        .as_standard_layout()
        .iter()
        .copied()
        .collect::<Vec<f64>>();
    let y = data.y_train.to_vec();
    let alpha0_sq: Vec<f64> = init
        .u
        .iter()
        .zip(&init.v)
        .map(|(u, v)| (u * u - v * v).abs().max(f64::MIN_POSITIVE))
        .collect();
    let d = init.u.len();
    let mut acc = Accounting {
        delta_sam: vec![0.0; d],
        delta_total: vec![0.0; d],
        int_loss: 0.0,
        identity_error: 0.0,
    };
    let mut predicted: Option<Vec<f64>> = None;
    let balance =
        |p: &DiagParams| -> Vec<f64> { p.u.iter().zip(&p.v).map(|(u, v)| u * u - v * v).collect() };
    let check = |acc: &mut Accounting, predicted: &Option<Vec<f64>>, p: &DiagParams| {
        if let Some(pred) = predicted {
            for ((b, pr), a0) in balance(p).iter().zip(pred).zip(&alpha0_sq) {
                acc.identity_error = acc.identity_error.max((b - pr).abs() / a0);
            }
        }
    };
    let run = diag::train(data, config, init, &mut |s: &StepView| {
        check(&mut acc, &predicted, s.params);
        let (p, q) = factors(data, s.params, s.batch, m, s.rho, normalized, clipped);
        let gamma = s.lr;
        let before = balance(s.params);
        let mut next = vec![0.0; d];
        for j in 0..d {
            let factor = (1.0 - gamma * q[j]).powi(2) - (gamma * p[j]).powi(2);
            acc.delta_sam[j] += gamma * q[j];
            acc.delta_total[j] -= 0.5 * factor.ln();
            next[j] = before[j] * factor;
        }
        acc.int_loss += gamma * loss(&x, &y, &s.params.beta());
        predicted = Some(next);
        true
    })?;
    check(&mut acc, &predicted, &run.params);
    Ok((run, acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use samlab_core::data::SparseRegression;
    use samlab_core::run::LogSchedule;
    use samlab_core::sam::{Grouping, SamConfig};
    use samlab_core::schedule::LrSchedule;

    fn account(
        sam: SamConfig,
        lr: f64,
        iters: usize,
        batch_size: Option<usize>,
    ) -> (DiagRun, Accounting) {
        let (data, _) = SparseRegression::NOTEBOOK.generate().unwrap();
        let config = DiagTrainConfig {
            lr: LrSchedule::constant(lr),
            iters,
            batch_size,
            seed: 3,
            sam,
            log: LogSchedule::Ends,
        };
        train_with_accounting(&data, &config, DiagParams::init(0.1, 30)).unwrap()
    }

    /// SPEC §2.6's discrete identities, along whole trajectories, for every supported variant.
    #[test]
    fn discrete_identities_hold_along_training() {
        let normalized = SamConfig {
            normalization: Normalization::Normalized,
            ..SamConfig::usam(0.05, Grouping::Size(4))
        };
        let clipped = SamConfig {
            normalization: Normalization::Clipped,
            ..SamConfig::usam(0.5, Grouping::Size(2))
        };
        for (sam, batch) in [
            (SamConfig::erm(), None),
            (SamConfig::usam(0.1, Grouping::WholeBatch), None),
            (SamConfig::usam(0.2, Grouping::Size(1)), None),
            (SamConfig::usam(0.1, Grouping::Size(5)), None),
            (normalized, None),
            (clipped, None),
            (SamConfig::usam(0.1, Grouping::Size(2)), Some(4)),
        ] {
            let (run, acc) = account(sam.clone(), 5.0 / 30.0, 3000, batch);
            assert!(
                acc.identity_error < 1e-10,
                "{sam:?}: {}",
                acc.identity_error
            );
            // Delta is exactly log(alpha0 / alpha_eff).
            for (dt, ae) in acc.delta_total.iter().zip(run.params.alpha_eff()) {
                assert!(
                    (dt - (0.1 / ae).ln()).abs() < 1e-8,
                    "{sam:?}: {dt} vs {}",
                    (0.1 / ae).ln()
                );
            }
        }
    }

    #[test]
    fn sam_shrinks_more_with_smaller_groups() {
        let (_, gd) = account(SamConfig::erm(), 5.0 / 30.0, 10001, None);
        let (_, nsam) = account(
            SamConfig::usam(0.1, Grouping::WholeBatch),
            5.0 / 30.0,
            10001,
            None,
        );
        let (_, one) = account(
            SamConfig::usam(0.1, Grouping::Size(1)),
            5.0 / 30.0,
            10001,
            None,
        );
        let l1 = |v: &[f64]| v.iter().sum::<f64>();
        assert_eq!(l1(&gd.delta_sam), 0.0);
        assert!(
            nsam.delta_sam.iter().all(|&d| d >= 0.0) && one.delta_sam.iter().all(|&d| d >= 0.0)
        );
        assert!(
            l1(&one.delta_sam) > 5.0 * l1(&nsam.delta_sam),
            "{} vs {}",
            l1(&one.delta_sam),
            l1(&nsam.delta_sam)
        );
        assert!(one.int_loss > 0.0 && gd.int_loss > 0.0);
    }

    #[test]
    fn unsupported_variants_are_rejected() {
        let (data, _) = SparseRegression::NOTEBOOK.generate().unwrap();
        let sam = SamConfig {
            ascent_steps: 2,
            ..SamConfig::usam(0.1, Grouping::Size(1))
        };
        let config = DiagTrainConfig {
            lr: LrSchedule::constant(0.1),
            iters: 10,
            batch_size: None,
            seed: 0,
            sam,
            log: LogSchedule::Ends,
        };
        assert!(train_with_accounting(&data, &config, DiagParams::init(0.1, 30)).is_err());
    }
}
