//! The NTK feature matrix: the Jacobian of the network's outputs with respect to its parameters on fixed
//! examples, one row per (example, output), in evaluation mode (BatchNorm with the running statistics). Its rank
//! is the NTK-feature rank of Andriushchenko et al. 2023 ("SGD with large step sizes learns sparse features").

use burn::tensor::Tensor;
use ndarray::Array2;

use crate::models::Network;
use crate::nn::{BnMode, BnStats, Ctx};
use crate::trainer::Batch;

/// The Jacobian of the logits at `params` on `examples`, in f64 on the host, parameters flattened in the
/// network's order: with `labels_only`, `n x num_params`, row `i` the gradient of example `i`'s logit of its
/// label; else `(n * classes) x num_params`, row `i * classes + c` the gradient of its logit `c`. One backward
/// pass per row: for small subsets.
pub fn ntk_features(
    net: &Network,
    params: &[Tensor<1>],
    bn: &BnStats,
    examples: &Batch,
    labels_only: bool,
) -> Array2<f64> {
    let n = examples.len();
    let classes = net.spec().classes;
    let per_example = if labels_only { 1 } else { classes };
    let p = net.num_params();
    let mut jac = Array2::zeros((n * per_example, p));
    for i in 0..n {
        let x = examples.slice(i, 1).x;
        let outputs: Vec<usize> = if labels_only {
            vec![usize::from(examples.labels[i])]
        } else {
            (0..classes).collect()
        };
        for (k, &c) in outputs.iter().enumerate() {
            let leaves: Vec<Tensor<1>> = params
                .iter()
                .map(|t| t.clone().autodiff().require_grad())
                .collect();
            let mut ctx = Ctx {
                params: &leaves,
                mode: BnMode::Running,
                stats: &mut bn.clone(),
                tape: None,
                grouped: None,
            };
            let logits = net.forward(&mut ctx, x.clone());
            let grads = logits.slice([0..1, c..c + 1]).sum().backward();
            let mut row = jac.row_mut(i * per_example + k);
            let mut at = 0;
            for (leaf, t) in leaves.iter().zip(params) {
                let g = leaf.grad(&grads).unwrap_or_else(|| t.zeros_like());
                let values = g
                    .to_data()
                    .try_into_vec_as::<f64>()
                    .expect("a float tensor");
                for (k, v) in values.into_iter().enumerate() {
                    row[at + k] = v;
                }
                at += t.dims()[0];
            }
        }
    }
    jac
}

#[cfg(test)]
mod tests {
    use burn::tensor::{DType, Device, TensorData};

    use super::*;
    use crate::models::{Arch, ModelSpec};
    use crate::nn::{init_params, NormKind};

    /// Every row is the derivative of one logit: central finite differences of the logits in f64 along each
    /// parameter agree with the row's entries.
    #[test]
    fn the_ntk_rows_are_the_derivatives_of_the_logits() {
        let device = Device::flex();
        let net = Network::new(&ModelSpec {
            arch: Arch::Mlp,
            width: 3,
            norm: NormKind::None,
            input: [1, 2, 2],
            classes: 3,
            transformer: None,
        })
        .unwrap();
        let params: Vec<Tensor<1>> = init_params(net.params(), 7, &device)
            .into_iter()
            .map(|t| t.cast(DType::F64))
            .collect();
        let pixels: Vec<f64> = (0..8).map(|k| ((k * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let x =
            Tensor::<4>::from_data(TensorData::new(pixels, [2, 1, 2, 2]), (&device, DType::F64));
        let examples = Batch {
            x: x.clone(),
            onehot: Tensor::zeros([2, 3], (&device, DType::F64)),
            labels: vec![0, 1],
        };
        let bn = BnStats::new(&[], &device);
        let jac = ntk_features(&net, &params, &bn, &examples, false);
        assert_eq!(jac.dim(), (6, net.num_params()));
        // The label rows are the rows of the labels' logits.
        let labelled = ntk_features(&net, &params, &bn, &examples, true);
        assert_eq!(labelled.row(0), jac.row(0));
        assert_eq!(labelled.row(1), jac.row(3 + 1));
        let logits = |w: &[Tensor<1>]| -> Vec<f64> {
            let mut ctx = Ctx {
                params: w,
                mode: BnMode::Running,
                stats: &mut bn.clone(),
                tape: None,
                grouped: None,
            };
            net.forward(&mut ctx, x.clone())
                .to_data()
                .try_into_vec_as::<f64>()
                .unwrap()
        };
        let eps = 1e-6;
        let mut col = 0;
        for (t, p) in params.iter().enumerate() {
            for k in 0..p.dims()[0] {
                let moved = |s: f64| {
                    let mut w = params.clone();
                    let mut v = w[t].to_data().try_into_vec_as::<f64>().unwrap();
                    v[k] += s;
                    let n = v.len();
                    w[t] = Tensor::from_data(TensorData::new(v, [n]), (&device, DType::F64));
                    logits(&w)
                };
                let (plus, minus) = (moved(eps), moved(-eps));
                for row in 0..6 {
                    let fd = (plus[row] - minus[row]) / (2.0 * eps);
                    assert!((jac[[row, col]] - fd).abs() < 1e-6, "row {row} param {col}");
                }
                col += 1;
            }
        }
    }
}
