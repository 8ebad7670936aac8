//! The little dense linear algebra the theory needs: row-major matrices, Gram matrices, Cholesky solves.

/// A dense row-major matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Entries, row after row.
    pub data: Vec<f64>,
}

impl Matrix {
    /// Wraps row-major `data` of shape `rows x cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data has the wrong length");
        Matrix { rows, cols, data }
    }

    /// From an ndarray matrix (any layout).
    pub fn from_array(a: &ndarray::Array2<f64>) -> Self {
        let (rows, cols) = a.dim();
        Matrix::new(rows, cols, a.iter().copied().collect())
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// $A x$.
    pub fn mul_vec(&self, x: &[f64]) -> Vec<f64> {
        (0..self.rows).map(|i| dot(self.row(i), x)).collect()
    }

    /// $A^\top y$.
    pub fn tr_mul_vec(&self, y: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.cols];
        for (i, yi) in y.iter().enumerate() {
            for (o, a) in out.iter_mut().zip(self.row(i)) {
                *o += yi * a;
            }
        }
        out
    }

    /// $A \,\mathrm{diag}(w) A^\top$ (`rows x rows`, symmetric).
    pub fn weighted_gram(&self, w: &[f64]) -> Matrix {
        let n = self.rows;
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v: f64 = self
                    .row(i)
                    .iter()
                    .zip(self.row(j))
                    .zip(w)
                    .map(|((a, b), w)| a * b * w)
                    .sum();
                g[i * n + j] = v;
                g[j * n + i] = v;
            }
        }
        Matrix::new(n, n, g)
    }
}

/// $a \cdot b$.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// $\lVert a \rVert_2$.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Solves $G x = b$ for a symmetric positive definite $G$ by Cholesky; `None` if $G$ is not (numerically)
/// positive definite.
pub fn cholesky_solve(g: &Matrix, b: &[f64]) -> Option<Vec<f64>> {
    let n = g.rows;
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = g.data[i * n + i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (g.data[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut z = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * z[k]).sum();
        z[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (z[i] - s) / l[i * n + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_and_detects_indefinite_matrices() {
        let a = Matrix::new(2, 3, vec![1.0, 2.0, 0.5, -1.0, 0.3, 2.0]);
        let g = a.weighted_gram(&[1.0, 2.0, 3.0]);
        let x = cholesky_solve(&g, &[1.0, -2.0]).unwrap();
        let back = g.mul_vec(&x);
        assert!((back[0] - 1.0).abs() < 1e-12 && (back[1] + 2.0).abs() < 1e-12);
        assert!(
            cholesky_solve(&Matrix::new(2, 2, vec![1.0, 2.0, 2.0, 1.0]), &[1.0, 1.0]).is_none()
        );
        assert_eq!(a.tr_mul_vec(&[1.0, 1.0]), vec![0.0, 2.3, 2.5]);
    }
}
