//! m-SAM's groups computed together (`Trainer::grouped_step`) against the loop over groups (`Trainer::step`): the same three steps from the same state give the same weights, momentum, BatchNorm
//! running statistics, losses, predictions and gradient counts to f32 rounding, for every model and normalization
//! layer, every BatchNorm policy, each ascent scaling, multi-step and random-start ascents, the random baseline,
//! the previous batch as the ascent's examples, and ERM steps with ghost BatchNorm.

use burn::tensor::{Device, Tensor};
use samlab_core::ascent::SamObservation;
use samlab_core::sam::{AscentSource, Grouping, Normalization, Perturbation, SamConfig, Variant};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, NormKind};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::trainer::{
    Batch, BnPolicy, OptimConfig, Precision, TrainState, Trainer, WeightDecay,
};

const CLASSES: usize = 3;
const SIDE: usize = 8;
const BATCH: usize = 16;

/// `BATCH` random images of `side x side` pixels with labels, from the stream keyed by `key`.
fn batch(key: u64, side: usize, device: &Device) -> Batch {
    let mut s = Stream::new(5, Purpose::Augment, key, 0);
    let images = (0..BATCH * side * side)
        .map(|_| s.uniform() as f32)
        .collect();
    let labels = (0..BATCH).map(|_| s.below(CLASSES) as u16).collect();
    Batch::new(images, labels, [1, side, side], CLASSES, device)
}

fn flat(v: &[Tensor<1>]) -> Vec<f64> {
    v.iter()
        .flat_map(|t| t.to_data().convert::<f64>().try_into_vec::<f64>().unwrap())
        .collect()
}

/// `max |a - b| / max(max |b|, 1e-3)`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn sam(m: usize) -> SamConfig {
    SamConfig {
        rho: 0.05,
        grouping: Grouping::Size(m),
        normalization: Normalization::Normalized,
        ..SamConfig::default()
    }
}

/// A network of `arch` at `width` with `norm` on `side x side` one-channel images.
fn network(arch: Arch, width: usize, norm: NormKind, side: usize) -> Network {
    Network::new(&ModelSpec {
        arch,
        width,
        norm,
        input: [1, side, side],
        classes: CLASSES,
        transformer: None,
    })
    .unwrap()
}

/// The trainer of `net` with `sam`, SGD with momentum 0.9, L2 `lambda` and BatchNorm `policy`, seed 3.
fn trainer<'a>(net: &'a Network, sam: &SamConfig, policy: BnPolicy, lambda: f64) -> Trainer<'a> {
    Trainer {
        net,
        sam: sam.check(BATCH).unwrap(),
        optim: OptimConfig {
            momentum: 0.9,
            weight_decay: WeightDecay::L2 { lambda },
            bn_policy: policy,
            optimizer: Default::default(),
        },
        seed: 3,
        device: Device::default(),
        precision: Precision::F32,
    }
}

/// How a step computes its groups together.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Each group's copy of the weights stacked (`Trainer::grouped_step`).
    Stacked,
    /// Low-rank perturbations of one copy (`Trainer::low_rank_step`).
    LowRank,
}

/// [`compare`] through the stacked path.
fn check(arch: Arch, width: usize, norm: NormKind, sam: SamConfig, policy: BnPolicy, rho: f64) {
    compare(Path::Stacked, arch, width, norm, sam, policy, rho);
}

/// Three steps of `sam` at radius `rho` on `arch` with `norm` through the loop and `path`, compared after each.
fn compare(
    path: Path,
    arch: Arch,
    width: usize,
    norm: NormKind,
    sam: SamConfig,
    policy: BnPolicy,
    rho: f64,
) {
    let device = Device::default();
    // The ResNets get 16x16 images, so that their last stage's BatchNorm sees 2x2 pixels of each example: at 1x1
    // a group's few values have a standard deviation so small that f32 rounding is amplified past 1e-3.
    let side = match arch {
        Arch::Mlp | Arch::Cnn => SIDE,
        _ => 2 * SIDE,
    };
    let net = network(arch, width, norm, side);
    let trainer = trainer(&net, &sam, policy, 5e-4);
    let groups = BATCH / trainer.sam.group_size();
    match path {
        Path::Stacked => assert!(trainer.can_take_groups_together(groups, rho)),
        Path::LowRank => assert!(trainer.can_take_low_rank(groups, rho)),
    }
    let start = TrainState::new(&net, init_params(net.params(), 3, &device), &device);
    let (mut looped, mut grouped) = (start.clone(), start);
    let case = format!("{path:?} {arch:?} {norm:?} {policy:?} rho {rho} {sam:?}");
    // The ResNets amplify f32 rounding through their many BatchNorm layers, and at lr 0.1 a ReLU input that rounding
    // moves across 0 changes the next steps by 1e-3: they are compared at lr 0.01 and to 2e-4.
    let (lr, tol) = match arch {
        Arch::Mlp | Arch::Cnn => (0.1, 2e-5),
        _ => (0.01, 2e-4),
    };
    let mut previous = batch(99, side, &device);
    for step in 0..3 {
        let b = batch(step, side, &device);
        let a = trainer.looped_step(&mut looped, &b, &previous, lr, rho, step, false);
        let g = match path {
            Path::Stacked => trainer.grouped_step(&mut grouped, &b, &previous, lr, rho, step),
            Path::LowRank => trainer.low_rank_step(&mut grouped, &b, &previous, lr, rho, false),
        };
        assert!(a.finite && g.finite, "{case}");
        assert_eq!(a.gradient_evals, g.gradient_evals, "{case}");
        assert_eq!(a.correct, g.correct, "{case} step {step}");
        let loss = (a.loss_sum - g.loss_sum).abs() / a.loss_sum.abs();
        assert!(loss < tol, "{case} step {step}: loss {loss:e}");
        for (what, x, y) in [
            ("weights", &grouped.params, &looped.params),
            ("momentum", &grouped.velocity, &looped.velocity),
            ("running means", &grouped.bn.mean, &looped.bn.mean),
            ("running variances", &grouped.bn.var, &looped.bn.var),
        ] {
            let r = rel(&flat(x), &flat(y));
            assert!(r < tol, "{case} step {step}: {what} differ by {r:e}");
        }
        assert_eq!(looped.variant.steps, grouped.variant.steps, "{case}");
        previous = b;
    }
}

#[test]
fn every_model_and_batchnorm_policy_matches_the_loop() {
    for policy in [
        BnPolicy::BothPasses,
        BnPolicy::CleanPassOnly,
        BnPolicy::Frozen,
    ] {
        check(Arch::Mlp, 8, NormKind::Batch, sam(4), policy, 0.05);
        check(Arch::Cnn, 4, NormKind::Batch, sam(4), policy, 0.05);
    }
    check(
        Arch::Mlp,
        8,
        NormKind::None,
        sam(2),
        BnPolicy::BothPasses,
        0.05,
    );
    check(
        Arch::Cnn,
        4,
        NormKind::Group,
        sam(8),
        BnPolicy::BothPasses,
        0.05,
    );
    check(
        Arch::PreactResnet18,
        2,
        NormKind::Batch,
        sam(8),
        BnPolicy::BothPasses,
        0.05,
    );
    check(
        Arch::Resnet34,
        2,
        NormKind::Batch,
        sam(8),
        BnPolicy::CleanPassOnly,
        0.05,
    );
    check(
        Arch::PreactResnet18,
        2,
        NormKind::Group,
        sam(8),
        BnPolicy::BothPasses,
        0.05,
    );
}

#[test]
fn transformers_match_the_loop() {
    check(
        Arch::Vit,
        8,
        NormKind::Layer,
        sam(4),
        BnPolicy::BothPasses,
        0.05,
    );
    check(
        Arch::Mixer,
        8,
        NormKind::Layer,
        sam(8),
        BnPolicy::BothPasses,
        0.05,
    );
}

#[test]
fn every_ascent_matches_the_loop() {
    let base = sam(4);
    let cases = [
        SamConfig {
            normalization: Normalization::Unnormalized,
            ..base.clone()
        },
        SamConfig {
            normalization: Normalization::Clipped,
            ..base.clone()
        },
        SamConfig {
            ascent_steps: 3,
            ascent_step_mult: 0.5,
            ..base.clone()
        },
        SamConfig {
            random_init: true,
            ascent_steps: 2,
            ..base.clone()
        },
        SamConfig {
            perturbation: Perturbation::Random,
            ..base.clone()
        },
        SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..base.clone()
        },
    ];
    for c in cases {
        for policy in [BnPolicy::BothPasses, BnPolicy::CleanPassOnly] {
            check(Arch::Mlp, 8, NormKind::Batch, c.clone(), policy, 0.05);
        }
    }
    // Clipping that binds: a radius far below one step's length.
    check(
        Arch::Mlp,
        8,
        NormKind::Batch,
        SamConfig {
            normalization: Normalization::Clipped,
            ascent_steps: 2,
            ..base.clone()
        },
        BnPolicy::BothPasses,
        1e-4,
    );
}

#[test]
fn erm_steps_with_ghost_batchnorm_match_the_loop() {
    check(
        Arch::Mlp,
        8,
        NormKind::Batch,
        sam(4),
        BnPolicy::BothPasses,
        0.0,
    );
    check(Arch::Cnn, 4, NormKind::Batch, sam(8), BnPolicy::Frozen, 0.0);
}

#[test]
fn low_rank_groups_match_the_loop() {
    let low = |norm, sam, policy, rho| compare(Path::LowRank, Arch::Mlp, 8, norm, sam, policy, rho);
    for policy in [
        BnPolicy::BothPasses,
        BnPolicy::CleanPassOnly,
        BnPolicy::Frozen,
    ] {
        low(NormKind::Batch, sam(4), policy, 0.05);
        low(NormKind::Batch, sam(4), policy, 0.0);
        let previous = SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..sam(4)
        };
        low(NormKind::Batch, previous, policy, 0.05);
    }
    low(NormKind::None, sam(2), BnPolicy::BothPasses, 0.05);
    for normalization in [Normalization::Unnormalized, Normalization::Clipped] {
        let c = SamConfig {
            normalization,
            ..sam(4)
        };
        low(NormKind::Batch, c.clone(), BnPolicy::BothPasses, 0.05);
        // Clipping that binds: a radius far below one step's length.
        low(NormKind::Batch, c, BnPolicy::CleanPassOnly, 1e-4);
    }
    // Multi-step ascents: each step another low-rank term, the projection from the terms' Gram matrix.
    for policy in [BnPolicy::BothPasses, BnPolicy::CleanPassOnly] {
        let three = SamConfig {
            ascent_steps: 3,
            ascent_step_mult: 0.5,
            ..sam(4)
        };
        low(NormKind::Batch, three.clone(), policy, 0.05);
        let previous = SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..three
        };
        low(NormKind::Batch, previous, policy, 0.05);
    }
    for normalization in [Normalization::Unnormalized, Normalization::Clipped] {
        let c = SamConfig {
            normalization,
            ascent_steps: 2,
            ..sam(4)
        };
        low(NormKind::Batch, c.clone(), BnPolicy::BothPasses, 0.05);
        low(NormKind::None, c, BnPolicy::BothPasses, 1e-4);
    }
}

/// One observed step of `sam` on the MLP through the loop and as low-rank groups: the same observation of what
/// SAM did (perturbation norm, gradient cosine, realised sharpness, BatchNorm shifts where measured).
fn observe(norm: NormKind, sam: SamConfig, policy: BnPolicy) {
    let device = Device::default();
    let net = network(Arch::Mlp, 8, norm, SIDE);
    let trainer = trainer(&net, &sam, policy, 5e-2);
    let case = format!("{norm:?} {policy:?} {sam:?}");
    let start = TrainState::new(&net, init_params(net.params(), 3, &device), &device);
    let (mut looped, mut low) = (start.clone(), start);
    let b = batch(1, SIDE, &device);
    let a = trainer.looped_step(&mut looped, &b, &b, 0.1, 0.05, 0, true);
    let l = trainer.low_rank_step(&mut low, &b, &b, 0.1, 0.05, true);
    let (a, l) = (a.sam.unwrap().values(), l.sam.unwrap().values());
    for (k, (x, y)) in a.iter().zip(&l).enumerate() {
        let close = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 * x.abs().max(1e-3);
        assert!(
            close,
            "{case}: {} loop {x} low-rank {y}",
            SamObservation::COLUMNS[k]
        );
    }
    // Measured: the weight and perturbation norms, the realised sharpness, and the cosine after a one-step ascent.
    assert!([0, 1, 3].iter().all(|&k| a[k].is_finite()), "{case}: {a:?}");
    assert_eq!(a[2].is_finite(), sam.ascent_steps == 1, "{case}: {a:?}");
}

#[test]
fn low_rank_observations_match_the_loop() {
    for policy in [
        BnPolicy::BothPasses,
        BnPolicy::CleanPassOnly,
        BnPolicy::Frozen,
    ] {
        observe(NormKind::Batch, sam(4), policy);
    }
    observe(NormKind::None, sam(8), BnPolicy::BothPasses);
    let usam = SamConfig {
        normalization: Normalization::Unnormalized,
        ..sam(4)
    };
    observe(NormKind::Batch, usam, BnPolicy::BothPasses);
    let three = SamConfig {
        ascent_steps: 3,
        ascent_step_mult: 0.5,
        ..sam(4)
    };
    observe(NormKind::Batch, three.clone(), BnPolicy::BothPasses);
    observe(NormKind::Batch, three, BnPolicy::CleanPassOnly);
}

#[test]
fn variants_and_single_groups_cannot_be_grouped() {
    let device = Device::default();
    let net = network(Arch::Mlp, 4, NormKind::Batch, SIDE);
    let trainer = |sam: SamConfig| Trainer {
        net: &net,
        sam: sam.check(BATCH).unwrap(),
        optim: OptimConfig::default(),
        seed: 0,
        device: device.clone(),
        precision: Precision::F32,
    };
    let asam = SamConfig {
        variant: Variant::Asam { eta: 0.01 },
        ..sam(4)
    };
    assert!(!trainer(asam.clone()).can_take_groups_together(4, 0.05));
    assert!(trainer(asam.clone()).can_take_groups_together(4, 0.0));
    assert!(!trainer(sam(16)).can_take_groups_together(1, 0.05));
    // Low-rank groups: one ascent step of plain SAM from w (or ERM), on the MLP, in f32.
    assert!(trainer(sam(4)).can_take_low_rank(4, 0.05));
    assert!(!trainer(asam.clone()).can_take_low_rank(4, 0.05));
    assert!(trainer(asam).can_take_low_rank(4, 0.0));
    assert!(!trainer(sam(16)).can_take_low_rank(1, 0.05));
    let two_steps = SamConfig {
        ascent_steps: 2,
        ..sam(4)
    };
    assert!(trainer(two_steps).can_take_low_rank(4, 0.05));
    for c in [
        SamConfig {
            random_init: true,
            ..sam(4)
        },
        SamConfig {
            perturbation: Perturbation::Random,
            ..sam(4)
        },
    ] {
        assert!(!trainer(c).can_take_low_rank(4, 0.05));
    }
    let bf16 = Trainer {
        precision: Precision::Bf16,
        ..trainer(sam(4))
    };
    assert!(!bf16.can_take_low_rank(4, 0.05));
    let cnn = network(Arch::Cnn, 4, NormKind::Batch, SIDE);
    let conv = Trainer {
        net: &cnn,
        ..trainer(sam(4))
    };
    assert!(!conv.can_take_low_rank(4, 0.05));
}
