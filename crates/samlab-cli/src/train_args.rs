//! Command-line flags the engines' `train` commands share, flattened into each command's arguments: the SAM flags
//! of every `train` command ([`AscentArgs`]: `--rho`, `--m`, `--ascent-steps`, ...), the analytic engines' SAM
//! family ([`SamArgs`]: `--method`, `--normalize`, ...) and their learning-rate schedule ([`LrArgs`]).

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use samlab_core::sam::{
    ActiveWindow, AscentSource, Grouping, Normalization, Perturbation, RhoSchedule, SamConfig,
};
use samlab_core::schedule::{LrSchedule, LrShape, Warmup};

use crate::variant_args::VariantArgs;
use crate::UsageError;

/// The SAM flags of every `train` command. Each is optional (`samlab train` lays the given ones over its config
/// file), and a flag that is not given keeps the [`SamConfig`] it is applied to as it is.
#[derive(Debug, Args)]
pub struct AscentArgs {
    /// Group size of m-SAM: each group of m consecutive examples gets its own perturbation; must divide the batch
    /// size [default: the whole batch].
    #[arg(long)]
    pub m: Option<usize>,
    /// Perturbation radius (0: ERM). The ascent is on the same per-example loss as the descent.
    #[arg(long)]
    pub rho: Option<f64>,
    /// Ascent steps of the inner maximisation [default: 1].
    #[arg(long)]
    pub ascent_steps: Option<usize>,
    /// Ascent step size as a multiple of rho [default: 1].
    #[arg(long)]
    pub ascent_step_mult: Option<f64>,
    /// Start the ascent from a random point on the rho-sphere.
    #[arg(long)]
    pub random_init: bool,
    /// Random Gaussian weight perturbations (sigma = rho / sqrt(#params)) instead of the SAM ascent.
    #[arg(long)]
    pub random_perturbation: bool,
    /// Compute the perturbation on the previous mini-batch (the deep-net n-SAM proxy).
    #[arg(long)]
    pub previous_batch: bool,
    /// rho = FACTOR * lr (instead of a constant rho; exclusive with --rho).
    #[arg(long, conflicts_with = "rho")]
    pub rho_lr_factor: Option<f64>,
    /// SAM is active from this fraction of training on (ERM -> SAM) [default: 0].
    #[arg(long)]
    pub sam_start: Option<f64>,
    /// SAM is active until this fraction of training (SAM -> ERM) [default: 1].
    #[arg(long)]
    pub sam_end: Option<f64>,
    /// The SAM variant.
    #[command(flatten)]
    pub variant: VariantArgs,
}

impl AscentArgs {
    /// Lays the given flags over `sam`.
    pub fn apply(&self, sam: &mut SamConfig) -> Result<()> {
        if let Some(v) = self.variant.variant()? {
            sam.variant = v;
        }
        if let Some(m) = self.m {
            sam.grouping = Grouping::Size(m);
        }
        // A radius given by flag replaces the config's, constant or tied to the learning rate (config.toml then
        // records the one that runs).
        if let Some(rho) = self.rho {
            sam.rho = rho;
            sam.rho_schedule = RhoSchedule::Constant;
        }
        if let Some(k) = self.ascent_steps {
            sam.ascent_steps = k;
        }
        if let Some(x) = self.ascent_step_mult {
            sam.ascent_step_mult = x;
        }
        if self.random_init {
            sam.random_init = true;
        }
        if self.random_perturbation {
            sam.perturbation = Perturbation::Random;
        }
        if self.previous_batch {
            sam.ascent_source = AscentSource::PreviousBatch;
        }
        if let Some(factor) = self.rho_lr_factor {
            sam.rho = 0.0;
            sam.rho_schedule = RhoSchedule::ProportionalToLr { factor };
        }
        sam.window = ActiveWindow {
            start: self.sam_start.unwrap_or(sam.window.start),
            end: self.sam_end.unwrap_or(sam.window.end),
        };
        Ok(())
    }
}

/// The algorithm families of `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Full-batch gradient descent.
    Gd,
    /// Stochastic gradient descent with --batch-size (default 1).
    Sgd,
    /// n-SAM: one perturbation for the whole batch.
    Nsam,
    /// m-SAM: one perturbation per group of --m examples.
    Msam,
    /// 1-SAM: one perturbation per example.
    #[value(name = "1sam")]
    OneSam,
}

impl Method {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Gd => "gd",
            Method::Sgd => "sgd",
            Method::Nsam => "nsam",
            Method::Msam => "msam",
            Method::OneSam => "1sam",
        }
    }
}

/// The SAM family of the analytic engines (`samlab diag train`, `samlab relu train`).
#[derive(Debug, Args)]
pub struct SamArgs {
    /// Algorithm.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Mini-batch size (SGD; default full batch for the other methods, 1 for sgd).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Normalized SAM: rho * g / ||g|| (default: unnormalized rho * g, the theory's USAM).
    #[arg(long)]
    pub normalize: bool,
    /// Clipped SAM: rho * g projected onto the rho-ball (the deep-net code's "unnormalized" option).
    #[arg(long, conflicts_with = "normalize")]
    pub clip: bool,
    #[command(flatten)]
    pub ascent: AscentArgs,
}

impl SamArgs {
    /// The SAM config and the mini-batch size (`None`: full batch), rejecting combinations that make no sense.
    pub fn resolve(&self) -> Result<(SamConfig, Option<usize>)> {
        let a = &self.ascent;
        let grouping = match (self.method, a.m) {
            (Method::Msam, Some(m)) => Grouping::Size(m),
            (Method::Msam, None) => bail!(UsageError("--method msam needs --m".into())),
            (_, Some(_)) => bail!(UsageError("--m is only for --method msam".into())),
            (Method::OneSam, None) => Grouping::Size(1),
            (_, None) => Grouping::WholeBatch,
        };
        let sam_method = !matches!(self.method, Method::Gd | Method::Sgd);
        match (sam_method, a.rho.is_some() || a.rho_lr_factor.is_some()) {
            (true, false) => bail!(UsageError(
                "SAM methods need --rho (or --rho-lr-factor)".into()
            )),
            (false, true) => bail!(UsageError(
                "--rho and --rho-lr-factor are only for the SAM methods (nsam, msam, 1sam)".into()
            )),
            _ => {}
        }
        let batch_size = match self.method {
            Method::Sgd => Some(self.batch_size.unwrap_or(1)),
            Method::Gd if self.batch_size.is_some() => {
                bail!(UsageError(
                    "--method gd is full batch: use --method sgd".into()
                ))
            }
            _ => self.batch_size,
        };
        if !sam_method {
            let flag = [
                (self.normalize, "--normalize"),
                (self.clip, "--clip"),
                (a.random_init, "--random-init"),
                (a.random_perturbation, "--random-perturbation"),
                (a.previous_batch, "--previous-batch"),
                (a.ascent_steps.is_some(), "--ascent-steps"),
                (a.ascent_step_mult.is_some(), "--ascent-step-mult"),
                (a.sam_start.is_some(), "--sam-start"),
                (a.sam_end.is_some(), "--sam-end"),
                (a.variant.variant.is_some(), "--variant"),
            ]
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag));
            if let Some(flag) = flag {
                bail!(UsageError(format!(
                    "{flag} shapes the SAM ascent, and --method {} has none (it would be ignored): use a SAM method (nsam, msam, 1sam) or leave {flag} out",
                    self.method.name()
                )));
            }
        }
        let normalization = match (self.normalize, self.clip) {
            (true, _) => Normalization::Normalized,
            (_, true) => Normalization::Clipped,
            _ => Normalization::Unnormalized,
        };
        let mut sam = SamConfig {
            grouping,
            normalization,
            ..SamConfig::default()
        };
        a.apply(&mut sam)?;
        Ok((sam, batch_size))
    }
}

/// Shapes of `--lr-schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShapeArg {
    /// The same rate throughout.
    Constant,
    /// lr * (1 - t/T).
    LinearDecay,
    /// Multiplied by each --decay-factor from its --decay-at fraction of training on.
    Step,
    /// lr * (0.5 + 0.5 cos(pi t/T)).
    Cosine,
    /// Linear up to lr at 40% of training, then down to 0.
    Cyclic,
}

/// The learning-rate flags.
#[derive(Debug, Args)]
pub struct LrArgs {
    /// Step size (the peak rate of a schedule).
    #[arg(long)]
    pub lr: f64,
    /// Shape of the learning rate over training.
    #[arg(long, value_enum, default_value = "constant")]
    pub lr_schedule: ShapeArg,
    /// Fractions of training where the step schedule drops, e.g. 0.5,0.75.
    #[arg(long, value_delimiter = ',')]
    pub decay_at: Vec<f64>,
    /// Factor applied at each drop (cumulative), e.g. 0.1,0.1.
    #[arg(long, value_delimiter = ',')]
    pub decay_factor: Vec<f64>,
    /// Linear warm-up from 0 to lr over this many updates.
    #[arg(long, conflicts_with = "warmup_exp")]
    pub warmup_steps: Option<usize>,
    /// Exponential warm-up START,RATE: min(1, START * RATE^t) times lr.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub warmup_exp: Vec<f64>,
}

impl LrArgs {
    /// The checked schedule.
    pub fn resolve(&self) -> Result<LrSchedule> {
        let step_flags = !self.decay_at.is_empty() || !self.decay_factor.is_empty();
        if step_flags && self.lr_schedule != ShapeArg::Step {
            bail!(UsageError(
                "--decay-at and --decay-factor need --lr-schedule step".into()
            ));
        }
        let shape = match self.lr_schedule {
            ShapeArg::Constant => LrShape::Constant,
            ShapeArg::LinearDecay => LrShape::LinearDecay,
            ShapeArg::Step => LrShape::Step {
                at: self.decay_at.clone(),
                factors: self.decay_factor.clone(),
            },
            ShapeArg::Cosine => LrShape::Cosine,
            ShapeArg::Cyclic => LrShape::Cyclic,
        };
        let warmup = match (self.warmup_steps, self.warmup_exp.as_slice()) {
            (Some(steps), _) => Warmup::Linear { steps },
            (None, []) => Warmup::None,
            (None, &[start, rate]) => Warmup::Exponential { start, rate },
            (None, _) => bail!(UsageError("--warmup-exp takes START,RATE".into())),
        };
        let schedule = LrSchedule {
            base: self.lr,
            shape,
            warmup,
        };
        schedule.check()?;
        Ok(schedule)
    }
}
