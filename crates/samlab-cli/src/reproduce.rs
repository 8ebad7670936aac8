//! `samlab reproduce` and `samlab report`: flags to [`Settings`], then `samlab_experiments::reproduce`.

use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use samlab_experiments::deep_common::ScaleKind;
use samlab_experiments::plan::{Plan, Settings};
use samlab_experiments::reproduce::{self, Outcome};
use samlab_sweep::slurm::SlurmOptions;

use crate::progress;
use crate::sweep::{Executor, SlurmArgs};
use crate::train::PrecisionArg;

/// Size of the deep-net experiments.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScaleArg {
    /// An MLP on the shipped Fashion-MNIST subset, minutes on a CPU.
    Laptop,
    /// ResNet-18 on CIFAR-10 as in SPEC §4 (needs --data-dir; hours per run on a GPU).
    Paper,
}

/// Flags of `samlab reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Shorter runs (the 10^6-iteration runs become 3 * 10^5).
    #[arg(long)]
    quick: bool,
    /// Output directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Size of the deep-net experiments: laptop (an MLP on the shipped Fashion-MNIST subset, minutes on a CPU) or
    /// paper (ResNet-18 on CIFAR-10 as in SPEC §4; needs --data-dir, hours per run on a GPU).
    #[arg(long, value_enum, default_value = "laptop")]
    scale: ScaleArg,
    /// CIFAR-10 binary files for --scale paper.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend of the deep-net runs (flex, or wgpu / vulkan / cuda / tch when compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Precision of the deep-net runs' training passes (mixed precision below f32).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// Only the experiments whose id starts with one of these comma-separated prefixes (e.g. deep,theory).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also run the experiments (and parts of experiments) too large for the main job's budget; the report of a
    /// run without it names what it left out.
    #[arg(long)]
    extended: bool,
    /// Write OUT/plan.json (every run: directory, engine, wave, work, config) and train nothing.
    #[arg(long)]
    plan: bool,
    /// Where the runs run: here (one worker per core), or as SLURM job arrays (one per wave of runs that start
    /// from earlier runs) followed by a `samlab report OUT` job; `samlab sweep status OUT/slurm` follows them.
    #[arg(long, value_enum, default_value = "local")]
    executor: Executor,
    #[command(flatten)]
    slurm: SlurmArgs,
}

impl ReproduceArgs {
    fn settings(&self) -> Settings {
        Settings {
            quick: self.quick,
            scale: match self.scale {
                ScaleArg::Laptop => ScaleKind::Laptop,
                ScaleArg::Paper => ScaleKind::Paper,
            },
            data_dir: self.data_dir.clone(),
            device: self.device.clone(),
            precision: self.precision.into(),
            only: self.only.clone(),
            extended: self.extended,
        }
    }
}

/// `samlab reproduce`: plan, train and report (or only plan, with `--plan`).
pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let settings = args.settings();
    let opts = args.slurm.options()?;
    let bar = progress::bar(0, "runs");
    if let (Executor::Slurm, false) = (args.executor, args.plan) {
        let plan = reproduce::plan(&args.out, &settings, &bar)?;
        bar.finish_and_clear();
        return submit(&args.out, &plan, &opts, &args.slurm);
    }
    if args.plan {
        let plan = reproduce::plan(&args.out, &settings, &bar)?;
        bar.finish_and_clear();
        say!(
            "{} runs in {} waves -> {}",
            plan.runs.len(),
            plan.waves(),
            args.out.join(samlab_experiments::plan::PLAN_FILE).display()
        );
        return Ok(());
    }
    let done = reproduce::reproduce(&args.out, &settings, &bar)?;
    bar.finish_and_clear();
    for (dir, err) in &done.failed_runs {
        warn!("run {} failed: {err}", dir.display());
    }
    finish(&done.outcome, &format!(" ({:.1} s)", done.seconds))
}

/// `samlab report DIR`: the report of a reproduce's finished runs, rebuilt without training.
pub fn report(dir: &Path) -> Result<()> {
    let bar = progress::bar(0, "analyses");
    let outcome = reproduce::report(dir, &bar)?;
    bar.finish_and_clear();
    finish(&outcome, "")
}

/// Prints the claim counts; failed experiments make the command fail.
fn finish(o: &Outcome, took: &str) -> Result<()> {
    say!(
        "{} claims: {} pass, {} fail, {} not run{took} -> {}",
        o.pass + o.fail + o.not_run,
        o.pass,
        o.fail,
        o.not_run,
        o.report.display()
    );
    for (id, err) in &o.failed {
        warn!("experiment {id} failed: {err}");
    }
    if !o.failed.is_empty() {
        let ids: Vec<&str> = o.failed.iter().map(|f| f.0).collect();
        bail!("experiments failed: {}", ids.join(", "));
    }
    Ok(())
}

/// Submits the plan's unfinished runs to SLURM (see [`reproduce::submit`]) and prints the jobs, or rebuilds the
/// report here when every run is finished.
fn submit(out: &Path, plan: &Plan, opts: &SlurmOptions, slurm_args: &SlurmArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the samlab binary")?;
    let Some(s) = reproduce::submit(out, plan, &exe, opts)? else {
        say!("every run is finished: rebuilding the report here");
        return report(out);
    };
    say!(
        "submitted {} runs as {} job arrays ({}), then report job {}; follow them with `samlab sweep status {}`",
        s.runs,
        s.arrays.len(),
        s.arrays.iter().map(|a| a.array_job.as_str()).collect::<Vec<_>>().join(", "),
        s.report_job,
        s.dir.display()
    );
    if slurm_args.wait {
        let log = s.wait(Duration::from_secs(slurm_args.wait_timeout))?;
        say!("{}", log.trim_end());
    }
    Ok(())
}
