//! Theorem 1 checked on the notebook's problem (SPEC §2.6-2.7): effective initialization, Delta integrals and the
//! predicted interpolator, for GD, n-SAM and 1-SAM.

use std::path::PathBuf;

use anyhow::Result;
use samlab_core::data::SparseRegression;
use samlab_core::sam::{Grouping, SamConfig};
use samlab_report::{Figure, Scale, Section, Series};

use super::{diag_config, dir_name, fmt_loss, ClaimSpec, Ctx, Experiment, PlannedRun};
use samlab_analytic::diag::run::DiagRunConfig;
use samlab_analytic::theory::implicit_bias::{implicit_bias, ImplicitBias};

const DATA: SparseRegression = SparseRegression::NOTEBOOK;
const ALPHA: f64 = 0.1;
const ITERS: usize = 10001;

/// One run of the study: label, method ("GD", "n-SAM", "1-SAM"), rho (ours), step size times d.
struct Spec {
    label: &'static str,
    method: &'static str,
    rho: f64,
    lr_times_d: f64,
}

const RUNS: [Spec; 9] = [
    Spec {
        label: "GD (5/d)",
        method: "GD",
        rho: 0.0,
        lr_times_d: 5.0,
    },
    Spec {
        label: "n-SAM rho=0.1",
        method: "n-SAM",
        rho: 0.1,
        lr_times_d: 5.0,
    },
    Spec {
        label: "n-SAM rho=0.3",
        method: "n-SAM",
        rho: 0.3,
        lr_times_d: 5.0,
    },
    Spec {
        label: "1-SAM rho=0.06",
        method: "1-SAM",
        rho: 0.06,
        lr_times_d: 5.0,
    },
    Spec {
        label: "1-SAM rho=0.1",
        method: "1-SAM",
        rho: 0.1,
        lr_times_d: 5.0,
    },
    Spec {
        label: "1-SAM rho=0.2",
        method: "1-SAM",
        rho: 0.2,
        lr_times_d: 5.0,
    },
    Spec {
        label: "1-SAM rho=0.6",
        method: "1-SAM",
        rho: 0.6,
        lr_times_d: 5.0,
    },
    Spec {
        label: "GD (1/d)",
        method: "GD",
        rho: 0.0,
        lr_times_d: 1.0,
    },
    Spec {
        label: "1-SAM rho=0.2 (15/d)",
        method: "1-SAM",
        rho: 0.2,
        lr_times_d: 15.0,
    },
];

impl Spec {
    fn sam(&self) -> SamConfig {
        match self.method {
            "n-SAM" => SamConfig::usam(self.rho, Grouping::WholeBatch),
            "1-SAM" => SamConfig::usam(self.rho, Grouping::Size(1)),
            _ => SamConfig::erm(),
        }
    }

    /// The talk's estimate of ||Delta||_1 in our convention: 2 rho d int L (1-SAM), 2 rho (d/n) int L (n-SAM).
    fn delta_estimate(&self, r: &ImplicitBias) -> f64 {
        match self.method {
            "1-SAM" => 2.0 * self.rho * r.d_int_loss,
            "n-SAM" => 2.0 * self.rho * r.d_over_n_int_loss,
            _ => 0.0,
        }
    }
}

/// The runs of [`RUNS`], named by their labels.
fn configs() -> Vec<(String, DiagRunConfig)> {
    RUNS.iter()
        .map(|s| {
            (
                dir_name(s.label),
                diag_config(DATA, ALPHA, s.lr_times_d / 30.0, ITERS, s.sam()),
            )
        })
        .collect()
}

/// Theorem 1 on the notebook's problem.
pub struct ImplicitBiasStudy;

impl Experiment for ImplicitBiasStudy {
    fn id(&self) -> &'static str {
        "theory_implicit_bias"
    }
    fn title(&self) -> &'static str {
        "Theory: the implicit bias of SAM on diagonal networks (Theorem 1)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "theory.alpha_eff_shrinks",
                claim: "SAM never enlarges the effective initialization: alpha_eff <= alpha0 coordinatewise in every run",
                paper: "Theorem 1: alpha_inf = alpha * exp(-Delta), Delta >= 0",
            },
            ClaimSpec {
                id: "theory.1sam_shrinks_more",
                claim: "At equal rho, mean alpha_eff(1-SAM) < mean alpha_eff(n-SAM) < alpha0",
                paper: "||Delta_1SAM||_1 ~ d int L vs ||Delta_nSAM||_1 ~ (d/n) int L",
            },
            ClaimSpec {
                id: "theory.prediction_alpha_eff",
                claim: "The min-phi interpolator at alpha_eff matches the trained beta within 2e-2 relative error in every run",
                paper: "SPEC re-run: 5.7e-4 .. 1.3e-2",
            },
            ClaimSpec {
                id: "theory.prediction_beats_alpha0",
                claim: "Whenever alpha_eff is clearly below alpha0 (mean < 0.95 alpha0), alpha_eff predicts beta better than alpha0",
                paper: "e.g. 1-SAM rho_nb=0.1: 1.8e-3 vs 1.2e-1",
            },
            ClaimSpec {
                id: "theory.discrete_identities",
                claim: "The exact discrete identity (u^2 - v^2)' = (u^2 - v^2)((1 - gamma Q)^2 - gamma^2 P^2) holds along every run (1e-10)",
                paper: "SPEC §2.6 identities (GD, n-SAM, 1-SAM)",
            },
            ClaimSpec {
                id: "theory.delta_estimates",
                claim: "||Delta_SAM||_1 is within a factor 3 of the talk's estimates (2 rho d int L for 1-SAM, 2 rho (d/n) int L for n-SAM, our rho convention)",
                paper: "||Delta_1SAM||_1 ~ d int L, ||Delta_nSAM||_1 ~ (d/n) int L",
            },
        ]
    }

    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.planned(self.id(), configs())
    }

    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let outcomes = ctx.diag_runs(self.id(), configs())?;
        let dirs: Vec<PathBuf> = outcomes.iter().map(|o| o.dir.clone()).collect();
        let results: Vec<ImplicitBias> = super::par_map(&dirs, |d| implicit_bias(d))
            .into_iter()
            .collect::<Result<_>>()?;
        let spec = self.claims();
        let sam_runs: Vec<usize> = (0..RUNS.len())
            .filter(|&k| RUNS[k].method != "GD")
            .collect();

        let max_increase = sam_runs
            .iter()
            .map(|&k| results[k].alpha_eff_max_increase)
            .fold(f64::NEG_INFINITY, f64::max);
        let (gd, nsam, one) = (&results[0], &results[1], &results[4]);
        let pred_worst = results
            .iter()
            .map(|r| r.rel_err_pred_alpha_eff)
            .fold(0.0, f64::max);
        let shrunk: Vec<&ImplicitBias> = results
            .iter()
            .filter(|r| r.alpha_eff_mean < 0.95 * r.alpha0_mean)
            .collect();
        let better = shrunk
            .iter()
            .all(|r| r.rel_err_pred_alpha_eff < r.rel_err_pred_alpha0);
        let identity = results
            .iter()
            .map(|r| r.identity_max_error)
            .fold(0.0, f64::max);
        let ratios: Vec<(String, f64)> = sam_runs
            .iter()
            .map(|&k| {
                (
                    RUNS[k].label.to_string(),
                    results[k].delta_l1 / RUNS[k].delta_estimate(&results[k]),
                )
            })
            .collect();
        let ratio_ok = ratios.iter().all(|(_, r)| (1.0 / 3.0..=3.0).contains(r));

        let mut table = vec![[
            "run",
            "mean alpha_eff",
            "rel. err. pred(alpha_eff)",
            "rel. err. pred(alpha0)",
            "||Delta_SAM||_1",
            "talk estimate",
            "test loss trained",
            "test loss pred(alpha_eff)",
        ]
        .map(String::from)
        .to_vec()];
        for (s, r) in RUNS.iter().zip(&results) {
            table.push(vec![
                s.label.into(),
                format!("{:.4}", r.alpha_eff_mean),
                format!("{:.2e}", r.rel_err_pred_alpha_eff),
                format!("{:.2e}", r.rel_err_pred_alpha0),
                format!("{:.3e}", r.delta_l1),
                format!("{:.3e}", s.delta_estimate(r)),
                fmt_loss(r.test_loss_trained),
                fmt_loss(r.test_loss_pred_alpha_eff),
            ]);
        }
        let dir = ctx.dir(self.id());
        let coords = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(j, &a)| ((j + 1) as f64, a))
                .collect()
        };
        let alpha_fig = Figure {
            title: "Effective initialization per coordinate (gamma = 5/d, rho = 0.1)".into(),
            x_label: "coordinate j".into(),
            y_label: "alpha_eff".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series: [("GD", gd), ("n-SAM", nsam), ("1-SAM", one)]
                .iter()
                .map(|(name, r)| Series {
                    name: (*name).into(),
                    points: coords(&r.alpha_eff),
                    dashed: false,
                    markers: true,
                    color: None,
                    band: vec![],
                })
                .collect(),
            vlines: vec![],
            y_range: None,
        };
        let example = &results[5];
        let beta_fig = Figure {
            title: "Trained vs predicted beta: 1-SAM rho = 0.2 (notebook 0.1)".into(),
            x_label: "coordinate j".into(),
            y_label: "beta_j".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "trained".into(),
                    points: coords(&example.beta_trained),
                    dashed: false,
                    markers: true,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: "predicted from alpha_eff".into(),
                    points: coords(&example.beta_pred_alpha_eff),
                    dashed: true,
                    markers: false,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: "predicted from alpha0".into(),
                    points: coords(&example.beta_pred_alpha0),
                    dashed: true,
                    markers: false,
                    color: None,
                    band: vec![],
                },
            ],
            vlines: vec![],
            y_range: None,
        };
        let pick = |method: &str, measured: bool| -> Vec<(f64, f64)> {
            sam_runs
                .iter()
                .filter(|&&k| RUNS[k].method == method && RUNS[k].lr_times_d == 5.0)
                .map(|&k| {
                    (
                        RUNS[k].rho,
                        if measured {
                            results[k].delta_l1
                        } else {
                            RUNS[k].delta_estimate(&results[k])
                        },
                    )
                })
                .collect()
        };
        let delta_fig = Figure {
            title: "||Delta_SAM||_1: measured vs the talk's estimates (gamma = 5/d)".into(),
            x_label: "rho".into(),
            y_label: "||Delta||_1".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series: vec![
                Series {
                    name: "1-SAM measured".into(),
                    points: pick("1-SAM", true),
                    dashed: false,
                    markers: true,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: "1-SAM: 2 rho d int L".into(),
                    points: pick("1-SAM", false),
                    dashed: true,
                    markers: false,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: "n-SAM measured".into(),
                    points: pick("n-SAM", true),
                    dashed: false,
                    markers: true,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: "n-SAM: 2 rho (d/n) int L".into(),
                    points: pick("n-SAM", false),
                    dashed: true,
                    markers: false,
                    color: None,
                    band: vec![],
                },
            ],
            vlines: vec![],
            y_range: None,
        };
        let figures = [
            (alpha_fig, "alpha_eff"),
            (beta_fig, "beta_pred"),
            (delta_fig, "delta"),
        ]
        .iter()
        .map(|(f, stem)| Ok(samlab_report::render(f, &dir.join(stem))?.0))
        .collect::<Result<Vec<_>>>()?;
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "The notebook's problem, alpha0 = {ALPHA}, 10001 full-batch updates; radii in our convention (1-SAM rho 0.2 is the notebook's 0.1). For each run, `samlab theory implicit-bias` replays the training while accumulating P and Q of the exact identity, then solves min phi_a(beta) s.t. X beta = y at a = alpha_eff and at a = alpha0 (dual Newton with continuation; the min-l1 limit when every alpha_eff < 1e-6). Each run directory holds implicit_bias.json. Note: at the same rho, n-SAM's test loss is worse than GD's here even though its alpha_eff is smaller, because its shrinkage is very uneven across coordinates."
            ),
            figures,
            table,
            claims: vec![
                spec[0].judge(format!("largest alpha_eff_j - alpha0_j over SAM runs: {max_increase:.2e}"), max_increase <= 1e-12),
                spec[1].judge(
                    format!("1-SAM {:.4} < n-SAM {:.4} < alpha0 {ALPHA} (rho = 0.1, gamma = 5/d)", one.alpha_eff_mean, nsam.alpha_eff_mean),
                    one.alpha_eff_mean < nsam.alpha_eff_mean && nsam.alpha_eff_mean < ALPHA,
                ),
                spec[2].judge(format!("worst {pred_worst:.2e} over {} runs", results.len()), pred_worst <= 2e-2),
                spec[3].judge(
                    format!(
                        "{} runs with mean alpha_eff < 0.95 alpha0; errors (alpha_eff vs alpha0): {}",
                        shrunk.len(),
                        shrunk.iter().map(|r| format!("{:.1e} vs {:.1e}", r.rel_err_pred_alpha_eff, r.rel_err_pred_alpha0)).collect::<Vec<_>>().join(", ")
                    ),
                    better && !shrunk.is_empty(),
                ),
                spec[4].judge(format!("max error {identity:.1e} (relative to alpha0^2)"), identity < 1e-10),
                spec[5].judge(
                    format!("measured / estimate: {}", ratios.iter().map(|(l, r)| format!("{l}: {r:.2}")).collect::<Vec<_>>().join(", ")),
                    ratio_ok,
                ),
            ],
        })
    }
}
