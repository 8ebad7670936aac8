//! Which sharpness SAM minimises (Wen, Ma & Li 2022, "How does sharpness-aware minimization minimize
//! sharpness?"): near a minimum, full-batch (n-)SAM drives down the Hessian's top eigenvalue, 1-SAM (one example
//! per ascent) its trace. Two settings, each started from one minimum found by gradient descent, then continued by
//! GD, n-SAM and 1-SAM (normalized, same radius, step and number of updates, full-batch descent):
//!
//! - the diagonal network on the notebook's data (f64, the exact 2d x 2d Hessian: `diag_curvature`), computed in
//!   place;
//! - a small MLP on a fixed Fashion-MNIST subset (deep runs, the Hessian logged during training on the same
//!   training images: Lanczos for the top eigenvalue, Hutchinson for the trace).

use anyhow::{bail, Context, Result};
use samlab_analytic::diag::curvature::top_and_trace;
use samlab_analytic::diag::{self, DiagParams, DiagTrainConfig};
use samlab_core::data::SparseRegression;
use samlab_core::run::LogSchedule;
use samlab_core::sam::{Grouping, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_deep::run::DeepRunConfig;
use samlab_report::{Scale, Section};

use crate::full_batch::{self, sam};
use crate::{fmt_compact, ClaimSpec, Ctx, Experiment, PlannedRun};

/// The diagonal net: initial scale, step, GD updates to the minimum, updates after it, radius, logged points.
const DIAG_ALPHA: f64 = 1.0;
const DIAG_LR: f64 = 0.05;
const DIAG_WARMUP: usize = 20_000;
const DIAG_ITERS: usize = 20_000;
const DIAG_RHO: f64 = 0.2;
const DIAG_POINTS: usize = 40;

/// The MLP: images, width, GD's step to the minimum and its updates, the step after it (stable: 2 / step above
/// the minimum's top eigenvalue) and its updates, radius, log interval, trace probes.
const MLP_IMAGES: usize = 128;
const MLP_WIDTH: usize = 32;
const MLP_WARMUP_LR: f64 = 0.1;
const MLP_WARMUP: usize = 400;
const MLP_LR: f64 = 0.05;
const MLP_STEPS: usize = 200;
const MLP_RHO: f64 = 0.1;
const MLP_EVERY: usize = 20;
const MLP_PROBES: usize = 20;

/// The methods compared after the minimum, with their SAM settings.
fn methods(rho: f64) -> [(&'static str, SamConfig); 3] {
    [
        ("GD", SamConfig::erm()),
        ("n-SAM", sam(rho, Grouping::WholeBatch)),
        ("1-SAM", sam(rho, Grouping::Size(1))),
    ]
}

/// One method's curvature over the updates after the minimum: `(update, top eigenvalue, trace)`.
type Track = Vec<(f64, f64, f64)>;

/// The diagonal net's tracks (GD, n-SAM, 1-SAM), each from the same GD minimum.
fn diag_tracks() -> Result<Vec<Track>> {
    let (data, _) = SparseRegression::NOTEBOOK.generate()?;
    let d = data.d();
    let cfg = |iters: usize, sam: SamConfig| DiagTrainConfig {
        lr: LrSchedule::constant(DIAG_LR),
        iters,
        batch_size: None,
        seed: 0,
        sam,
        log: LogSchedule::Ends,
    };
    let start = diag::train(
        &data,
        &cfg(DIAG_WARMUP, SamConfig::erm()),
        DiagParams::init(DIAG_ALPHA, d),
        &mut |_| true,
    )?
    .params;
    let every = DIAG_ITERS / DIAG_POINTS;
    let measure = |p: &DiagParams| top_and_trace(&data.x_train, &data.y_train, p);
    methods(DIAG_RHO)
        .into_iter()
        .map(|(_, sam)| {
            let mut track = Track::new();
            let run = diag::train(&data, &cfg(DIAG_ITERS, sam), start.clone(), &mut |v| {
                if v.t % every == 0 {
                    let (top, trace) = measure(v.params);
                    track.push((v.t as f64, top, trace));
                }
                true
            })?;
            let (top, trace) = measure(&run.params);
            track.push((run.iterations as f64, top, trace));
            Ok(track)
        })
        .collect()
}

/// The MLP's runs: the GD run to the minimum, then one run per method from its weights.
fn mlp_runs(ctx: &Ctx) -> (Vec<(String, DeepRunConfig)>, (String, DeepRunConfig)) {
    let base = |lr: f64, steps: usize, every: usize| {
        full_batch::config(
            ctx.deep, MLP_IMAGES, MLP_WIDTH, lr, steps, every, MLP_PROBES,
        )
    };
    // The minimum's curvature is logged once, at its end: every track starts there.
    let warmup = (
        "which_mlp_warmup".to_string(),
        base(MLP_WARMUP_LR, MLP_WARMUP, MLP_WARMUP),
    );
    let runs = methods(MLP_RHO)
        .into_iter()
        .map(|(label, sam)| {
            let mut c = base(MLP_LR, MLP_STEPS, MLP_EVERY);
            c.sam = sam;
            c.init_from = Some(std::path::Path::new("..").join(&warmup.0));
            (format!("which_mlp_{}", crate::dir_name(label)), c)
        })
        .collect();
    (runs, warmup)
}

/// The claims' verdicts from the tracks of (GD, n-SAM, 1-SAM): where each ends, n-SAM's top eigenvalue below
/// 1-SAM's, and 1-SAM's trace below n-SAM's; the measured text of each.
fn verdicts(tracks: &[Track]) -> [(String, bool); 2] {
    let [gd, n, one] = [0, 1, 2].map(|k| tracks[k][tracks[k].len() - 1]);
    let start = tracks[0][0];
    let f = fmt_compact;
    [
        (
            format!(
                "lambda_max at the end: n-SAM {}, 1-SAM {} (start {}, GD {})",
                f(n.1),
                f(one.1),
                f(start.1),
                f(gd.1)
            ),
            n.1 < one.1,
        ),
        (
            format!(
                "trace at the end: 1-SAM {}, n-SAM {} (start {}, GD {})",
                f(one.2),
                f(n.2),
                f(start.2),
                f(gd.2)
            ),
            one.2 < n.2,
        ),
    ]
}

/// Which sharpness each SAM minimises.
pub struct WhichSharpness;

impl Experiment for WhichSharpness {
    fn id(&self) -> &'static str {
        "which_sharpness"
    }
    fn title(&self) -> &'static str {
        "Which sharpness SAM minimises: n-SAM the top eigenvalue, 1-SAM the trace (Wen, Ma & Li 2022)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "which.diag_nsam_lowers_top",
                claim: "Diagonal net, from one GD minimum: n-SAM ends at a lower top Hessian eigenvalue than 1-SAM (same radius, step, updates)",
                paper: "full-batch SAM minimises lambda_max near the minimum manifold (Wen, Ma & Li 2022, Thm 4.5); no number for this model",
            },
            ClaimSpec {
                id: "which.diag_1sam_lowers_trace",
                claim: "Diagonal net: 1-SAM ends at a lower Hessian trace than n-SAM",
                paper: "1-SAM (batch size 1) minimises tr(H) (Wen, Ma & Li 2022, Thm 5.4); no number for this model",
            },
            ClaimSpec {
                id: "which.mlp_nsam_lowers_top",
                claim: "MLP on 128 Fashion-MNIST images, from the end of a GD run: n-SAM ends at a lower lambda_max than 1-SAM",
                paper: "as above (the paper's theory; its experiments are on the 1-SAM trace)",
            },
            ClaimSpec {
                id: "which.mlp_1sam_lowers_trace",
                claim: "MLP: 1-SAM ends at a lower trace (Hutchinson) than n-SAM",
                paper: "as above",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        let (runs, warmup) = mlp_runs(ctx);
        let mut all = vec![warmup];
        all.extend(runs);
        ctx.deep_planned(&all)
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let (runs, warmup) = mlp_runs(ctx);
        let outcomes = ctx.deep_get(&runs)?;
        let start = ctx.deep_get(&[warmup])?;
        let Some(&(_, top0, trace0)) = full_batch::curvature(&start[0]).last() else {
            bail!("{} logged no Hessian", start[0].dir.display());
        };
        let mlp: Vec<Track> = outcomes
            .iter()
            .map(|o| {
                let mut t = vec![(0.0, top0, trace0)];
                t.extend(full_batch::curvature(o));
                t
            })
            .collect();
        if let Some((o, _)) = outcomes.iter().zip(&mlp).find(|(_, t)| t.len() < 2) {
            bail!("{} logged no Hessian", o.dir.display());
        }
        let diag = diag_tracks().context("diagonal-net trajectories")?;
        let spec = self.claims();
        let [d_top, d_trace] = verdicts(&diag);
        let [m_top, m_trace] = verdicts(&mlp);
        let claims = vec![
            spec[0].judge(d_top.0, d_top.1),
            spec[1].judge(d_trace.0, d_trace.1),
            spec[2].judge(m_top.0, m_top.1),
            spec[3].judge(m_trace.0, m_trace.1),
        ];
        let dir = ctx.dir(self.id());
        let names: Vec<String> = methods(0.0).iter().map(|m| m.0.to_string()).collect();
        let lines = |tracks: &[Track], trace: bool| -> Vec<(String, Vec<(f64, f64)>)> {
            names
                .iter()
                .zip(tracks)
                .map(|(n, t)| {
                    let pts = t.iter().map(|p| (p.0, if trace { p.2 } else { p.1 }));
                    (n.clone(), pts.collect())
                })
                .collect()
        };
        let mut figures = vec![];
        for (stem, model, tracks, x) in [
            ("diag", "diagonal net", &diag, "update after the GD minimum"),
            ("mlp", "MLP", &mlp, "step (full batch) after the GD minimum"),
        ] {
            for (trace, what) in [(false, "top Hessian eigenvalue"), (true, "Hessian trace")] {
                figures.push(full_batch::figure(
                    &dir,
                    &format!("{stem}_{}", if trace { "trace" } else { "top" }),
                    &format!("{model}: {what} after the minimum"),
                    x,
                    what,
                    lines(tracks, trace),
                    Scale::Linear,
                )?);
            }
        }
        let mut table = vec![[
            "model",
            "method",
            "lambda_max start",
            "lambda_max end",
            "trace start",
            "trace end",
        ]
        .map(String::from)
        .to_vec()];
        for (model, tracks) in [("diagonal net", &diag), ("MLP", &mlp)] {
            for (name, t) in names.iter().zip(tracks.iter()) {
                let (a, b) = (t[0], t[t.len() - 1]);
                table.push(vec![
                    model.to_string(),
                    name.clone(),
                    fmt_compact(a.1),
                    fmt_compact(b.1),
                    fmt_compact(a.2),
                    fmt_compact(b.2),
                ]);
            }
        }
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "Each model first reaches a minimum by full-batch gradient descent; GD, n-SAM (one normalized perturbation for the whole training set) and 1-SAM (one normalized perturbation per example, the descent averaged over all of them) then continue from it with the same radius, step and number of updates, and we follow the Hessian of the training loss on the training examples themselves.\n\nDiagonal net: the notebook's data (n = 20, d = 30), u0 = {DIAG_ALPHA}, v0 = 0, step {DIAG_LR}, {DIAG_WARMUP} GD updates, then {DIAG_ITERS} updates at rho = {DIAG_RHO}; the exact Hessian (60 x 60, dense eigendecomposition) every {} updates.\n\nMLP: 2 x {MLP_WIDTH} ReLU units, no normalization, on the first {MLP_IMAGES} shipped Fashion-MNIST training images, cross-entropy, plain GD (no momentum, no weight decay): {MLP_WARMUP} steps of {MLP_WARMUP_LR}, then {MLP_STEPS} steps of {MLP_LR} (so that 2 / step, {}, is above the top eigenvalue reached: GD stays put) at rho = {MLP_RHO}; the top eigenvalue by Lanczos and the trace by Hutchinson ({MLP_PROBES} Rademacher probes, so a few percent of noise) on the same {MLP_IMAGES} images every {MLP_EVERY} steps (deep_runs/which_mlp_*).",
                DIAG_ITERS / DIAG_POINTS,
                2.0 / MLP_LR
            ),
            figures,
            table,
            claims,
        })
    }
}
