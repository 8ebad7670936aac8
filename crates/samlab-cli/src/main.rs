//! `samlab`: train with the SAM family, reproduce the paper's figures and check its claims.

/// `say!` that ignores a closed stdout (`samlab hessian ... | head -1`): results are written to files before
/// anything is printed, so a reader that went away loses nothing and must not turn into a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `say!` on stderr: warnings and errors, which a closed stderr (`2>&1 | head -1`) must not turn into a panic
/// either.
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod analysis;
mod bench;
mod diag;
mod progress;
mod relu;
mod reproduce;
mod sweep;
mod theory;
mod train;
mod train_args;
mod variant_args;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use samlab_runs::AnyRunConfig;

/// A command line that makes no sense: core's one bad-input kind under the name the flag translation gives it.
pub use samlab_core::BadInput as UsageError;

#[derive(Parser)]
#[command(name = "samlab", version, about = "Sharpness-Aware Minimization research toolkit", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Diagonal linear networks on sparse regression (the analytic engine).
    #[command(subcommand)]
    Diag(DiagCommand),
    /// One-hidden-layer ReLU networks (1D regression, teacher-student, any .npy data).
    #[command(subcommand)]
    Relu(ReluCommand),
    /// Train a deep net (samlab-deep on burn) with ERM or any SAM variant; resumable, with checkpoints.
    Train(Box<train::TrainArgs>),
    /// Worst-case (and average-case) m-sharpness of a deep-net run's checkpoint. Writes RUN_DIR/sharpness.json.
    Sharpness(Box<analysis::SharpnessArgs>),
    /// Loss and error along the line between two deep-net runs' weights, BatchNorm re-estimated at each point.
    Interpolate(Box<analysis::InterpolateArgs>),
    /// Top Hessian eigenvalue of a deep-net run's training loss and the feature sparsity of its last block.
    /// Writes RUN_DIR/hessian.json.
    Hessian(Box<analysis::HessianArgs>),
    /// A PyTorch state_dict (.safetensors, PyTorch's names and shapes) as a run directory of the model and data the
    /// flags describe (as for `train`), for `sharpness`, `hessian` and `interpolate`.
    ImportTorch(Box<train::ImportArgs>),
    /// Throughput of one training step (ERM, SAM or m-SAM) on a fixed random CIFAR-shaped batch, as a JSON line.
    BenchStep(Box<bench::BenchArgs>),
    /// Grids of runs of any engine: plan, run locally or as SLURM job arrays, status, resubmission, report.
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// The paper's theory applied to finished runs.
    #[command(subcommand)]
    Theory(TheoryCommand),
    /// Re-run a run directory's config.toml exactly.
    Run {
        /// A config.toml written by a previous run.
        #[arg(long)]
        config: PathBuf,
        /// Output run directory.
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it already holds a run.
        #[arg(long)]
        force: bool,
    },
    /// Run every paper experiment and write the figures, report.html, REPORT.md and claims.json.
    Reproduce(Box<reproduce::ReproduceArgs>),
    /// Rebuild the figures, report.html, REPORT.md and claims.json of a `reproduce` results directory from its
    /// finished runs, without training.
    Report {
        /// The results directory (it holds plan.json).
        dir: PathBuf,
    },
    /// What SAM did in a run of any engine, from its metrics: perturbation norm, cosine between the clean and the
    /// SAM gradient, realised sharpness, BatchNorm shift (deep nets); a verdict (SAM inactive, rho too small to
    /// matter, rho dominating the gradient, SAM active) with the numbers. Writes nothing.
    Diagnose {
        /// A run directory.
        run_dir: PathBuf,
        /// Print the diagnosis as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TheoryCommand {
    /// Theorem 1 for a diagonal-net run: effective initialization, Delta integrals, predicted vs trained beta.
    /// Writes RUN_DIR/implicit_bias.json.
    ImplicitBias {
        /// A run directory written by `samlab diag train`.
        run_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DiagCommand {
    /// Train one diagonal linear network u * v with GD, SGD or any SAM variant.
    Train(Box<diag::TrainArgs>),
}

#[derive(Subcommand)]
enum ReluCommand {
    /// Train one ReLU network f(x) = sum_j a_j relu(w_j x + b_j) with GD, SGD or any SAM variant.
    Train(Box<relu::TrainArgs>),
}

/// Reads a config file; a missing or unreadable one, or one longer than 16 MiB (`/dev/zero`), is bad input (exit
/// status 2).
pub fn read_config(path: &std::path::Path) -> Result<String> {
    samlab_core::run_dir::read_text(path).map_err(|e| {
        UsageError(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
        .into()
    })
}

/// Runs the command `cli`, whose flags as parsed are `matches`.
fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.command {
        Command::Diag(DiagCommand::Train(args)) => {
            let config = args.to_config()?;
            train_diag(&config, &args.out, args.force)
        }
        Command::Train(args) => train::train(
            &args,
            matches
                .subcommand_matches("train")
                .expect("the train command's flags"),
        ),
        Command::Sharpness(args) => analysis::sharpness(&args),
        Command::Interpolate(args) => analysis::interpolation(&args),
        Command::Hessian(args) => analysis::hessian(&args),
        Command::ImportTorch(args) => train::import_torch(&args),
        Command::BenchStep(args) => bench::bench_step(&args),
        Command::Relu(ReluCommand::Train(args)) => {
            relu::train_and_report(&args.to_config()?, &args.out, args.force)
        }
        Command::Run { config, out, force } => {
            let text = read_config(&config)?;
            match AnyRunConfig::parse(&config, &text)? {
                AnyRunConfig::Diag(c) => train_diag(&c, &out, force),
                AnyRunConfig::Relu(c) => relu::train_and_report(&c, &out, force),
                AnyRunConfig::Deep(c) => train::execute(&c, &out, force),
            }
        }
        Command::Sweep(cmd) => sweep::sweep(&cmd),
        Command::Theory(TheoryCommand::ImplicitBias { run_dir }) => {
            let result = samlab_analytic::theory::implicit_bias::implicit_bias(&run_dir)?;
            theory::print(&run_dir, &result);
            Ok(())
        }
        Command::Reproduce(args) => reproduce::reproduce(&args),
        Command::Report { dir } => reproduce::report(&dir),
        Command::Diagnose { run_dir, json } => {
            let d = samlab_runs::diagnose::diagnose_dir(&run_dir)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&d)?),
                false => println!("{}: {}", d.run.display(), d.message),
            }
            Ok(())
        }
    }
}

fn train_diag(
    config: &samlab_analytic::diag::run::DiagRunConfig,
    out: &std::path::Path,
    force: bool,
) -> Result<()> {
    let outcome = progress::execute(config, out, force)?;
    let s = &outcome.summary;
    match (s.final_train_loss, s.final_test_loss) {
        (Some(train), Some(test)) => say!(
            "ok: {} updates in {:.3} s, train loss {train:.6e}, test loss {test:.6e} -> {}",
            s.iterations,
            s.seconds,
            outcome.dir.display()
        ),
        _ => say!(
            "diverged at update {} (last finite test loss {:.6e}) -> {}",
            s.iterations,
            s.last_finite_test_loss.unwrap_or(f64::NAN),
            outcome.dir.display()
        ),
    }
    Ok(())
}

/// Bad input (exit 2) is an error whose chain holds one of core's bad-input kinds (`samlab_core::is_bad_input`), or a
/// bad-input variant of the two library enums that carry bad input beside failures of the machine.
fn is_bad_input(err: &anyhow::Error) -> bool {
    use samlab_deep::run::RunError;
    use samlab_sweep::SweepError;
    err.chain().any(|e| {
        samlab_core::is_bad_input(e)
            || e.downcast_ref::<RunError>()
                .is_some_and(RunError::is_bad_input)
            || e.downcast_ref::<SweepError>()
                .is_some_and(SweepError::is_bad_input)
    })
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            warn!("error: {err:#}");
            ExitCode::from(if is_bad_input(&err) { 2 } else { 1 })
        }
    }
}
