//! The talk's ReLU figure (SPEC §3, notebook `one_layer_relu_nets/1d_nn.ipynb`): ERM and SAM fit the 12-point
//! 1D regression with a width-100 ReLU net; SAM's interpolant has far fewer kinks.
//!
//! The notebook's choices are kept as preset settings, not engine behaviour: ERM runs at a constant rate
//! 5e-5 and stops once its loss (0.5 * sum of squares) is at most 1e-5; SAM (normalized n-SAM, rho = 0.3)
//! decays the rate linearly to 0 over 10^6 updates and tests the *perturbed* loss against 1e-5.

use anyhow::Result;
use samlab_analytic::relu::{StopOn, StopRule};
use samlab_core::sam::{Grouping, Normalization, SamConfig};
use samlab_core::schedule::{LrSchedule, LrShape};
use samlab_report::{Figure, Scale, Section, Series};

use super::relu_common::{functions_figure, if_ok, median, relu_table, twelve_point_run};
use super::{ClaimSpec, Ctx, Experiment, PlannedRun};
use samlab_analytic::relu::run::{ReluOutcome, ReluRunConfig};

const SEEDS: [u32; 5] = [0, 1, 2, 3, 4];
const LR: f64 = 5e-5;
const RHO: f64 = 0.3;
const STOP: f64 = 1e-5;

/// SAM vs ERM kinks on the 12-point problem.
pub struct Kinks;

/// ERM's budget (it stops on its loss long before, on every seed we ran).
const ERM_ITERS: usize = 1_000_000;

impl Kinks {
    /// ERM and SAM per seed, alternating.
    fn configs(ctx: &Ctx) -> Vec<(String, ReluRunConfig)> {
        let iters = Self::sam_iters(ctx.quick);
        let sam = SamConfig {
            normalization: Normalization::Normalized,
            ..SamConfig::usam(RHO, Grouping::WholeBatch)
        };
        let mut runs = vec![];
        for seed in SEEDS {
            let stop = |on| Some(StopRule { below: STOP, on });
            let erm = twelve_point_run(
                seed,
                LrSchedule::constant(LR),
                ERM_ITERS,
                None,
                SamConfig::erm(),
                stop(StopOn::Clean),
            );
            let mut decay = LrSchedule::constant(LR);
            decay.shape = LrShape::LinearDecay;
            let sam =
                twelve_point_run(seed, decay, iters, None, sam.clone(), stop(StopOn::Descent));
            runs.push((format!("erm_seed{seed}"), erm));
            runs.push((format!("sam_seed{seed}"), sam));
        }
        runs
    }

    /// SAM's budget: the notebook's 10^6, or 2 * 10^5 with --quick (its rate then decays over 2 * 10^5).
    fn sam_iters(quick: bool) -> usize {
        if quick {
            200_000
        } else {
            1_000_000
        }
    }
}

impl Experiment for Kinks {
    fn id(&self) -> &'static str {
        "relu_kinks"
    }
    fn title(&self) -> &'static str {
        "ReLU nets: SAM fits 1D data with fewer kinks than ERM (the talk's figure)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "relu.sam_fewer_kinks",
                claim: "SAM's interpolant has fewer kinks than ERM's: median kink count over 5 seeds (breakpoints merged within 0.02, |slope change| > 1)",
                paper: "talk: SAM's fit is visibly simpler; SPEC §3 NumPy re-run: ERM 45, 40, 43, 35, 32 vs SAM 15, 10, 13, 10, 13 kinks",
            },
            ClaimSpec {
                id: "relu.erm_interpolates",
                claim: "ERM reaches the notebook's stopping loss 1e-5 on every seed within the budget",
                paper: "SPEC §3 NumPy re-run: ERM converged in 4.6k-464k updates",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.planned(self.id(), Self::configs(ctx))
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let iters = Self::sam_iters(ctx.quick);
        let out = ctx.relu_runs(self.id(), Self::configs(ctx))?;
        let (erm, sam): (Vec<&ReluOutcome>, Vec<&ReluOutcome>) = (
            out.iter().step_by(2).collect(),
            out.iter().skip(1).step_by(2).collect(),
        );
        let kinks = |runs: &[&ReluOutcome]| -> Vec<usize> {
            runs.iter()
                .map(|o| o.summary.metrics.kinks.unwrap_or(0))
                .collect()
        };
        let (k_erm, k_sam) = (kinks(&erm), kinks(&sam));
        let counted = |runs: &[&ReluOutcome], k: &[usize]| -> Vec<f64> {
            runs.iter()
                .zip(k)
                .map(|(o, &v)| if_ok(o, v as f64))
                .collect()
        };
        let (m_erm, m_sam) = (
            median(&counted(&erm, &k_erm)),
            median(&counted(&sam, &k_sam)),
        );
        let erm_stops: Vec<String> = erm
            .iter()
            .map(|o| {
                if o.summary.stopped_early {
                    o.summary.iterations.to_string()
                } else {
                    format!("not within {ERM_ITERS}")
                }
            })
            .collect();
        let all_stopped = erm.iter().all(|o| o.summary.stopped_early);

        let dir = ctx.dir(self.id());
        fn label(o: &ReluOutcome, k: usize) -> (String, &ReluOutcome) {
            (format!("seed {} ({k} kinks)", o.summary.seed), o)
        }
        let erm_fig: Vec<(String, &ReluOutcome)> =
            erm.iter().zip(&k_erm).map(|(o, &k)| label(o, k)).collect();
        let sam_fig: Vec<(String, &ReluOutcome)> =
            sam.iter().zip(&k_sam).map(|(o, &k)| label(o, k)).collect();
        let counts = Figure {
            title: "Kinks of the learned function per seed".into(),
            x_label: "seed".into(),
            y_label: "kinks".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "ERM".into(),
                    points: SEEDS
                        .iter()
                        .zip(&k_erm)
                        .map(|(&s, &k)| (s as f64, k as f64))
                        .collect(),
                    dashed: true,
                    markers: true,
                    color: None,
                    band: vec![],
                },
                Series {
                    name: format!("SAM (rho = {RHO})"),
                    points: SEEDS
                        .iter()
                        .zip(&k_sam)
                        .map(|(&s, &k)| (s as f64, k as f64))
                        .collect(),
                    dashed: false,
                    markers: true,
                    color: None,
                    band: vec![],
                },
            ],
            vlines: vec![],
            y_range: Some((
                0.0,
                1.15 * k_erm.iter().chain(&k_sam).copied().max().unwrap_or(1) as f64,
            )),
        };
        let figures = vec![
            functions_figure(
                &dir,
                "functions_erm",
                "ERM: learned functions (5 seeds)",
                &erm_fig,
            )?,
            functions_figure(
                &dir,
                "functions_sam",
                &format!("SAM (rho = {RHO}): learned functions (5 seeds)"),
                &sam_fig,
            )?,
            samlab_report::render(&counts, &dir.join("kinks_per_seed"))?.0,
        ];
        let names: Vec<String> = SEEDS
            .iter()
            .flat_map(|s| [format!("ERM seed {s}"), format!("SAM seed {s}")])
            .collect();
        let spec = self.claims();
        let list = |k: &[usize]| {
            k.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "The 12-point 1D regression of SPEC §3, f(x) = sum_j a_j relu(w_j x + b_j) with 100 neurons and the notebook's initialization (w = +-2.5, b = 2.5 N(0,1), a = 4 N(0,1); drawn from NumPy's RandomState(seed), so the networks differ from the notebook's torch draws), loss 0.5 * sum of squares, full batch, seeds 0-4. ERM: constant rate {LR}, stops once the loss is at most {STOP:e}. SAM: normalized n-SAM, rho = {RHO}, rate {LR} decaying linearly to 0 over the budget, stops once the loss at the perturbed point is at most {STOP:e} (the notebook's choices, kept as preset settings). Budget: {ERM_ITERS} updates for ERM, {iters} for SAM{}. Kinks: breakpoints -b_j/w_j inside the data range, merged within 0.02, counted when the summed slope change a_j |w_j| exceeds 1 in absolute value.",
                if ctx.quick { " (--quick; the notebook's SAM budget is 10^6, and SAM's kinks keep falling with longer training)" } else { " (the notebook's)" }
            ),
            figures,
            table: relu_table(&names, &out),
            claims: vec![
                spec[0].judge(
                    format!("median {m_sam} (SAM: {}) vs {m_erm} (ERM: {})", list(&k_sam), list(&k_erm)),
                    m_sam < m_erm,
                ),
                spec[1].judge(format!("ERM stopped after {} updates", erm_stops.join(", ")), all_stopped),
            ],
        })
    }
}
