//! `samlab train`: one deep-net run (samlab-deep on burn), from flags and/or a config file, into a run directory
//! with checkpoints; `--resume` continues a killed run, `--init-from` fine-tunes another run's weights.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use samlab_core::run::RunStatus;
use samlab_core::sam::Normalization;
use samlab_core::schedule::LrShape;
use samlab_deep::data::{Augment, DatasetKind, LabelNoise, NoiseKind};
use samlab_deep::models::Arch;
use samlab_deep::nn::NormKind;
use samlab_deep::optim::Optimizer;
use samlab_deep::run::{self, DeepRunConfig, RunOutcome};
use samlab_deep::trainer::{BnPolicy, Precision, WeightDecay};
use samlab_deep::transformer::Pool;

use crate::progress::RunBar;
use crate::train_args::AscentArgs;
use crate::UsageError;

/// Normalization layers of `--norm`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormArg {
    /// No normalization layers (MLP, CNN).
    None,
    /// BatchNorm.
    Batch,
    /// GroupNorm.
    Group,
    /// LayerNorm (ViT, Mixer).
    Layer,
}

impl From<NormArg> for NormKind {
    fn from(n: NormArg) -> Self {
        match n {
            NormArg::None => NormKind::None,
            NormArg::Batch => NormKind::Batch,
            NormArg::Group => NormKind::Group,
            NormArg::Layer => NormKind::Layer,
        }
    }
}

/// Scaling of the ascent (`--normalization`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormalizationArg {
    /// rho * g / ||g|| (Foret et al.; the deep-net code's default).
    Normalized,
    /// rho * g, no projection (the theory's USAM).
    Unnormalized,
    /// rho * g projected onto the rho-ball (the deep-net code's "unnormalized").
    Clipped,
}

/// Learning-rate shapes of `--lr-schedule`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LrKind {
    /// x`--lr-drop-factor` at each fraction of `--lr-drops` (default 0.5,0.75: the paper's schedule).
    Piecewise,
    /// 0.5 + 0.5 cos(pi t / T).
    Cosine,
    /// Constant.
    Constant,
    /// Linear 0 -> lr at 40% -> 0.
    Cyclic,
}

/// The base optimizer (`--optimizer`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum.
    Sgd,
    /// AdamW (PyTorch's defaults unless --beta1, --beta2, --eps).
    Adamw,
}

/// A ViT's pooling (`--pool`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolArg {
    /// The class token.
    Cls,
    /// The mean over the tokens.
    Mean,
}

/// BatchNorm in the SAM passes (`--bn-policy`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BnArg {
    /// Batch statistics in every pass, running statistics updated by every pass (the authors' code).
    Both,
    /// Batch statistics in every pass, running statistics updated once, at the unperturbed weights.
    Clean,
    /// Running statistics everywhere, never updated (the code's --freeze_bn_stats).
    Frozen,
}

/// Label-noise kinds of `--noise-type`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NoiseArg {
    /// Uniform over the wrong classes.
    Sym,
    /// Fixed class map (CIFAR-10: the authors' map; others y -> y+1).
    Asym,
}

/// Augmentations of `--augment`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AugmentArg {
    /// None.
    None,
    /// Random crop from the zero-padded image (`--pad`).
    Crop,
    /// Random crop and horizontal flip.
    CropFlip,
}

/// Precision of the training passes (`--precision`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    /// f32 everywhere.
    F32,
    /// Mixed precision: bfloat16 convolutions and matrix products; weights, gradients, norms and BatchNorm in f32.
    Bf16,
    /// Mixed precision in IEEE half precision, with a static loss scale of 1024.
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

/// Flags of `samlab train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A TOML run config (a run's config.toml, or any part of one); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// mlp, cnn, preact_resnet18, preact_resnet34, resnet34, wrn28, vit, mixer (also resnet18, resnet18_gn,
    /// resnet34_gn).
    #[arg(long, required_unless_present_any = ["config", "resume"])]
    pub model: Option<String>,
    /// Width: base channels (ResNets, CNN), widen factor (WRN) or hidden units (MLP).
    #[arg(long)]
    pub width: Option<usize>,
    /// Normalization layers [default: batch; none for the MLP; layer for ViT and Mixer].
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
    /// ViT/Mixer: residual blocks [default: 4].
    #[arg(long)]
    pub depth: Option<usize>,
    /// ViT/Mixer: patch side; must divide the image's sides [default: 4].
    #[arg(long)]
    pub patch: Option<usize>,
    /// ViT: attention heads; must divide the width [default: 4].
    #[arg(long)]
    pub heads: Option<usize>,
    /// ViT/Mixer: MLP hidden features per feature [default: 2].
    #[arg(long)]
    pub mlp_ratio: Option<usize>,
    /// ViT: pooling [default: cls; the Mixer takes mean].
    #[arg(long, value_enum)]
    pub pool: Option<PoolArg>,
    /// cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long, required_unless_present_any = ["config", "resume"])]
    pub dataset: Option<String>,
    /// Directory with the data set's files [default for fashion-mnist: the shipped 10k/2k subset].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Epochs (`samlab train` needs it unless --config or --resume is given).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (`samlab train` needs it unless --config or --resume is given).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// SAM (rho 0, the default, is ERM; m defaults to the whole batch).
    #[command(flatten)]
    pub sam: AscentArgs,
    /// Ascent scaling [default: normalized].
    #[arg(long, value_enum)]
    pub normalization: Option<NormalizationArg>,
    /// Peak learning rate [default: 0.1].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule [default: piecewise].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrKind>,
    /// Fractions of training where the piecewise schedule drops [default: 0.5,0.75].
    #[arg(long, value_delimiter = ',')]
    pub lr_drops: Option<Vec<f64>>,
    /// Factor of each piecewise drop [default: 0.1].
    #[arg(long)]
    pub lr_drop_factor: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Base optimizer [default: sgd].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// AdamW's beta1 [default: 0.9].
    #[arg(long)]
    pub beta1: Option<f64>,
    /// AdamW's beta2 [default: 0.999].
    #[arg(long)]
    pub beta2: Option<f64>,
    /// AdamW's epsilon [default: 1e-8].
    #[arg(long)]
    pub eps: Option<f64>,
    /// L2 in the objective, 0.5 * lambda * ||w||^2, also in the ascent [default: 5e-4].
    #[arg(long, conflicts_with = "decoupled_wd")]
    pub l2: Option<f64>,
    /// Decoupled weight decay lambda instead of L2 in the objective.
    #[arg(long)]
    pub decoupled_wd: Option<f64>,
    /// BatchNorm in the SAM passes [default: both].
    #[arg(long, value_enum)]
    pub bn_policy: Option<BnArg>,
    /// Fraction of training (and validation) labels to corrupt.
    #[arg(long)]
    pub label_noise: Option<f64>,
    /// Kind of label noise [default: sym].
    #[arg(long, value_enum)]
    pub noise_type: Option<NoiseArg>,
    /// Augmentation [default: crop-flip with pad 4 for CIFAR, none for the MNIST family].
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    /// Zero padding of the crop [default: 4 for CIFAR, 2 otherwise].
    #[arg(long)]
    pub pad: Option<usize>,
    /// Fraction of the training set held out for validation [default: 0.1].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Use only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Batch size of evaluation passes [default: 500].
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Training examples (and at most as many noisy-label ones) of the per-epoch eval-mode training metrics;
    /// 0 disables them [default: 1024].
    #[arg(long)]
    pub eval_train_examples: Option<usize>,
    /// Stop after N updates (the schedules then span N updates).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Log the Hessian's top eigenvalue and trace into metrics.csv every N epochs (and after the last); 0: never
    /// [default: 0].
    #[arg(long)]
    pub curvature_every: Option<usize>,
    /// Fixed examples of the curvature log: the first N of the training split, as `samlab hessian --examples N`
    /// measures them (chunks of 128 when 128 divides N; its other settings are `samlab hessian`'s defaults), so the
    /// last logged value is `samlab hessian --examples N`'s on the last checkpoint [default: 512].
    #[arg(long)]
    pub curvature_examples: Option<usize>,
    /// Rademacher probes of the logged trace; 0: no trace [default: 10].
    #[arg(long)]
    pub curvature_probes: Option<usize>,
    /// Seed of everything random [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from the last weights of this run directory (fine-tuning; fresh momentum).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with the options of its config.toml (no option but
    /// --device may be given with it).
    #[arg(long)]
    pub resume: bool,
    /// Backend: flex (CPU) [default], or wgpu / vulkan / cuda / tch when compiled in. With --resume: the device
    /// the run continues on (checkpoints do not depend on it).
    #[arg(long)]
    pub device: Option<String>,
    /// Precision of the training passes [default: f32]; evaluation and the analysis tools stay in f32.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Output run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it already holds a run.
    #[arg(long)]
    pub force: bool,
}

/// Lays `over` on `base`, table by table.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_table() && v.is_table() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(UsageError(msg.into()))
}

impl TrainArgs {
    /// Applies --depth, --patch, --heads, --mlp-ratio and --pool (ViT and Mixer only) to `c`'s model.
    fn transformer_flags(&self, c: &mut DeepRunConfig) -> Result<()> {
        let given = self.depth.is_some()
            || self.patch.is_some()
            || self.heads.is_some()
            || self.mlp_ratio.is_some()
            || self.pool.is_some();
        if !given {
            return Ok(());
        }
        let Some(default) = c.model.arch.default_transformer() else {
            return Err(usage(format!(
                "--depth, --patch, --heads, --mlp-ratio and --pool apply to vit and mixer, not {}",
                c.model.arch.name()
            )));
        };
        let t = c.model.transformer.get_or_insert(default);
        t.depth = self.depth.unwrap_or(t.depth);
        t.patch = self.patch.unwrap_or(t.patch);
        t.heads = self.heads.unwrap_or(t.heads);
        t.mlp_ratio = self.mlp_ratio.unwrap_or(t.mlp_ratio);
        if let Some(p) = self.pool {
            t.pool = match p {
                PoolArg::Cls => Pool::Cls,
                PoolArg::Mean => Pool::Mean,
            };
        }
        Ok(())
    }

    /// Resolves file and flags into a run config.
    pub fn to_config(&self) -> Result<DeepRunConfig> {
        let mut c = samlab_deep::run::defaults();
        if let Some(path) = &self.config {
            let text = crate::read_config(path)?;
            let value: toml::Value = toml::from_str(&text)
                .map_err(|e| usage(format!("{} is not TOML: {e}", path.display())))?;
            let mut base = toml::Value::try_from(&c).expect("defaults serialize");
            merge(&mut base, value);
            c = base.try_into().map_err(|e| {
                usage(format!(
                    "{} is not a deep-net run config: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(name) = &self.model {
            let (arch, norm) = Arch::parse(name)?;
            c.model.arch = arch;
            if norm.is_some() {
                c.model.norm = norm;
            }
        }
        if let Some(w) = self.width {
            c.model.width = Some(w);
        }
        if let Some(n) = self.norm {
            c.model.norm = Some(NormKind::from(n));
        }
        c.model.width.get_or_insert(c.model.arch.default_width());
        c.model.norm.get_or_insert(c.model.arch.default_norm());
        self.transformer_flags(&mut c)?;
        if let Some(d) = &self.dataset {
            c.data.dataset = DatasetKind::parse(d)?;
        }
        if let Some(dir) = &self.data_dir {
            c.data.dir = Some(dir.clone());
        }
        if let Some(f) = self.val_fraction {
            c.data.val_fraction = f;
        }
        if let Some(n) = self.train_limit {
            c.data.train_limit = Some(n);
        }
        let cifar = matches!(c.data.dataset, DatasetKind::Cifar10 | DatasetKind::Cifar100);
        let pad = self.pad.unwrap_or(if cifar { 4 } else { 2 });
        if let Some(a) = self.augment {
            c.data.augment = Some(match a {
                AugmentArg::None => Augment::None,
                AugmentArg::Crop => Augment::Crop { pad },
                AugmentArg::CropFlip => Augment::CropFlip { pad },
            });
        } else if self.pad.is_some() {
            return Err(usage("--pad needs --augment crop or crop-flip"));
        }
        c.data
            .augment
            .get_or_insert(c.data.dataset.default_augment());
        if self.label_noise.is_some() || self.noise_type.is_some() {
            let fraction = self
                .label_noise
                .or(c.data.label_noise.map(|n| n.fraction))
                .ok_or_else(|| usage("--noise-type needs --label-noise"))?;
            let kind = match self.noise_type {
                Some(NoiseArg::Asym) => NoiseKind::Asymmetric,
                Some(NoiseArg::Sym) => NoiseKind::Symmetric,
                None => c.data.label_noise.map_or(NoiseKind::Symmetric, |n| n.kind),
            };
            c.data.label_noise = Some(LabelNoise { fraction, kind });
        }
        let t = &mut c.train;
        if let Some(e) = self.epochs {
            t.epochs = e;
        }
        if let Some(b) = self.batch_size {
            t.batch_size = b;
        }
        if let Some(n) = self.max_steps {
            t.max_steps = Some(n);
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        if let Some(n) = self.eval_batch_size {
            t.eval_batch_size = n;
        }
        if let Some(n) = self.eval_train_examples {
            t.eval_train_examples = n;
        }
        if let Some(d) = &self.device {
            t.device = d.clone();
        }
        if let Some(p) = self.precision {
            t.precision = p.into();
        }
        if let Some(n) = self.curvature_every {
            t.curvature_every = n;
        }
        if let Some(n) = self.curvature_examples {
            t.curvature_examples = n;
        }
        if let Some(n) = self.curvature_probes {
            t.curvature_probes = n;
        }
        if let Some(lr) = self.lr {
            t.lr.base = lr;
        }
        if (self.lr_drops.is_some() || self.lr_drop_factor.is_some())
            && matches!(self.lr_schedule, Some(k) if !matches!(k, LrKind::Piecewise))
        {
            return Err(usage(
                "--lr-drops and --lr-drop-factor are for --lr-schedule piecewise",
            ));
        }
        let drops = self.lr_drops.clone().unwrap_or_else(|| vec![0.5, 0.75]);
        let factor = self.lr_drop_factor.unwrap_or(0.1);
        match self.lr_schedule {
            Some(LrKind::Piecewise) => {
                t.lr.shape = LrShape::Step {
                    factors: vec![factor; drops.len()],
                    at: drops,
                };
            }
            Some(LrKind::Cosine) => t.lr.shape = LrShape::Cosine,
            Some(LrKind::Constant) => t.lr.shape = LrShape::Constant,
            Some(LrKind::Cyclic) => t.lr.shape = LrShape::Cyclic,
            None if self.lr_drops.is_some() || self.lr_drop_factor.is_some() => {
                t.lr.shape = LrShape::Step {
                    factors: vec![factor; drops.len()],
                    at: drops,
                };
            }
            None => {}
        }
        if let Some(mu) = self.momentum {
            t.optim.momentum = mu;
        }
        if let Some(l) = self.l2 {
            t.optim.weight_decay = WeightDecay::L2 { lambda: l };
        }
        if let Some(l) = self.decoupled_wd {
            t.optim.weight_decay = WeightDecay::Decoupled { lambda: l };
        }
        if let Some(o) = self.optimizer {
            t.optim.optimizer = match o {
                OptimizerArg::Sgd => Optimizer::Sgd,
                OptimizerArg::Adamw => Optimizer::ADAMW,
            };
        }
        if self.beta1.is_some() || self.beta2.is_some() || self.eps.is_some() {
            let Optimizer::Adamw { beta1, beta2, eps } = &mut t.optim.optimizer else {
                return Err(usage(
                    "--beta1, --beta2 and --eps apply to --optimizer adamw",
                ));
            };
            *beta1 = self.beta1.unwrap_or(*beta1);
            *beta2 = self.beta2.unwrap_or(*beta2);
            *eps = self.eps.unwrap_or(*eps);
        }
        if let Some(b) = self.bn_policy {
            t.optim.bn_policy = match b {
                BnArg::Both => BnPolicy::BothPasses,
                BnArg::Clean => BnPolicy::CleanPassOnly,
                BnArg::Frozen => BnPolicy::Frozen,
            };
        }
        self.sam.apply(&mut c.sam)?;
        if let Some(n) = self.normalization {
            c.sam.normalization = match n {
                NormalizationArg::Normalized => Normalization::Normalized,
                NormalizationArg::Unnormalized => Normalization::Unnormalized,
                NormalizationArg::Clipped => Normalization::Clipped,
            };
        }
        if let Some(dir) = &self.init_from {
            c.init_from = Some(samlab_core::run_dir::init_from_record(&self.out, dir)?);
        }
        Ok(c)
    }
}

/// Flags of `samlab import-torch`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The state_dict, saved with `safetensors.torch.save_file` (strip a DataParallel `module.` prefix first).
    pub file: PathBuf,
    /// The model and data (`--model`, `--width`, `--norm`, `--dataset`, `--data-dir`, `--val-fraction`,
    /// `--train-limit`, `--seed`: the analysis tools take their examples from this split) and `--out`, as for
    /// `samlab train` (or `--config` of a run); training flags (`--epochs`, `--batch-size`, ...) are optional and
    /// only recorded in config.toml.
    #[command(flatten)]
    pub run: TrainArgs,
}

/// Writes the run directory of `samlab import-torch` and says where it is.
pub fn import_torch(args: &ImportArgs) -> Result<()> {
    if args.run.resume || args.run.init_from.is_some() {
        bail!(UsageError(
            "import-torch takes neither --resume nor --init-from".into()
        ));
    }
    let config = args.run.to_config()?;
    let out = run::import_state_dict(&config, &args.file, &args.run.out, args.run.force)?;
    say!(
        "imported {} as a {} run -> {}",
        args.file.display(),
        config.model.arch.name(),
        out.display()
    );
    Ok(())
}

fn report(outcome: &RunOutcome) {
    let s = &outcome.summary;
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    match s.header.status {
        RunStatus::Ok => say!(
            "ok: {} steps in {:.1} s ({:.0} img/s), final train loss {:.4e}, test error {}, best val error {} (epoch {}), test error there {} -> {}",
            s.steps,
            s.train_seconds,
            s.images_per_s,
            s.final_train_loss.unwrap_or(f64::NAN),
            pct(s.test_error),
            pct(s.best_val_error),
            s.best_epoch.map_or("-".into(), |e| e.to_string()),
            pct(s.test_error_at_best_val),
            outcome.dir.display()
        ),
        RunStatus::Diverged => say!(
            "diverged after {} steps (NaN or infinite loss); last good checkpoint: epoch {} -> {}",
            s.steps,
            s.epochs,
            outcome.dir.display()
        ),
        RunStatus::Running | RunStatus::Interrupted => say!(
            "stopped after {steps} steps (samlab train --resume --out {dir} continues it) -> {dir}",
            steps = s.steps,
            dir = outcome.dir.display()
        ),
    }
}

/// Trains `config` into `out`.
pub fn execute(config: &DeepRunConfig, out: &Path, force: bool) -> Result<()> {
    report(&crate::progress::execute(config, out, force)?);
    Ok(())
}

/// Resumes the run in `out` (on `device`, or the run's own).
pub fn resume(out: &Path, device: Option<&str>) -> Result<()> {
    let mut bar = RunBar::new();
    let outcome = run::resume_on(out, device, &mut bar)?;
    bar.finish();
    report(&outcome);
    Ok(())
}

/// The flags `--resume` takes: the run continues with every option of its config.toml.
const RESUME_TAKES: [&str; 3] = ["resume", "out", "device"];

/// With `--resume`, any flag given but those of [`RESUME_TAKES`] is bad input naming it. Derived from the flags
/// `samlab train` defines, so a new run-defining flag cannot be forgotten (it used to be a hand list, which
/// missed `--variant`: the run went on as plain SAM without a word).
fn refuse_flags_with_resume(matches: &ArgMatches) -> Result<()> {
    let flags = TrainArgs::augment_args(clap::Command::new("train"));
    let given: Vec<String> = flags
        .get_arguments()
        .filter(|a| !RESUME_TAKES.contains(&a.get_id().as_str()))
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| format!("--{}", a.get_long().unwrap_or(a.get_id().as_str())))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    bail!(UsageError(format!(
        "--resume continues the run with the options of its config.toml and takes no other option than --device, \
         but {} given: start a new run (with --init-from to keep the weights) to change them",
        match given.as_slice() {
            [one] => format!("{one} was"),
            many => format!("{} were", many.join(", ")),
        }
    )));
}

/// `samlab train`; `matches` are its parsed flags (for what `--resume` refuses).
pub fn train(args: &TrainArgs, matches: &ArgMatches) -> Result<()> {
    if args.resume {
        refuse_flags_with_resume(matches)?;
        return resume(&args.out, args.device.as_deref());
    }
    if args.config.is_none() && (args.epochs.is_none() || args.batch_size.is_none()) {
        bail!(UsageError(
            "samlab train needs --epochs and --batch-size (or --config, or --resume)".into()
        ));
    }
    let config = args.to_config()?;
    execute(&config, &args.out, args.force)
}
