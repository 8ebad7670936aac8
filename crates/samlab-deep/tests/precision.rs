//! Mixed precision's SAM ascent: the perturbation is computed from f32 gradients with an f32 norm, so it has
//! radius rho and f32's direction even where the squared gradient norm exceeds f16's largest value (65504), the
//! case where a norm taken in half precision overflows and `rho * g / ||g||` collapses to zero.

use burn::tensor::Device;
use samlab_core::sam::{Grouping, Normalization, SamConfig};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, BnMode, BnStats, NormKind};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::trainer::{
    ce_pass, dot, sq_norm, Batch, BnPolicy, OptimConfig, Precision, Trainer, WeightDecay,
};

const SEED: u64 = 3;

#[test]
fn the_low_precision_ascent_has_radius_rho_and_the_f32_direction() {
    let device = Device::flex();
    let net = Network::new(&ModelSpec {
        arch: Arch::Mlp,
        width: 64,
        norm: NormKind::None,
        input: [1, 8, 8],
        classes: 10,
        transformer: None,
    })
    .unwrap();
    let w = init_params(net.params(), SEED, &device);
    let mut s = Stream::new(SEED, Purpose::Augment, 0, 0);
    // Images of scale 400: gradients of a few units per weight, a squared norm far above 65504.
    let x: Vec<f32> = (0..32 * 64).map(|_| 400.0 * s.normal() as f32).collect();
    let y: Vec<u16> = (0..32).map(|_| s.below(10) as u16).collect();
    let batch = Batch::new(x, y, [1, 8, 8], 10, &device);
    let mut stats = BnStats::new(&[], &device);
    let g = ce_pass(&net, &w, &batch, BnMode::Running, &mut stats).grads;
    assert!(
        sq_norm(&g) > 65504.0,
        "the case needs ||g||^2 above f16's range, got {}",
        sq_norm(&g)
    );
    let rho = 0.05;
    let sam = SamConfig {
        rho,
        grouping: Grouping::WholeBatch,
        normalization: Normalization::Normalized,
        ..SamConfig::default()
    }
    .check(32)
    .unwrap();
    let delta = |precision| {
        let trainer = Trainer {
            net: &net,
            sam: sam.clone(),
            optim: OptimConfig {
                momentum: 0.9,
                weight_decay: WeightDecay::None,
                bn_policy: BnPolicy::BothPasses,
                optimizer: Default::default(),
            },
            seed: SEED,
            device: device.clone(),
            precision,
        };
        trainer.perturbation(&w, &batch, rho, 0, 0, &mut stats.clone())
    };
    let reference = delta(Precision::F32);
    for precision in [Precision::Bf16, Precision::F16] {
        let d = delta(precision);
        let norm = sq_norm(&d).sqrt();
        assert!(
            (norm - rho).abs() < 1e-6,
            "{precision:?}: ||delta|| = {norm}, rho = {rho}"
        );
        let cos = dot(&d, &reference) / (norm * sq_norm(&reference).sqrt());
        assert!(cos > 0.99, "{precision:?}: cos(delta, delta_f32) = {cos}");
    }
}
