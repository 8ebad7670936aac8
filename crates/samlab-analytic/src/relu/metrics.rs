//! What a trained ReLU network is measured by: kinks of a 1D interpolant (SPEC §3), the feature-sparsity
//! coefficient and distinct active neurons (SPEC §9), and the learned function on a grid.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::model::ReluNet;
pub use samlab_core::features::{feature_stats_of, FeatureStats};
use samlab_core::ConfigError;

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

/// [`feature_stats_of`] on the network's post-ReLU features of the rows of `x`.
pub fn feature_stats(net: &ReluNet, x: &Array2<f64>, corr_threshold: f64) -> FeatureStats {
    feature_stats_of(&net.features(x), corr_threshold)
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
    fn arange_follows_numpy() {
        assert_eq!(arange(0.0, 1.0, 0.25), vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(arange(0.0, 1.01, 0.25).len(), 5);
        assert!(arange(1.0, 0.0, 0.1).is_empty());
        let grid = plot_grid_1d(&[-1.0, 1.0], 0.01);
        assert_eq!(grid.len(), 210);
        assert!((grid[0] + 1.05).abs() < 1e-12);
    }
}
