//! Feature sparsity of the last block (SPEC section 9): the authors' coefficient
//! ([`feature_stats_of`]) on the penultimate post-ReLU features ([`Network::features`]).

use burn::tensor::Tensor;
use ndarray::Array2;
use samlab_core::features::{feature_stats_of, FeatureStats};

use crate::models::Network;
use crate::nn::{BnMode, BnStats, Ctx};
use crate::trainer::Batch;

/// The correlation threshold the authors use for deep nets (0.99 for small ones).
pub const DEEP_CORR_THRESHOLD: f64 = 0.95;

/// Feature statistics of the network at `params` on `examples`, in evaluation mode (BatchNorm with the running
/// statistics `bn`), and the number of features.
pub fn feature_sparsity(
    net: &Network,
    params: &[Tensor<1>],
    bn: &BnStats,
    examples: &Batch,
    corr_threshold: f64,
) -> (FeatureStats, usize) {
    let phi = feature_matrix(net, params, bn, examples);
    let d = phi.ncols();
    (feature_stats_of(&phi, corr_threshold), d)
}

/// The penultimate features `[n, d]` ([`Network::features`]) of the network at `params` on `examples`, in
/// evaluation mode (BatchNorm with the running statistics `bn`), on the host.
pub fn feature_matrix(
    net: &Network,
    params: &[Tensor<1>],
    bn: &BnStats,
    examples: &Batch,
) -> Array2<f64> {
    let mut ctx = Ctx {
        params,
        mode: BnMode::Running,
        stats: &mut bn.clone(),
        tape: None,
        grouped: None,
    };
    let phi = net.features(&mut ctx, examples.x.clone());
    let [n, d] = phi.dims();
    let values: Vec<f64> = phi
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 features")
        .into_iter()
        .map(f64::from)
        .collect();
    Array2::from_shape_vec((n, d), values).expect("n x d features")
}
