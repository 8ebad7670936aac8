//! What the curvature presets (`which_sharpness`, `edge_of_stability`) share: a small MLP without normalization
//! trained full batch on a fixed subset of the shipped Fashion-MNIST images, its Hessian's top eigenvalue and trace
//! logged during training on the same examples it trains on, and curves of them.

use std::path::Path;

use anyhow::Result;
use samlab_core::sam::{Grouping, Normalization, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_deep::models::Arch;
use samlab_deep::nn::NormKind;
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_deep::trainer::WeightDecay;
use samlab_report::{Figure, Scale, Series};

use crate::deep_common::DeepScale;

/// The settings of a full-batch run: `images` training images (no validation split), an MLP of `width`, plain
/// gradient descent (no momentum, no weight decay) at a constant `lr` for `steps` updates (one per epoch), the
/// Hessian logged every `every` steps on all `images` training images with `probes` trace probes. Device and
/// precision follow `deep` (`--device`, `--precision`).
pub fn config(
    deep: &DeepScale,
    images: usize,
    width: usize,
    lr: f64,
    steps: usize,
    every: usize,
    probes: usize,
) -> DeepRunConfig {
    let mut c = samlab_deep::run::defaults();
    c.model.arch = Arch::Mlp;
    c.model.width = Some(width);
    c.model.norm = Some(NormKind::None);
    c.data.train_limit = Some(images);
    c.data.val_fraction = 0.0;
    c.train.epochs = steps;
    c.train.batch_size = images;
    c.train.lr = LrSchedule::constant(lr);
    c.train.optim.momentum = 0.0;
    c.train.optim.weight_decay = WeightDecay::None;
    c.train.eval_train_examples = images;
    c.train.curvature_every = every;
    c.train.curvature_examples = images;
    c.train.curvature_probes = probes;
    c.train.device = deep.base.train.device.clone();
    c.train.precision = deep.base.train.precision;
    c.sam = SamConfig::erm();
    c
}

/// Normalized SAM of radius `rho` over groups of `grouping`.
pub fn sam(rho: f64, grouping: Grouping) -> SamConfig {
    SamConfig {
        normalization: Normalization::Normalized,
        ..SamConfig::usam(rho, grouping)
    }
}

/// `(step, top eigenvalue, trace)` at every step a run logged its Hessian.
pub fn curvature(o: &RunOutcome) -> Vec<(f64, f64, f64)> {
    o.rows
        .iter()
        .filter(|r| r.hessian_top.is_finite())
        .map(|r| (r.step as f64, r.hessian_top, r.hessian_trace))
        .collect()
}

/// A figure of `(name, points)` lines with markers (each point a logged measurement), written to `<dir>/<stem>`.
pub fn figure(
    dir: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: Vec<(String, Vec<(f64, f64)>)>,
    y_scale: Scale,
) -> Result<std::path::PathBuf> {
    let fig = Figure {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        x_scale: Scale::Linear,
        y_scale,
        series: lines
            .into_iter()
            .map(|(name, points)| Series {
                name,
                points,
                markers: true,
                ..Series::default()
            })
            .collect(),
        ..Figure::default()
    };
    Ok(samlab_report::render(&fig, &dir.join(stem))?.0)
}
