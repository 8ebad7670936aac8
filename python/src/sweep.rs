//! `samlab.runs.read_sweep`: a sweep directory through samlab-sweep itself: its manifest (checked against its
//! checksum, run directories confined to the sweep), each run's state, and the mean ± std table over seeds that
//! `samlab sweep report` writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use samlab_sweep::manifest::{run_dir, Manifest};
use samlab_sweep::{report, status, SweepError};

/// Bad input (a damaged, edited or escaping manifest, an unknown metric) is a ValueError, the rest an OSError.
fn py_err(e: SweepError) -> PyErr {
    if e.is_bad_input() {
        PyValueError::new_err(e.to_string())
    } else {
        PyOSError::new_err(e.to_string())
    }
}

/// Axis values as JSON text (the manifest's own values: numbers, strings, booleans).
fn values_json(values: &[(String, serde_json::Value)]) -> String {
    serde_json::to_string(&values.iter().cloned().collect::<serde_json::Map<_, _>>())
        .expect("JSON values serialize")
}

/// One run of a sweep: index, id, run directory, state (`done`, `diverged`, `running`, `queued`, `failed`,
/// `missing`), axis values (JSON text) and config.toml.
type SweepRun = (usize, String, String, String, String, String);

/// The sweep in `dir`: its axes and runs, with each run's state as `samlab sweep status` sees it without SLURM's
/// queue (a queued task counts as failed until it starts).
#[pyfunction]
fn sweep_runs(py: Python<'_>, dir: PathBuf) -> PyResult<(Vec<String>, Vec<SweepRun>)> {
    py.detach(|| {
        let manifest = Manifest::load(&dir).map_err(py_err)?;
        let states = status::states(&dir, &manifest, &BTreeMap::new());
        let runs = manifest
            .runs
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (run, state))| {
                (
                    i,
                    run.id.clone(),
                    run_dir(&dir, run).to_string_lossy().into_owned(),
                    state.to_string(),
                    values_json(&run.values),
                    run.config.clone(),
                )
            })
            .collect();
        Ok((manifest.axes, runs))
    })
}

/// One row of the table: axis values but the seeds (JSON text), runs, diverged runs, and per metric (mean,
/// sample standard deviation (0 for one value), finite values).
type TableRow = (String, usize, usize, Vec<(f64, f64, usize)>);

/// The table: metrics, rows, and the unfinished runs (index, id).
type Table = (Vec<String>, Vec<TableRow>, Vec<(usize, String)>);

/// `samlab sweep report`'s table of the sweep in `dir`: the metrics (dotted summary.json keys; every numeric key
/// the finished runs share when `metrics` is empty), one row per group of runs that differ only in their seed,
/// and the unfinished runs (index, id).
#[pyfunction]
fn sweep_table(py: Python<'_>, dir: PathBuf, metrics: Vec<String>) -> PyResult<Table> {
    py.detach(|| {
        let manifest = Manifest::load(&dir).map_err(py_err)?;
        let r = report::aggregate(&dir, &manifest, &metrics).map_err(py_err)?;
        let rows = r
            .rows
            .into_iter()
            .map(|row| {
                (
                    values_json(&row.values),
                    row.runs,
                    row.diverged,
                    row.metrics,
                )
            })
            .collect();
        Ok((r.metrics, rows, r.unfinished))
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sweep_runs, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_table, m)?)?;
    Ok(())
}
