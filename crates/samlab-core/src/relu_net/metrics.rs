//! What a trained ReLU network is measured by: kinks of a 1D interpolant (SPEC §3), the feature-sparsity
//! coefficient and distinct active neurons (SPEC §9), and the learned function on a grid.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::model::ReluNet;
use crate::ConfigError;

/// Tolerances of the kink count (SPEC §3's defaults: merge 0.02, minimum slope change 1.0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinkTolerances {
    /// Breakpoints closer than this (after sorting, gap by gap) form one kink.
    pub merge: f64,
    /// A kink counts when the absolute sum of its breakpoints' slope changes exceeds this.
    pub min_slope_change: f64,
}

impl Default for KinkTolerances {
    fn default() -> Self {
        KinkTolerances {
            merge: 0.02,
            min_slope_change: 1.0,
        }
    }
}

/// One kink of a 1D network: a cluster of neuron breakpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kink {
    /// Mean position of the cluster's breakpoints.
    pub position: f64,
    /// Sum of the slope changes $a_j |w_j|$ of the cluster's neurons (right slope minus left slope).
    pub slope_change: f64,
}

/// The kinks of a 1D network inside `[lo, hi]`: breakpoints $t_j = -b_j / w_j$ ($w_j \ne 0$) in the interval,
/// sorted and merged while consecutive ones are closer than `tol.merge`; a cluster is a kink when
/// $|\sum a_j |w_j|| >$ `tol.min_slope_change`.
pub fn kinks(
    net: &ReluNet,
    lo: f64,
    hi: f64,
    tol: &KinkTolerances,
) -> Result<Vec<Kink>, ConfigError> {
    if net.d() != 1 {
        return Err(ConfigError::Invalid {
            field: "kinks",
            reason: format!(
                "kinks are defined for 1D inputs, the network has d = {}",
                net.d()
            ),
        });
    }
    let w = net.hidden_weights();
    let mut points: Vec<(f64, f64)> = (0..net.width())
        .filter(|&j| w[[j, 0]] != 0.0)
        .map(|j| {
            let wj = w[[j, 0]];
            (-net.biases()[j] / wj, net.output_weights()[j] * wj.abs())
        })
        .filter(|(t, _)| (lo..=hi).contains(t))
        .collect();
    points.sort_by(|p, q| p.0.total_cmp(&q.0));
    let mut clusters: Vec<(f64, f64, usize)> = vec![];
    let mut last = f64::NEG_INFINITY;
    for (t, change) in points {
        match clusters.last_mut() {
            Some((sum_t, sum_change, count)) if t - last < tol.merge => {
                *sum_t += t;
                *sum_change += change;
                *count += 1;
            }
            _ => clusters.push((t, change, 1)),
        }
        last = t;
    }
    Ok(clusters
        .into_iter()
        .filter(|c| c.1.abs() > tol.min_slope_change)
        .map(|(sum_t, slope_change, count)| Kink {
            position: sum_t / count as f64,
            slope_change,
        })
        .collect())
}

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

/// [`feature_stats_of`] on the network's post-ReLU features of the rows of `x`.
pub fn feature_stats(net: &ReluNet, x: &Array2<f64>, corr_threshold: f64) -> FeatureStats {
    feature_stats_of(&net.features(x), corr_threshold)
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

/// `np.arange(lo, hi, step)`: `lo + k * step` for `k = 0, 1, ...` while below `hi`.
pub fn arange(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && hi > lo) {
        return vec![];
    }
    let count = ((hi - lo) / step).ceil() as usize;
    (0..count).map(|k| lo + k as f64 * step).collect()
}

/// The grid the notebooks plot a 1D network on: `arange(min x - 5 step, max x + 5 step, step)`.
pub fn plot_grid_1d(x: &[f64], step: f64) -> Vec<f64> {
    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    arange(lo - 5.0 * step, hi + 5.0 * step, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_1d(w: &[f64], b: &[f64], a: &[f64]) -> ReluNet {
        let w = Array2::from_shape_vec((w.len(), 1), w.to_vec()).unwrap();
        ReluNet::from_parts(&w, b, a, true).unwrap()
    }

    #[test]
    fn kinks_of_a_hand_built_network() {
        // Breakpoints -b/w: 0.0 (slope change 2*1), 0.01 (-1.5*2 = -3 -> cluster with 0.0: -1), 0.5 (0.8*1 = 0.8),
        // 0.7 (3*|-1| = 3), 0.705 (-2.5 -> cluster 0.5), 5.0 (outside), and a neuron with w = 0 (no breakpoint).
        let net = net_1d(
            &[1.0, 2.0, 1.0, -1.0, 2.0, 1.0, 0.0],
            &[0.0, -0.02, -0.5, 0.7, -1.41, -5.0, 1.0],
            &[2.0, -1.5, 0.8, 3.0, -1.25, 7.0, 9.0],
        );
        let tol = KinkTolerances::default();
        let k = kinks(&net, -1.0, 1.0, &tol).unwrap();
        // Clusters: {0, 0.01}: 2 - 3 = -1 (not > 1); {0.5}: 0.8; {0.7, 0.705}: 3 - 2.5 = 0.5. No kink.
        assert!(k.is_empty(), "{k:?}");
        let loose = KinkTolerances {
            merge: 0.001,
            min_slope_change: 0.7,
        };
        let k = kinks(&net, -1.0, 1.0, &loose).unwrap();
        let found: Vec<(f64, f64)> = k.iter().map(|k| (k.position, k.slope_change)).collect();
        let want = [
            (0.0, 2.0),
            (0.01, -3.0),
            (0.5, 0.8),
            (0.7, 3.0),
            (0.705, -2.5),
        ];
        assert_eq!(found.len(), want.len(), "{found:?}");
        for (f, w) in found.iter().zip(want) {
            assert!(
                (f.0 - w.0).abs() < 1e-12 && (f.1 - w.1).abs() < 1e-12,
                "{f:?} vs {w:?}"
            );
        }
        let wide = kinks(&net, -1.0, 6.0, &loose).unwrap();
        assert_eq!(wide.len(), 6);
        assert!((wide[5].position - 5.0).abs() < 1e-12);
        // The slope changes are those of the function itself.
        let f = |x: f64| net.predict(&[x])[0];
        let h = 1e-4;
        let jump = (f(0.7 + h) - f(0.7)) / h - (f(0.7) - f(0.7 - h)) / h;
        assert!((jump - 3.0).abs() < 1e-6);
        assert!(kinks(
            &ReluNet::init(&super::super::ReluInit::He, 3, 2, true, 0).unwrap(),
            0.0,
            1.0,
            &tol
        )
        .is_err());
    }

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

    #[test]
    fn arange_follows_numpy() {
        assert_eq!(arange(0.0, 1.0, 0.25), vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(arange(0.0, 1.01, 0.25).len(), 5);
        assert!(arange(1.0, 0.0, 0.1).is_empty());
        let grid = plot_grid_1d(&[-1.0, 1.0], 0.01);
        assert_eq!(grid.len(), 210);
        assert!((grid[0] + 1.05).abs() < 1e-12);
    }
}
