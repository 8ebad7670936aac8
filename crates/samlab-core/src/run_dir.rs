//! Run directories, the contract between engines, the report and users:
//!
//! ```text
//! <out>/config.toml    fully resolved; `samlab run --config` re-runs it exactly
//! <out>/metrics.csv    one row per logged step
//! <out>/summary.json   final metrics and status (ok | diverged), timings, samlab version
//! <out>/*.npy          data and parameters (NumPy can read them)
//! ```
//!
//! A run is written into a hidden staging directory beside `<out>` and moved into place only when complete, so a
//! crash or a bad input never leaves a half-written run, and an existing run is replaced only with `force`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why a run directory cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// `<out>` already holds files and `force` was not given.
    #[error("{0} already exists and is not empty (pass --force to replace it)")]
    Exists(PathBuf),
    /// A file-system operation failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A run directory being written: files go into [`RunDirWriter::path`], [`RunDirWriter::commit`] publishes them.
/// Dropped without a commit, it removes its staging directory and leaves `<out>` untouched.
#[derive(Debug)]
pub struct RunDirWriter {
    out: PathBuf,
    staging: PathBuf,
    committed: bool,
}

fn sibling(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

impl RunDirWriter {
    /// Prepares a staging directory for `out`; fails if `out` is a non-empty directory (or a file) and `force`
    /// is false.
    pub fn create(out: &Path, force: bool) -> Result<Self, RunDirError> {
        let occupied = match fs::read_dir(out) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        };
        if occupied && !force {
            return Err(RunDirError::Exists(out.to_path_buf()));
        }
        let staging = sibling(out, "staging");
        let io_err = |source| RunDirError::Io {
            path: staging.clone(),
            source,
        };
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err)?;
        }
        fs::create_dir_all(&staging).map_err(io_err)?;
        Ok(RunDirWriter {
            out: out.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where to write the run's files until [`commit`](Self::commit).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Moves the finished run to `<out>`, replacing what was there, and returns `<out>`.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let old = sibling(&self.out, "old");
        let had_old = self.out.exists();
        if had_old {
            fs::rename(&self.out, &old)?;
        }
        fs::rename(&self.staging, &self.out)?;
        self.committed = true;
        if had_old {
            if old.is_dir() {
                fs::remove_dir_all(&old)?;
            } else {
                fs::remove_file(&old)?;
            }
        }
        Ok(self.out.clone())
    }
}

impl Drop for RunDirWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Replaces `path` atomically: `write` fills `<path>.tmp`, which is then renamed over `path`, so a reader (or a
/// crash) never sees a half-written file.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    fs::rename(&tmp, path)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    fs::write(path, text + "\n")
}

/// Writes `value` as TOML.
pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = toml::to_string(value).map_err(io::Error::other)?;
    fs::write(path, text)
}

/// Writes a CSV file with a header row; values are written with full (round-trip) precision.
pub fn write_csv(
    path: &Path,
    header: &[&str],
    rows: impl Iterator<Item = Vec<f64>>,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(fs::File::create(path)?);
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_publishes_and_drop_discards() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("run");
        let w = RunDirWriter::create(&out, false).unwrap();
        fs::write(w.path().join("a.txt"), "first").unwrap();
        assert!(!out.exists(), "nothing visible before commit");
        w.commit().unwrap();
        assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "first");

        // Occupied without force: refused, old run intact.
        let err = RunDirWriter::create(&out, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");

        // Forced but abandoned (e.g. the run failed): old run intact, no staging left behind.
        let w = RunDirWriter::create(&out, true).unwrap();
        fs::write(w.path().join("b.txt"), "partial").unwrap();
        drop(w);
        assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "first");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);

        // Forced and committed: replaced whole.
        let w = RunDirWriter::create(&out, true).unwrap();
        fs::write(w.path().join("b.txt"), "second").unwrap();
        w.commit().unwrap();
        assert!(!out.join("a.txt").exists());
        assert_eq!(fs::read_to_string(out.join("b.txt")).unwrap(), "second");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn csv_round_trips_floats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        write_csv(&path, &["a", "b"], [vec![1.0, 0.1 + 0.2]].into_iter()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let value: f64 = text
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(value, 0.1 + 0.2);
    }
}
