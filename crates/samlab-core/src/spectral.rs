//! Spectra of large symmetric operators known only through their products $v \mapsto Av$ (a Hessian, say):
//!
//! - [`extreme_eigenpairs`]: Lanczos with full reorthogonalization for the top-$k$ eigenvalues and the bottom
//!   one, each with its true residual $\lVert Ax - \theta x\rVert$ (one extra product per Ritz pair), stopped
//!   when the top-$k$ residual estimates are below `tol` times the spectral radius *and* the Krylov space has
//!   grown to twice the dimension at which they first were (at least [`MIN_KRYLOV`]);
//! - [`hutchinson_trace`]: $\operatorname{tr}A \approx \frac1N\sum_i z_i^\top A z_i$ over Rademacher probes,
//!   with its standard error; [`hutchpp_trace`], Hutch++, with the same number of products;
//! - [`hutchinson_diagonal`]: $\operatorname{diag}A \approx \frac1N\sum_i z_i \odot A z_i$ with standard errors;
//! - [`asymmetry`]: a two-product check that an operator is symmetric;
//! - [`slq_density`]: the eigenvalue density by stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017; the
//!   method of PyHessian), smoothed by a Gaussian kernel.
//!
//! Probes and start vectors come from NumPy's `RandomState` seeded with the low 32 bits of `seed`.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::numpy_rng::NumpyRandomState;
use crate::{limits, ConfigError};

/// A symmetric linear operator on $\mathbb R^n$.
pub trait SymmetricOperator {
    /// $n$.
    fn dim(&self) -> usize;
    /// $Av$ for `v` of length $n$.
    fn apply(&self, v: &[f64]) -> Vec<f64>;
}

/// An explicit symmetric matrix (row-major) as an operator: for tests and small problems.
pub struct DenseSymmetric {
    n: usize,
    data: Vec<f64>,
}

impl DenseSymmetric {
    /// Wraps the row-major `n x n` matrix `data` (only its symmetric part matters to the algorithms).
    pub fn new(n: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), n * n, "matrix data has the wrong length");
        DenseSymmetric { n, data }
    }
}

impl SymmetricOperator for DenseSymmetric {
    fn dim(&self) -> usize {
        self.n
    }

    fn apply(&self, v: &[f64]) -> Vec<f64> {
        self.data.chunks(self.n).map(|row| dot(row, v)).collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The Euclidean norm of `a`.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += s * x`.
fn axpy_into(y: &mut [f64], s: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += s * xi;
    }
}

fn rng(seed: u64) -> NumpyRandomState {
    NumpyRandomState::new(seed as u32)
}

/// A vector of independent $\pm 1$ entries.
fn rademacher(rng: &mut NumpyRandomState, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| if rng.random_sample() < 0.5 { -1.0 } else { 1.0 })
        .collect()
}

/// An eigenvalue estimate with the residual of its Ritz vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Eigenpair {
    /// The Ritz value $\theta$.
    pub value: f64,
    /// $\lVert Ax - \theta x\rVert$ for the unit Ritz vector $x$: some eigenvalue of $A$ lies within this distance
    /// of $\theta$.
    pub residual: f64,
}

/// The most memory the Lanczos basis of [`extreme_eigenpairs`] may take.
pub const MAX_BASIS_BYTES: usize = 8 << 30;

/// The smallest Krylov dimension at which [`extreme_eigenpairs`] may declare convergence.
pub const MIN_KRYLOV: usize = 20;

/// [`extreme_eigenpairs`] goes on to this many times the Krylov dimension at which the residuals first passed.
pub const CONFIRM_FACTOR: usize = 2;

/// Settings of [`extreme_eigenpairs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanczosConfig {
    /// How many of the largest eigenvalues.
    pub k: usize,
    /// Most Lanczos steps (one product each).
    pub max_steps: usize,
    /// Stop when every residual is at most `tol` times the largest $|\theta|$.
    pub tol: f64,
    /// Seed of the Gaussian start vector.
    pub seed: u64,
}

impl Default for LanczosConfig {
    fn default() -> Self {
        LanczosConfig {
            k: 1,
            max_steps: 100,
            tol: 1e-3,
            seed: 0,
        }
    }
}

impl LanczosConfig {
    /// Checks the settings that do not depend on the operator.
    pub fn check_settings(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.k == 0 {
            return bad("top_k", "must be at least 1, got 0".into());
        }
        if !(self.tol.is_finite() && self.tol > 0.0 && self.tol < 1.0) {
            return bad("tol", format!("must be in (0, 1), got {}", self.tol));
        }
        Ok(())
    }

    /// Checks the settings against an operator of dimension `n`, including the memory of the Lanczos basis
    /// (`max_steps` vectors of `n` f64s, at most [`MAX_BASIS_BYTES`]).
    pub fn check(&self, n: usize) -> Result<(), ConfigError> {
        self.check_settings()?;
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.k > n {
            return bad(
                "top_k",
                format!("{} exceeds the number of parameters {n}", self.k),
            );
        }
        if self.max_steps <= self.k {
            return bad(
                "max_steps",
                format!("must exceed top_k = {}, got {}", self.k, self.max_steps),
            );
        }
        let bytes = self
            .max_steps
            .min(n)
            .checked_mul(n)
            .and_then(|x| x.checked_mul(8));
        if bytes.is_none_or(|b| b > MAX_BASIS_BYTES) {
            return bad(
                "max_steps",
                format!(
                    "{} Lanczos vectors of {n} parameters exceed the {} GiB the basis may take",
                    self.max_steps,
                    MAX_BASIS_BYTES >> 30
                ),
            );
        }
        Ok(())
    }
}

/// The result of [`extreme_eigenpairs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtremeEigenpairs {
    /// The `k` largest eigenvalues, in decreasing order.
    pub top: Vec<Eigenpair>,
    /// The smallest eigenvalue (the negative end of the spectrum).
    pub bottom: Eigenpair,
    /// Lanczos steps taken.
    pub steps: usize,
    /// Operator products used, the residual checks included.
    pub products: usize,
    /// Whether the residual of every one of the top `k` is at most `tol` times the largest $|\theta|$ (Lanczos
    /// stops as soon as they are).
    pub converged: bool,
    /// Whether the bottom one's residual is too (it is reported either way, with its residual).
    pub bottom_converged: bool,
}

/// An orthonormal Lanczos basis and the tridiagonal matrix of the operator in it.
struct Lanczos {
    basis: Vec<Vec<f64>>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
}

impl Lanczos {
    fn start(v0: Vec<f64>) -> Self {
        let n0 = norm(&v0);
        Lanczos {
            basis: vec![v0.into_iter().map(|x| x / n0).collect()],
            alpha: Vec::new(),
            beta: Vec::new(),
        }
    }

    /// One step: extends the tridiagonal matrix by one row; false once the Krylov space is invariant (no new
    /// direction).
    fn step(&mut self, op: &dyn SymmetricOperator) -> bool {
        let q = self.basis.last().expect("a start vector");
        let mut w = op.apply(q);
        let a = dot(q, &w);
        self.alpha.push(a);
        // Full reorthogonalization, twice ("twice is enough"), subsumes the three-term recurrence.
        for _ in 0..2 {
            for b in &self.basis {
                let c = dot(b, &w);
                axpy_into(&mut w, -c, b);
            }
        }
        let beta = norm(&w);
        let scale = self
            .alpha
            .iter()
            .chain(&self.beta)
            .fold(0.0f64, |m, x| m.max(x.abs()));
        if !(beta.is_finite() && beta > 1e-12 * scale.max(f64::MIN_POSITIVE)) {
            return false;
        }
        self.beta.push(beta);
        self.basis.push(w.into_iter().map(|x| x / beta).collect());
        true
    }

    /// Eigenvalues (increasing) and eigenvectors (columns) of the `j x j` tridiagonal matrix, `j` = steps taken.
    fn ritz(&self) -> (Vec<f64>, DMatrix<f64>) {
        let j = self.alpha.len();
        let t = DMatrix::from_fn(j, j, |r, c| {
            if r == c {
                self.alpha[r]
            } else if r + 1 == c {
                self.beta[r]
            } else if c + 1 == r {
                self.beta[c]
            } else {
                0.0
            }
        });
        let eig = SymmetricEigen::new(t);
        let mut order: Vec<usize> = (0..j).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
        let values = order.iter().map(|&i| eig.eigenvalues[i]).collect();
        let vectors = DMatrix::from_fn(j, j, |r, c| eig.eigenvectors[(r, order[c])]);
        (values, vectors)
    }

    /// $\beta_j |s_{j}|$: the residual of Ritz vector `s` if the basis were extended no further.
    fn residual_estimate(&self, s: &[f64]) -> f64 {
        let j = self.alpha.len();
        match self.beta.get(j - 1) {
            Some(b) => b * s[j - 1].abs(),
            None => 0.0,
        }
    }

    fn ritz_vector(&self, s: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.basis[0].len()];
        for (q, c) in self.basis.iter().zip(s) {
            axpy_into(&mut x, *c, q);
        }
        let n = norm(&x);
        x.iter_mut().for_each(|v| *v /= n);
        x
    }
}

/// The `cfg.k` largest eigenvalues of `op` and its smallest one, by Lanczos with full reorthogonalization from a
/// seeded Gaussian start, each with its true residual.
///
/// **Stopping rule.** A small residual proves that $\theta$ is close to *an* eigenvalue, not to the largest: while
/// the start vector's component along the top eigenvector is still small in the Krylov space, the top Ritz value
/// can settle on the second eigenvalue with a tiny residual (a real Hessian stopped after 11 steps at 1.4286, its
/// top eigenvalue being 1.4650). So once the top-$k$ residual estimates first fall below `tol` times the largest
/// $|\theta|$, at Krylov dimension $j_0$, Lanczos goes on to dimension $\max($[`CONFIRM_FACTOR`]$\,j_0,$
/// [`MIN_KRYLOV`]$)$ and stops there if the residuals pass again (else as soon as they do), at `max_steps`
/// (capped at $n$), or when the Krylov space becomes invariant (then the Ritz values are exact). Measured on
/// 2,400 runs of Hessian-like spectra of dimension 3000 (top gaps 0.003 to 0.036, 3 to 30 outliers, $k$ = 1 and
/// 5, `tol` 1e-3; the test `a_settled_second_eigenvalue_does_not_stop_lanczos` keeps the hardest ones): the old
/// rule (stop at $j_0$) returned a top-$k$ eigenvalue off by more than `tol` in 135 of them, a fixed minimum of
/// 20, 30 or 40 steps in 28, 3 and 3 (slow spectra need more than any fixed number), the larger of two runs
/// from different start vectors in up to 9% (at twice the products), this rule in none, at about twice the old
/// rule's products (22 instead of 11 on fast spectra, 45 instead of 23 on slow ones). `max_steps` may cut the
/// confirmation short; `converged` then still reports the true residuals.
pub fn extreme_eigenpairs(
    op: &dyn SymmetricOperator,
    cfg: &LanczosConfig,
) -> Result<ExtremeEigenpairs, ConfigError> {
    extreme_eigenvectors(op, cfg).map(|(pairs, _)| pairs)
}

/// The unit Ritz vectors of an [`ExtremeEigenpairs`], in the same order.
#[derive(Clone, Debug, PartialEq)]
pub struct RitzVectors {
    /// One per top eigenvalue.
    pub top: Vec<Vec<f64>>,
    /// The bottom one's.
    pub bottom: Vec<f64>,
}

/// [`extreme_eigenpairs`] with the Ritz vectors.
pub fn extreme_eigenvectors(
    op: &dyn SymmetricOperator,
    cfg: &LanczosConfig,
) -> Result<(ExtremeEigenpairs, RitzVectors), ConfigError> {
    let n = op.dim();
    cfg.check(n)?;
    let mut start = vec![0.0; n];
    rng(cfg.seed).fill_standard_normal(&mut start);
    let mut lanczos = Lanczos::start(start);
    let wanted = |values: &[f64]| -> Vec<usize> {
        let j = values.len();
        let mut idx: Vec<usize> = (j.saturating_sub(cfg.k)..j).rev().collect();
        idx.push(0);
        idx
    };
    let max_steps = cfg.max_steps.min(n);
    let mut products = 0;
    // The Krylov dimension at which the residuals may end the run, once they first pass (see the doc comment).
    let mut confirm_at: Option<usize> = None;
    loop {
        let more = lanczos.step(op);
        products += 1;
        let (values, vectors) = lanczos.ritz();
        let radius = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let top_k = &wanted(&values)[..cfg.k.min(values.len())];
        let settled = values.len() >= cfg.k
            && top_k.iter().all(|&i| {
                let s: Vec<f64> = vectors.column(i).iter().copied().collect();
                lanczos.residual_estimate(&s) <= cfg.tol * radius
            });
        let steps = lanczos.alpha.len();
        if settled && confirm_at.is_none() {
            confirm_at = Some((CONFIRM_FACTOR * steps).max(MIN_KRYLOV));
        }
        let confirmed = confirm_at.is_some_and(|at| steps >= at);
        if (settled && confirmed) || !more || steps >= max_steps {
            break;
        }
    }
    let (values, vectors) = lanczos.ritz();
    let radius = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut pairs = Vec::new();
    let mut ritz_vectors = Vec::new();
    for &i in &wanted(&values) {
        let s: Vec<f64> = vectors.column(i).iter().copied().collect();
        let x = lanczos.ritz_vector(&s);
        let mut r = op.apply(&x);
        products += 1;
        axpy_into(&mut r, -values[i], &x);
        pairs.push(Eigenpair {
            value: values[i],
            residual: norm(&r),
        });
        ritz_vectors.push(x);
    }
    let bottom = pairs.pop().expect("the bottom pair");
    let bottom_vector = ritz_vectors.pop().expect("the bottom vector");
    let within = |p: &Eigenpair| p.residual <= cfg.tol * radius;
    let pairs = ExtremeEigenpairs {
        converged: pairs.iter().all(within),
        bottom_converged: within(&bottom),
        top: pairs,
        bottom,
        steps: lanczos.alpha.len(),
        products,
    };
    Ok((
        pairs,
        RitzVectors {
            top: ritz_vectors,
            bottom: bottom_vector,
        },
    ))
}

/// How far `op` is from symmetric, from two products with Gaussian $u$, $v$ seeded by `seed`:
/// $|u^\top Av - v^\top Au| \,/\, \sqrt{(\lVert Au\rVert^2 + \lVert Av\rVert^2)/2}$, whose square has the mean
/// $\lVert A - A^\top\rVert_F^2 / \lVert A\rVert_F^2$ over the draws. About $10^{-15}$ for a symmetric matrix in
/// f64 (the rounding of the products); a random estimate, so a non-symmetric operator passes a threshold $t$ with
/// probability about $t\lVert A\rVert_F / \lVert A - A^\top\rVert_F$. 0 when both products vanish.
pub fn asymmetry(op: &dyn SymmetricOperator, seed: u64) -> f64 {
    let n = op.dim();
    let mut rng = rng(seed);
    let (mut u, mut v) = (vec![0.0; n], vec![0.0; n]);
    rng.fill_standard_normal(&mut u);
    rng.fill_standard_normal(&mut v);
    let (au, av) = (op.apply(&u), op.apply(&v));
    let scale = ((dot(&au, &au) + dot(&av, &av)) / 2.0).sqrt();
    if scale > 0.0 {
        (dot(&u, &av) - dot(&v, &au)).abs() / scale
    } else {
        0.0
    }
}

/// A stochastic trace estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEstimate {
    /// The mean of the samples.
    pub estimate: f64,
    /// Their standard deviation over $\sqrt N$.
    pub std_error: f64,
    /// $N$.
    pub probes: usize,
    /// $z_i^\top A z_i$ for each probe.
    pub samples: Vec<f64>,
}

/// Hutchinson's estimate of $\operatorname{tr} A$ from `probes` Rademacher vectors (at least 2, for the standard
/// error).
pub fn hutchinson_trace(
    op: &dyn SymmetricOperator,
    probes: usize,
    seed: u64,
) -> Result<TraceEstimate, ConfigError> {
    if probes < 2 {
        return Err(ConfigError::Invalid {
            field: "probes",
            reason: format!("the trace needs at least 2 probes, got {probes}"),
        });
    }
    limits::product("probes", &[probes], limits::MAX_ELEMENTS)?;
    let mut rng = rng(seed);
    let samples: Vec<f64> = (0..probes)
        .map(|_| {
            let z = rademacher(&mut rng, op.dim());
            dot(&z, &op.apply(&z))
        })
        .collect();
    let (estimate, std_error) = mean_and_std_error(&samples);
    Ok(TraceEstimate {
        estimate,
        std_error,
        probes,
        samples,
    })
}

/// Hutch++ (Meyer, Musco, Musco and Woodruff 2021): $\operatorname{tr} A$ from `products` operator products, a
/// third of them sketching the range of $A$ ($Q$ an orthonormal basis of $AS$ for Rademacher $S$), a third for the
/// exact $\operatorname{tr}(Q^\top A Q)$, and the rest Hutchinson probes of the deflated $(I - QQ^\top)A(I -
/// QQ^\top)$. Its error falls like $1/N$ instead of Hutchinson's $1/\sqrt N$ when the spectrum decays.
///
/// `samples` are the deflated probes' $z_i^\top (I - QQ^\top)A(I - QQ^\top) z_i$ and `std_error` their standard
/// error (the low-rank part is exact); `probes` is the number of products. At least 4 products (1 sketch vector,
/// 1 for its trace, 2 probes).
pub fn hutchpp_trace(
    op: &dyn SymmetricOperator,
    products: usize,
    seed: u64,
) -> Result<TraceEstimate, ConfigError> {
    if products < 4 {
        return Err(ConfigError::Invalid {
            field: "probes",
            reason: format!("Hutch++ needs at least 4 products, got {products}"),
        });
    }
    let n = op.dim();
    let sketch = (products / 3).min(n);
    let probes = products - 2 * sketch;
    limits::product("probes", &[sketch, n], limits::MAX_ELEMENTS)?;
    limits::product("probes", &[probes], limits::MAX_ELEMENTS)?;
    let mut rng = rng(seed);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(sketch);
    for _ in 0..sketch {
        let mut y = op.apply(&rademacher(&mut rng, n));
        let scale = norm(&y);
        project_out(&basis, &mut y);
        let rest = norm(&y);
        // A column in the span of the earlier ones (A of low rank) adds nothing.
        if rest > 1e-10 * scale && rest.is_finite() {
            basis.push(y.into_iter().map(|x| x / rest).collect());
        }
    }
    let low_rank: f64 = basis.iter().map(|q| dot(q, &op.apply(q))).sum();
    let samples: Vec<f64> = (0..probes)
        .map(|_| {
            let mut z = rademacher(&mut rng, n);
            project_out(&basis, &mut z);
            let mut az = op.apply(&z);
            project_out(&basis, &mut az);
            dot(&z, &az)
        })
        .collect();
    let (mean, std_error) = mean_and_std_error(&samples);
    Ok(TraceEstimate {
        estimate: low_rank + mean,
        std_error,
        probes: products,
        samples,
    })
}

/// Removes from `v` its components along the orthonormal `basis` (twice, for orthogonality to rounding).
fn project_out(basis: &[Vec<f64>], v: &mut [f64]) {
    for _ in 0..2 {
        for q in basis {
            let c = dot(q, v);
            axpy_into(v, -c, q);
        }
    }
}

/// The mean of `samples` and its standard error (sample standard deviation over $\sqrt N$; needs $N \ge 2$).
fn mean_and_std_error(samples: &[f64]) -> (f64, f64) {
    let (mean, std) = crate::stats::mean_std(samples);
    (mean, std / (samples.len() as f64).sqrt())
}

/// A stochastic estimate of the diagonal of an operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiagonalEstimate {
    /// $\frac1N\sum_i z_i \odot A z_i$.
    pub diagonal: Vec<f64>,
    /// The standard error of each entry.
    pub std_error: Vec<f64>,
    /// $\sum_j \hat d_j^2$, the squared norm of the estimate (biased up by $\sum_j$ `std_error`$_j^2$ on average).
    pub sum_of_squares: f64,
    /// $N$.
    pub probes: usize,
}

/// Hutchinson's (Bekas, Kokiopoulou and Saad 2007) estimate of $\operatorname{diag} A$ from `probes` Rademacher
/// vectors (at least 2, for the standard errors): $\mathbb E[z \odot Az] = \operatorname{diag} A$ since
/// $z_j^2 = 1$.
pub fn hutchinson_diagonal(
    op: &dyn SymmetricOperator,
    probes: usize,
    seed: u64,
) -> Result<DiagonalEstimate, ConfigError> {
    if probes < 2 {
        return Err(ConfigError::Invalid {
            field: "probes",
            reason: format!("the diagonal needs at least 2 probes, got {probes}"),
        });
    }
    let n = op.dim();
    let mut rng = rng(seed);
    let (mut sum, mut sum_sq) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..probes {
        let z = rademacher(&mut rng, n);
        for ((s, q), (zj, azj)) in sum
            .iter_mut()
            .zip(&mut sum_sq)
            .zip(z.iter().zip(op.apply(&z)))
        {
            let x = zj * azj;
            *s += x;
            *q += x * x;
        }
    }
    let p = probes as f64;
    let diagonal: Vec<f64> = sum.iter().map(|s| s / p).collect();
    let std_error = diagonal
        .iter()
        .zip(&sum_sq)
        .map(|(m, q)| ((q - p * m * m).max(0.0) / (p - 1.0) / p).sqrt())
        .collect();
    Ok(DiagonalEstimate {
        sum_of_squares: diagonal.iter().map(|d| d * d).sum(),
        diagonal,
        std_error,
        probes,
    })
}

/// Settings of [`slq_density`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityConfig {
    /// Rademacher start vectors.
    pub probes: usize,
    /// Lanczos steps per probe (quadrature nodes).
    pub steps: usize,
    /// Points of the output grid.
    pub points: usize,
    /// Kernel width relative to the width of the spectrum found.
    pub sigma_rel: f64,
    /// Seed of the probes.
    pub seed: u64,
}

impl Default for DensityConfig {
    fn default() -> Self {
        DensityConfig {
            probes: 2,
            steps: 30,
            points: 400,
            sigma_rel: 0.01,
            seed: 1,
        }
    }
}

impl DensityConfig {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.probes == 0 {
            return bad("density_probes", "must be at least 1, got 0".into());
        }
        if self.steps < 2 {
            return bad(
                "density_steps",
                format!("must be at least 2, got {}", self.steps),
            );
        }
        if !(2..=100_000).contains(&self.points) {
            return bad(
                "density_points",
                format!("the grid needs 2..=100000 points, got {}", self.points),
            );
        }
        if !(self.sigma_rel.is_finite() && self.sigma_rel > 0.0 && self.sigma_rel <= 1.0) {
            return bad(
                "sigma_rel",
                format!("must be in (0, 1], got {}", self.sigma_rel),
            );
        }
        Ok(())
    }
}

/// An eigenvalue density: nonnegative values on a grid that integrate to about 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Density {
    /// Eigenvalues at which the density is given (increasing, evenly spaced).
    pub grid: Vec<f64>,
    /// The smoothed density at each grid point.
    pub density: Vec<f64>,
    /// The Gaussian kernel's standard deviation.
    pub sigma: f64,
    /// Quadrature nodes (Ritz values) of each probe.
    pub nodes: Vec<Vec<f64>>,
    /// Their weights (squared first components of the Ritz vectors; each probe's sum to 1).
    pub weights: Vec<Vec<f64>>,
}

/// The eigenvalue density of `op` by stochastic Lanczos quadrature.
pub fn slq_density(
    op: &dyn SymmetricOperator,
    cfg: &DensityConfig,
) -> Result<Density, ConfigError> {
    cfg.check()?;
    limits::product(
        "density_steps",
        &[cfg.steps.min(op.dim()), op.dim()],
        limits::MAX_ELEMENTS,
    )?;
    let mut rng = rng(cfg.seed);
    let mut nodes = Vec::new();
    let mut weights = Vec::new();
    for _ in 0..cfg.probes {
        let mut lanczos = Lanczos::start(rademacher(&mut rng, op.dim()));
        while lanczos.step(op) && lanczos.alpha.len() < cfg.steps.min(op.dim()) {}
        let (values, vectors) = lanczos.ritz();
        weights.push(vectors.row(0).iter().map(|s| s * s).collect());
        nodes.push(values);
    }
    let all = nodes.iter().flatten();
    let lo = all.clone().fold(f64::INFINITY, |m, &x| m.min(x));
    let hi = all.fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    let width = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let sigma = cfg.sigma_rel * width;
    let (from, to) = (lo - 5.0 * sigma, hi + 5.0 * sigma);
    let grid: Vec<f64> = (0..cfg.points)
        .map(|i| from + (to - from) * i as f64 / (cfg.points - 1) as f64)
        .collect();
    let norm = 1.0 / (cfg.probes as f64 * sigma * (2.0 * std::f64::consts::PI).sqrt());
    let density = grid
        .iter()
        .map(|&t| {
            let mut sum = 0.0;
            for (ns, ws) in nodes.iter().zip(&weights) {
                for (&x, &w) in ns.iter().zip(ws) {
                    sum += w * (-0.5 * ((t - x) / sigma).powi(2)).exp();
                }
            }
            sum * norm
        })
        .collect();
    Ok(Density {
        grid,
        density,
        sigma,
        nodes,
        weights,
    })
}

#[cfg(test)]
mod tests;
