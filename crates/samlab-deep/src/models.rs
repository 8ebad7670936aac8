//! The paper's architectures (SPEC section 1.3, the authors' `models.py`) plus a small CNN and an MLP.
//!
//! | `arch` | network | `width` (default) |
//! |---|---|---|
//! | `mlp` | flatten, two hidden layers (Linear, optional BatchNorm, ReLU), Linear | hidden units (256) |
//! | `cnn` | conv3x3(w)+norm+ReLU+maxpool2, conv3x3(2w)+norm+ReLU+maxpool2, Linear(4w)+ReLU, Linear | base channels (16) |
//! | `preact_resnet18` / `preact_resnet34` | PreAct ResNet, blocks `[2, 2, 2, 2]` / `[3, 4, 6, 3]`, BN or GN | base channels (64) |
//! | `resnet34` | post-activation ResNet-34 (BasicBlock, conv1x1+norm shortcut) | base channels (64) |
//! | `wrn28` | WideResNet-28-k, pre-activation blocks, no dropout | widen factor k (10) |
//! | `vit` | ViT: patch embedding, pre-LayerNorm attention blocks, class token or mean pooling ([`crate::transformer`]) | features per token (64) |
//! | `mixer` | MLP-Mixer: patch embedding, token- and channel-mixing MLP blocks, mean pooling | features per token (64) |
//!
//! GroupNorm uses `width / 2` groups in the ResNets (32 at width 64, as in the authors' code), 8 in WRN and
//! `width / 2` in the CNN. Convolutions have no bias when followed by a normalization. Initialization: conv
//! weights He-normal (fan-out), norm scales 1 and shifts 0, Linear biases 0 and weights $U(\pm 1/\sqrt{\text{fan\_in}})$;
//! the transformers' class token and position embeddings $\mathcal N(0, 0.02^2)$. The transformers' depth, patch,
//! heads, MLP ratio and pooling are [`TransformerSpec`] (LayerNorm is their only normalization).

use burn::tensor::Tensor;
use samlab_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::nn::{
    global_avg_pool, norm_relu, BnSlot, Builder, Conv2d, Ctx, Linear, Norm, NormKind, ParamSpec,
};
use crate::transformer::{Pool, Transformer, TransformerSpec};

/// The architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Two-hidden-layer perceptron.
    Mlp,
    /// Two conv layers and two linear layers.
    Cnn,
    /// Pre-activation ResNet-18 (the paper's `resnet18` / `resnet18_gn`).
    PreactResnet18,
    /// Pre-activation ResNet-34 (`resnet34preact` / `resnet34_gn`).
    PreactResnet34,
    /// Post-activation ResNet-34 (`resnet34`).
    Resnet34,
    /// WideResNet-28-k (`wrn28`).
    Wrn28,
    /// Vision transformer.
    Vit,
    /// MLP-Mixer.
    Mixer,
}

impl Arch {
    /// Every architecture with its command-line name.
    pub const ALL: [(&'static str, Arch); 8] = [
        ("mlp", Arch::Mlp),
        ("cnn", Arch::Cnn),
        ("preact_resnet18", Arch::PreactResnet18),
        ("preact_resnet34", Arch::PreactResnet34),
        ("resnet34", Arch::Resnet34),
        ("wrn28", Arch::Wrn28),
        ("vit", Arch::Vit),
        ("mixer", Arch::Mixer),
    ];

    /// Parses a command-line name (also accepts the authors' `resnet18`, `resnet18_gn`, `resnet34_gn`).
    pub fn parse(name: &str) -> Result<(Arch, Option<NormKind>), ConfigError> {
        let found = match name {
            "resnet18" => Some((Arch::PreactResnet18, Some(NormKind::Batch))),
            "resnet18_gn" => Some((Arch::PreactResnet18, Some(NormKind::Group))),
            "resnet34_gn" => Some((Arch::PreactResnet34, Some(NormKind::Group))),
            _ => Self::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, a)| (a, None)),
        };
        found.ok_or_else(|| ConfigError::Invalid {
            field: "model",
            reason: format!(
                "unknown model {name:?}; expected one of {}, resnet18, resnet18_gn, resnet34_gn",
                Self::ALL.map(|(n, _)| n).join(", ")
            ),
        })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).unwrap().0
    }

    /// Default width.
    pub fn default_width(self) -> usize {
        match self {
            Arch::Mlp => 256,
            Arch::Cnn => 16,
            Arch::Wrn28 => 10,
            _ => 64,
        }
    }

    /// Default normalization.
    pub fn default_norm(self) -> NormKind {
        match self {
            Arch::Mlp => NormKind::None,
            Arch::Vit | Arch::Mixer => NormKind::Layer,
            _ => NormKind::Batch,
        }
    }

    /// Whether it is a ViT or a Mixer (which take a [`TransformerSpec`]).
    pub fn is_transformer(self) -> bool {
        matches!(self, Arch::Vit | Arch::Mixer)
    }

    /// The default [`TransformerSpec`] of a ViT (class token) or Mixer (mean pooling); `None` for the others.
    pub fn default_transformer(self) -> Option<TransformerSpec> {
        let spec = TransformerSpec::default();
        match self {
            Arch::Vit => Some(spec),
            Arch::Mixer => Some(TransformerSpec {
                pool: Pool::Mean,
                ..spec
            }),
            _ => None,
        }
    }
}

/// A fully specified network: architecture, width, normalization, input shape and number of classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Architecture.
    pub arch: Arch,
    /// Width (see the module table).
    pub width: usize,
    /// Normalization layers.
    pub norm: NormKind,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Depth, patch, heads, MLP ratio and pooling of a ViT or Mixer (their defaults when absent); `None` for the
    /// other architectures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TransformerSpec>,
}

#[derive(Clone, Debug)]
struct PreActBlock {
    norm1: Option<Norm>,
    conv1: Conv2d,
    norm2: Option<Norm>,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl PreActBlock {
    fn forward(&self, ctx: &mut Ctx, x: Tensor<4>) -> Tensor<4> {
        let out = norm_relu(&self.norm1, ctx, x.clone());
        // The projection shortcut sees the pre-activated input, the identity shortcut the raw one.
        let shortcut = match &self.shortcut {
            Some(conv) => conv.forward(ctx, out.clone()),
            None => x,
        };
        let out = self.conv1.forward(ctx, out);
        let out = norm_relu(&self.norm2, ctx, out);
        self.conv2.forward(ctx, out) + shortcut
    }
}

#[derive(Clone, Debug)]
struct PostActBlock {
    conv1: Conv2d,
    norm1: Option<Norm>,
    conv2: Conv2d,
    norm2: Option<Norm>,
    shortcut: Option<(Conv2d, Option<Norm>)>,
}

impl PostActBlock {
    fn forward(&self, ctx: &mut Ctx, x: Tensor<4>) -> Tensor<4> {
        let out = self.conv1.forward(ctx, x.clone());
        let out = norm_relu(&self.norm1, ctx, out);
        let mut out = self.conv2.forward(ctx, out);
        if let Some(n) = &self.norm2 {
            out = n.forward(ctx, out);
        }
        let shortcut = match &self.shortcut {
            Some((conv, norm)) => {
                let s = conv.forward(ctx, x);
                match norm {
                    Some(n) => n.forward(ctx, s),
                    None => s,
                }
            }
            None => x,
        };
        ctx.relu(out + shortcut)
    }
}

#[derive(Clone, Debug)]
enum Body {
    Mlp {
        layers: Vec<(Linear, Option<Norm>)>,
        head: Linear,
    },
    Cnn {
        conv1: Conv2d,
        norm1: Option<Norm>,
        conv2: Conv2d,
        norm2: Option<Norm>,
        fc: Linear,
        head: Linear,
    },
    PreAct {
        stem: Conv2d,
        blocks: Vec<PreActBlock>,
        norm: Option<Norm>,
        head: Linear,
    },
    PostAct {
        stem: Conv2d,
        norm: Option<Norm>,
        blocks: Vec<PostActBlock>,
        head: Linear,
    },
    Transformer {
        body: Transformer,
        head: Linear,
    },
}

/// A network built from a [`ModelSpec`]: its parameter list and its forward pass.
#[derive(Clone, Debug)]
pub struct Network {
    spec: ModelSpec,
    body: Body,
    params: Vec<ParamSpec>,
    bn_channels: Vec<usize>,
    bn_slots: Vec<BnSlot>,
    norm_params: Vec<usize>,
}

/// A 3x3 convolution without bias, padding 1 (the ResNets' convolutions are followed by a normalization).
fn conv3x3(b: &mut Builder, name: &str, cin: usize, cout: usize, stride: usize) -> Conv2d {
    Conv2d::new(b, name, cin, cout, 3, stride, 1, false)
}

/// A 1x1 convolution without bias: the projection shortcut of a residual block.
fn conv1x1(b: &mut Builder, name: &str, cin: usize, cout: usize, stride: usize) -> Conv2d {
    Conv2d::new(b, name, cin, cout, 1, stride, 0, false)
}

/// The residual blocks of a ResNet, in order: `(name, input channels, output channels, stride)` for every block
/// of `stages` (`(channels, blocks, stride of the stage's first block)`), starting from `cin` channels.
fn residual_blocks(
    mut cin: usize,
    stages: &[(usize, usize, usize)],
) -> Vec<(String, usize, usize, usize)> {
    let mut blocks = Vec::new();
    for (s, &(planes, count, stride)) in stages.iter().enumerate() {
        for j in 0..count {
            let stride = if j == 0 { stride } else { 1 };
            blocks.push((format!("layer{}.{j}", s + 1), cin, planes, stride));
            cin = planes;
        }
    }
    blocks
}

/// The widest network accepted (the paper's widest, WRN-28-10, has width 10; ResNets default to 64).
pub const MAX_WIDTH: usize = 1 << 16;

/// Most parameters a network may have: 2^31 (8 GiB per copy of the weights in f32; training holds several).
pub const MAX_PARAMS: usize = 1 << 31;

fn bad(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

/// `spec` if it describes a ViT or Mixer of width `d` on `[h, w]` images: a patch that divides both sides, heads
/// that divide the width (ViT), depth and MLP ratio at least 1, and no class token on a Mixer.
fn check_transformer(
    arch: Arch,
    spec: &TransformerSpec,
    d: usize,
    [h, w]: [usize; 2],
) -> Result<TransformerSpec, ConfigError> {
    let p = spec.patch;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(bad(
            "patch",
            format!("the patch size {p} must divide the image's {h}x{w}"),
        ));
    }
    if arch == Arch::Vit && (spec.heads == 0 || !d.is_multiple_of(spec.heads)) {
        return Err(bad(
            "heads",
            format!("{} heads must divide the width {d}", spec.heads),
        ));
    }
    if spec.depth == 0 || spec.mlp_ratio == 0 {
        return Err(bad(
            "transformer",
            format!("needs depth >= 1 and mlp_ratio >= 1, got {spec:?}"),
        ));
    }
    if arch == Arch::Mixer && spec.pool == Pool::Cls {
        return Err(bad(
            "pool",
            "the Mixer pools by the mean only (pool = \"mean\")".into(),
        ));
    }
    Ok(*spec)
}

impl Network {
    /// Builds the network, checking that the width, normalization and input fit the architecture.
    pub fn new(spec: &ModelSpec) -> Result<Self, ConfigError> {
        let [c_in, h, w] = spec.input;
        if spec.width == 0 || spec.classes < 2 || c_in == 0 || h == 0 || w == 0 {
            return Err(bad(
                "model",
                format!("needs width >= 1, classes >= 2 and a non-empty input, got {spec:?}"),
            ));
        }
        if spec.width > MAX_WIDTH {
            return Err(bad(
                "width",
                format!("must be at most {MAX_WIDTH}, got {}", spec.width),
            ));
        }
        // The input's size is multiplied with overflow checks: a checkpoint's metadata may claim any shape.
        let pixels = c_in
            .checked_mul(h)
            .and_then(|n| n.checked_mul(w))
            .filter(|&n| n <= MAX_PARAMS)
            .ok_or_else(|| {
                bad(
                    "model",
                    format!("inputs of {c_in}x{h}x{w} values are more than {MAX_PARAMS}"),
                )
            })?;
        let arch = spec.arch;
        let k = spec.width;
        let norm = spec.norm;
        let groups = match arch {
            Arch::Wrn28 => 8,
            _ => (k / 2).max(1),
        };
        if norm == NormKind::Group && arch == Arch::Mlp {
            return Err(bad(
                "norm",
                "the MLP takes batch norm or none, not group norm".into(),
            ));
        }
        if norm == NormKind::None
            && matches!(
                arch,
                Arch::PreactResnet18 | Arch::PreactResnet34 | Arch::Resnet34 | Arch::Wrn28
            )
        {
            return Err(bad(
                "norm",
                format!("{} needs batch or group norm", arch.name()),
            ));
        }
        if norm == NormKind::Group && arch != Arch::Wrn28 && !k.is_multiple_of(2) {
            return Err(bad(
                "width",
                format!("group norm uses width/2 groups, so the width must be even, got {k}"),
            ));
        }
        if (norm == NormKind::Layer) != arch.is_transformer() {
            return Err(bad(
                "norm",
                format!(
                    "{} takes {}, not {norm:?}",
                    arch.name(),
                    if arch.is_transformer() {
                        "layer norm only"
                    } else {
                        "no layer norm"
                    }
                ),
            ));
        }
        let tf = match (
            spec.transformer.or(arch.default_transformer()),
            arch.is_transformer(),
        ) {
            (Some(t), true) => check_transformer(arch, &t, k, [h, w])?,
            (None, _) => TransformerSpec::default(),
            (Some(_), false) => {
                return Err(bad(
                    "transformer",
                    format!("applies to vit and mixer, not {}", arch.name()),
                ))
            }
        };
        if matches!(arch, Arch::Cnn) && (h < 4 || w < 4) {
            return Err(bad(
                "model",
                format!("cnn needs inputs of at least 4x4, got {h}x{w}"),
            ));
        }
        let mut b = Builder::default();
        let conv_bias = norm == NormKind::None;
        let body = match arch {
            Arch::Vit | Arch::Mixer => {
                let body = Transformer::new(&mut b, arch == Arch::Mixer, &tf, k, spec.input);
                let head = Linear::new(&mut b, "head", k, spec.classes);
                Body::Transformer { body, head }
            }
            Arch::Mlp => {
                let mut layers = Vec::new();
                let mut din = pixels;
                for i in 0..2 {
                    let lin = Linear::new(&mut b, &format!("fc{}", i + 1), din, k);
                    let n = Norm::new(&mut b, &format!("norm{}", i + 1), norm, k, groups);
                    layers.push((lin, n));
                    din = k;
                }
                let head = Linear::new(&mut b, "head", k, spec.classes);
                Body::Mlp { layers, head }
            }
            Arch::Cnn => {
                let conv1 = Conv2d::new(&mut b, "conv1", c_in, k, 3, 1, 1, conv_bias);
                let norm1 = Norm::new(&mut b, "norm1", norm, k, groups);
                let conv2 = Conv2d::new(&mut b, "conv2", k, 2 * k, 3, 1, 1, conv_bias);
                let norm2 = Norm::new(&mut b, "norm2", norm, 2 * k, groups);
                let flat = 2 * k * (h / 4) * (w / 4);
                let fc = Linear::new(&mut b, "fc", flat, 4 * k);
                let head = Linear::new(&mut b, "head", 4 * k, spec.classes);
                Body::Cnn {
                    conv1,
                    norm1,
                    conv2,
                    norm2,
                    fc,
                    head,
                }
            }
            Arch::PreactResnet18 | Arch::PreactResnet34 | Arch::Wrn28 => {
                let (stem_out, stages): (usize, Vec<(usize, usize, usize)>) = match arch {
                    Arch::PreactResnet18 => (
                        k,
                        vec![(k, 2, 1), (2 * k, 2, 2), (4 * k, 2, 2), (8 * k, 2, 2)],
                    ),
                    Arch::PreactResnet34 => (
                        k,
                        vec![(k, 3, 1), (2 * k, 4, 2), (4 * k, 6, 2), (8 * k, 3, 2)],
                    ),
                    _ => (16, vec![(16 * k, 4, 1), (32 * k, 4, 2), (64 * k, 4, 2)]),
                };
                let stem = conv3x3(&mut b, "conv1", c_in, stem_out, 1);
                let mut blocks = Vec::new();
                for (name, cin, planes, stride) in residual_blocks(stem_out, &stages) {
                    // `shortcut.0` as in the authors' PreActBlock (an `nn.Sequential` holding the conv), so that
                    // checkpoints load into their PyTorch model under the same names.
                    let shortcut = (stride != 1 || cin != planes).then(|| {
                        conv1x1(&mut b, &format!("{name}.shortcut.0"), cin, planes, stride)
                    });
                    let norm1 = Norm::new(&mut b, &format!("{name}.bn1"), norm, cin, groups);
                    let conv1 = conv3x3(&mut b, &format!("{name}.conv1"), cin, planes, stride);
                    let norm2 = Norm::new(&mut b, &format!("{name}.bn2"), norm, planes, groups);
                    let conv2 = conv3x3(&mut b, &format!("{name}.conv2"), planes, planes, 1);
                    blocks.push(PreActBlock {
                        norm1,
                        conv1,
                        norm2,
                        conv2,
                        shortcut,
                    });
                }
                let cin = stages.last().map_or(stem_out, |s| s.0);
                let norm = Norm::new(&mut b, "bn", norm, cin, groups);
                let head = Linear::new(&mut b, "linear", cin, spec.classes);
                Body::PreAct {
                    stem,
                    blocks,
                    norm,
                    head,
                }
            }
            Arch::Resnet34 => {
                let stem = conv3x3(&mut b, "conv1", c_in, k, 1);
                let stem_norm = Norm::new(&mut b, "bn1", norm, k, groups);
                let stages = [(k, 3, 1), (2 * k, 4, 2), (4 * k, 6, 2), (8 * k, 3, 2)];
                let mut blocks = Vec::new();
                for (name, cin, planes, stride) in residual_blocks(k, &stages) {
                    let conv1 = conv3x3(&mut b, &format!("{name}.conv1"), cin, planes, stride);
                    let norm1 = Norm::new(&mut b, &format!("{name}.bn1"), norm, planes, groups);
                    let conv2 = conv3x3(&mut b, &format!("{name}.conv2"), planes, planes, 1);
                    let norm2 = Norm::new(&mut b, &format!("{name}.bn2"), norm, planes, groups);
                    let shortcut = (stride != 1 || cin != planes).then(|| {
                        let conv =
                            conv1x1(&mut b, &format!("{name}.shortcut.0"), cin, planes, stride);
                        let n =
                            Norm::new(&mut b, &format!("{name}.shortcut.1"), norm, planes, groups);
                        (conv, n)
                    });
                    blocks.push(PostActBlock {
                        conv1,
                        norm1,
                        conv2,
                        norm2,
                        shortcut,
                    });
                }
                let cin = stages[3].0;
                let head = Linear::new(&mut b, "linear", cin, spec.classes);
                Body::PostAct {
                    stem,
                    norm: stem_norm,
                    blocks,
                    head,
                }
            }
        };
        let (params, bn_slots, norm_params) = b.finish();
        let bn_channels = bn_slots.iter().map(|s| s.channels).collect();
        let total = params.iter().try_fold(0usize, |acc, p| {
            p.shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| acc.checked_add(n))
        });
        if total.is_none_or(|n| n > MAX_PARAMS) {
            return Err(bad(
                "width",
                format!(
                    "{} of width {k} on {c_in}x{h}x{w} inputs would have more than {MAX_PARAMS} parameters",
                    arch.name()
                ),
            ));
        }
        Ok(Network {
            spec: spec.clone(),
            body,
            params,
            bn_channels,
            bn_slots,
            norm_params,
        })
    }

    /// The specification it was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its parameters, in the order of the parameter list.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(ParamSpec::numel).sum()
    }

    /// Indices (in [`Network::params`]) of the normalization layers' scales and shifts.
    pub fn norm_params(&self) -> &[usize] {
        &self.norm_params
    }

    /// Channels of each BatchNorm slot.
    pub fn bn_channels(&self) -> &[usize] {
        &self.bn_channels
    }

    /// The BatchNorm slots (layer names and channels), in slot order.
    pub fn bn_slots(&self) -> &[BnSlot] {
        &self.bn_slots
    }

    /// Logits `[n, classes]` for images `[n, c, h, w]`: the linear head on [`Network::features`].
    pub fn forward(&self, ctx: &mut Ctx, x: Tensor<4>) -> Tensor<2> {
        let features = self.features(ctx, x);
        let head = match &self.body {
            Body::Mlp { head, .. }
            | Body::Cnn { head, .. }
            | Body::PreAct { head, .. }
            | Body::PostAct { head, .. }
            | Body::Transformer { head, .. } => head,
        };
        head.forward(ctx, features)
    }

    /// The penultimate features `[n, d]` that the linear head reads, post-ReLU (so non-negative) in the convnets:
    /// the last hidden layer (MLP), the ReLU after the first Linear (CNN), or the globally average-pooled output
    /// of the last block after its final norm and ReLU (ResNets, WRN); the pooled tokens after the final
    /// LayerNorm in the transformers (of either sign).
    pub fn features(&self, ctx: &mut Ctx, x: Tensor<4>) -> Tensor<2> {
        match &self.body {
            Body::Transformer { body, .. } => body.features(ctx, x),
            Body::Mlp { layers, .. } => {
                let [n, c, h, w] = x.dims();
                let mut out: Tensor<2> = x.reshape([n, c * h * w]);
                for (lin, norm) in layers {
                    out = lin.forward(ctx, out);
                    out = norm_relu(norm, ctx, out);
                }
                out
            }
            Body::Cnn {
                conv1,
                norm1,
                conv2,
                norm2,
                fc,
                ..
            } => {
                let out = conv1.forward(ctx, x);
                let out = norm_relu(norm1, ctx, out);
                let out = ctx.max_pool2(out);
                let out = conv2.forward(ctx, out);
                let out = norm_relu(norm2, ctx, out);
                let out = ctx.max_pool2(out);
                let [n, c, h, w] = out.dims();
                let out = fc.forward(ctx, out.reshape([n, c * h * w]));
                ctx.relu(out)
            }
            Body::PreAct {
                stem, blocks, norm, ..
            } => {
                let mut out = stem.forward(ctx, x);
                for block in blocks {
                    out = block.forward(ctx, out);
                }
                global_avg_pool(norm_relu(norm, ctx, out))
            }
            Body::PostAct {
                stem, norm, blocks, ..
            } => {
                let out = stem.forward(ctx, x);
                let mut out = norm_relu(norm, ctx, out);
                for block in blocks {
                    out = block.forward(ctx, out);
                }
                global_avg_pool(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{init_params, BnMode, BnStats};
    use burn::tensor::Device;

    fn spec(arch: Arch, width: usize, norm: NormKind) -> ModelSpec {
        ModelSpec {
            arch,
            width,
            norm,
            input: [3, 8, 8],
            classes: 10,
            transformer: None,
        }
    }

    /// Parameter counts against the closed forms of the architectures (and PyTorch's counts at width 64).
    #[test]
    fn parameter_counts_match_the_architectures() {
        let count = |a, w, n| Network::new(&spec(a, w, n)).unwrap().num_params();
        // PreAct ResNet-18, width 64, CIFAR-10: 11,172,170 parameters (kuangliu's 11,171,146 plus the authors'
        // final BatchNorm of 512 channels).
        let mut s = spec(Arch::PreactResnet18, 64, NormKind::Batch);
        s.input = [3, 32, 32];
        assert_eq!(Network::new(&s).unwrap().num_params(), 11_172_170);
        // Post-activation ResNet-34 (CIFAR stem): 21,282,122 in PyTorch.
        s.arch = Arch::Resnet34;
        assert_eq!(Network::new(&s).unwrap().num_params(), 21_282_122);
        // WRN-28-10: 36,479,194 in PyTorch.
        s.arch = Arch::Wrn28;
        s.width = 10;
        assert_eq!(Network::new(&s).unwrap().num_params(), 36_479_194);
        // MLP 192 -> 4 -> 4 -> 10 and the CNN at width 2 on 8x8: by hand.
        assert_eq!(
            count(Arch::Mlp, 4, NormKind::None),
            192 * 4 + 4 + 4 * 4 + 4 + 4 * 10 + 10
        );
        assert_eq!(
            count(Arch::Cnn, 2, NormKind::None),
            (3 * 2 * 9 + 2) + (2 * 4 * 9 + 4) + (4 * 2 * 2 * 8 + 8) + (8 * 10 + 10)
        );
        // Group norm has the same parameters as batch norm, and no running statistics.
        let gn = Network::new(&spec(Arch::PreactResnet18, 8, NormKind::Group)).unwrap();
        let bn = Network::new(&spec(Arch::PreactResnet18, 8, NormKind::Batch)).unwrap();
        assert_eq!(gn.num_params(), bn.num_params());
        assert!(gn.bn_channels().is_empty());
        assert_eq!(bn.bn_channels().len(), 17);
    }

    #[test]
    fn bad_specs_are_rejected_by_name() {
        let err = Arch::parse("resnet99").unwrap_err();
        assert!(
            err.to_string().contains("unknown model \"resnet99\""),
            "{err}"
        );
        assert_eq!(
            Arch::parse("resnet18_gn").unwrap(),
            (Arch::PreactResnet18, Some(NormKind::Group))
        );
        assert!(Network::new(&spec(Arch::PreactResnet18, 8, NormKind::None)).is_err());
        assert!(Network::new(&spec(Arch::PreactResnet18, 7, NormKind::Group)).is_err());
        assert!(Network::new(&spec(Arch::Mlp, 8, NormKind::Group)).is_err());
    }

    /// One forward pass of every architecture on a tiny batch: output shapes, and the He init's scale.
    #[test]
    fn every_architecture_runs_a_forward_pass() {
        let device = Device::default();
        for (arch, width, norm) in [
            (Arch::Mlp, 4, NormKind::Batch),
            (Arch::Cnn, 2, NormKind::Group),
            (Arch::PreactResnet18, 2, NormKind::Batch),
            (Arch::PreactResnet34, 2, NormKind::Group),
            (Arch::Resnet34, 2, NormKind::Batch),
            (Arch::Wrn28, 1, NormKind::Batch),
            (Arch::Vit, 8, NormKind::Layer),
            (Arch::Mixer, 8, NormKind::Layer),
        ] {
            let net = Network::new(&spec(arch, width, norm)).unwrap();
            let params = init_params(net.params(), 0, &device);
            let mut stats = BnStats::new(net.bn_channels(), &device);
            let x = Tensor::<4>::ones([2, 3, 8, 8], &device);
            let mut ctx = Ctx {
                params: &params,
                mode: BnMode::Batch { update: true },
                stats: &mut stats,
                tape: None,
                grouped: None,
            };
            let logits = net.forward(&mut ctx, x);
            assert_eq!(logits.dims(), [2, 10], "{arch:?}");
            let values = logits.into_data().try_into_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{arch:?}");
        }
        // He init (fan-out): conv weights have variance 2 / (out * k * k).
        let net = Network::new(&spec(Arch::Cnn, 64, NormKind::Batch)).unwrap();
        let params = init_params(net.params(), 3, &device);
        let w = params[0].clone().into_data().try_into_vec::<f32>().unwrap();
        let var = w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var / (2.0 / (64.0 * 9.0)) - 1.0).abs() < 0.1, "{var}");
    }
}
