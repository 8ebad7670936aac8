//! Where each run of a sweep stands, from its run directory, its lock, its task log and SLURM's queue.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use samlab_core::run::{RunStatus, SummaryHeader};
use samlab_core::run_dir::RunLock;

use crate::manifest::{run_dir, task_log, Manifest};

/// The state of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Finished with status ok.
    Done,
    /// Finished with status diverged (a result, not a failure).
    Diverged,
    /// A process holds its run directory's lock, or SLURM lists its task as running.
    Running,
    /// SLURM lists its task as pending.
    Queued,
    /// Started or submitted (it has a task log, a run directory or a SLURM submission) but neither finished nor
    /// running nor queued: the task died, was cancelled or refused its input. Run again, it starts clean or resumes from its checkpoint.
    Failed,
    /// Never started.
    Missing,
}

impl State {
    /// Whether the run has a result.
    pub fn finished(self) -> bool {
        matches!(self, State::Done | State::Diverged)
    }

    /// Whether running the sweep again would run it.
    pub fn pending(self) -> bool {
        matches!(self, State::Failed | State::Missing)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Done => "done",
            State::Diverged => "diverged",
            State::Running => "running",
            State::Queued => "queued",
            State::Failed => "failed",
            State::Missing => "missing",
        })
    }
}

/// The finished status (`ok` or `diverged`) in a run directory's summary.json, if any.
pub fn finished_status(run: &Path) -> Option<State> {
    match SummaryHeader::read(run)?.status {
        RunStatus::Ok => Some(State::Done),
        RunStatus::Diverged => Some(State::Diverged),
        RunStatus::Running | RunStatus::Interrupted => None,
    }
}

/// The state of every run; `queue` maps task indices to SLURM's state of them (`PENDING`, `RUNNING`, ...).
pub fn states(dir: &Path, manifest: &Manifest, queue: &BTreeMap<usize, String>) -> Vec<State> {
    let submitted: BTreeSet<usize> = crate::slurm::submissions(dir)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.indices)
        .collect();
    manifest
        .runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let out = run_dir(dir, run);
            if let Some(s) = finished_status(&out) {
                s
            } else if RunLock::is_held(&out) {
                State::Running
            } else if let Some(q) = queue.get(&i) {
                if q == "PENDING" {
                    State::Queued
                } else {
                    State::Running
                }
            } else if task_log(dir, i).exists() || out.exists() || submitted.contains(&i) {
                State::Failed
            } else {
                State::Missing
            }
        })
        .collect()
}

/// How many runs are in each state.
pub fn counts(states: &[State]) -> BTreeMap<State, usize> {
    let mut c = BTreeMap::new();
    for s in states {
        *c.entry(*s).or_insert(0) += 1;
    }
    c
}

/// The counts in one line, in state order: `4 done, 1 failed, 1 missing`.
pub fn summary(states: &[State]) -> String {
    counts(states)
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
