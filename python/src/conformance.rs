//! `samlab.conformance`: samlab-core's SAM step ([`Ascent::group`]) driven by a Python model, so that the
//! conformance vectors come from the one definition of the SAM family, not from a Python copy of it.
//!
//! The model is a callable `loss_and_grad(w, rows) -> (mean loss, mean gradient)` over a flat float64 vector; ESAM's
//! data selection also needs `losses(w, rows) -> per-example losses`. Randomness (the random start, the random
//! perturbation, ESAM's keep-mask) is passed in, so that every result is deterministic.

use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use samlab_core::ascent::{Ascent, Host, VariantState};
use samlab_core::sam::{AscentSource, SamConfig};

use crate::model::{vector, Losses, Noise, PyModel};
use crate::IntoPyResult;

fn rows_of(
    arr: Option<PyReadonlyArray2<'_, f64>>,
    dim: usize,
    what: &str,
) -> PyResult<Vec<Vec<f64>>> {
    let Some(arr) = arr else {
        return Ok(Vec::new());
    };
    if arr.shape()[1] != dim {
        return Err(PyValueError::new_err(format!(
            "{what} has {} columns but the parameter vector has {dim}",
            arr.shape()[1]
        )));
    }
    Ok(arr
        .as_array()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect())
}

/// One SAM step of samlab-core on a Python model: `config` is a `SamConfig` as JSON, `w` the weights, `batch`
/// the number of examples (rows `0..batch`, split into the config's groups). Returns the descent direction (the
/// mean over groups of each group's direction, in mean-gradient units), each group's perturbation, every gradient
/// taken, the variant state after the step and the gradient count.
#[pyfunction]
#[pyo3(signature = (config, w, batch, loss_and_grad, losses=None, direction=None, steps=0, momentum=None,
                    norm_mask=None, asam_mask=None, normals=None, keeps=None, lr=1.0))]
#[allow(clippy::too_many_arguments)]
fn sam_step<'py>(
    py: Python<'py>,
    config: &str,
    w: PyReadonlyArray1<'py, f64>,
    batch: usize,
    loss_and_grad: Bound<'py, PyAny>,
    losses: Option<Bound<'py, PyAny>>,
    direction: Option<PyReadonlyArray1<'py, f64>>,
    steps: u64,
    momentum: Option<PyReadonlyArray1<'py, f64>>,
    norm_mask: Option<PyReadonlyArray1<'py, f64>>,
    asam_mask: Option<PyReadonlyArray1<'py, f64>>,
    normals: Option<PyReadonlyArray2<'py, f64>>,
    keeps: Option<PyReadonlyArray2<'py, f64>>,
    lr: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let sam: SamConfig = serde_json::from_str(config)
        .map_err(|e| PyValueError::new_err(format!("invalid SAM config: {e}")))?;
    let checked = sam.check(batch).or_value_error()?;
    checked
        .require_layers("the Python model", momentum.is_some(), norm_mask.is_some())
        .or_value_error()?;
    if sam.ascent_source != AscentSource::SameBatch {
        return Err(PyValueError::new_err(
            "only ascent_source = same_batch is supported here",
        ));
    }
    let w = w.as_slice()?.to_vec();
    let dim = w.len();
    let opt = |a: Option<PyReadonlyArray1<'py, f64>>, what: &str| -> PyResult<Option<Vec<f64>>> {
        a.map(|a| vector(a.as_any(), dim, what)).transpose()
    };
    let mut state = VariantState {
        direction: opt(direction, "direction")?,
        steps,
    };
    let losses = match losses {
        Some(f) => Losses::PerExample(f.unbind()),
        None => Losses::Missing,
    };
    let mut model = PyModel {
        asam_mask: opt(asam_mask, "asam_mask")?,
        momentum: opt(momentum, "momentum")?,
        norm_mask: opt(norm_mask, "norm_mask")?,
        record: true,
        ..PyModel::new(Some(loss_and_grad.unbind()), losses, dim)
    };
    let mut noise = Noise {
        normals: rows_of(normals, dim, "normals")?,
        keeps: rows_of(keeps, dim, "keeps")?,
        error: None,
    };
    let rho = checked.rho_at(0.0, lr);
    let m = checked.group_size();
    let mut ascent = Ascent::<Host>::new(&w);
    let mut acc = vec![0.0; dim];
    let mut deltas = Vec::new();
    let mut loss = 0.0;
    for start in (0..batch).step_by(m) {
        let rows: Vec<usize> = (start..start + m).collect();
        loss += ascent.group(
            &mut model, &sam, rho, &w, &rows, &rows, &mut state, &mut noise, &mut acc,
        );
        if let Some(e) = model.error.take() {
            return Err(e);
        }
        if let Some(e) = noise.error.take() {
            return Err(PyValueError::new_err(e));
        }
        deltas.push(ascent.delta().cloned().unwrap_or_else(|| vec![0.0; dim]));
    }
    let groups = (batch / m) as f64;
    let out = PyDict::new(py);
    out.set_item(
        "direction",
        acc.iter()
            .map(|a| a / groups)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let deltas = ndarray::Array2::from_shape_fn((deltas.len(), dim), |(g, i)| deltas[g][i]);
    out.set_item("deltas", deltas.into_pyarray(py))?;
    out.set_item("rho", rho)?;
    out.set_item("loss", loss / batch as f64)?;
    out.set_item("gradient_evals", ascent.gradient_evals)?;
    out.set_item("state_steps", state.steps)?;
    match state.direction {
        Some(d) => out.set_item("state_direction", d.into_pyarray(py))?,
        None => out.set_item("state_direction", py.None())?,
    }
    let calls = PyList::empty(py);
    for c in model.calls {
        let d = PyDict::new(py);
        d.set_item("pass", c.pass)?;
        d.set_item("rows", c.rows.into_pyarray(py))?;
        d.set_item("point", c.point.into_pyarray(py))?;
        d.set_item("loss", c.loss)?;
        d.set_item("grad", c.grad.into_pyarray(py))?;
        calls.append(d)?;
    }
    out.set_item("calls", calls)?;
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sam_step, m)?)?;
    Ok(())
}
