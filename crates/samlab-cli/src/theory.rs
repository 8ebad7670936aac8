//! `samlab theory implicit-bias RUN_DIR`: prints Theorem 1's quantities (computed by `samlab_analytic::theory::implicit_bias`).

use std::path::Path;

use samlab_analytic::theory::implicit_bias::ImplicitBias;

/// Prints the short table of `samlab theory implicit-bias`.
pub fn print(dir: &Path, r: &ImplicitBias) {
    let rows = [
        ("alpha0 (mean)", format!("{:.4e}", r.alpha0_mean)),
        (
            "alpha_eff (mean, min, max)",
            format!(
                "{:.4e}, {:.4e}, {:.4e}",
                r.alpha_eff_mean, r.alpha_eff_min, r.alpha_eff_max
            ),
        ),
        (
            "rel. error of prediction from alpha_eff",
            format!("{:.3e} ({:?})", r.rel_err_pred_alpha_eff, r.solver),
        ),
        (
            "rel. error of prediction from alpha0",
            format!("{:.3e}", r.rel_err_pred_alpha0),
        ),
        (
            "rel. error of min-l1 / min-l2",
            format!("{:.3e} / {:.3e}", r.rel_err_min_l1, r.rel_err_min_l2),
        ),
        (
            "||Delta_SAM||_1, ||Delta||_1",
            format!("{:.4e}, {:.4e}", r.delta_l1, r.delta_total_l1),
        ),
        (
            "d int L, (d/n) int L",
            format!("{:.4e}, {:.4e}", r.d_int_loss, r.d_over_n_int_loss),
        ),
        (
            "identity error (max)",
            format!("{:.1e}", r.identity_max_error),
        ),
        (
            "test loss: trained / pred(alpha_eff) / pred(alpha0)",
            format!(
                "{:.4e} / {:.4e} / {:.4e}",
                r.test_loss_trained, r.test_loss_pred_alpha_eff, r.test_loss_pred_alpha0
            ),
        ),
    ];
    for (k, v) in rows {
        say!("{k:<52} {v}");
    }
    say!("-> {}", dir.join("implicit_bias.json").display());
}
