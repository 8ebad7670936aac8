//! The SLURM executor: one job array per submission (one task per run: `samlab sweep task DIR --index
//! $SLURM_ARRAY_TASK_ID`), or one per wave of runs that start from earlier runs, then a report job that waits for
//! it (`--dependency=afterany`, so failures are reported too). Job ids are kept in `<dir>/slurm/jobs.json` for
//! `status`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use samlab_core::run_dir::write_json;
use serde::{Deserialize, Serialize};

use crate::{invalid, io_error, SweepError};

/// sbatch options passed through to every job.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (SLURM's formats: `MM`, `HH:MM:SS`, `D-HH`, ...).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<usize>,
    /// `--mem` (`4G`, ...).
    pub mem: Option<String>,
    /// `--gres` (`gpu:1`, ...).
    pub gres: Option<String>,
    /// The array's throttle: at most this many tasks at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
    /// Further sbatch arguments, verbatim (`--account=X`, `--qos=Y`).
    pub extra: Vec<String>,
}

impl SlurmOptions {
    /// Refuses values that would break the script: empty strings, line breaks, zero counts.
    pub fn check(&self) -> Result<(), SweepError> {
        let named = [
            ("--partition", &self.partition),
            ("--time", &self.time),
            ("--mem", &self.mem),
            ("--gres", &self.gres),
        ];
        for (flag, value) in named {
            if let Some(v) = value {
                check_word(flag, v)?;
            }
        }
        for v in &self.extra {
            check_word("--sbatch-arg", v)?;
        }
        if self.cpus_per_task == Some(0) {
            return invalid("--cpus-per-task must be at least 1");
        }
        if self.max_parallel == Some(0) {
            return invalid("--max-parallel must be at least 1");
        }
        Ok(())
    }

    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("{flag}={v}"));
            }
        };
        push("--partition", self.partition.clone());
        push("--time", self.time.clone());
        push("--cpus-per-task", self.cpus_per_task.map(|n| n.to_string()));
        push("--mem", self.mem.clone());
        push("--gres", self.gres.clone());
        a.extend(self.extra.iter().cloned());
        a
    }
}

fn check_word(flag: &str, v: &str) -> Result<(), SweepError> {
    if v.trim().is_empty() || v.contains(['\n', '\r', '\0']) {
        return invalid(format!("{flag} {v:?}: must be non-empty and on one line"));
    }
    Ok(())
}

/// One submission: the array job and its report job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The array job's id.
    pub array_job: String,
    /// The report job's id.
    pub report_job: String,
    /// The task indices submitted.
    pub indices: Vec<usize>,
}

fn jobs_path(dir: &Path) -> PathBuf {
    dir.join("slurm").join("jobs.json")
}

/// Every submission made for the sweep in `dir`, oldest first.
pub fn submissions(dir: &Path) -> Result<Vec<Submission>, SweepError> {
    let path = jobs_path(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| SweepError::Invalid(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Single-quotes `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `0-3,7,9-10`.
fn ranges(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end += 1;
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The sbatch script of a job array running `indices` of the sweep in `dir` with the samlab binary `exe`.
pub fn array_script(dir: &Path, exe: &Path, indices: &[usize], opts: &SlurmOptions) -> String {
    let throttle = opts.max_parallel.map_or(String::new(), |n| format!("%{n}"));
    let mut s = String::from("#!/bin/sh\n#SBATCH --job-name=samlab-sweep\n");
    s += &format!("#SBATCH --array={}{throttle}\n", ranges(indices));
    s += &format!(
        "#SBATCH --output={}\n",
        dir.join("logs").join("task-%a.log").display()
    );
    for a in opts.args() {
        s += &format!("#SBATCH {a}\n");
    }
    s += &format!(
        "exec {} sweep task {} --index \"$SLURM_ARRAY_TASK_ID\"\n",
        quote(&exe.to_string_lossy()),
        quote(&dir.to_string_lossy())
    );
    s
}

fn sbatch(args: &[String]) -> Result<String, SweepError> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| {
            SweepError::Slurm(format!(
                "cannot run sbatch ({e}): is SLURM installed and on the PATH?"
            ))
        })?;
    if !out.status.success() {
        return Err(SweepError::Slurm(format!(
            "sbatch {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SweepError::Slurm(format!(
            "sbatch printed no job id: {text:?}"
        )));
    }
    Ok(id)
}

/// Submits `indices` of the sweep in `dir` as a job array and its report job, and records them. The scripts name
/// `dir` by its absolute path, so tasks find it whatever directory SLURM starts them in.
pub fn submit(
    dir: &Path,
    exe: &Path,
    indices: &[usize],
    opts: &SlurmOptions,
) -> Result<Submission, SweepError> {
    let dir = &dir.canonicalize().map_err(io_error("find", dir))?;
    let report = [
        "sweep".to_string(),
        "report".into(),
        dir.to_string_lossy().into_owned(),
    ];
    let mut s = submit_waves(dir, exe, &[indices.to_vec()], opts, &report)?;
    Ok(s.pop().expect("one wave"))
}

/// Submits waves of the sweep in `dir`, one job array each, every wave after the previous one has ended
/// (`afterany`: a run whose source failed fails too, and is reported); then `samlab REPORT...` after the last
/// wave. Records them (one submission per wave) and returns them.
pub fn submit_waves(
    dir: &Path,
    exe: &Path,
    waves: &[Vec<usize>],
    opts: &SlurmOptions,
    report: &[String],
) -> Result<Vec<Submission>, SweepError> {
    opts.check()?;
    let dir = &dir.canonicalize().map_err(io_error("find", dir))?;
    let mut all = submissions(dir)?;
    let slurm_dir = dir.join("slurm");
    for d in [&slurm_dir, &dir.join("logs")] {
        fs::create_dir_all(d).map_err(io_error("create", d))?;
    }
    let mut arrays: Vec<String> = vec![];
    for (k, indices) in waves.iter().enumerate() {
        let script = slurm_dir.join(format!("array-{}.sbatch", all.len() + k));
        fs::write(&script, array_script(dir, exe, indices, opts))
            .map_err(io_error("write", &script))?;
        let mut args = vec![];
        if let Some(previous) = arrays.last() {
            args.push(format!("--dependency=afterany:{previous}"));
        }
        args.push(script.to_string_lossy().into_owned());
        arrays.push(sbatch(&args)?);
    }
    let last = arrays
        .last()
        .ok_or_else(|| SweepError::Invalid("nothing to submit".into()))?;
    let mut args = vec![
        "--job-name=samlab-sweep-report".to_string(),
        format!("--dependency=afterany:{last}"),
        format!("--output={}", dir.join("logs").join("report.log").display()),
    ];
    args.extend(opts.args().into_iter().filter(|a| !a.starts_with("--gres")));
    let command: Vec<String> = std::iter::once(exe.to_string_lossy().into_owned())
        .chain(report.iter().cloned())
        .map(|a| quote(&a))
        .collect();
    args.push(format!("--wrap=exec {}", command.join(" ")));
    let report_job = sbatch(&args)?;
    let submitted: Vec<Submission> = arrays
        .into_iter()
        .zip(waves)
        .map(|(array_job, indices)| Submission {
            array_job,
            report_job: report_job.clone(),
            indices: indices.clone(),
        })
        .collect();
    all.extend(submitted.iter().cloned());
    let path = jobs_path(dir);
    write_json(&path, &all).map_err(io_error("write", &path))?;
    Ok(submitted)
}

/// What `squeue -h ARGS` prints, or an error with its stderr.
fn squeue(args: &[&str]) -> Result<String, SweepError> {
    let out = Command::new("squeue")
        .arg("-h")
        .args(args)
        .output()
        .map_err(|e| SweepError::Slurm(format!("cannot run squeue: {e}")))?;
    if !out.status.success() {
        return Err(SweepError::Slurm(format!(
            "squeue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// SLURM's state of every queued or running task of the sweep's array jobs, by task index (empty when no job was
/// submitted; an error when squeue fails).
pub fn queue(dir: &Path) -> Result<BTreeMap<usize, String>, SweepError> {
    let jobs: Vec<String> = submissions(dir)?.into_iter().map(|s| s.array_job).collect();
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut q = BTreeMap::new();
    for line in squeue(&["-r", "-o", "%i|%T"])?.lines() {
        let Some((id, state)) = line.split_once('|') else {
            continue;
        };
        let Some((job, task)) = id.split_once('_') else {
            continue;
        };
        if let (true, Ok(task)) = (jobs.iter().any(|j| j == job), task.parse()) {
            q.insert(task, state.to_string());
        }
    }
    Ok(q)
}

/// Waits until none of `jobs` is queued or running any more, or `timeout` passes (an error).
pub fn wait(jobs: &[String], timeout: Duration) -> Result<(), SweepError> {
    let start = Instant::now();
    loop {
        // A failing squeue (a controller restarting) is asked again until the timeout.
        let listed = squeue(&["-o", "%F"]);
        if listed.is_ok_and(|l| !l.lines().any(|l| jobs.iter().any(|j| j == l.trim()))) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(SweepError::Slurm(format!(
                "jobs {} still queued after {} s",
                jobs.join(","),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_paths_and_compress_indices() {
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(ranges(&[5]), "5");
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            gres: Some("gpu:1".into()),
            max_parallel: Some(4),
            ..Default::default()
        };
        let s = array_script(
            Path::new("/s w/it's"),
            Path::new("/bin/samlab"),
            &[0, 1, 2],
            &opts,
        );
        assert!(s.contains("#SBATCH --array=0-2%4\n"), "{s}");
        assert!(
            s.contains("#SBATCH --partition=gpu\n#SBATCH --gres=gpu:1\n"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "exec '/bin/samlab' sweep task '/s w/it'\\''s' --index \"$SLURM_ARRAY_TASK_ID\"\n"
            ),
            "{s}"
        );
        let bad = SlurmOptions {
            time: Some("1:00\n#SBATCH --x".into()),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("--time"));
    }
}
