//! What can go wrong in a run ([`RunError`]), and which of it is bad input.

use super::*;

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value that makes no sense.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unusable data or checkpoint files.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A request that cannot be honoured (occupied output, nothing to resume).
    #[error("{0}")]
    Usage(String),
    /// The run directory cannot be used (held by another process, a file in the way, occupied).
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The backend failed while training (burn's GPU backends panic on a lost or failing device). The run stays
    /// `running` with the checkpoints written so far.
    #[error("the device failed during training ({0}); the run keeps its last checkpoint: continue it with `samlab train --resume --out RUN` (on this device or another, `--device`)")]
    Device(String),
    /// A file-system failure while writing the run.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl RunError {
    /// Whether the error is the user's input (exit status 2) rather than a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RunError::Io { .. } | RunError::Device(_) => false,
            RunError::RunDir(e) => e.is_bad_input(),
            _ => true,
        }
    }
}

/// Runs `train`, turning a panic inside it (how burn's GPU backends report a lost or failing device) into
/// [`RunError::Device`], so a failing device ends the command with an error instead of a crash, and what the run
/// has written (its checkpoints, its `running` summary) stays for `--resume`.
pub(super) fn device_guard<T>(train: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(train)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        Err(RunError::Device(message))
    })
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}
