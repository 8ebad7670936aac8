//! What each `samlab sweep` subcommand does, as calls over plain values (paths, counts, durations,
//! [`SlurmOptions`](slurm::SlurmOptions), callbacks), so that the binary only translates flags and prints what comes
//! back, and a binding can drive a sweep the same way.
//!
//! | subcommand | calls |
//! |---|---|
//! | `plan` | [`plan`] |
//! | `run` | [`plan`], then as `submit` |
//! | `submit` | [`pending`], then [`run_local`], or [`slurm::submit`] and [`wait`] |
//! | `task` | [`task`], then the caller runs the [`TaskRun`] with its engine |
//! | `status` | [`fn@status`] |
//! | `report` | [`fn@report`] |
//!
//! The library knows no engine, so the two engine-aware steps stay with the caller: checking a run's config while
//! planning (the closure given to [`plan`]) and running one task (what [`task`] returns says which run, from which
//! config, into which directory, and whether a leftover is there).

use std::path::{Path, PathBuf};
use std::time::Duration;

use samlab_core::run_dir::is_occupied;

use crate::grid::Grid;
use crate::local::{self, TaskFailure};
use crate::lock::SweepLock;
use crate::manifest::{run_dir, task_log, Manifest};
use crate::report::{self, Report};
use crate::slurm::{self, Submission};
use crate::status::{self, finished_status, State};
use crate::SweepError;

/// Plans the grid file `grid` into the sweep directory `out`: expands it, checks every run's config.toml with
/// `check` (the run's engine's checks, before anything is written; see [`Manifest::plan`]), then takes the sweep's
/// lock and writes `out/manifest.json`. The lock comes back with the manifest: hold it while working on the sweep
/// (see [`SweepLock`]).
pub fn plan(
    grid: &Path,
    out: &Path,
    check: &dyn Fn(&str) -> Result<(), String>,
) -> Result<(Manifest, SweepLock), SweepError> {
    let grid = Grid::load(grid)?;
    let manifest = Manifest::plan(&grid, check)?;
    let lock = SweepLock::acquire(out)?;
    manifest.write(out)?;
    Ok((manifest, lock))
}

/// A planned sweep and the runs that running it again would run.
#[derive(Debug)]
pub struct Pending {
    /// The sweep's manifest.
    pub manifest: Manifest,
    /// Every run's state, SLURM's queue included.
    pub states: Vec<State>,
    /// The indices of the runs that failed or never started ([`State::pending`]), in manifest order.
    pub indices: Vec<usize>,
}

/// The sweep in `dir` and its pending runs. SLURM's queue is asked when the sweep was ever submitted to SLURM (a
/// failing squeue is an error: a queued run must not be submitted again).
pub fn pending(dir: &Path) -> Result<Pending, SweepError> {
    let manifest = Manifest::load(dir)?;
    let queue = slurm::queue(dir)?;
    let states = status::states(dir, &manifest, &queue);
    let indices = (0..states.len()).filter(|&i| states[i].pending()).collect();
    Ok(Pending {
        manifest,
        states,
        indices,
    })
}

/// What [`run_local`] did.
#[derive(Debug)]
pub struct LocalRun {
    /// The tasks that did not succeed, in the order they ended.
    pub failures: Vec<TaskFailure>,
    /// Every run's state afterwards.
    pub states: Vec<State>,
    /// The report written: `dir/report.md` (beside it `report.csv` and the figures).
    pub report: PathBuf,
}

impl LocalRun {
    /// The error of a run with failed tasks (`None` when every task succeeded): how many, their indices and exit
    /// statuses, and the first one's log in the sweep directory `dir`.
    pub fn failure(&self, dir: &Path) -> Option<String> {
        let first = self.failures.first()?;
        Some(format!(
            "{} runs failed: {} (their output: {})",
            self.failures.len(),
            self.failures
                .iter()
                .map(|f| format!("{} ({})", f.index, f.status))
                .collect::<Vec<_>>()
                .join(", "),
            task_log(dir, first.index).display()
        ))
    }
}

/// Runs `indices` of the sweep in `dir` here, as `exe sweep task` child processes (`exe` is the samlab binary), at
/// most `jobs` at once (`None`: the machine's cores), calling `done` with each task's index and success as it
/// ends (see [`local::run`]); then writes the report of every finished run (`dir/report.{csv,md}` and the figures)
/// and reads back every run's state. A failed task is not an error here: see [`LocalRun::failure`].
pub fn run_local(
    dir: &Path,
    manifest: &Manifest,
    exe: &Path,
    indices: &[usize],
    jobs: Option<usize>,
    done: &mut dyn FnMut(usize, bool),
) -> Result<LocalRun, SweepError> {
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let failures = local::run(dir, exe, indices, jobs, done)?;
    let r = report::aggregate(dir, manifest, &[])?;
    r.write(dir)?;
    Ok(LocalRun {
        failures,
        states: status::states(dir, manifest, &Default::default()),
        report: dir.join("report.md"),
    })
}

/// Waits until the array job and the report job of the submission `s` (made by [`slurm::submit`]) have left
/// SLURM's queue, or `timeout` passes (an error); returns every run's state of the sweep in `dir` afterwards.
pub fn wait(
    dir: &Path,
    manifest: &Manifest,
    s: &Submission,
    timeout: Duration,
) -> Result<Vec<State>, SweepError> {
    slurm::wait(&[s.array_job.clone(), s.report_job.clone()], timeout)?;
    Ok(status::states(dir, manifest, &Default::default()))
}

/// One run of a sweep to run, as [`task`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRun {
    /// Its id.
    pub id: String,
    /// Its config.toml, as the manifest holds it.
    pub config: String,
    /// Where the config comes from (the manifest), for error messages.
    pub source: PathBuf,
    /// Its run directory.
    pub out: PathBuf,
    /// Whether the run directory holds a leftover of a task that died: a deep run resumes from its checkpoint, any
    /// other run replaces it.
    pub leftover: bool,
}

/// What task `index` of a sweep has to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// The run is already finished ([`State::Done`] or [`State::Diverged`]): nothing to do.
    Finished {
        /// Its id.
        id: String,
        /// Its state.
        state: State,
    },
    /// The run is to be run (by the caller, with its engine).
    Run(TaskRun),
}

/// What task `index` of the sweep in `dir` has to do (what each local process and SLURM array task runs): nothing
/// for a finished run, else its run, with whether a leftover is in its run directory. An index outside the
/// manifest is [`SweepError::Invalid`].
pub fn task(dir: &Path, index: usize) -> Result<Task, SweepError> {
    let manifest = Manifest::load(dir)?;
    let run = manifest.run(index)?;
    let out = run_dir(dir, run);
    if let Some(state) = finished_status(&out) {
        return Ok(Task::Finished {
            id: run.id.clone(),
            state,
        });
    }
    Ok(Task::Run(TaskRun {
        id: run.id.clone(),
        config: run.config.clone(),
        source: dir.join("manifest.json"),
        leftover: is_occupied(&out),
        out,
    }))
}

/// Where a sweep's runs stand.
#[derive(Debug)]
pub struct Status {
    /// The sweep's manifest.
    pub manifest: Manifest,
    /// Every run's state.
    pub states: Vec<State>,
    /// Why SLURM's queue could not be read, if it could not: then queued and running SLURM tasks count as failed.
    pub queue_error: Option<SweepError>,
}

/// Every run's state of the sweep in `dir`, from the run directories and SLURM's queue (asked only when the sweep
/// was ever submitted to SLURM; a failing squeue is reported in [`Status::queue_error`], not an error).
pub fn status(dir: &Path) -> Result<Status, SweepError> {
    let manifest = Manifest::load(dir)?;
    let (queue, queue_error) = match slurm::queue(dir) {
        Ok(q) => (q, None),
        Err(e) => (Default::default(), Some(e)),
    };
    Ok(Status {
        states: status::states(dir, &manifest, &queue),
        manifest,
        queue_error,
    })
}

/// A written report.
#[derive(Debug)]
pub struct Written {
    /// The report.
    pub report: Report,
    /// Its Markdown file, `dir/report.md` (beside it `report.csv` and the figures).
    pub markdown: PathBuf,
}

/// Aggregates the finished runs of the sweep in `dir` (`metrics`: dotted summary.json keys, or every numeric key
/// the finished runs share when empty; see [`report::aggregate`]) and writes `dir/report.{csv,md}` and the figures.
pub fn report(dir: &Path, metrics: &[String]) -> Result<Written, SweepError> {
    let manifest = Manifest::load(dir)?;
    let report = report::aggregate(dir, &manifest, metrics)?;
    report.write(dir)?;
    Ok(Written {
        report,
        markdown: dir.join("report.md"),
    })
}

#[cfg(test)]
mod tests;
