//! `samlab.theory`: Theorem 1's hyperbolic entropy and interpolators, Theorem 2's bounds (`samlab_analytic::theory`).

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use samlab_analytic::diag::DiagParams;
use samlab_analytic::theory::convergence::{self, LeastSquares};
use samlab_analytic::theory::entropy;
use samlab_analytic::theory::interpolators::{self, SolveError};
use samlab_core::linalg::Matrix;

fn slice<'a>(a: &'a PyReadonlyArray1<'_, f64>, name: &str) -> PyResult<&'a [f64]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be a contiguous array")))
}

fn same_length(a: &[f64], b: &[f64], names: &str) -> PyResult<()> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{names} must have the same length, got {} and {}",
            a.len(),
            b.len()
        )))
    }
}

/// $\phi_a(\beta)$, the hyperbolic entropy with per-coordinate scale `a`.
#[pyfunction]
fn hyperbolic_entropy(
    beta: PyReadonlyArray1<'_, f64>,
    a: PyReadonlyArray1<'_, f64>,
) -> PyResult<f64> {
    let (beta, a) = (slice(&beta, "beta")?, slice(&a, "a")?);
    same_length(beta, a, "beta and a")?;
    Ok(entropy::phi(beta, a))
}

/// $\alpha_{\mathrm{eff}} = \sqrt{\max(u^2 - v^2, 0)}$.
#[pyfunction]
fn alpha_eff<'py>(
    py: Python<'py>,
    u: PyReadonlyArray1<'py, f64>,
    v: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (u, v) = (slice(&u, "u")?.to_vec(), slice(&v, "v")?.to_vec());
    same_length(&u, &v, "u and v")?;
    Ok(DiagParams { u, v }.alpha_eff().into_pyarray(py))
}

/// The problem $X\beta = y$ as the theory module's matrix, checked.
fn system(
    x: &PyReadonlyArray2<'_, f64>,
    y: &PyReadonlyArray1<'_, f64>,
) -> PyResult<(Matrix, Vec<f64>)> {
    let x = x.as_array();
    let y = y.as_array();
    if x.nrows() != y.len() || x.is_empty() {
        return Err(PyValueError::new_err(format!(
            "X ({} x {}) and y ({}) do not fit: need at least one row, and one target per row",
            x.nrows(),
            x.ncols(),
            y.len()
        )));
    }
    if x.iter().chain(y.iter()).any(|v| !v.is_finite()) {
        return Err(PyValueError::new_err("X and y must be finite"));
    }
    Ok((Matrix::from_array(&x.to_owned()), y.to_vec()))
}

fn solve_error(e: SolveError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The minimum-$\ell_2$ interpolator.
#[pyfunction]
fn min_l2<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (x, y) = system(&x, &y)?;
    Ok(interpolators::min_l2(&x, &y)
        .map_err(solve_error)?
        .into_pyarray(py))
}

/// The minimum-$\ell_1$ interpolator (a linear program).
#[pyfunction]
fn min_l1<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (x, y) = system(&x, &y)?;
    let beta = py
        .detach(|| interpolators::min_l1(&x, &y))
        .map_err(solve_error)?;
    Ok(beta.into_pyarray(py))
}

/// The minimum-entropy interpolator $\arg\min \phi_a(\beta)$ s.t. $X\beta = y$: `(beta, method, newton_steps)`.
#[pyfunction]
fn min_entropy<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    a: PyReadonlyArray1<'py, f64>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, &'static str, usize)> {
    let (x, y) = system(&x, &y)?;
    let a = slice(&a, "a")?.to_vec();
    if a.len() != x.cols || a.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(PyValueError::new_err(format!(
            "a must hold {} finite positive scales (one per column of X)",
            x.cols
        )));
    }
    let s = py
        .detach(|| interpolators::min_entropy(&x, &y, &a))
        .map_err(solve_error)?;
    let method = match s.method {
        interpolators::Method::DualNewton => "dual_newton",
        interpolators::Method::MinL1Limit => "min_l1_limit",
    };
    Ok((s.beta.into_pyarray(py), method, s.iterations))
}

/// Theorem 2's least-squares problem $L(w) = \frac1{2n}\lVert Aw - b\rVert^2$ with Gaussian inputs:
/// `(A, b, w_star, l_star, beta, mu, sigma2)`, $\sigma^2$ the gradient noise at $w^*$.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn least_squares(
    py: Python<'_>,
    n: usize,
    d: usize,
    noise: f64,
    seed: u32,
) -> PyResult<(
    Bound<'_, PyArray2<f64>>,
    Bound<'_, PyArray1<f64>>,
    Bound<'_, PyArray1<f64>>,
    f64,
    f64,
    f64,
    f64,
)> {
    if !(d >= 1 && n >= d) {
        return Err(PyValueError::new_err(format!(
            "least squares needs n >= d >= 1, got n = {n}, d = {d}"
        )));
    }
    if !noise.is_finite() {
        return Err(PyValueError::new_err(format!(
            "noise must be finite, got {noise}"
        )));
    }
    let p = LeastSquares::generate(n, d, noise, seed);
    let a = Array2::from_shape_fn((n, d), |(i, j)| p.a.row(i)[j]);
    let sigma2 = p.variance(&p.w_star);
    Ok((
        a.into_pyarray(py),
        p.b.clone().into_pyarray(py),
        p.w_star.clone().into_pyarray(py),
        p.l_star,
        p.beta,
        p.mu,
        sigma2,
    ))
}

/// The constants of a least-squares problem, as the bounds of `samlab_analytic::theory::convergence` read them
/// (only $\beta$ and $\mu$; the data are not needed).
fn constants(beta: f64, mu: f64, batch: usize, steps: usize) -> PyResult<LeastSquares> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(beta) && positive(mu)) || batch == 0 || steps == 0 {
        return Err(PyValueError::new_err(format!(
            "beta and mu must be finite and > 0, batch and steps >= 1; got beta = {beta}, mu = {mu}, batch = \
             {batch}, steps = {steps}"
        )));
    }
    Ok(LeastSquares {
        a: Matrix::new(0, 0, Vec::new()),
        b: Vec::new(),
        w_star: Vec::new(),
        l_star: 0.0,
        beta,
        mu,
    })
}

/// Theorem 2's bound on $\frac1T\sum_t\mathbb E\lVert\nabla L(w_t)\rVert^2$.
#[pyfunction]
fn nonconvex_bound(
    beta: f64,
    initial_gap: f64,
    sigma2: f64,
    batch: usize,
    steps: usize,
) -> PyResult<f64> {
    let p = constants(beta, 1.0, batch, steps)?;
    Ok(convergence::nonconvex_bound(
        &p,
        initial_gap,
        sigma2,
        batch,
        steps,
    ))
}

/// The PL bound on $\mathbb E L(w_T) - L^*$.
#[pyfunction]
fn pl_bound(
    beta: f64,
    mu: f64,
    initial_gap: f64,
    sigma2: f64,
    batch: usize,
    steps: usize,
) -> PyResult<f64> {
    let p = constants(beta, mu, batch, steps)?;
    Ok(convergence::pl_bound(&p, initial_gap, sigma2, batch, steps))
}

/// Theorem 1's quantities for the diagonal-net run in `dir` (`samlab theory implicit-bias`: the run's training
/// replayed to accumulate the Delta integrals), as the JSON of the implicit_bias.json it writes there.
#[pyfunction]
fn implicit_bias(py: Python<'_>, dir: std::path::PathBuf) -> PyResult<String> {
    let result = py
        .detach(|| samlab_analytic::theory::implicit_bias::implicit_bias(&dir))
        .map_err(crate::runs::run_error)?;
    Ok(serde_json::to_string(&result).expect("implicit_bias.json serializes"))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(implicit_bias, m)?)?;
    m.add_function(wrap_pyfunction!(hyperbolic_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(alpha_eff, m)?)?;
    m.add_function(wrap_pyfunction!(min_l2, m)?)?;
    m.add_function(wrap_pyfunction!(min_l1, m)?)?;
    m.add_function(wrap_pyfunction!(min_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(least_squares, m)?)?;
    m.add_function(wrap_pyfunction!(nonconvex_bound, m)?)?;
    m.add_function(wrap_pyfunction!(pl_bound, m)?)?;
    Ok(())
}
