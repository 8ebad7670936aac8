//! Interpolators of $X\beta = y$: minimum $\ell_2$, minimum $\ell_1$, and minimum hyperbolic entropy (the solution
//! Theorem 1 predicts for a diagonal network trained from scale $a$).

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use samlab_core::linalg::{cholesky_solve, norm, Matrix};

/// Why an interpolator could not be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SolveError {
    /// $X X^\top$ is singular: the rows of X are linearly dependent (or n > d), so not every y is interpolable.
    #[error("X X^T is singular: the {0} training inputs are linearly dependent")]
    Singular(usize),
    /// The linear program failed.
    #[error("the minimum-l1 linear program failed: {0}")]
    Lp(String),
    /// Newton on the dual did not reach the tolerance.
    #[error("the hyperbolic-entropy solver did not converge (residual {residual:e} after {iterations} Newton steps)")]
    NoConvergence {
        /// $\lVert X\beta - y \rVert$ reached.
        residual: f64,
        /// Newton steps taken.
        iterations: usize,
    },
}

/// The minimum-$\ell_2$ interpolator $X^\top (X X^\top)^{-1} y$.
pub fn min_l2(x: &Matrix, y: &[f64]) -> Result<Vec<f64>, SolveError> {
    let nu = cholesky_solve(&x.weighted_gram(&vec![1.0; x.cols]), y)
        .ok_or(SolveError::Singular(x.rows))?;
    Ok(x.tr_mul_vec(&nu))
}

/// The minimum-$\ell_1$ interpolator, by linear programming ($\beta = p - q$, $p, q \ge 0$,
/// $\min \sum p + q$ s.t. $X(p - q) = y$).
pub fn min_l1(x: &Matrix, y: &[f64]) -> Result<Vec<f64>, SolveError> {
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let pos: Vec<_> = (0..x.cols)
        .map(|_| lp.add_var(1.0, (0.0, f64::INFINITY)))
        .collect();
    let neg: Vec<_> = (0..x.cols)
        .map(|_| lp.add_var(1.0, (0.0, f64::INFINITY)))
        .collect();
    for (i, &yi) in y.iter().enumerate() {
        let terms: Vec<_> = x
            .row(i)
            .iter()
            .enumerate()
            .flat_map(|(j, &a)| [(pos[j], a), (neg[j], -a)])
            .collect();
        lp.add_constraint(terms.as_slice(), ComparisonOp::Eq, yi);
    }
    let solution = match lp.solve().map_err(|e| SolveError::Lp(e.to_string()))? {
        microlp::SolveOutcome::Solution(solution) => solution,
        microlp::SolveOutcome::Interrupted(_) => return Err(SolveError::Lp("interrupted".into())),
    };
    Ok((0..x.cols)
        .map(|j| solution[pos[j]] - solution[neg[j]])
        .collect())
}

/// How [`min_entropy`] obtained its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Newton on the dual, with continuation in the scale.
    DualNewton,
    /// Every scale below [`L1_LIMIT`]: the $a \to 0$ limit, the minimum-$\ell_1$ interpolator.
    MinL1Limit,
}

/// Below this largest scale the hyperbolic entropy is treated as its $\ell_1$ limit.
pub const L1_LIMIT: f64 = 1e-6;

/// The solution of [`min_entropy`].
#[derive(Clone, Debug)]
pub struct EntropySolution {
    /// The interpolator.
    pub beta: Vec<f64>,
    /// How it was computed.
    pub method: Method,
    /// Newton steps over all continuation stages.
    pub iterations: usize,
}

/// $\arg\min \phi_a(\beta)$ s.t. $X\beta = y$ ([`super::entropy::phi`]), from Newton's method on the dual
/// $D(\nu) = \sum_j \frac{a_j^2}{2}\cosh((X^\top\nu)_j) - \nu^\top y$ with $\beta(\nu) = \frac{a^2}{2}\sinh(X^\top\nu)$,
/// backtracking, and continuation from $10^k a$ (near the minimum-$\ell_2$ regime) down to $a$ so that
/// $\cosh$ never overflows. Scales are floored at $10^{-8}\max_j a_j$; when every $a_j < $ [`L1_LIMIT`] the
/// minimum-$\ell_1$ interpolator (the limit) is returned.
pub fn min_entropy(x: &Matrix, y: &[f64], a: &[f64]) -> Result<EntropySolution, SolveError> {
    let a_max = a.iter().copied().fold(0.0, f64::max);
    if a_max < L1_LIMIT {
        return Ok(EntropySolution {
            beta: min_l1(x, y)?,
            method: Method::MinL1Limit,
            iterations: 0,
        });
    }
    let floor = 1e-8 * a_max;
    let a2: Vec<f64> = a.iter().map(|&v| v.max(floor).powi(2)).collect();
    // Stages: scale factors 10^k, ..., 10, 1 with the first making max a about 1.
    let stages = (1.0 / a_max).log10().ceil().max(0.0) as i32;
    let mut nu = vec![0.0; x.rows];
    let mut iterations = 0;
    let tol = 1e-12 * (1.0 + norm(y));
    for k in (0..=stages).rev() {
        let scale2 = 10f64.powi(2 * k);
        let w: Vec<f64> = a2.iter().map(|v| v * scale2 / 2.0).collect();
        let stage_tol = if k == 0 { tol } else { 1e-6 * (1.0 + norm(y)) };
        iterations += newton(x, y, &w, &mut nu, stage_tol)?;
    }
    let w: Vec<f64> = a2.iter().map(|v| v / 2.0).collect();
    Ok(EntropySolution {
        beta: primal(x, &w, &nu),
        method: Method::DualNewton,
        iterations,
    })
}

/// $\beta(\nu) = w \odot \sinh(X^\top \nu)$ with $w = a^2/2$.
fn primal(x: &Matrix, w: &[f64], nu: &[f64]) -> Vec<f64> {
    x.tr_mul_vec(nu)
        .iter()
        .zip(w)
        .map(|(z, w)| w * z.sinh())
        .collect()
}

/// The dual objective, shifted by the constant $-\sum w$ ($\cosh z - 1 = 2\sinh^2(z/2)$) so that it stays small.
fn dual(x: &Matrix, y: &[f64], w: &[f64], nu: &[f64]) -> f64 {
    let z = x.tr_mul_vec(nu);
    let cosh_minus_one = |z: f64| 2.0 * (z / 2.0).sinh().powi(2);
    z.iter()
        .zip(w)
        .map(|(z, w)| w * cosh_minus_one(*z))
        .sum::<f64>()
        - nu.iter().zip(y).map(|(a, b)| a * b).sum::<f64>()
}

/// $\lVert X\beta(\nu) - y \rVert$.
fn residual_norm(x: &Matrix, y: &[f64], w: &[f64], nu: &[f64]) -> f64 {
    let r: Vec<f64> = x
        .mul_vec(&primal(x, w, nu))
        .iter()
        .zip(y)
        .map(|(a, b)| a - b)
        .collect();
    norm(&r)
}

/// Damped Newton on the dual from `nu` until $\lVert X\beta(\nu) - y\rVert \le$ `tol`; returns the steps taken.
fn newton(
    x: &Matrix,
    y: &[f64],
    w: &[f64],
    nu: &mut Vec<f64>,
    tol: f64,
) -> Result<usize, SolveError> {
    const MAX_STEPS: usize = 200;
    let mut residual = f64::INFINITY;
    for step in 0..MAX_STEPS {
        let z = x.tr_mul_vec(nu);
        let beta: Vec<f64> = z.iter().zip(w).map(|(z, w)| w * z.sinh()).collect();
        let grad: Vec<f64> = x.mul_vec(&beta).iter().zip(y).map(|(a, b)| a - b).collect();
        residual = norm(&grad);
        if residual <= tol {
            return Ok(step);
        }
        let curvature: Vec<f64> = z.iter().zip(w).map(|(z, w)| w * z.cosh()).collect();
        let hessian = x.weighted_gram(&curvature);
        let Some(dir) = cholesky_solve(&hessian, &grad) else {
            break;
        };
        let decrease: f64 = grad.iter().zip(&dir).map(|(g, d)| g * d).sum();
        // Near the solution a full step that shrinks the residual is taken as is (the dual's decrease can be
        // below its rounding there); otherwise backtrack on the dual.
        let full: Vec<f64> = nu.iter().zip(&dir).map(|(n, d)| n - d).collect();
        if residual_norm(x, y, w, &full) < 0.5 * residual {
            *nu = full;
            continue;
        }
        let d0 = dual(x, y, w, nu);
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = nu.iter().zip(&dir).map(|(n, d)| n - t * d).collect();
            let d1 = dual(x, y, w, &trial);
            if d1.is_finite() && d1 <= d0 - 0.25 * t * decrease {
                *nu = trial;
                break;
            }
            t /= 2.0;
            if t < 1e-12 {
                // No progress possible in floating point: accept the current point if it is close.
                return if residual <= 1e3 * tol {
                    Ok(step)
                } else {
                    Err(SolveError::NoConvergence {
                        residual,
                        iterations: step,
                    })
                };
            }
        }
    }
    Err(SolveError::NoConvergence {
        residual,
        iterations: MAX_STEPS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::entropy::phi;
    use samlab_core::data::SparseRegression;

    fn problem() -> (Matrix, Vec<f64>, Vec<f64>) {
        let (data, theta) = SparseRegression::NOTEBOOK.generate().unwrap();
        (
            Matrix::from_array(&data.x_train),
            data.y_train.to_vec(),
            theta.to_vec(),
        )
    }

    fn residual(x: &Matrix, y: &[f64], beta: &[f64]) -> f64 {
        norm(
            &x.mul_vec(beta)
                .iter()
                .zip(y)
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>(),
        )
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        norm(&a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>()) / norm(b)
    }

    #[test]
    fn min_l1_recovers_the_sparse_target_and_min_l2_is_minimal() {
        let (x, y, theta) = problem();
        let l1 = min_l1(&x, &y).unwrap();
        assert!(rel(&l1, &theta) < 1e-9, "{}", rel(&l1, &theta));
        let l2 = min_l2(&x, &y).unwrap();
        assert!(residual(&x, &y, &l2) < 1e-12);
        // Any other interpolator (e.g. theta) has a larger l2 norm; l2's l1 norm exceeds theta's.
        assert!(norm(&l2) < norm(&theta));
        assert!(
            l2.iter().map(|b| b.abs()).sum::<f64>() > theta.iter().map(|b| b.abs()).sum::<f64>()
        );
    }

    #[test]
    fn min_entropy_is_optimal_and_moves_from_l2_to_l1() {
        let (x, y, theta) = problem();
        let l2 = min_l2(&x, &y).unwrap();
        let big = min_entropy(&x, &y, &vec![100.0; 30]).unwrap();
        assert!(rel(&big.beta, &l2) < 1e-3);
        let mut previous = f64::INFINITY;
        for alpha in [1.0, 0.1, 0.01, 1e-3, 1e-5] {
            let a = vec![alpha; 30];
            let s = min_entropy(&x, &y, &a).unwrap();
            assert_eq!(s.method, Method::DualNewton);
            assert!(residual(&x, &y, &s.beta) < 1e-10, "alpha {alpha}");
            // Optimality: any feasible direction (a null-space step towards theta) increases phi.
            let towards: Vec<f64> = s
                .beta
                .iter()
                .zip(&theta)
                .map(|(b, t)| b + 1e-3 * (t - b))
                .collect();
            assert!(phi(&towards, &a) > phi(&s.beta, &a) || alpha < 1e-3);
            let dist = rel(&s.beta, &theta);
            assert!(
                dist <= previous + 1e-9,
                "alpha {alpha}: {dist} after {previous}"
            );
            previous = dist;
        }
        assert!(
            previous < 1e-3,
            "small alpha approaches the min-l1 solution: {previous}"
        );
        let tiny = min_entropy(&x, &y, &vec![1e-9; 30]).unwrap();
        assert_eq!(tiny.method, Method::MinL1Limit);
        assert!(rel(&tiny.beta, &theta) < 1e-9);
    }

    #[test]
    fn singular_inputs_are_reported() {
        let x = Matrix::new(2, 2, vec![1.0, 2.0, 2.0, 4.0]);
        assert_eq!(
            min_l2(&x, &[1.0, 2.0]).unwrap_err(),
            SolveError::Singular(2)
        );
    }
}
