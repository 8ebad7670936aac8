//! Fig. 9 of the paper: switching between ERM and SAM at the end of training, and (SPEC §4.5) the linear path
//! between the ERM solution and its SAM-fine-tuned version.
//!
//! Phase 1 is the ERM run and the small-m SAM run of the other presets; phase 2 continues each from its last
//! checkpoint (fresh momentum, as the authors' `--model_path`) for a few more epochs at a constant small rate,
//! once with the same method and once with the other one.

use anyhow::Result;
use samlab_core::run_dir::write_json;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_deep::analysis::interpolate::{
    interpolate, Interpolation, InterpolationConfig, InterpolationPoint,
};
use samlab_deep::analysis::{CheckpointKind, LoadedRun};
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_report::{Figure, Scale, Section, Series};

use super::deep_common::{
    clearly_below, comparison_header, comparison_row, epoch_series, mean_std, paired, seed_series,
    test_error, test_loss, values, DeepScale, ScaleKind,
};
use super::{cached, last_checkpoint, par_map, ClaimSpec, Ctx, Experiment, PlannedRun};

/// ERM -> SAM and SAM -> ERM late in training, and the interpolation ERM <-> ERM -> SAM.
pub struct Switching;

/// Phase 2 of `phase1` (named `from`), trained with `sam`.
fn phase2(
    scale: &DeepScale,
    phase1: &(String, DeepRunConfig),
    name: String,
    sam: SamConfig,
) -> (String, DeepRunConfig) {
    let mut c = phase1.1.clone();
    // Both runs are in deep_runs/: named relatively, so that the results directory can move.
    c.init_from = Some(std::path::Path::new("..").join(&phase1.0));
    c.train.epochs = scale.switch_epochs;
    c.train.lr = LrSchedule::constant(scale.switch_lr);
    c.sam = sam;
    // No curvature log: this comparison does not read it.
    c.train.curvature_every = 0;
    (name, c)
}

/// The largest excess of the test error over the straight line between the endpoints' errors, for a in [0, 1].
fn error_barrier(r: &Interpolation) -> f64 {
    let (e0, e1) = (r.summary.at_0.test_error, r.summary.at_1.test_error);
    r.points
        .iter()
        .filter(|p| (0.0..=1.0).contains(&p.alpha))
        .map(|p| p.test_error - ((1.0 - p.alpha) * e0 + p.alpha * e1))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Train (dashed) and test (solid) cross-entropy along the path, mean over seeds with a std band.
fn interpolation_figure(interp: &[Interpolation]) -> Figure {
    let alphas: Vec<f64> = interp[0].points.iter().map(|p| p.alpha).collect();
    let along = |label: &str, pick: fn(&InterpolationPoint) -> f64, dashed: bool| {
        let per_seed: Vec<Vec<f64>> = interp
            .iter()
            .map(|r| r.points.iter().map(pick).collect())
            .collect();
        seed_series(label.into(), &alphas, &per_seed, 1.0, dashed)
    };
    Figure {
        title: "Cross-entropy on the line theta(a) = (1 - a) ERM + a (ERM -> SAM)".into(),
        x_label: "a".into(),
        y_label: "cross-entropy".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        series: vec![
            along("test", |p| p.test_loss, false),
            along("train", |p| p.train_loss, true),
        ],
        vlines: vec![(0.0, "ERM".into()), (1.0, "ERM -> SAM".into())],
        y_range: None,
    }
}

/// Test error per epoch of phase 1 followed by phase 2, from `from_epoch` on, in the colour of phase 1's method.
fn curve(
    label: &str,
    phase1: &[RunOutcome],
    phase2: &[RunOutcome],
    from_epoch: usize,
    dashed: bool,
    color: usize,
) -> Series {
    let per_seed: Vec<Vec<f64>> = phase1
        .iter()
        .zip(phase2)
        .map(|(a, b)| a.rows.iter().chain(&b.rows).map(|r| r.test_error).collect())
        .collect();
    Series {
        color: Some(color),
        ..epoch_series(label.into(), &per_seed, from_epoch, dashed)
    }
}

/// The deep-net runs it judges, in groups.
fn groups(scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
    vec![
        scale.per_seed(|s| scale.erm(s)),
        scale.per_seed(|s| scale.msam(scale.small_m, scale.rho, s)),
    ]
}

/// Per seed, the second phases: ERM -> ERM, ERM -> SAM, SAM -> SAM, SAM -> ERM.
fn second_phase(ctx: &Ctx) -> Vec<[(String, DeepRunConfig); 4]> {
    let scale = ctx.deep;
    let (m, rho) = (scale.small_m, scale.rho);
    let sam = scale.sam_config(m, rho);
    let mut named = vec![];
    for &s in &scale.seeds {
        let (erm, samrun) = (scale.erm(s), scale.msam(m, rho, s));
        named.push([
            phase2(
                scale,
                &erm,
                format!("switch_erm_then_erm_s{s}"),
                SamConfig::erm(),
            ),
            phase2(
                scale,
                &erm,
                format!("switch_erm_then_sam_s{s}"),
                sam.clone(),
            ),
            phase2(
                scale,
                &samrun,
                format!("switch_sam_then_sam_s{s}"),
                sam.clone(),
            ),
            phase2(
                scale,
                &samrun,
                format!("switch_sam_then_erm_s{s}"),
                SamConfig::erm(),
            ),
        ]);
    }
    named
}

impl Experiment for Switching {
    fn id(&self) -> &'static str {
        "deep_switch"
    }
    fn title(&self) -> &'static str {
        "Deep nets: switching between ERM and SAM late in training (Fig. 9)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "deep.switch_erm_to_sam_error",
                claim: "Switching ERM -> SAM for the last phase lowers the test error compared with continuing ERM (mean same-seed difference < 0)",
                paper: "Fig. 9: ResNet-18/CIFAR-10 4.65% (ERM) vs 4.2% (ERM -> SAM) after 100 more epochs; ResNet-34/CIFAR-100 20.8% vs 19.8%",
            },
            ClaimSpec {
                id: "deep.switch_erm_to_sam_nll",
                claim: "...and clearly lowers the test cross-entropy (mean same-seed difference + 2 SE < 0)",
                paper: "not in the paper (error only)",
            },
            ClaimSpec {
                id: "deep.interp_no_barrier",
                claim: "ERM and its SAM-fine-tuned version are linearly connected: on the path between them (BatchNorm re-estimated at each point) the test error never exceeds the straight line between the endpoints' errors by more than 2 pp (Frankle et al.'s error barrier), for every seed",
                paper: "SPEC §4.5 (loss_surfaces.ipynb, CIFAR-10, seeds 0-2): no barrier; e.g. 4.30% / 5.27% at the ends, 4.00% at a = 0.2",
            },
            ClaimSpec {
                id: "deep.switch_sam_to_erm_keeps",
                claim: "SAM -> ERM keeps most of SAM's advantage: its test error is closer to continued SAM than to continued ERM",
                paper: "Fig. 9: SAM -> ERM 3.95% vs SAM 3.9% vs ERM 4.65% (CIFAR-10); 18.9% vs 19.0% vs 20.8% (CIFAR-100)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        let mut runs = groups(ctx.deep).concat();
        runs.extend(second_phase(ctx).into_iter().flatten());
        ctx.deep_planned(&runs)
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let (m, rho) = (scale.small_m, scale.rho);
        let named = second_phase(ctx);
        let mut phase1 = ctx.deep_groups(&groups(scale))?;
        let (sam1, erm1) = (
            phase1.pop().expect("SAM runs"),
            phase1.pop().expect("ERM runs"),
        );
        let flat: Vec<(String, DeepRunConfig)> = named.iter().flatten().cloned().collect();
        let out = ctx.deep_get(&flat)?;
        let pick =
            |k: usize| -> Vec<RunOutcome> { out.iter().skip(k).step_by(4).cloned().collect() };
        let (ee, es, ss, se) = (pick(0), pick(1), pick(2), pick(3));

        let e1 = scale.base.train.epochs;
        let from = e1 / 2 + 1;
        let figure = Figure {
            title: format!(
                "Test error: {e1} epochs, then {} more at lr {} with either method",
                scale.switch_epochs, scale.switch_lr
            ),
            x_label: "epoch".into(),
            y_label: "test error (%)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: vec![
                curve("ERM", &erm1, &ee, from, false, 0),
                curve("ERM -> SAM", &erm1, &es, from, true, 0),
                curve(&format!("SAM (m = {m})"), &sam1, &ss, from, false, 1),
                curve("SAM -> ERM", &sam1, &se, from, true, 1),
            ],
            vlines: vec![(e1 as f64 + 0.5, "switch".into())],
            y_range: None,
        };
        let dir = ctx.dir(self.id());
        let paths: Vec<(&RunOutcome, &RunOutcome)> = erm1.iter().zip(&es).collect();
        let seeds: Vec<(u64, &(&RunOutcome, &RunOutcome))> =
            scale.seeds.iter().copied().zip(&paths).collect();
        let interp: Vec<Interpolation> = par_map(&seeds, |(s, (a, b))| -> Result<Interpolation> {
            let kept = dir.join("cache").join(format!("interpolation_s{s}.json"));
            cached(
                &kept,
                &[last_checkpoint(&a.dir), last_checkpoint(&b.dir)],
                || {
                    let load = |o: &RunOutcome| LoadedRun::load(&o.dir, CheckpointKind::Last);
                    Ok(interpolate(
                        &load(a)?,
                        &load(b)?,
                        &InterpolationConfig::default(),
                    )?)
                },
            )
        })
        .into_iter()
        .collect::<Result<_>>()?;
        std::fs::create_dir_all(&dir)?;
        for (s, r) in scale.seeds.iter().zip(&interp) {
            write_json(&dir.join(format!("interpolation_s{s}.json")), r)?;
        }
        let barriers: Vec<f64> = interp.iter().map(error_barrier).collect();
        let figures = vec![
            samlab_report::render(&figure, &dir.join("switching"))?.0,
            samlab_report::render(&interpolation_figure(&interp), &dir.join("interpolation"))?.0,
        ];
        let mut table = vec![comparison_header()];
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        for (label, runs) in [
            ("ERM, continued", &ee),
            ("ERM -> SAM", &es),
            ("SAM, continued", &ss),
            ("SAM -> ERM", &se),
        ] {
            table.push(comparison_row(label.into(), runs, &ee));
        }
        table.push(
            [
                "interpolation ERM (a = 0) -> ERM -> SAM (a = 1)",
                "test error at a = 0",
                "at a = 1",
                "lowest (at a)",
                "error barrier on [0, 1]",
            ]
            .map(String::from)
            .to_vec(),
        );
        for ((s, r), b) in scale.seeds.iter().zip(&interp).zip(&barriers) {
            let sm = &r.summary;
            table.push(vec![
                format!("seed {s}"),
                pct(sm.at_0.test_error),
                pct(sm.at_1.test_error),
                format!("{} ({})", pct(sm.min_test_error), sm.min_test_error_alpha),
                format!("{:.2} pp", 100.0 * b),
            ]);
        }
        let err = |runs: &[RunOutcome]| values(runs, test_error);
        let nll = |runs: &[RunOutcome]| values(runs, test_loss);
        let (d_err, se_err) = paired(&err(&es), &err(&ee));
        let (d_nll, se_nll) = paired(&nll(&es), &nll(&ee));
        let gap = mean_std(&err(&ee)).0 - mean_std(&err(&ss)).0;
        let closed = -d_err / gap;
        let (m_se, m_ss, m_ee) = (
            mean_std(&err(&se)).0,
            mean_std(&err(&ss)).0,
            mean_std(&err(&ee)).0,
        );
        let spec = self.claims();
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "{}. Phase 1: the ERM runs and the m-SAM runs (m = {m}, rho = {rho}) of the other sections. Phase 2: {} more epochs from phase 1's last weights and BatchNorm statistics, fresh momentum, constant lr {}, with the same or the other method.{} Interpolation (the authors' eval_loss_surface.py): theta(a) = (1 - a) theta_ERM + a theta_(ERM -> SAM) for a in [-1, 2] in steps of 0.05, BatchNorm statistics re-estimated at every point from 5,000 training images, losses and errors on the first 1,024 training and test images; per-seed curves in interpolation_s<seed>.json.",
                scale.describe(),
                scale.switch_epochs,
                scale.switch_lr,
                match scale.kind {
                    ScaleKind::Laptop => " The paper continues for 100 epochs at the final rate 0.001 after 1000; at this scale the weights barely move at 0.001 over a few hundred steps (our calibration), so phase 2 uses the middle rate of the schedule.",
                    ScaleKind::Paper => "",
                }
            ),
            figures,
            table,
            claims: vec![
                spec[0].judge(
                    format!("{:+.2} +- {:.2} pp (ERM -> SAM minus ERM continued); SAM-ERM gap {:.2} pp, fraction closed {:.0}%", 100.0 * d_err, 100.0 * se_err, 100.0 * gap, 100.0 * closed),
                    d_err < 0.0,
                ),
                spec[1].judge(
                    format!("{d_nll:+.4} +- {se_nll:.4}"),
                    clearly_below(&nll(&es), &nll(&ee)),
                ),
                spec[2].judge(
                    format!(
                        "error barrier per seed: {} (pp)",
                        barriers.iter().map(|b| format!("{:.2}", 100.0 * b)).collect::<Vec<_>>().join(", ")
                    ),
                    barriers.iter().all(|&b| b <= 0.02),
                ),
                spec[3].judge(
                    format!("SAM -> ERM {:.2}%, SAM continued {:.2}%, ERM continued {:.2}%", 100.0 * m_se, 100.0 * m_ss, 100.0 * m_ee),
                    (m_se - m_ss).abs() < (m_se - m_ee).abs(),
                ),
            ],
        })
    }
}
