//! The transformers: a small ViT (Dosovitskiy et al., ICLR'21) and an MLP-Mixer (Tolstikhin et al., NeurIPS'21),
//! the architectures on which SAM helps most (Chen, Hsieh & Gong, ICLR'22).
//!
//! Both cut the image into `p x p` patches with one `p x p`, stride-`p` convolution (`T = hw / p^2` tokens of
//! `d = width` features), run `depth` pre-LayerNorm residual blocks, a final LayerNorm, pool the tokens and apply
//! a linear head:
//!
//! - ViT block: $x \leftarrow x + \mathrm{MHSA}(\mathrm{LN}(x))$, $x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$,
//!   attention with `heads` heads of `d / heads` features, $\mathrm{softmax}(QK^\top/\sqrt{d_h})V$; a learned
//!   class token (pooled by taking it) or mean pooling over the tokens; learned position embeddings.
//! - Mixer block: $x \leftarrow x + \mathrm{MLP}_\text{tokens}(\mathrm{LN}(x)^\top)^\top$ (hidden `d / 2`, as
//!   Mixer-B/16's 384 for 768), $x \leftarrow x + \mathrm{MLP}_\text{channels}(\mathrm{LN}(x))$; mean pooling.
//!
//! MLPs are Linear, exact (erf) GELU, Linear with hidden `mlp_ratio * d`. Parameter names are timm's
//! (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.<i>.attn.qkv`, `stem.proj`, `blocks.<i>.mlp_tokens.fc1`,
//! ...), which the PyTorch twins in `bench/torch_models.py` use too. Every op is smooth (no ReLU or max-pool), so the
//! Hessian tools need no recorded decisions; a grouped pass works through the grouped Linear, LayerNorm and
//! convolution, and each group's own class token and position embeddings.

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::nn::{Builder, Conv2d, Ctx, Init, LayerNorm, Linear};

/// How a ViT turns its tokens into one feature vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The class token's final state (ViT's original head).
    Cls,
    /// The mean over the tokens (the Mixer's only choice).
    Mean,
}

/// Depth, patch size, heads, MLP ratio and pooling of a ViT or Mixer (its width is the model's `width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSpec {
    /// Residual blocks.
    pub depth: usize,
    /// Side of the square patches; must divide the image's height and width.
    pub patch: usize,
    /// Attention heads (ViT); must divide the width. The Mixer has none and ignores it.
    pub heads: usize,
    /// Hidden features of the (channel) MLPs per model feature.
    pub mlp_ratio: usize,
    /// Pooling (the Mixer takes only `mean`).
    pub pool: Pool,
}

impl Default for TransformerSpec {
    /// Depth 4, patch 4 (it divides 28 and 32), 4 heads, MLP ratio 2, class token.
    fn default() -> Self {
        TransformerSpec {
            depth: 4,
            patch: 4,
            heads: 4,
            mlp_ratio: 2,
            pool: Pool::Cls,
        }
    }
}

/// Linear, GELU, Linear (`name.fc1`, `name.fc2`) over rows of `[rows, din]`.
#[derive(Clone, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(b: &mut Builder, name: &str, din: usize, hidden: usize) -> Self {
        Mlp {
            fc1: Linear::new(b, &format!("{name}.fc1"), din, hidden),
            fc2: Linear::new(b, &format!("{name}.fc2"), hidden, din),
        }
    }

    fn forward(&self, ctx: &Ctx, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(ctx, gelu(self.fc1.forward(ctx, x)))
    }
}

/// `[n, t, d] -> [n * t, d]` through `f`, back to `[n, t, d']`: a row-wise layer on every token (in a grouped
/// pass a group's rows stay contiguous).
fn tokens(x: Tensor<3>, f: impl FnOnce(Tensor<2>) -> Tensor<2>) -> Tensor<3> {
    let [n, t, d] = x.dims();
    let y = f(x.reshape([n * t, d]));
    let dout = y.dims()[1];
    y.reshape([n, t, dout])
}

/// Multi-head self-attention: `qkv` (features ordered `[3, heads, d / heads]`) and the output projection `proj`.
#[derive(Clone, Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn forward(&self, ctx: &Ctx, x: Tensor<3>) -> Tensor<3> {
        let [n, t, d] = x.dims();
        let h = self.heads;
        let dh = d / h;
        let qkv: Tensor<5> = tokens(x, |r| self.qkv.forward(ctx, r))
            .reshape([n, t, 3, h, dh])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| -> Tensor<4> { qkv.clone().narrow(0, i, 1).reshape([n, h, t, dh]) };
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
        let out = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([n, t, d]);
        tokens(out, |r| self.proj.forward(ctx, r))
    }
}

/// A pre-LayerNorm ViT block.
#[derive(Clone, Debug)]
struct VitBlock {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// A Mixer block.
#[derive(Clone, Debug)]
struct MixerBlock {
    norm1: LayerNorm,
    mlp_tokens: Mlp,
    norm2: LayerNorm,
    mlp_channels: Mlp,
}

#[derive(Clone, Debug)]
enum Blocks {
    Vit {
        cls_token: Option<usize>,
        pos_embed: usize,
        blocks: Vec<VitBlock>,
    },
    Mixer(Vec<MixerBlock>),
}

/// A ViT or an MLP-Mixer without its head: image to pooled features.
#[derive(Clone, Debug)]
pub(crate) struct Transformer {
    embed: Conv2d,
    blocks: Blocks,
    norm: LayerNorm,
    width: usize,
}

impl Transformer {
    /// The ViT (`mixer` false) or Mixer on `[c, h, w]` images at width `d`; the spec was checked by the caller
    /// (the patch divides the image, the heads the width).
    pub(crate) fn new(
        b: &mut Builder,
        mixer: bool,
        spec: &TransformerSpec,
        d: usize,
        [c, h, w]: [usize; 3],
    ) -> Self {
        let p = spec.patch;
        let t = (h / p) * (w / p);
        let stem = if mixer {
            "stem.proj"
        } else {
            "patch_embed.proj"
        };
        let embed = Conv2d::new(b, stem, c, d, p, p, 0, true);
        let hidden = spec.mlp_ratio * d;
        let blocks = if mixer {
            Blocks::Mixer(
                (0..spec.depth)
                    .map(|i| MixerBlock {
                        norm1: LayerNorm::new(b, &format!("blocks.{i}.norm1"), d),
                        mlp_tokens: Mlp::new(
                            b,
                            &format!("blocks.{i}.mlp_tokens"),
                            t,
                            (d / 2).max(1),
                        ),
                        norm2: LayerNorm::new(b, &format!("blocks.{i}.norm2"), d),
                        mlp_channels: Mlp::new(b, &format!("blocks.{i}.mlp_channels"), d, hidden),
                    })
                    .collect(),
            )
        } else {
            let cls = spec.pool == Pool::Cls;
            let cls_token =
                cls.then(|| b.param("cls_token".into(), vec![1, 1, d], Init::SmallNormal));
            let tokens = t + usize::from(cls);
            let pos_embed = b.param("pos_embed".into(), vec![1, tokens, d], Init::SmallNormal);
            let blocks = (0..spec.depth)
                .map(|i| VitBlock {
                    norm1: LayerNorm::new(b, &format!("blocks.{i}.norm1"), d),
                    attn: Attention {
                        qkv: Linear::new(b, &format!("blocks.{i}.attn.qkv"), d, 3 * d),
                        proj: Linear::new(b, &format!("blocks.{i}.attn.proj"), d, d),
                        heads: spec.heads,
                    },
                    norm2: LayerNorm::new(b, &format!("blocks.{i}.norm2"), d),
                    mlp: Mlp::new(b, &format!("blocks.{i}.mlp"), d, hidden),
                })
                .collect();
            Blocks::Vit {
                cls_token,
                pos_embed,
                blocks,
            }
        };
        Transformer {
            embed,
            blocks,
            norm: LayerNorm::new(b, "norm", d),
            width: d,
        }
    }

    /// Pooled features `[n, d]` of images `[n, c, h, w]`.
    pub(crate) fn features(&self, ctx: &mut Ctx, x: Tensor<4>) -> Tensor<2> {
        let d = self.width;
        let g = ctx.groups();
        let patches = self.embed.forward(ctx, x);
        let [n, _, ph, pw] = patches.dims();
        let x: Tensor<3> = patches.reshape([n, d, ph * pw]).swap_dims(1, 2);
        let x = match &self.blocks {
            Blocks::Vit {
                cls_token,
                pos_embed,
                blocks,
            } => {
                let x = match cls_token {
                    Some(i) => {
                        let cls: Tensor<4> = ctx.p(*i, [g, 1, 1, d], &x);
                        let cls = cls.expand([g, n / g, 1, d]).reshape([n, 1, d]);
                        Tensor::cat(vec![cls, x], 1)
                    }
                    None => x,
                };
                let t = x.dims()[1];
                let pos: Tensor<4> = ctx.p(*pos_embed, [g, 1, t, d], &x);
                let mut x = (x.reshape([g, n / g, t, d]) + pos).reshape([n, t, d]);
                for blk in blocks {
                    x = x.clone() + blk.attn.forward(ctx, blk.norm1.forward(ctx, x));
                    let y = blk.norm2.forward(ctx, x.clone());
                    x = x + tokens(y, |r| blk.mlp.forward(ctx, r));
                }
                x
            }
            Blocks::Mixer(blocks) => {
                let mut x = x;
                for blk in blocks {
                    let y = blk.norm1.forward(ctx, x.clone()).swap_dims(1, 2);
                    let y = tokens(y, |r| blk.mlp_tokens.forward(ctx, r)).swap_dims(1, 2);
                    x = x + y;
                    let y = blk.norm2.forward(ctx, x.clone());
                    x = x + tokens(y, |r| blk.mlp_channels.forward(ctx, r));
                }
                x
            }
        };
        let x = self.norm.forward(ctx, x);
        match &self.blocks {
            Blocks::Vit {
                cls_token: Some(_), ..
            } => x.narrow(1, 0, 1).reshape([n, d]),
            _ => x.mean_dim(1).reshape([n, d]),
        }
    }
}
