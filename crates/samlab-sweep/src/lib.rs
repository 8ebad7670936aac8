//! Sweeps: a grid file (the config of one run plus axes that vary it) becomes a manifest of runs with stable ids
//! (a content hash of each config), which local processes or a SLURM job array run, one `samlab sweep task` per
//! run; [`status`] tells done, running, queued, failed and missing runs apart, and [`report`] aggregates the
//! finished runs' summaries over seeds.
//!
//! ```text
//! <dir>/manifest.json      the runs: id, axis values, config (TOML)
//! <dir>/manifest.sha256    its checksum: a manifest edited after planning is refused
//! <dir>/.sweep.lock        held by the one `sweep run`, `submit` or `plan` working on it (its process id)
//! <dir>/runs/<id>/         one run directory per run (any engine's)
//! <dir>/logs/task-<i>.log  what task i printed (local or SLURM)
//! <dir>/slurm/             sbatch scripts and the submitted job ids
//! <dir>/report.{csv,md}    mean ± std over seeds
//! <dir>/figures/           one figure per metric against the first numeric axis
//! ```
//!
//! The library knows no engine: the caller checks each run's config (as its engine would, before anything is
//! written) and runs a task by its index. [`commands`] holds what each `samlab sweep` subcommand does, as calls over
//! plain values.
#![deny(missing_docs)]

pub mod commands;
pub mod grid;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod report;
pub mod slurm;
pub mod status;

use std::io;
use std::path::{Path, PathBuf};

/// Why a sweep cannot be planned, run or reported.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Bad input: a grid, manifest, option or index that makes no sense (exit status 2).
    #[error("{0}")]
    Invalid(String),
    /// A file-system operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// SLURM's commands are missing or failed.
    #[error("{0}")]
    Slurm(String),
    /// A figure could not be drawn or written.
    #[error("cannot draw the report's figures: {0}")]
    Plot(String),
}

impl SweepError {
    /// Whether the error is bad input (exit status 2) rather than a failing machine or scheduler.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, SweepError::Invalid(_))
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, SweepError> {
    Err(SweepError::Invalid(message.into()))
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SweepError + 'a {
    move |source| SweepError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The hexadecimal SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
