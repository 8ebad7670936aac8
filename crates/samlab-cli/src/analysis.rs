//! `samlab sharpness`, `samlab interpolate` and `samlab hessian`: the analysis tools of `samlab_deep::analysis`
//! on the checkpoints of deep-net run directories. The library writes their files (each report's `write`); this
//! module translates the flags and prints the results.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use samlab_core::spectral::DensityConfig;
use samlab_deep::analysis::hessian::{run_hessian, HessianConfig};
use samlab_deep::analysis::interpolate::{check_compatible, interpolate, InterpolationConfig};
use samlab_deep::analysis::sharpness::{run_sharpness, AscentTarget, Select, SharpnessConfig};
use samlab_deep::analysis::{BnEval, CheckpointKind, LoadedRun, Split, Written};

/// `--checkpoint`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CheckpointArg {
    /// checkpoint/last.ckpt (end of the last finished epoch).
    Last,
    /// checkpoint/best.ckpt (lowest validation error).
    Best,
}

impl From<CheckpointArg> for CheckpointKind {
    fn from(c: CheckpointArg) -> Self {
        match c {
            CheckpointArg::Last => CheckpointKind::Last,
            CheckpointArg::Best => CheckpointKind::Best,
        }
    }
}

/// `--split`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitArg {
    /// The run's training split (validation excluded) with its training labels.
    Train,
    /// The test set.
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Test => Split::Test,
        }
    }
}

/// `--bn`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BnEvalArg {
    /// Batch statistics of each chunk, running statistics untouched (BatchNorm as in the SAM passes).
    Batch,
    /// Running statistics (evaluation mode).
    Running,
}

impl From<BnEvalArg> for BnEval {
    fn from(b: BnEvalArg) -> Self {
        match b {
            BnEvalArg::Batch => BnEval::Batch,
            BnEvalArg::Running => BnEval::Running,
        }
    }
}

/// Flags of `samlab sharpness`.
#[derive(Debug, Args)]
pub struct SharpnessArgs {
    /// A run directory written by `samlab train`.
    pub run_dir: PathBuf,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value = "last")]
    pub checkpoint: CheckpointArg,
    /// Radius of the L2 ball over all parameters.
    #[arg(long, default_value_t = 0.1)]
    pub rho: f64,
    /// Ascent steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Ascent step size as a multiple of rho.
    #[arg(long, default_value_t = 0.1)]
    pub step_size_mult: f64,
    /// Restarts (more than one needs --random-init or --ascent-target random-wrong); --select says which is kept.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Start each restart from a random point on the rho-sphere (of the ellipsoid with --adaptive).
    #[arg(long)]
    pub random_init: bool,
    /// Labels of the ascent [default: random-wrong with --random-init, labels without: the authors' rule].
    #[arg(long, value_enum)]
    pub ascent_target: Option<AscentTargetArg>,
    /// Which restart is kept: the largest error at its last iterate (the authors') or the largest loss.
    #[arg(long, value_enum, default_value = "error")]
    pub select: SelectArg,
    /// Adaptive sharpness: the ellipsoid ||delta / |w||| <= rho, steps scaled by |w| (sharpness-vs-generalization).
    #[arg(long)]
    pub adaptive: bool,
    /// Step along the raw gradient instead of the normalized one (still projected onto the ball).
    #[arg(long)]
    pub no_normalize: bool,
    /// Chunk size m of m-sharpness (must divide --examples).
    #[arg(long, default_value_t = 128)]
    pub m: usize,
    /// The first N examples of the split, without augmentation.
    #[arg(long, default_value_t = 256)]
    pub examples: usize,
    /// Which examples.
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitArg,
    /// BatchNorm in every pass: running statistics (evaluation mode, as eval_sharpness.py) or each chunk's batch
    /// statistics (as in the SAM passes of training).
    #[arg(long, value_enum, default_value = "running")]
    pub bn: BnEvalArg,
    /// Also measure average-case sharpness: Gaussian noise with sigma = rho / sqrt(#params).
    #[arg(long)]
    pub average: bool,
    /// Gaussian draws per chunk of --average.
    #[arg(long, default_value_t = 10, requires = "average")]
    pub samples: usize,
    /// Seed of the random starts and Gaussian draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Backend of the analysis [default: the run's own device].
    #[arg(long)]
    pub device: Option<String>,
}

/// `--ascent-target`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AscentTargetArg {
    /// Ascend the loss on the examples' labels.
    Labels,
    /// Descend the loss on labels drawn among each example's wrong classes (eval_sharpness.py's random restarts).
    RandomWrong,
}

/// `--select`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SelectArg {
    /// The restart with the largest error (eval_sharpness.py), the first on ties.
    Error,
    /// The restart with the largest loss, the first on ties.
    Loss,
}

/// Flags of `samlab interpolate`.
#[derive(Debug, Args)]
pub struct InterpolateArgs {
    /// Run A (coefficient 0).
    pub run_a: PathBuf,
    /// Run B (coefficient 1).
    pub run_b: PathBuf,
    /// Output directory (interpolation.csv, interpolation.json, interpolation.svg/.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Which checkpoint of both runs.
    #[arg(long, value_enum, default_value = "last")]
    pub checkpoint: CheckpointArg,
    /// First coefficient.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub from: f64,
    /// Last coefficient.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub to: f64,
    /// Grid step.
    #[arg(long, default_value_t = 0.05)]
    pub step: f64,
    /// Training images of the BatchNorm re-estimation at every coefficient.
    #[arg(long, default_value_t = 5000)]
    pub bn_examples: usize,
    /// Training and test images the losses and errors are measured on.
    #[arg(long, default_value_t = 1024)]
    pub examples: usize,
    /// Backend of the analysis [default: the run's own device].
    #[arg(long)]
    pub device: Option<String>,
}

/// Flags of `samlab hessian`.
#[derive(Debug, Args)]
pub struct HessianArgs {
    /// A run directory written by `samlab train`.
    pub run_dir: PathBuf,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value = "last")]
    pub checkpoint: CheckpointArg,
    /// The first N examples of the split, without augmentation (on 256 the estimate varies several-fold
    /// between a network's seeds; on 1024 it is stable).
    #[arg(long, default_value_t = 1024)]
    pub examples: usize,
    /// Chunk size of the loss (must divide --examples).
    #[arg(long, default_value_t = 128)]
    pub m: usize,
    /// Which examples.
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitArg,
    /// BatchNorm in every pass of the Hessian (the feature sparsity is always in evaluation mode).
    #[arg(long, value_enum, default_value = "batch")]
    pub bn: BnEvalArg,
    /// How many of the largest eigenvalues (Lanczos), each reported with its residual.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Most Lanczos steps (one Hessian-vector product each).
    #[arg(long, alias = "max-iters", default_value_t = 100)]
    pub max_steps: usize,
    /// Residual ||Hx - theta x|| relative to the largest |eigenvalue| that counts as converged.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    /// Finite-difference step relative to max(||w||, 1) (f64 with the ReLU masks frozen: no kink is crossed).
    #[arg(long, default_value_t = 1e-6)]
    pub eps_rel: f64,
    /// Seed of the start vector (the probes use seed + 1).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also estimate the trace (Hutchinson, Rademacher probes) with its standard error.
    #[arg(long)]
    pub trace: bool,
    /// Probes of the trace estimate.
    #[arg(long, default_value_t = 20, requires = "trace")]
    pub probes: usize,
    /// Also estimate the eigenvalue density (stochastic Lanczos quadrature) and plot it to RUN_DIR/hessian_density.
    #[arg(long)]
    pub density: bool,
    /// Probes of the density.
    #[arg(long, default_value_t = 2, requires = "density")]
    pub density_probes: usize,
    /// Lanczos steps per density probe.
    #[arg(long, default_value_t = 30, requires = "density")]
    pub density_steps: usize,
    /// Points of the density's grid.
    #[arg(long, default_value_t = 400, requires = "density")]
    pub density_points: usize,
    /// Width of the density's Gaussian kernel relative to the spectrum's width.
    #[arg(long, default_value_t = 0.01, requires = "density")]
    pub sigma_rel: f64,
    /// Backend of the analysis [default: the run's own device].
    #[arg(long)]
    pub device: Option<String>,
}

/// A setting's name as written in the JSON output.
fn lower(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `samlab sharpness`: writes RUN_DIR/sharpness.json and prints a table.
pub fn sharpness(args: &SharpnessArgs) -> Result<()> {
    let cfg = SharpnessConfig {
        rho: args.rho,
        steps: args.steps,
        step_size_mult: args.step_size_mult,
        restarts: args.restarts,
        random_init: args.random_init,
        target: match args.ascent_target {
            None => AscentTarget::authors(args.random_init),
            Some(AscentTargetArg::Labels) => AscentTarget::Labels,
            Some(AscentTargetArg::RandomWrong) => AscentTarget::RandomWrong,
        },
        select: match args.select {
            SelectArg::Error => Select::Error,
            SelectArg::Loss => Select::Loss,
        },
        adaptive: args.adaptive,
        normalize: !args.no_normalize,
        m: args.m,
        examples: args.examples,
        split: args.split.into(),
        bn: args.bn.into(),
        average_samples: args.average.then_some(args.samples),
        seed: args.seed,
    };
    let run = LoadedRun::load_on(
        &args.run_dir,
        args.checkpoint.into(),
        args.device.as_deref(),
    )?;
    let report = run_sharpness(&run, &cfg)?;
    let path = report.write(&args.run_dir)?;
    let r = &report.result;
    say!(
        "sharpness of {} ({}), {} {} examples in chunks of {}, BatchNorm {}, {:.1} s",
        args.run_dir.display(),
        run.info.checkpoint.file_name(),
        cfg.examples,
        lower(cfg.split),
        cfg.m,
        lower(cfg.bn),
        report.seconds
    );
    say!(
        "{:<14} {:>10} {:>9} {:>16} {:>10}",
        "",
        "loss",
        "error",
        "loss increase",
        "error +"
    );
    say!("{:<14} {:>10.4} {:>9}", "original", r.loss, pct(r.error));
    // A perturbed row: the loss and error there, their increases, and how the perturbation was found.
    let row = |label: &str, loss_increase: f64, error_increase: f64, how: String| {
        say!(
            "{label:<14} {:>10.4} {:>9} {loss_increase:>16.4} {:>10}   {how}",
            r.loss + loss_increase,
            pct(r.error + error_increase),
            pct(error_increase),
        );
    };
    row(
        "worst case",
        r.loss_increase,
        r.error_increase,
        format!(
            "{}rho {}, {} steps of {} rho, {} restart(s) (kept: largest {}), ascent on {}",
            if cfg.adaptive { "adaptive, " } else { "" },
            cfg.rho,
            cfg.steps,
            cfg.step_size_mult,
            cfg.restarts,
            lower(cfg.select),
            match cfg.target {
                AscentTarget::Labels => "the labels",
                AscentTarget::RandomWrong => "random wrong labels",
            }
        ),
    );
    if let Some(a) = &r.average {
        row(
            "average case",
            a.loss_increase,
            a.error_increase,
            format!("sigma {:.3e}, {} draws per chunk", a.sigma, a.samples),
        );
    }
    say!("-> {}", path.display());
    Ok(())
}

/// `samlab interpolate`: writes OUT/interpolation.{csv,json,svg,png} and prints the summary.
pub fn interpolation(args: &InterpolateArgs) -> Result<()> {
    let cfg = InterpolationConfig {
        from: args.from,
        to: args.to,
        step: args.step,
        bn_examples: args.bn_examples,
        examples: args.examples,
    };
    let a = LoadedRun::load_on(&args.run_a, args.checkpoint.into(), args.device.as_deref())?;
    let b = LoadedRun::load_on(&args.run_b, args.checkpoint.into(), args.device.as_deref())?;
    check_compatible(&a, &b)?;
    let result = interpolate(&a, &b, &cfg)?;
    warn_figure(&result.write(&args.out)?);
    let s = &result.summary;
    say!(
        "{} points in {:.1} s{}",
        result.points.len(),
        result.seconds,
        if result.bn_reestimated {
            ", BatchNorm re-estimated at each"
        } else {
            ""
        }
    );
    for (name, q) in [("a = 0 (A)", &s.at_0), ("a = 1 (B)", &s.at_1)] {
        say!(
            "{name}: train loss {:.4} err {}  test loss {:.4} err {}",
            q.train_loss,
            pct(q.train_error),
            q.test_loss,
            pct(q.test_error)
        );
    }
    say!(
        "min test error {} at a = {}; max train loss on [0, 1] {:.4} at a = {} (barrier {:.4})",
        pct(s.min_test_error),
        s.min_test_error_alpha,
        s.max_train_loss_01,
        s.max_train_loss_01_alpha,
        s.train_loss_barrier
    );
    say!("-> {}", args.out.display());
    Ok(())
}

/// `samlab hessian`: writes RUN_DIR/hessian.json and prints the eigenvalue and the feature sparsity.
pub fn hessian(args: &HessianArgs) -> Result<()> {
    let cfg = HessianConfig {
        examples: args.examples,
        m: args.m,
        split: args.split.into(),
        bn: args.bn.into(),
        top_k: args.top_k,
        max_steps: args.max_steps,
        tol: args.tol,
        eps_rel: args.eps_rel,
        seed: args.seed,
        trace_probes: args.trace.then_some(args.probes),
        density: args.density.then(|| DensityConfig {
            probes: args.density_probes,
            steps: args.density_steps,
            points: args.density_points,
            sigma_rel: args.sigma_rel,
            seed: args.seed.wrapping_add(2),
        }),
    };
    cfg.check()?;
    let run = LoadedRun::load_on(
        &args.run_dir,
        args.checkpoint.into(),
        args.device.as_deref(),
    )?;
    let report = run_hessian(&run, &cfg)?;
    let written = report.write(&args.run_dir)?;
    let c = &report.curvature;
    let status = if c.converged {
        "converged"
    } else {
        "NOT converged: raise --max-steps"
    };
    say!(
        "Lanczos: {} steps, {} Hessian-vector products ({status}); loss {:.4}, |grad| {:.3e}, eps {:.2e}",
        c.lanczos_steps, c.products, c.loss, c.grad_norm, c.eps
    );
    for (i, p) in c.top_eigenvalues.iter().enumerate() {
        say!(
            "eigenvalue {:>2}: {:>12.5e}  (residual {:.1e})",
            i + 1,
            p.value,
            p.residual
        );
    }
    say!(
        "smallest     : {:>12.5e}  (residual {:.1e}{})",
        c.bottom_eigenvalue.value,
        c.bottom_eigenvalue.residual,
        if c.bottom_converged {
            ""
        } else {
            ", not converged"
        }
    );
    if let Some(t) = &c.trace {
        say!(
            "trace {:.5e} +- {:.1e} (standard error, {} probes)",
            t.estimate,
            t.std_error,
            t.probes
        );
    }
    warn_figure(&written);
    let f = &report.feature_sparsity;
    say!(
        "feature sparsity {:.4} ({} of {} features distinct and active, activation fraction {:.4})",
        f.sparsity,
        f.distinct,
        report.feature_neurons,
        f.activation_fraction
    );
    say!("-> {}", written.files[0].display());
    Ok(())
}

/// Warns of a figure the analysis could not draw (its numbers are written).
fn warn_figure(written: &Written) {
    if let Some(e) = &written.figure_error {
        warn!("warning: no figure: {e}");
    }
}
