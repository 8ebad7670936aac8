//! SPEC §4.7: the normalization of the ascent step and the number of ascent steps do not matter for
//! generalization (small-m SAM, same radius budget).

use anyhow::Result;
use samlab_core::sam::Normalization;
use samlab_deep::run::DeepRunConfig;
use samlab_report::Section;

use super::deep_common::{
    comparison_header, comparison_row, fmt_paired, paired, test_error, values, DeepScale, Sweep,
};
use super::{ClaimSpec, Ctx, Experiment, PlannedRun};

/// Normalized vs unnormalized m-SAM, and one vs several ascent steps.
pub struct Ablations;

/// The deep-net runs it judges, in groups.
fn groups(scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
    let (m, rho, k) = (scale.small_m, scale.rho, scale.multi_steps);
    let mut multi = scale.sam_config(m, rho);
    multi.ascent_steps = k;
    multi.ascent_step_mult = 2.0 / k as f64;
    let mut groups = vec![
        scale.per_seed(|s| scale.erm(s)),
        scale.per_seed(|s| scale.msam(m, rho, s)),
        scale.per_seed(|s| scale.run(format!("sam_m{m}_rho{rho}_k{k}"), multi.clone(), s)),
    ];
    for &r in &scale.unnormalized_grid {
        let mut sam = scale.sam_config(m, r);
        sam.normalization = Normalization::Unnormalized;
        groups.push(scale.per_seed(|s| scale.run(format!("usam_m{m}_rho{r}"), sam.clone(), s)));
    }
    groups
}

impl Experiment for Ablations {
    fn id(&self) -> &'static str {
        "deep_ablations"
    }
    fn title(&self) -> &'static str {
        "Deep nets: normalization and multi-step ascent (ablations)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "deep.unnormalized_not_worse",
                claim: "Unnormalized m-SAM (delta = rho g, rho chosen by validation) is not clearly worse than normalized m-SAM in test error (same-seed mean difference - 2 SE <= 0)",
                paper: "[MEM] dropping the normalization does not hurt generalization; talk: normalization is empirically not important (with and without 60% label noise); numbers not visible",
            },
            ClaimSpec {
                id: "deep.multistep_not_better",
                claim: "Several ascent steps are not clearly better than one in test error (same-seed mean difference + 2 SE >= 0)",
                paper: "[MEM] a better inner maximization does not improve generalization; numbers not visible",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(&groups(ctx.deep).concat())
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let (m, rho, k) = (scale.small_m, scale.rho, scale.multi_steps);
        let mut groups = ctx.deep_groups(&groups(scale))?.into_iter();
        let mut next = || groups.next().expect("one group per planned set of runs");
        let (erm, normalized, multistep) = (next(), next(), next());
        let unnormalized = Sweep {
            label: "unnormalized".into(),
            xs: scale.unnormalized_grid.clone(),
            runs: groups.collect(),
        };
        let mut table = vec![
            comparison_header(),
            comparison_row("ERM".into(), &erm, &erm),
        ];
        table.push(comparison_row(
            format!("normalized, 1 step, rho = {rho}"),
            &normalized,
            &erm,
        ));
        let chosen = unnormalized.select_by_val();
        for (i, r) in unnormalized.xs.iter().enumerate() {
            let mark = if chosen == Some(i) {
                " (chosen by validation)"
            } else {
                ""
            };
            table.push(comparison_row(
                format!("unnormalized, rho = {r}{mark}"),
                &unnormalized.runs[i],
                &erm,
            ));
        }
        table.push(comparison_row(
            format!(
                "normalized, {k} steps of {:.3} rho, rho = {rho}",
                2.0 / k as f64
            ),
            &multistep,
            &erm,
        ));
        let base = values(&normalized, test_error);
        let spec = self.claims();
        let claim0 = match chosen {
            Some(i) => {
                let u = values(&unnormalized.runs[i], test_error);
                let (d, se) = paired(&u, &base);
                spec[0].judge(
                    format!(
                        "rho = {}: {} (unnormalized minus normalized)",
                        unnormalized.xs[i],
                        fmt_paired(&u, &base, true)
                    ),
                    d - 2.0 * se <= 0.0,
                )
            }
            None => spec[0].not_run("every unnormalized run diverged"),
        };
        let mv = values(&multistep, test_error);
        let (d, se) = paired(&mv, &base);
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "{}. All runs: m-SAM with m = {m}. Normalized: delta = rho g / ||g||, rho = {rho} (the run of the m-sharpness section). Unnormalized: delta = rho g without projection (the theory's USAM), its own rho grid {:?} since its scale differs. Multi-step: {k} normalized ascent steps of size {:.3} rho each, projected onto the rho-ball (the step size keeps the authors' sharpness-evaluation ratio: 20 steps of 0.1 rho).",
                scale.describe(), scale.unnormalized_grid, 2.0 / k as f64
            ),
            figures: vec![],
            table,
            claims: vec![
                claim0,
                spec[1].judge(format!("{} ({k} steps minus 1 step)", fmt_paired(&mv, &base, true)), d + 2.0 * se >= 0.0),
            ],
        })
    }
}
