//! `samlab hessian` on a run directory's checkpoint: [`run_hessian`] and its [`HessianReport`]. The Hessian itself
//! (exact Hessian-vector products, the spectrum, [`HessianConfig`]) is [`crate::hessian`], below the run layer
//! whose per-epoch curvature log uses it; its items are re-exported here.

use std::path::Path;
use std::time::Instant;

use samlab_core::features::FeatureStats;
use samlab_report::{Figure, Scale, Series};
use serde::{Deserialize, Serialize};

use super::features::{feature_sparsity, DEEP_CORR_THRESHOLD};
use super::{write_json_file, LoadedRun, RunInfo, Written};
pub use crate::hessian::{
    check_probes, curvature, Curvature, HessianConfig, HessianOperator, MAX_PROBES,
};
use crate::run::{curvature_on, RunError};

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

impl HessianReport {
    /// The file [`HessianReport::write`] writes in a run directory.
    pub const FILE: &'static str = "hessian.json";
    /// The stem of the density's figure (`.svg` and `.png`) in a run directory.
    pub const DENSITY_FIGURE: &'static str = "hessian_density";

    /// The eigenvalue density on a log axis (floored at $10^{-12}$ of its peak), when the report has one.
    pub fn density_figure(&self) -> Option<Figure> {
        let d = self.curvature.density.as_ref()?;
        let mut fig = Figure::new(
            "Hessian eigenvalue density (stochastic Lanczos quadrature)",
            "eigenvalue",
            "density",
        );
        fig.y_scale = Scale::Log;
        let floor = 1e-12 * d.density.iter().fold(0.0f64, |m, &x| m.max(x));
        fig.series.push(Series::new(
            "density",
            d.grid
                .iter()
                .zip(&d.density)
                .map(|(&t, &y)| (t, y.max(floor)))
                .collect(),
        ));
        Some(fig)
    }

    /// Writes the report to `dir/hessian.json` (pretty JSON, atomically) and, when it has a density, its figure to
    /// `dir/hessian_density.svg` and `.png`. A figure that cannot be drawn is not an error: [`Written`] says why.
    pub fn write(&self, dir: &Path) -> Result<Written, RunError> {
        let path = dir.join(Self::FILE);
        write_json_file(&path, self)?;
        let mut written = Written {
            files: vec![path],
            figure_error: None,
        };
        if let Some(fig) = self.density_figure() {
            written.figure(&fig, &dir.join(Self::DENSITY_FIGURE));
        }
        Ok(written)
    }
}

/// The [`curvature`] ([`curvature_on`], the function of the run's curvature log) and [`feature_sparsity`] of a
/// loaded run on the first `cfg.examples` examples of `cfg.split`.
pub fn run_hessian(run: &LoadedRun, cfg: &HessianConfig) -> Result<HessianReport, RunError> {
    let examples = run.examples(cfg.split, cfg.examples)?;
    let started = Instant::now();
    // The run's curvature log computes exactly this (same function, same examples).
    let curvature = curvature_on(&run.net, &run.data, &run.state, cfg, &run.device)?;
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
