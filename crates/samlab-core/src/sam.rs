//! The one definition of the SAM family that every samlab engine reads.
//!
//! A training step on a batch $S$ of size $B$ splits it into $B/m$ groups $G$ of size $m$. Each group gets its own
//! perturbation $\delta_G$ (the inner maximisation, approximated by `ascent_steps` gradient steps), and the descent
//! gradient is the average of the per-example gradients, each taken at its group's perturbed point:
//!
//! $$ w \leftarrow w - \gamma \frac{1}{B} \sum_G \sum_{i \in G} \nabla \ell_i(w + \delta_G). $$
//!
//! ERM is `rho = 0` (or a window that never opens); n-SAM is one group holding the whole batch on a full batch;
//! 1-SAM is `m = 1`. Convention: the ascent uses the gradient of the same per-example loss as the descent (the
//! authors' diagonal-net notebook ascended on $r^2$ instead of $r^2/2$ for 1-SAM, so its `rho` is our `rho / 2`).

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::schedule::LrSchedule;

/// How each group is formed: the size `m` of the sets that share one perturbation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One perturbation for the whole batch (n-SAM on a full batch; "batch SAM" on mini-batches).
    WholeBatch,
    /// One perturbation per group of `m` consecutive batch examples; `m` must divide the batch size.
    Size(usize),
}

/// How the ascent direction is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// USAM, what the theory analyses: $\delta = \rho g$, no projection.
    Unnormalized,
    /// Foret et al.'s SAM: $\delta = \rho g / (\lVert g \rVert + 10^{-12})$, projected onto the $\rho$-ball.
    Normalized,
    /// The deep-net code's "unnormalized" option: $\delta = \rho g$, then projected onto the $\rho$-ball.
    Clipped,
}

/// What perturbs the weights before the descent gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// Worst-case (gradient ascent) perturbations: SAM.
    Ascent,
    /// The "Random" baseline: Gaussian noise with $\sigma = \rho / \sqrt{P}$ ($P$ parameters), so that
    /// $\mathbb{E}\lVert\delta\rVert^2 = \rho^2$, drawn afresh for every group and step.
    Random,
}

/// Which examples the ascent gradient is computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AscentSource {
    /// The same examples as the descent (the theory's setting).
    SameBatch,
    /// The previous batch (the deep-net code's practical proxy for n-SAM).
    PreviousBatch,
}

/// How the radius evolves during training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RhoSchedule {
    /// `rho` at every step.
    Constant,
    /// $\rho_t = c \cdot \gamma_t$ (the learning rate times `factor`); `rho` is then ignored.
    ProportionalToLr {
        /// The factor $c$.
        factor: f64,
    },
}

/// The training fraction in which SAM is active: `start <= t/T < end` (ERM outside).
///
/// `{start: 0.8, end: 1.0}` is ERM -> SAM fine-tuning inside one run, `{start: 0.0, end: 0.8}` SAM -> ERM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveWindow {
    /// First active fraction of training, in [0, 1].
    pub start: f64,
    /// End of the active part (exclusive), in [0, 1].
    pub end: f64,
}

/// Every option of the SAM family, shared by the analytic and the deep engines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamConfig {
    /// Perturbation radius $\rho$ (0 means ERM).
    pub rho: f64,
    /// Group size: which examples share a perturbation.
    pub grouping: Grouping,
    /// Scaling of the ascent direction.
    pub normalization: Normalization,
    /// Ascent steps $k$ of the inner maximisation (1 is standard SAM).
    pub ascent_steps: usize,
    /// Ascent step size as a multiple of rho: $\eta = \rho \cdot$ `ascent_step_mult`.
    pub ascent_step_mult: f64,
    /// Start the ascent from a random point on the $\rho$-sphere instead of 0.
    pub random_init: bool,
    /// Worst-case ascent or random weight noise.
    pub perturbation: Perturbation,
    /// Examples the ascent gradient is computed on.
    pub ascent_source: AscentSource,
    /// Constant radius or radius proportional to the learning rate.
    pub rho_schedule: RhoSchedule,
    /// When SAM is switched on during training.
    pub window: ActiveWindow,
}

impl Default for SamConfig {
    /// ERM: `rho = 0`; the other fields are those of standard SAM (unnormalized, one step, same batch, always on).
    fn default() -> Self {
        SamConfig {
            rho: 0.0,
            grouping: Grouping::WholeBatch,
            normalization: Normalization::Unnormalized,
            ascent_steps: 1,
            ascent_step_mult: 1.0,
            random_init: false,
            perturbation: Perturbation::Ascent,
            ascent_source: AscentSource::SameBatch,
            rho_schedule: RhoSchedule::Constant,
            window: ActiveWindow {
                start: 0.0,
                end: 1.0,
            },
        }
    }
}

impl SamConfig {
    /// ERM (no perturbation).
    pub fn erm() -> Self {
        Self::default()
    }

    /// Unnormalized SAM of radius `rho` with groups of `grouping`.
    pub fn usam(rho: f64, grouping: Grouping) -> Self {
        SamConfig {
            rho,
            grouping,
            ..Self::default()
        }
    }

    /// Checks every field and the fit with a batch of `batch_size` examples; the engines only accept a checked
    /// config.
    pub fn check(&self, batch_size: usize) -> Result<CheckedSam, ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if !(self.rho.is_finite() && (0.0..=MAX_RHO).contains(&self.rho)) {
            return bad(
                "rho",
                format!(
                    "must be finite and in [0, {MAX_RHO:.2e}] (larger radii overflow the perturbation's squared norm in f32, so w + delta is not a number), got {}",
                    self.rho
                ),
            );
        }
        if let Grouping::Size(m) = self.grouping {
            if m == 0 || !batch_size.is_multiple_of(m) {
                return bad(
                    "m",
                    format!("group size {m} must divide the batch size {batch_size}"),
                );
            }
        }
        if self.ascent_steps == 0 {
            return bad("ascent_steps", "must be at least 1".into());
        }
        if !(self.ascent_step_mult.is_finite() && self.ascent_step_mult > 0.0) {
            return bad(
                "ascent_step_mult",
                format!("must be finite and > 0, got {}", self.ascent_step_mult),
            );
        }
        if let RhoSchedule::ProportionalToLr { factor } = self.rho_schedule {
            if !(factor.is_finite() && (0.0..=MAX_RHO).contains(&factor)) {
                return bad(
                    "rho_schedule.factor",
                    format!("must be finite and >= 0, got {factor}"),
                );
            }
        }
        let ActiveWindow { start, end } = self.window;
        if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start > end {
            return bad(
                "window",
                format!("needs 0 <= start <= end <= 1, got start {start}, end {end}"),
            );
        }
        let group_size = match self.grouping {
            Grouping::WholeBatch => batch_size,
            Grouping::Size(m) => m,
        };
        Ok(CheckedSam {
            config: self.clone(),
            group_size,
        })
    }
}

/// The largest radius (and rho/lr factor) accepted: the square root of `f32::MAX` (about 1.8e19). The deep engine
/// computes squared gradient and perturbation norms in f32; beyond this radius they overflow and the perturbed
/// point `w + delta` is no longer finite.
pub const MAX_RHO: f64 = 1.844_674_3e19;

/// A [`SamConfig`] validated against a batch size: the only form the engines take.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedSam {
    config: SamConfig,
    group_size: usize,
}

impl CheckedSam {
    /// The validated configuration.
    pub fn config(&self) -> &SamConfig {
        &self.config
    }

    /// Examples per group ($m$).
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// The learning rate and radius of update `t` of `total` under the schedule `lr` (every engine's loop).
    pub fn lr_rho_at(&self, lr: &LrSchedule, t: usize, total: usize) -> (f64, f64) {
        let lr = lr.at(t, total);
        (lr, self.rho_at(t as f64 / total as f64, lr))
    }

    /// The radius at training fraction `frac` with learning rate `lr`; 0 outside the active window.
    pub fn rho_at(&self, frac: f64, lr: f64) -> f64 {
        let ActiveWindow { start, end } = self.config.window;
        let active = frac >= start && (frac < end || end >= 1.0);
        if !active {
            return 0.0;
        }
        match self.config.rho_schedule {
            RhoSchedule::Constant => self.config.rho,
            RhoSchedule::ProportionalToLr { factor } => factor * lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_erm_and_round_trips_through_toml() {
        let mut c = SamConfig::usam(0.1, Grouping::Size(4));
        c.window = ActiveWindow {
            start: 0.5,
            end: 1.0,
        };
        c.rho_schedule = RhoSchedule::ProportionalToLr { factor: 2.0 };
        let text = toml::to_string(&c).unwrap();
        let back: SamConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(SamConfig::erm().rho, 0.0);
    }

    #[test]
    fn check_rejects_bad_values_naming_them() {
        let err = SamConfig::usam(0.1, Grouping::Size(3))
            .check(20)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid m: group size 3 must divide the batch size 20"
        );
        let err = SamConfig::usam(-1.0, Grouping::WholeBatch)
            .check(20)
            .unwrap_err();
        assert!(err.to_string().contains("rho"), "{err}");
        for rho in [1e20, f64::INFINITY, f64::NAN] {
            let err = SamConfig::usam(rho, Grouping::WholeBatch)
                .check(20)
                .unwrap_err();
            assert!(err.to_string().contains("overflow"), "{err}");
        }
        assert!(SamConfig::usam(1e19, Grouping::WholeBatch)
            .check(20)
            .is_ok());
        let mut c = SamConfig::usam(0.1, Grouping::WholeBatch);
        c.window = ActiveWindow {
            start: 0.9,
            end: 0.1,
        };
        assert!(c.check(20).is_err());
    }

    #[test]
    fn rho_follows_window_and_schedule() {
        let mut c = SamConfig::usam(0.3, Grouping::Size(1));
        c.window = ActiveWindow {
            start: 0.5,
            end: 0.75,
        };
        let s = c.check(10).unwrap();
        assert_eq!(s.group_size(), 1);
        assert_eq!(s.rho_at(0.49, 1.0), 0.0);
        assert_eq!(s.rho_at(0.5, 1.0), 0.3);
        assert_eq!(s.rho_at(0.75, 1.0), 0.0);
        c.window.end = 1.0;
        c.rho_schedule = RhoSchedule::ProportionalToLr { factor: 2.0 };
        let s = c.check(10).unwrap();
        assert_eq!(s.rho_at(1.0, 0.25), 0.5);
        assert_eq!(SamConfig::erm().check(7).unwrap().group_size(), 7);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<SamConfig>("rho = 0.1\nrhoo = 2").is_err());
    }
}
