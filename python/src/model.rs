//! A Python model as a samlab-core [`Oracle`]: the one wrapper of the callables `loss_and_grad(w, rows) -> (mean
//! loss, mean gradient)` (and optionally `losses(w, rows) -> per-example losses`, or `loss_fn(w, rows) -> mean
//! loss`) over a flat float64 vector, shared by `samlab.conformance` and `samlab.sharpness`.
//!
//! Every call takes the GIL (the engines may run with it released) and checks for signals (Ctrl-C) first. The
//! first error (the callable's own exception, or a ValueError/TypeError about what it returned) is kept in
//! [`PyModel::error`] and every later call returns NaN at once; the caller raises it.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use samlab_core::ascent::{Host, Oracle, Pass};

/// One gradient the step asked for: its pass, examples, point and the mean loss and gradient there.
pub(crate) struct Call {
    pub(crate) pass: &'static str,
    pub(crate) rows: Vec<usize>,
    pub(crate) point: Vec<f64>,
    pub(crate) loss: f64,
    pub(crate) grad: Vec<f64>,
}

/// The noise handed in, consumed in order.
pub(crate) struct Noise {
    pub(crate) normals: Vec<Vec<f64>>,
    pub(crate) keeps: Vec<Vec<f64>>,
    pub(crate) error: Option<String>,
}

/// Where [`Oracle::losses`] comes from.
pub(crate) enum Losses {
    /// Nowhere: asking is an error (ESAM's data selection names what it needs).
    Missing,
    /// `losses(w, rows) -> per-example losses`.
    PerExample(Py<PyAny>),
    /// `loss_fn(w, rows) -> mean loss`: every example of `rows` is given the mean (enough for any use that
    /// averages them).
    Mean(Py<PyAny>),
    /// The mean loss `loss_and_grad` returns, the same way.
    FromGrad,
}

/// A Python model as a samlab-core [`Oracle`] over flat float64 vectors: ASAM scales the coordinates of
/// `asam_mask` (every one without it), MSAM reads `momentum`, SAM-ON perturbs the coordinates of `norm_mask`.
pub(crate) struct PyModel {
    pub(crate) grad_fn: Option<Py<PyAny>>,
    pub(crate) losses_fn: Losses,
    pub(crate) dim: usize,
    pub(crate) asam_mask: Option<Vec<f64>>,
    pub(crate) momentum: Option<Vec<f64>>,
    pub(crate) norm_mask: Option<Vec<f64>>,
    /// Whether each gradient call is kept in `calls`.
    pub(crate) record: bool,
    /// Whether non-finite losses and gradients are errors.
    pub(crate) finite: bool,
    pub(crate) calls: Vec<Call>,
    pub(crate) error: Option<PyErr>,
}

/// A float64 vector of length `dim` returned by `what`, or a ValueError naming it.
pub(crate) fn vector(value: &Bound<'_, PyAny>, dim: usize, what: &str) -> PyResult<Vec<f64>> {
    let arr: PyReadonlyArray1<f64> = value
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a 1-D float64 NumPy array")))?;
    let v = arr.as_slice()?.to_vec();
    if v.len() != dim {
        return Err(PyValueError::new_err(format!(
            "{what} has length {} but the parameter vector has {dim}",
            v.len()
        )));
    }
    Ok(v)
}

impl PyModel {
    /// A model of `dim` coordinates with neither masks nor momentum, recording nothing.
    pub(crate) fn new(grad_fn: Option<Py<PyAny>>, losses_fn: Losses, dim: usize) -> Self {
        PyModel {
            grad_fn,
            losses_fn,
            dim,
            asam_mask: None,
            momentum: None,
            norm_mask: None,
            record: false,
            finite: false,
            calls: Vec::new(),
            error: None,
        }
    }

    fn check_finite(&self, what: &str, v: &[f64]) -> PyResult<()> {
        if self.finite {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "{what} has a non-finite value ({}) at index {i}",
                    v[i]
                )));
            }
        }
        Ok(())
    }

    fn call_grad(&self, py: Python<'_>, w: &[f64], rows: &[usize]) -> PyResult<(f64, Vec<f64>)> {
        py.check_signals()?;
        let f = self
            .grad_fn
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("this model has no loss_and_grad"))?;
        let ret = f
            .bind(py)
            .call1((w.to_vec().into_pyarray(py), rows.to_vec().into_pyarray(py)))?;
        let (loss, grad): (f64, Bound<'_, PyAny>) = ret.extract().map_err(|_| {
            PyTypeError::new_err(
                "loss_and_grad must return (mean loss as a float, mean gradient as an array)",
            )
        })?;
        let grad = vector(&grad, self.dim, "loss_and_grad's gradient")?;
        self.check_finite("loss_and_grad's loss", &[loss])?;
        self.check_finite("loss_and_grad's gradient", &grad)?;
        Ok((loss, grad))
    }

    fn call_losses(&self, py: Python<'_>, w: &[f64], rows: &[usize]) -> PyResult<Vec<f64>> {
        py.check_signals()?;
        let args = || (w.to_vec().into_pyarray(py), rows.to_vec().into_pyarray(py));
        let v = match &self.losses_fn {
            Losses::Missing => {
                return Err(PyValueError::new_err(
                    "ESAM's data selection (gamma < 0.99) needs losses(w, rows)",
                ))
            }
            Losses::PerExample(f) => vector(&f.bind(py).call1(args())?, rows.len(), "losses")?,
            Losses::Mean(f) => {
                let loss: f64 = f.bind(py).call1(args())?.extract().map_err(|_| {
                    PyTypeError::new_err("loss_fn must return the mean loss as a float")
                })?;
                self.check_finite("loss_fn's loss", &[loss])?;
                vec![loss; rows.len()]
            }
            Losses::FromGrad => vec![self.call_grad(py, w, rows)?.0; rows.len()],
        };
        self.check_finite("losses", &v)?;
        Ok(v)
    }
}

impl Oracle for PyModel {
    type Space = Host;
    type Rng = Noise;

    fn gradient(
        &mut self,
        pass: Pass,
        w: &Vec<f64>,
        rows: &[usize],
        scale: f64,
        out: &mut Vec<f64>,
    ) -> f64 {
        if self.error.is_some() {
            out.fill(f64::NAN);
            return f64::NAN;
        }
        match Python::attach(|py| self.call_grad(py, w, rows)) {
            Ok((loss, grad)) => {
                let n = rows.len() as f64;
                for (o, g) in out.iter_mut().zip(&grad) {
                    *o = scale * n * g;
                }
                if self.record {
                    let pass = match pass {
                        Pass::Plain => "plain",
                        Pass::Ascent { at_w: true } => "ascent_at_w",
                        Pass::Ascent { at_w: false } => "ascent",
                        Pass::Descent => "descent",
                    };
                    self.calls.push(Call {
                        pass,
                        rows: rows.to_vec(),
                        point: w.clone(),
                        loss,
                        grad,
                    });
                }
                loss * n
            }
            Err(e) => {
                self.error = Some(e);
                out.fill(f64::NAN);
                f64::NAN
            }
        }
    }

    fn losses(&mut self, w: &Vec<f64>, rows: &[usize], out: &mut [f64]) {
        if self.error.is_some() {
            out.fill(f64::NAN);
            return;
        }
        match Python::attach(|py| self.call_losses(py, w, rows)) {
            Ok(v) => out.copy_from_slice(&v),
            Err(e) => {
                self.error = Some(e);
                out.fill(f64::NAN);
            }
        }
    }

    // The mean loss's gradient is the descent unit: the accumulator holds one mean gradient per group.
    fn descent_unit(&self, _rows: usize) -> f64 {
        1.0
    }

    fn num_params(&self) -> usize {
        self.dim
    }

    fn normal(&mut self, rng: &mut Noise, out: &mut Vec<f64>) {
        if rng.normals.is_empty() {
            rng.error = Some(
                "a random start or random perturbation needs normals (one row per draw)".into(),
            );
            out.fill(0.0);
        } else {
            out.copy_from_slice(&rng.normals.remove(0));
        }
    }

    fn keep(&mut self, rng: &mut Noise, _beta: f64) -> Vec<f64> {
        if rng.keeps.is_empty() {
            rng.error = Some("ESAM with beta < 1 needs keeps (one 0/1 row per group)".into());
            return vec![1.0; self.dim];
        }
        rng.keeps.remove(0)
    }

    fn asam_scaling(&self, w: &Vec<f64>, eta: f64) -> Vec<f64> {
        match &self.asam_mask {
            None => w.iter().map(|w| w.abs() + eta).collect(),
            Some(mask) => w
                .iter()
                .zip(mask)
                .map(|(w, &m)| if m != 0.0 { w.abs() + eta } else { 1.0 })
                .collect(),
        }
    }

    fn momentum(&self) -> Option<&Vec<f64>> {
        self.momentum.as_ref()
    }

    fn normalization_mask(&self) -> Option<Vec<f64>> {
        self.norm_mask.clone()
    }
}
