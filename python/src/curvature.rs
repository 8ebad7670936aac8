//! `samlab.curvature`: the spectral engines of `samlab_core::spectral` on an operator given as a Python callable.

use std::sync::Mutex;

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use samlab_core::spectral::{
    asymmetry as asymmetry_of, extreme_eigenvectors, hutchinson_diagonal, hutchinson_trace,
    hutchpp_trace, slq_density, DensityConfig, LanczosConfig, SymmetricOperator,
};
use samlab_core::{limits, ConfigError};

use crate::IntoPyResult;

/// A Python callable `matvec(v) -> A v` as a [`SymmetricOperator`].
///
/// The engines run with the GIL released; each product takes it back, checks for signals (Ctrl-C), calls
/// `matvec` and checks what it returned. The first error is kept and every later product returns zeros at once,
/// which ends the engine quickly (a zero product closes a Krylov space); the caller then raises the error.
struct PyOperator {
    matvec: Py<PyAny>,
    dim: usize,
    error: Mutex<Option<PyErr>>,
}

impl PyOperator {
    fn new(matvec: Py<PyAny>, dim: usize) -> PyResult<Self> {
        if dim == 0 {
            return Err(PyValueError::new_err("dim must be at least 1, got 0"));
        }
        limits::product("dim", &[dim], limits::MAX_ELEMENTS).or_value_error()?;
        Ok(PyOperator {
            matvec,
            dim,
            error: Mutex::new(None),
        })
    }

    fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The error a product raised, if any, or `value`.
    fn finish<T>(self, value: T) -> PyResult<T> {
        match self.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }

    fn call(&self, py: Python<'_>, v: &[f64]) -> PyResult<Vec<f64>> {
        py.check_signals()?;
        let out = self.matvec.bind(py).call1((PyArray1::from_slice(py, v),))?;
        let values: Vec<f64> = if let Ok(a) = out.cast::<PyArray1<f64>>() {
            a.readonly().as_array().to_vec()
        } else if let Ok(a) = out.cast::<PyArray1<f32>>() {
            a.readonly()
                .as_array()
                .iter()
                .map(|&x| f64::from(x))
                .collect()
        } else if let Ok(a) = out.cast::<PyUntypedArray>() {
            let shape: Vec<String> = a.shape().iter().map(usize::to_string).collect();
            let shape = match shape.as_slice() {
                [one] => format!("({one},)"),
                _ => format!("({})", shape.join(", ")),
            };
            return Err(PyValueError::new_err(format!(
                "matvec returned an array of dtype {} and shape {shape}; it must return a 1-D float64 or float32 \
                 array of length dim = {}",
                a.dtype().str()?,
                self.dim
            )));
        } else {
            return Err(PyValueError::new_err(format!(
                "matvec returned a {}; it must return a NumPy array (1-D, float64 or float32, length dim = {})",
                out.get_type().name()?,
                self.dim
            )));
        };
        if values.len() != self.dim {
            return Err(PyValueError::new_err(format!(
                "matvec returned an array of length {} but dim = {}",
                values.len(),
                self.dim
            )));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "matvec returned a non-finite value ({}) at index {i}",
                values[i]
            )));
        }
        Ok(values)
    }
}

impl SymmetricOperator for PyOperator {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&self, v: &[f64]) -> Vec<f64> {
        if self.failed() {
            return vec![0.0; self.dim];
        }
        Python::attach(|py| self.call(py, v)).unwrap_or_else(|e| {
            *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            vec![0.0; self.dim]
        })
    }
}

/// $-A$: its top eigenpairs are $A$'s bottom ones, negated.
struct Negated<'a>(&'a dyn SymmetricOperator);

impl SymmetricOperator for Negated<'_> {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn apply(&self, v: &[f64]) -> Vec<f64> {
        self.0.apply(v).into_iter().map(|x| -x).collect()
    }
}

/// One Lanczos run's `k` extreme pairs: values, vectors (columns), residuals, steps, products, converged.
struct Extremes {
    values: Vec<f64>,
    vectors: Vec<Vec<f64>>,
    residuals: Vec<f64>,
    steps: usize,
    products: usize,
    converged: bool,
}

/// A Lanczos settings error, with the fields named as `lanczos`'s arguments.
fn lanczos_error(e: ConfigError) -> PyErr {
    let ConfigError::Invalid { field, reason } = e;
    let field = match field {
        "max_steps" => "max_iter",
        "top_k" => "k",
        other => other,
    };
    PyValueError::new_err(format!("invalid {field}: {reason}"))
}

fn extremes(op: &dyn SymmetricOperator, cfg: &LanczosConfig, negate: bool) -> PyResult<Extremes> {
    let sign = if negate { -1.0 } else { 1.0 };
    let (pairs, vectors) = if negate {
        extreme_eigenvectors(&Negated(op), cfg)
    } else {
        extreme_eigenvectors(op, cfg)
    }
    .map_err(lanczos_error)?;
    Ok(Extremes {
        values: pairs.top.iter().map(|p| sign * p.value).collect(),
        residuals: pairs.top.iter().map(|p| p.residual).collect(),
        vectors: vectors.top,
        steps: pairs.steps,
        products: pairs.products,
        converged: pairs.converged,
    })
}

/// Lanczos eigenpairs: `which` is "top" (decreasing), "bottom" (increasing) or "both" (top then bottom, two runs).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn lanczos<'py>(
    py: Python<'py>,
    matvec: Py<PyAny>,
    dim: usize,
    k: usize,
    which: &str,
    tol: f64,
    max_iter: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let runs: &[bool] = match which {
        "top" => &[false],
        "bottom" => &[true],
        "both" => &[false, true],
        _ => {
            return Err(PyValueError::new_err(format!(
                "which must be \"top\", \"bottom\" or \"both\", got {which:?}"
            )))
        }
    };
    let op = PyOperator::new(matvec, dim)?;
    if k == 0 || k > dim {
        return Err(PyValueError::new_err(format!(
            "k must be in 1..=dim = {dim}, got {k}"
        )));
    }
    if max_iter <= k {
        return Err(PyValueError::new_err(format!(
            "max_iter must exceed k = {k}, got {max_iter}"
        )));
    }
    let cfg = LanczosConfig {
        k,
        max_steps: max_iter,
        tol,
        seed,
    };
    let results = py.detach(|| {
        runs.iter()
            .map(|&negate| extremes(&op, &cfg, negate))
            .collect::<PyResult<Vec<_>>>()
    });
    let results = op.finish(results)??;
    let values: Vec<f64> = results.iter().flat_map(|r| r.values.clone()).collect();
    let residuals: Vec<f64> = results.iter().flat_map(|r| r.residuals.clone()).collect();
    let columns: Vec<&Vec<f64>> = results.iter().flat_map(|r| &r.vectors).collect();
    let vectors = Array2::from_shape_fn((dim, columns.len()), |(i, j)| columns[j][i]);
    let out = PyDict::new(py);
    out.set_item("eigenvalues", values.into_pyarray(py))?;
    out.set_item("eigenvectors", vectors.into_pyarray(py))?;
    out.set_item("residuals", residuals.into_pyarray(py))?;
    out.set_item("steps", results.iter().map(|r| r.steps).sum::<usize>())?;
    out.set_item(
        "products",
        results.iter().map(|r| r.products).sum::<usize>(),
    )?;
    out.set_item("converged", results.iter().all(|r| r.converged))?;
    Ok(out)
}

/// Hutchinson's or Hutch++'s trace estimate from `probes` products.
#[pyfunction]
fn trace<'py>(
    py: Python<'py>,
    matvec: Py<PyAny>,
    dim: usize,
    probes: usize,
    method: &str,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let estimator = match method {
        "hutchinson" => hutchinson_trace,
        "hutch++" => hutchpp_trace,
        _ => {
            return Err(PyValueError::new_err(format!(
                "method must be \"hutchinson\" or \"hutch++\", got {method:?}"
            )))
        }
    };
    let op = PyOperator::new(matvec, dim)?;
    let result = py.detach(|| estimator(&op, probes, seed));
    let t = op.finish(result)?.or_value_error()?;
    let out = PyDict::new(py);
    out.set_item("estimate", t.estimate)?;
    out.set_item("std_error", t.std_error)?;
    out.set_item("products", t.probes)?;
    out.set_item("samples", t.samples.into_pyarray(py))?;
    Ok(out)
}

/// The SLQ spectral density.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn density<'py>(
    py: Python<'py>,
    matvec: Py<PyAny>,
    dim: usize,
    probes: usize,
    steps: usize,
    points: usize,
    sigma_rel: f64,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let op = PyOperator::new(matvec, dim)?;
    let cfg = DensityConfig {
        probes,
        steps,
        points,
        sigma_rel,
        seed,
    };
    let result = py.detach(|| slq_density(&op, &cfg));
    let d = op.finish(result)?.or_value_error()?;
    let probe: Vec<usize> = d
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, ns)| std::iter::repeat_n(i, ns.len()))
        .collect();
    let weights: Vec<f64> = d
        .weights
        .iter()
        .flatten()
        .map(|w| w / probes as f64)
        .collect();
    let out = PyDict::new(py);
    out.set_item("nodes", d.nodes.concat().into_pyarray(py))?;
    out.set_item("weights", weights.into_pyarray(py))?;
    out.set_item("probe", probe.into_pyarray(py))?;
    out.set_item("grid", d.grid.into_pyarray(py))?;
    out.set_item("density", d.density.into_pyarray(py))?;
    out.set_item("sigma", d.sigma)?;
    Ok(out)
}

/// Hutchinson's diagonal estimate.
#[pyfunction]
fn diagonal<'py>(
    py: Python<'py>,
    matvec: Py<PyAny>,
    dim: usize,
    probes: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let op = PyOperator::new(matvec, dim)?;
    let result = py.detach(|| hutchinson_diagonal(&op, probes, seed));
    let d = op.finish(result)?.or_value_error()?;
    let out = PyDict::new(py);
    out.set_item("diagonal", d.diagonal.into_pyarray(py))?;
    out.set_item("std_error", d.std_error.into_pyarray(py))?;
    out.set_item("sum_of_squares", d.sum_of_squares)?;
    out.set_item("probes", d.probes)?;
    Ok(out)
}

/// The two-product symmetry check.
#[pyfunction]
fn asymmetry(py: Python<'_>, matvec: Py<PyAny>, dim: usize, seed: u64) -> PyResult<f64> {
    let op = PyOperator::new(matvec, dim)?;
    let result = py.detach(|| asymmetry_of(&op, seed));
    op.finish(result)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(asymmetry, m)?)?;
    m.add_function(wrap_pyfunction!(lanczos, m)?)?;
    m.add_function(wrap_pyfunction!(trace, m)?)?;
    m.add_function(wrap_pyfunction!(density, m)?)?;
    m.add_function(wrap_pyfunction!(diagonal, m)?)?;
    Ok(())
}
