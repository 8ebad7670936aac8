//! The follow-up paper "SGD with large step sizes learns sparse features" (SPEC §9; repository
//! tml-epfl/sgd-sparse-features): large-step SGD stabilizes the loss, and the longer that phase lasts before the
//! step decays, the sparser the predictor (diagonal nets) or the features (ReLU nets) and the lower the test
//! loss. Three presets: diagonal nets (`diag_nets.ipynb`), the 1D ReLU net (`fc_nets_1d_regression.ipynb`) and
//! teacher-student ReLU nets (`fc_nets_two_layer.ipynb`).
//!
//! The authors' ReLU code minimises mean((f - y)^2) while samlab's per-example loss is (f - y)^2 / 2, so their
//! step gamma is our 2 * gamma; the presets convert and the tables show both.

use anyhow::Result;
use samlab_analytic::relu::{LossReduction, ReluInit, TeacherStudent};
use samlab_core::data::SparseRegression;
use samlab_core::run::{log_iterations, RunStatus};
use samlab_core::sam::SamConfig;
use samlab_core::schedule::{LrSchedule, LrShape, Warmup};
use samlab_report::{Figure, Scale, Section, Series};

use super::relu_common::{
    along_figure, functions_figure, if_ok, median, relu_table, twelve_point_run,
};
use super::{by_dir, curves_figure, diag_config, fmt_loss, ClaimSpec, Ctx, Experiment, PlannedRun};
use samlab_analytic::diag::run::{DiagOutcome, DiagRunConfig};
use samlab_analytic::relu::run::{
    MetricSettings, ReluData, ReluMetricsRow, ReluOutcome, ReluRunConfig,
};

/// A step schedule: `base` until fraction `at`, then `base / decay`.
fn decayed(base: f64, at: f64, decay: f64) -> LrSchedule {
    LrSchedule {
        base,
        shape: LrShape::Step {
            at: vec![at],
            factors: vec![1.0 / decay],
        },
        warmup: Warmup::None,
    }
}

/// Whether `v` is non-increasing.
fn non_increasing(v: &[f64]) -> bool {
    v.windows(2).all(|w| w[1] <= w[0])
}

/// Values of a list formatted with `f`, comma-separated.
fn join(v: &[f64], f: impl Fn(f64) -> String) -> String {
    v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------------------------
// Diagonal nets.

const DIAG_DATA: SparseRegression = SparseRegression {
    n: 80,
    d: 200,
    r: 20,
    n_test: 1000,
    seed: 0,
};
/// `int(10**5) + 1` updates, as the notebook.
const DIAG_ITERS: usize = 100_001;
const DIAG_SMALL: f64 = 0.25;
const DIAG_LARGE: f64 = 0.282;
/// (decay point, factor) of the notebook's three schedules.
const DIAG_DECAYS: [(f64, f64); 3] = [(0.1, 4.8), (0.3, 3.4), (0.5, 1.5)];
/// |u v| above this counts as a non-zero coordinate (the notebook's `l0_threshold_power = 50`).
const NONZERO: f64 = 1e-50;

/// Large-step SGD on diagonal nets.
pub struct LargeStepDiag;

/// Small steps, then large steps decayed at 10%, 30%, 50%: SGD with batch 1, labelled.
fn diag_configs() -> Vec<(String, DiagRunConfig)> {
    let mut runs = vec![(
        "SGD gamma=0.25".to_string(),
        LrSchedule::constant(DIAG_SMALL),
    )];
    for (at, decay) in DIAG_DECAYS {
        runs.push((
            format!("SGD gamma=0.282, decay at {:.0}%", at * 100.0),
            decayed(DIAG_LARGE, at, decay),
        ));
    }
    runs.into_iter()
        .map(|(name, lr)| {
            let mut c = diag_config(DIAG_DATA, 0.1, DIAG_SMALL, DIAG_ITERS, SamConfig::erm());
            c.train.lr = lr;
            c.train.batch_size = Some(1);
            c.train.seed = 1;
            (name, c)
        })
        .collect()
}

/// Coordinates of `beta` above [`NONZERO`] in absolute value.
fn count_nonzero(beta: &[f64]) -> f64 {
    beta.iter().filter(|b| b.abs() > NONZERO).count() as f64
}

impl Experiment for LargeStepDiag {
    fn id(&self) -> &'static str {
        "relu_large_step_diag"
    }
    fn title(&self) -> &'static str {
        "Sparse features I: large-step SGD on diagonal nets, step decay at 10/30/50% vs small steps"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "relu.diag_loss_stabilization",
                claim: "Large-step SGD stabilizes the loss: over the large-step phase of the 50%-decay run its train loss falls less than 10x (median over 10-20% vs 40-50% of training) and stays >= 10x above the small-step run's over 25-50%",
                paper: "loss stabilization: the loss hovers at a roughly constant level while the step is large (SPEC §9)",
            },
            ClaimSpec {
                id: "relu.diag_longer_phase_sparser",
                claim: "The longer the large-step phase, the sparser the predictor: non-zero coordinates (|u v| > 1e-50) do not increase from small steps through decay at 10%, 30%, 50%, and decay at 50% has fewer than small steps",
                paper: "200 (small steps), 156, 89, 71 non-zeros (notebook, n=80, d=200, r=20)",
            },
            ClaimSpec {
                id: "relu.diag_longer_phase_lower_test",
                claim: "The longer the large-step phase, the lower the test loss: strictly decreasing from small steps through decay at 10%, 30%, 50%",
                paper: "3.53e-3, 6.59e-4, 2.85e-4, 1.54e-4 (notebook)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.planned(self.id(), by_dir(diag_configs()))
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let runs = diag_configs();
        let outcomes = ctx.diag_runs(self.id(), by_dir(runs.clone()))?;
        // Non-zero coordinates at the logged iterations: the engine's observer during a replay of each run, which
        // must end at its stored weights.
        let log_at = log_iterations(DIAG_ITERS);
        let counts = ctx.par_runs(&runs, |(name, config)| -> Result<Vec<f64>> {
            let dir = ctx.dir(self.id()).join(crate::dir_name(name));
            let (data, init) = samlab_analytic::diag::run::prepare(config, &dir)?;
            let mut nonzeros = Vec::with_capacity(log_at.len() + 1);
            let mut next = 0;
            let replay = samlab_analytic::diag::train(&data, &config.train, init, &mut |step| {
                if log_at.get(next) == Some(&step.t) {
                    next += 1;
                    nonzeros.push(count_nonzero(&step.params.beta()));
                }
                true
            })?;
            let stored = &outcomes[runs
                .iter()
                .position(|r| &r.0 == name)
                .expect("a planned run")];
            anyhow::ensure!(
                replay.params == stored.run.params,
                "replaying {name} does not give its stored weights"
            );
            nonzeros.push(count_nonzero(&replay.params.beta()));
            Ok(nonzeros)
        });
        let counts: Vec<Vec<f64>> = counts.into_iter().collect::<Result<_>>()?;
        let results: Vec<(&DiagOutcome, &Vec<f64>)> = outcomes.iter().zip(&counts).collect();
        let names: Vec<String> = runs.iter().map(|r| r.0.clone()).collect();
        let outcomes: Vec<&DiagOutcome> = outcomes.iter().collect();
        // A diverged run's count is NaN: it never counts as sparse.
        let nnz: Vec<f64> = results
            .iter()
            .map(|(o, counts)| match o.summary.header.status {
                RunStatus::Ok => *counts.last().expect("final count"),
                _ => f64::NAN,
            })
            .collect();
        let tests: Vec<f64> = outcomes.iter().map(|o| o.test_loss()).collect();

        // Loss stabilization of the 50%-decay run against the small-step run.
        let window = |o: &DiagOutcome, lo: f64, hi: f64| {
            let v: Vec<f64> = o
                .run
                .curve
                .iter()
                .filter(|p| {
                    let f = p.iteration as f64 / DIAG_ITERS as f64;
                    f >= lo && f < hi
                })
                .map(|p| p.train_loss)
                .collect();
            median(&v)
        };
        let (small, late) = (outcomes[0], outcomes[3]);
        let early_plateau = window(late, 0.1, 0.2);
        let late_plateau = window(late, 0.4, 0.5);
        let above = window(late, 0.25, 0.5) / window(small, 0.25, 0.5);
        let fall = early_plateau / late_plateau;
        let after = window(late, 0.75, 1.0);

        let dir = ctx.dir(self.id());
        let labelled: Vec<(String, &DiagOutcome)> = names
            .iter()
            .cloned()
            .zip(outcomes.iter().copied())
            .collect();
        let nnz_figure = Figure {
            title: "Non-zero coordinates of beta = u * v (|beta_j| > 1e-50)".into(),
            x_label: "iteration (the large-step runs coincide until their decay)".into(),
            y_label: "non-zero coordinates".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: names
                .iter()
                .zip(&results)
                .map(|(name, (o, counts))| Series {
                    name: name.clone(),
                    points: o
                        .run
                        .curve
                        .iter()
                        .zip(counts.iter())
                        .filter(|(p, _)| p.iteration > 0)
                        .map(|(p, &c)| (p.iteration as f64, c))
                        .collect(),
                    dashed: false,
                    markers: false,
                    color: None,
                    band: vec![],
                })
                .collect(),
            vlines: vec![],
            // From the first update on (beta = 0 before it); room above 200 for the legend.
            y_range: Some((0.0, 290.0)),
        };
        let figures = vec![
            curves_figure(
                &dir,
                "train_loss",
                "Large-step SGD on diagonal nets: train loss",
                false,
                &labelled,
            )?,
            curves_figure(
                &dir,
                "test_loss",
                "Large-step SGD on diagonal nets: test loss",
                true,
                &labelled,
            )?,
            samlab_report::render(&nnz_figure, &dir.join("nonzeros"))?.0,
        ];
        let mut table = vec![[
            "run",
            "final train loss",
            "final test loss",
            "non-zeros",
            "l1 norm",
            "status",
        ]
        .map(String::from)
        .to_vec()];
        for ((name, o), count) in names.iter().zip(&outcomes).zip(&nnz) {
            table.push(vec![
                name.clone(),
                fmt_loss(o.train_loss()),
                fmt_loss(o.test_loss()),
                format!("{count:.0}"),
                format!("{:.4}", o.summary.l1_norm),
                format!("{:?}", o.summary.header.status).to_lowercase(),
            ]);
        }
        let spec = self.claims();
        let decreasing = tests.windows(2).all(|w| w[1] < w[0]);
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "The notebook's setting (SPEC §9): sparse regression with n=80, d=200, r=20 and 1000 test points from NumPy RandomState(0) (our generator reproduces the notebook's data exactly), u0 = 0.1, v0 = 0, SGD with batch 1 drawn by RandomState(1).randint as the notebook, {DIAG_ITERS} updates. Small steps: gamma = {DIAG_SMALL} throughout. Large steps: gamma = {DIAG_LARGE}, divided by 4.8, 3.4 or 1.5 after 10%, 30% or 50% of training (the notebook's factors). Same iteration counts as the paper. The 50%-decay run's median train loss: {} over 10-20% of training, {} over 40-50%, {} over 75-100% (after the decay).",
                fmt_loss(early_plateau),
                fmt_loss(late_plateau),
                fmt_loss(after)
            ),
            figures,
            table,
            claims: vec![
                spec[0].judge(
                    format!("fall over the phase {fall:.2}x; {above:.0}x above the small-step run over 25-50%"),
                    fall < 10.0 && above >= 10.0,
                ),
                spec[1].judge(
                    format!("{} non-zeros", join(&nnz, |v| format!("{v:.0}"))),
                    non_increasing(&nnz) && nnz[3] < nnz[0],
                ),
                spec[2].judge(format!("test loss {}", join(&tests, fmt_loss)), decreasing),
            ],
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1D ReLU net.

/// `int(10**4.5) + 1` updates, as the notebook.
const ONE_D_ITERS: usize = 31_623;
/// The notebook's gamma for mean((f - y)^2); ours is twice that.
const ONE_D_GAMMA: f64 = 2e-4;
/// (decay point = end of the warm-up, decay factor) of the notebook's two runs; warm-up factor 400.
const ONE_D_RUNS: [(f64, f64); 2] = [(0.02, 2.5), (0.5, 3.0)];
const ONE_D_SEEDS: [u32; 5] = [0, 1, 2, 3, 4];

/// The notebook's schedule in samlab terms: the rate rises linearly to its peak
/// `gamma (1 + (400 s - 1) s)` at fraction `s` (the notebook starts the ramp at gamma, ours at 0), then is
/// divided by `decay` for the rest of training.
fn one_d_schedule(s: f64, decay: f64) -> LrSchedule {
    let peak = 2.0 * ONE_D_GAMMA * (1.0 + (400.0 * s - 1.0) * s);
    LrSchedule {
        base: peak,
        shape: LrShape::Step {
            at: vec![s],
            factors: vec![1.0 / decay],
        },
        warmup: Warmup::Linear {
            steps: (s * ONE_D_ITERS as f64) as usize,
        },
    }
}

/// SGD on the 1D ReLU net with the step decayed at 2% vs 50% of training.
pub struct LargeStepRelu1d;

/// Per seed, the early- and the late-decay run.
fn one_d_configs() -> Vec<(String, ReluRunConfig)> {
    let mut runs = vec![];
    for seed in ONE_D_SEEDS {
        for (s, decay) in ONE_D_RUNS {
            let mut c = twelve_point_run(
                seed,
                one_d_schedule(s, decay),
                ONE_D_ITERS,
                Some(1),
                SamConfig::erm(),
                None,
            );
            c.metrics.corr_threshold = 0.999;
            runs.push((format!("decay{:.0}_seed{seed}", s * 100.0), c));
        }
    }
    runs
}

impl Experiment for LargeStepRelu1d {
    fn id(&self) -> &'static str {
        "relu_large_step_1d"
    }
    fn title(&self) -> &'static str {
        "Sparse features II: SGD on the 1D ReLU net, step decayed at 2% vs 50% of training"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "relu.1d_late_decay_fewer_neurons",
                claim: "A longer large-step phase gives sparser features: fewer distinct active neurons (median over 5 seeds) with the decay at 50% than at 2%",
                paper: "fraction of non-zero activations 26.7% (decay at 50%) vs 48.7% (at 2%), one seed (notebook); fewer distinct active neurons (SPEC §9)",
            },
            ClaimSpec {
                id: "relu.1d_late_decay_fewer_kinks",
                claim: "... and a simpler interpolant: fewer kinks (median over 5 seeds) with the decay at 50% than at 2%",
                paper: "the notebook's learned functions: visibly fewer kinks with the late decay",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.planned(self.id(), one_d_configs())
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let out = ctx.relu_runs(self.id(), one_d_configs())?;
        let names: Vec<String> = ONE_D_SEEDS
            .iter()
            .flat_map(|seed| {
                ONE_D_RUNS.map(|(s, _)| format!("decay at {:.0}%, seed {seed}", s * 100.0))
            })
            .collect();
        let pick = |k: usize, f: &dyn Fn(&ReluOutcome) -> f64| -> Vec<f64> {
            out.iter().skip(k).step_by(2).map(f).collect()
        };
        let neurons = |o: &ReluOutcome| if_ok(o, o.summary.metrics.active_neurons as f64);
        let kinks = |o: &ReluOutcome| if_ok(o, o.summary.metrics.kinks.unwrap_or(0) as f64);
        let (n_early, n_late) = (pick(0, &neurons), pick(1, &neurons));
        let (k_early, k_late) = (pick(0, &kinks), pick(1, &kinks));
        let frac = |k: usize| {
            median(&pick(k, &|o| {
                if_ok(o, o.summary.metrics.activation_fraction)
            }))
        };
        let dir = ctx.dir(self.id());
        let seed0: Vec<(String, &ReluOutcome)> = vec![
            ("decay at 2%".into(), &out[0]),
            ("decay at 50%".into(), &out[1]),
        ];
        let figures = vec![
            functions_figure(
                &dir,
                "functions_seed0",
                "Learned functions (seed 0)",
                &seed0,
            )?,
            along_figure(
                &dir,
                "train_loss_seed0",
                "Train loss (seed 0)",
                "train loss (0.5 sum of squares)",
                true,
                &seed0,
                |r: &ReluMetricsRow| r.train_loss,
            )?,
            along_figure(
                &dir,
                "active_neurons_seed0",
                "Distinct active neurons (seed 0)",
                "distinct active neurons",
                false,
                &seed0,
                |r: &ReluMetricsRow| r.active_neurons as f64,
            )?,
        ];
        let spec = self.claims();
        let f0 = |v: f64| format!("{v:.0}");
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "The 12-point problem, width 100, the initialization of SPEC §3 (NumPy RandomState(seed), seeds 0-4; the notebook used torch seed 3), SGD with batch 1 (drawn with replacement), {ONE_D_ITERS} updates as the notebook. The notebook's schedule (gamma = {ONE_D_GAMMA} for mean((f - y)^2), i.e. {} in samlab's convention): the step rises linearly to gamma (1 + (400 s - 1) s) at fraction s of training and is then divided by 2.5 (s = 2%) or 3 (s = 50%); samlab's linear warm-up starts from 0 instead of gamma. Distinct active neurons use the notebook's correlation threshold 0.999. Median fraction of non-zero activations: {:.1}% (decay at 2%) vs {:.1}% (at 50%).",
                2.0 * ONE_D_GAMMA,
                100.0 * frac(0),
                100.0 * frac(1)
            ),
            figures,
            table: relu_table(&names, &out),
            claims: vec![
                spec[0].judge(
                    format!("median {} (at 50%: {}) vs {} (at 2%: {})", median(&n_late), join(&n_late, f0), median(&n_early), join(&n_early, f0)),
                    median(&n_late) < median(&n_early),
                ),
                spec[1].judge(
                    format!("median {} (at 50%: {}) vs {} (at 2%: {})", median(&k_late), join(&k_late, f0), median(&k_early), join(&k_early, f0)),
                    median(&k_late) < median(&k_early),
                ),
            ],
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Teacher-student.

/// `int(10**4.15) + 1` updates, as the notebook.
const TS_ITERS: usize = 14_126;
/// The notebook's steps for mean((f - y)^2); ours are twice these.
const TS_SMALL: f64 = 0.13;
const TS_LARGE: f64 = 0.455;
const TS_DECAYS: [(f64, f64); 3] = [(0.1, 2.0), (0.3, 4.0), (0.5, 5.0)];
const TS_SEEDS: [u32; 5] = [0, 1, 2, 3, 4];

/// Linear warm-up of every teacher-student run (2% of training; not in the notebook, see the section text).
const TS_WARMUP: usize = 283;

/// A 20-neuron bias-free student on SPEC §9's teacher-student data, with the [`TS_WARMUP`] warm-up.
fn student(seed: u32, mut lr: LrSchedule) -> ReluRunConfig {
    lr.warmup = Warmup::Linear { steps: TS_WARMUP };
    ReluRunConfig {
        engine: Default::default(),
        data: ReluData::TeacherStudent(TeacherStudent::PAPER),
        width: 20,
        bias: false,
        init: ReluInit::Gaussian {
            w_scale: 0.5,
            a_scale: 0.0,
        },
        init_seed: seed,
        train: samlab_analytic::relu::ReluTrainConfig {
            lr,
            iters: TS_ITERS,
            batch_size: Some(1),
            seed,
            sam: SamConfig::erm(),
            loss: LossReduction::Mean,
            stop: None,
            log: Default::default(),
        },
        metrics: MetricSettings::default(),
    }
}

/// Teacher-student ReLU nets: feature sparsity after large-step phases of different lengths.
pub struct TeacherStudentSparsity;

/// The small-step schedule, then the decays, labelled.
fn ts_schedules() -> Vec<(String, LrSchedule)> {
    let mut schedules = vec![(
        "small steps".to_string(),
        LrSchedule::constant(2.0 * TS_SMALL),
    )];
    for (at, decay) in TS_DECAYS {
        schedules.push((
            format!("decay at {:.0}%", at * 100.0),
            decayed(2.0 * TS_LARGE, at, decay),
        ));
    }
    schedules
}

/// Per seed, every schedule: the labels and the named runs.
fn ts_configs() -> (Vec<String>, Vec<(String, ReluRunConfig)>) {
    let mut runs = vec![];
    let mut names = vec![];
    for seed in TS_SEEDS {
        for (label, lr) in &ts_schedules() {
            names.push(format!("{label}, seed {seed}"));
            runs.push((
                super::dir_name(&format!("{label}_seed{seed}")),
                student(seed, lr.clone()),
            ));
        }
    }
    (names, runs)
}

impl Experiment for TeacherStudentSparsity {
    fn id(&self) -> &'static str {
        "relu_teacher_student"
    }
    fn title(&self) -> &'static str {
        "Sparse features III: teacher-student ReLU nets, step decay at 10/30/50% vs small steps"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "relu.ts_longer_phase_sparser",
                claim: "The longer the large-step phase, the sparser the features: the median feature-sparsity coefficient (over 5 seeds) does not increase from small steps through decay at 10%, 30%, 50%, and decay at 50% is below small steps",
                paper: "feature sparsity falls with later decays (notebook figure, n=15, d=2, 3 teachers, 20 students)",
            },
            ClaimSpec {
                id: "relu.ts_longer_phase_lower_test",
                claim: "... and the lower the test loss: median test loss does not increase from small steps through decay at 10%, 30%, 50%, and decay at 50% is below small steps",
                paper: "test loss (mean of squares, twice samlab's) 6.1e-4 (small steps), 1.6e-4, 1.4e-4, 5.4e-5 (one seed)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.planned(self.id(), ts_configs().1)
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let schedules = ts_schedules();
        let (names, runs) = ts_configs();
        let out = ctx.relu_runs(self.id(), runs)?;
        let k = schedules.len();
        let per_schedule = |f: &dyn Fn(&ReluOutcome) -> f64| -> Vec<f64> {
            (0..k)
                .map(|s| median(&out.iter().skip(s).step_by(k).map(f).collect::<Vec<_>>()))
                .collect()
        };
        let sparsity = per_schedule(&|o| if_ok(o, o.summary.metrics.feature_sparsity));
        let tests = per_schedule(&ReluOutcome::test_loss);
        let dir = ctx.dir(self.id());
        let seed0: Vec<(String, &ReluOutcome)> = schedules
            .iter()
            .map(|s| s.0.clone())
            .zip(out.iter().take(k))
            .collect();
        let figures = vec![
            along_figure(
                &dir,
                "feature_sparsity_seed0",
                "Feature sparsity coefficient (seed 0)",
                "feature sparsity",
                false,
                &seed0,
                |r: &ReluMetricsRow| r.feature_sparsity,
            )?,
            along_figure(
                &dir,
                "test_loss_seed0",
                "Test loss (seed 0)",
                "test loss (0.5 mean of squares)",
                true,
                &seed0,
                |r: &ReluMetricsRow| r.test_loss,
            )?,
        ];
        let spec = self.claims();
        let labels: Vec<&str> = schedules.iter().map(|s| s.0.as_str()).collect();
        let pairs = |v: &[f64], f: &dyn Fn(f64) -> String| -> String {
            labels
                .iter()
                .zip(v)
                .map(|(l, &x)| format!("{l} {}", f(x)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "SPEC §9's teacher-student problem: 15 training and 1000 test inputs on the unit circle (d = 2), labels from 3 bias-free teacher neurons (unit-norm hidden weights, output weights +-1), drawn from NumPy RandomState(0) (the authors drew the teacher with torch, so the data differ). Student: 20 bias-free neurons, w ~ 0.5 N(0,1), a = 0 (the notebook's init), seeds 0-4; SGD with batch 1, {TS_ITERS} updates as the notebook, loss 0.5 * mean of squares. Small steps: gamma = {TS_SMALL}; large steps: gamma = {TS_LARGE} divided by 2, 4 or 5 after 10%, 30% or 50% of training (the notebook's gammas for mean((f - y)^2); samlab runs 2 gamma). Feature sparsity uses the notebook's correlation threshold 0.99. Deviation from the notebook: every run warms up linearly over its first {TS_WARMUP} updates (2%). Without it, gamma = {TS_LARGE} diverged within 15-41 updates on 4 of our 5 seeds (the notebook's gamma was chosen for the authors' own data and initialization draw; smaller large steps 0.3-0.43 still diverged on 1-3 seeds); a 100-update warm-up still lost one seed, {TS_WARMUP} and 1413 updates trained all five. The authors warm up in their other experiments (1D and deep nets). Outcome: every large-step schedule ends with sparser features than small steps (median coefficient {} vs {:.4}), but on our data draw neither the sparsity nor the test loss is ordered by the decay point, so the two claims about longer phases fail (the notebook's single-seed test losses are ordered).",
                join(&sparsity[1..], |v| format!("{v:.4}")),
                sparsity[0]
            ),
            figures,
            table: relu_table(&names, &out),
            claims: vec![
                spec[0].judge(format!("medians: {}", pairs(&sparsity, &|v| format!("{v:.4}"))), non_increasing(&sparsity) && sparsity[3] < sparsity[0]),
                spec[1].judge(format!("medians: {}", pairs(&tests, &fmt_loss)), non_increasing(&tests) && tests[3] < tests[0]),
            ],
        })
    }
}
