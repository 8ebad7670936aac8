//! The wgpu (CubeCL over Vulkan) device against flex, both in f32: training steps of every SAM variant and
//! BatchNorm policy on the MLP, the CNN and a narrow PreAct ResNet-18 (BatchNorm and GroupNorm), the analysis
//! tools, and runs moving between the devices through their checkpoints.
//!
//! Each step starts both devices from the same state (flex's, copied over), so errors do not compound; losses,
//! the update vector, the momentum and the BatchNorm running statistics must agree to `TOL` relative. In CI this
//! runs on Mesa's software Vulkan device (lavapipe): `cargo test -p samlab-deep --features wgpu --test wgpu_vs_flex`.
#![cfg(feature = "wgpu")]

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::run::{Observer, Quiet};
use samlab_core::sam::{AscentSource, Grouping, Normalization, Perturbation, SamConfig};
use samlab_deep::analysis::hessian::{curvature, HessianConfig};
use samlab_deep::analysis::interpolate::{interpolate, InterpolationConfig};
use samlab_deep::analysis::sharpness::{sharpness, SharpnessConfig};
use samlab_deep::analysis::{BnEval, CheckpointKind, LoadedRun, Split};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, NormKind};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::run::{self, DeepRunConfig, EpochRow};
use samlab_deep::trainer::{
    Batch, BnPolicy, OptimConfig, Precision, TrainState, Trainer, WeightDecay,
};

/// Relative tolerance of every comparison (f32 on both sides; the summation orders differ).
const TOL: f64 = 1e-4;
const SEED: u64 = 5;

/// The GPU-side device under test: `vulkan` when compiled in, else `wgpu`.
fn gpu() -> Device {
    let name = if cfg!(feature = "vulkan") {
        "vulkan"
    } else {
        "wgpu"
    };
    samlab_deep::device(name).unwrap_or_else(|e| panic!("{e}"))
}

fn flex() -> Device {
    samlab_deep::device("flex").unwrap()
}

fn host(v: &[Tensor<1>]) -> Vec<f64> {
    v.iter()
        .flat_map(|t| t.to_data().try_into_vec::<f32>().unwrap())
        .map(f64::from)
        .collect()
}

/// The same values on `device`.
fn moved(v: &[Tensor<1>], device: &Device) -> Vec<Tensor<1>> {
    v.iter()
        .map(|t| {
            Tensor::from_data(
                TensorData::new(t.to_data().try_into_vec::<f32>().unwrap(), t.dims()),
                device,
            )
        })
        .collect()
}

fn state_on(s: &TrainState, device: &Device) -> TrainState {
    let mut t = s.clone();
    t.params = moved(&s.params, device);
    t.velocity = moved(&s.velocity, device);
    t.bn.mean = moved(&s.bn.mean, device);
    t.bn.var = moved(&s.bn.var, device);
    t
}

/// `||a - b|| / max(||b||, tiny)`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    d / n.max(1e-30)
}

/// `a` within `TOL` of `b`, relative to `scale` (the loss, for loss increases: a difference of two losses carries
/// their rounding).
fn close(what: &str, a: f64, b: f64, scale: f64) {
    assert!(
        (a - b).abs() <= TOL * scale.abs().max(1e-6),
        "{what}: gpu {a} vs flex {b}"
    );
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

struct Case {
    arch: Arch,
    width: usize,
    norm: NormKind,
    input: [usize; 3],
    sam: SamConfig,
    bn: BnPolicy,
    batch: usize,
    steps: usize,
    /// Relative tolerance of the update, momentum and running statistics.
    tol: f64,
}

/// `case.steps` steps on both devices from the same state; compares loss, update, momentum and BatchNorm
/// statistics after each.
fn check(case: &Case) {
    let (f, g) = (flex(), gpu());
    let net = Network::new(&ModelSpec {
        arch: case.arch,
        width: case.width,
        norm: case.norm,
        input: case.input,
        classes: 10,
        transformer: None,
    })
    .unwrap();
    let mut fs = TrainState::new(&net, init_params(net.params(), SEED, &f), &f);
    let sam = case.sam.check(case.batch).unwrap();
    let optim = OptimConfig {
        momentum: 0.9,
        weight_decay: WeightDecay::L2 { lambda: 5e-4 },
        bn_policy: case.bn,
        optimizer: Default::default(),
    };
    let trainer = |device: &Device| Trainer {
        net: &net,
        sam: sam.clone(),
        optim,
        seed: SEED,
        device: device.clone(),
        precision: Precision::F32,
    };
    let (tf, tg) = (trainer(&f), trainer(&g));
    let [c, h, w] = case.input;
    let data = |step: usize| {
        let mut s = Stream::new(SEED, Purpose::Augment, step as u64, 1);
        let x: Vec<f32> = (0..case.batch * c * h * w)
            .map(|_| s.normal() as f32)
            .collect();
        let y: Vec<u16> = (0..case.batch).map(|_| s.below(10) as u16).collect();
        (x, y)
    };
    let batch = |step: usize, device: &Device| {
        let (x, y) = data(step);
        Batch::new(x, y, case.input, 10, device)
    };
    for step in 0..case.steps {
        let mut gs = state_on(&fs, &g);
        let before = host(&fs.params);
        let prev = step.saturating_sub(1);
        let lr = 0.05;
        let of = tf.step(
            &mut fs,
            &batch(step, &f),
            &batch(prev, &f),
            lr,
            case.sam.rho,
            step as u64,
        );
        let og = tg.step(
            &mut gs,
            &batch(step, &g),
            &batch(prev, &g),
            lr,
            case.sam.rho,
            step as u64,
        );
        let at = format!("{:?}/{:?} step {step}", case.arch, case.norm);
        assert!(of.finite && og.finite, "{at}: non-finite loss");
        close(
            &format!("{at}: loss"),
            og.loss_sum,
            of.loss_sum,
            of.loss_sum,
        );
        let upd_f = diff(&host(&fs.params), &before);
        let upd_g = diff(&host(&gs.params), &before);
        let mut errors = vec![
            ("update", rel(&upd_g, &upd_f)),
            ("momentum", rel(&host(&gs.velocity), &host(&fs.velocity))),
        ];
        if !fs.bn.mean.is_empty() {
            errors.push(("running means", rel(&host(&gs.bn.mean), &host(&fs.bn.mean))));
            errors.push((
                "running variances",
                rel(&host(&gs.bn.var), &host(&fs.bn.var)),
            ));
        }
        eprintln!("{at}: {errors:?}");
        for (what, e) in errors {
            assert!(e < case.tol, "{at}: {what} differs by {e:e} relative");
        }
    }
}

fn sam(rho: f64, m: Option<usize>) -> SamConfig {
    SamConfig {
        rho,
        grouping: m.map_or(Grouping::WholeBatch, Grouping::Size),
        normalization: Normalization::Normalized,
        ..SamConfig::default()
    }
}

fn mlp(sam: SamConfig, norm: NormKind, bn: BnPolicy) -> Case {
    Case {
        arch: Arch::Mlp,
        width: 16,
        norm,
        input: [1, 8, 8],
        sam,
        bn,
        batch: 16,
        steps: 2,
        tol: TOL,
    }
}

fn cnn(sam: SamConfig, bn: BnPolicy) -> Case {
    Case {
        arch: Arch::Cnn,
        width: 4,
        norm: NormKind::Batch,
        input: [3, 8, 8],
        sam,
        bn,
        batch: 16,
        steps: 2,
        tol: TOL,
    }
}

fn resnet(sam: SamConfig, norm: NormKind) -> Case {
    Case {
        arch: Arch::PreactResnet18,
        width: 4,
        norm,
        input: [3, 8, 8],
        sam,
        bn: BnPolicy::BothPasses,
        batch: 8,
        steps: 2,
        // BatchNorm over 4 examples at the last block's 1x1 resolution divides by standard deviations of 4 values,
        // which amplifies the f32 rounding of the two devices' different summation orders.
        tol: 3.0 * TOL,
    }
}

#[test]
fn mlp_steps_of_every_sam_variant_match_flex() {
    let plain = NormKind::None;
    let both = BnPolicy::BothPasses;
    check(&mlp(SamConfig::erm(), plain, both));
    check(&mlp(sam(0.1, None), plain, both));
    check(&mlp(sam(0.1, Some(4)), plain, both));
    // The reproduce MLP's m-SAM step: BatchNorm, the groups as low-rank perturbations on both backends.
    check(&mlp(sam(0.1, Some(4)), NormKind::Batch, both));
    check(&mlp(
        SamConfig {
            ascent_steps: 3,
            ascent_step_mult: 0.5,
            random_init: true,
            ..sam(0.1, Some(8))
        },
        plain,
        both,
    ));
    check(&mlp(
        SamConfig {
            perturbation: Perturbation::Random,
            ..sam(0.5, Some(4))
        },
        plain,
        both,
    ));
    check(&mlp(
        SamConfig {
            normalization: Normalization::Unnormalized,
            ascent_source: AscentSource::PreviousBatch,
            ..sam(0.1, Some(4))
        },
        NormKind::Batch,
        both,
    ));
}

#[test]
fn cnn_steps_under_each_batchnorm_policy_match_flex() {
    check(&cnn(SamConfig::erm(), BnPolicy::BothPasses));
    for policy in [
        BnPolicy::BothPasses,
        BnPolicy::CleanPassOnly,
        BnPolicy::Frozen,
    ] {
        check(&cnn(sam(0.1, Some(8)), policy));
    }
}

#[test]
fn narrow_preact_resnet18_steps_match_flex_with_batchnorm_and_groupnorm() {
    check(&resnet(sam(0.1, Some(4)), NormKind::Batch));
    check(&resnet(sam(0.1, None), NormKind::Group));
}

// ------------------------------------------------------------------------------------------------------------
// Whole runs: analysis numbers and checkpoints across devices.

/// A two-epoch MLP+BatchNorm SAM run on 200 images of the shipped Fashion-MNIST subset, on `device`, optionally
/// fine-tuning `init_from`.
fn config(device: &str, init_from: Option<&Path>) -> DeepRunConfig {
    let init = init_from.map_or(String::new(), |p| {
        format!("init_from = {:?}\n", p.display().to_string())
    });
    let text = format!(
        r#"{init}
[model]
arch = "mlp"
width = 16
norm = "batch"

[data]
dataset = "fashion-mnist"
train_limit = 200

[train]
epochs = 2
batch_size = 20
seed = 3
lr = 0.05
device = "{device}"

[train.optim]
momentum = 0.9
weight_decay = {{ kind = "none" }}
bn_policy = "both_passes"

[sam]
rho = 0.1
normalization = "normalized"
"#
    );
    toml::from_str(&text).unwrap()
}

/// Stops a run after its first epoch, as if killed.
struct StopAfterFirst;

impl Observer for StopAfterFirst {
    fn line(&mut self, _line: &str) -> bool {
        false
    }
}

fn rows(rows: &[EpochRow]) -> Vec<f64> {
    rows.iter()
        .flat_map(|r| [r.train_loss, r.val_loss, r.test_loss, r.train_eval_loss])
        .collect()
}

#[test]
fn runs_resume_and_fine_tune_across_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let full = run::train(
        &config("flex", None),
        &tmp.path().join("full"),
        false,
        &mut Quiet,
    )
    .unwrap();
    for (first, second) in [("wgpu", "flex"), ("flex", "wgpu")] {
        let (first, second) = (gpu_name(first), gpu_name(second));
        let dir = tmp.path().join(format!("{first}-{second}"));
        run::train(&config(first, None), &dir, false, &mut StopAfterFirst).unwrap();
        let resumed = run::resume_on(&dir, Some(second), &mut Quiet).unwrap();
        assert_eq!(resumed.summary.device, second);
        assert_eq!(resumed.rows.len(), 2);
        let e = rel(&rows(&resumed.rows), &rows(&full.rows));
        assert!(
            e < 10.0 * TOL,
            "{first} then {second}: metrics differ from flex's by {e:e}"
        );
    }
    // Fine-tuning a flex run on the GPU device and the same on flex: the same numbers.
    let on = |device: &str| {
        let dir = tmp.path().join(format!("ft-{device}"));
        run::train(
            &config(device, Some(&tmp.path().join("full"))),
            &dir,
            false,
            &mut Quiet,
        )
        .unwrap()
    };
    let (a, b) = (on("flex"), on(gpu_name("wgpu")));
    let e = rel(&rows(&b.rows), &rows(&a.rows));
    assert!(e < 10.0 * TOL, "fine-tuning differs by {e:e}");
}

/// "wgpu" means the device under test (see [`gpu`]).
fn gpu_name(name: &str) -> &str {
    match name {
        "wgpu" if cfg!(feature = "vulkan") => "vulkan",
        other => other,
    }
}

#[test]
fn sharpness_hessian_and_interpolation_match_flex() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run::train(&config("flex", None), &a, false, &mut Quiet).unwrap();
    let mut cb = config("flex", None);
    cb.sam.rho = 0.0;
    run::train(&cb, &b, false, &mut Quiet).unwrap();
    let load = |dir: &Path, device: &str| {
        LoadedRun::load_on(dir, CheckpointKind::Last, Some(device)).unwrap()
    };
    let gpu = gpu_name("wgpu");
    let (fa, ga) = (load(&a, "flex"), load(&a, gpu));

    let scfg = SharpnessConfig {
        rho: 0.1,
        steps: 3,
        step_size_mult: 0.5,
        restarts: 1,
        random_init: false,
        normalize: true,
        m: 20,
        examples: 40,
        split: Split::Train,
        bn: BnEval::Batch,
        average_samples: Some(2),
        seed: 1,
        ..SharpnessConfig::default()
    };
    let s = |r: &LoadedRun| {
        let x = r.examples(Split::Train, 40).unwrap();
        sharpness(&r.net, &r.state, &x, &scfg).unwrap()
    };
    let (sf, sg) = (s(&fa), s(&ga));
    close("loss", sg.loss, sf.loss, sf.loss);
    close(
        "worst-case loss increase",
        sg.loss_increase,
        sf.loss_increase,
        sf.loss,
    );
    let (af, ag) = (sf.average.unwrap(), sg.average.unwrap());
    close(
        "average-case loss increase",
        ag.loss_increase,
        af.loss_increase,
        sf.loss,
    );

    let hcfg = HessianConfig {
        examples: 40,
        m: 20,
        top_k: 2,
        ..HessianConfig::default()
    };
    let eig = |r: &LoadedRun| {
        let x = r.examples(Split::Train, 40).unwrap();
        curvature(&r.net, &r.state, &x, &hcfg).unwrap()
    };
    // Exact f64 products from the same f32 weights: the same spectrum to Lanczos's tolerance. (wgpu on Vulkan
    // computes no f64 log-softmax, so its runs' products are computed on flex: see `hessian::f64_device`.)
    let (ef, eg) = (eig(&fa), eig(&ga));
    assert!(eg.converged && ef.converged);
    for (g, f) in eg.top_eigenvalues.iter().zip(&ef.top_eigenvalues) {
        assert!(
            (g.value - f.value).abs() < 1e-3 * f.value.abs(),
            "top eigenvalues: gpu {:?} vs flex {:?}",
            eg.top_eigenvalues,
            ef.top_eigenvalues
        );
    }

    let icfg = InterpolationConfig {
        from: -0.5,
        to: 1.5,
        step: 0.5,
        bn_examples: 100,
        examples: 60,
    };
    let (fb, gb) = (load(&b, "flex"), load(&b, gpu));
    let pf = interpolate(&fa, &fb, &icfg).unwrap();
    let pg = interpolate(&ga, &gb, &icfg).unwrap();
    let curve = |p: &[samlab_deep::analysis::interpolate::InterpolationPoint]| {
        p.iter()
            .flat_map(|q| [q.train_loss, q.test_loss])
            .collect::<Vec<f64>>()
    };
    let e = rel(&curve(&pg.points), &curve(&pf.points));
    assert!(e < TOL, "interpolation losses differ by {e:e}");
}

/// bf16 and f16 on the GPU device, where it supports them: SAM steps from flex's f32 state, whose loss is within
/// 2% of flex's f32 loss and whose update points the same way (cosine above 0.99). Where the device lacks the
/// dtype, `Precision::check` refuses it (a run then exits 2 before training).
#[test]
fn low_precision_steps_on_the_gpu_device() {
    let (f, g) = (flex(), gpu());
    let net = Network::new(&ModelSpec {
        arch: Arch::Cnn,
        width: 4,
        norm: NormKind::Batch,
        input: [3, 8, 8],
        classes: 10,
        transformer: None,
    })
    .unwrap();
    let sam = sam(0.1, Some(8)).check(16).unwrap();
    let trainer = |device: &Device, precision| Trainer {
        net: &net,
        sam: sam.clone(),
        optim: OptimConfig {
            momentum: 0.9,
            weight_decay: WeightDecay::L2 { lambda: 5e-4 },
            bn_policy: BnPolicy::BothPasses,
            optimizer: Default::default(),
        },
        seed: SEED,
        device: device.clone(),
        precision,
    };
    let mut s = Stream::new(SEED, Purpose::Augment, 0, 1);
    let x: Vec<f32> = (0..16 * 3 * 64).map(|_| s.normal() as f32).collect();
    let y: Vec<u16> = (0..16).map(|_| s.below(10) as u16).collect();
    let batch = |device: &Device| Batch::new(x.clone(), y.clone(), [3, 8, 8], 10, device);
    let start = TrainState::new(&net, init_params(net.params(), SEED, &f), &f);
    let before = host(&start.params);
    let mut fs = start.clone();
    let of = trainer(&f, Precision::F32).step(&mut fs, &batch(&f), &batch(&f), 0.05, 0.1, 0);
    let upd_f = diff(&host(&fs.params), &before);
    for precision in [Precision::Bf16, Precision::F16] {
        if precision.check(&g).is_err() {
            eprintln!("{precision:?}: not supported by the GPU device under test");
            continue;
        }
        let mut gs = state_on(&start, &g);
        let og = trainer(&g, precision).step(&mut gs, &batch(&g), &batch(&g), 0.05, 0.1, 0);
        assert!(og.finite, "{precision:?}: non-finite step");
        let upd_g = diff(&host(&gs.params), &before);
        let cos = upd_g.iter().zip(&upd_f).map(|(a, b)| a * b).sum::<f64>()
            / (upd_g.iter().map(|a| a * a).sum::<f64>().sqrt()
                * upd_f.iter().map(|b| b * b).sum::<f64>().sqrt());
        eprintln!(
            "{precision:?}: loss {} vs f32 {}, cos(update) {cos}",
            og.loss_sum, of.loss_sum
        );
        assert!((og.loss_sum - of.loss_sum).abs() < 0.02 * of.loss_sum);
        assert!(cos > 0.99, "{precision:?}: cos(update) = {cos}");
    }
}
