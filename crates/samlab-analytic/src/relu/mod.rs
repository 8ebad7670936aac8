//! One-hidden-layer ReLU networks $f(x) = \sum_j a_j \,\mathrm{ReLU}(w_j \cdot x + b_j)$ trained by any member of
//! the SAM family, in f64 with closed-form gradients (SPEC §3 and §9).
//!
//! - [`model`]: the network, its initializations (SPEC §3's Blanc et al. init, Gaussian, He, PyTorch-uniform) and
//!   the gradient kernel;
//! - [`train`](mod@train): GD, SGD, n-SAM, m-SAM, 1-SAM (normalized, unnormalized or clipped, multi-step, random,
//!   previous-batch, windows) with any [`LrSchedule`](samlab_core::schedule::LrSchedule), an optional stop rule, and
//!   divergence recorded as a status;
//! - [`metrics`]: kinks of 1D interpolants, the feature-sparsity coefficient, distinct active neurons;
//! - [`data`]: the 12-point 1D regression and teacher-student data;
//! - [`run`](mod@run): a ReLU run as data: its config, execution into a run directory and loading back.
//!
//! Conventions: the per-example loss is $\ell_i = (f(x_i) - y_i)^2 / 2$, combined by [`LossReduction`] (sum, as
//! the 1D notebook, or mean). The SAM ascent of a group uses the same reduction over the group, so normalized
//! n-SAM on a full batch is exactly the notebook's step. The notebook's other choices (ERM with a constant rate
//! vs SAM with a linear decay; SAM stopping on the perturbed loss) are settings of a run, not engine behaviour.

pub mod data;
pub mod metrics;
pub mod model;
pub mod run;
pub mod train;

pub use data::{twelve_points, TeacherStudent};
pub use metrics::{feature_stats, kinks, FeatureStats, Kink, KinkTolerances};
pub use model::{ReluInit, ReluNet};
pub use train::{train, LossReduction, ReluRun, ReluStepView, ReluTrainConfig, StopOn, StopRule};
