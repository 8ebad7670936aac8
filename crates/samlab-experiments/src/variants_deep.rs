//! Our finding, not the paper's: the SAM variants (issue 12) on a deep net at equal compute. Each variant at its
//! radius validated on a short grid: test error and cross-entropy over seeds, gradients per update, wall time per
//! epoch; and ERM given SAM's wall-clock budget (twice the epochs), the comparison users ask about.

use std::path::PathBuf;

use anyhow::Result;
use samlab_core::sam::{SamConfig, Variant};
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_report::{Figure, Scale, Section, Series};

use super::deep_common::{
    fmt_mean, fmt_paired, fmt_pct, mean_std, paired, seed_series, test_error, test_loss, values,
    DeepScale, Sweep,
};
use super::{ClaimSpec, Ctx, Experiment, PlannedRun};

/// Each variant's radius against SAM's: the factor on the scale's variant grid. ASAM's step is
/// `rho T^2 g / ||T g||` with `T = |w| + eta`, so its norm is about `rho |w|` (its papers use ~10x SAM's radius);
/// MSAM and SAM-ON use larger radii than SAM in their papers (MSAM's reference code: 0.3 where SAM uses 0.05).
fn grid_factor(v: Variant) -> f64 {
    match v {
        Variant::Asam { .. } => 10.0,
        Variant::Msam | Variant::SamOn => 4.0,
        _ => 1.0,
    }
}

/// The variants compared with SAM: every one but plain SAM, at its default options.
fn variants() -> impl Iterator<Item = Variant> {
    Variant::DEFAULTS.into_iter().skip(1)
}

/// A variant's directory stem ("Fisher-SAM" -> "fisher-sam").
fn stem(v: Variant) -> String {
    v.label().to_lowercase()
}

/// The scale's base run for `epochs` more epochs, named `erm_e<epochs>_s<seed>`.
fn long_erm(scale: &DeepScale, seed: u64) -> (String, DeepRunConfig) {
    let epochs = 2 * scale.base.train.epochs;
    let (_, mut c) = scale.erm(seed);
    c.train.epochs = epochs;
    c.train.curvature_every = 0;
    (format!("erm_e{epochs}_s{seed}"), c)
}

/// The radii of variant `v` (plain SAM: the Fig. 1 grid, whose runs it shares).
fn grid(scale: &DeepScale, v: Variant) -> Vec<f64> {
    if v == Variant::Sam {
        return scale.rho_grid.clone();
    }
    let k = grid_factor(v);
    scale.variant_grid.iter().map(|r| r * k).collect()
}

/// Normalized SAM with variant `v` at radius `rho` (plain SAM: the Fig. 1 runs).
fn variant_run(scale: &DeepScale, v: Variant, rho: f64, seed: u64) -> (String, DeepRunConfig) {
    let batch = scale.base.train.batch_size;
    if v == Variant::Sam {
        return scale.msam(batch, rho, seed);
    }
    let sam = SamConfig {
        variant: v,
        ..scale.sam_config(batch, rho)
    };
    let (name, mut c) = scale.run(format!("{}_rho{rho}", stem(v)), sam, seed);
    // No curvature logs: this comparison does not read them.
    c.train.curvature_every = 0;
    (name, c)
}

/// The runs it judges, in groups: ERM, ERM for twice the epochs, then every radius of SAM and of each variant.
fn groups(scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
    let mut groups = vec![
        scale.per_seed(|s| scale.erm(s)),
        scale.per_seed(|s| long_erm(scale, s)),
    ];
    for v in Variant::DEFAULTS {
        for r in grid(scale, v) {
            groups.push(scale.per_seed(|s| variant_run(scale, v, r, s)));
        }
    }
    groups
}

/// One method's runs at its chosen radius, summarized.
struct Method {
    label: String,
    runs: Vec<RunOutcome>,
    /// Mean gradient evaluations per update (NaN when unknown).
    gradients: f64,
    /// Mean wall-clock seconds per epoch over seeds.
    epoch_seconds: f64,
}

impl Method {
    fn new(label: String, runs: Vec<RunOutcome>) -> Method {
        let per =
            |f: fn(&RunOutcome) -> f64| runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64;
        // NaN when a run does not know its count (made before samlab counted gradients).
        let gradients = per(|o| {
            o.summary.gradient_evals.map_or(f64::NAN, |n| n as f64) / o.summary.steps.max(1) as f64
        });
        let epoch_seconds = per(|o| o.summary.train_seconds / o.summary.epochs.max(1) as f64);
        Method {
            label,
            runs,
            gradients,
            epoch_seconds,
        }
    }

    fn errors(&self) -> Vec<f64> {
        values(&self.runs, test_error)
    }

    /// Mean test error over seeds.
    fn error(&self) -> f64 {
        mean_std(&self.errors()).0
    }

    /// Mean seconds spent in updates over seeds.
    fn seconds(&self) -> f64 {
        self.epoch_seconds * self.runs.first().map_or(0, |o| o.summary.epochs) as f64
    }
}

/// Test error against cumulative training seconds, per epoch, mean over seeds, for every method (ERM's two last,
/// dashed); the y axis from the lowest mean error to 5 points above it.
fn time_figure(ctx: &Ctx, id: &str, methods: &[&Method], erm: [&Method; 2]) -> Result<PathBuf> {
    let series: Vec<Series> = methods
        .iter()
        .chain(&erm)
        .enumerate()
        .map(|(k, m)| {
            let epochs = m.runs.iter().map(|o| o.rows.len()).min().unwrap_or(0);
            let xs: Vec<f64> = (0..epochs)
                .map(|e| {
                    let t = m
                        .runs
                        .iter()
                        .map(|o| o.rows[..=e].iter().map(|r| r.seconds).sum::<f64>());
                    t.sum::<f64>() / m.runs.len() as f64
                })
                .collect();
            let per_seed: Vec<Vec<f64>> = m
                .runs
                .iter()
                .map(|o| o.rows[..epochs].iter().map(|r| r.test_error).collect())
                .collect();
            Series {
                band: vec![],
                ..seed_series(m.label.clone(), &xs, &per_seed, 100.0, k >= methods.len())
            }
        })
        .collect();
    let low = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(f64::INFINITY, f64::min);
    let figure = Figure {
        title: "Test error against training time (radii validated)".into(),
        x_label: "training seconds (updates only)".into(),
        y_label: "test error (%)".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        series,
        vlines: vec![],
        y_range: low.is_finite().then_some((low - 0.5, low + 5.0)),
    };
    Ok(samlab_report::render(&figure, &ctx.dir(id).join("error_vs_time"))?.0)
}

/// Gradients per update, "unknown" for runs made before samlab counted them.
fn fmt_gradients(x: f64) -> String {
    if x.is_nan() {
        "unknown".into()
    } else {
        format!("{x:.2}")
    }
}

/// "a, b" or "none".
fn names(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The SAM variants on the deep net at equal compute.
pub struct VariantsDeep;

impl Experiment for VariantsDeep {
    fn id(&self) -> &'static str {
        "variants_deep"
    }
    fn title(&self) -> &'static str {
        "SAM variants on a deep net at equal compute (our finding)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "variants.deep.sam_beats_equal_time_erm",
                claim: "SAM at its validated radius ends with a lower test error than ERM given the same wall-clock budget (twice the epochs): same-seed mean difference < 0",
                paper: "our finding (the question users ask of SAM's 2x cost)",
            },
            ClaimSpec {
                id: "variants.deep.variants_beat_erm",
                claim: "Every variant at its validated radius ends with a lower mean test error than ERM at the same epochs",
                paper: "our finding",
            },
            ClaimSpec {
                id: "variants.deep.none_clearly_beats_sam",
                claim: "No variant is clearly better than SAM in test error (for none is the same-seed mean difference + 2 SE < 0)",
                paper: "our finding (each variant's paper reports gains over SAM on CIFAR and ImageNet)",
            },
            ClaimSpec {
                id: "variants.deep.efficient_keep_half",
                claim: "The efficient variants (LookSAM k = 5, MSAM) keep at least half of SAM's gain: mean test error at most halfway from SAM's to ERM's",
                paper: "our finding (LookSAM and MSAM report SAM's accuracy at about ERM's cost)",
            },
            ClaimSpec {
                id: "variants.deep.efficient_cost",
                claim: "LookSAM (k = 5) and MSAM take at most 0.65x SAM's gradients per update and less wall time per epoch than SAM",
                paper: "our finding (LookSAM: 1 + 1/k gradients per update; MSAM: 1)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(&groups(ctx.deep).concat())
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let mut groups = ctx.deep_groups(&groups(scale))?.into_iter();
        let erm = Method::new("ERM".into(), groups.next().expect("ERM's group"));
        let long = Method::new(
            format!("ERM, {} epochs", 2 * scale.base.train.epochs),
            groups.next().expect("the long ERM's group"),
        );
        let mut table = vec![[
            "method",
            "rho (validated on the grid)",
            "test error (mean +- std)",
            "test cross-entropy",
            "d(error) vs ERM, same seed",
            "gradients / update",
            "s / epoch",
            "time vs ERM",
        ]
        .map(String::from)
        .to_vec()];
        let mut row = |m: &Method, rho: String| {
            table.push(vec![
                m.label.clone(),
                rho,
                fmt_pct(&m.errors()),
                fmt_mean(&values(&m.runs, test_loss)),
                fmt_paired(&m.errors(), &erm.errors(), true),
                fmt_gradients(m.gradients),
                format!("{:.2}", m.epoch_seconds),
                format!("{:.2}x", m.seconds() / erm.seconds()),
            ]);
        };
        row(&erm, "-".into());
        row(&long, "-".into());
        let mut methods = vec![];
        for v in Variant::DEFAULTS {
            let xs = grid(scale, v);
            let sweep = Sweep {
                label: v.label().into(),
                runs: xs
                    .iter()
                    .map(|_| groups.next().expect("one group per radius"))
                    .collect(),
                xs,
            };
            let chosen = sweep.select_by_val();
            // Every radius diverged: report the first (its runs say "diverged").
            let i = chosen.unwrap_or(0);
            let at_edge = sweep.xs.len() > 2 && (i == 0 || i + 1 == sweep.xs.len());
            let m = Method::new(v.label().into(), sweep.runs[i].clone());
            let rho = format!(
                "{:?} of {:?}{}",
                sweep.xs[i],
                sweep.xs,
                if chosen.is_none() {
                    " (all diverged)"
                } else if at_edge {
                    " (edge)"
                } else {
                    ""
                }
            );
            row(&m, rho);
            methods.push((v, m));
        }
        let sam = &methods[0].1;
        let spec = self.claims();
        let d = paired(&sam.errors(), &long.errors()).0;
        let claim0 = spec[0].judge(
            format!(
                "SAM minus ERM for {} epochs: {} error, {} cross-entropy; SAM's updates took {:.2}x the long ERM's time",
                2 * scale.base.train.epochs,
                fmt_paired(&sam.errors(), &long.errors(), true),
                fmt_paired(&values(&sam.runs, test_loss), &values(&long.runs, test_loss), false),
                sam.seconds() / long.seconds(),
            ),
            d < 0.0,
        );
        let others = || methods.iter().skip(1);
        let list = |f: &dyn Fn(&Method) -> String| {
            others()
                .map(|(_, m)| format!("{} {}", m.label, f(m)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let not_below_erm: Vec<&str> = others()
            .filter(|(_, m)| m.error() >= erm.error() || m.error().is_nan())
            .map(|(v, _)| v.label())
            .collect();
        let claim1 = spec[1].judge(
            format!(
                "ERM {:.2}%; {}; not below ERM: {}",
                100.0 * erm.error(),
                list(&|m| format!("{:.2}%", 100.0 * m.error())),
                names(&not_below_erm)
            ),
            not_below_erm.is_empty(),
        );
        let clearly_better: Vec<&str> = others()
            .filter(|(_, m)| {
                let (d, se) = paired(&m.errors(), &sam.errors());
                d + 2.0 * se < 0.0
            })
            .map(|(v, _)| v.label())
            .collect();
        let claim2 = spec[2].judge(
            format!(
                "variant minus SAM: {}; clearly better: {}",
                list(&|m| fmt_paired(&m.errors(), &sam.errors(), true)),
                names(&clearly_better)
            ),
            clearly_better.is_empty(),
        );
        let efficient: Vec<&Method> = methods
            .iter()
            .filter(|(v, _)| matches!(v, Variant::LookSam { .. } | Variant::Msam))
            .map(|(_, m)| m)
            .collect();
        let halfway = (sam.error() + erm.error()) / 2.0;
        let claim3 = spec[3].judge(
            format!(
                "ERM {:.2}%, SAM {:.2}%, halfway {:.2}%; {}",
                100.0 * erm.error(),
                100.0 * sam.error(),
                100.0 * halfway,
                efficient
                    .iter()
                    .map(|m| format!("{} {:.2}%", m.label, 100.0 * m.error()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            efficient.iter().all(|m| m.error() <= halfway),
        );
        let claim4 = spec[4].judge(
            format!(
                "gradients per update: SAM {}, {}; seconds per epoch: SAM {:.2}, {}",
                fmt_gradients(sam.gradients),
                efficient
                    .iter()
                    .map(|m| format!("{} {}", m.label, fmt_gradients(m.gradients)))
                    .collect::<Vec<_>>()
                    .join(", "),
                sam.epoch_seconds,
                efficient
                    .iter()
                    .map(|m| format!("{} {:.2}", m.label, m.epoch_seconds))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            efficient.iter().all(|m| {
                m.gradients <= 0.65 * sam.gradients && m.epoch_seconds < sam.epoch_seconds
            }),
        );
        let curves: Vec<&Method> = methods.iter().map(|(_, m)| m).collect();
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "{}. Every SAM method is normalized (delta of norm rho), one perturbation per batch, each variant at its default options ({}). Radii: SAM the Fig. 1 grid {:?} (its runs are shared); the variants the short grid {:?}, times 10 for ASAM (its step is about rho |w|) and times 4 for MSAM and SAM-ON (larger radii in their papers); each method's radius is the one with the lowest mean final validation error ('(edge)' when that is an end of a grid of three or more; two radii only bracket a variant's best one coarsely, and a LookSAM's strength is set by its alpha more than by rho). ERM for twice the epochs has SAM's gradient budget (its learning-rate drops stretched with it). Wall time counts the updates only (no evaluation) and comes from reproduce's own runs, trained two at a time on this machine's cores: bench/variant_cost.py is the controlled measurement of the step cost.",
                scale.describe(),
                variants()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                scale.rho_grid,
                scale.variant_grid,
            ),
            figures: vec![time_figure(ctx, self.id(), &curves, [&erm, &long])?],
            table,
            claims: vec![claim0, claim1, claim2, claim3, claim4],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_gets_its_grid_and_erm_gets_twice_the_epochs() {
        let scale = DeepScale::laptop(false);
        let g = groups(&scale);
        // ERM, the long ERM, SAM's 3 radii, 2 radii for each of the 9 variants; one run per seed in each.
        assert_eq!(g.len(), 2 + 3 + 9 * 2);
        assert!(g.iter().all(|runs| runs.len() == scale.seeds.len()));
        let (name, long) = &g[1][2];
        assert_eq!(name, "erm_e40_s2");
        assert_eq!((long.train.epochs, long.train.seed), (40, 2));
        assert_eq!(long.sam, SamConfig::erm());
        // SAM shares Fig. 1's runs; ASAM's radii are 10x the grid, MSAM's 4x.
        assert_eq!(g[2][0], scale.msam(128, 0.05, 0));
        let rho = |v: Variant| grid(&scale, v);
        assert_eq!(rho(Variant::Asam { eta: 0.01 }), vec![0.5, 2.0]);
        assert_eq!(rho(Variant::Msam), vec![0.2, 0.8]);
        assert_eq!(rho(Variant::Vasso { theta: 0.4 }), vec![0.05, 0.2]);
        let (name, c) = variant_run(&scale, Variant::Msam, 0.8, 1);
        assert_eq!(name, "msam_rho0.8_s1");
        assert_eq!((c.sam.variant, c.sam.rho), (Variant::Msam, 0.8));
    }
}
