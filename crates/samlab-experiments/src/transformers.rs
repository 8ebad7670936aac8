//! The talk's open question 3: why SAM helps vision transformers and MLP-Mixers so much more than ResNets (Chen,
//! Hsieh & Gong, ICLR'22, "When vision transformers outperform ResNets without pretraining or strong data
//! augmentations"). ERM and SAM on a ViT, an MLP-Mixer and the convnet at matched budgets (same data, epochs,
//! batch and seeds), and the curvature each ends at.

use anyhow::Result;
use samlab_core::schedule::LrSchedule;
use samlab_deep::models::Arch;
use samlab_deep::nn::NormKind;
use samlab_deep::optim::Optimizer;
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_deep::trainer::WeightDecay;
use samlab_deep::transformer::{Pool, TransformerSpec};
use samlab_report::Section;

use super::deep_common::{fmt_pct, mean_std, metric, test_error, DeepScale, ScaleKind};
use super::{ClaimSpec, Ctx, Experiment, Extended, PlannedRun};

/// ERM vs SAM on ViT, Mixer and the convnet.
pub struct Transformers;

/// SAM's radius for every model (the deep presets' radius; not tuned per model).
const RHO: f64 = 0.05;

/// The compared models: label, run-name stem and the base run (ERM, seed 0) of each.
fn models(scale: &DeepScale) -> Vec<(&'static str, &'static str, DeepRunConfig)> {
    let paper = scale.kind == ScaleKind::Paper;
    let mut base = scale.base.clone();
    if !paper {
        base.train.epochs = 10;
        base.data.train_limit = Some(5000);
    }
    // The top eigenvalue and the trace once, after the last epoch, on the first 256 training examples (what
    // `samlab hessian --examples 256 --trace --probes 10` computes on the final checkpoint).
    base.train.curvature_every = base.train.epochs;
    base.train.curvature_examples = 256;
    base.train.curvature_probes = 10;
    let transformer = |arch: Arch, spec: TransformerSpec| {
        let mut c = base.clone();
        c.model.arch = arch;
        c.model.width = Some(if paper { 256 } else { 64 });
        c.model.norm = Some(NormKind::Layer);
        c.model.transformer = Some(spec);
        // The transformers' optimizer (Chen et al. train ViT and Mixer with AdamW, ResNets with SGD).
        c.train.optim.optimizer = Optimizer::ADAMW;
        c.train.optim.weight_decay = WeightDecay::Decoupled { lambda: 0.05 };
        c.train.lr = LrSchedule {
            base: 1e-3,
            ..c.train.lr.clone()
        };
        c
    };
    let shape = TransformerSpec {
        depth: if paper { 6 } else { 4 },
        patch: if paper { 4 } else { 7 },
        heads: 4,
        mlp_ratio: 2,
        pool: Pool::Cls,
    };
    let vit = transformer(Arch::Vit, shape);
    let mixer = transformer(
        Arch::Mixer,
        TransformerSpec {
            pool: Pool::Mean,
            ..shape
        },
    );
    let mut convnet = base.clone();
    if !paper {
        convnet.model.arch = Arch::Cnn;
        convnet.model.width = Some(16);
        convnet.model.norm = Some(NormKind::Batch);
    }
    vec![
        ("ViT", "tf_vit", vit),
        ("Mixer", "tf_mixer", mixer),
        (if paper { "ResNet-18" } else { "CNN" }, "tf_conv", convnet),
    ]
}

/// ERM and SAM runs of every model over the seeds: `[model][erm, sam][seed]`.
fn groups(scale: &DeepScale) -> Vec<[Vec<(String, DeepRunConfig)>; 2]> {
    models(scale)
        .into_iter()
        .map(|(_, stem, base)| {
            let run = |sam: bool| {
                scale.per_seed(|seed| {
                    let mut c = base.clone();
                    c.train.seed = seed;
                    let what = if sam {
                        c.sam = scale.sam_config(c.train.batch_size, RHO);
                        format!("sam_rho{RHO}")
                    } else {
                        "erm".into()
                    };
                    (format!("{stem}_{what}_s{seed}"), c)
                })
            };
            [run(false), run(true)]
        })
        .collect()
}

/// The last epoch's logged curvature: (top eigenvalue, trace).
fn curvature(o: &RunOutcome) -> (f64, f64) {
    o.rows
        .last()
        .map_or((f64::NAN, f64::NAN), |r| (r.hessian_top, r.hessian_trace))
}

/// Mean and std of `f` over runs, as "mean ± std".
fn fmt_stat(runs: &[RunOutcome], f: impl Fn(&RunOutcome) -> f64) -> String {
    let (m, s) = mean_std(&runs.iter().map(f).collect::<Vec<_>>());
    format!("{m:.3} ± {s:.3}")
}

impl Experiment for Transformers {
    fn id(&self) -> &'static str {
        "transformers"
    }
    fn title(&self) -> &'static str {
        "Open question: SAM on vision transformers and MLP-Mixers vs a convnet"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "transformers.vit_gains_more",
                claim: "SAM lowers the ViT's final test error (mean over seeds), by more than it lowers the convnet's (hurting it less is no gain)",
                paper: "Chen, Hsieh & Gong (ICLR'22), ImageNet without pretraining or strong augmentation: ViT-B/16 +5.3 points; ResNets gain much less",
            },
            ClaimSpec {
                id: "transformers.mixer_gains_more",
                claim: "SAM lowers the MLP-Mixer's final test error (mean over seeds), by more than it lowers the convnet's (hurting it less is no gain)",
                paper: "Chen, Hsieh & Gong (ICLR'22): Mixer-B/16 +11.0 points on ImageNet",
            },
            ClaimSpec {
                id: "transformers.sam_flattens_transformers",
                claim: "SAM ends at a smaller top Hessian eigenvalue than ERM for the ViT and the Mixer (mean over seeds)",
                paper: "Chen, Hsieh & Gong (ICLR'22): SAM lowers the dominant Hessian eigenvalue of ViT-B/16 and Mixer-B/16 by more than an order of magnitude",
            },
        ]
    }
    fn extended(&self) -> Extended {
        Extended::Whole
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(
            &groups(ctx.deep)
                .into_iter()
                .flatten()
                .flatten()
                .collect::<Vec<_>>(),
        )
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let models = models(scale);
        let mut outcomes = Vec::new();
        for [erm, sam] in groups(scale) {
            outcomes.push([ctx.deep_get(&erm)?, ctx.deep_get(&sam)?]);
        }
        let err = |r: &RunOutcome| metric(r, test_error);
        // Per model: the mean gain (ERM - SAM test error) and its std over the paired seeds.
        let gains: Vec<(f64, f64)> = outcomes
            .iter()
            .map(|[erm, sam]| {
                let d: Vec<f64> = erm.iter().zip(sam).map(|(e, s)| err(e) - err(s)).collect();
                mean_std(&d)
            })
            .collect();
        let mut table = vec![[
            "model",
            "parameters",
            "ERM test error",
            "SAM test error",
            "gain (points)",
            "ERM top eigenvalue",
            "SAM top eigenvalue",
            "ERM trace",
            "SAM trace",
            "seconds per run (ERM / SAM)",
        ]
        .map(String::from)
        .to_vec()];
        for ((label, _, _), ([erm, sam], (g, gs))) in models.iter().zip(outcomes.iter().zip(&gains))
        {
            let values = |r: &[RunOutcome]| r.iter().map(err).collect::<Vec<_>>();
            let secs = |r: &[RunOutcome]| {
                mean_std(
                    &r.iter()
                        .map(|o| o.summary.train_seconds)
                        .collect::<Vec<_>>(),
                )
                .0
            };
            table.push(vec![
                label.to_string(),
                erm.first()
                    .map_or("-".into(), |o| o.summary.num_params.to_string()),
                fmt_pct(&values(erm)),
                fmt_pct(&values(sam)),
                format!("{:+.2} ± {:.2}", 100.0 * g, 100.0 * gs),
                fmt_stat(erm, |o| curvature(o).0),
                fmt_stat(sam, |o| curvature(o).0),
                fmt_stat(erm, |o| curvature(o).1),
                fmt_stat(sam, |o| curvature(o).1),
                format!("{:.0} / {:.0}", secs(erm), secs(sam)),
            ]);
        }
        let gain = |i: usize| 100.0 * gains[i].0;
        let top = |i: usize, which: usize| {
            mean_std(
                &outcomes[i][which]
                    .iter()
                    .map(|o| curvature(o).0)
                    .collect::<Vec<_>>(),
            )
            .0
        };
        let spec = self.claims();
        let conv = models[2].0;
        let (vit, mixer, conv_cfg) = (&models[0].2, &models[1].2, &models[2].2);
        let shape = |c: &DeepRunConfig| {
            let t = c.model.transformer.unwrap_or_default();
            format!(
                "width {}, depth {}, patch {}, MLP ratio {}",
                c.model.width.unwrap_or_default(),
                t.depth,
                t.patch,
                t.mlp_ratio
            )
        };
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "Matched budgets: every model trains on the same data ({} training images{}, 10% held out), {} epochs at batch {}, the same seeds {:?}; SAM is normalized SAM with one perturbation per batch at rho = {RHO} for every model (not tuned per model). ViT: {}, {} heads, class token; Mixer: {}, token-MLP hidden width/2; both pre-LayerNorm, GELU, AdamW (lr 1e-3, betas 0.9/0.999, decoupled weight decay 0.05) with the same piecewise schedule, as Chen et al. train them. {conv}: {} (width {}), SGD momentum 0.9, lr {}, L2 5e-4. Curvature: the top Hessian eigenvalue (Lanczos) and Hutchinson's trace (10 probes) of the training loss at the final weights, on the first 256 examples of the run's training split, BatchNorm (the CNN's) in batch mode over 2 chunks of 128 (the last epoch's curvature log, which is `samlab hessian --examples 256 --trace --probes 10` on the final checkpoint). Gains are ERM minus SAM test error, paired by seed (mean ± std). Chen et al. train at ImageNet scale for 300 epochs; at this scale the numbers say whether the ordering survives, not its size.",
                match scale.kind { ScaleKind::Laptop => "the first 5,000 of the shipped Fashion-MNIST subset's", ScaleKind::Paper => "CIFAR-10's" },
                match scale.kind { ScaleKind::Laptop => ", no augmentation", ScaleKind::Paper => ", crop + flip" },
                vit.train.epochs,
                vit.train.batch_size,
                scale.seeds,
                shape(vit),
                vit.model.transformer.map_or(0, |t| t.heads),
                shape(mixer),
                conv_cfg.model.arch.name(),
                conv_cfg.model.width.unwrap_or_default(),
                conv_cfg.train.lr.base,
            ),
            figures: vec![],
            table,
            claims: vec![
                spec[0].judge(
                    format!("gain {:+.2} points (ViT) vs {:+.2} ({conv}); paper: +5.3 (ViT-B/16, ImageNet)", gain(0), gain(2)),
                    gain(0) > gain(2).max(0.0),
                ),
                spec[1].judge(
                    format!("gain {:+.2} points (Mixer) vs {:+.2} ({conv}); paper: +11.0 (Mixer-B/16, ImageNet)", gain(1), gain(2)),
                    gain(1) > gain(2).max(0.0),
                ),
                spec[2].judge(
                    format!(
                        "top eigenvalue ERM -> SAM: ViT {:.3} -> {:.3}, Mixer {:.3} -> {:.3} ({conv} {:.3} -> {:.3})",
                        top(0, 0), top(0, 1), top(1, 0), top(1, 1), top(2, 0), top(2, 1)
                    ),
                    top(0, 1) < top(0, 0) && top(1, 1) < top(1, 0),
                ),
            ],
        })
    }
}
