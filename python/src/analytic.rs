//! `samlab.analytic`: the diagonal-net engine (`samlab_core::diag_net`) and the sparse-regression generator.

use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use samlab_core::data::{Dataset, SparseRegression};
use samlab_core::diag_net::{self, DiagParams, DiagTrainConfig, RunStatus};
use samlab_core::sam::Variant;

use crate::IntoPyResult;

/// The CLI's `--variant` names, in the order of [`Variant::DEFAULTS`].
const VARIANT_NAMES: [&str; 10] = [
    "sam",
    "asam",
    "gsam",
    "fisher-sam",
    "fsam",
    "vasso",
    "looksam",
    "esam",
    "msam",
    "sam-on",
];

/// Each variant at its default options, as the JSON of [`Variant`], by its CLI name.
#[pyfunction]
fn variant_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for (name, variant) in VARIANT_NAMES.iter().zip(Variant::DEFAULTS) {
        let json = serde_json::to_string(&variant).expect("a variant serializes");
        out.set_item(name, json)?;
    }
    Ok(out)
}

/// The paper's sparse regression data: `(X, y, X_test, y_test, theta)`.
#[pyfunction]
fn sparse_regression(
    py: Python<'_>,
    n: usize,
    d: usize,
    r: usize,
    n_test: usize,
    seed: u32,
) -> PyResult<Bound<'_, PyTuple>> {
    let spec = SparseRegression {
        n,
        d,
        r,
        n_test,
        seed,
    };
    let (data, theta) = spec.generate().or_value_error()?;
    PyTuple::new(
        py,
        [
            data.x_train.into_pyarray(py).into_any(),
            data.y_train.into_pyarray(py).into_any(),
            data.x_test.into_pyarray(py).into_any(),
            data.y_test.into_pyarray(py).into_any(),
            theta.into_pyarray(py).into_any(),
        ],
    )
}

/// Trains a diagonal linear network from $u_0 = \alpha\mathbf 1$, $v_0 = 0$ with the [`DiagTrainConfig`] given as
/// JSON, the GIL released; returns the final parameters, the curve and the run's status.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn diag_train<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    x_test: PyReadonlyArray2<'py, f64>,
    y_test: PyReadonlyArray1<'py, f64>,
    alpha: f64,
    config: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let config: DiagTrainConfig = serde_json::from_str(config)
        .map_err(|e| PyValueError::new_err(format!("invalid training settings: {e}")))?;
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(PyValueError::new_err(format!(
            "alpha must be finite and > 0, got {alpha}"
        )));
    }
    let data = Dataset {
        x_train: x.as_array().to_owned(),
        y_train: y.as_array().to_owned(),
        x_test: x_test.as_array().to_owned(),
        y_test: y_test.as_array().to_owned(),
    };
    data.validate().or_value_error()?;
    let init = DiagParams::init(alpha, data.d());
    let run = py
        .detach(|| diag_net::train(&data, &config, init, &mut |_| {}))
        .or_value_error()?;
    let column =
        |f: fn(&diag_net::CurvePoint) -> f64| -> Vec<f64> { run.curve.iter().map(f).collect() };
    let iteration: Vec<u64> = run.curve.iter().map(|p| p.iteration as u64).collect();
    let out = PyDict::new(py);
    out.set_item("iteration", iteration.into_pyarray(py))?;
    out.set_item("train_loss", column(|p| p.train_loss).into_pyarray(py))?;
    out.set_item("test_loss", column(|p| p.test_loss).into_pyarray(py))?;
    out.set_item("beta", run.params.beta().into_pyarray(py))?;
    out.set_item("alpha_eff", run.params.alpha_eff().into_pyarray(py))?;
    out.set_item("u", run.params.u.into_pyarray(py))?;
    out.set_item("v", run.params.v.into_pyarray(py))?;
    out.set_item(
        "status",
        match run.status {
            RunStatus::Ok => "ok",
            RunStatus::Diverged => "diverged",
        },
    )?;
    out.set_item("iterations", run.iterations)?;
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(variant_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(sparse_regression, m)?)?;
    m.add_function(wrap_pyfunction!(diag_train, m)?)?;
    Ok(())
}
