//! Gradient descent and SAM at the edge of stability: full-batch GD's top Hessian eigenvalue rises until it
//! reaches 2/lr and hovers there (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the
//! edge of stability"); SAM's settles at a lower edge that depends on the gradient norm (Long & Bartlett 2023,
//! "Sharpness-aware minimization and the edge of stability", arXiv 2309.12488).
//!
//! The SAM edge: normalized SAM, $w \leftarrow w - \eta \nabla L(w + \rho\, g/\lVert g\rVert)$, on a quadratic of
//! curvature $\lambda$ with gradient norm $\lVert g\rVert$ is stable up to
//! $\lambda = \frac{\lVert g\rVert}{2\rho}\big(\sqrt{1 + 8\rho/(\eta\lVert g\rVert)} - 1\big)$ (the paper's
//! SAM-edge; below $2/\eta$, which it approaches as $\rho \to 0$). The runs do not log $\lVert g\rVert$; the
//! realised sharpness $s = L(w+\delta) - L(w)$ they log per step equals $\rho\lVert g\rVert +
//! \tfrac12\rho^2\hat g^\top H\hat g + O(\rho^3)$, so $\lVert g\rVert$ lies between $(s - \rho^2\lambda/2)/\rho$ and
//! $s/\rho$ (with $0 \le \hat g^\top H \hat g \le \lambda$), and the edge, increasing in $\lVert g\rVert$, between
//! the edges of the two.

use anyhow::{bail, Result};
use samlab_core::sam::Grouping;
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_report::{Scale, Section};

use crate::full_batch::{self, sam};
use crate::{fmt_compact, ClaimSpec, Ctx, Experiment, PlannedRun};

/// Images, width, updates, log interval; GD's two steps; SAM's step and radius.
const IMAGES: usize = 256;
const WIDTH: usize = 32;
const STEPS: usize = 400;
const EVERY: usize = 10;
const GD_LRS: [f64; 2] = [0.1, 0.2];
const SAM_LR: f64 = 0.1;
const SAM_RHO: f64 = 0.05;

/// A run has reached its edge at the first log with the top eigenvalue at 0.9 of it; the edge-of-stability phase
/// lasts from there until the training loss falls below this (with cross-entropy the sharpness falls once the
/// loss is small: Cohen et al., section 3 and appendix).
const ARRIVAL: f64 = 0.9;
const LATE_LOSS: f64 = 0.1;

/// The SAM edge of Long & Bartlett at gradient norm `g`.
pub fn sam_edge(g: f64, lr: f64, rho: f64) -> f64 {
    g / (2.0 * rho) * ((1.0 + 8.0 * rho / (lr * g)).sqrt() - 1.0)
}

/// One logged point: step, top eigenvalue, training loss, the edge there (low and high ends of its bracket).
#[derive(Clone, Copy)]
struct Point {
    step: f64,
    top: f64,
    loss: f64,
    edge: (f64, f64),
}

/// The logged points of a run whose edge is `edge(row)`.
fn points(o: &RunOutcome, edge: impl Fn(f64, f64) -> (f64, f64)) -> Vec<Point> {
    o.rows
        .iter()
        .filter(|r| r.hessian_top.is_finite())
        .map(|r| Point {
            step: r.step as f64,
            top: r.hessian_top,
            loss: r.train_eval_loss,
            edge: edge(r.hessian_top, r.sam.sharpness),
        })
        .collect()
}

/// The edge-of-stability phase: from the first point at `ARRIVAL` of its edge's high end until the loss falls
/// below `LATE_LOSS`; `None` if the run never arrives.
fn phase(p: &[Point]) -> Option<&[Point]> {
    let start = p.iter().position(|q| q.top >= ARRIVAL * q.edge.1)?;
    let len = p[start..]
        .iter()
        .position(|q| q.loss < LATE_LOSS)
        .unwrap_or(p.len() - start);
    Some(&p[start..start + len.max(1)])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// GD at each step, then SAM.
fn configs(ctx: &Ctx) -> Vec<(String, DeepRunConfig)> {
    let base = |lr| full_batch::config(ctx.deep, IMAGES, WIDTH, lr, STEPS, EVERY, 0);
    let mut runs: Vec<(String, DeepRunConfig)> = GD_LRS
        .iter()
        .map(|&lr| (format!("eos_gd_lr{lr}"), base(lr)))
        .collect();
    let mut c = base(SAM_LR);
    c.sam = sam(SAM_RHO, Grouping::WholeBatch);
    runs.push((format!("eos_sam_lr{SAM_LR}_rho{SAM_RHO}"), c));
    runs
}

/// GD and SAM at the edge of stability.
pub struct EdgeOfStability;

impl Experiment for EdgeOfStability {
    fn id(&self) -> &'static str {
        "edge_of_stability"
    }
    fn title(&self) -> &'static str {
        "GD and SAM at the edge of stability (Cohen et al. 2021; Long & Bartlett 2023)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "eos.gd_reaches_edge",
                claim: "Full-batch GD: the top Hessian eigenvalue rises to 2/lr (its largest logged value >= 0.9 x 2/lr) at both steps",
                paper: "progressive sharpening until sharpness reaches 2/eta (Cohen et al. 2021, Fig. 1)",
            },
            ClaimSpec {
                id: "eos.gd_hovers",
                claim: "It hovers there: the median of lambda_max / (2/lr) over the edge-of-stability phase (arrival until train loss < 0.1) is in [0.9, 1.5] at both steps",
                paper: "sharpness hovers just above 2/eta (Cohen et al. 2021)",
            },
            ClaimSpec {
                id: "eos.gd_tracks_lr",
                claim: "The level follows the step: the median over the phase at lr 0.2 is 0.35-0.65 of that at lr 0.1",
                paper: "2/eta: ratio 0.5",
            },
            ClaimSpec {
                id: "eos.sam_below_gd_edge",
                claim: "Normalized SAM (rho 0.05) at the same step settles below GD's edge: the median of lambda_max / (2/lr) over its phase is < 0.9",
                paper: "the SAM-edge is below 2/eta (Long & Bartlett 2023, section 3)",
            },
            ClaimSpec {
                id: "eos.sam_at_sam_edge",
                claim: "It settles at its own edge: the median of lambda_max / SAM-edge over its phase is in [0.8, 1.25] (the edge from the gradient norm bracketed by the logged sharpness: both ends shown)",
                paper: "SAM-edge = ||g||/(2 rho) (sqrt(1 + 8 rho/(eta ||g||)) - 1); SAM operates at it (Long & Bartlett 2023, Figs. 1-3)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(&configs(ctx))
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let outcomes = ctx.deep_get(&configs(ctx))?;
        let gd: Vec<Vec<Point>> = GD_LRS
            .iter()
            .zip(&outcomes)
            .map(|(&lr, o)| points(o, |_, _| (2.0 / lr, 2.0 / lr)))
            .collect();
        let sam_points = points(&outcomes[GD_LRS.len()], |top, s| {
            let hi = s / SAM_RHO;
            let lo = ((s - SAM_RHO * SAM_RHO * top / 2.0) / SAM_RHO).max(f64::MIN_POSITIVE);
            (sam_edge(lo, SAM_LR, SAM_RHO), sam_edge(hi, SAM_LR, SAM_RHO))
        });
        if let Some((o, _)) = outcomes
            .iter()
            .zip(gd.iter().chain([&sam_points]))
            .find(|(_, p)| p.is_empty() || p.iter().any(|q| !q.edge.1.is_finite()))
        {
            bail!(
                "{} logged no Hessian (or, for SAM, no realised sharpness)",
                o.dir.display()
            );
        }
        let spec = self.claims();
        let ratio_median = |p: &[Point], end: fn(&Point) -> f64| {
            median(p.iter().map(|q| q.top / end(q)).collect())
        };
        let gd_phase: Vec<Option<&[Point]>> = gd.iter().map(|p| phase(p)).collect();
        let max_ratio: Vec<f64> = GD_LRS
            .iter()
            .zip(&gd)
            .map(|(&lr, p)| p.iter().map(|q| q.top).fold(0.0, f64::max) * lr / 2.0)
            .collect();
        let gd_levels: Vec<Option<f64>> = gd_phase
            .iter()
            .map(|ph| ph.map(|p| median(p.iter().map(|q| q.top).collect())))
            .collect();
        let gd_ratios: Vec<Option<f64>> = gd_phase
            .iter()
            .map(|ph| ph.map(|p| ratio_median(p, |q| q.edge.1)))
            .collect();
        let per_lr = |v: &[Option<f64>]| -> String {
            GD_LRS
                .iter()
                .zip(v)
                .map(|(lr, x)| {
                    format!(
                        "lr {lr} (2/lr = {}): {}",
                        2.0 / lr,
                        x.map_or("never arrived".into(), fmt_compact)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut claims = vec![spec[0].judge(
            format!(
                "largest lambda_max / (2/lr): {}",
                per_lr(&max_ratio.iter().map(|&x| Some(x)).collect::<Vec<_>>())
            ),
            max_ratio.iter().all(|&r| r >= ARRIVAL),
        )];
        claims.push(
            spec[1].judge(
                format!(
                    "median lambda_max / (2/lr) over the phase: {}",
                    per_lr(&gd_ratios)
                ),
                gd_ratios
                    .iter()
                    .all(|r| r.is_some_and(|r| (0.9..=1.5).contains(&r))),
            ),
        );
        claims.push(match (gd_levels[0], gd_levels[1]) {
            (Some(a), Some(b)) => spec[2].judge(
                format!(
                    "median lambda_max {} at lr 0.1, {} at lr 0.2: ratio {}",
                    fmt_compact(a),
                    fmt_compact(b),
                    fmt_compact(b / a)
                ),
                (0.35..=0.65).contains(&(b / a)),
            ),
            _ => spec[2].judge("a GD run never reached its edge".into(), false),
        });
        let sam_phase = phase(&sam_points);
        match sam_phase {
            Some(p) => {
                let gd_edge = median(p.iter().map(|q| q.top * SAM_LR / 2.0).collect());
                let (lo, hi) = (ratio_median(p, |q| q.edge.1), ratio_median(p, |q| q.edge.0));
                let edges = median(p.iter().map(|q| q.edge.1).collect());
                claims.push(spec[3].judge(
                    format!(
                        "median lambda_max / (2/lr) = {} (2/lr = {}; median lambda_max {})",
                        fmt_compact(gd_edge),
                        2.0 / SAM_LR,
                        fmt_compact(median(p.iter().map(|q| q.top).collect()))
                    ),
                    gd_edge < 0.9,
                ));
                claims.push(spec[4].judge(
                    format!(
                        "median lambda_max / SAM-edge = {} against the edge at ||g|| = s/rho (median edge {}), {} against the low end of the bracket",
                        fmt_compact(lo),
                        fmt_compact(edges),
                        fmt_compact(hi)
                    ),
                    (0.8..=1.25).contains(&lo),
                ));
            }
            None => {
                for s in &spec[3..] {
                    claims
                        .push(s.judge("SAM's top eigenvalue never reached its edge".into(), false));
                }
            }
        }
        let dir = ctx.dir(self.id());
        let mut lines: Vec<(String, Vec<(f64, f64)>)> = vec![];
        for (&lr, p) in GD_LRS.iter().zip(&gd) {
            lines.push((
                format!("GD lr {lr}"),
                p.iter().map(|q| (q.step, q.top)).collect(),
            ));
            lines.push((
                format!("2/lr = {}", 2.0 / lr),
                vec![(0.0, 2.0 / lr), (STEPS as f64, 2.0 / lr)],
            ));
        }
        lines.push((
            format!("SAM lr {SAM_LR} rho {SAM_RHO}"),
            sam_points.iter().map(|q| (q.step, q.top)).collect(),
        ));
        lines.push((
            "SAM-edge (||g|| = s/rho)".into(),
            sam_points.iter().map(|q| (q.step, q.edge.1)).collect(),
        ));
        let figure = full_batch::figure(
            &dir,
            "top_eigenvalue",
            "Top Hessian eigenvalue during full-batch training, against the edges",
            "step",
            "lambda_max (training images)",
            lines,
            Scale::Linear,
        )?;
        let mut table = vec![["run", "step", "lambda_max", "edge", "train loss"]
            .map(String::from)
            .to_vec()];
        let names: Vec<String> = configs(ctx).into_iter().map(|c| c.0).collect();
        for (name, p) in names.iter().zip(gd.iter().chain([&sam_points])) {
            for q in p.iter().step_by(5) {
                table.push(vec![
                    name.clone(),
                    format!("{}", q.step),
                    fmt_compact(q.top),
                    fmt_compact(q.edge.1),
                    fmt_compact(q.loss),
                ]);
            }
        }
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "Full-batch training of a 2 x {WIDTH} ReLU MLP (no normalization) on the first {IMAGES} shipped Fashion-MNIST training images with cross-entropy, plain GD (no momentum, no weight decay) for {STEPS} steps at lr {} and {}, and normalized SAM (rho = {SAM_RHO}) at lr {SAM_LR}. The top Hessian eigenvalue of the training loss on the same {IMAGES} images (Lanczos, f64) every {EVERY} steps (deep_runs/eos_*). The edge-of-stability phase of a run starts at its first log with lambda_max >= {ARRIVAL} x its edge and ends when the training loss falls below {LATE_LOSS} (with cross-entropy the sharpness drops late in training, as Cohen et al. report). The SAM-edge uses the gradient norm bracketed by the logged realised sharpness s = L(w + delta) - L(w): ||g|| in [(s - rho^2 lambda_max / 2) / rho, s / rho]; the table shows the edge at s / rho, every fifth log.",
                GD_LRS[0], GD_LRS[1]
            ),
            figures: vec![figure],
            table,
            claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SAM edge solves the 2-cycle of normalized SAM on a quadratic: at curvature lambda = edge(g), the
    /// iterate x = g / lambda maps to -x; it tends to 2/lr as rho -> 0 and lies below it.
    #[test]
    fn the_sam_edge_is_the_quadratic_two_cycle_and_below_two_over_lr() {
        for (g, lr, rho) in [(1.0, 0.1, 0.05), (0.3, 0.05, 0.2), (5.0, 0.2, 0.01)] {
            let lambda = sam_edge(g, lr, rho);
            let x: f64 = g / lambda;
            let next = x - lr * lambda * (x + rho * x.signum());
            assert!((next + x).abs() < 1e-12 * x.abs(), "{g} {lr} {rho}");
            assert!(lambda < 2.0 / lr);
        }
        assert!((sam_edge(1.0, 0.1, 1e-9) - 20.0).abs() < 1e-5);
    }

    #[test]
    fn the_phase_runs_from_arrival_until_the_loss_is_small() {
        let p = |step: f64, top: f64, loss: f64| Point {
            step,
            top,
            loss,
            edge: (10.0, 10.0),
        };
        let pts = [
            p(0.0, 2.0, 2.0),
            p(1.0, 9.5, 1.0),
            p(2.0, 12.0, 0.5),
            p(3.0, 4.0, 0.05),
        ];
        let ph = phase(&pts).unwrap();
        assert_eq!(ph.iter().map(|q| q.step).collect::<Vec<_>>(), [1.0, 2.0]);
        assert!(phase(&pts[..1]).is_none());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
