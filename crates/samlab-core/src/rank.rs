//! The numerical rank of a matrix: how many of its singular values exceed a fraction of the largest (the measure
//! of feature and NTK-feature rank in Andriushchenko et al. 2023, "SGD with large step sizes learns sparse
//! features").

use nalgebra::{DMatrix, SymmetricEigen};

/// The number of singular values of the row-major `rows x cols` matrix `data` above `rtol` times the largest
/// (0 for a zero matrix), from the eigenvalues of its smaller Gram matrix in f64: the Gram matrix squares the
/// singular values, so `rtol` below about 1e-7 counts rounding noise.
pub fn numerical_rank(rows: usize, cols: usize, data: &[f64], rtol: f64) -> usize {
    assert_eq!(data.len(), rows * cols, "matrix data has the wrong length");
    let a = DMatrix::from_row_slice(rows, cols, data);
    let gram = if rows <= cols {
        &a * a.transpose()
    } else {
        a.transpose() * &a
    };
    let eig = SymmetricEigen::new(gram).eigenvalues;
    let top = eig.iter().copied().fold(0.0, f64::max);
    if top <= 0.0 {
        return 0;
    }
    eig.iter().filter(|&&e| e > rtol * rtol * top).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum of `k` outer products of generic vectors has rank `k`, whichever side is longer; a term scaled below
    /// the tolerance does not count, one above it does.
    #[test]
    fn the_rank_counts_the_terms_above_the_tolerance() {
        let outer_sum = |rows: usize, cols: usize, scales: &[f64]| -> Vec<f64> {
            let mut m = vec![0.0; rows * cols];
            for (k, s) in scales.iter().enumerate() {
                let u: Vec<f64> = (0..rows)
                    .map(|i| ((i * (k + 3) + k) as f64).sin())
                    .collect();
                let v: Vec<f64> = (0..cols)
                    .map(|j| ((j * (k + 5) + 2 * k) as f64).cos())
                    .collect();
                for i in 0..rows {
                    for j in 0..cols {
                        m[i * cols + j] += s * u[i] * v[j];
                    }
                }
            }
            m
        };
        for (rows, cols) in [(12, 30), (30, 12)] {
            assert_eq!(
                numerical_rank(rows, cols, &outer_sum(rows, cols, &[1.0, 2.0, 0.5]), 1e-6),
                3
            );
            let small = outer_sum(rows, cols, &[1.0, 2.0, 1e-5]);
            assert_eq!(numerical_rank(rows, cols, &small, 1e-3), 2);
            assert_eq!(numerical_rank(rows, cols, &small, 1e-6), 3);
        }
        assert_eq!(numerical_rank(3, 4, &[0.0; 12], 1e-3), 0);
    }
}
