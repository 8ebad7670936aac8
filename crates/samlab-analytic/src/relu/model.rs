//! The network $f(x) = \sum_j a_j \,\mathrm{ReLU}(w_j \cdot x + b_j)$, its initializations, and the closed-form
//! gradient kernel every training step is built from.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use samlab_core::data::row_major;
use samlab_core::numpy_rng::NumpyRandomState;
use samlab_core::ConfigError;

/// How the parameters are drawn (all from NumPy's `RandomState(seed)` stream, in the order listed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum ReluInit {
    /// SPEC §3 (Blanc et al., the authors' 1D notebook): $w_j = 2.5 s \cdot$ Rademacher (drawn as
    /// `2 round(U[0,1)) - 1`), $b_j = 2.5 s\, \mathcal N(0,1)$, $a_j = 4 s\, \mathcal N(0,1)$.
    Blanc {
        /// The notebook's `init_scale` $s$ (1 in the paper).
        scale: f64,
    },
    /// $w_{jk} = \sigma_w \mathcal N(0,1)$, $b = 0$, $a_j = \sigma_a \mathcal N(0,1)$: the teacher-student student of
    /// SPEC §9 is $\sigma_w = 0.5$, $\sigma_a = 0$.
    Gaussian {
        /// Standard deviation of the hidden weights.
        w_scale: f64,
        /// Standard deviation of the output weights.
        a_scale: f64,
    },
    /// He et al.: $w_{jk} \sim \mathcal N(0, 2/d)$, $b = 0$, $a_j \sim \mathcal N(0, 1/\mathrm{width})$.
    He,
    /// PyTorch's `nn.Linear` default: $w_{jk}, b_j \sim U(\pm 1/\sqrt d)$, $a_j \sim U(\pm 1/\sqrt{\mathrm{width}})$.
    Uniform,
}

/// A one-hidden-layer ReLU network in f64 with `width` neurons on `d`-dimensional inputs, no output bias.
///
/// The parameters live in one flat vector (so SAM's norms, perturbations and projections are plain vector
/// operations): the hidden weights input-major (`w[k * width + j]` is $w_{jk}$), then the biases $b$, then the
/// output weights $a$. Without a bias the $b$ block stays 0 and is never trained or perturbed.
#[derive(Clone, Debug, PartialEq)]
pub struct ReluNet {
    width: usize,
    d: usize,
    bias: bool,
    pub(crate) theta: Vec<f64>,
}

impl ReluNet {
    /// A network from its hidden weights (`width x d`), biases and output weights. `bias = false` requires
    /// `b` to be all zeros.
    pub fn from_parts(
        w: &Array2<f64>,
        b: &[f64],
        a: &[f64],
        bias: bool,
    ) -> Result<Self, ConfigError> {
        let (width, d) = w.dim();
        let bad = |reason: String| {
            Err(ConfigError::Invalid {
                field: "network",
                reason,
            })
        };
        if width == 0 || d == 0 {
            return bad(format!("width and d must be >= 1, got {width} x {d}"));
        }
        if b.len() != width || a.len() != width {
            return bad(format!(
                "{width} hidden neurons but {} biases and {} output weights",
                b.len(),
                a.len()
            ));
        }
        if !bias && b.iter().any(|&v| v != 0.0) {
            return bad("a network without biases needs b = 0".into());
        }
        let mut theta = vec![0.0; (d + 2) * width];
        for j in 0..width {
            for k in 0..d {
                theta[k * width + j] = w[[j, k]];
            }
        }
        theta[d * width..(d + 1) * width].copy_from_slice(b);
        theta[(d + 1) * width..].copy_from_slice(a);
        Ok(ReluNet {
            width,
            d,
            bias,
            theta,
        })
    }

    /// Draws a network of `width` neurons on `d` inputs with `init` from `RandomState(seed)`: hidden weights row by
    /// row (neuron-major, as PyTorch's `(width, d)` weight), then the biases (if any), then the output weights.
    pub fn init(
        init: &ReluInit,
        width: usize,
        d: usize,
        bias: bool,
        seed: u32,
    ) -> Result<Self, ConfigError> {
        if width == 0 || d == 0 {
            return Err(ConfigError::Invalid {
                field: "width",
                reason: format!("width and input dimension must be >= 1, got width {width}, d {d}"),
            });
        }
        samlab_core::limits::product("width", &[width, d + 2], samlab_core::limits::MAX_ELEMENTS)?;
        let finite_nonneg = |field, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("must be finite and >= 0, got {v}"),
                })
            }
        };
        let mut rng = NumpyRandomState::new(seed);
        let mut draw = |count: usize, f: &mut dyn FnMut(&mut NumpyRandomState) -> f64| {
            (0..count).map(|_| f(&mut rng)).collect::<Vec<f64>>()
        };
        let (w, b, a) = match *init {
            ReluInit::Blanc { scale } => {
                finite_nonneg("init scale", scale)?;
                let w = draw(width * d, &mut |r| {
                    // 2.5 * (2 round(u) - 1) * s; NumPy rounds 0.5 to even (0).
                    let sign = if r.random_sample() > 0.5 { 1.0 } else { -1.0 };
                    2.5 * sign * scale
                });
                let b = if bias {
                    draw(width, &mut |r| r.standard_normal() * 2.5 * scale)
                } else {
                    vec![0.0; width]
                };
                let a = draw(width, &mut |r| r.standard_normal() * 4.0 * scale);
                (w, b, a)
            }
            ReluInit::Gaussian { w_scale, a_scale } => {
                finite_nonneg("w_scale", w_scale)?;
                finite_nonneg("a_scale", a_scale)?;
                let w = draw(width * d, &mut |r| w_scale * r.standard_normal());
                let a = draw(width, &mut |r| a_scale * r.standard_normal());
                (w, vec![0.0; width], a)
            }
            ReluInit::He => {
                let (sw, sa) = ((2.0 / d as f64).sqrt(), (1.0 / width as f64).sqrt());
                let w = draw(width * d, &mut |r| sw * r.standard_normal());
                let a = draw(width, &mut |r| sa * r.standard_normal());
                (w, vec![0.0; width], a)
            }
            ReluInit::Uniform => {
                let (bw, ba) = (1.0 / (d as f64).sqrt(), 1.0 / (width as f64).sqrt());
                let w = draw(width * d, &mut |r| bw * (2.0 * r.random_sample() - 1.0));
                let b = if bias {
                    draw(width, &mut |r| bw * (2.0 * r.random_sample() - 1.0))
                } else {
                    vec![0.0; width]
                };
                let a = draw(width, &mut |r| ba * (2.0 * r.random_sample() - 1.0));
                (w, b, a)
            }
        };
        let w = Array2::from_shape_vec((width, d), w).expect("width * d values");
        Self::from_parts(&w, &b, &a, bias)
    }

    /// Number of hidden neurons.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Input dimension.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Whether the hidden layer has (trained) biases.
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// Number of trained parameters: `(d + 2) * width` with biases, `(d + 1) * width` without.
    pub fn num_params(&self) -> usize {
        (self.d + 1 + usize::from(self.bias)) * self.width
    }

    /// The flat parameter vector (hidden weights input-major, biases, output weights).
    pub fn params(&self) -> &[f64] {
        &self.theta
    }

    /// Hidden weights as a `width x d` matrix (row `j` is $w_j$).
    pub fn hidden_weights(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.width, self.d), |(j, k)| {
            self.theta[k * self.width + j]
        })
    }

    /// Hidden biases $b$ (zeros without biases).
    pub fn biases(&self) -> &[f64] {
        &self.theta[self.d * self.width..(self.d + 1) * self.width]
    }

    /// Output weights $a$.
    pub fn output_weights(&self) -> &[f64] {
        &self.theta[(self.d + 1) * self.width..]
    }

    /// Whether every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.theta.iter().all(|v| v.is_finite())
    }

    /// $f(x)$ for every row of `x` (row-major, `d` columns).
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let mut pre = vec![0.0; self.width];
        x.chunks_exact(self.d)
            .map(|row| forward(self.shape(), &self.theta, row, &mut pre))
            .collect()
    }

    /// $f(x)$ for every row of `x`.
    pub fn predict_rows(&self, x: &Array2<f64>) -> Array1<f64> {
        Array1::from(self.predict(&row_major(x)))
    }

    /// Post-ReLU features $\phi_{ij} = \mathrm{ReLU}(w_j \cdot x_i + b_j)$ of the rows of `x` (`n x width`).
    pub fn features(&self, x: &Array2<f64>) -> Array2<f64> {
        let flat = row_major(x);
        let mut pre = vec![0.0; self.width];
        let mut phi = Array2::zeros((x.nrows(), self.width));
        for (i, row) in flat.chunks_exact(self.d).enumerate() {
            forward(self.shape(), &self.theta, row, &mut pre);
            for j in 0..self.width {
                phi[[i, j]] = relu(pre[j]);
            }
        }
        phi
    }

    pub(crate) fn shape(&self) -> Shape {
        Shape {
            width: self.width,
            d: self.d,
            bias: self.bias,
        }
    }
}

/// Sizes the kernels need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub width: usize,
    pub d: usize,
    pub bias: bool,
}

#[inline(always)]
fn relu(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Lanes of the output sum: enough independent accumulators to hide the add latency.
const LANES: usize = 16;

/// Fills `pre` with $w_j \cdot x + b_j$ and returns $f(x) = \sum_j a_j \mathrm{ReLU}(\cdot)$, summed in
/// [`LANES`] fixed lanes so that the result does not depend on how the loop is vectorized.
#[inline(always)]
fn forward(s: Shape, theta: &[f64], x: &[f64], pre: &mut [f64]) -> f64 {
    let w = s.width;
    let pre = &mut pre[..w];
    let (weights, rest) = theta.split_at(s.d * w);
    let (b, a) = (&rest[..w], &rest[w..2 * w]);
    if s.d == 1 {
        let x0 = x[0];
        pre.iter_mut()
            .zip(b.iter().zip(weights))
            .for_each(|(p, (b, w))| *p = b + x0 * w);
    } else {
        pre.copy_from_slice(b);
        for (k, &xk) in x.iter().enumerate() {
            let wk = &weights[k * w..(k + 1) * w];
            pre.iter_mut().zip(wk).for_each(|(p, wk)| *p += xk * wk);
        }
    }
    let mut lanes = [0.0; LANES];
    let (p16, a16) = (pre.chunks_exact(LANES), a.chunks_exact(LANES));
    let tail: f64 = p16
        .remainder()
        .iter()
        .zip(a16.remainder())
        .map(|(p, a)| a * relu(*p))
        .sum();
    for (cp, ca) in p16.zip(a16) {
        for l in 0..LANES {
            lanes[l] += ca[l] * relu(cp[l]);
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0] + tail
}

/// Adds $c \sum_{i \in \text{rows}} \nabla \ell_i(\theta)$ to `out` (with $\ell_i = (f(x_i) - y_i)^2 / 2$) and
/// returns $\sum_{i} \ell_i(\theta)$. `x` is row-major with `d` columns; `pre` is scratch of length `width`.
/// Each example's contribution is added in one fused pass over the neurons (two for d > 1).
#[multiversion::multiversion(targets("x86_64+avx2"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_grad(
    s: Shape,
    theta: &[f64],
    x: &[f64],
    y: &[f64],
    rows: &[usize],
    c: f64,
    out: &mut [f64],
    pre: &mut [f64],
) -> f64 {
    let w = s.width;
    let pre = &mut pre[..w];
    let a = &theta[(s.d + 1) * w..];
    let (head, out_a) = out.split_at_mut((s.d + 1) * w);
    let (out_w, out_b) = head.split_at_mut(s.d * w);
    let mut loss = 0.0;
    for &i in rows {
        let xi = &x[i * s.d..(i + 1) * s.d];
        let r = forward(s, theta, xi, pre) - y[i];
        loss += 0.5 * r * r;
        let g = c * r;
        // da_j += g relu(pre_j); the back-propagated signal is t_j = g a_j 1[pre_j > 0].
        if s.d == 1 {
            let x0 = xi[0];
            let outs = out_a.iter_mut().zip(out_b.iter_mut()).zip(out_w.iter_mut());
            for (((oa, ob), ow), (p, aj)) in outs.zip(pre.iter().zip(a)) {
                let t = if *p > 0.0 { g * aj } else { 0.0 };
                *oa += g * relu(*p);
                if s.bias {
                    *ob += t;
                }
                *ow += t * x0;
            }
        } else {
            let outs = out_a.iter_mut().zip(out_b.iter_mut());
            for ((oa, ob), (p, aj)) in outs.zip(pre.iter_mut().zip(a)) {
                let t = if *p > 0.0 { g * aj } else { 0.0 };
                *oa += g * relu(*p);
                if s.bias {
                    *ob += t;
                }
                *p = t;
            }
            for (k, &xk) in xi.iter().enumerate() {
                out_w[k * w..(k + 1) * w]
                    .iter_mut()
                    .zip(pre.iter())
                    .for_each(|(o, t)| *o += t * xk);
            }
        }
    }
    loss
}

/// $\sum_{i \in \text{rows}} \ell_i(\theta)$ without gradients.
pub(crate) fn loss_sum(
    s: Shape,
    theta: &[f64],
    x: &[f64],
    y: &[f64],
    rows: impl Iterator<Item = usize>,
    pre: &mut [f64],
) -> f64 {
    rows.map(|i| {
        let r = forward(s, theta, &x[i * s.d..(i + 1) * s.d], pre) - y[i];
        0.5 * r * r
    })
    .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net_from(theta: &[f64], width: usize, d: usize, bias: bool) -> ReluNet {
        ReluNet {
            width,
            d,
            bias,
            theta: theta.to_vec(),
        }
    }

    #[test]
    fn parts_round_trip_and_predict_by_hand() {
        let w = Array2::from_shape_vec((2, 1), vec![1.0, -2.0]).unwrap();
        let net = ReluNet::from_parts(&w, &[0.5, 1.0], &[3.0, -1.0], true).unwrap();
        assert_eq!(net.hidden_weights(), w);
        assert_eq!(net.biases(), &[0.5, 1.0]);
        assert_eq!(net.output_weights(), &[3.0, -1.0]);
        // f(x) = 3 relu(x + 0.5) - relu(1 - 2x).
        let f = |x: f64| 3.0 * (x + 0.5).max(0.0) - (1.0 - 2.0 * x).max(0.0);
        for x in [-1.0, -0.25, 0.3, 2.0] {
            assert!((net.predict(&[x])[0] - f(x)).abs() < 1e-15);
        }
        assert_eq!(net.num_params(), 6);
        assert!(ReluNet::from_parts(&w, &[0.5], &[3.0, -1.0], true).is_err());
        assert!(ReluNet::from_parts(&w, &[0.5, 0.0], &[3.0, -1.0], false).is_err());
    }

    #[test]
    fn inits_are_seeded_and_follow_their_distributions() {
        let blanc = ReluInit::Blanc { scale: 1.0 };
        let a = ReluNet::init(&blanc, 2000, 1, true, 3).unwrap();
        assert_eq!(a, ReluNet::init(&blanc, 2000, 1, true, 3).unwrap());
        assert_ne!(a, ReluNet::init(&blanc, 2000, 1, true, 4).unwrap());
        assert!(a.hidden_weights().iter().all(|w| w.abs() == 2.5));
        let std = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        assert!((std(a.biases()) - 2.5).abs() < 0.15);
        assert!((std(a.output_weights()) - 4.0).abs() < 0.25);
        let g = ReluNet::init(
            &ReluInit::Gaussian {
                w_scale: 0.5,
                a_scale: 0.0,
            },
            20,
            2,
            false,
            0,
        )
        .unwrap();
        assert!(g.output_weights().iter().all(|&a| a == 0.0));
        assert!(g.biases().iter().all(|&b| b == 0.0));
        assert_eq!(g.num_params(), 60);
        let u = ReluNet::init(&ReluInit::Uniform, 50, 4, true, 1).unwrap();
        assert!(u.hidden_weights().iter().all(|w| w.abs() <= 0.5));
        assert!(ReluNet::init(&ReluInit::He, 0, 1, true, 0).is_err());
        assert!(ReluNet::init(&ReluInit::Blanc { scale: f64::NAN }, 3, 1, true, 0).is_err());
    }

    /// Central finite differences of the summed loss, for random networks, data and subsets.
    fn check_gradient(width: usize, d: usize, bias: bool, seed: u64, c: f64, count: usize) {
        let mut rng = NumpyRandomState::new(seed as u32);
        let n = 5;
        let mut theta = vec![0.0; (d + 2) * width];
        rng.fill_standard_normal(&mut theta);
        if !bias {
            theta[d * width..(d + 1) * width].fill(0.0);
        }
        let mut x = vec![0.0; n * d];
        rng.fill_standard_normal(&mut x);
        let mut y = vec![0.0; n];
        rng.fill_standard_normal(&mut y);
        // Repeated examples, in any order.
        let rows: Vec<usize> = (0..count).map(|k| (k * 3 + k / 4) % n).collect();
        let net = net_from(&theta, width, d, bias);
        let s = net.shape();
        let mut pre = vec![0.0; width];
        let mut grad = vec![0.0; theta.len()];
        let loss = accumulate_grad(s, &theta, &x, &y, &rows, c, &mut grad, &mut pre);
        let total =
            |th: &[f64], pre: &mut [f64]| loss_sum(s, th, &x, &y, rows.iter().copied(), pre);
        assert!((loss - total(&theta, &mut pre)).abs() <= 1e-12 * loss.abs().max(1.0));
        for p in 0..theta.len() {
            let is_bias = (d * width..(d + 1) * width).contains(&p);
            if is_bias && !bias {
                assert_eq!(grad[p], 0.0);
                continue;
            }
            let h = 1e-6;
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[p] += h;
            down[p] -= h;
            let fd = c * (total(&up, &mut pre) - total(&down, &mut pre)) / (2.0 * h);
            assert!(
                (grad[p] - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                "param {p}: {} vs {fd}",
                grad[p]
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn gradient_matches_finite_differences(width in 1usize..20, d in 1usize..4, bias: bool, seed in 0u64..10_000, c in -2.0f64..2.0, count in 1usize..70) {
            check_gradient(width, d, bias, seed, c, count);
        }
    }

    #[test]
    fn features_are_post_relu_activations() {
        let w = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 0.0, -1.0]).unwrap();
        let net = ReluNet::from_parts(&w, &[0.0, 0.5], &[1.0, 1.0], true).unwrap();
        let x = Array2::from_shape_vec((2, 2), vec![2.0, 1.0, -1.0, -1.0]).unwrap();
        let phi = net.features(&x);
        assert_eq!(
            phi,
            Array2::from_shape_vec((2, 2), vec![2.0, 0.0, 0.0, 1.5]).unwrap()
        );
        assert_eq!(net.predict_rows(&x).to_vec(), vec![2.0, 1.5]);
    }
}
