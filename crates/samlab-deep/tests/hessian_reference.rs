//! Exact Hessian-vector products of [`HessianOperator`] against an independent f64 reference.
//!
//! The reference re-implements the forward pass of samlab's MLP (with and without BatchNorm) and CNN (conv3x3 pad 1,
//! optional norm, ReLU, 2x2 max-pool, twice, then Linear + ReLU and the Linear head) in **hyper-dual numbers**
//! $a + b\,\epsilon_1 + c\,\epsilon_2 + d\,\epsilon_1\epsilon_2$ with $\epsilon_1^2 = \epsilon_2^2 = 0$, in f64.
//! For a twice differentiable $f$, $f(w + \epsilon_1 u + \epsilon_2 v) = f(w) + \epsilon_1 u^\top\nabla f +
//! \epsilon_2 v^\top \nabla f + \epsilon_1\epsilon_2\, u^\top H v$ exactly (no truncation, no cancellation), so one
//! hyper-dual forward pass per coordinate $i$ with $u = e_i$ gives the loss, $g_i$ and $(Hv)_i$ to rounding.
//! ReLU and max-pool decide on the real part: the masks and argmax positions are those at $w$, i.e. this is the
//! Hessian almost everywhere. The loss is the mean over chunks of `m` examples of the chunk's mean cross-entropy,
//! BatchNorm per chunk with batch statistics (biased variance) or the running statistics.
//!
//! The reference is checked against central second differences of its own f64 loss and against samlab's own f32
//! forward and backward pass (same loss and gradient, so the same network, parameter order and layouts); then the
//! operator's loss, gradient and products are compared with it, and Hutchinson's trace with the exact trace.

#![allow(clippy::needless_range_loop)]

use std::ops::{Add, Div, Mul, Neg, Sub};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::spectral::{hutchinson_trace, SymmetricOperator};
use samlab_deep::analysis::hessian::{HessianConfig, HessianOperator};
use samlab_deep::analysis::BnEval;
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, BnMode, NormKind, NORM_EPS};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::trainer::{ce_pass, Batch, TrainState};

const CLASSES: usize = 3;

// ------------------------------------------------------------------------------------------------------------
// Hyper-dual numbers.

/// $a + b\,\epsilon_1 + c\,\epsilon_2 + d\,\epsilon_1\epsilon_2$, $\epsilon_1^2 = \epsilon_2^2 = 0$.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Hd {
    a: f64,
    b: f64,
    c: f64,
    d: f64,
}

impl Hd {
    /// $f(x)$ from $f(a)$, $f'(a)$, $f''(a)$: $f(a) + f'(a)(b\epsilon_1 + c\epsilon_2 + d\epsilon_1\epsilon_2) +
    /// f''(a)\,bc\,\epsilon_1\epsilon_2$.
    fn chain(self, f0: f64, f1: f64, f2: f64) -> Hd {
        Hd {
            a: f0,
            b: f1 * self.b,
            c: f1 * self.c,
            d: f1 * self.d + f2 * self.b * self.c,
        }
    }
}

impl Add for Hd {
    type Output = Hd;
    fn add(self, o: Hd) -> Hd {
        Hd {
            a: self.a + o.a,
            b: self.b + o.b,
            c: self.c + o.c,
            d: self.d + o.d,
        }
    }
}

impl Sub for Hd {
    type Output = Hd;
    fn sub(self, o: Hd) -> Hd {
        Hd {
            a: self.a - o.a,
            b: self.b - o.b,
            c: self.c - o.c,
            d: self.d - o.d,
        }
    }
}

impl Mul for Hd {
    type Output = Hd;
    fn mul(self, o: Hd) -> Hd {
        Hd {
            a: self.a * o.a,
            b: self.a * o.b + self.b * o.a,
            c: self.a * o.c + self.c * o.a,
            d: self.a * o.d + self.b * o.c + self.c * o.b + self.d * o.a,
        }
    }
}

impl Div for Hd {
    type Output = Hd;
    fn div(self, o: Hd) -> Hd {
        let inv = o.a.recip();
        let r = o.chain(inv, -inv * inv, 2.0 * inv * inv * inv);
        let mut q = self * r;
        q.a = self.a / o.a;
        q
    }
}

impl Neg for Hd {
    type Output = Hd;
    fn neg(self) -> Hd {
        Hd {
            a: -self.a,
            b: -self.b,
            c: -self.c,
            d: -self.d,
        }
    }
}

/// What the forward pass needs from its scalars: f64 (for finite differences) or [`Hd`].
trait Num:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    fn cst(x: f64) -> Self;
    fn re(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
}

impl Num for f64 {
    fn cst(x: f64) -> Self {
        x
    }
    fn re(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

impl Num for Hd {
    fn cst(x: f64) -> Self {
        Hd {
            a: x,
            ..Hd::default()
        }
    }
    fn re(self) -> f64 {
        self.a
    }
    fn exp(self) -> Self {
        let e = self.a.exp();
        self.chain(e, e, e)
    }
    fn ln(self) -> Self {
        let inv = self.a.recip();
        self.chain(self.a.ln(), inv, -inv * inv)
    }
    fn sqrt(self) -> Self {
        let s = self.a.sqrt();
        self.chain(s, 0.5 / s, -0.25 / (s * s * s))
    }
}

// ------------------------------------------------------------------------------------------------------------
// The reference network.

/// Mean and variance of one BatchNorm layer.
type LayerStats = (Vec<f64>, Vec<f64>);

/// BatchNorm in the reference.
#[derive(Clone, Debug)]
enum RefBn {
    /// Batch statistics of the chunk (biased variance).
    Batch,
    /// The given running statistics, per BatchNorm layer.
    Running(Vec<LayerStats>),
}

/// samlab's MLP or CNN, written out by hand from models.rs and nn.rs.
#[derive(Clone, Debug)]
struct RefNet {
    arch: Arch,
    width: usize,
    bn: bool,
    input: [usize; 3],
    /// Number of scalars of each parameter tensor, in the network's parameter order.
    lens: Vec<usize>,
}

/// `x W + b` for row-major `x` `[n, din]` and `W` `[din, dout]`.
fn linear<T: Num>(x: &[T], n: usize, w: &[T], b: &[T]) -> Vec<T> {
    let dout = b.len();
    let din = w.len() / dout;
    assert_eq!(x.len(), n * din);
    let mut y = Vec::with_capacity(n * dout);
    for r in 0..n {
        for o in 0..dout {
            let mut acc = b[o];
            for k in 0..din {
                acc = acc + x[r * din + k] * w[k * dout + o];
            }
            y.push(acc);
        }
    }
    y
}

/// 3x3 convolution (cross-correlation), stride 1, zero padding 1: `x` `[n, cin, h, w]`, `W` `[cout, cin, 3, 3]`.
fn conv3x3<T: Num>(
    x: &[T],
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    wt: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    let cout = wt.len() / (cin * 9);
    let mut y = vec![T::cst(0.0); n * cout * h * w];
    for r in 0..n {
        for o in 0..cout {
            for i in 0..h {
                for j in 0..w {
                    let mut acc = bias.map_or(T::cst(0.0), |b| b[o]);
                    for c in 0..cin {
                        for di in 0..3 {
                            let ii = i as isize + di as isize - 1;
                            if ii < 0 || ii >= h as isize {
                                continue;
                            }
                            for dj in 0..3 {
                                let jj = j as isize + dj as isize - 1;
                                if jj < 0 || jj >= w as isize {
                                    continue;
                                }
                                let xv = x[((r * cin + c) * h + ii as usize) * w + jj as usize];
                                acc = acc + xv * wt[((o * cin + c) * 3 + di) * 3 + dj];
                            }
                        }
                    }
                    y[((r * cout + o) * h + i) * w + j] = acc;
                }
            }
        }
    }
    y
}

/// The ReLU and max-pool decisions of a forward pass: taken on the real part at the point evaluated and recorded,
/// or replayed from an earlier pass (masks frozen: the smooth piece of the loss that holds the recorded point).
#[derive(Clone, Debug, Default)]
struct Gates {
    replay: bool,
    log: Vec<u8>,
    at: usize,
}

impl Gates {
    /// Records `fresh()`, or returns the next recorded decision.
    fn decide(&mut self, fresh: impl FnOnce() -> u8) -> u8 {
        if self.replay {
            self.at += 1;
            self.log[self.at - 1]
        } else {
            let g = fresh();
            self.log.push(g);
            g
        }
    }

    /// A replay of these decisions from the start.
    fn frozen(&self) -> Gates {
        Gates {
            replay: true,
            log: self.log.clone(),
            at: 0,
        }
    }
}

/// ReLU in place: on where the real part is > 0 (the derivative at 0 is 0, as in burn's autodiff).
fn relu<T: Num>(x: &mut [T], gates: &mut Gates) {
    for v in x.iter_mut() {
        if gates.decide(|| u8::from(v.re() > 0.0)) == 0 {
            *v = T::cst(0.0);
        }
    }
}

/// 2x2 max-pool, stride 2, on `[n, c, h, w]` (argmax by the real part, the first on ties).
fn max_pool2<T: Num>(x: &[T], nc: usize, h: usize, w: usize, gates: &mut Gates) -> Vec<T> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = Vec::with_capacity(nc * ho * wo);
    for p in 0..nc {
        for i in 0..ho {
            for j in 0..wo {
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(di, dj)| x[(p * h + 2 * i + di) * w + 2 * j + dj]);
                let best = gates.decide(|| {
                    let mut best = 0;
                    for q in 1..4 {
                        if window[q].re() > window[best].re() {
                            best = q;
                        }
                    }
                    best as u8
                });
                y.push(window[best as usize]);
            }
        }
    }
    y
}

/// BatchNorm of `x` `[n, c, s]` (s spatial positions) in place, then ReLU.
fn norm_relu<T: Num>(
    x: &mut [T],
    n: usize,
    c: usize,
    s: usize,
    norm: Option<(&[T], &[T], Option<&LayerStats>)>,
    gates: &mut Gates,
) {
    if let Some((gamma, beta, running)) = norm {
        for ch in 0..c {
            let idx = |r: usize, k: usize| (r * c + ch) * s + k;
            let (mean, inv_std) = match running {
                Some((mean, var)) => (
                    T::cst(mean[ch]),
                    T::cst((var[ch] + NORM_EPS).sqrt().recip()),
                ),
                None => {
                    let count = T::cst((n * s) as f64);
                    let mut sum = T::cst(0.0);
                    for r in 0..n {
                        for k in 0..s {
                            sum = sum + x[idx(r, k)];
                        }
                    }
                    let mean = sum / count;
                    let mut sq = T::cst(0.0);
                    for r in 0..n {
                        for k in 0..s {
                            let dev = x[idx(r, k)] - mean;
                            sq = sq + dev * dev;
                        }
                    }
                    let var = sq / count;
                    (mean, T::cst(1.0) / (var + T::cst(NORM_EPS)).sqrt())
                }
            };
            let scale = inv_std * gamma[ch];
            for r in 0..n {
                for k in 0..s {
                    let i = idx(r, k);
                    x[i] = (x[i] - mean) * scale + beta[ch];
                }
            }
        }
    }
    relu(x, gates);
}

impl RefNet {
    fn new(spec: &ModelSpec, net: &Network) -> Self {
        assert!(matches!(spec.arch, Arch::Mlp | Arch::Cnn));
        assert_ne!(spec.norm, NormKind::Group);
        RefNet {
            arch: spec.arch,
            width: spec.width,
            bn: spec.norm == NormKind::Batch,
            input: spec.input,
            lens: net.params().iter().map(|p| p.numel()).collect(),
        }
    }

    fn dim(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Logits `[n, CLASSES]` of the images `x` (`[n, c, h, w]`) at parameters `p` (one vector per tensor).
    fn logits<T: Num>(
        &self,
        p: &[Vec<T>],
        x: &[f64],
        n: usize,
        bn: &RefBn,
        gates: &mut Gates,
    ) -> Vec<T> {
        let [cin, h, w] = self.input;
        let k = self.width;
        let mut params = p.iter().map(Vec::as_slice);
        let mut next = || params.next().expect("parameter list too short");
        let running = |layer: usize| match bn {
            RefBn::Batch => None,
            RefBn::Running(stats) => Some(&stats[layer]),
        };
        let x: Vec<T> = x.iter().map(|&v| T::cst(v)).collect();
        let out = match self.arch {
            Arch::Mlp => {
                let mut hcur = x;
                for layer in 0..2 {
                    let (wt, b) = (next(), next());
                    hcur = linear(&hcur, n, wt, b);
                    let norm = self.bn.then(|| (next(), next(), running(layer)));
                    norm_relu(&mut hcur, n, k, 1, norm, gates);
                }
                let (wt, b) = (next(), next());
                linear(&hcur, n, wt, b)
            }
            Arch::Cnn => {
                let mut hcur = x;
                let (mut c, mut hh, mut ww) = (cin, h, w);
                for (layer, cout) in [k, 2 * k].into_iter().enumerate() {
                    let wt = next();
                    let bias = (!self.bn).then(&mut next);
                    hcur = conv3x3(&hcur, n, c, hh, ww, wt, bias);
                    let norm = self.bn.then(|| (next(), next(), running(layer)));
                    norm_relu(&mut hcur, n, cout, hh * ww, norm, gates);
                    hcur = max_pool2(&hcur, n * cout, hh, ww, gates);
                    c = cout;
                    hh /= 2;
                    ww /= 2;
                }
                let (wt, b) = (next(), next());
                let mut hcur = linear(&hcur, n, wt, b);
                relu(&mut hcur, gates);
                let (wt, b) = (next(), next());
                linear(&hcur, n, wt, b)
            }
            _ => unreachable!(),
        };
        assert!(params.next().is_none(), "parameters left over");
        out
    }

    /// Mean over chunks of `m` examples of the chunk's mean cross-entropy.
    /// ReLU and max-pool decide as `gates` says (recorded or replayed).
    fn loss<T: Num>(
        &self,
        p: &[Vec<T>],
        x: &[f64],
        y: &[u16],
        m: usize,
        bn: &RefBn,
        gates: &mut Gates,
    ) -> T {
        let d_in: usize = self.input.iter().product();
        let chunks = y.len() / m;
        assert_eq!(chunks * m, y.len());
        let mut total = T::cst(0.0);
        for g in 0..chunks {
            let logits = self.logits(p, &x[g * m * d_in..(g + 1) * m * d_in], m, bn, gates);
            for r in 0..m {
                let row = &logits[r * CLASSES..(r + 1) * CLASSES];
                let max = T::cst(row.iter().map(|v| v.re()).fold(f64::MIN, f64::max));
                let mut sum = T::cst(0.0);
                for &l in row {
                    sum = sum + (l - max).exp();
                }
                total = total + max + sum.ln() - row[y[g * m + r] as usize];
            }
        }
        total / T::cst(y.len() as f64)
    }

    /// Flat parameters -> one vector per tensor.
    fn split<T: Copy>(&self, flat: &[T]) -> Vec<Vec<T>> {
        assert_eq!(flat.len(), self.dim());
        let mut out = Vec::with_capacity(self.lens.len());
        let mut at = 0;
        for &len in &self.lens {
            out.push(flat[at..at + len].to_vec());
            at += len;
        }
        out
    }

    /// The f64 loss at the flat point `w`, ReLU and max-pool as `gates` says.
    fn loss_at(&self, w: &[f64], data: &Data, m: usize, bn: &RefBn, gates: &mut Gates) -> f64 {
        self.loss(&self.split(w), &data.x, &data.y, m, bn, gates)
    }

    /// One hyper-dual pass at $w + \epsilon_1 e_i + \epsilon_2 v$ (with `v = None`: $\epsilon_2 e_i$ too).
    fn pass(
        &self,
        w: &[f64],
        i: usize,
        v: Option<&[f64]>,
        data: &Data,
        m: usize,
        bn: &RefBn,
    ) -> Hd {
        let flat: Vec<Hd> = w
            .iter()
            .enumerate()
            .map(|(j, &a)| Hd {
                a,
                b: if j == i { 1.0 } else { 0.0 },
                c: match v {
                    Some(v) => v[j],
                    None if j == i => 1.0,
                    None => 0.0,
                },
                d: 0.0,
            })
            .collect();
        self.loss(
            &self.split(&flat),
            &data.x,
            &data.y,
            m,
            bn,
            &mut Gates::default(),
        )
    }

    /// The loss, the gradient and $Hv$ at `w`, exactly: one hyper-dual pass per coordinate.
    fn hvp(
        &self,
        w: &[f64],
        v: &[f64],
        data: &Data,
        m: usize,
        bn: &RefBn,
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let outs = par_map(self.dim(), |i| self.pass(w, i, Some(v), data, m, bn));
        let loss = outs[0].a;
        assert!(outs.iter().all(|o| o.a == loss));
        (
            loss,
            outs.iter().map(|o| o.b).collect(),
            outs.iter().map(|o| o.d).collect(),
        )
    }

    /// The diagonal of the Hessian at `w`, exactly.
    fn diagonal(&self, w: &[f64], data: &Data, m: usize, bn: &RefBn) -> Vec<f64> {
        par_map(self.dim(), |i| self.pass(w, i, None, data, m, bn).d)
    }
}

/// `f(0..n)` on all cores, in order.
fn par_map<T: Send, F: Fn(usize) -> T + Sync>(n: usize, f: F) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || (t * per..((t + 1) * per).min(n)).map(f).collect::<Vec<T>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

// ------------------------------------------------------------------------------------------------------------
// Cases: networks, weights, data.

fn device() -> Device {
    Device::default()
}

/// Images `[n, 1, side, side]` with values in [0, 1) and labels, as f32 (what samlab sees) and f64.
struct Data {
    images: Vec<f32>,
    labels: Vec<u16>,
    x: Vec<f64>,
    y: Vec<u16>,
    shape: [usize; 3],
}

impl Data {
    fn new(n: usize, shape: [usize; 3], key: u64) -> Self {
        let mut s = Stream::new(99, Purpose::Augment, key, 0);
        let d: usize = shape.iter().product();
        let images: Vec<f32> = (0..n * d).map(|_| s.uniform() as f32).collect();
        let labels: Vec<u16> = (0..n).map(|_| s.below(CLASSES) as u16).collect();
        Data {
            x: images.iter().map(|&v| f64::from(v)).collect(),
            y: labels.clone(),
            images,
            labels,
            shape,
        }
    }

    fn batch(&self, dev: &Device) -> Batch {
        Batch::new(
            self.images.clone(),
            self.labels.clone(),
            self.shape,
            CLASSES,
            dev,
        )
    }
}

fn host(t: &Tensor<1>) -> Vec<f64> {
    t.to_data()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn tensor(v: &[f32], dev: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), dev)
}

/// Which BatchNorm statistics the loss uses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stats {
    Batch,
    /// Non-trivial running statistics written into `state.bn`.
    Running,
}

/// A network at jittered weights, its examples and the loss's chunking.
struct Case {
    name: &'static str,
    net: Network,
    reference: RefNet,
    state: TrainState,
    /// `state.params` in f64, flat.
    w: Vec<f64>,
    data: Data,
    m: usize,
    stats: Stats,
    ref_bn: RefBn,
}

impl Case {
    /// `arch` at width `width` on `n` examples of `input`, chunks of `m`. Parameters: samlab's init plus Gaussian
    /// noise (0.05; 0.3 on norm scales and shifts), so that biases are not 0, norm parameters not 1/0, and ReLU
    /// inputs are away from the kink at exactly 0 that zero biases create.
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &'static str,
        arch: Arch,
        width: usize,
        norm: NormKind,
        input: [usize; 3],
        n: usize,
        m: usize,
        stats: Stats,
    ) -> Self {
        let dev = device();
        let spec = ModelSpec {
            arch,
            width,
            norm,
            input,
            classes: CLASSES,
            transformer: None,
        };
        let net = Network::new(&spec).unwrap();
        let mut s = Stream::new(5, Purpose::Init, 55, 0);
        let params: Vec<Tensor<1>> = init_params(net.params(), 3, &dev)
            .iter()
            .zip(net.params())
            .map(|(t, p)| {
                let sd = if p.name.starts_with("norm") {
                    0.3
                } else {
                    0.05
                };
                let v: Vec<f32> = host(t)
                    .iter()
                    .map(|x| (x + sd * s.normal()) as f32)
                    .collect();
                tensor(&v, &dev)
            })
            .collect();
        let mut state = TrainState::new(&net, params, &dev);
        let ref_bn = match stats {
            Stats::Batch => RefBn::Batch,
            Stats::Running => {
                let mut layers = Vec::new();
                for (slot, &c) in net.bn_channels().iter().enumerate() {
                    let mean: Vec<f32> = (0..c).map(|_| (0.3 * s.normal()) as f32).collect();
                    let var: Vec<f32> = (0..c).map(|_| (0.3 + s.uniform()) as f32).collect();
                    state.bn.mean[slot] = tensor(&mean, &dev);
                    state.bn.var[slot] = tensor(&var, &dev);
                    layers.push((
                        mean.into_iter().map(f64::from).collect(),
                        var.into_iter().map(f64::from).collect(),
                    ));
                }
                assert!(!layers.is_empty());
                RefBn::Running(layers)
            }
        };
        let w: Vec<f64> = state.params.iter().flat_map(host).collect();
        let reference = RefNet::new(&spec, &net);
        assert_eq!(reference.dim(), net.num_params());
        Case {
            name,
            data: Data::new(n, input, 7),
            net,
            reference,
            state,
            w,
            m,
            stats,
            ref_bn,
        }
    }

    fn mlp_plain() -> Self {
        Case::new(
            "mlp",
            Arch::Mlp,
            4,
            NormKind::None,
            [1, 6, 6],
            12,
            6,
            Stats::Batch,
        )
    }
    fn mlp_bn() -> Self {
        Case::new(
            "mlp+bn",
            Arch::Mlp,
            4,
            NormKind::Batch,
            [1, 6, 6],
            16,
            8,
            Stats::Batch,
        )
    }
    fn mlp_bn_running() -> Self {
        Case::new(
            "mlp+bn running",
            Arch::Mlp,
            4,
            NormKind::Batch,
            [1, 6, 6],
            16,
            8,
            Stats::Running,
        )
    }
    fn cnn_bn() -> Self {
        Case::new(
            "cnn+bn",
            Arch::Cnn,
            2,
            NormKind::Batch,
            [1, 8, 8],
            16,
            8,
            Stats::Batch,
        )
    }
    fn cnn_plain() -> Self {
        Case::new(
            "cnn",
            Arch::Cnn,
            2,
            NormKind::None,
            [1, 8, 8],
            8,
            8,
            Stats::Batch,
        )
    }

    fn all() -> Vec<Case> {
        vec![
            Case::mlp_plain(),
            Case::mlp_bn(),
            Case::mlp_bn_running(),
            Case::cnn_bn(),
            Case::cnn_plain(),
        ]
    }

    /// A seeded unit vector in parameter space.
    fn direction(&self, key: u64) -> Vec<f64> {
        let mut s = Stream::new(17, Purpose::Analysis, key, 0);
        let v: Vec<f64> = (0..self.w.len()).map(|_| s.normal()).collect();
        let n = norm(&v);
        v.iter().map(|x| x / n).collect()
    }

    fn ref_loss(&self, w: &[f64], gates: &mut Gates) -> f64 {
        self.reference
            .loss_at(w, &self.data, self.m, &self.ref_bn, gates)
    }

    fn ref_hvp(&self, v: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        self.reference
            .hvp(&self.w, v, &self.data, self.m, &self.ref_bn)
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// $\lVert a - b\rVert / \lVert b\rVert$.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(b)
}

// ------------------------------------------------------------------------------------------------------------
// The reference checks itself.

/// Hyper-dual first and second derivatives against central differences of the reference's own f64 loss, with
/// the ReLU masks and max-pool selections recorded at $w$ (the smooth piece of the loss that holds $w$; the CNN's
/// BatchNorm-centred ReLU inputs come within $10^{-4}$ of their kinks, so free decisions would cross some):
/// $g_i \approx (L(w + he_i) - L(w - he_i))/2h$ and $e_i^\top H v \approx (L(w + he_i + hv) - L(w + he_i - hv) -
/// L(w - he_i + hv) + L(w - he_i - hv))/4h^2$, whose errors are $O(h^2)$ plus rounding $O(u/h^2)$.
#[test]
fn reference_derivatives_match_central_differences_of_its_own_loss() {
    let h = 1e-4;
    for case in Case::all() {
        let v = case.direction(1);
        let (loss, grad, hv) = case.ref_hvp(&v);
        let mut at_w = Gates::default();
        let f64_loss = case.ref_loss(&case.w, &mut at_w);
        assert!(
            (loss - f64_loss).abs() <= 1e-14 * loss,
            "{}: {loss} vs {f64_loss}",
            case.name
        );
        let shifted = |i: usize, si: f64, sv: f64| {
            let mut p: Vec<f64> = case.w.iter().zip(&v).map(|(w, d)| w + sv * h * d).collect();
            p[i] += si * h;
            case.ref_loss(&p, &mut at_w.frozen())
        };
        let fd = par_map(case.w.len(), |i| {
            let g = (shifted(i, 1.0, 0.0) - shifted(i, -1.0, 0.0)) / (2.0 * h);
            let hv = (shifted(i, 1.0, 1.0) - shifted(i, 1.0, -1.0) - shifted(i, -1.0, 1.0)
                + shifted(i, -1.0, -1.0))
                / (4.0 * h * h);
            (g, hv)
        });
        let fd_g: Vec<f64> = fd.iter().map(|x| x.0).collect();
        let fd_hv: Vec<f64> = fd.iter().map(|x| x.1).collect();
        let (eg, ehv) = (rel(&fd_g, &grad), rel(&fd_hv, &hv));
        println!(
            "{}: finite differences vs hyper-dual: gradient {eg:.2e}, Hv {ehv:.2e}",
            case.name
        );
        assert!(eg < 1e-7, "{}: gradient {eg:e}", case.name);
        assert!(ehv < 1e-5, "{}: Hv {ehv:e}", case.name);
    }
}

/// The diagonal passes ($\epsilon_1 = \epsilon_2 = e_i$) against the $v$ passes with $v = e_j$.
#[test]
fn reference_diagonal_matches_unit_vector_products() {
    let case = Case::cnn_bn();
    let diag = case
        .reference
        .diagonal(&case.w, &case.data, case.m, &case.ref_bn);
    for j in [0, 7, 20, case.w.len() - 1] {
        let mut e = vec![0.0; case.w.len()];
        e[j] = 1.0;
        let (_, _, col) = case.ref_hvp(&e);
        assert!(
            (col[j] - diag[j]).abs() <= 1e-12 * diag[j].abs().max(1e-6),
            "{j}: {} vs {}",
            col[j],
            diag[j]
        );
    }
}

/// The reference is samlab's network: its loss and gradient match samlab's own f32 forward and backward pass
/// (`trainer::ce_pass`, chunk by chunk) to f32 accuracy. A wrong layout, parameter order or BatchNorm convention
/// would be off by far more.
#[test]
fn reference_matches_samlab_f32_forward_and_backward() {
    let dev = device();
    for case in Case::all() {
        let v = case.direction(2);
        let (loss, grad, _) = case.ref_hvp(&v);
        let batch = case.data.batch(&dev);
        let chunks = case.data.labels.len() / case.m;
        let mode = match case.stats {
            Stats::Batch => BnMode::Batch { update: false },
            Stats::Running => BnMode::Running,
        };
        let mut f32_loss = 0.0;
        let mut f32_grad = vec![0.0; case.w.len()];
        for g in 0..chunks {
            let pass = ce_pass(
                &case.net,
                &case.state.params,
                &batch.slice(g * case.m, case.m),
                mode,
                &mut case.state.bn.clone(),
            );
            f32_loss += pass.loss.into_scalar::<f32>() as f64 / chunks as f64;
            let flat: Vec<f64> = pass.grads.iter().flat_map(host).collect();
            f32_grad
                .iter_mut()
                .zip(flat)
                .for_each(|(a, b)| *a += b / chunks as f64);
        }
        let (el, eg) = ((f32_loss - loss).abs() / loss, rel(&f32_grad, &grad));
        println!(
            "{}: samlab f32 vs reference: loss {el:.2e}, gradient {eg:.2e}",
            case.name
        );
        assert!(el < 1e-5, "{}: loss {f32_loss} vs {loss}", case.name);
        assert!(eg < 1e-4, "{}: gradient {eg:e}", case.name);
    }
}

// ------------------------------------------------------------------------------------------------------------
// The operator against the reference.

impl Case {
    fn bn_eval(&self) -> BnEval {
        match self.stats {
            Stats::Batch => BnEval::Batch,
            Stats::Running => BnEval::Running,
        }
    }

    /// The operator at the case's weights with finite-difference step `eps_rel`.
    fn operator(&self, eps_rel: f64) -> HessianOperator<'_> {
        let batch = self.data.batch(&device());
        HessianOperator::new(
            &self.net,
            &self.state,
            &batch,
            self.m,
            self.bn_eval(),
            eps_rel,
        )
        .unwrap()
    }

    /// Sets the flat parameter `i` to `value` (f32) in the state and in `w`.
    fn set(&mut self, i: usize, value: f32) {
        let mut at = 0;
        for t in self.state.params.iter_mut() {
            let n = t.dims()[0];
            if (at..at + n).contains(&i) {
                let mut v: Vec<f32> = t.to_data().try_into_vec::<f32>().unwrap();
                v[i - at] = value;
                *t = tensor(&v, &device());
            }
            at += n;
        }
        self.w[i] = f64::from(value);
    }
}

/// The default finite-difference step of `samlab hessian`.
fn default_eps_rel() -> f64 {
    HessianConfig::default().eps_rel
}

/// `op.loss()`, `op.gradient()` and `op.apply(v)` for three directions of different lengths against the
/// hyper-dual reference; returns the largest relative errors (loss, gradient, Hv).
fn check_products(case: &Case) -> (f64, f64, f64) {
    let started = Instant::now();
    let op = case.operator(default_eps_rel());
    assert_eq!(op.dim(), case.w.len(), "{}", case.name);
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (key, length) in [(10u64, 1.0), (11, 0.01), (12, 25.0)] {
        let v: Vec<f64> = case.direction(key).iter().map(|x| x * length).collect();
        let (loss, grad, hv) = case.ref_hvp(&v);
        let el = (op.loss() - loss).abs() / loss.abs();
        let eg = rel(op.gradient(), &grad);
        let ehv = rel(&op.apply(&v), &hv);
        worst = (worst.0.max(el), worst.1.max(eg), worst.2.max(ehv));
    }
    println!(
        "{} ({} parameters): operator vs hyper-dual: loss {:.2e}, gradient {:.2e}, Hv {:.2e} ({:.2} s)",
        case.name,
        case.w.len(),
        worst.0,
        worst.1,
        worst.2,
        started.elapsed().as_secs_f64()
    );
    assert!(worst.0 < 1e-9, "{}: loss {:e}", case.name, worst.0);
    assert!(worst.1 < 1e-9, "{}: gradient {:e}", case.name, worst.1);
    assert!(worst.2 < 1e-6, "{}: Hv {:e}", case.name, worst.2);
    worst
}

#[test]
fn products_are_exact_on_the_mlp_without_norm() {
    check_products(&Case::mlp_plain());
}

#[test]
fn products_are_exact_on_the_mlp_with_batchnorm_in_two_chunks() {
    check_products(&Case::mlp_bn());
}

#[test]
fn products_are_exact_on_the_mlp_with_running_statistics() {
    check_products(&Case::mlp_bn_running());
}

#[test]
fn products_are_exact_on_the_cnn_with_batchnorm() {
    check_products(&Case::cnn_bn());
}

#[test]
fn products_are_exact_on_the_cnn_without_norm() {
    check_products(&Case::cnn_plain());
}

/// $u^\top(Hv) = v^\top(Hu)$ for the operator's own products.
#[test]
fn products_are_symmetric() {
    for case in Case::all() {
        let op = case.operator(default_eps_rel());
        let (u, v) = (case.direction(20), case.direction(21));
        let (uhv, vhu) = (dot(&u, &op.apply(&v)), dot(&v, &op.apply(&u)));
        let err = (uhv - vhu).abs() / uhv.abs().max(vhu.abs());
        println!(
            "{}: u^T H v = {uhv:.6e}, v^T H u = {vhu:.6e}, relative difference {err:.2e}",
            case.name
        );
        assert!(err < 1e-8, "{}: {uhv} vs {vhu}", case.name);
    }
}

/// Hutchinson's estimate with 200 Rademacher probes against the exact trace $\sum_i e_i^\top H e_i$: within three
/// standard errors, and the standard error itself against the exact one, $\sqrt{2(\lVert H\rVert_F^2 - \sum_i
/// H_{ii}^2)/N}$ (the variance of $z^\top H z$ for Rademacher $z$), from the full reference Hessian.
#[test]
fn hutchinson_trace_agrees_with_the_exact_trace() {
    for (case, full) in [(Case::mlp_bn(), true), (Case::cnn_bn(), false)] {
        let started = Instant::now();
        let op = case.operator(default_eps_rel());
        let diag = case
            .reference
            .diagonal(&case.w, &case.data, case.m, &case.ref_bn);
        let exact: f64 = diag.iter().sum();
        let est = hutchinson_trace(&op, 200, 0).unwrap();
        assert_eq!((est.probes, est.samples.len()), (200, 200));
        let mean = est.samples.iter().sum::<f64>() / 200.0;
        assert!((mean - est.estimate).abs() <= 1e-12 * mean.abs());
        let z = (est.estimate - exact) / est.std_error;
        println!(
            "{}: trace exact {exact:.6}, Hutchinson {:.6} +- {:.6} ({z:+.2} standard errors)",
            case.name, est.estimate, est.std_error
        );
        assert!(
            est.std_error > 0.0 && est.std_error.is_finite(),
            "{}",
            case.name
        );
        assert!(z.abs() <= 3.0, "{}: {z} standard errors off", case.name);
        if full {
            let n = case.w.len();
            let frob2: f64 = par_map(n, |j| {
                let mut e = vec![0.0; n];
                e[j] = 1.0;
                (0..n)
                    .map(|i| {
                        let r = &case.reference;
                        r.pass(&case.w, i, Some(&e), &case.data, case.m, &case.ref_bn)
                            .d
                            .powi(2)
                    })
                    .sum::<f64>()
            })
            .iter()
            .sum();
            let sd = (2.0 * (frob2 - diag.iter().map(|x| x * x).sum::<f64>()) / 200.0).sqrt();
            let ratio = est.std_error / sd;
            println!(
                "{}: standard error {:.6}, exact {sd:.6} (ratio {ratio:.3})",
                case.name, est.std_error
            );
            assert!(
                (ratio - 1.0).abs() < 0.3,
                "{}: standard error {} vs exact {sd}",
                case.name,
                est.std_error
            );
        }
        println!("{}: {:.2} s", case.name, started.elapsed().as_secs_f64());
    }
}

/// Why the masks are frozen. One first-layer ReLU input of the MLP is put 1e-4 from its kink, and $v$ is the unit
/// vector along that unit's bias: a central difference of gradients with step 4e-4 crosses the kink, and its
/// quotient $(g(w + \varepsilon v) - g(w - \varepsilon v))/2\varepsilon$ measures the gradient's jump over
/// $2\varepsilon$, not the Hessian, in f64 (the reference's own gradients) as in f32 (samlab's `ce_pass`, the
/// method of the earlier `samlab hessian`). The operator with the same step replays the masks recorded at $w$ and
/// stays exact.
#[test]
fn frozen_masks_keep_products_exact_where_plain_differences_cross_a_kink() {
    let mut case = Case::mlp_plain();
    let (din, k) = (36, 4);
    let n = case.data.y.len();
    let x = case.data.x.clone();
    let pre = |w: &[f64], r: usize, j: usize| {
        w[din * k + j] + (0..din).map(|i| x[r * din + i] * w[i * k + j]).sum::<f64>()
    };
    let (r, j) = (0..n)
        .flat_map(|r| (0..k).map(move |j| (r, j)))
        .min_by(|a, b| {
            pre(&case.w, a.0, a.1)
                .abs()
                .total_cmp(&pre(&case.w, b.0, b.1).abs())
        })
        .unwrap();
    let bias = din * k + j;
    let margin = 1e-4;
    let moved = (case.w[bias] - pre(&case.w, r, j) + margin) as f32;
    case.set(bias, moved);
    let z = pre(&case.w, r, j);
    assert!(z > 0.0 && z < 2.0 * margin, "{z}");
    let eps = 4.0 * margin;
    let mut v = vec![0.0; case.w.len()];
    v[bias] = 1.0;
    let (_, _, exact) = case.ref_hvp(&v);

    let w_norm = norm(&case.w);
    let op = case.operator(eps / w_norm.max(1.0));
    assert!((op.eps() - eps).abs() < 1e-12);
    let e_op = rel(&op.apply(&v), &exact);

    let shifted = |s: f64| -> Vec<f64> {
        let mut p = case.w.clone();
        p[bias] += s * eps;
        p
    };
    let ref_grad = |s: f64| {
        case.reference
            .hvp(&shifted(s), &v, &case.data, case.m, &case.ref_bn)
            .1
    };
    let plain64: Vec<f64> = ref_grad(1.0)
        .iter()
        .zip(ref_grad(-1.0))
        .map(|(p, m)| (p - m) / (2.0 * eps))
        .collect();
    let e64 = rel(&plain64, &exact);

    let dev = device();
    let batch = case.data.batch(&dev);
    let f32_grad = |s: f64| -> Vec<f64> {
        let point: Vec<Tensor<1>> = case
            .reference
            .split(&shifted(s))
            .iter()
            .map(|t| tensor(&t.iter().map(|&x| x as f32).collect::<Vec<f32>>(), &dev))
            .collect();
        let chunks = n / case.m;
        let mut g = vec![0.0; case.w.len()];
        for c in 0..chunks {
            let chunk = batch.slice(c * case.m, case.m);
            let pass = ce_pass(
                &case.net,
                &point,
                &chunk,
                BnMode::Batch { update: false },
                &mut case.state.bn.clone(),
            );
            let flat: Vec<f64> = pass.grads.iter().flat_map(host).collect();
            g.iter_mut()
                .zip(flat)
                .for_each(|(a, b)| *a += b / chunks as f64);
        }
        g
    };
    let plain32: Vec<f64> = f32_grad(1.0)
        .iter()
        .zip(f32_grad(-1.0))
        .map(|(p, m)| (p - m) / (2.0 * eps))
        .collect();
    let e32 = rel(&plain32, &exact);
    println!(
        "kink at {z:.1e}, step {eps:.1e}: relative error of Hv: operator {e_op:.2e}, plain f64 difference {e64:.2e}, \
         plain f32 difference {e32:.2e}"
    );
    assert!(e_op < 1e-5, "operator {e_op:e}");
    assert!(e64 > 0.1, "plain f64 {e64:e}");
    assert!(e32 > 0.1, "plain f32 {e32:e}");
}
