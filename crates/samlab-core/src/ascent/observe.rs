//! What a SAM step did, observed without changing it: the perturbation's norm beside the weights', the cosine
//! between the clean gradient and the SAM gradient (at the perturbed point), the realised sharpness
//! $L_G(w + \delta) - L_G(w)$ on the group's examples, and (deep nets) how far BatchNorm's batch statistics moved
//! between the clean and the perturbed pass. The engines log their means (`samlab diagnose` reads them back).

use serde::{Deserialize, Serialize};

use super::{Ascent, Space};
use crate::run_dir::nan_as_null;

/// What SAM did at a step (one group's, or a mean over groups and steps); NaN where a quantity was not measured
/// (`null` in JSON; a missing field is absent). Two observations are equal when each field is equal or absent in
/// both.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SamObservation {
    /// $\lVert w \rVert$.
    #[serde(with = "nan_as_null")]
    pub weight_norm: f64,
    /// $\lVert \delta \rVert$ (0 where the step took no perturbation: MSAM before its momentum, LookSAM's reuse).
    #[serde(with = "nan_as_null")]
    pub delta_norm: f64,
    /// The cosine between the gradient of the group's mean loss at $w$ (the clean gradient) and the gradient at
    /// $w + \delta$ the step descends with (the SAM gradient).
    #[serde(with = "nan_as_null")]
    pub grad_cos: f64,
    /// $L_G(w + \delta) - L_G(w)$, mean losses over the group's examples (the cross-entropy, without L2 terms).
    #[serde(with = "nan_as_null")]
    pub sharpness: f64,
    /// BatchNorm: root mean square over every channel of the batch mean's shift from the clean pass to the
    /// perturbed one, in units of the clean pass's standard deviation.
    #[serde(with = "nan_as_null")]
    pub bn_mean_shift: f64,
    /// BatchNorm: root mean square over every channel of the batch variance's relative change.
    #[serde(with = "nan_as_null")]
    pub bn_var_shift: f64,
}

impl PartialEq for SamObservation {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.values(), other.values());
        a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    }
}

impl Default for SamObservation {
    fn default() -> Self {
        SamObservation::ABSENT
    }
}

impl SamObservation {
    /// The metrics columns, in the order of [`SamObservation::values`].
    pub const COLUMNS: [&'static str; 6] = [
        "sam_weight_norm",
        "sam_delta_norm",
        "sam_grad_cos",
        "sam_sharpness",
        "sam_bn_mean_shift",
        "sam_bn_var_shift",
    ];
    /// Nothing measured (ERM steps, log points without a step).
    pub const ABSENT: SamObservation = SamObservation {
        weight_norm: f64::NAN,
        delta_norm: f64::NAN,
        grad_cos: f64::NAN,
        sharpness: f64::NAN,
        bn_mean_shift: f64::NAN,
        bn_var_shift: f64::NAN,
    };

    /// The values in column order.
    pub fn values(&self) -> [f64; 6] {
        [
            self.weight_norm,
            self.delta_norm,
            self.grad_cos,
            self.sharpness,
            self.bn_mean_shift,
            self.bn_var_shift,
        ]
    }

    /// From the first `v.len()` (at most 6) values in column order; the rest absent.
    pub fn from_values(v: &[f64]) -> Self {
        let mut all = [f64::NAN; 6];
        all[..v.len()].copy_from_slice(v);
        let [weight_norm, delta_norm, grad_cos, sharpness, bn_mean_shift, bn_var_shift] = all;
        SamObservation {
            weight_norm,
            delta_norm,
            grad_cos,
            sharpness,
            bn_mean_shift,
            bn_var_shift,
        }
    }

    /// Whether nothing was measured.
    pub fn is_absent(&self) -> bool {
        self.values().iter().all(|v| v.is_nan())
    }
}

/// The scalars one group's SAM step yields that its observation is made of; NaN where the step did not compute
/// them. The engines reduce their vectors to these (the deep engine on its device), and
/// [`GroupParts::observation`] turns them into a [`SamObservation`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParts {
    /// $\lVert \delta \rVert^2$ (0 where the step took no perturbation).
    pub delta_sq: f64,
    /// $g \cdot g_p$, the clean gradient $g$ against the SAM gradient $g_p$ (any positive scale of either).
    pub clean_dot_sam: f64,
    /// $\lVert g \rVert^2$.
    pub clean_sq: f64,
    /// $\lVert g_p \rVert^2$.
    pub sam_sq: f64,
    /// $L_G(w)$, the mean loss over the group's examples.
    pub clean_loss: f64,
    /// $L_G(w + \delta)$.
    pub perturbed_loss: f64,
}

impl GroupParts {
    /// The group's observation at weights of norm `weight_norm` (no BatchNorm shift).
    pub fn observation(&self, weight_norm: f64) -> SamObservation {
        SamObservation {
            weight_norm,
            delta_norm: self.delta_sq.sqrt(),
            grad_cos: cosine(self.clean_dot_sam, self.clean_sq, self.sam_sq),
            sharpness: self.perturbed_loss - self.clean_loss,
            ..SamObservation::ABSENT
        }
    }
}

/// `a . b / (||a|| ||b||)` from the three products (NaN for a zero vector).
pub fn cosine(ab: f64, aa: f64, bb: f64) -> f64 {
    let c = ab / (aa.sqrt() * bb.sqrt());
    if c.is_finite() {
        c.clamp(-1.0, 1.0)
    } else {
        f64::NAN
    }
}

/// The mean of observations, field by field over those that measured it.
#[derive(Clone, Debug, Default)]
pub struct ObservationMean {
    sum: [f64; 6],
    count: [u32; 6],
}

impl ObservationMean {
    /// Takes in `o`'s measured (non-NaN) fields.
    pub fn add(&mut self, o: &SamObservation) {
        for (k, v) in o.values().into_iter().enumerate() {
            if !v.is_nan() {
                self.sum[k] += v;
                self.count[k] += 1;
            }
        }
    }

    /// The means (absent where nothing was measured).
    pub fn mean(&self) -> SamObservation {
        let v: Vec<f64> = self
            .sum
            .iter()
            .zip(&self.count)
            .map(|(&s, &n)| if n == 0 { f64::NAN } else { s / f64::from(n) })
            .collect();
        SamObservation::from_values(&v)
    }
}

impl<S: Space> Ascent<S> {
    /// The gradient of the last group's mean loss at `w` on its own examples, where its step computed one (not
    /// with the ascent on the previous batch, random perturbations, or multi-step or random-start ascents).
    pub fn clean_gradient(&self) -> Option<&S::Vector> {
        self.clean.then_some(&self.g)
    }

    /// The gradient at `w + delta` the last group's step descended with (scaled as its descent direction), where
    /// it took one (not LookSAM's steps that reuse their stored component).
    pub fn perturbed_gradient(&self) -> Option<&S::Vector> {
        self.descended.then_some(&self.gp)
    }

    /// The last group's [`GroupParts`] from its vectors, and its mean losses from the loss sums the oracle returned
    /// with the clean pass and with a descent over the whole group (an oracle that computes them on the way, as
    /// the analytic engines' do; NaN where the step made no such pass). `None` after a step without a
    /// perturbation (`rho = 0`). Products over every parameter: an engine calls it on the steps it observes.
    pub fn group_parts(&self) -> Option<GroupParts> {
        if !self.perturbed {
            return None;
        }
        let delta_sq = self.delta().map_or(0.0, |d| S::dot(d, d));
        let [clean_dot_sam, clean_sq, sam_sq] =
            match (self.clean_gradient(), self.perturbed_gradient()) {
                (Some(g), Some(p)) => [S::dot(g, p), S::dot(g, g), S::dot(p, p)],
                _ => [f64::NAN; 3],
            };
        let mean = |sum: f64| sum / self.rows as f64;
        let whole = self.descended && self.descent_rows == self.rows;
        Some(GroupParts {
            delta_sq,
            clean_dot_sam,
            clean_sq,
            sam_sq,
            clean_loss: if self.clean {
                mean(self.g_loss)
            } else {
                f64::NAN
            },
            perturbed_loss: if whole { mean(self.loss) } else { f64::NAN },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::CurvePoint;
    use crate::run_dir::MetricsRow;

    /// The analytic engines' SAM columns are the first of the deep engine's, by name.
    #[test]
    fn curve_columns_are_the_observation_columns() {
        let n = CurvePoint::SAM_COLUMNS;
        assert_eq!(&CurvePoint::COLUMNS[3..], &SamObservation::COLUMNS[..n]);
    }

    /// A group's parts give the norm, cosine and sharpness; an absent field is equal only to an absent one.
    #[test]
    fn parts_make_an_observation() {
        let parts = GroupParts {
            delta_sq: 0.25,
            clean_dot_sam: -3.0,
            clean_sq: 4.0,
            sam_sq: 9.0,
            clean_loss: 1.0,
            perturbed_loss: 1.5,
        };
        let o = parts.observation(2.0);
        assert_eq!(o.values()[..4], [2.0, 0.5, -0.5, 0.5], "{o:?}");
        assert!(o.bn_mean_shift.is_nan());
        assert_eq!(o, o);
        assert_ne!(
            o,
            SamObservation {
                sharpness: f64::NAN,
                ..o
            }
        );
        assert_eq!(SamObservation::ABSENT, SamObservation::default());
        let zero = GroupParts {
            clean_sq: 0.0,
            clean_dot_sam: 0.0,
            ..parts
        };
        assert!(zero.observation(2.0).grad_cos.is_nan());
    }
}
