//! `samlab.analytic`: the diagonal-net and ReLU-net engines (`samlab_analytic::diag`, `samlab_analytic::relu`)
//! and their data generators.

use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use samlab_analytic::diag::{self, DiagParams, DiagRun, DiagTrainConfig};
use samlab_analytic::relu::{self, ReluInit, ReluNet, ReluTrainConfig, TeacherStudent};
use samlab_analytic::theory::effective_init::train_with_accounting;
use samlab_core::data::{Dataset, SparseRegression};
use samlab_core::run::{CurvePoint, RunStatus};
use samlab_core::sam::VARIANTS;

use crate::IntoPyResult;

/// Each variant at its default options, as the JSON of [`Variant`](samlab_core::sam::Variant), by its CLI name, in
/// the order of the variant table.
#[pyfunction]
fn variant_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for row in &VARIANTS {
        let json = serde_json::to_string(&row.default).expect("a variant serializes");
        out.set_item(row.name, json)?;
    }
    Ok(out)
}

/// `(X, y, X_test, y_test)` of a data set, then `extra`.
fn data_tuple<'py>(
    py: Python<'py>,
    data: Dataset,
    extra: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut items = vec![
        data.x_train.into_pyarray(py).into_any(),
        data.y_train.into_pyarray(py).into_any(),
        data.x_test.into_pyarray(py).into_any(),
        data.y_test.into_pyarray(py).into_any(),
    ];
    items.extend(extra);
    PyTuple::new(py, items)
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
    data_tuple(py, data, Some(theta.into_pyarray(py).into_any()))
}

/// The 12-point 1D regression of the ReLU notebook: `(X, y, X, y)` (no held-out data).
#[pyfunction]
fn twelve_points(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    data_tuple(py, relu::twelve_points(), None)
}

/// Teacher-student data: `(X, y, X_test, y_test, W_teacher, a_teacher)`.
#[pyfunction]
fn teacher_student(
    py: Python<'_>,
    n: usize,
    d: usize,
    teacher_width: usize,
    n_test: usize,
    seed: u32,
) -> PyResult<Bound<'_, PyTuple>> {
    let spec = TeacherStudent {
        n,
        d,
        teacher_width,
        n_test,
        seed,
    };
    let (data, teacher) = spec.generate().or_value_error()?;
    let mut items: Vec<Bound<'_, PyAny>> = data_tuple(py, data, None)?.iter().collect();
    items.push(teacher.hidden_weights().into_pyarray(py).into_any());
    items.push(
        teacher
            .output_weights()
            .to_vec()
            .into_pyarray(py)
            .into_any(),
    );
    PyTuple::new(py, items)
}

/// A JSON setting of samlab-core, parsed; `what` names it in the error.
fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("invalid {what}: {e}")))
}

/// Training and test data from NumPy, checked.
fn dataset(
    x: PyReadonlyArray2<'_, f64>,
    y: PyReadonlyArray1<'_, f64>,
    x_test: PyReadonlyArray2<'_, f64>,
    y_test: PyReadonlyArray1<'_, f64>,
) -> PyResult<Dataset> {
    let data = Dataset {
        x_train: x.as_array().to_owned(),
        y_train: y.as_array().to_owned(),
        x_test: x_test.as_array().to_owned(),
        y_test: y_test.as_array().to_owned(),
    };
    data.validate().or_value_error()?;
    Ok(data)
}

/// A run's curve and status as a dict, to which the engine adds its parameters.
fn run_dict<'py>(
    py: Python<'py>,
    curve: &[CurvePoint],
    status: RunStatus,
    iterations: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let column = |f: fn(&CurvePoint) -> f64| -> Vec<f64> { curve.iter().map(f).collect() };
    let iteration: Vec<u64> = curve.iter().map(|p| p.iteration as u64).collect();
    out.set_item("iteration", iteration.into_pyarray(py))?;
    out.set_item("train_loss", column(|p| p.train_loss).into_pyarray(py))?;
    out.set_item("test_loss", column(|p| p.test_loss).into_pyarray(py))?;
    out.set_item("status", status.name())?;
    out.set_item("iterations", iterations)?;
    Ok(out)
}

/// Checks for signals (Ctrl-C) every 4,096 updates of a run, holding the GIL only for the check: the first error
/// stops the run and is raised once it returns.
struct Signals(Option<PyErr>);

impl Signals {
    /// Whether the run goes on before update `t`.
    fn go_on(&mut self, t: usize) -> bool {
        if t % 4096 == 0 {
            if let Err(e) = Python::attach(|py| py.check_signals()) {
                self.0 = Some(e);
            }
        }
        self.0.is_none()
    }

    fn raise(self) -> PyResult<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Trains a diagonal linear network from $u_0 = \alpha\mathbf 1$, $v_0 = 0$ with the [`DiagTrainConfig`] given as
/// JSON, the GIL released (Ctrl-C checked every 4,096 updates). With `accounting`, Theorem 1's Delta integrals
/// are accumulated along the run ([`train_with_accounting`], without the Ctrl-C check) and added to the dict:
/// `delta_sam`, `delta_total`, `int_loss`, `identity_error`.
#[pyfunction]
#[pyo3(signature = (x, y, x_test, y_test, alpha, config, accounting=false))]
#[allow(clippy::too_many_arguments)]
fn diag_train<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    x_test: PyReadonlyArray2<'py, f64>,
    y_test: PyReadonlyArray1<'py, f64>,
    alpha: f64,
    config: &str,
    accounting: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let config: DiagTrainConfig = parse(config, "training settings")?;
    check_alpha(alpha)?;
    let data = dataset(x, y, x_test, y_test)?;
    let init = DiagParams::init(alpha, data.d());
    if accounting {
        let (run, acc) = py
            .detach(|| train_with_accounting(&data, &config, init))
            .or_value_error()?;
        let out = diag_dict(py, run)?;
        out.set_item("delta_sam", acc.delta_sam.into_pyarray(py))?;
        out.set_item("delta_total", acc.delta_total.into_pyarray(py))?;
        out.set_item("int_loss", acc.int_loss)?;
        out.set_item("identity_error", acc.identity_error)?;
        return Ok(out);
    }
    let mut signals = Signals(None);
    let run = py
        .detach(|| diag::train(&data, &config, init, &mut |v| signals.go_on(v.t)))
        .or_value_error()?;
    signals.raise()?;
    diag_dict(py, run)
}

fn check_alpha(alpha: f64) -> PyResult<()> {
    if alpha.is_finite() && alpha > 0.0 {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "alpha must be finite and > 0, got {alpha}"
        )))
    }
}

/// A diagonal-net run as a dict: the curve, the status, and the final `beta`, `alpha_eff`, `u`, `v`.
fn diag_dict(py: Python<'_>, run: DiagRun) -> PyResult<Bound<'_, PyDict>> {
    let out = run_dict(py, &run.curve, run.status, run.iterations)?;
    out.set_item("beta", run.params.beta().into_pyarray(py))?;
    out.set_item("alpha_eff", run.params.alpha_eff().into_pyarray(py))?;
    out.set_item("u", run.params.u.into_pyarray(py))?;
    out.set_item("v", run.params.v.into_pyarray(py))?;
    Ok(out)
}

/// Trains a one-hidden-layer ReLU network of `width` neurons, initialized by the [`ReluInit`] given as JSON from
/// `init_seed`, with the [`ReluTrainConfig`] given as JSON, the GIL released.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn relu_train<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    x_test: PyReadonlyArray2<'py, f64>,
    y_test: PyReadonlyArray1<'py, f64>,
    width: usize,
    bias: bool,
    init: &str,
    init_seed: u32,
    config: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let init: ReluInit = parse(init, "initialization")?;
    let config: ReluTrainConfig = parse(config, "training settings")?;
    let data = dataset(x, y, x_test, y_test)?;
    let net = ReluNet::init(&init, width, data.d(), bias, init_seed).or_value_error()?;
    let mut signals = Signals(None);
    let run = py
        .detach(|| relu::train(&data, &config, net, &mut |v| signals.go_on(v.t)))
        .or_value_error()?;
    signals.raise()?;
    let out = run_dict(py, &run.curve, run.status, run.iterations)?;
    out.set_item("w", run.net.hidden_weights().into_pyarray(py))?;
    out.set_item("b", run.net.biases().to_vec().into_pyarray(py))?;
    out.set_item("a", run.net.output_weights().to_vec().into_pyarray(py))?;
    out.set_item("params", run.net.params().to_vec().into_pyarray(py))?;
    out.set_item("stopped_early", run.stopped_early)?;
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(variant_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(sparse_regression, m)?)?;
    m.add_function(wrap_pyfunction!(twelve_points, m)?)?;
    m.add_function(wrap_pyfunction!(teacher_student, m)?)?;
    m.add_function(wrap_pyfunction!(diag_train, m)?)?;
    m.add_function(wrap_pyfunction!(relu_train, m)?)?;
    Ok(())
}
