//! One process plans and runs a sweep at a time: [`SweepLock`] holds an exclusive advisory lock (`flock`) on
//! `<dir>/.sweep.lock` while `sweep run`, `sweep submit` or `sweep plan` works on the sweep directory, so a second
//! one started on the same directory is refused (naming the process that holds it) instead of starting the same
//! tasks again, overwriting their logs and listing the first one's runs as failed.

use std::fs;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::{io_error, SweepError};

/// The lock of a sweep directory, held while the value lives (the operating system drops it when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct SweepLock {
    _file: fs::File,
}

/// The lock file of the sweep directory `dir`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(".sweep.lock")
}

impl SweepLock {
    /// Takes the lock of the sweep directory `dir` (creating it if needed) without waiting, and writes this
    /// process's id into the lock file; another process holding it is [`SweepError::Invalid`], naming its id.
    pub fn acquire(dir: &Path) -> Result<SweepLock, SweepError> {
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let path = lock_path(dir);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(32).read_to_string(&mut holder);
                let holder = match holder.trim() {
                    pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("process {pid}")
                    }
                    _ => "another process".into(),
                };
                return Err(SweepError::Invalid(format!(
                    "{} is being planned or run by another samlab sweep ({holder} holds {}): wait for it to end \
                     (`samlab sweep status {}` shows its runs), or use another sweep directory",
                    dir.display(),
                    path.display(),
                    dir.display()
                )));
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
        let record = |f: &mut fs::File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())
        };
        record(&mut file).map_err(io_error("write", &path))?;
        Ok(SweepLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_sweep_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sweep");
        let first = SweepLock::acquire(&dir).unwrap();
        let err = SweepLock::acquire(&dir).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("process {}", std::process::id()))
                && text.contains("being planned or run by another samlab sweep"),
            "{text}"
        );
        drop(first);
        let again = SweepLock::acquire(&dir).unwrap();
        drop(again);
        assert_eq!(
            fs::read_to_string(lock_path(&dir)).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
