//! The exact Hessian of the diagonal network's training loss (see [`crate::diag`]), its top eigenvalue and
//! its trace: small enough ($2d \times 2d$) for a dense symmetric eigendecomposition.
//!
//! With $M = X^\top X / n$ and $g = X^\top r / n$ (residuals $r = X\beta - y$, $\beta = u \odot v$), the loss
//! $L = \lVert r\rVert^2 / (2n)$ has, in the coordinates $(u, v)$,
//! $$\nabla^2_{uu} L = \operatorname{diag}(v)\, M \operatorname{diag}(v),\quad
//! \nabla^2_{vv} L = \operatorname{diag}(u)\, M \operatorname{diag}(u),\quad
//! \nabla^2_{uv} L = \operatorname{diag}(v)\, M \operatorname{diag}(u) + \operatorname{diag}(g).$$

use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::{Array1, Array2};

use crate::diag::DiagParams;

/// The Hessian of $\lVert X(u \odot v) - y\rVert^2/(2n)$ at `p`, coordinates $(u_1..u_d, v_1..v_d)$.
pub fn hessian(x: &Array2<f64>, y: &Array1<f64>, p: &DiagParams) -> DMatrix<f64> {
    let (n, d) = x.dim();
    let beta = Array1::from(p.beta());
    let r = x.dot(&beta) - y;
    let g = x.t().dot(&r) / n as f64;
    let m = x.t().dot(x) / n as f64;
    let mut h = DMatrix::zeros(2 * d, 2 * d);
    for i in 0..d {
        for j in 0..d {
            let mij = m[[i, j]];
            h[(i, j)] = p.v[i] * mij * p.v[j];
            h[(d + i, d + j)] = p.u[i] * mij * p.u[j];
            let uv = p.v[i] * mij * p.u[j] + if i == j { g[i] } else { 0.0 };
            h[(i, d + j)] = uv;
            h[(d + j, i)] = uv;
        }
    }
    h
}

/// The top eigenvalue and the trace of [`hessian`], exact (dense eigendecomposition).
pub fn top_and_trace(x: &Array2<f64>, y: &Array1<f64>, p: &DiagParams) -> (f64, f64) {
    let h = hessian(x, y, p);
    let trace = h.trace();
    let top = SymmetricEigen::new(h)
        .eigenvalues
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (top, trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use samlab_core::data::SparseRegression;

    /// The gradient $(g \odot v, g \odot u)$ of the loss, for the finite differences.
    fn gradient(x: &Array2<f64>, y: &Array1<f64>, p: &DiagParams) -> Vec<f64> {
        let r = x.dot(&Array1::from(p.beta())) - y;
        let g = x.t().dot(&r) / x.nrows() as f64;
        let gu = g.iter().zip(&p.v).map(|(g, v)| g * v);
        let gv = g.iter().zip(&p.u).map(|(g, u)| g * u);
        gu.chain(gv).collect()
    }

    fn point(d: usize) -> DiagParams {
        DiagParams {
            u: (0..d).map(|i| 0.3 + 0.05 * i as f64).collect(),
            v: (0..d).map(|i| 0.2 - 0.07 * i as f64).collect(),
        }
    }

    #[test]
    fn the_hessian_is_the_derivative_of_the_gradient() {
        let (data, _) = SparseRegression {
            n: 7,
            d: 5,
            r: 2,
            n_test: 1,
            seed: 3,
        }
        .generate()
        .unwrap();
        let (x, y) = (&data.x_train, &data.y_train);
        let p = point(5);
        let h = hessian(x, y, &p);
        let eps = 1e-6;
        for k in 0..10 {
            let moved = |s: f64| {
                let mut q = p.clone();
                if k < 5 {
                    q.u[k] += s;
                } else {
                    q.v[k - 5] += s;
                }
                gradient(x, y, &q)
            };
            let (plus, minus) = (moved(eps), moved(-eps));
            for row in 0..10 {
                let fd = (plus[row] - minus[row]) / (2.0 * eps);
                assert!((h[(row, k)] - fd).abs() < 1e-7, "H[{row},{k}]");
            }
        }
    }

    #[test]
    fn the_trace_is_the_sum_of_the_eigenvalues_and_the_top_bounds_them() {
        let (data, _) = SparseRegression::NOTEBOOK.generate().unwrap();
        let p = point(30);
        let (top, trace) = top_and_trace(&data.x_train, &data.y_train, &p);
        let eig = SymmetricEigen::new(hessian(&data.x_train, &data.y_train, &p)).eigenvalues;
        assert!((eig.sum() - trace).abs() < 1e-9 * trace.abs().max(1.0));
        assert!(eig.iter().all(|&e| e <= top));
        // At v = 0 the (v, v) block is u^2 M (u constant) and the (u, u) block vanishes: the trace is u^2 tr M, and
        // the top eigenvalue is at least the block's (Cauchy interlacing).
        let flat = DiagParams::init(0.5, 30);
        let (top0, trace0) = top_and_trace(&data.x_train, &data.y_train, &flat);
        let m = data.x_train.t().dot(&data.x_train) / 20.0;
        let m_top = SymmetricEigen::new(DMatrix::from_fn(30, 30, |i, j| m[[i, j]]))
            .eigenvalues
            .max();
        assert!(top0 >= 0.25 * m_top * (1.0 - 1e-12));
        assert!((trace0 - 0.25 * m.diag().sum()).abs() < 1e-9 * trace0);
    }
}
