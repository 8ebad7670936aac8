//! What changes during training and the vectors it is made of: [`TrainState`] (parameters, momentum buffers,
//! BatchNorm running statistics, the SAM variant's state, AdamW's moments) and [`ParamVec`] with its arithmetic.
//!
//! Below both the update rule ([`crate::optim`]) and the step loop ([`crate::trainer`], which re-exports these).

use burn::tensor::{Device, Tensor};
use samlab_core::ascent::VariantState;

use crate::models::Network;
use crate::nn::BnStats;

/// A list of tensors shaped like the parameters.
pub type ParamVec = Vec<Tensor<1>>;

/// AdamW's second moments and the number of steps it has taken.
#[derive(Clone, Debug)]
pub struct AdamState {
    /// $v$, one tensor per parameter.
    pub second_moment: ParamVec,
    /// $t$.
    pub steps: u64,
}

/// Everything that changes during training: parameters, momentum buffers and BatchNorm running statistics.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// One flattened tensor per parameter.
    pub params: Vec<Tensor<1>>,
    /// Momentum buffers, same shapes.
    pub velocity: Vec<Tensor<1>>,
    /// BatchNorm running statistics.
    pub bn: BnStats,
    /// The SAM variant's state (F-SAM's and VaSSO's directions, LookSAM's stored component and period).
    pub variant: VariantState<ParamVec>,
    /// AdamW's second moments and step count (`None` under SGD and before AdamW's first step).
    pub adam: Option<AdamState>,
}

impl TrainState {
    /// Zero momentum and fresh BatchNorm statistics around `params`.
    pub fn new(net: &Network, params: Vec<Tensor<1>>, device: &Device) -> Self {
        let velocity = params.iter().map(Tensor::zeros_like).collect();
        TrainState {
            params,
            velocity,
            bn: BnStats::new(net.bn_channels(), device),
            variant: VariantState::default(),
            adam: None,
        }
    }
}

/// Squared global L2 norm over every tensor of `v` (one host synchronization).
pub fn sq_norm(v: &[Tensor<1>]) -> f64 {
    let parts: Vec<Tensor<1>> = v.iter().map(|t| t.clone().square().sum()).collect();
    Tensor::cat(parts, 0).sum().into_scalar::<f32>() as f64
}

/// A tensor's values on the host, as f64 (one host synchronization).
pub fn to_host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("a float tensor")
}

/// Inner product $\sum_i \langle a_i, b_i \rangle$ over every tensor (one host synchronization).
pub fn dot(a: &[Tensor<1>], b: &[Tensor<1>]) -> f64 {
    let parts: Vec<Tensor<1>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.clone() * y.clone()).sum())
        .collect();
    Tensor::cat(parts, 0).sum().into_scalar::<f32>() as f64
}

/// `a + s * b`, tensor by tensor (without the multiplication for `s = 1`).
pub fn axpy(a: &[Tensor<1>], s: f64, b: &[Tensor<1>]) -> ParamVec {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if s == 1.0 {
                x.clone() + y.clone()
            } else {
                x.clone() + y.clone().mul_scalar(s)
            }
        })
        .collect()
}

/// `s * v`, tensor by tensor.
pub fn scale(v: &[Tensor<1>], s: f64) -> ParamVec {
    v.iter().map(|t| t.clone().mul_scalar(s)).collect()
}
