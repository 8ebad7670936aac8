//! The ViT and the MLP-Mixer against PyTorch in float64 (`bench/transformer_reference.json`, written by
//! `bench/transformer_reference.py`, whose gradients are checked against central differences of its own loss).
//!
//! Each case's PyTorch `state_dict` (timm's names, PyTorch's shapes) is written as a SafeTensors file and read by
//! [`Checkpoint::from_state_dict`], the reader of `samlab import-torch`; samlab's f32 forward and backward pass at
//! those weights must then give PyTorch's float64 logits, loss and gradients to f32 rounding. Also: a grouped pass
//! over two groups equals two plain passes, and a patch or head count that does not fit is refused by name.

use std::fs;

use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use samlab_deep::checkpoint::Checkpoint;
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{BnMode, BnStats, Ctx, Grouped, NormKind};
use samlab_deep::trainer::{ce_pass, Batch};
use samlab_deep::transformer::{Pool, TransformerSpec};
use serde_json::Value;

/// The fixture's cases.
fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/transformer_reference.json"
    );
    let json: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    json["cases"].as_array().unwrap().clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// The model a case describes.
fn spec_of(c: &Value) -> ModelSpec {
    let input = floats(&c["input"]);
    ModelSpec {
        arch: if c["arch"] == "mixer" {
            Arch::Mixer
        } else {
            Arch::Vit
        },
        width: usize_of(&c["width"]),
        norm: NormKind::Layer,
        input: [input[0] as usize, input[1] as usize, input[2] as usize],
        classes: usize_of(&c["classes"]),
        transformer: Some(TransformerSpec {
            depth: usize_of(&c["depth"]),
            patch: usize_of(&c["patch"]),
            heads: usize_of(&c["heads"]),
            mlp_ratio: usize_of(&c["mlp_ratio"]),
            pool: if c["pool"] == "cls" {
                Pool::Cls
            } else {
                Pool::Mean
            },
        }),
    }
}

/// `max |a - b| / max |b|` (0 when both are 0) and `max |a - b|`.
fn errors(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let abs = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    (if scale > 0.0 { abs / scale } else { abs }, abs)
}

fn values(t: &Tensor<1>) -> Vec<f64> {
    t.to_data().convert::<f64>().try_into_vec::<f64>().unwrap()
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|i| v[(i % rows) * cols + i / rows])
        .collect()
}

#[test]
fn imported_weights_give_pytorch_logits_loss_and_gradients() {
    let device = samlab_deep::device("flex").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let spec = spec_of(&c);
        let net = Network::new(&spec).unwrap();
        // The state_dict as `safetensors.torch.save_file` writes it.
        let state = c["state_dict"].as_object().unwrap();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = state
            .iter()
            .map(|(k, t)| {
                let shape = floats(&t["shape"]).iter().map(|&d| d as usize).collect();
                let raw = floats(&t["values"])
                    .iter()
                    .flat_map(|&x| (x as f32).to_le_bytes())
                    .collect();
                (k.clone(), shape, raw)
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let file = tmp.path().join(format!("{name}.safetensors"));
        fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
        let ckpt = Checkpoint::from_state_dict(&file, &spec).unwrap();
        assert_eq!(ckpt.params.len(), state.len(), "{name}");

        let params: Vec<Tensor<1>> = ckpt
            .params
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &device))
            .collect();
        let x: Vec<f32> = floats(&c["x"]).iter().map(|&v| v as f32).collect();
        let labels: Vec<u16> = floats(&c["labels"]).iter().map(|&l| l as u16).collect();
        let batch = Batch::new(x, labels, spec.input, spec.classes, &device);
        let mut stats = BnStats::new(&[], &device);
        let pass = ce_pass(
            &net,
            &params,
            &batch,
            BnMode::Batch { update: false },
            &mut stats,
        );

        let logits = pass
            .logits
            .to_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap();
        let (rl, al) = errors(&logits, &floats(&c["logits"]));
        let loss = values(&pass.loss)[0];
        let el = (loss - c["loss"].as_f64().unwrap()).abs();
        // Relative to the largest gradient entry of the model: some entries are exactly 0 in exact arithmetic (the
        // Mixer's token-MLP output bias shifts a token's features by a constant that the next LayerNorm removes)
        // and come out at rounding level in f32.
        let reference: Vec<Vec<f64>> = net
            .params()
            .iter()
            .map(|p| floats(&c["grads"][&p.name]))
            .collect();
        let scale = reference
            .iter()
            .flatten()
            .fold(0.0f64, |m, x| m.max(x.abs()));
        let mut ag = 0.0f64;
        for ((p, g), want) in net.params().iter().zip(&pass.grads).zip(&reference) {
            let mut ours = values(g);
            // samlab's Linear weights are [in, out], PyTorch's [out, in].
            if let [din, dout] = p.shape[..] {
                ours = transpose(&ours, din, dout);
            }
            let (_, a) = errors(&ours, want);
            assert!(
                a < 2e-5 * scale,
                "{name}: gradient of {} off by {a:.2e}",
                p.name
            );
            ag = ag.max(a);
        }
        let rg = ag / scale;
        println!(
            "{name}: logits rel {rl:.1e} (abs {al:.1e}), loss abs {el:.1e}, gradients rel {rg:.1e} (abs {ag:.1e}), max over {} tensors",
            pass.grads.len()
        );
        assert!(rl < 1e-5, "{name}: logits off by {rl:.2e}");
        assert!(el < 1e-5, "{name}: loss off by {el:.2e}");
    }
}

/// A pass over two groups at their own weights (stacked) gives each group's loss gradient, as two plain passes do.
#[test]
fn a_grouped_pass_equals_plain_passes() {
    let device = samlab_deep::device("flex").unwrap();
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let spec = spec_of(&c);
        let net = Network::new(&spec).unwrap();
        let init = |seed| samlab_deep::nn::init_params(net.params(), seed, &device);
        let (a, b) = (init(1), init(2));
        let x: Vec<f32> = floats(&c["x"]).iter().map(|&v| v as f32).collect();
        let n = usize_of(&c["batch"]);
        let per = x.len() / n;
        let xs: Vec<f32> = x.iter().chain(&x).copied().collect();
        let input = |v: Vec<f32>, rows: usize| {
            let [ch, h, w] = spec.input;
            Tensor::<4>::from_data(TensorData::new(v, [rows, ch, h, w]), &device)
        };
        let mut stats = BnStats::new(&[], &device);
        let mut forward = |params: &[Tensor<1>], x: Tensor<4>, grouped: Option<&mut Grouped>| {
            let mut ctx = Ctx {
                params,
                mode: BnMode::Batch { update: false },
                stats: &mut stats,
                tape: None,
                grouped,
            };
            net.forward(&mut ctx, x)
                .to_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap()
        };
        let plain: Vec<f64> = [&a, &b]
            .iter()
            .flat_map(|p| forward(p, input(x.clone(), n), None))
            .collect();
        let stacked: Vec<Tensor<1>> = a
            .iter()
            .zip(&b)
            .map(|(p, q)| Tensor::cat(vec![p.clone(), q.clone()], 0))
            .collect();
        let mut grouped = Grouped::new(2);
        let together = forward(&stacked, input(xs, 2 * n), Some(&mut grouped));
        assert_eq!(per * n, x.len());
        let (r, _) = errors(&together, &plain);
        assert!(r < 1e-5, "{name}: grouped vs plain {r:.2e}");
    }
}

#[test]
fn shapes_that_do_not_fit_are_refused_by_name() {
    let base = spec_of(&cases()[0]);
    let with = |f: &dyn Fn(&mut TransformerSpec)| {
        let mut s = base.clone();
        f(s.transformer.as_mut().unwrap());
        Network::new(&s).unwrap_err().to_string()
    };
    let e = with(&|t| t.patch = 3);
    assert!(
        e.contains("patch size 3 must divide the image's 8x8"),
        "{e}"
    );
    let e = with(&|t| t.heads = 3);
    assert!(e.contains("3 heads must divide the width 8"), "{e}");
    let e = with(&|t| t.depth = 0);
    assert!(e.contains("depth >= 1"), "{e}");
    let mut mixer = base.clone();
    mixer.arch = Arch::Mixer;
    let e = Network::new(&mixer).unwrap_err().to_string();
    assert!(e.contains("pool"), "{e}");
    let mut cnn = base.clone();
    cnn.arch = Arch::Cnn;
    let e = Network::new(&cnn).unwrap_err().to_string();
    assert!(e.contains("no layer norm"), "{e}");
    cnn.norm = NormKind::Batch;
    let e = Network::new(&cnn).unwrap_err().to_string();
    assert!(e.contains("applies to vit and mixer"), "{e}");
    let mut vit = base;
    vit.norm = NormKind::Batch;
    let e = Network::new(&vit).unwrap_err().to_string();
    assert!(e.contains("layer norm only"), "{e}");
}

/// SAM-ON's parameters on the transformers are exactly the LayerNorms' scales and shifts: two per block's two
/// LayerNorms and the final one.
#[test]
fn layer_norms_are_the_normalization_parameters() {
    for c in cases() {
        let spec = spec_of(&c);
        let net = Network::new(&spec).unwrap();
        let names: Vec<&str> = net
            .norm_params()
            .iter()
            .map(|&i| net.params()[i].name.as_str())
            .collect();
        let depth = usize_of(&c["depth"]);
        assert_eq!(names.len(), 2 * (2 * depth + 1), "{names:?}");
        let is_norm =
            |n: &str| n.starts_with("norm.") || n.contains(".norm1.") || n.contains(".norm2.");
        assert!(names.iter().all(|n| is_norm(n)), "{names:?}");
        let all = net.params().iter().filter(|p| is_norm(&p.name)).count();
        assert_eq!(all, names.len());
    }
}
