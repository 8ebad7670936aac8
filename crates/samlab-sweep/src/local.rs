//! The local executor: `samlab sweep task DIR --index I` as child processes, `jobs` at a time, each writing its
//! output to `<dir>/logs/task-<I>.log`.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::manifest::task_log;
use crate::{io_error, SweepError};

/// A task that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// Its index.
    pub index: usize,
    /// Its exit status, in words.
    pub status: String,
}

/// Runs `indices` of the sweep in `dir` with the samlab binary `exe`, at most `jobs` at once, calling `done`
/// after each task; returns the tasks that failed.
pub fn run(
    dir: &Path,
    exe: &Path,
    indices: &[usize],
    jobs: usize,
    done: &mut dyn FnMut(usize, bool),
) -> Result<Vec<TaskFailure>, SweepError> {
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(io_error("create", &logs))?;
    let mut waiting = indices.iter().copied();
    let mut running: Vec<(usize, Child)> = Vec::new();
    let mut failures = Vec::new();
    loop {
        while running.len() < jobs.max(1) {
            let Some(index) = waiting.next() else { break };
            let path = task_log(dir, index);
            let log = fs::File::create(&path).map_err(io_error("create", &path))?;
            let err = log.try_clone().map_err(io_error("open", &path))?;
            let child = Command::new(exe)
                .args(["sweep", "task"])
                .arg(dir)
                .args(["--index", &index.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(io_error("start", exe))?;
            running.push((index, child));
        }
        if running.is_empty() {
            return Ok(failures);
        }
        let mut i = 0;
        let mut finished = false;
        while i < running.len() {
            match running[i].1.try_wait().map_err(io_error("wait for", exe))? {
                Some(status) => {
                    let (index, _) = running.swap_remove(i);
                    if !status.success() {
                        failures.push(TaskFailure {
                            index,
                            status: status.to_string(),
                        });
                    }
                    done(index, status.success());
                    finished = true;
                }
                None => i += 1,
            }
        }
        if !finished {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
