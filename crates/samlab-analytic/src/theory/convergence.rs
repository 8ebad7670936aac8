//! Convergence of SAM (Theorem 2 of the paper, with the constants of the authors' talk), checked on least squares.
//!
//! Iterates (the SAM step of [`samlab_core::ascent`]): stochastic unnormalized SAM with the same batch $S_t$ ($|S_t| = b$, drawn uniformly with
//! replacement) for ascent and descent, $w_{t+1} = w_t - \gamma_t \nabla L_{S_t}(w_t + \rho_t \nabla L_{S_t}(w_t))$.
//! Assumptions: every $\ell_i$ is $\beta$-smooth; $\mathbb{E}_i\lVert\nabla\ell_i - \nabla L\rVert^2 \le \sigma^2$;
//! for the second bound, PL: $\frac12\lVert\nabla L\rVert^2 \ge \mu(L - L^*)$.
//!
//! - With $\gamma = 1/(\sqrt{T}\beta)$, $\rho = 1/(T^{1/4}\beta)$:
//!   $\frac1T\sum_{t<T}\mathbb{E}\lVert\nabla L(w_t)\rVert^2 \le \frac{4\beta(L(w_0)-L^*)}{\sqrt T} + \frac{8\sigma^2}{b\sqrt T}$.
//! - With $\gamma_t = \min\{\frac{8t+4}{3\mu(t+1)^2}, \frac{1}{2\beta}\}$, $\rho_t = \sqrt{\gamma_t/\beta}$:
//!   $\mathbb{E}L(w_T) - L^* \le \frac{3\beta^2(L(w_0)-L^*)}{\mu^2T^2} + \frac{22\beta\sigma^2}{\mu^2 bT}$.

use samlab_core::ascent::{Ascent, Host, HostOracle, VariantState};
use samlab_core::linalg::{cholesky_solve, dot, norm, Matrix};
use samlab_core::numpy_rng::NumpyRandomState;
use samlab_core::sam::SamConfig;
use samlab_core::ConfigError;

/// $L(w) = \frac{1}{2n}\lVert Aw - b\rVert^2$ with its constants.
#[derive(Clone, Debug)]
pub struct LeastSquares {
    /// Inputs, `n x d`.
    pub a: Matrix,
    /// Targets.
    pub b: Vec<f64>,
    /// The minimizer.
    pub w_star: Vec<f64>,
    /// $L^* = L(w^*)$.
    pub l_star: f64,
    /// Smoothness of every $\ell_i$: $\max_i \lVert a_i\rVert^2$.
    pub beta: f64,
    /// PL constant: the smallest eigenvalue of $A^\top A / n$.
    pub mu: f64,
}

impl LeastSquares {
    /// Gaussian inputs $a_i \sim N(0, I_d / d)$ (so $\beta$ is of order 1), targets $A w_0 + $ `noise` $\cdot N(0, 1)$ (so $L^* > 0$ and the
    /// gradient noise stays positive at the optimum). Needs $n \ge d$.
    pub fn generate(n: usize, d: usize, noise: f64, seed: u32) -> Self {
        assert!(n >= d && d > 0, "least squares needs n >= d > 0");
        let mut rng = NumpyRandomState::new(seed);
        let mut values = vec![0.0; n * d];
        rng.fill_standard_normal(&mut values);
        let scale = 1.0 / (d as f64).sqrt();
        let a = Matrix::new(n, d, values.iter().map(|v| v * scale).collect());
        let mut w0 = vec![0.0; d];
        rng.fill_standard_normal(&mut w0);
        let b: Vec<f64> = a
            .mul_vec(&w0)
            .iter()
            .map(|y| y + noise * rng.standard_normal())
            .collect();
        // Normal equations: (A^T A) w = A^T b; A^T A is the Gram matrix of A's columns.
        let at = transpose(&a);
        let hessian = at.weighted_gram(&vec![1.0 / n as f64; n]);
        let rhs: Vec<f64> = a.tr_mul_vec(&b).iter().map(|v| v / n as f64).collect();
        let w_star =
            cholesky_solve(&hessian, &rhs).expect("Gaussian inputs with n >= d are full rank");
        let beta = (0..n).map(|i| dot(a.row(i), a.row(i))).fold(0.0, f64::max);
        let mu = smallest_eigenvalue(&hessian);
        let mut ls = LeastSquares {
            a,
            b,
            w_star,
            l_star: 0.0,
            beta,
            mu,
        };
        ls.l_star = ls.loss(&ls.w_star.clone());
        ls
    }

    /// Number of examples.
    pub fn n(&self) -> usize {
        self.b.len()
    }

    /// $L(w)$.
    pub fn loss(&self, w: &[f64]) -> f64 {
        let r = self.residuals(w);
        dot(&r, &r) / (2 * self.n()) as f64
    }

    fn residuals(&self, w: &[f64]) -> Vec<f64> {
        self.a
            .mul_vec(w)
            .iter()
            .zip(&self.b)
            .map(|(p, y)| p - y)
            .collect()
    }

    /// $\nabla L_S(w) = \frac{1}{|S|}\sum_{i\in S} (a_i\cdot w - b_i) a_i$ (all examples when `batch` is `None`).
    pub fn grad(&self, w: &[f64], batch: Option<&[usize]>) -> Vec<f64> {
        let mut g = vec![0.0; w.len()];
        let mut add = |i: usize, scale: f64| {
            let r = dot(self.a.row(i), w) - self.b[i];
            for (g, a) in g.iter_mut().zip(self.a.row(i)) {
                *g += scale * r * a;
            }
        };
        match batch {
            Some(rows) => rows.iter().for_each(|&i| add(i, 1.0 / rows.len() as f64)),
            None => (0..self.n()).for_each(|i| add(i, 1.0 / self.n() as f64)),
        }
        g
    }

    /// The gradient noise $\frac1n\sum_i\lVert\nabla\ell_i(w) - \nabla L(w)\rVert^2$.
    pub fn variance(&self, w: &[f64]) -> f64 {
        let g = self.grad(w, None);
        let r = self.residuals(w);
        (0..self.n())
            .map(|i| {
                self.a
                    .row(i)
                    .iter()
                    .zip(&g)
                    .map(|(a, g)| (r[i] * a - g).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / self.n() as f64
    }
}

fn transpose(a: &Matrix) -> Matrix {
    let data = (0..a.cols * a.rows)
        .map(|k| a.data[(k % a.rows) * a.cols + k / a.rows])
        .collect();
    Matrix::new(a.cols, a.rows, data)
}

/// The smallest eigenvalue of a symmetric positive definite matrix, by inverse power iteration.
fn smallest_eigenvalue(h: &Matrix) -> f64 {
    let mut v = vec![1.0; h.rows];
    let mut lambda = 0.0;
    for _ in 0..500 {
        let w = cholesky_solve(h, &v).expect("positive definite");
        let nw = norm(&w);
        let next = norm(&v) / nw;
        v = w.iter().map(|x| x / nw).collect();
        if (next - lambda).abs() <= 1e-13 * next {
            return next;
        }
        lambda = next;
    }
    lambda
}

/// Step sizes $\gamma_t$ and radii $\rho_t$.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepRule {
    /// Theorem 2: $\gamma = 1/(\sqrt{T}\beta)$, $\rho = 1/(T^{1/4}\beta)$ for a run of `T` steps.
    Theorem2,
    /// The PL schedule: $\gamma_t = \min\{(8t+4)/(3\mu(t+1)^2), 1/(2\beta)\}$, $\rho_t = \sqrt{\gamma_t/\beta}$.
    Pl,
    /// Constant $\gamma$ and $\rho$.
    Constant {
        /// Step size.
        gamma: f64,
        /// Radius.
        rho: f64,
    },
}

impl StepRule {
    /// $(\gamma_t, \rho_t)$ at step `t` of `total` on `problem`.
    pub fn at(&self, problem: &LeastSquares, t: usize, total: usize) -> (f64, f64) {
        match *self {
            StepRule::Theorem2 => {
                let tt = total as f64;
                (
                    1.0 / (tt.sqrt() * problem.beta),
                    1.0 / (tt.powf(0.25) * problem.beta),
                )
            }
            StepRule::Pl => {
                let t = t as f64;
                let gamma = ((8.0 * t + 4.0) / (3.0 * problem.mu * (t + 1.0).powi(2)))
                    .min(0.5 / problem.beta);
                (gamma, (gamma / problem.beta).sqrt())
            }
            StepRule::Constant { gamma, rho } => (gamma, rho),
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trace {
    /// $\frac1T\sum_{t<T}\lVert\nabla L(w_t)\rVert^2$.
    pub mean_grad_sq: f64,
    /// $L(w_T) - L^*$.
    pub final_gap: f64,
    /// $\lVert\nabla L(w_T)\rVert$.
    pub final_grad_norm: f64,
    /// The largest gradient noise $\frac1n\sum_i\lVert\nabla\ell_i - \nabla L\rVert^2$ over the iterates.
    pub max_variance: f64,
}

/// Runs `steps` of SAM from `w0` on `problem`: stochastic with batches of `batch` examples (same batch for
/// ascent and descent) or full batch (`None`). The step is [`samlab_core::ascent`]'s, with the normalization and
/// variant of `sam` and the radius of `rule` ($\rho_t$; `sam.rho` is not read).
pub fn run(
    problem: &LeastSquares,
    w0: &[f64],
    batch: Option<usize>,
    sam: &SamConfig,
    rule: StepRule,
    steps: usize,
    seed: u32,
) -> Result<Trace, ConfigError> {
    let checked = sam.check(batch.unwrap_or(problem.n()))?;
    checked.require_layers("least-squares problem", false, false)?;
    let mut rng = NumpyRandomState::new(seed);
    let mut w = w0.to_vec();
    let all: Vec<usize> = (0..problem.n()).collect();
    let mut rows = vec![0; batch.unwrap_or(0)];
    let (mut ascent, mut state) = (Ascent::<Host>::new(&w), VariantState::default());
    let mut acc = vec![0.0; w.len()];
    let (mut sum_grad_sq, mut max_variance) = (0.0, 0.0f64);
    for t in 0..steps {
        let full = problem.grad(&w, None);
        sum_grad_sq += dot(&full, &full);
        if batch.is_some() {
            max_variance = max_variance.max(problem.variance(&w));
            for r in rows.iter_mut() {
                *r = rng.randint(problem.n() as u64) as usize;
            }
        }
        let sample = if batch.is_some() { &rows } else { &all };
        let (gamma, rho) = rule.at(problem, t, steps);
        acc.fill(0.0);
        ascent.group(
            &mut LeastSquaresOracle(problem),
            checked.config(),
            rho,
            &w,
            sample,
            sample,
            &mut state,
            &mut rng,
            &mut acc,
        );
        let c = gamma / sample.len() as f64;
        w.iter_mut().zip(&acc).for_each(|(w, a)| *w -= c * a);
    }
    let g = problem.grad(&w, None);
    Ok(Trace {
        mean_grad_sq: sum_grad_sq / steps.max(1) as f64,
        final_gap: problem.loss(&w) - problem.l_star,
        final_grad_norm: norm(&g),
        max_variance: max_variance.max(problem.variance(&w)),
    })
}

/// Least squares as an [`Oracle`]: $\nabla \ell_i(w) = (a_i \cdot w - b_i)\, a_i$.
struct LeastSquaresOracle<'a>(&'a LeastSquares);

impl HostOracle for LeastSquaresOracle<'_> {
    fn dim(&self) -> usize {
        self.0.a.cols
    }

    fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64 {
        out.fill(0.0);
        for &i in rows {
            let a = self.0.a.row(i);
            let r = scale * (dot(a, w) - self.0.b[i]);
            out.iter_mut().zip(a).for_each(|(o, a)| *o += r * a);
        }
        0.0
    }

    fn losses(&mut self, w: &[f64], rows: &[usize], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(rows) {
            let r = dot(self.0.a.row(i), w) - self.0.b[i];
            *o = 0.5 * r * r;
        }
    }
}

/// Theorem 2's bound on $\frac1T\sum\mathbb{E}\lVert\nabla L\rVert^2$.
pub fn nonconvex_bound(
    problem: &LeastSquares,
    initial_gap: f64,
    sigma2: f64,
    batch: usize,
    steps: usize,
) -> f64 {
    let st = (steps as f64).sqrt();
    4.0 * problem.beta * initial_gap / st + 8.0 * sigma2 / (batch as f64 * st)
}

/// The PL bound on $\mathbb{E}L(w_T) - L^*$.
pub fn pl_bound(
    problem: &LeastSquares,
    initial_gap: f64,
    sigma2: f64,
    batch: usize,
    steps: usize,
) -> f64 {
    let (t, mu2) = (steps as f64, problem.mu * problem.mu);
    3.0 * problem.beta.powi(2) * initial_gap / (mu2 * t * t)
        + 22.0 * problem.beta * sigma2 / (mu2 * batch as f64 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unnormalized SAM (its radius comes from the step rule).
    fn usam() -> SamConfig {
        SamConfig::usam(1.0, samlab_core::sam::Grouping::WholeBatch)
    }

    fn problem() -> LeastSquares {
        LeastSquares::generate(50, 20, 0.5, 0)
    }

    #[test]
    fn constants_are_right() {
        let p = problem();
        assert!(p.beta > 1.0 && p.beta < 4.0, "{}", p.beta);
        // w* is a stationary point; PL holds with mu at random points; each l_i is beta-smooth.
        assert!(norm(&p.grad(&p.w_star, None)) < 1e-12);
        let mut rng = NumpyRandomState::new(9);
        for _ in 0..20 {
            let mut w = vec![0.0; 20];
            rng.fill_standard_normal(&mut w);
            let g = p.grad(&w, None);
            assert!(0.5 * dot(&g, &g) >= p.mu * (p.loss(&w) - p.l_star) * (1.0 - 1e-9));
        }
        let g = p.grad(&p.w_star, None);
        assert!(p.variance(&p.w_star) > 0.0 && dot(&g, &g) < 1e-20);
        assert!(p.mu > 0.0 && p.mu < p.beta);
    }

    #[test]
    fn full_batch_usam_converges_while_normalized_sam_stalls() {
        let p = problem();
        let gamma = 0.5 / p.beta;
        for rho in [0.05, 0.2].map(|r| r / p.beta) {
            let usam = run(
                &p,
                &[0.0; 20],
                None,
                &usam(),
                StepRule::Constant { gamma, rho },
                20_000,
                0,
            )
            .unwrap();
            assert!(usam.final_grad_norm < 1e-10, "{usam:?}");
        }
        let stall = |rho| {
            run(
                &p,
                &[0.0; 20],
                None,
                &SamConfig {
                    normalization: samlab_core::sam::Normalization::Normalized,
                    ..usam()
                },
                StepRule::Constant { gamma, rho },
                20_000,
                0,
            )
            .unwrap()
            .final_grad_norm
        };
        let (small, large) = (stall(0.05), stall(0.2));
        // Stuck far above USAM's 1e-10, in proportion to rho (4x the radius, about 4x the gradient).
        assert!(
            small > 1e-6 && (3.0..5.0).contains(&(large / small)),
            "{small} {large}"
        );
    }

    #[test]
    fn stochastic_usam_stays_below_both_bounds() {
        let p = problem();
        let gap0 = p.loss(&[0.0; 20]) - p.l_star;
        let steps = 4000;
        let traces: Vec<Trace> = (0..4)
            .map(|s| {
                run(
                    &p,
                    &[0.0; 20],
                    Some(1),
                    &usam(),
                    StepRule::Theorem2,
                    steps,
                    s,
                )
                .unwrap()
            })
            .collect();
        let sigma2 = traces.iter().map(|t| t.max_variance).fold(0.0, f64::max);
        let mean = traces.iter().map(|t| t.mean_grad_sq).sum::<f64>() / 4.0;
        assert!(mean < nonconvex_bound(&p, gap0, sigma2, 1, steps), "{mean}");
        let pl: Vec<Trace> = (0..4)
            .map(|s| run(&p, &[0.0; 20], Some(1), &usam(), StepRule::Pl, steps, s).unwrap())
            .collect();
        let gap = pl.iter().map(|t| t.final_gap).sum::<f64>() / 4.0;
        let sigma2 = pl.iter().map(|t| t.max_variance).fold(0.0, f64::max);
        assert!(
            gap > 0.0 && gap < pl_bound(&p, gap0, sigma2, 1, steps),
            "{gap}"
        );
    }
}
