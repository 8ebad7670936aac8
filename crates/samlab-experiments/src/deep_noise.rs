//! Fig. 12 of the paper: 60% symmetric label noise. SAM is much better than ERM with early stopping, yet in the
//! end it fits the noisy labels too (it converges, as its theory says) and its test error rises.

use anyhow::Result;
use samlab_core::sam::SamConfig;
use samlab_deep::run::{DeepRunConfig, EpochRow, RunOutcome};
use samlab_report::{Figure, Scale, Section, Series};

use super::deep_common::{epoch_series, fmt_pct, mean_std, metric, values, DeepScale};
use super::{ClaimSpec, Ctx, Experiment, PlannedRun};

/// ERM, small-m SAM and SAM with one perturbation per batch, trained on labels with 60% noise.
pub struct LabelNoise;

/// The test error at the epoch of the best validation error (early stopping).
fn early_stopped(o: &RunOutcome) -> Option<f64> {
    o.summary.test_error_at_best_val
}

/// The error on the noisy training examples with respect to their noisy labels, at the end.
fn noisy_fit(o: &RunOutcome) -> Option<f64> {
    o.summary.final_noisy_eval_error
}

fn final_test(o: &RunOutcome) -> Option<f64> {
    o.summary.test_error
}

/// Label, run-name stem and SAM settings of the compared methods.
fn methods(scale: &DeepScale) -> Vec<(String, String, SamConfig)> {
    let batch = scale.noise_base.train.batch_size;
    let (m, rho_m, rho) = (scale.small_m, scale.noise_rho_small_m, scale.rho);
    vec![
        ("ERM".into(), "erm".into(), SamConfig::erm()),
        (
            format!("SAM m = {m}, rho = {rho_m}"),
            format!("sam_m{m}_rho{rho_m}"),
            scale.sam_config(m, rho_m),
        ),
        (
            format!("SAM m = {batch}, rho = {rho}"),
            format!("sam_m{batch}_rho{rho}"),
            scale.sam_config(batch, rho),
        ),
    ]
}

/// `pick` of every epoch row, per seed.
fn per_epoch(runs: &[RunOutcome], pick: fn(&EpochRow) -> f64) -> Vec<Vec<f64>> {
    runs.iter()
        .map(|o| o.rows.iter().map(pick).collect())
        .collect()
}

/// The deep-net runs it judges, in groups.
fn groups(scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
    methods(scale)
        .into_iter()
        .map(|(_, stem, sam)| scale.per_seed(|s| scale.noise_run(&stem, sam.clone(), s)))
        .collect()
}

impl Experiment for LabelNoise {
    fn id(&self) -> &'static str {
        "deep_label_noise"
    }
    fn title(&self) -> &'static str {
        "Deep nets: 60% label noise (Fig. 12)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "deep.noise_sam_early_stopping",
                claim: "With 60% label noise, small-m SAM's early-stopped test error (epoch of the best validation error) is below ERM's (mean over seeds)",
                paper: "Fig. 12: ResNet-18/CIFAR-10 best ~10% (SAM) vs ~20% (ERM); ResNet-34/CIFAR-100 ~48% vs ~58%",
            },
            ClaimSpec {
                id: "deep.noise_all_fit_noise",
                claim: "In the end ERM and both SAM variants fit most noisy labels: error on the noisy training examples w.r.t. their noisy labels below 50% (evaluation mode)",
                paper: "Fig. 12: at epoch 1000 ERM ~0%, SAM ~8-10% on the noisy examples (CIFAR-10); both ~0-2% (CIFAR-100)",
            },
            ClaimSpec {
                id: "deep.noise_test_error_rises",
                claim: "...and test error rises when they do: the final test error is above the early-stopped one for every method",
                paper: "Fig. 12: ERM ~20% -> ~49%, SAM ~10% -> ~43% (CIFAR-10)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(&groups(ctx.deep).concat())
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let methods = methods(scale);
        let runs = ctx.deep_groups(&groups(scale))?;
        let (m, rho_m) = (scale.small_m, scale.noise_rho_small_m);
        // One colour per method: test error solid, error on the noisy examples dashed.
        let mut series = vec![];
        for (k, ((label, _, _), r)) in methods.iter().zip(&runs).enumerate() {
            for (what, pick, dashed) in [
                (
                    "test",
                    (|row: &EpochRow| row.test_error) as fn(&EpochRow) -> f64,
                    false,
                ),
                (
                    "noisy train examples",
                    |row: &EpochRow| row.noisy_eval_error,
                    true,
                ),
            ] {
                series.push(Series {
                    color: Some(k),
                    ..epoch_series(format!("{label}: {what}"), &per_epoch(r, pick), 1, dashed)
                });
            }
        }
        let figure = Figure {
            title: "Test error (solid) and error on the noisy training examples w.r.t. their noisy labels (dashed)".into(),
            x_label: "epoch".into(),
            y_label: "error (%)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series,
            vlines: vec![],
            y_range: Some((0.0, 100.0)),
        };
        let dir = ctx.dir(self.id());
        let figures = vec![samlab_report::render(&figure, &dir.join("label_noise"))?.0];
        let mut table = vec![[
            "method",
            "early-stopped test error",
            "best epoch",
            "final test error",
            "final error on noisy examples",
        ]
        .map(String::from)
        .to_vec()];
        for ((label, _, _), r) in methods.iter().zip(&runs) {
            table.push(vec![
                label.clone(),
                fmt_pct(&values(r, early_stopped)),
                r.iter()
                    .map(|o| o.summary.best_epoch.map_or("-".into(), |e| e.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt_pct(&values(r, final_test)),
                fmt_pct(&values(r, noisy_fit)),
            ]);
        }
        let mean = |r: &[RunOutcome], pick| mean_std(&values(r, pick)).0;
        let (es_erm, es_sam) = (mean(&runs[0], early_stopped), mean(&runs[1], early_stopped));
        let fits: Vec<f64> = runs.iter().map(|r| mean(r, noisy_fit)).collect();
        let rises = runs.iter().all(|r| {
            r.iter()
                .all(|o| metric(o, final_test) > metric(o, early_stopped))
        });
        let spec = self.claims();
        let n = &scale.noise_base;
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "{} model and optimizer as above, on the first {} training images ({}% held out as a clean validation set, used for early stopping), {} epochs; exactly 60% of the training labels replaced by a uniformly drawn wrong class, fixed for the run (label_noise.csv in each run directory). Small-m SAM uses rho = {rho_m}: our calibration saw m = 16 with rho = 0.05 collapse to a constant predictor under 60% noise. The noisy-example error is measured in evaluation mode on a fixed subset of the noisy examples.",
                n.model.arch.name(),
                n.data.train_limit.map_or("all".into(), |v| v.to_string()),
                100.0 * n.data.val_fraction,
                n.train.epochs,
            ),
            figures,
            table,
            claims: vec![
                spec[0].judge(format!("{:.2}% (SAM m = {m}) vs {:.2}% (ERM)", 100.0 * es_sam, 100.0 * es_erm), es_sam < es_erm),
                spec[1].judge(
                    format!("final error on noisy examples: {}", methods.iter().zip(&fits).map(|((l, _, _), f)| format!("{l} {:.1}%", 100.0 * f)).collect::<Vec<_>>().join(", ")),
                    fits.iter().all(|&f| f < 0.5),
                ),
                spec[2].judge(
                    format!("final vs early-stopped test error: {}", methods.iter().zip(&runs).map(|((l, _, _), r)| format!("{l} {:.1}% vs {:.1}%", 100.0 * mean(r, final_test), 100.0 * mean(r, early_stopped))).collect::<Vec<_>>().join("; ")),
                    rises,
                ),
            ],
        })
    }
}
