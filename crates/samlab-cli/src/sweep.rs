//! `samlab sweep`: flags to `samlab_sweep::commands` calls and their results printed, plus the two engine-aware
//! parts the library leaves to its caller: checking a run's config while planning, and running one task.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use samlab_sweep::commands::{self, Task};
use samlab_sweep::lock::SweepLock;
use samlab_sweep::manifest::{run_id, Manifest};
use samlab_sweep::slurm::{self, SlurmOptions};
use samlab_sweep::status::summary;

use samlab_runs::AnyRunConfig;

use crate::{progress, UsageError};

/// `samlab sweep` subcommands.
#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Plan a grid into DIR (checking every run's config) and run it: the runs not yet done, failed or missing.
    Run {
        /// The grid file (TOML: `base`, `[axes]`, `[[zip]]`; see docs/SWEEPS.md).
        grid: PathBuf,
        /// The sweep directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Plan a grid into DIR without running anything: writes manifest.json (run ids, axis values, configs).
    Plan {
        /// The grid file.
        grid: PathBuf,
        /// The sweep directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run or submit again the runs of a planned sweep that failed or never started (resubmission).
    Submit {
        /// The sweep directory.
        dir: PathBuf,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Run one run of a planned sweep (what each local process and SLURM array task runs): skips a finished run,
    /// resumes a deep run from its checkpoint, starts anything else clean.
    Task {
        /// The sweep directory.
        dir: PathBuf,
        /// The run's index in the manifest (SLURM_ARRAY_TASK_ID).
        #[arg(long)]
        index: usize,
    },
    /// Done, diverged, running, queued, failed and missing runs, from the run directories and squeue.
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
    /// Mean ± std over seeds of the finished runs' summaries: DIR/report.csv and DIR/report.md.
    Report {
        /// The sweep directory.
        dir: PathBuf,
        /// summary.json keys to aggregate (dotted for nested ones) [default: every number the summaries share].
        #[arg(long, value_delimiter = ',')]
        metrics: Vec<String>,
    },
}

/// Where the runs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// Child processes on this machine.
    Local,
    /// A SLURM job array (sbatch), plus a report job once it ends.
    Slurm,
}

/// How to run a sweep.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Where the runs run.
    #[arg(long, value_enum, default_value = "local")]
    executor: Executor,
    /// Local executor: runs at once [default: the machine's cores].
    #[arg(long)]
    jobs: Option<usize>,
    #[command(flatten)]
    slurm: SlurmArgs,
}

/// The SLURM executor's options.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// SLURM: wait until the arrays and the report job have left the queue.
    #[arg(long)]
    pub wait: bool,
    /// SLURM: give up waiting after this many seconds.
    #[arg(long, default_value_t = 86_400)]
    pub wait_timeout: u64,
    /// SLURM: sbatch --partition.
    #[arg(long)]
    partition: Option<String>,
    /// SLURM: sbatch --time, per task.
    #[arg(long)]
    time: Option<String>,
    /// SLURM: sbatch --cpus-per-task.
    #[arg(long)]
    cpus_per_task: Option<usize>,
    /// SLURM: sbatch --mem, per task.
    #[arg(long)]
    mem: Option<String>,
    /// SLURM: sbatch --gres (e.g. gpu:1).
    #[arg(long)]
    gres: Option<String>,
    /// SLURM: at most this many tasks at once (the array's %N throttle).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// SLURM: a further sbatch argument, verbatim (repeatable: --sbatch-arg=--account=X).
    #[arg(long, allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

impl SlurmArgs {
    /// The sbatch options, checked.
    pub fn options(&self) -> Result<SlurmOptions> {
        let opts = SlurmOptions {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            gres: self.gres.clone(),
            max_parallel: self.max_parallel,
            extra: self.sbatch_arg.clone(),
        };
        opts.check()?;
        Ok(opts)
    }
}

/// Runs a `samlab sweep` subcommand.
pub fn sweep(cmd: &SweepCommand) -> Result<()> {
    match cmd {
        SweepCommand::Plan { grid, out } => {
            let (m, _lock) = commands::plan(grid, out, &|text| check_run(text, out))?;
            say!(
                "planned {} runs -> {}",
                m.runs.len(),
                out.join("manifest.json").display()
            );
            Ok(())
        }
        SweepCommand::Run { grid, out, exec } => {
            exec.checked()?;
            let _lock = commands::plan(grid, out, &|text| check_run(text, out))?.1;
            submit(out, exec)
        }
        SweepCommand::Submit { dir, exec } => {
            Manifest::load(dir)?;
            let _lock = SweepLock::acquire(dir)?;
            submit(dir, exec)
        }
        SweepCommand::Task { dir, index } => task(dir, *index),
        SweepCommand::Status { dir } => print_status(dir),
        SweepCommand::Report { dir, metrics } => {
            let w = commands::report(dir, metrics)?;
            say!(
                "{} groups, {} runs without a result -> {}",
                w.report.rows.len(),
                w.report.unfinished.len(),
                w.markdown.display()
            );
            Ok(())
        }
    }
}

/// Checks a run's config.toml as `samlab run --config` does before writing anything: every engine's checks, and
/// for a deep run its plan too (its device, its data read and checked, the model built, the number of updates
/// counted), so that a grid whose runs would fail as tasks is refused before a task is submitted. `sweep` is the
/// sweep directory (a relative `init_from` is read from the run's directory `runs/<id>` there).
fn check_run(text: &str, sweep: &Path) -> std::result::Result<(), String> {
    AnyRunConfig::parse(Path::new("config.toml"), text)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            c.check(&sweep.join("runs").join(run_id(text)))?;
            if let AnyRunConfig::Deep(deep) = &c {
                samlab_deep::run::planned(deep)?;
            }
            Ok(())
        })
        .map_err(|e| format!("{e:#}"))
}

impl ExecArgs {
    /// The sbatch options, after checking every executor option.
    fn checked(&self) -> Result<SlurmOptions> {
        let opts = self.slurm.options()?;
        if self.jobs == Some(0) {
            bail!(UsageError("--jobs must be at least 1".into()));
        }
        Ok(opts)
    }
}

/// Runs here, or submits to SLURM, the pending runs of the sweep in `dir` (see [`commands::pending`]).
fn submit(dir: &Path, exec: &ExecArgs) -> Result<()> {
    let opts = exec.checked()?;
    let exe = std::env::current_exe().context("cannot find the samlab binary")?;
    let p = commands::pending(dir)?;
    if p.indices.is_empty() {
        say!("nothing to run: {}", summary(&p.states));
        return Ok(());
    }
    match exec.executor {
        Executor::Local => {
            let total = p.indices.len() as u64;
            let bar = progress::bar(total, "runs");
            let ran = commands::run_local(
                dir,
                &p.manifest,
                &exe,
                &p.indices,
                exec.jobs,
                &mut |_, _| {
                    bar.inc(1);
                    if bar.position() == total {
                        bar.finish_and_clear();
                    }
                },
            )?;
            say!("{} -> {}", summary(&ran.states), ran.report.display());
            if let Some(failure) = ran.failure(dir) {
                bail!(failure);
            }
        }
        Executor::Slurm => {
            let s = slurm::submit(dir, &exe, &p.indices, &opts)?;
            say!(
                "submitted {} runs as job array {} (report job {})",
                p.indices.len(),
                s.array_job,
                s.report_job
            );
            if exec.slurm.wait {
                let timeout = Duration::from_secs(exec.slurm.wait_timeout);
                let states = commands::wait(dir, &p.manifest, &s, timeout)?;
                say!("{}", summary(&states));
            }
        }
    }
    Ok(())
}

fn print_status(dir: &Path) -> Result<()> {
    let s = commands::status(dir)?;
    if let Some(e) = &s.queue_error {
        warn!("warning: {e}; queued and running SLURM tasks are not told apart from failed ones");
    }
    for (i, (run, state)) in s.manifest.runs.iter().zip(&s.states).enumerate() {
        let values: Vec<String> = run.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        say!("{i:>5} {} {state:<8} {}", run.id, values.join(" "));
    }
    say!("{}", summary(&s.states));
    Ok(())
}

/// Runs run `index` of the sweep in `dir` into its run directory (see [`commands::task`]).
fn task(dir: &Path, index: usize) -> Result<()> {
    let run = match commands::task(dir, index)? {
        Task::Finished { id, state } => {
            say!("run {index} ({id}) is already finished: {state}");
            return Ok(());
        }
        Task::Run(run) => run,
    };
    // A leftover of a task that died is replaced; a deep run resumes from its checkpoint instead.
    let (out, leftover) = (&run.out, run.leftover);
    match AnyRunConfig::parse(&run.source, &run.config)? {
        AnyRunConfig::Diag(c) => crate::train_diag(&c, out, leftover),
        AnyRunConfig::Relu(c) => crate::relu::train_and_report(&c, out, leftover),
        AnyRunConfig::Deep(c) if leftover => crate::train::resume(out, Some(&c.train.device)),
        AnyRunConfig::Deep(c) => crate::train::execute(&c, out, false),
    }
}
