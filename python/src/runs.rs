//! `samlab.runs.run` for the analytic engines: a config.toml (or a config dict, turned into its TOML text here) is
//! parsed as `samlab run --config` parses it and executed in-process through the engine's `RunConfig`, with a
//! Python callable watching its progress. Deep runs need the burn engine, which this package does not link: the
//! Python module runs them through the `samlab` binary, with the TOML text [`config_toml`] writes.

use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use samlab_analytic::diag::run::DiagRunConfig;
use samlab_analytic::relu::run::ReluRunConfig;
use samlab_core::run::{engine_of, Observer, RunConfig};

/// A config dict's JSON value as a TOML value: `null` in a table is a key left out (what serde reads as `None`),
/// `null` in an array, a top level that is not a table and an integer beyond i64 are refused, naming the key.
fn to_toml(value: serde_json::Value, key: &str) -> PyResult<Option<toml::Value>> {
    use serde_json::Value as J;
    let at = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    Ok(Some(match value {
        J::Null => return Ok(None),
        J::Bool(b) => toml::Value::Boolean(b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(_)) if n.is_u64() => {
                return Err(PyValueError::new_err(format!(
                    "config key {key}: the integer {n} is too large for TOML (at most {})",
                    i64::MAX
                )))
            }
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => {
                return Err(PyValueError::new_err(format!(
                    "config key {key}: {n} is not a number TOML holds"
                )))
            }
        },
        J::String(s) => toml::Value::String(s),
        J::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    to_toml(v, &format!("{key}[{i}]"))?.ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "config key {key}[{i}]: None in a list (TOML has no null)"
                        ))
                    })
                })
                .collect::<PyResult<_>>()?,
        ),
        J::Object(map) => {
            let mut table = toml::Table::new();
            for (k, v) in map {
                if let Some(v) = to_toml(v, &at(&k))? {
                    table.insert(k, v);
                }
            }
            toml::Value::Table(table)
        }
    }))
}

/// A config dict, as JSON text, as config.toml text (keys whose value is `None` left out).
#[pyfunction]
fn config_toml(json: &str) -> PyResult<String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        PyValueError::new_err(format!("the config is not a dict of TOML values: {e}"))
    })?;
    match to_toml(value, "")? {
        Some(toml::Value::Table(table)) => toml::to_string(&table).map_err(|e| {
            PyValueError::new_err(format!("the config cannot be written as TOML: {e}"))
        }),
        _ => Err(PyValueError::new_err(
            "the config must be a dict (a TOML table)",
        )),
    }
}

/// Bad input naming the config's source, as `samlab run --config` words it.
fn not_a_config(source: &str, reason: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{source} is not a samlab run config: {reason}"))
}

/// The engine of a config.toml text (`"diag"`, `"relu"` or `"deep"`): its `engine` key, or for configs written
/// before that key a key only its engine's config has; `source` names the config in the message.
#[pyfunction]
fn config_engine(text: &str, source: &str) -> PyResult<&'static str> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| not_a_config(source, format!("not TOML: {e}")))?;
    engine_of(&table).map_err(|why| not_a_config(source, why))
}

/// A run's error as Python's: bad input (samlab-core's test, the one that decides the CLI's exit status 2) is a
/// `ValueError`, a failed file operation an `OSError`, anything else a `RuntimeError`; the message is the error
/// chain, as the CLI prints it.
pub(crate) fn run_error(e: anyhow::Error) -> PyErr {
    let message = format!("{e:#}");
    if e.chain().any(samlab_core::is_bad_input) {
        PyValueError::new_err(message)
    } else if e.chain().any(|c| c.is::<std::io::Error>()) {
        PyOSError::new_err(message)
    } else {
        PyRuntimeError::new_err(message)
    }
}

/// An [`Observer`] that hands each count to a Python callable `progress(done, total, unit)`, holding the GIL only
/// for the call, and checks for signals each time (Ctrl-C). The first exception (the callable's own, or
/// `KeyboardInterrupt`) is kept, nothing more is called, and the run is asked to stop: an analytic run stops there
/// and writes nothing, and the exception is raised when it returns.
struct PyProgress {
    callback: Option<Py<PyAny>>,
    total: u64,
    unit: &'static str,
    error: Option<PyErr>,
}

impl PyProgress {
    /// Hands `done` on (nothing more once a call failed).
    fn report(&mut self, done: u64) {
        if self.error.is_some() {
            return;
        }
        let (total, unit) = (self.total, self.unit);
        let result = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(callback) = &self.callback {
                callback.call1(py, (done, total, unit))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            self.error = Some(e);
        }
    }
}

impl Observer for PyProgress {
    fn started(&mut self, done: u64, total: u64, unit: &'static str) {
        self.total = total;
        self.unit = unit;
        self.report(done);
    }

    fn advanced(&mut self, done: u64) -> bool {
        self.report(done);
        self.error.is_none()
    }
}

/// Executes `config` into `out` with the GIL released (the engine reports its counts, the last one the updates it
/// did), then raises what the progress callable raised, if anything.
fn execute<C: RunConfig + Send>(
    py: Python<'_>,
    config: C,
    out: PathBuf,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<u64>
where
    C::Outcome: Send,
{
    let mut observer = PyProgress {
        callback: progress,
        total: 0,
        unit: "",
        error: None,
    };
    let observer_ref = &mut observer;
    let result = py.detach(move || config.execute(&out, force, observer_ref));
    if let Some(e) = observer.error.take() {
        return Err(e);
    }
    result.map_err(run_error)?;
    py.check_signals()?;
    Ok(observer.total)
}

/// Parses the config.toml text `text` (named `source` in messages) as `samlab run --config` does and runs it into
/// `out` (an occupied `out` is replaced only with `force`, and only when it holds a run), calling `progress(done,
/// total, unit)` as the run advances (about 200 times). Returns the total count of units. Only the analytic
/// engines: a deep config is a `ValueError`.
#[pyfunction]
#[pyo3(signature = (text, source, out, force=false, progress=None))]
fn run_config(
    py: Python<'_>,
    text: &str,
    source: &str,
    out: PathBuf,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<u64> {
    let engine = config_engine(text, source)?;
    let bad = |e: toml::de::Error| not_a_config(source, format!("as a {engine} run config: {e}"));
    match engine {
        "diag" => {
            let config: DiagRunConfig = toml::from_str(text).map_err(bad)?;
            execute(py, config, out, force, progress)
        }
        "relu" => {
            let config: ReluRunConfig = toml::from_str(text).map_err(bad)?;
            execute(py, config, out, force, progress)
        }
        _ => Err(PyValueError::new_err(format!(
            "{source} is a {engine} run config: this package runs only the analytic engines (diag, relu) \
             in-process; samlab.runs.run hands deep runs to the samlab binary"
        ))),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(config_toml, m)?)?;
    m.add_function(wrap_pyfunction!(config_engine, m)?)?;
    m.add_function(wrap_pyfunction!(run_config, m)?)?;
    Ok(())
}
