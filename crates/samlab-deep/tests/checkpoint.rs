//! Checkpoints as SafeTensors: names and shapes PyTorch reads, values bit for bit, the checksum, the old format,
//! and hostile files (each a clear error, never a panic).

use std::fs;
use std::path::Path;
use std::time::Instant;

use safetensors::{Dtype, SafeTensors};
use samlab_core::checkpoint_file::payload_checksum;
use samlab_deep::checkpoint::{Checkpoint, FORMAT, MOMENTUM_PREFIX, VARIANT_PREFIX};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::NormKind;
use sha2::{Digest, Sha256};

fn spec(arch: Arch, width: usize, input: [usize; 3]) -> ModelSpec {
    ModelSpec {
        arch,
        width,
        norm: NormKind::Batch,
        input,
        classes: 10,
        transformer: None,
    }
}

/// A checkpoint of `spec` with distinct, awkward values (negative zero, subnormals, large and small magnitudes).
fn checkpoint(spec: &ModelSpec, velocity: bool) -> Checkpoint {
    let net = Network::new(spec).unwrap();
    let mut k = 0u32;
    let mut next = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match k % 7 {
                    0 => -0.0,
                    1 => f32::from_bits(1 + (k >> 12)), // subnormal
                    _ => (k as f32 / u32::MAX as f32 - 0.5) * 1e3,
                }
            })
            .collect()
    };
    let params: Vec<Vec<f32>> = net.params().iter().map(|p| next(p.numel())).collect();
    Checkpoint {
        model: spec.clone(),
        velocity: velocity.then(|| net.params().iter().map(|p| next(p.numel())).collect()),
        variant: velocity.then(|| net.params().iter().map(|p| next(p.numel())).collect()),
        variant_steps: if velocity { 7 } else { 0 },
        second_moment: velocity.then(|| {
            net.params()
                .iter()
                .map(|p| next(p.numel()).iter().map(|x| x.abs()).collect())
                .collect()
        }),
        adam_steps: if velocity { 5 } else { 0 },
        params,
        bn_mean: net.bn_channels().iter().map(|&c| next(c)).collect(),
        bn_var: net
            .bn_channels()
            .iter()
            .map(|&c| next(c).iter().map(|x| x.abs() + 0.5).collect())
            .collect(),
        progress: serde_json::json!({"epochs_done": 3, "steps_done": 21}),
    }
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|t| t.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn same_bits(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.model, b.model);
    assert_eq!(a.progress, b.progress);
    assert_eq!(bits(&a.params), bits(&b.params));
    assert_eq!(
        a.velocity.as_deref().map(bits),
        b.velocity.as_deref().map(bits)
    );
    assert_eq!(bits(&a.bn_mean), bits(&b.bn_mean));
    assert_eq!(bits(&a.bn_var), bits(&b.bn_var));
    assert_eq!(
        a.variant.as_deref().map(bits),
        b.variant.as_deref().map(bits)
    );
    assert_eq!(a.variant_steps, b.variant_steps);
    assert_eq!(
        a.second_moment.as_deref().map(bits),
        b.second_moment.as_deref().map(bits)
    );
    assert_eq!(a.adam_steps, b.adam_steps);
}

fn err(path: &Path) -> String {
    match Checkpoint::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn expect_err(path: &Path, parts: &[&str]) {
    let e = err(path);
    for part in parts {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
}

#[test]
fn safetensors_names_shapes_and_values_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, velocity) in [
        (spec(Arch::PreactResnet18, 4, [3, 8, 8]), true),
        (spec(Arch::PreactResnet18, 4, [3, 8, 8]), false),
        (spec(Arch::Mlp, 5, [1, 4, 4]), true),
        (spec(Arch::Cnn, 2, [1, 8, 8]), true),
        (spec(Arch::Resnet34, 2, [3, 4, 4]), true),
        (spec(Arch::Wrn28, 1, [3, 4, 4]), true),
        (
            ModelSpec {
                norm: NormKind::Layer,
                ..spec(Arch::Vit, 8, [1, 8, 8])
            },
            true,
        ),
    ] {
        let path = tmp.path().join("last.ckpt");
        let c = checkpoint(&spec, velocity);
        c.save(&path).unwrap();
        same_bits(&c, &Checkpoint::load(&path).unwrap());

        let raw = fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&raw).unwrap();
        let net = Network::new(&spec).unwrap();
        // Parameters, then momentum, the variant's direction and AdamW's second moments with the optimizer state,
        // then running stats.
        let expected =
            net.params().len() * (1 + 3 * usize::from(velocity)) + 2 * net.bn_slots().len();
        assert_eq!(st.len(), expected, "{spec:?}");
        for (p, v) in net.params().iter().zip(&c.params) {
            let t = st.tensor(&p.name).unwrap();
            assert_eq!(t.dtype(), Dtype::F32);
            let first = f32::from_le_bytes(t.data()[..4].try_into().unwrap());
            if let [din, dout] = p.shape[..] {
                // Linear weights as PyTorch's [out, in].
                assert_eq!(t.shape(), [dout, din]);
                let (o, i) = (dout - 1, 1.min(din - 1));
                let at = 4 * (o * din + i);
                let x = f32::from_le_bytes(t.data()[at..at + 4].try_into().unwrap());
                assert_eq!(x.to_bits(), v[i * dout + o].to_bits());
            } else {
                assert_eq!(t.shape(), p.shape.as_slice());
            }
            assert_eq!(first.to_bits(), v[0].to_bits());
            for prefix in [MOMENTUM_PREFIX, VARIANT_PREFIX] {
                assert_eq!(st.tensor(&format!("{prefix}{}", p.name)).is_ok(), velocity);
            }
        }
        for slot in net.bn_slots() {
            for stat in ["running_mean", "running_var"] {
                let t = st.tensor(&format!("{}.{stat}", slot.name)).unwrap();
                assert_eq!(t.shape(), [slot.channels]);
            }
        }
        // The checksum is the XXH3-128 of the data section (all F32, laid out in name order).
        let (n, meta) = SafeTensors::read_metadata(&raw).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["format"], FORMAT);
        assert_eq!(meta["version"], "3");
        let data_hash = payload_checksum([("data section", &raw[8 + n..])]);
        assert_eq!(meta["payload_xxh3_128"], data_hash);
        assert_eq!(data_hash.len(), 32);
        assert_eq!(
            serde_json::from_str::<ModelSpec>(&meta["model"]).unwrap(),
            spec
        );
    }
    // PyTorch names of the authors' PreActResNet18.
    let net = Network::new(&spec(Arch::PreactResnet18, 64, [3, 32, 32])).unwrap();
    let names: Vec<&str> = net.params().iter().map(|p| p.name.as_str()).collect();
    for name in [
        "conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv1.weight",
        "layer2.0.shortcut.0.weight",
        "layer4.1.conv2.weight",
        "bn.weight",
        "linear.weight",
        "linear.bias",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    assert_eq!(net.bn_slots()[0].name, "layer1.0.bn1");
    assert_eq!(net.bn_slots().last().unwrap().name, "bn");
}

/// Writes `tensors` as a SafeTensors file with samlab's metadata for `spec` and a correct checksum, in version 2
/// (SHA-256), which samlab still reads.
fn write_raw(path: &Path, spec: &ModelSpec, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) {
    let mut sorted: Vec<_> = tensors
        .iter()
        .map(|(n, _, v)| {
            (
                n.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            )
        })
        .collect();
    sorted.sort();
    let mut sha = Sha256::new();
    for (_, b) in &sorted {
        sha.update(b);
    }
    let checksum: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), "2".to_string()),
        ("model".to_string(), serde_json::to_string(spec).unwrap()),
        ("progress".to_string(), "{}".to_string()),
        ("momentum".to_string(), "false".to_string()),
        ("payload_sha256".to_string(), checksum),
    ]);
    let bytes: Vec<(String, Vec<u8>)> = sorted;
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, _)| {
            let data = &bytes.iter().find(|(m, _)| m == n).unwrap().1;
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// The checkpoint `raw` with its metadata `key` set to `value` (the checksum covers the tensors only).
fn with_metadata(raw: &[u8], key: &str, value: &str) -> Vec<u8> {
    let st = SafeTensors::deserialize(raw).unwrap();
    let (_, header) = SafeTensors::read_metadata(raw).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert(key.to_string(), value.to_string());
    let names = st.names();
    let views: Vec<(String, safetensors::tensor::TensorView)> = names
        .iter()
        .map(|&n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn hostile_checkpoints_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(Arch::PreactResnet18, 2, [3, 4, 4]);
    let good = checkpoint(&spec, true);
    let path = tmp.path().join("last.ckpt");
    good.save(&path).unwrap();
    let raw = fs::read(&path).unwrap();
    let bad = tmp.path().join("bad.ckpt");

    // Truncated: in the tensor data, in the header, before the header length.
    fs::write(&bad, &raw[..raw.len() - 5]).unwrap();
    expect_err(&bad, &["bad.ckpt", "truncated"]);
    fs::write(&bad, &raw[..100]).unwrap();
    expect_err(
        &bad,
        &["header length", "runs past the end of the file (100 bytes)"],
    );
    fs::write(&bad, &raw[..5]).unwrap();
    expect_err(&bad, &["5 bytes", "truncated"]);
    fs::write(&bad, b"").unwrap();
    expect_err(&bad, &["0 bytes"]);
    // A header length beyond the file (nothing is allocated from it).
    for hlen in [u64::MAX, 1 << 40, raw.len() as u64] {
        let mut r = raw.clone();
        r[..8].copy_from_slice(&hlen.to_le_bytes());
        fs::write(&bad, &r).unwrap();
        expect_err(&bad, &["header length", "runs past the end of the file"]);
    }
    // A flipped payload byte.
    let mut r = raw.clone();
    let at = r.len() - 3;
    r[at] ^= 0x10;
    fs::write(&bad, &r).unwrap();
    expect_err(&bad, &["checksum mismatch", "damaged"]);
    // A flipped header byte (in the JSON).
    let mut r = raw.clone();
    r[9] ^= 0xff;
    fs::write(&bad, &r).unwrap();
    expect_err(&bad, &["not a valid SafeTensors file"]);

    // Wrong shapes: a Linear weight saved in samlab's own [in, out] order, a BatchNorm statistic one short.
    let net = Network::new(&spec).unwrap();
    let tensors = |skip: &str, reshape: &dyn Fn(&str, Vec<usize>) -> Vec<usize>| {
        let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        for (p, v) in net.params().iter().zip(&good.params) {
            let shape = match p.shape[..] {
                [din, dout] => vec![dout, din],
                _ => p.shape.clone(),
            };
            t.push((p.name.clone(), reshape(&p.name, shape), v.clone()));
        }
        for (s, (m, v)) in net
            .bn_slots()
            .iter()
            .zip(good.bn_mean.iter().zip(&good.bn_var))
        {
            t.push((
                format!("{}.running_mean", s.name),
                vec![s.channels],
                m.clone(),
            ));
            t.push((
                format!("{}.running_var", s.name),
                vec![s.channels],
                v.clone(),
            ));
        }
        t.retain(|(n, _, _)| n != skip);
        t
    };
    write_raw(&bad, &spec, tensors("", &|_, s| s));
    Checkpoint::load(&bad).expect("a hand-written file with the right names and shapes loads");
    write_raw(
        &bad,
        &spec,
        tensors("", &|n, s| {
            if n == "linear.weight" {
                vec![s[1], s[0]]
            } else {
                s
            }
        }),
    );
    expect_err(
        &bad,
        &["parameter tensor linear.weight has shape [16, 10], the model's has [10, 16]"],
    );
    let mut c = good.clone();
    c.bn_var[2].pop();
    c.save(&bad).unwrap();
    expect_err(
        &bad,
        &["BatchNorm running variance tensor layer1.1.bn1.running_var has shape [1]"],
    );
    // Missing tensors.
    write_raw(&bad, &spec, tensors("layer1.0.conv2.weight", &|_, s| s));
    expect_err(&bad, &["lacks the parameter tensor layer1.0.conv2.weight"]);
    write_raw(&bad, &spec, tensors("bn.running_mean", &|_, s| s));
    expect_err(
        &bad,
        &["lacks the BatchNorm running mean tensor bn.running_mean"],
    );
    let mut c = good.clone();
    c.bn_mean.pop();
    c.save(&bad).unwrap();
    expect_err(
        &bad,
        &["lacks the BatchNorm running mean tensor bn.running_mean"],
    );
    // An unknown tensor; num_batches_tracked is ignored.
    let mut t = tensors("", &|_, s| s);
    t.push(("layer9.weight".into(), vec![1], vec![0.0]));
    write_raw(&bad, &spec, t);
    expect_err(&bad, &["holds a tensor layer9.weight"]);
    let mut c = good.clone();
    c.params.push(vec![1.0]);
    c.save(&bad).unwrap();
    expect_err(&bad, &["holds a tensor extra.param.", "that its model"]);
    // Non-finite values.
    for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut c = good.clone();
        c.params[3][1] = x;
        c.save(&bad).unwrap();
        expect_err(
            &bad,
            &["non-finite value at index 1", net.params()[3].name.as_str()],
        );
        let mut c = good.clone();
        c.velocity.as_mut().unwrap()[0][0] = x;
        c.save(&bad).unwrap();
        expect_err(
            &bad,
            &[
                "momentum tensor optimizer.momentum.conv1.weight",
                "non-finite",
            ],
        );
    }
    // The SAM variant's state: a non-finite direction, bad metadata, a flag that disagrees with the tensors.
    let mut c = good.clone();
    c.variant.as_mut().unwrap()[2][0] = f32::NAN;
    c.save(&bad).unwrap();
    expect_err(
        &bad,
        &["variant direction tensor optimizer.variant.", "non-finite"],
    );
    let without = Checkpoint {
        variant: None,
        variant_steps: 0,
        second_moment: None,
        adam_steps: 0,
        ..good.clone()
    };
    without.save(&bad).unwrap();
    let raw_without = fs::read(&bad).unwrap();
    for (source, key, value, message) in [
        (&raw, "variant", "maybe", "bad variant flag \"maybe\""),
        (&raw, "variant_steps", "-3", "bad variant_steps \"-3\""),
        (&raw, "variant_steps", "1e400", "bad variant_steps"),
        (
            &raw,
            "variant",
            "false",
            "holds a tensor optimizer.variant.",
        ),
        (
            &raw_without,
            "variant",
            "true",
            "lacks the variant direction tensor",
        ),
    ] {
        fs::write(&bad, with_metadata(source, key, value)).unwrap();
        expect_err(&bad, &[message]);
    }
    // Another format, and a SafeTensors file without samlab's metadata.
    fs::write(&bad, b"PK\x03\x04 not a checkpoint at all").unwrap();
    expect_err(&bad, &["not a samlab checkpoint"]);
    let plain = safetensors::serialize(
        [(
            "w",
            safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap(),
        )],
        None,
    )
    .unwrap();
    fs::write(&bad, plain).unwrap();
    expect_err(&bad, &["without samlab's checkpoint metadata"]);
    // A model spec that builds no network.
    let mut odd = spec.clone();
    odd.width = 0;
    write_raw(&bad, &odd, vec![]);
    expect_err(&bad, &["checkpoint of an invalid model"]);
}

/// `c` in the SAMLABCK v1 layout, written by hand as samlab wrote it before SafeTensors.
fn v1_bytes(spec: &ModelSpec, c: &Checkpoint) -> Vec<u8> {
    let mut tensors: Vec<(String, &Vec<f32>)> = Vec::new();
    for (i, v) in c.params.iter().enumerate() {
        tensors.push((format!("param/{i}"), v));
    }
    for (i, v) in c.velocity.iter().flatten().enumerate() {
        tensors.push((format!("velocity/{i}"), v));
    }
    for (i, (m, v)) in c.bn_mean.iter().zip(&c.bn_var).enumerate() {
        tensors.push((format!("bn/{i}/mean"), m));
        tensors.push((format!("bn/{i}/var"), v));
    }
    let header = serde_json::to_vec(&serde_json::json!({
        "model": spec,
        "tensors": tensors.iter().map(|(n, v)| (n.clone(), v.len())).collect::<Vec<_>>(),
        "has_velocity": c.velocity.is_some(),
        "progress": c.progress,
    }))
    .unwrap();
    let mut raw = b"SAMLABCK".to_vec();
    raw.extend(1u32.to_le_bytes());
    raw.extend((header.len() as u64).to_le_bytes());
    raw.extend(&header);
    for (_, v) in &tensors {
        for x in v.iter() {
            raw.extend(x.to_le_bytes());
        }
    }
    raw
}

/// Version-1 checkpoints carry no checksum: every tool refuses them, naming the conversion; the conversion's
/// reader still checks their sizes.
#[test]
fn version_1_checkpoints_are_refused_and_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(Arch::Mlp, 3, [1, 2, 2]);
    let c = Checkpoint {
        variant: None,
        variant_steps: 0,
        second_moment: None,
        adam_steps: 0,
        ..checkpoint(&spec, true)
    };
    let raw = v1_bytes(&spec, &c);
    let path = tmp.path().join("last.ckpt");
    fs::write(&path, &raw).unwrap();
    expect_err(
        &path,
        &["version-1 (SAMLABCK)", "no checksum", "convert_checkpoint"],
    );
    let v1 = Checkpoint::load_unverified_v1(&path).unwrap();
    same_bits(&c, &v1);
    v1.save(&path).unwrap();
    same_bits(&c, &Checkpoint::load(&path).unwrap());
    // Truncated v1 files are still refused by the conversion's reader.
    for (cut, expect) in [
        (&raw[..raw.len() - 1], "truncated"),
        (&raw[..30], "truncated header"),
    ] {
        fs::write(&path, cut).unwrap();
        let err = Checkpoint::load_unverified_v1(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{err}");
    }
}

/// Size and cost of a full-size PreAct ResNet-18 checkpoint (11.2M parameters, momentum included); run with
/// `--nocapture` to see the numbers.
#[test]
fn preact_resnet18_checkpoint_size_and_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(Arch::PreactResnet18, 64, [3, 32, 32]);
    let c = checkpoint(&spec, true);
    let path = tmp.path().join("last.ckpt");
    let t = Instant::now();
    c.save(&path).unwrap();
    let save = t.elapsed();
    let raw = fs::read(&path).unwrap();
    let t = Instant::now();
    let loaded = Checkpoint::load(&path).unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let _ = payload_checksum([("file", &raw[..])]);
    let checksum = t.elapsed();
    let values: usize = c
        .params
        .iter()
        .chain(c.velocity.as_ref().unwrap())
        .chain(c.variant.as_ref().unwrap())
        .chain(c.second_moment.as_ref().unwrap())
        .map(Vec::len)
        .sum::<usize>()
        + c.bn_mean
            .iter()
            .chain(&c.bn_var)
            .map(Vec::len)
            .sum::<usize>();
    let (n, _) = SafeTensors::read_metadata(&raw).unwrap();
    assert_eq!(raw.len(), 8 + n + 4 * values);
    same_bits(&c, &loaded);
    println!(
        "preact_resnet18 width 64: {} bytes ({values} values, header {n} bytes); save {save:.2?}, load {load:.2?}, XXH3-128 of the file {checksum:.2?}",
        raw.len()
    );
}

/// A PyTorch state_dict (no metadata, no momentum, a `num_batches_tracked`) loads as the model's weights, bit for
/// bit; a missing, unknown, untransposed or non-F32 tensor is a named error.
#[test]
fn pytorch_state_dicts_load_as_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(Arch::Mlp, 8, [1, 4, 4]);
    let saved = tmp.path().join("samlab.ckpt");
    let ckpt = checkpoint(&spec, true);
    ckpt.save(&saved).unwrap();
    let raw = fs::read(&saved).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let state_dict: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("optimizer."))
        .collect();
    let write = |name: &str, tensors: Vec<(String, safetensors::tensor::TensorView)>| {
        let path = tmp.path().join(name);
        fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
        path
    };
    let counter = [1i64.to_le_bytes()].concat();
    let mut with_count = state_dict.clone();
    with_count.push((
        "norm1.num_batches_tracked".into(),
        safetensors::tensor::TensorView::new(Dtype::I64, vec![], &counter).unwrap(),
    ));
    let file = write("torch.safetensors", with_count);
    let loaded = Checkpoint::from_state_dict(&file, &spec).unwrap();
    assert_eq!(bits(&loaded.params), bits(&ckpt.params));
    assert_eq!(bits(&loaded.bn_mean), bits(&ckpt.bn_mean));
    assert_eq!(bits(&loaded.bn_var), bits(&ckpt.bn_var));
    assert_eq!(loaded.velocity, None);

    let from = |path: &Path| match Checkpoint::from_state_dict(path, &spec) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    let missing: Vec<_> = state_dict
        .iter()
        .filter(|(n, _)| n != "fc1.weight")
        .cloned()
        .collect();
    let e = from(&write("missing.safetensors", missing));
    assert!(e.contains("lacks the parameter tensor fc1.weight"), "{e}");
    let zeros = vec![0u8; 4];
    let mut unknown = state_dict.clone();
    unknown.push((
        "classifier.weight".into(),
        safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &zeros).unwrap(),
    ));
    let e = from(&write("unknown.safetensors", unknown));
    assert!(e.contains("classifier.weight"), "{e}");
    let (_, fc1) = state_dict.iter().find(|(n, _)| n == "fc1.weight").unwrap();
    let transposed = vec![fc1.shape()[1], fc1.shape()[0]];
    let flipped: Vec<_> = state_dict
        .iter()
        .map(|(n, t)| {
            let t = if n == "fc1.weight" {
                safetensors::tensor::TensorView::new(Dtype::F32, transposed.clone(), t.data())
                    .unwrap()
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect();
    let e = from(&write("flipped.safetensors", flipped));
    assert!(e.contains("fc1.weight has shape"), "{e}");
}

/// Writes the seed corpus of the `checkpoint` fuzz target (fuzz/corpus/checkpoint): tiny valid checkpoints of both
/// formats. Run by fuzz/make_seeds.sh with `SAMLAB_FUZZ_SEEDS` set; ignored otherwise.
#[test]
#[ignore = "writes the fuzz seed corpus; run by fuzz/make_seeds.sh"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("SAMLAB_FUZZ_SEEDS") else {
        return;
    };
    let dir = Path::new(&dir);
    fs::create_dir_all(dir).unwrap();
    let mlp = spec(Arch::Mlp, 3, [1, 2, 2]);
    let mut cnn = spec(Arch::Cnn, 2, [1, 4, 4]);
    cnn.norm = NormKind::Group;
    cnn.classes = 2;
    checkpoint(&mlp, true)
        .save(&dir.join("seed-mlp-momentum.safetensors"))
        .unwrap();
    checkpoint(&cnn, false)
        .save(&dir.join("seed-cnn-groupnorm.safetensors"))
        .unwrap();
    fs::write(
        dir.join("seed-mlp-v1.ckpt"),
        v1_bytes(&mlp, &checkpoint(&mlp, true)),
    )
    .unwrap();
    for name in [
        "seed-mlp-momentum.safetensors",
        "seed-cnn-groupnorm.safetensors",
    ] {
        Checkpoint::load(&dir.join(name)).unwrap();
    }
    Checkpoint::load_unverified_v1(&dir.join("seed-mlp-v1.ckpt")).unwrap();
}

/// Found while writing the `checkpoint` fuzz target (fuzz/): a checkpoint whose metadata claims an input of 2^64
/// values or more, its checksum intact (the checksum covers the tensors, not the metadata), overflowed
/// `channels x height x width` while building its network: a panic under the fuzz build (overflow checks on), a
/// wrapped size in release builds. The input's size is now multiplied with overflow checks and bounded.
#[test]
fn checkpoints_claiming_oversized_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("last.ckpt");
    for (arch, input) in [
        (Arch::Mlp, [1, 1 << 32, 1 << 32]),
        (Arch::Cnn, [1, 1 << 34, 1 << 34]),
        (Arch::PreactResnet18, [3, usize::MAX, 2]),
        (Arch::Mlp, [1 << 16, 1 << 16, 1]),
    ] {
        let spec = spec(arch, 2, input);
        let err = Network::new(&spec).unwrap_err().to_string();
        assert!(err.contains("values are more than"), "{err}");
        write_raw(&path, &spec, vec![]);
        expect_err(
            &path,
            &["checkpoint of an invalid model", "values are more than"],
        );
    }
}

/// What a last-good checkpoint and an import must not hold: a non-finite value in any tensor (a BatchNorm running
/// variance included) or a negative running variance; each is named.
#[test]
fn impossible_values_are_named() {
    let spec = spec(Arch::Mlp, 3, [1, 2, 2]);
    let good = Checkpoint {
        bn_var: vec![vec![1.0; 3]],
        bn_mean: vec![vec![0.0; 3]],
        ..checkpoint(&spec, true)
    };
    assert_eq!(good.impossible_value(), None);
    for (value, expect) in [
        (
            f32::INFINITY,
            "running variance tensor 0 holds a non-finite value at index 2",
        ),
        (
            -0.5,
            "running variance tensor 0 holds a negative variance (-0.5) at index 2",
        ),
    ] {
        let mut c = good.clone();
        c.bn_var[0][2] = value;
        let why = c.impossible_value().unwrap();
        assert!(why.contains(expect), "{why}");
    }
    let mut c = good.clone();
    c.velocity.as_mut().unwrap()[0][0] = f32::NAN;
    assert!(c.impossible_value().unwrap().contains("momentum"));
}
