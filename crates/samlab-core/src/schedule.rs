//! Learning-rate schedules shared by every engine.
//!
//! The rate at update `t` of `T` is `base * warmup(t) * shape(t / T)`; with
//! [`RhoSchedule::ProportionalToLr`](crate::sam::RhoSchedule) the SAM radius follows it.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The shape of the schedule over the training fraction `f = t / T`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum LrShape {
    /// `1`.
    #[default]
    Constant,
    /// `1 - f` (the 1D ReLU notebook's SAM branch).
    LinearDecay,
    /// Multiplied by `factors[k]` from fraction `at[k]` on (cumulative): `at = [0.5, 0.75]`, `factors = [0.1, 0.1]`
    /// is the deep-net code's "piecewise" schedule.
    Step {
        /// Fractions of training where the rate drops, increasing.
        at: Vec<f64>,
        /// Factor applied at each drop.
        factors: Vec<f64>,
    },
    /// `0.5 + 0.5 cos(pi f)`.
    Cosine,
    /// Linear from 0 up to 1 at `f = 0.4`, then down to 0 at `f = 1`.
    Cyclic,
}

/// Warm-up at the start of training, counted in updates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Warmup {
    /// No warm-up.
    #[default]
    None,
    /// Linear from 0 to 1 over the first `steps` updates.
    Linear {
        /// Length of the warm-up.
        steps: usize,
    },
    /// `min(1, start * rate^t)` (e.g. start 1e-3, rate 1.05).
    Exponential {
        /// Initial factor.
        start: f64,
        /// Growth per update.
        rate: f64,
    },
}

/// A learning-rate schedule: base rate, shape and warm-up. In TOML either a number (`lr = 0.1`, constant) or a
/// table (`[lr]` with `base`, `shape`, `warmup`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "LrSpec", into = "LrSpec")]
pub struct LrSchedule {
    /// The peak rate.
    pub base: f64,
    /// Shape over training.
    #[serde(default)]
    pub shape: LrShape,
    /// Warm-up.
    #[serde(default)]
    pub warmup: Warmup,
}

/// What a config may hold for `lr`; a constant schedule is written as a plain number.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LrSpec {
    Rate(f64),
    Table {
        base: f64,
        #[serde(default)]
        shape: LrShape,
        #[serde(default)]
        warmup: Warmup,
    },
}

impl From<LrSpec> for LrSchedule {
    fn from(spec: LrSpec) -> Self {
        match spec {
            LrSpec::Rate(base) => LrSchedule::constant(base),
            LrSpec::Table {
                base,
                shape,
                warmup,
            } => LrSchedule {
                base,
                shape,
                warmup,
            },
        }
    }
}

impl From<LrSchedule> for LrSpec {
    fn from(s: LrSchedule) -> Self {
        if s.shape == LrShape::Constant && s.warmup == Warmup::None {
            LrSpec::Rate(s.base)
        } else {
            LrSpec::Table {
                base: s.base,
                shape: s.shape,
                warmup: s.warmup,
            }
        }
    }
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base: f64) -> Self {
        LrSchedule {
            base,
            shape: LrShape::Constant,
            warmup: Warmup::None,
        }
    }

    /// Checks the values, naming the bad one.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if !(self.base.is_finite() && self.base > 0.0) {
            return bad("lr", format!("must be finite and > 0, got {}", self.base));
        }
        if let LrShape::Step { at, factors } = &self.shape {
            if at.len() != factors.len() {
                return bad(
                    "lr schedule",
                    format!("{} drop points but {} factors", at.len(), factors.len()),
                );
            }
            if at.windows(2).any(|w| w[0] > w[1]) || at.iter().any(|a| !(0.0..=1.0).contains(a)) {
                return bad(
                    "lr schedule",
                    format!("drop points must increase within [0, 1], got {at:?}"),
                );
            }
            if factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                return bad(
                    "lr schedule",
                    format!("factors must be finite and > 0, got {factors:?}"),
                );
            }
        }
        if let Warmup::Exponential { start, rate } = self.warmup {
            if !(start > 0.0 && start <= 1.0 && rate > 1.0 && rate.is_finite()) {
                return bad(
                    "warmup",
                    format!("needs 0 < start <= 1 and rate > 1, got start {start}, rate {rate}"),
                );
            }
        }
        Ok(())
    }

    /// The rate for update `t` (0-based) of `total`.
    pub fn at(&self, t: usize, total: usize) -> f64 {
        let f = t as f64 / total.max(1) as f64;
        let shape = match &self.shape {
            LrShape::Constant => 1.0,
            LrShape::LinearDecay => 1.0 - f,
            LrShape::Step { at, factors } => at
                .iter()
                .zip(factors)
                .filter(|(a, _)| f >= **a)
                .map(|(_, k)| k)
                .product(),
            LrShape::Cosine => 0.5 + 0.5 * (std::f64::consts::PI * f).cos(),
            LrShape::Cyclic => {
                if f < 0.4 {
                    f / 0.4
                } else {
                    (1.0 - f) / 0.6
                }
            }
        };
        let warm = match self.warmup {
            Warmup::None => 1.0,
            Warmup::Linear { steps } => ((t + 1) as f64 / steps.max(1) as f64).min(1.0),
            Warmup::Exponential { start, rate } => (start * rate.powf(t as f64)).min(1.0),
        };
        self.base * shape * warm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_their_formulas() {
        let s = |shape| LrSchedule {
            base: 0.1,
            shape,
            warmup: Warmup::None,
        };
        let piecewise = s(LrShape::Step {
            at: vec![0.5, 0.75],
            factors: vec![0.1, 0.1],
        });
        assert_eq!(piecewise.at(49, 100), 0.1);
        assert!((piecewise.at(50, 100) - 0.01).abs() < 1e-15);
        assert!((piecewise.at(99, 100) - 0.001).abs() < 1e-15);
        assert!((s(LrShape::LinearDecay).at(25, 100) - 0.075).abs() < 1e-15);
        assert!((s(LrShape::Cosine).at(50, 100) - 0.05).abs() < 1e-15);
        assert!((s(LrShape::Cyclic).at(40, 100) - 0.1).abs() < 1e-15);
        assert!((s(LrShape::Cyclic).at(70, 100) - 0.05).abs() < 1e-15);
    }

    #[test]
    fn warmups_ramp_up_then_stay() {
        let mut s = LrSchedule::constant(1.0);
        s.warmup = Warmup::Linear { steps: 4 };
        assert_eq!(
            (0..6).map(|t| s.at(t, 10)).collect::<Vec<_>>(),
            [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
        );
        s.warmup = Warmup::Exponential {
            start: 0.5,
            rate: 2.0,
        };
        assert_eq!(
            (0..3).map(|t| s.at(t, 10)).collect::<Vec<_>>(),
            [0.5, 1.0, 1.0]
        );
    }

    #[test]
    fn check_names_the_problem() {
        let mut s = LrSchedule::constant(0.1);
        s.shape = LrShape::Step {
            at: vec![0.5],
            factors: vec![0.1, 0.1],
        };
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("1 drop points but 2 factors"));
        assert!(LrSchedule::constant(-1.0).check().is_err());
        #[derive(serde::Deserialize, serde::Serialize)]
        struct C {
            lr: LrSchedule,
        }
        let text = "[lr]\nbase = 0.5\n[lr.shape]\nkind = \"step\"\nat = [0.1]\nfactors = [0.2]\n";
        let parsed: C = toml::from_str(text).unwrap();
        assert!((parsed.lr.at(50, 100) - 0.1).abs() < 1e-15);
        let plain: C = toml::from_str("lr = 0.25").unwrap();
        assert_eq!(plain.lr, LrSchedule::constant(0.25));
        assert_eq!(toml::to_string(&plain).unwrap(), "lr = 0.25\n");
        let back: C = toml::from_str(&toml::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(back.lr, parsed.lr);
    }
}
