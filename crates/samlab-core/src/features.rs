//! Measures of a network's learned features that every engine shares: feature sparsity as the authors define it.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Sparsity of a network's features (SPEC §9, the authors' `feature_sparsity`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// The feature-sparsity coefficient: non-zero entries of the kept (active, distinct) neurons' features over
    /// `examples x all neurons`.
    pub sparsity: f64,
    /// Raw fraction of non-zero activations, over all neurons.
    pub activation_fraction: f64,
    /// Neurons active on at least one example.
    pub alive: usize,
    /// Distinct active neurons: the alive ones left after greedily dropping each neuron whose (row-normalized)
    /// activation column correlates above the threshold with a remaining one.
    pub distinct: usize,
}

/// Feature sparsity of a feature matrix `phi` (examples x neurons, non-negative), exactly as the authors'
/// `fc_nets.feature_sparsity`: rows are scaled to unit norm (all-zero rows stay zero); neurons never active are
/// dropped; in order, a remaining neuron is dropped when $|\mathrm{corr}|$ of its column with any other remaining
/// column exceeds `corr_threshold` (a constant column correlates with nothing, like NumPy's NaN); the coefficient
/// is the number of non-zeros of the kept columns over `examples x neurons`.
pub fn feature_stats_of(phi: &Array2<f64>, corr_threshold: f64) -> FeatureStats {
    let (n, width) = phi.dim();
    let mut phi = phi.clone();
    for mut row in phi.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    let alive: Vec<usize> = (0..width)
        .filter(|&j| phi.column(j).iter().any(|&v| v > 0.0))
        .collect();
    // Centered columns and their norms for the Pearson correlations.
    let centered: Vec<Vec<f64>> = alive
        .iter()
        .map(|&j| {
            let col = phi.column(j);
            let mean = col.sum() / n as f64;
            col.iter().map(|v| v - mean).collect()
        })
        .collect();
    let norms: Vec<f64> = centered
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let corr = |p: usize, q: usize| {
        if norms[p] == 0.0 || norms[q] == 0.0 {
            return 0.0;
        }
        let dot: f64 = centered[p]
            .iter()
            .zip(&centered[q])
            .map(|(a, b)| a * b)
            .sum();
        // Clipped to [-1, 1] as np.corrcoef does.
        (dot / (norms[p] * norms[q])).clamp(-1.0, 1.0)
    };
    let mut removed = vec![false; alive.len()];
    for p in 0..alive.len() {
        removed[p] =
            (0..alive.len()).any(|q| q != p && !removed[q] && corr(p, q).abs() > corr_threshold);
    }
    let nonzeros = |cols: &mut dyn Iterator<Item = usize>| -> usize {
        cols.map(|j| phi.column(j).iter().filter(|&&v| v != 0.0).count())
            .sum()
    };
    let kept: Vec<usize> = alive
        .iter()
        .zip(&removed)
        .filter(|(_, r)| !**r)
        .map(|(j, _)| *j)
        .collect();
    let cells = (n * width).max(1) as f64;
    FeatureStats {
        sparsity: nonzeros(&mut kept.iter().copied()) as f64 / cells,
        activation_fraction: nonzeros(&mut (0..width)) as f64 / cells,
        alive: alive.len(),
        distinct: kept.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_sparsity_of_a_hand_built_matrix() {
        // 4 examples x 5 neurons: column 2 is dead, column 3 = 2 * column 0 (perfectly correlated). Values checked
        // against the authors' fc_nets.feature_sparsity (NumPy).
        let phi = Array2::from_shape_vec(
            (4, 5),
            vec![
                1.0, 0.0, 0.0, 2.0, 1.0, //
                0.0, 1.0, 0.0, 0.0, 1.0, //
                2.0, 3.0, 0.0, 4.0, 1.0, //
                0.0, 0.0, 0.0, 0.0, 1.0, //
            ],
        )
        .unwrap();
        let s = feature_stats_of(&phi, 0.99);
        assert_eq!(s.alive, 4);
        // Column 0 correlates with column 3 and is dropped first; 3 is then kept (its twin is gone).
        // Kept: 1, 3, 4 with 2 + 2 + 4 = 8 non-zeros of 20 cells.
        assert_eq!(s.distinct, 3);
        assert!((s.sparsity - 8.0 / 20.0).abs() < 1e-15);
        assert!((s.activation_fraction - 10.0 / 20.0).abs() < 1e-15);
        // With a threshold above every correlation nothing is merged.
        let s = feature_stats_of(&phi, 1.0);
        assert_eq!(s.distinct, 4);
        assert!((s.sparsity - 10.0 / 20.0).abs() < 1e-15);
        // An all-zero example stays zero after the row scaling (NumPy: 0.35, kept columns 1, 3, 4).
        let mut zero_row = phi.clone();
        zero_row.row_mut(3).fill(0.0);
        let s = feature_stats_of(&zero_row, 0.99);
        assert_eq!((s.alive, s.distinct), (4, 3));
        assert!((s.sparsity - 0.35).abs() < 1e-15);
        // Constant columns correlate with nothing (NumPy's NaN correlations): both kept.
        let s = feature_stats_of(&Array2::ones((2, 2)), 0.5);
        assert_eq!((s.distinct, s.sparsity), (2, 1.0));
    }
}
