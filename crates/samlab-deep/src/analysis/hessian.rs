//! `samlab hessian` on a run directory's checkpoint: [`run_hessian`] and its [`HessianReport`]. The Hessian itself
//! (exact Hessian-vector products, the spectrum, [`HessianConfig`]) is [`crate::hessian`], below the run layer
//! whose per-epoch curvature log uses it; its items are re-exported here.

use std::time::Instant;

use samlab_core::relu_net::metrics::FeatureStats;
use serde::{Deserialize, Serialize};

use super::features::{feature_sparsity, DEEP_CORR_THRESHOLD};
use super::{LoadedRun, RunInfo};
pub use crate::hessian::{
    check_probes, curvature, Curvature, HessianConfig, HessianOperator, MAX_PROBES,
};
use crate::run::RunError;

/// What `samlab hessian` writes to `hessian.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HessianReport {
    /// The run and checkpoint.
    pub run: RunInfo,
    /// The settings.
    pub config: HessianConfig,
    /// Eigenvalues, trace and density.
    #[serde(flatten)]
    pub curvature: Curvature,
    /// Feature sparsity of the penultimate features on the same examples, in evaluation mode, correlation
    /// threshold [`DEEP_CORR_THRESHOLD`].
    pub feature_sparsity: FeatureStats,
    /// Number of penultimate features (neurons).
    pub feature_neurons: usize,
    /// Wall-clock seconds (data and checkpoint loading excluded).
    pub seconds: f64,
}

/// [`top_eigenvalue`] and [`feature_sparsity`] of a loaded run on the first `cfg.examples` examples of `cfg.split`.
pub fn run_hessian(run: &LoadedRun, cfg: &HessianConfig) -> Result<HessianReport, RunError> {
    let examples = run.examples(cfg.split, cfg.examples)?;
    let started = Instant::now();
    let curvature = curvature(&run.net, &run.state, &examples, cfg)?;
    let (features, neurons) = feature_sparsity(
        &run.net,
        &run.state.params,
        &run.state.bn,
        &examples,
        DEEP_CORR_THRESHOLD,
    );
    Ok(HessianReport {
        run: run.info.clone(),
        config: cfg.clone(),
        curvature,
        feature_sparsity: features,
        feature_neurons: neurons,
        seconds: started.elapsed().as_secs_f64(),
    })
}
