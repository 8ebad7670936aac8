//! SGD with large step sizes learns sparse features, on deep nets (Andriushchenko, Varre, Pillaud-Vivien &
//! Flammarion 2023, the talk's follow-up): SGD with a small and a large step, each then decayed to the same small
//! step, on an MLP without normalization and (with `--extended`) on a PreAct ResNet-18 with BatchNorm. The training is cut into segments of a few epochs (each a run that starts
//! from the previous one's weights, SGD's batches drawn with the segment's own seed), and at the end of every
//! segment we measure on fixed training examples: the fraction of active ReLUs of the last hidden layer, the
//! numerical rank of its feature matrix, and the numerical rank of the NTK feature matrix (the Jacobian of the
//! logits with respect to the parameters).

use anyhow::{bail, Result};
use samlab_analytic::relu::metrics::feature_stats_of;
use samlab_core::rank::numerical_rank;
use samlab_core::sam::SamConfig;
use samlab_core::schedule::LrSchedule;
use samlab_deep::analysis::features::{feature_matrix, DEEP_CORR_THRESHOLD};
use samlab_deep::analysis::ntk::ntk_features;
use samlab_deep::analysis::{CheckpointKind, LoadedRun, Split};
use samlab_deep::models::Arch;
use samlab_deep::nn::NormKind;
use samlab_deep::run::DeepRunConfig;
use samlab_deep::trainer::WeightDecay;
use samlab_report::{Claim, Scale, Section};
use serde::{Deserialize, Serialize};

use crate::{
    cached, fmt_compact, last_checkpoint, ClaimSpec, Ctx, Experiment, Extended, PlannedRun,
};

const IMAGES: usize = 1024;
const BATCH: usize = 32;

/// A net of the experiment: the prefix of its run names, its architecture, width and normalization, and whether
/// only `--extended` trains it.
struct Net {
    name: &'static str,
    prefix: &'static str,
    arch: Arch,
    width: usize,
    norm: NormKind,
    extended: bool,
}

/// The MLP of the main job and the ResNet of `--extended`, in claim order (each net five claims).
const NETS: [Net; 2] = [
    Net {
        name: "MLP",
        prefix: "largestep",
        arch: Arch::Mlp,
        width: 128,
        norm: NormKind::None,
        extended: false,
    },
    Net {
        name: "PreAct ResNet-18",
        prefix: "largestep_resnet",
        arch: Arch::PreactResnet18,
        width: 8,
        norm: NormKind::Batch,
        extended: true,
    },
];
/// Epochs per segment; segments at the first step, then at the decayed one.
const SEGMENT: usize = 4;
const FIRST: usize = 5;
const DECAYED: usize = 2;
/// The small and the large step, and the step both decay to.
const STEPS: [(&str, f64); 2] = [("small", 0.05), ("large", 0.4)];
const DECAY_LR: f64 = 0.01;
/// Examples of the feature measures, of the NTK feature matrix, and the rank's relative tolerance.
const FEATURE_EXAMPLES: usize = 256;
const NTK_EXAMPLES: usize = 128;
const RTOL: f64 = 1e-3;

/// The chain of segments of one net and step size: `(name, config)` in training order.
fn chain(ctx: &Ctx, net: &Net, label: &str, lr: f64) -> Vec<(String, DeepRunConfig)> {
    let mut runs: Vec<(String, DeepRunConfig)> = vec![];
    for k in 0..FIRST + DECAYED {
        let mut c = samlab_deep::run::defaults();
        c.model.arch = net.arch;
        c.model.width = Some(net.width);
        c.model.norm = Some(net.norm);
        c.data.train_limit = Some(IMAGES);
        c.data.val_fraction = 0.0;
        c.train.epochs = SEGMENT;
        c.train.batch_size = BATCH;
        c.train.seed = k as u64;
        c.train.lr = LrSchedule::constant(if k < FIRST { lr } else { DECAY_LR });
        c.train.optim.momentum = 0.0;
        c.train.optim.weight_decay = WeightDecay::None;
        c.train.eval_train_examples = IMAGES;
        c.train.device = ctx.deep.base.train.device.clone();
        c.train.precision = ctx.deep.base.train.precision;
        c.sam = SamConfig::erm();
        c.init_from = runs
            .last()
            .map(|(name, _)| std::path::Path::new("..").join(name));
        runs.push((format!("{}_{label}_seg{k}", net.prefix), c));
    }
    runs
}

/// What we measure at the end of a segment.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Measures {
    active_fraction: f64,
    feature_rank: usize,
    ntk_rank: usize,
}

fn measure(dir: &std::path::Path) -> Result<Measures> {
    let run = LoadedRun::load(dir, CheckpointKind::Last)?;
    let features = run.examples(Split::Train, FEATURE_EXAMPLES)?;
    let phi = feature_matrix(&run.net, &run.state.params, &run.state.bn, &features);
    let stats = feature_stats_of(&phi, DEEP_CORR_THRESHOLD);
    let (n, d) = phi.dim();
    let flat: Vec<f64> = phi.iter().copied().collect();
    let ntk_examples = run.examples(Split::Train, NTK_EXAMPLES)?;
    let jac = ntk_features(
        &run.net,
        &run.state.params,
        &run.state.bn,
        &ntk_examples,
        true,
    );
    let (rows, cols) = jac.dim();
    let jflat: Vec<f64> = jac.iter().copied().collect();
    Ok(Measures {
        active_fraction: stats.activation_fraction,
        feature_rank: numerical_rank(n, d, &flat, RTOL),
        ntk_rank: numerical_rank(rows, cols, &jflat, RTOL),
    })
}

/// One net's measures at the end of each segment, `(epoch, train loss, measures)` per step size, and each step's
/// final test error.
struct Curves {
    points: Vec<Vec<(usize, f64, Measures)>>,
    test: Vec<Option<f64>>,
}

fn curves(ctx: &Ctx, dir: &std::path::Path, net: &Net) -> Result<Curves> {
    let mut points = vec![];
    let mut test = vec![];
    for &(label, lr) in &STEPS {
        let outcomes = ctx.deep_get(&chain(ctx, net, label, lr))?;
        let measures = ctx.par_runs(&outcomes, |o| {
            let name = o.dir.file_name().unwrap_or_default().to_string_lossy();
            cached(
                &dir.join(format!("measures_{name}.json")),
                &[last_checkpoint(&o.dir)],
                || measure(&o.dir),
            )
        });
        let mut curve = vec![];
        for (k, (o, m)) in outcomes.iter().zip(measures).enumerate() {
            let Some(last) = o.rows.last() else {
                bail!("{} logged no epoch", o.dir.display());
            };
            curve.push(((k + 1) * SEGMENT, last.train_eval_loss, m?));
        }
        test.push(outcomes[outcomes.len() - 1].summary.test_error);
        points.push(curve);
    }
    Ok(Curves { points, test })
}

/// The five claims of one net, judged on its curves.
fn judge_net(spec: &[ClaimSpec], net: &Net, c: &Curves) -> Vec<Claim> {
    let (small, large) = (&c.points[0], &c.points[1]);
    let end_first = FIRST - 1;
    let last = FIRST + DECAYED - 1;
    let f = fmt_compact;
    let mut claims = vec![spec[0].judge(
        format!(
            "train loss at the end of the first phase: large {} (one segment earlier {}), small {}",
            f(large[end_first].1),
            f(large[end_first - 1].1),
            f(small[end_first].1)
        ),
        large[end_first].1 > small[end_first].1
            && large[end_first].1 > 0.5 * large[end_first - 1].1,
    )];
    let (s, l) = (small[last].2, large[last].2);
    claims.push(spec[1].judge(
        format!(
            "active ReLUs after the decay: large {}, small {}",
            f(l.active_fraction),
            f(s.active_fraction)
        ),
        l.active_fraction < s.active_fraction,
    ));
    claims.push(spec[2].judge(
        format!(
            "feature rank after the decay: large {}, small {} (of {} features)",
            l.feature_rank,
            s.feature_rank,
            net.features()
        ),
        l.feature_rank < s.feature_rank,
    ));
    claims.push(spec[3].judge(
        format!(
            "NTK feature rank after the decay: large {}, small {} (of {NTK_EXAMPLES} rows)",
            l.ntk_rank, s.ntk_rank
        ),
        l.ntk_rank < s.ntk_rank,
    ));
    claims.push(match (c.test[0], c.test[1]) {
        (Some(ts), Some(tl)) => spec[4].judge(
            format!(
                "test error after the decay: large {:.2}%, small {:.2}%",
                100.0 * tl,
                100.0 * ts
            ),
            tl <= ts + 0.005,
        ),
        _ => spec[4].judge("no test error logged".into(), false),
    });
    claims
}

impl Net {
    /// The width of its penultimate features (a ResNet-18's last stage has 8 times its width).
    fn features(&self) -> usize {
        match self.arch {
            Arch::Mlp => self.width,
            _ => 8 * self.width,
        }
    }
}

/// SGD with large steps on deep nets.
pub struct LargeStepDeep;

impl Experiment for LargeStepDeep {
    fn id(&self) -> &'static str {
        "large_step_sgd_deep"
    }
    fn title(&self) -> &'static str {
        "SGD with large step sizes learns sparse features, on an MLP and a ResNet (Andriushchenko et al. 2023)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "largestep.loss_stabilises",
                claim: "During the large-step phase the training loss stabilises: at its end it is above the small step's, and above half its value one segment earlier",
                paper: "large step sizes: the loss stabilises at a non-zero level (Andriushchenko et al. 2023, Fig. 1)",
            },
            ClaimSpec {
                id: "largestep.sparser_features",
                claim: "After the decay the large-step features are sparser: a lower fraction of active ReLUs than the small step's",
                paper: "sparser features after the large-step phase (Fig. 1, ResNet-18 on CIFAR-10)",
            },
            ClaimSpec {
                id: "largestep.lower_feature_rank",
                claim: "After the decay the large step's feature matrix has the lower numerical rank",
                paper: "lower feature rank with large steps",
            },
            ClaimSpec {
                id: "largestep.lower_ntk_rank",
                claim: "After the decay the large step's NTK feature matrix has the lower numerical rank",
                paper: "lower rank of the NTK feature matrix with large steps",
            },
            ClaimSpec {
                id: "largestep.test_not_worse",
                claim: "After the decay the large step's test error is at most the small step's + 0.5 points",
                paper: "better generalization with large steps then decay",
            },
            ClaimSpec {
                id: "largestep.resnet.loss_stabilises",
                claim: "ResNet-18: during the large-step phase the training loss stabilises: at its end it is above the small step's, and above half its value one segment earlier",
                paper: "the loss stabilises at a non-zero level (Andriushchenko et al. 2023, Fig. 1, ResNet-18 on CIFAR-10)",
            },
            ClaimSpec {
                id: "largestep.resnet.sparser_features",
                claim: "ResNet-18: after the decay the large-step features are sparser: a lower fraction of active ReLUs than the small step's",
                paper: "sparser features after the large-step phase (Fig. 1, ResNet-18 on CIFAR-10)",
            },
            ClaimSpec {
                id: "largestep.resnet.lower_feature_rank",
                claim: "ResNet-18: after the decay the large step's feature matrix has the lower numerical rank",
                paper: "lower feature rank with large steps (ResNet-18 on CIFAR-10)",
            },
            ClaimSpec {
                id: "largestep.resnet.lower_ntk_rank",
                claim: "ResNet-18: after the decay the large step's NTK feature matrix has the lower numerical rank",
                paper: "lower rank of the NTK feature matrix with large steps (ResNet-18 on CIFAR-10)",
            },
            ClaimSpec {
                id: "largestep.resnet.test_not_worse",
                claim: "ResNet-18: after the decay the large step's test error is at most the small step's + 0.5 points",
                paper: "better generalization with large steps then decay (ResNet-18 on CIFAR-10)",
            },
        ]
    }
    fn extended(&self) -> Extended {
        Extended::Part("the PreAct ResNet-18 runs")
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        let all: Vec<(String, DeepRunConfig)> = NETS
            .iter()
            .filter(|net| ctx.extended || !net.extended)
            .flat_map(|net| {
                STEPS
                    .iter()
                    .flat_map(move |&(label, lr)| chain(ctx, net, label, lr))
            })
            .collect();
        ctx.deep_planned(&all)
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let dir = ctx.dir(self.id());
        let spec = self.claims();
        let f = fmt_compact;
        let mut claims = vec![];
        // (net, its curves) for every net trained here.
        let mut trained = vec![];
        for (net, spec) in NETS.iter().zip(spec.chunks(5)) {
            if net.extended && !ctx.extended {
                continue; // the report's note names the left-out part
            }
            let c = curves(ctx, &dir, net)?;
            claims.extend(judge_net(spec, net, &c));
            trained.push((net, c));
        }
        let mut figures = vec![];
        let series = |pick: fn(&(usize, f64, Measures)) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            trained
                .iter()
                .flat_map(|(net, c)| {
                    STEPS.iter().zip(&c.points).map(move |((label, lr), c)| {
                        (
                            format!("{}, {label} step {lr}, then {DECAY_LR}", net.name),
                            c.iter().map(|p| (p.0 as f64, pick(p))).collect(),
                        )
                    })
                })
                .collect()
        };
        for (stem, what, pick, scale) in [
            (
                "train_loss",
                "training loss",
                (|p: &(usize, f64, Measures)| p.1) as fn(&(usize, f64, Measures)) -> f64,
                Scale::Log,
            ),
            (
                "active",
                "fraction of active ReLUs",
                |p| p.2.active_fraction,
                Scale::Linear,
            ),
            (
                "feature_rank",
                "feature rank",
                |p| p.2.feature_rank as f64,
                Scale::Linear,
            ),
            (
                "ntk_rank",
                "NTK feature rank",
                |p| p.2.ntk_rank as f64,
                Scale::Linear,
            ),
        ] {
            figures.push(crate::full_batch::figure(
                &dir,
                stem,
                &format!(
                    "{what} at the end of each segment (decay after epoch {})",
                    FIRST * SEGMENT
                ),
                "epoch",
                what,
                series(pick),
                scale,
            )?);
        }
        let mut table = vec![[
            "net",
            "step",
            "epoch",
            "train loss",
            "active ReLUs",
            "feature rank",
            "NTK rank",
        ]
        .map(String::from)
        .to_vec()];
        for (net, c) in &trained {
            for ((label, _), c) in STEPS.iter().zip(&c.points) {
                for p in c {
                    table.push(vec![
                        net.name.to_string(),
                        label.to_string(),
                        p.0.to_string(),
                        f(p.1),
                        f(p.2.active_fraction),
                        p.2.feature_rank.to_string(),
                        p.2.ntk_rank.to_string(),
                    ]);
                }
            }
        }
        let [mlp, resnet] = &NETS;
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "An MLP (2 x {} ReLU units, no normalization) and, with `--extended`, a PreAct ResNet-18 of width {} with BatchNorm, each on the first {IMAGES} shipped Fashion-MNIST training images, plain SGD (batch {BATCH}, no momentum, no weight decay): {} epochs at step {} (small) or {} (large), then {} epochs at {DECAY_LR} for both, in segments of {SEGMENT} epochs (deep_runs/largestep_* and deep_runs/largestep_resnet_*). At the end of each segment: the training loss on all {IMAGES} images, the fraction of active ReLUs of the penultimate features (the MLP's last hidden layer; the ResNet's last BatchNorm-ReLU after average pooling, active where any position is) and the numerical rank of their {FEATURE_EXAMPLES}-row feature matrix on the first {FEATURE_EXAMPLES} training images, and the numerical rank of the NTK feature matrix (the gradient of each example's logit of its label with respect to every parameter, BatchNorm with the running statistics) on the first {NTK_EXAMPLES}; a rank counts the singular values above {RTOL} times the largest. The paper's ResNet-18 (width 64) on CIFAR-10 is not run at this scale.{}",
                mlp.width,
                resnet.width,
                FIRST * SEGMENT,
                STEPS[0].1,
                STEPS[1].1,
                DECAYED * SEGMENT,
                if ctx.extended {
                    ""
                } else {
                    " This report was made without `--extended`: the ResNet's runs and claims are left out."
                }
            ),
            figures,
            table,
            claims,
        })
    }
}
