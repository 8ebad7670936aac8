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
//!
//! A run directory is owned by one process at a time: [`RunLock`] holds an exclusive lock on `.<name>.lock` beside
//! `<out>` for the whole run (training, resuming, committing), so two runs can never write into one directory, and
//! whether `<out>` is occupied is decided under that lock.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::BadInput;

/// The `engine = "..."` key that opens every config.toml, as a field of each engine's run config: one type per
/// engine, so a config of one engine read as another's is refused with serde's own message (`unknown variant
/// `deep`, expected `diag``), and a config written before the key existed reads as its engine (the default).
macro_rules! engine_tag {
    ($(#[$doc:meta])* $name:ident, $engine:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            /// The only value.
            #[default]
            #[serde(rename = $engine)]
            Tag,
        }
    };
}

engine_tag!(
    /// `engine = "diag"`: a diagonal-linear-network run.
    DiagEngine,
    "diag"
);
engine_tag!(
    /// `engine = "relu"`: a one-hidden-layer ReLU network run.
    ReluEngine,
    "relu"
);
engine_tag!(
    /// `engine = "deep"`: a deep-net run.
    DeepEngine,
    "deep"
);

/// Why a run directory cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// `<out>` already holds files and `force` was not given.
    #[error("{0} already exists and is not empty (pass --force to replace it)")]
    Exists(PathBuf),
    /// `<out>` holds something that is not a samlab run, which `force` never replaces.
    #[error("{out} is not a samlab run ({found}); --force replaces only a run directory (its summary.json names its engine, or a deep run that started: config.toml of an engine and checkpoint/) or an empty directory, so nothing was deleted: move it away or choose another --out")]
    NotARun {
        /// The requested run directory.
        out: PathBuf,
        /// What is there, in words.
        found: String,
    },
    /// Another process holds the run directory's lock.
    #[error("{0} is being written by another samlab process (its lock file {1} is held); wait for it or choose another --out")]
    Busy(PathBuf, PathBuf),
    /// A component of `<out>`'s path is a regular file, so no directory can be made there.
    #[error("cannot create the run directory {out}: {file} is a regular file, not a directory")]
    NotADirectory {
        /// The requested run directory.
        out: PathBuf,
        /// The file in the way.
        file: PathBuf,
    },
    /// The run would start from its own weights (`init_from` names `out`).
    #[error("{out} cannot start from itself (init_from {init_from}): a run cannot be its own parent; train into another --out")]
    OwnParent {
        /// The requested run directory.
        out: PathBuf,
        /// Its `init_from`, as given.
        init_from: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl RunDirError {
    /// Whether the error is the user's request being impossible (exit status 2) rather than a failing machine.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, RunDirError::Io { .. })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<out>`'s file name (`run` for a path without one).
fn run_name(out: &Path) -> String {
    out.file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
}

/// `.<name>.lock` beside `out`: the file [`RunLock`] locks.
fn lock_path(out: &Path) -> PathBuf {
    out.with_file_name(format!(".{}.lock", run_name(out)))
}

fn sibling(out: &Path, tag: &str) -> PathBuf {
    out.with_file_name(format!(".{}.{tag}-{}", run_name(out), std::process::id()))
}

/// The first ancestor of `out` (itself excluded: a file there is an occupied `out`) that exists and is not a
/// directory.
fn file_in_the_way(out: &Path) -> Option<PathBuf> {
    out.ancestors()
        .skip(1)
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
        .map(Path::to_path_buf)
}

/// Whether `out` holds anything (a non-empty directory, or a file).
pub fn is_occupied(out: &Path) -> bool {
    match fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The engines whose runs `force` may replace.
const ENGINES: [&str; 3] = ["diag", "relu", "deep"];

/// Whether `out` may be replaced by `force`: it is missing, an empty directory, or a samlab run (its summary.json
/// header names an engine; or, for a deep run that started and has no summary yet, a config.toml whose `engine`
/// key names an engine beside a `checkpoint/` directory). Anything else, a regular file or a symbolic link
/// included, is [`RunDirError::NotARun`], naming what is there.
pub fn check_replaceable(out: &Path) -> Result<(), RunDirError> {
    let not_a_run = |found: String| {
        Err(RunDirError::NotARun {
            out: out.to_path_buf(),
            found,
        })
    };
    let meta = match fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(out)(e)),
    };
    if meta.file_type().is_symlink() {
        return not_a_run("a symbolic link".into());
    }
    if !meta.is_dir() {
        return not_a_run("a regular file".into());
    }
    if !is_occupied(out) || is_run(out) {
        return Ok(());
    }
    let mut names: Vec<String> = fs::read_dir(out)
        .map_err(io_error(out))?
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                name + "/"
            } else {
                name
            }
        })
        .collect();
    names.sort();
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    let more = match names.len().saturating_sub(3) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    not_a_run(format!("it holds {shown}{more} and no samlab summary.json"))
}

/// Whether the directory `dir` holds a samlab run (see [`check_replaceable`]).
fn is_run(dir: &Path) -> bool {
    let summary = read_capped(&dir.join("summary.json"), 1 << 26)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    if summary.is_some_and(|s| s["engine"].as_str().is_some_and(|e| ENGINES.contains(&e))) {
        return true;
    }
    // A deep run started (or imported) but without a summary yet.
    let engine = read_capped(&dir.join("config.toml"), 1 << 20)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("engine").and_then(|e| e.as_str().map(String::from)));
    engine.is_some_and(|e| ENGINES.contains(&e.as_str())) && dir.join("checkpoint").is_dir()
}

/// The most bytes samlab reads from a text file a user names (a config.toml, a sweep grid): 16 MiB, thousands of
/// times any real one.
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

/// The text of the file `path` (a config, a grid), refusing one longer than [`MAX_TEXT_BYTES`] (or not UTF-8) with
/// [`io::ErrorKind::InvalidData`] before reading more than that: `/dev/zero` is an error, not an endless read.
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_capped(path, MAX_TEXT_BYTES)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The bytes of the file `path`, refusing (with [`io::ErrorKind::InvalidData`], naming the bound) one longer than
/// `max` bytes before reading more than `max + 1`: the way every reader of a small file (config, grid, summary)
/// avoids reading `/dev/zero` until memory runs out.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use io::Read as _;
    let file = fs::File::open(path)?;
    // Room for the whole file up front (one allocation, no copies as it grows); a failed reservation is an error.
    let expected = file.metadata()?.len().min(max) as usize;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(expected + 1)
        .map_err(io::Error::other)?;
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes, the most samlab reads from such a file"),
        ));
    }
    Ok(bytes)
}

/// Exclusive ownership of the run directory `<out>` while the value lives: an advisory lock (`flock`) on
/// `.<name>.lock` beside it. The operating system releases it when the process ends, however it ends, so a killed
/// run never leaves a stale lock.
///
/// Taking the lock also tidies what killed runs left beside `<out>`: staging directories (`.<name>.staging-PID`,
/// never complete) are removed; a run set aside for replacement (`.<name>.old-PID`) is moved back when `<out>`
/// is missing (the replacement never arrived) and otherwise kept and listed by [`RunLock::set_aside_runs`] until
/// a replacement completes (`RunLock::remove_set_aside`).
#[derive(Debug)]
pub struct RunLock {
    out: PathBuf,
    _file: fs::File,
}

impl RunLock {
    /// Takes the lock of `out` (creating its parent directory if needed) without waiting: fails with
    /// [`RunDirError::Busy`] when another process holds it.
    pub fn acquire(out: &Path) -> Result<Self, RunDirError> {
        if let Some(file) = file_in_the_way(out) {
            return Err(RunDirError::NotADirectory {
                out: out.to_path_buf(),
                file,
            });
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_error(&parent))?;
        let lock_path = lock_path(out);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(RunDirError::Busy(out.to_path_buf(), lock_path))
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        let lock = RunLock {
            out: out.to_path_buf(),
            _file: file,
        };
        for staging in lock.siblings("staging") {
            fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        if !is_occupied(out) {
            if let Some(old) = lock.set_aside_runs().into_iter().next() {
                if out.exists() {
                    fs::remove_dir(out).map_err(io_error(out))?;
                }
                fs::rename(&old, out).map_err(io_error(&old))?;
            }
        }
        Ok(lock)
    }

    /// Whether another process holds the lock of `out` now (a run is being written there). Reads only: it tidies
    /// nothing and creates no lock file.
    pub fn is_held(out: &Path) -> bool {
        let lock_path = lock_path(out);
        match fs::OpenOptions::new().write(true).open(&lock_path) {
            Ok(file) => matches!(
                fs4::FileExt::try_lock(&file),
                Err(fs4::TryLockError::WouldBlock)
            ),
            Err(_) => false,
        }
    }

    /// The run directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Hidden directories `.<name>.<tag>-*` beside `<out>`, sorted.
    fn siblings(&self, tag: &str) -> Vec<PathBuf> {
        let prefix = format!(".{}.{tag}-", run_name(&self.out));
        let dir = self
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| self.out.with_file_name(e.file_name()))
            .collect();
        found.sort();
        found
    }

    /// Earlier runs of `<out>` set aside by `force` whose replacement has not completed yet.
    pub fn set_aside_runs(&self) -> Vec<PathBuf> {
        self.siblings("old")
    }

    /// Moves the run in `<out>` aside (to `.<name>.old-PID`) to make room for its replacement, and returns
    /// where it went.
    fn set_aside(&self) -> Result<PathBuf, RunDirError> {
        let old = sibling(&self.out, "old");
        fs::rename(&self.out, &old).map_err(io_error(&self.out))?;
        Ok(old)
    }

    /// Deletes the runs set aside for `<out>`: called once their replacement is complete.
    fn remove_set_aside(&self) -> Result<(), RunDirError> {
        for old in self.set_aside_runs() {
            let removed = if old.is_dir() {
                fs::remove_dir_all(&old)
            } else {
                fs::remove_file(&old)
            };
            removed.map_err(io_error(&old))?;
        }
        Ok(())
    }
}

/// A run directory being written, the one way every engine writes its runs. It holds the run directory's
/// [`RunLock`] until it is committed or dropped, and never loses what `<out>` held before: with `force`, an earlier
/// run waits beside `<out>` (`.<name>.old-PID`) until the new one is committed.
///
/// - [`RunDirWriter::create`], for runs written at once (the analytic engines): files go into a staging directory
///   that [`commit`](Self::commit) moves into place; dropped without a commit, it removes the staging directory and
///   leaves `<out>` untouched, so a run that dies leaves nothing half-written.
/// - [`RunDirWriter::in_place`] and [`RunDirWriter::resume`], for runs written over time (deep nets): files go into
///   `<out>` itself, each written atomically, so that a run that dies stays resumable from its last checkpoint.
#[derive(Debug)]
pub struct RunDirWriter {
    lock: RunLock,
    /// The staging directory, for a staged run.
    staging: Option<PathBuf>,
    /// The earlier run this writer set aside for a run written in place (`force`), restored by
    /// [`abandon`](Self::abandon).
    set_aside: Option<PathBuf>,
    committed: bool,
}

impl RunDirWriter {
    /// Locks `out` and prepares a staging directory for it; fails if another process holds the lock, or if `out`
    /// is a non-empty directory (or a file) and `force` is false.
    pub fn create(out: &Path, force: bool) -> Result<Self, RunDirError> {
        let lock = RunLock::acquire(out)?;
        if is_occupied(out) {
            if !force {
                return Err(RunDirError::Exists(out.to_path_buf()));
            }
            check_replaceable(out)?;
        }
        let staging = sibling(out, "staging");
        fs::create_dir_all(&staging).map_err(io_error(&staging))?;
        Ok(RunDirWriter {
            lock,
            staging: Some(staging),
            set_aside: None,
            committed: false,
        })
    }

    /// Locks `out` for a run written in place: an occupied `out` is set aside (only with `force`, else
    /// [`RunDirError::Exists`], and only a run: [`check_replaceable`]) and `out` is created empty. The run set
    /// aside is deleted by [`commit`](Self::commit) and put back by [`abandon`](Self::abandon); a process killed
    /// in between leaves it beside `<out>`, listed by [`RunLock::set_aside_runs`].
    pub fn in_place(out: &Path, force: bool) -> Result<Self, RunDirError> {
        let lock = RunLock::acquire(out)?;
        let mut set_aside = None;
        if is_occupied(out) {
            if !force {
                return Err(RunDirError::Exists(out.to_path_buf()));
            }
            check_replaceable(out)?;
            set_aside = Some(lock.set_aside()?);
        }
        let writer = RunDirWriter {
            lock,
            staging: None,
            set_aside,
            committed: false,
        };
        if let Err(e) = fs::create_dir_all(out) {
            let _ = writer.abandon();
            return Err(io_error(out)(e));
        }
        Ok(writer)
    }

    /// Locks the started run in `out` to continue it in place.
    pub fn resume(out: &Path) -> Result<Self, RunDirError> {
        Ok(RunDirWriter {
            lock: RunLock::acquire(out)?,
            staging: None,
            set_aside: None,
            committed: false,
        })
    }

    /// Gives up a run that failed before its commit: a staged run's staging directory goes (as on drop); a run
    /// written in place that replaced an earlier run (`force`) is deleted and the earlier run put back at
    /// `<out>`, so a failing replacement (a full disk, a bad checkpoint) loses nothing. A run written in place
    /// that replaced nothing stays, resumable. Deleting needs no free space, so this works on a full disk; if it
    /// fails all the same, the earlier run stays set aside, and only a later successful commit deletes it.
    pub fn abandon(mut self) -> Result<(), RunDirError> {
        let Some(old) = self.set_aside.take() else {
            return Ok(());
        };
        let out = self.lock.out().to_path_buf();
        if out.exists() {
            fs::remove_dir_all(&out).map_err(io_error(&out))?;
        }
        fs::rename(&old, &out).map_err(io_error(&old))
    }

    /// Where to write the run's files: the staging directory until [`commit`](Self::commit), or `<out>` itself.
    pub fn path(&self) -> &Path {
        self.staging.as_deref().unwrap_or(self.lock.out())
    }

    /// Publishes the finished run at `<out>` (moving a staged run into place), deletes the runs it replaces, and
    /// returns `<out>`.
    pub fn commit(mut self) -> Result<PathBuf, RunDirError> {
        let out = self.lock.out().to_path_buf();
        if let Some(staging) = &self.staging {
            if out.exists() {
                self.lock.set_aside()?;
            }
            fs::rename(staging, &out).map_err(io_error(staging))?;
        }
        self.committed = true;
        self.lock.remove_set_aside()?;
        Ok(out)
    }
}

impl Drop for RunDirWriter {
    fn drop(&mut self) {
        if let (false, Some(staging)) = (self.committed, &self.staging) {
            let _ = fs::remove_dir_all(staging);
        }
    }
}

/// Replaces `path` atomically: `write` fills the hidden `.<name>.tmp` beside it, which is synced to disk and then
/// renamed over `path`, so a reader (or a crash) sees the old file or the new one, never a half-written one. On
/// failure the temporary file is removed.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        let e = format!("{} names no file", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = write(&tmp)
        .and_then(|()| fs::OpenOptions::new().write(true).open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
    fs::write(path, csv_text(header, rows))
}

/// The text [`write_csv`] writes.
fn csv_text(header: &[&str], rows: impl Iterator<Item = Vec<f64>>) -> String {
    let mut text = header.join(",") + "\n";
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &(cells.join(",") + "\n");
    }
    text
}

/// A row of a run's metrics.csv: named numeric columns, NaN where a value does not apply. Every engine's rows
/// are written by [`write_rows`] (or [`rows_text`]) and read back, checked, by [`read_rows`].
pub trait MetricsRow: Sized {
    /// The column names, in order.
    const COLUMNS: &'static [&'static str];
    /// How many leading columns every file has: files written before the later columns existed lack them (read
    /// as NaN).
    const REQUIRED: usize = Self::COLUMNS.len();
    /// The values, in column order.
    fn values(&self) -> Vec<f64>;
    /// The row from exactly `COLUMNS.len()` values, or the name of the first column whose value does not fit its
    /// field (a count that is negative, fractional or not finite).
    fn from_values(values: &[f64]) -> Result<Self, &'static str>;
}

/// `rows` as metrics.csv text: the header, then one line per row (shortest round-trip decimals, `NaN`).
pub fn rows_text<R: MetricsRow>(rows: &[R]) -> String {
    csv_text(R::COLUMNS, rows.iter().map(R::values))
}

/// Writes `rows` to `path` (see [`rows_text`]).
pub fn write_rows<R: MetricsRow>(path: &Path, rows: &[R]) -> io::Result<()> {
    fs::write(path, rows_text(rows))
}

/// Reads a metrics.csv of `R` rows, checking its header and that every row has one number per column that fits.
pub fn read_rows<R: MetricsRow>(path: &Path) -> Result<Vec<R>, crate::DataError> {
    let bad = |reason: String| crate::DataError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let header = reader.headers().map_err(|e| bad(e.to_string()))?;
    let known = header.len() >= R::REQUIRED && header.len() <= R::COLUMNS.len();
    if !(known && header.iter().eq(R::COLUMNS[..header.len()].iter().copied())) {
        return Err(bad(format!(
            "the columns are {:?}, expected {:?}",
            header.iter().collect::<Vec<_>>(),
            R::COLUMNS
        )));
    }
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let mut values = record
            .iter()
            .zip(R::COLUMNS)
            .map(|(cell, column)| {
                cell.parse::<f64>().map_err(|_| {
                    bad(format!(
                        "row {}: {column} = {cell:?} is not a number",
                        line + 1
                    ))
                })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        values.resize(R::COLUMNS.len(), f64::NAN);
        let row = R::from_values(&values)
            .map_err(|column| bad(format!("row {}: {column} does not fit its field", line + 1)))?;
        rows.push(row);
    }
    Ok(rows)
}

/// `x` as a count (`from_values` of a count column), or `column` when it is not one.
pub fn count(x: f64, column: &'static str) -> Result<usize, &'static str> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 9_007_199_254_740_992.0 {
        Ok(x as usize)
    } else {
        Err(column)
    }
}

/// Where a run's `init_from` points. An absolute path names itself; a relative one is read from the run directory
/// `run` (as a relative symbolic link inside it would be, `..` taken lexically), so `init_from = "../erm"` in
/// `results/x/ft/config.toml` names `results/x/erm` wherever `results/` is moved.
pub fn resolve_init_from(run: &Path, init_from: &Path) -> PathBuf {
    if init_from.is_absolute() {
        init_from.to_path_buf()
    } else {
        lexical(&run.join(init_from))
    }
}

/// `path` with `.` dropped and each `..` removing the component before it (when there is one to remove).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// How the run directory `out` records the parent run `parent` named on the command line (relative to the current
/// directory): `../<name>` when the two are siblings, so that they can move together (see [`resolve_init_from`]),
/// otherwise the parent's absolute path.
pub fn init_from_record(out: &Path, parent: &Path) -> io::Result<PathBuf> {
    let (out, parent) = (
        lexical(&std::path::absolute(out)?),
        lexical(&std::path::absolute(parent)?),
    );
    Ok(match parent.file_name() {
        Some(name) if out.parent() == parent.parent() => Path::new("..").join(name),
        _ => parent,
    })
}

/// Whether the two paths name one directory: equal once made absolute and lexical, or equal once symbolic links
/// are resolved (when both exist).
pub fn same_dir(a: &Path, b: &Path) -> bool {
    let abs = |p: &Path| std::path::absolute(p).map(|p| lexical(&p)).ok();
    abs(a).is_some_and(|x| Some(x) == abs(b))
        || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Refuses a run `out` whose `init_from` (resolved, see [`resolve_init_from`]) is `out` itself: the run would record
/// itself as its parent (and `--force` would replace the weights it starts from), so a replay gives other numbers.
pub fn check_not_own_parent(out: &Path, init_from: &Path) -> Result<(), RunDirError> {
    let parent = resolve_init_from(out, init_from);
    if same_dir(out, &parent) {
        return Err(RunDirError::OwnParent {
            out: out.to_path_buf(),
            init_from: init_from.to_path_buf(),
        });
    }
    Ok(())
}

/// The SHA-256 (hex) of the regular file `path`, read in pieces (a symbolic link or a device is refused).
pub fn file_sha256(path: &Path) -> io::Result<String> {
    use io::Read as _;
    use sha2::{Digest, Sha256};
    if !fs::symlink_metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The SHA-256 of the files `names` of the run directory `dir`, as a summary.json records them
/// (`artefacts_sha256`) when the run commits.
pub fn artefact_hashes(dir: &Path, names: &[&str]) -> io::Result<BTreeMap<String, String>> {
    names
        .iter()
        .map(|&name| Ok((name.to_string(), file_sha256(&dir.join(name))?)))
        .collect()
}

/// Checks the files `names` of the run directory `dir` against the hashes its summary.json recorded; `recorded` is
/// `None` for a run written before samlab recorded them, which passes unchecked. An artefact edited, replaced or
/// damaged since its run wrote it is bad input.
pub fn check_artefacts(
    dir: &Path,
    recorded: Option<&BTreeMap<String, String>>,
    names: &[&str],
) -> Result<(), BadInput> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    for &name in names {
        let path = dir.join(name);
        let fail = |why: String| {
            BadInput(format!(
                "{} is not the file its run wrote ({why}); the run's summary.json records the SHA-256 of its \
                 artefacts so that nothing edited, replaced or damaged is judged: train the run again",
                path.display()
            ))
        };
        let want = recorded
            .get(name)
            .ok_or_else(|| fail("summary.json records no SHA-256 for it".into()))?;
        let got = file_sha256(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if &got != want {
            return Err(fail(format!("SHA-256 {got}, recorded {want}")));
        }
    }
    Ok(())
}

/// Serde for `f64` fields that may be NaN: JSON has no NaN, so it is written as `null` and read back as NaN.
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    /// A finite `v`, or `null`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    /// A number, or NaN for `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    /// The value of a field that records written by older versions lack.
    pub fn absent() -> f64 {
        f64::NAN
    }
}

#[cfg(test)]
mod tests;
