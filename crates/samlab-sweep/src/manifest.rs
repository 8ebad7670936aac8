//! The manifest of a sweep: its runs with stable ids, written once and checksummed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use samlab_core::run_dir::write_atomic;
use serde::{Deserialize, Serialize};

use crate::grid::Grid;
use crate::{invalid, io_error, sha256_hex, SweepError};

const FORMAT: u32 = 1;

/// The runs of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// The axis keys, in loop order.
    pub axes: Vec<String>,
    /// The runs, indexed by their position (the SLURM array task id).
    pub runs: Vec<RunEntry>,
}

/// One run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The first 16 hexadecimal digits of the SHA-256 of `config` (and `dir`, when given): its run directory is
    /// `runs/<id>` unless `dir` names it.
    pub id: String,
    /// The value of every axis key at this run.
    pub values: Vec<(String, serde_json::Value)>,
    /// The run's config.toml.
    pub config: String,
    /// The run directory, relative to the sweep directory (runs planned elsewhere, such as `reproduce`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The id of a run config: a content hash, stable across machines and grid edits that keep the config.
pub fn run_id(config: &str) -> String {
    sha256_hex(config.as_bytes())[..16].to_string()
}

/// The id of a run entry: of its config, or of its directory and config when it names its directory.
fn entry_id(config: &str, dir: Option<&str>) -> String {
    match dir {
        None => run_id(config),
        Some(d) => run_id(&format!("{d}\n{config}")),
    }
}

impl Manifest {
    /// Expands `grid` and checks every run with `check` (the run's engine's checks on its config.toml, before
    /// anything is written), naming the run and its axis values when one fails.
    pub fn plan(
        grid: &Grid,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<Manifest, SweepError> {
        let mut runs: Vec<RunEntry> = Vec::new();
        let mut ids = BTreeSet::new();
        for (index, point) in grid.points()?.into_iter().enumerate() {
            let config = toml::to_string(&point.config)
                .map_err(|e| SweepError::Invalid(format!("run {index}: {e}")))?;
            let where_ = || {
                point
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            check(&config).or_else(|e| invalid(format!("run {index} ({}): {e}", where_())))?;
            let id = run_id(&config);
            if !ids.insert(id.clone()) {
                return invalid(format!(
                    "run {index} ({}) has the same config as an earlier run",
                    where_()
                ));
            }
            let values = point
                .values
                .iter()
                .map(|(k, v)| Ok((k.clone(), json(v)?)))
                .collect::<Result<_, SweepError>>()?;
            runs.push(RunEntry {
                id,
                values,
                config,
                dir: None,
            });
        }
        Ok(Manifest {
            format: FORMAT,
            axes: grid.axes.iter().flat_map(|a| a.keys.clone()).collect(),
            runs,
        })
    }

    /// The manifest of runs planned elsewhere: `(run directory relative to the sweep directory, config.toml)`, with
    /// no axes. Two runs in one directory are refused.
    pub fn of_runs(runs: Vec<(String, String)>) -> Result<Manifest, SweepError> {
        let mut dirs = BTreeSet::new();
        let mut entries = Vec::with_capacity(runs.len());
        for (dir, config) in runs {
            if !dirs.insert(dir.clone()) {
                return invalid(format!("two runs in {dir}"));
            }
            confined(Path::new("."), &dir)
                .or_else(|e| invalid(format!("run directory {dir:?}: {e}")))?;
            entries.push(RunEntry {
                id: entry_id(&config, Some(&dir)),
                values: vec![],
                config,
                dir: Some(dir),
            });
        }
        Ok(Manifest {
            format: FORMAT,
            axes: vec![],
            runs: entries,
        })
    }

    /// Writes `dir/manifest.json` and its checksum; a directory that holds another sweep's manifest is refused,
    /// the same manifest is left as it is.
    pub fn write(&self, dir: &Path) -> Result<(), SweepError> {
        let path = dir.join("manifest.json");
        if path.exists() {
            if Manifest::load(dir)? == *self {
                return Ok(());
            }
            return invalid(format!(
                "{} holds another sweep (its manifest.json differs from this grid's); choose another --out",
                dir.display()
            ));
        }
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let text = serde_json::to_string_pretty(self).expect("manifests serialize");
        let sum = dir.join("manifest.sha256");
        write_atomic(&sum, |p| fs::write(p, sha256_hex(text.as_bytes()) + "\n"))
            .map_err(io_error("write", &sum))?;
        write_atomic(&path, |p| fs::write(p, &text)).map_err(io_error("write", &path))
    }

    /// Reads `dir/manifest.json`, refusing one that does not match its checksum or whose runs' ids do not match
    /// their configs (edited after planning).
    pub fn load(dir: &Path) -> Result<Manifest, SweepError> {
        let path = dir.join("manifest.json");
        let text = samlab_core::run_dir::read_capped(&path, 1 << 30).map_err(|e| {
            SweepError::Invalid(format!(
                "{} is not a sweep directory: cannot read {}: {e}",
                dir.display(),
                path.display()
            ))
        })?;
        let sum_path = dir.join("manifest.sha256");
        let sum = fs::read_to_string(&sum_path)
            .map_err(|e| SweepError::Invalid(format!("cannot read {}: {e}", sum_path.display())))?;
        let edited = || {
            SweepError::Invalid(format!(
                "{} was edited after the sweep was planned (it does not match {}); plan the edited grid into a \
                 new directory",
                path.display(),
                sum_path.display()
            ))
        };
        if sum.trim() != sha256_hex(&text) {
            return Err(edited());
        }
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
            SweepError::Invalid(format!("{} is not a sweep manifest: {e}", path.display()))
        })?;
        if manifest.format != FORMAT {
            return invalid(format!(
                "{}: manifest format {} (this samlab reads {FORMAT})",
                path.display(),
                manifest.format
            ));
        }
        if manifest
            .runs
            .iter()
            .any(|r| r.id != entry_id(&r.config, r.dir.as_deref()))
        {
            return Err(edited());
        }
        // A manifest is data: its runs may write only inside the sweep directory.
        for (index, run) in manifest.runs.iter().enumerate() {
            let rel = match &run.dir {
                Some(d) => d.clone(),
                None => format!("runs/{}", run.id),
            };
            confined(dir, &rel).or_else(|e| {
                invalid(format!(
                    "{}: run {index} names the run directory {rel:?}, which {e}",
                    path.display()
                ))
            })?;
        }
        Ok(manifest)
    }

    /// Run `index`, or an error naming the valid range.
    pub fn run(&self, index: usize) -> Result<&RunEntry, SweepError> {
        self.runs.get(index).ok_or_else(|| {
            SweepError::Invalid(format!(
                "--index {index} is outside the sweep's {} runs",
                self.runs.len()
            ))
        })
    }
}

/// The run directory of `run` in the sweep directory `dir`.
pub fn run_dir(dir: &Path, run: &RunEntry) -> PathBuf {
    match &run.dir {
        Some(d) => dir.join(d),
        None => dir.join("runs").join(&run.id),
    }
}

/// Checks that the run directory `rel` stays inside the sweep directory `dir`: a relative path of plain names (no
/// root, no `..`, not empty), none of whose parts that exist under `dir` is a symbolic link (which could lead
/// anywhere). The error says which rule `rel` breaks.
fn confined(dir: &Path, rel: &str) -> Result<(), String> {
    use std::path::Component;
    let path = Path::new(rel);
    if rel.is_empty() || path.components().next().is_none() {
        return Err("is empty (it must be a directory inside the sweep directory)".into());
    }
    let mut at = dir.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(name) => at.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(
                    "goes up with `..` (run directories must stay inside the sweep directory)"
                        .into(),
                )
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(
                    "is absolute (run directories are relative to the sweep directory)".into(),
                )
            }
        }
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "passes through the symbolic link {} (run directories must stay inside the sweep directory)",
                at.display()
            ));
        }
    }
    if at == dir {
        return Err("is the sweep directory itself".into());
    }
    Ok(())
}

/// The log of task `index` in the sweep directory `dir`.
pub fn task_log(dir: &Path, index: usize) -> PathBuf {
    dir.join("logs").join(format!("task-{index}.log"))
}

fn json(v: &toml::Value) -> Result<serde_json::Value, SweepError> {
    serde_json::to_value(v).map_err(|e| SweepError::Invalid(format!("axis value {v}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::parse(
            "[base]\nbatch = 8\n[axes]\nm = [2, 4, 3]\nseed = [0, 1]\n",
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn plans_check_every_run_and_manifests_refuse_edits() {
        let check = |c: &str| -> Result<(), String> {
            let t: toml::Table = toml::from_str(c).unwrap();
            let m = t["m"].as_integer().unwrap();
            if 8 % m == 0 {
                Ok(())
            } else {
                Err(format!("m = {m} does not divide the batch size 8"))
            }
        };
        let err = Manifest::plan(&grid(), &check).unwrap_err();
        assert!(
            err.to_string()
                .contains("run 4 (m = 3, seed = 0): m = 3 does not divide"),
            "{err}"
        );
        let ok = Manifest::plan(&grid(), &|_| Ok(())).unwrap();
        assert_eq!(ok.runs.len(), 6);
        assert_eq!(ok.runs[0].id, run_id("batch = 8\nm = 2\nseed = 0\n"));
        let tmp = tempfile::tempdir().unwrap();
        ok.write(tmp.path()).unwrap();
        ok.write(tmp.path()).unwrap();
        assert_eq!(Manifest::load(tmp.path()).unwrap(), ok);
        let mut other = ok.clone();
        other.runs.pop();
        assert!(other
            .write(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("another sweep"));
        let path = tmp.path().join("manifest.json");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("seed = 1", "seed = 7")).unwrap();
        let err = Manifest::load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("edited after"), "{err}");
        assert!(ok
            .run(6)
            .unwrap_err()
            .to_string()
            .contains("outside the sweep's 6 runs"));
    }
}
