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

/// Which member of the SAM family perturbs the weights (rules in [`crate::ascent`]; each checked against its paper
/// and reference code, and against the independent NumPy step of `bench/variants_reference.py`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Variant {
    /// Foret et al.'s SAM, with every other option of [`SamConfig`] (normalization, multi-step, random start).
    #[default]
    Sam,
    /// ASAM (Kwon et al., 2021): $T = |w| + \eta$, $\delta = \rho\, T^2 g / \lVert T g \rVert$.
    Asam {
        /// $\eta$ (0.01 in the paper).
        eta: f64,
    },
    /// GSAM (Zhuang et al., 2022): descend along $g_p - \alpha g_\perp$, $g_\perp$ the part of $g$ orthogonal to
    /// $g_p = \nabla L(w + \delta)$. Its radius tied to the learning rate is `rho_schedule = proportional_to_lr`.
    Gsam {
        /// $\alpha$.
        alpha: f64,
    },
    /// Fisher-SAM (Kim et al., 2022): $\delta = \rho F^{-1} g / \sqrt{g^\top F^{-1} g}$, $F = 1 + \eta\, g^2$.
    FisherSam {
        /// $\eta \ge 0$.
        eta: f64,
    },
    /// F-SAM (Li et al., 2024): $d = g - \sigma m$, $m \leftarrow \lambda m + (1 - \lambda) g$ (the official
    /// code's order: the first step ascends along $g$, which starts $m$), $\delta = \rho d / \lVert d \rVert$.
    Fsam {
        /// $\sigma$.
        sigma: f64,
        /// $\lambda \in [0, 1)$.
        lambda: f64,
    },
    /// VaSSO (Li & Giannakis, 2023): $d \leftarrow (1 - \theta) d + \theta g$ ($d$ starting at the first
    /// gradient), $\delta = \rho d / \lVert d \rVert$.
    Vasso {
        /// $\theta \in (0, 1]$.
        theta: f64,
    },
    /// LookSAM (Liu et al., 2022): a SAM step every `k` steps, storing $g_v$, the part of its gradient
    /// orthogonal to $g$; in between, $g + \alpha (\lVert g \rVert / \lVert g_v \rVert) g_v$ (one gradient).
    LookSam {
        /// The period $k \ge 1$.
        k: usize,
        /// $\alpha$.
        alpha: f64,
    },
    /// ESAM (Du et al., 2022): each coordinate perturbed with probability $\beta$, scaled by $1/\beta$; the
    /// descent on the fraction $\gamma$ of the group whose loss rises most.
    Esam {
        /// $\beta \in (0, 1]$.
        beta: f64,
        /// $\gamma \in (0, 1]$.
        gamma: f64,
    },
    /// MSAM (Becker et al., 2024): $\delta = -\rho v / \lVert v \rVert$ along the momentum buffer.
    Msam,
    /// SAM-ON (Mueller et al., 2023): perturb only the normalization layers' affine parameters.
    SamOn,
}

/// What a variant needs of the model or the optimizer besides gradients ([`CheckedSam::require_layers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Gradients only: every engine runs it.
    Gradients,
    /// The optimizer's momentum buffer (not in the analytic engines).
    Momentum,
    /// Normalization layers, BatchNorm or GroupNorm (not in the analytic engines).
    Normalization,
}

/// One option of a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantOption {
    /// Its key in config.toml (`[sam.variant]`); the CLI's flag is `--variant-<name>`.
    pub name: &'static str,
    /// What it is, after the variant's label in the CLI's help ("LookSAM's period k").
    pub doc: &'static str,
}

/// One row of [`VARIANTS`]: what the CLI, the presets, the Python package and the tests know of a variant beside
/// its options ([`Variant`]) and its rule ([`crate::ascent`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VariantInfo {
    /// Its `--variant` name, also its key in the Python package ("fisher-sam").
    pub name: &'static str,
    /// Its `kind` in config.toml, serde's name of the enum variant ("fisher_sam").
    pub kind: &'static str,
    /// Its name in reports and run directories ("Fisher-SAM").
    pub label: &'static str,
    /// Its rule in one line, for the CLI's help.
    pub summary: &'static str,
    /// The paper that defines it.
    pub paper: &'static str,
    /// The variant at its default options (`--variant NAME` without `--variant-*` options).
    pub default: Variant,
    /// Its options, in the order of the enum's fields.
    pub options: &'static [VariantOption],
    /// Whether it keeps state across steps: one direction for the whole batch, so no m-SAM groups.
    pub stateful: bool,
    /// What it needs besides gradients.
    pub needs: Needs,
    /// Options at which it is plain normalized SAM bit for bit (the engines' tests), if it has them.
    pub reducing: Option<Variant>,
}

const fn opt(name: &'static str, doc: &'static str) -> VariantOption {
    VariantOption { name, doc }
}

/// The variant table: every member of [`Variant`], plain SAM first, in the enum's order (the order of the CLI's
/// names, the presets' methods and the Python package's `VARIANTS`). A new variant is its rule in `ascent/`, its
/// options in [`Variant`] (with their range check), one row here and its tests; the tests below fail while a
/// member of the enum has no row.
pub const VARIANTS: [VariantInfo; 10] = [
    VariantInfo {
        name: "sam",
        kind: "sam",
        label: "SAM",
        summary: "Plain SAM",
        paper: "Foret et al., 2021",
        default: Variant::Sam,
        options: &[],
        stateful: false,
        needs: Needs::Gradients,
        reducing: None,
    },
    VariantInfo {
        name: "asam",
        kind: "asam",
        label: "ASAM",
        summary: "ASAM: T = |w| + eta, delta = rho T^2 g / ||T g||",
        paper: "Kwon et al., 2021",
        default: Variant::Asam { eta: 0.01 },
        options: &[opt("eta", "eta")],
        stateful: false,
        needs: Needs::Gradients,
        reducing: None,
    },
    VariantInfo {
        name: "gsam",
        kind: "gsam",
        label: "GSAM",
        summary: "GSAM: descend along g_p - alpha g_perp",
        paper: "Zhuang et al., 2022",
        default: Variant::Gsam { alpha: 0.1 },
        options: &[opt("alpha", "alpha")],
        stateful: false,
        needs: Needs::Gradients,
        reducing: Some(Variant::Gsam { alpha: 0.0 }),
    },
    VariantInfo {
        name: "fisher-sam",
        kind: "fisher_sam",
        label: "Fisher-SAM",
        summary: "Fisher-SAM: delta = rho F^-1 g / sqrt(g F^-1 g), F = 1 + eta g^2",
        paper: "Kim et al., 2022",
        default: Variant::FisherSam { eta: 1.0 },
        options: &[opt("eta", "eta")],
        stateful: false,
        needs: Needs::Gradients,
        reducing: Some(Variant::FisherSam { eta: 0.0 }),
    },
    VariantInfo {
        name: "fsam",
        kind: "fsam",
        label: "F-SAM",
        summary: "F-SAM: d = g - sigma m (m a moving average of gradients)",
        paper: "Li et al., 2024",
        default: Variant::Fsam {
            sigma: 1.0,
            lambda: 0.6,
        },
        options: &[opt("sigma", "sigma"), opt("lambda", "lambda")],
        stateful: true,
        needs: Needs::Gradients,
        reducing: Some(Variant::Fsam {
            sigma: 0.0,
            lambda: 0.9,
        }),
    },
    VariantInfo {
        name: "vasso",
        kind: "vasso",
        label: "VaSSO",
        summary: "VaSSO: d = (1 - theta) d + theta g",
        paper: "Li & Giannakis, 2023",
        default: Variant::Vasso { theta: 0.4 },
        options: &[opt("theta", "theta")],
        stateful: true,
        needs: Needs::Gradients,
        reducing: Some(Variant::Vasso { theta: 1.0 }),
    },
    VariantInfo {
        name: "looksam",
        kind: "look_sam",
        label: "LookSAM",
        summary: "LookSAM: a SAM step every k steps, its orthogonal component reused in between",
        paper: "Liu et al., 2022",
        default: Variant::LookSam { k: 5, alpha: 0.7 },
        options: &[opt("k", "period k"), opt("alpha", "alpha")],
        stateful: true,
        needs: Needs::Gradients,
        reducing: Some(Variant::LookSam { k: 1, alpha: 0.7 }),
    },
    VariantInfo {
        name: "esam",
        kind: "esam",
        label: "ESAM",
        summary: "ESAM: a random fraction beta of the weights perturbed, the descent on the fraction gamma of examples",
        paper: "Du et al., 2022",
        default: Variant::Esam {
            beta: 0.6,
            gamma: 0.5,
        },
        options: &[
            opt("beta", "beta, the fraction of weights perturbed"),
            opt("gamma", "gamma, the fraction of examples kept for the descent"),
        ],
        stateful: false,
        needs: Needs::Gradients,
        reducing: Some(Variant::Esam {
            beta: 1.0,
            gamma: 1.0,
        }),
    },
    VariantInfo {
        name: "msam",
        kind: "msam",
        label: "MSAM",
        summary: "MSAM: delta along the momentum buffer (needs momentum: not on the analytic engines)",
        paper: "Becker et al., 2024",
        default: Variant::Msam,
        options: &[],
        stateful: false,
        needs: Needs::Momentum,
        reducing: None,
    },
    VariantInfo {
        name: "sam-on",
        kind: "sam_on",
        label: "SAM-ON",
        summary: "SAM-ON: only the normalization layers perturbed (not on the analytic engines)",
        paper: "Mueller et al., 2023",
        default: Variant::SamOn,
        options: &[],
        stateful: false,
        needs: Needs::Normalization,
        reducing: None,
    },
];

impl Variant {
    /// Each variant at its default options, in the order of [`VARIANTS`] (whose `default` column this is).
    pub const DEFAULTS: [Variant; VARIANTS.len()] = {
        let mut defaults = [Variant::Sam; VARIANTS.len()];
        let mut i = 0;
        while i < VARIANTS.len() {
            defaults[i] = VARIANTS[i].default;
            i += 1;
        }
        defaults
    };

    /// Its row of [`VARIANTS`].
    pub fn info(self) -> &'static VariantInfo {
        let member = std::mem::discriminant(&self);
        VARIANTS
            .iter()
            .find(|row| std::mem::discriminant(&row.default) == member)
            .expect("every variant has a row in VARIANTS (tested)")
    }

    /// Its name in reports ("SAM", "ASAM", "Fisher-SAM", ...).
    pub fn label(self) -> &'static str {
        self.info().label
    }

    /// Whether the variant keeps state across steps (one direction for the whole batch).
    pub fn is_stateful(self) -> bool {
        self.info().stateful
    }

    /// Its options checked: exit status 2 names the option and the range.
    fn check(self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str, v: f64| {
            Err(ConfigError::Invalid {
                field,
                reason: format!("{reason}, got {v}"),
            })
        };
        let unit = |x: f64| x.is_finite() && x > 0.0 && x <= 1.0;
        match self {
            Variant::Asam { eta } | Variant::FisherSam { eta }
                if !(eta.is_finite() && eta >= 0.0) =>
            {
                bad("eta", "must be finite and >= 0", eta)
            }
            Variant::Gsam { alpha } | Variant::LookSam { alpha, .. } if !alpha.is_finite() => {
                bad("alpha", "must be finite", alpha)
            }
            Variant::Fsam { sigma, .. } if !sigma.is_finite() => {
                bad("sigma", "must be finite", sigma)
            }
            Variant::Fsam { lambda, .. }
                if !(lambda.is_finite() && (0.0..1.0).contains(&lambda)) =>
            {
                bad("lambda", "must be in [0, 1)", lambda)
            }
            Variant::Vasso { theta } if !unit(theta) => bad("theta", "must be in (0, 1]", theta),
            Variant::LookSam { k: 0, .. } => bad("k", "must be at least 1", 0.0),
            Variant::Esam { beta, .. } if !unit(beta) => bad("beta", "must be in (0, 1]", beta),
            Variant::Esam { gamma, .. } if !unit(gamma) => bad("gamma", "must be in (0, 1]", gamma),
            _ => Ok(()),
        }
    }
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
    /// Plain SAM or one of its variants.
    #[serde(deserialize_with = "variant_strict")]
    pub variant: Variant,
}

/// [`Variant`]'s own deserialization, refusing options beside the kinds that take none (the rows of [`VARIANTS`]
/// without options: `sam`, `msam`, `sam_on`):
/// serde's `deny_unknown_fields` does not reach the unit variants of an internally tagged enum, so
/// `[sam.variant] kind = "sam", eta = 3` would otherwise drop `eta` (and a sweep axis on it make identical runs).
fn variant_strict<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Variant, D::Error> {
    use serde::de::Error as _;
    let value = toml::Value::deserialize(d)?;
    if let Some(table) = value.as_table() {
        let kind = table.get("kind").and_then(toml::Value::as_str);
        let optionless = |kind: &&str| {
            VARIANTS
                .iter()
                .any(|r| r.kind == *kind && r.options.is_empty())
        };
        if let Some(kind) = kind.filter(optionless) {
            if let Some(extra) = table.keys().find(|k| *k != "kind") {
                return Err(D::Error::custom(format!(
                    "unknown field `{extra}`: variant `{kind}` takes no options"
                )));
            }
        }
    }
    Variant::deserialize(value).map_err(D::Error::custom)
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
            variant: Variant::Sam,
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

    /// Gradient passes per update: one, or the ascent steps plus the descent (a run's cost, not counting the
    /// variants' extra passes).
    pub fn passes(&self) -> f64 {
        if self.rho > 0.0 {
            self.ascent_steps as f64 + 1.0
        } else {
            1.0
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
        self.check_variant(group_size < batch_size)?;
        Ok(CheckedSam {
            config: self.clone(),
            group_size,
        })
    }
}

impl SamConfig {
    /// One rule for options that shape the ascent, at the boundary of every run config (diagonal-net, ReLU-net and
    /// deep runs, `bench-step`): without a radius (`rho = 0`, or a zero rho/lr factor) there is no ascent, so a
    /// variant, multi-step or random-start ascent, random perturbation or previous-batch ascent would be silently
    /// dropped (the run is ERM): each is refused, naming itself and the radius. So is a constant `rho` beside
    /// `rho_schedule = proportional_to_lr`, which ignores it (config.toml would record a radius that never ran).
    /// [`SamConfig::check`] alone accepts them: a trainer given radius 0 for a step takes an ERM step whatever
    /// they are (what its tests check).
    pub fn check_applies(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        let radius = match self.rho_schedule {
            RhoSchedule::ProportionalToLr { factor } => {
                if self.rho != 0.0 {
                    return bad(
                        "rho",
                        format!(
                            "rho = {} and rho_schedule proportional_to_lr (factor {factor}) contradict: the radius is factor x lr, so rho must be 0 (--rho and --rho-lr-factor are exclusive)",
                            self.rho
                        ),
                    );
                }
                factor
            }
            RhoSchedule::Constant => self.rho,
        };
        if radius != 0.0 {
            return Ok(());
        }
        let dropped = if self.variant != Variant::Sam {
            Some(("variant", format!("the variant {}", self.variant.label())))
        } else if self.ascent_steps != 1 || self.ascent_step_mult != 1.0 {
            Some((
                "ascent_steps",
                format!(
                    "ascent_steps = {}, ascent_step_mult = {}",
                    self.ascent_steps, self.ascent_step_mult
                ),
            ))
        } else if self.random_init {
            Some(("random_init", "random_init (a random start)".into()))
        } else if self.perturbation != Perturbation::Ascent {
            Some(("perturbation", "random perturbations".into()))
        } else if self.ascent_source != AscentSource::SameBatch {
            Some(("ascent_source", "the previous-batch ascent".into()))
        } else {
            None
        };
        match dropped {
            Some((field, what)) => bad(
                field,
                format!("{what} needs a SAM radius, but rho = 0 trains ERM (no perturbation), so it would be ignored: give a radius (--rho or --rho-lr-factor) or leave it out"),
            ),
            None => Ok(()),
        }
    }

    /// A variant's options, and its fit with the other options: variants define their own ascent (one normalized
    /// step from `w`, on the descent batch), and the stateful ones keep one direction for the whole batch.
    fn check_variant(&self, grouped: bool) -> Result<(), ConfigError> {
        let v = self.variant;
        if v == Variant::Sam {
            return Ok(());
        }
        v.check()?;
        let clash = |field: &'static str, what: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: format!("{v:?} defines its own ascent: {what}"),
            })
        };
        if self.ascent_steps != 1 || self.ascent_step_mult != 1.0 {
            return clash(
                "ascent_steps",
                "one ascent step (ascent_steps = 1, ascent_step_mult = 1)",
            );
        }
        if self.random_init || self.perturbation != Perturbation::Ascent {
            return clash(
                "random_init",
                "an ascent from w itself (no random start or random perturbation)",
            );
        }
        if v.is_stateful() && grouped {
            return clash(
                "m",
                "it keeps one direction for the whole batch (grouping = whole_batch)",
            );
        }
        Ok(())
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

    /// Refuses a variant that needs what the model or optimizer of an engine lacks: MSAM a momentum buffer
    /// (`momentum`), SAM-ON normalization layers (`normalization`). `engine` names what lacks it.
    pub fn require_layers(
        &self,
        engine: &str,
        momentum: bool,
        normalization: bool,
    ) -> Result<(), ConfigError> {
        let missing = match self.config.variant.info().needs {
            Needs::Momentum if !momentum => "a momentum buffer to perturb along",
            Needs::Normalization if !normalization => {
                "normalization layers (BatchNorm or GroupNorm) to perturb"
            }
            _ => return Ok(()),
        };
        Err(ConfigError::Invalid {
            field: "variant",
            reason: format!(
                "{:?} needs {missing}, and the {engine} has none",
                self.config.variant
            ),
        })
    }

    /// Refuses ESAM's data selection on full-batch n-SAM over `n` examples: it would drop the same hardest examples
    /// of the whole training set at every step.
    pub fn check_selection(&self, n: usize, batch_size: usize) -> Result<(), ConfigError> {
        match self.config.variant {
            Variant::Esam { gamma, .. } if gamma < 1.0 && batch_size == n && self.group_size == n => {
                Err(ConfigError::Invalid {
                    field: "gamma",
                    reason: "ESAM's data selection needs mini-batches or groups: on full-batch n-SAM it would drop the same hardest examples from the whole training set (use gamma = 1, --batch-size or --m)".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The learning rate and radius of update `t` of `total` under the schedule `lr` (every engine's loop).
    pub fn lr_rho_at(&self, lr: &LrSchedule, t: usize, total: usize) -> (f64, f64) {
        self.config.lr_rho_at(lr, t, total)
    }

    /// The radius at training fraction `frac` with learning rate `lr`; 0 outside the active window.
    pub fn rho_at(&self, frac: f64, lr: f64) -> f64 {
        self.config.rho_at(frac, lr)
    }
}

impl SamConfig {
    /// [`CheckedSam::lr_rho_at`] (what a finished run's readers recompute; the engines step with a
    /// [`CheckedSam`]).
    pub fn lr_rho_at(&self, lr: &LrSchedule, t: usize, total: usize) -> (f64, f64) {
        let lr = lr.at(t, total);
        (lr, self.rho_at(t as f64 / total as f64, lr))
    }

    /// [`CheckedSam::rho_at`].
    pub fn rho_at(&self, frac: f64, lr: f64) -> f64 {
        let ActiveWindow { start, end } = self.window;
        let active = frac >= start && (frac < end || end >= 1.0);
        if !active {
            return 0.0;
        }
        match self.rho_schedule {
            RhoSchedule::Constant => self.rho,
            RhoSchedule::ProportionalToLr { factor } => factor * lr,
        }
    }
}

#[cfg(test)]
mod tests;
