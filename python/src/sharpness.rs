//! `samlab.sharpness`: samlab-core's worst-case and average-case m-sharpness ([`samlab_core::sharpness`]) of a
//! model given as Python callables (through the shared [`PyModel`] oracle).
//!
//! The ascent runs with the GIL released; each call of the model takes it back and checks for signals. Bad
//! settings are a ValueError naming the field; the callable's own exception passes through untouched.

use ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use samlab_core::sharpness::{
    average_case as average_case_of, worst_case as worst_case_of, AverageCaseConfig, BallNorm,
    WorstCaseConfig,
};

use crate::model::{Losses, PyModel};
use crate::IntoPyResult;

/// The model's error if a call failed, else `result`'s error as a ValueError, else its value.
fn finish<T>(model: PyModel, result: Result<T, samlab_core::ConfigError>) -> PyResult<T> {
    if let Some(e) = model.error {
        return Err(e);
    }
    result.or_value_error()
}

/// Worst-case m-sharpness of `loss_and_grad` at `w` over examples `0..n` in groups of `m`.
#[pyfunction]
#[pyo3(signature = (loss_and_grad, w, n, rho, m, steps, restarts, norm, adaptive, step_size_mult, normalize,
                    random_init, seed))]
#[allow(clippy::too_many_arguments)]
fn sharpness_worst_case<'py>(
    py: Python<'py>,
    loss_and_grad: Bound<'py, PyAny>,
    w: PyReadonlyArray1<'py, f64>,
    n: usize,
    rho: f64,
    m: usize,
    steps: usize,
    restarts: usize,
    norm: &str,
    adaptive: bool,
    step_size_mult: f64,
    normalize: bool,
    random_init: bool,
    seed: u32,
) -> PyResult<Bound<'py, PyDict>> {
    let norm = match norm {
        "l2" => BallNorm::L2,
        "linf" => BallNorm::Linf,
        other => {
            return Err(PyValueError::new_err(format!(
                "norm must be 'l2' or 'linf', got {other:?}"
            )))
        }
    };
    let config = WorstCaseConfig {
        rho,
        m,
        steps,
        restarts,
        norm,
        adaptive,
        step_size_mult,
        normalize,
        random_init,
        seed,
    };
    let w = w.as_slice()?.to_vec();
    let mut model = PyModel::new(Some(loss_and_grad.unbind()), Losses::FromGrad, w.len());
    model.finite = true;
    let result = py.detach(|| worst_case_of(&mut model, &w, n, &config));
    let r = finish(model, result)?;
    let out = PyDict::new(py);
    out.set_item("sharpness", r.sharpness())?;
    out.set_item("loss", r.loss())?;
    out.set_item("group_sharpness", r.group_sharpness().into_pyarray(py))?;
    out.set_item("group_loss", r.group_loss.into_pyarray(py))?;
    out.set_item("group_max_loss", r.group_max_loss.into_pyarray(py))?;
    out.set_item("group_delta_norm", r.group_delta_norm.into_pyarray(py))?;
    Ok(out)
}

/// Average-case sharpness of `loss_fn` at `w` over examples `0..n` in groups of `m`.
#[pyfunction]
#[pyo3(signature = (loss_fn, w, n, rho, m, samples, seed))]
#[allow(clippy::too_many_arguments)]
fn sharpness_average_case<'py>(
    py: Python<'py>,
    loss_fn: Bound<'py, PyAny>,
    w: PyReadonlyArray1<'py, f64>,
    n: usize,
    rho: f64,
    m: usize,
    samples: usize,
    seed: u32,
) -> PyResult<Bound<'py, PyDict>> {
    let config = AverageCaseConfig {
        rho,
        m,
        samples,
        seed,
    };
    let w = w.as_slice()?.to_vec();
    let mut model = PyModel::new(None, Losses::Mean(loss_fn.unbind()), w.len());
    model.finite = true;
    let result = py.detach(|| average_case_of(&mut model, &w, n, &config));
    let r = finish(model, result)?;
    let out = PyDict::new(py);
    out.set_item("sharpness", r.sharpness())?;
    out.set_item("std_error", r.std_error())?;
    out.set_item("loss", r.loss())?;
    out.set_item("sigma", r.sigma)?;
    out.set_item("group_sharpness", r.group_sharpness().into_pyarray(py))?;
    out.set_item("group_loss", r.group_loss.into_pyarray(py))?;
    let draws = Array2::from_shape_fn((r.draws.len(), samples), |(g, k)| r.draws[g][k]);
    out.set_item("draws", draws.into_pyarray(py))?;
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sharpness_worst_case, m)?)?;
    m.add_function(wrap_pyfunction!(sharpness_average_case, m)?)?;
    Ok(())
}
