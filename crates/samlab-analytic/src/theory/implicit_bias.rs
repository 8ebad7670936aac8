//! Theorem 1's quantities for a finished diagonal-net run (`samlab theory implicit-bias RUN_DIR`).

use std::path::Path;

use crate::diag::{loss, DiagParams};
use crate::theory::effective_init::train_with_accounting;
use crate::theory::interpolators::{min_entropy, min_l1, min_l2, Method};
use anyhow::{Context, Result};
use ndarray::Array1;
use samlab_core::data::{read_array, Dataset};
use samlab_core::linalg::{norm, Matrix};
use samlab_core::run::RunStatus;
use samlab_core::run_dir::{
    check_artefacts, read_capped, resolve_init_from, write_atomic, write_json, MAX_TEXT_BYTES,
};
use samlab_core::BadInput;
use serde::{Deserialize, Serialize};

use crate::diag::run::{DiagRunConfig, DiagSummary, ARTEFACTS};

/// Largest final/initial train-loss ratio for which a run counts as interpolating.
pub const INTERPOLATION_RATIO: f64 = 1e-4;

/// implicit_bias.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImplicitBias {
    /// Mean of the initial scale alpha0 over coordinates.
    pub alpha0_mean: f64,
    /// Mean of the effective initialization alpha_eff over coordinates.
    pub alpha_eff_mean: f64,
    /// Smallest alpha_eff over coordinates.
    pub alpha_eff_min: f64,
    /// Largest alpha_eff over coordinates.
    pub alpha_eff_max: f64,
    /// Largest alpha_eff_j - alpha0_j (<= 0 when SAM only shrinks).
    pub alpha_eff_max_increase: f64,
    /// ||beta_pred(alpha_eff) - beta_trained|| / ||beta_trained||.
    pub rel_err_pred_alpha_eff: f64,
    /// The same with the initial scale alpha0.
    pub rel_err_pred_alpha0: f64,
    /// The same for the minimum-l1-norm interpolator.
    pub rel_err_min_l1: f64,
    /// The same for the minimum-l2-norm interpolator.
    pub rel_err_min_l2: f64,
    /// How the alpha_eff prediction was computed (dual Newton, or the min-l1 limit when alpha_eff ~ 0).
    pub solver: Method,
    /// Test loss of the trained beta.
    pub test_loss_trained: f64,
    /// Test loss of the alpha_eff prediction.
    pub test_loss_pred_alpha_eff: f64,
    /// Test loss of the alpha0 prediction.
    pub test_loss_pred_alpha0: f64,
    /// ||Delta_SAM||_1: the first-order SAM shrinkage sum_t gamma Q_t.
    pub delta_l1: f64,
    /// ||Delta||_1 with Delta = log(alpha0 / alpha_eff) (exact; includes GD's gamma^2 part).
    pub delta_total_l1: f64,
    /// int L ds = sum_t gamma_t L(beta_t).
    pub int_loss: f64,
    /// The talk's estimates: d * int L (1-SAM) and (d / n) * int L (n-SAM).
    pub d_int_loss: f64,
    /// (d / n) * int L.
    pub d_over_n_int_loss: f64,
    /// Largest error of the exact discrete identity along training, relative to alpha0^2.
    pub identity_max_error: f64,
    /// Train loss of the replayed final beta.
    pub final_train_loss: f64,
    /// Final over initial train loss (at most [`INTERPOLATION_RATIO`]).
    pub train_loss_ratio: f64,
    /// Per coordinate, for plots: the initial scale.
    pub alpha0: Vec<f64>,
    /// Per coordinate: the effective initialization.
    pub alpha_eff: Vec<f64>,
    /// Per coordinate: the trained beta = u * v.
    pub beta_trained: Vec<f64>,
    /// Per coordinate: Theorem 1's prediction from alpha_eff.
    pub beta_pred_alpha_eff: Vec<f64>,
    /// Per coordinate: the prediction from alpha0.
    pub beta_pred_alpha0: Vec<f64>,
}

/// A directory that is not a diagonal-net run, or a run Theorem 1 does not cover: bad input.
fn not_applicable(dir: &Path, why: String) -> anyhow::Error {
    BadInput(format!("{}: {why}", dir.display())).into()
}

/// Computes Theorem 1's quantities for the diagonal-net run in `dir` (replaying its training to accumulate the
/// Delta integrals) and writes `dir/implicit_bias.json`.
pub fn implicit_bias(dir: &Path) -> Result<ImplicitBias> {
    let text = std::fs::read_to_string(dir.join("config.toml"))
        .map_err(|e| not_applicable(dir, format!("not a run directory (config.toml: {e})")))?;
    let config: DiagRunConfig = toml::from_str(&text)
        .map_err(|e| not_applicable(dir, format!("not a diagonal-net run: {e}")))?;
    let summary: DiagSummary = serde_json::from_slice(
        &read_capped(&dir.join("summary.json"), MAX_TEXT_BYTES)
            .map_err(|e| not_applicable(dir, format!("not a finished run (summary.json: {e})")))?,
    )
    .map_err(|e| not_applicable(dir, format!("not a diagonal-net run's summary.json: {e}")))?;
    check_artefacts(dir, summary.artefacts_sha256.as_ref(), &ARTEFACTS)?;
    let data = Dataset::load_dir(dir)?;
    let init = match &config.init_from {
        None => DiagParams::init(config.alpha, data.d()),
        Some(from) => {
            let from = resolve_init_from(dir, from);
            DiagParams {
                u: read_array::<ndarray::Ix1>(&from.join("u.npy"))?.to_vec(),
                v: read_array::<ndarray::Ix1>(&from.join("v.npy"))?.to_vec(),
            }
        }
    };
    let alpha0 = init.alpha_eff();
    let (run, acc) = train_with_accounting(&data, &config.train, init.clone())
        .map_err(|e| not_applicable(dir, format!("Theorem 1 does not cover this run: {e}")))?;
    if run.status == RunStatus::Diverged {
        return Err(not_applicable(
            dir,
            "the run diverged: Theorem 1 assumes convergence".into(),
        ));
    }
    let stored: Array1<f64> = read_array(&dir.join("u.npy"))?;
    if stored.len() != run.params.u.len() {
        return Err(samlab_core::DataError::Shape(format!(
            "{} holds {} entries, but the run's data has d = {}",
            dir.join("u.npy").display(),
            stored.len(),
            run.params.u.len()
        ))
        .into());
    }
    // A NaN on either side is a mismatch (`NaN > 1e-9` is false, so a NaN is asked for by name).
    let far = stored
        .iter()
        .zip(&run.params.u)
        .map(|(a, b)| (a - b).abs())
        .position(|x| x.is_nan() || x > 1e-9);
    if let Some(j) = far {
        let drift = stored
            .iter()
            .zip(&run.params.u)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, |m, x| if x.is_nan() || x > m { x } else { m });
        return Err(not_applicable(
            dir,
            format!(
                "replaying config.toml does not give the stored u.npy (u[{j}] = {} stored, {} replayed; max difference {drift:e})",
                stored[j], run.params.u[j]
            ),
        ));
    }
    let flat = |a: &ndarray::Array2<f64>| a.iter().copied().collect::<Vec<f64>>();
    let (x, x_test) = (flat(&data.x_train), flat(&data.x_test));
    let (y, y_test) = (data.y_train.to_vec(), data.y_test.to_vec());
    let beta = run.params.beta();
    let initial = loss(&x, &y, &init.beta());
    let final_train_loss = loss(&x, &y, &beta);
    let ratio = final_train_loss / initial;
    if ratio.is_nan() || ratio > INTERPOLATION_RATIO {
        return Err(not_applicable(
            dir,
            format!("Theorem 1 assumes the run interpolates the training data, but its final train loss {final_train_loss:.3e} is {ratio:.1e} times the initial one (needs <= {INTERPOLATION_RATIO:e})"),
        ));
    }
    let xm = Matrix::from_array(&data.x_train);
    let alpha_eff = run.params.alpha_eff();
    let pred_eff = min_entropy(&xm, &y, &alpha_eff)?;
    let pred0 = min_entropy(&xm, &y, &alpha0)?;
    let rel = |b: &[f64]| {
        norm(&b.iter().zip(&beta).map(|(p, t)| p - t).collect::<Vec<_>>()) / norm(&beta)
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (d, n) = (data.d() as f64, data.n() as f64);
    let result = ImplicitBias {
        alpha0_mean: mean(&alpha0),
        alpha_eff_mean: mean(&alpha_eff),
        alpha_eff_min: alpha_eff.iter().copied().fold(f64::INFINITY, f64::min),
        alpha_eff_max: alpha_eff.iter().copied().fold(0.0, f64::max),
        alpha_eff_max_increase: alpha_eff
            .iter()
            .zip(&alpha0)
            .map(|(e, a)| e - a)
            .fold(f64::NEG_INFINITY, f64::max),
        rel_err_pred_alpha_eff: rel(&pred_eff.beta),
        rel_err_pred_alpha0: rel(&pred0.beta),
        rel_err_min_l1: rel(&min_l1(&xm, &y)?),
        rel_err_min_l2: rel(&min_l2(&xm, &y)?),
        solver: pred_eff.method,
        test_loss_trained: loss(&x_test, &y_test, &beta),
        test_loss_pred_alpha_eff: loss(&x_test, &y_test, &pred_eff.beta),
        test_loss_pred_alpha0: loss(&x_test, &y_test, &pred0.beta),
        delta_l1: acc.delta_sam.iter().map(|v| v.abs()).sum(),
        delta_total_l1: acc.delta_total.iter().map(|v| v.abs()).sum(),
        int_loss: acc.int_loss,
        d_int_loss: d * acc.int_loss,
        d_over_n_int_loss: d / n * acc.int_loss,
        identity_max_error: acc.identity_error,
        final_train_loss,
        train_loss_ratio: ratio,
        alpha0,
        alpha_eff,
        beta_trained: beta,
        beta_pred_alpha_eff: pred_eff.beta,
        beta_pred_alpha0: pred0.beta,
    };
    write_atomic(&dir.join("implicit_bias.json"), |p| write_json(p, &result))
        .context("cannot write implicit_bias.json")?;
    Ok(result)
}
