//! AdamW against `torch.optim.AdamW` (bench/adamw_reference.py), and the optimizer settings that are refused.

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::sam::{SamConfig, Variant};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::NormKind;
use samlab_deep::optim::{self, Optimizer};
use samlab_deep::trainer::{OptimConfig, TrainState, WeightDecay};

const W0: [f32; 4] = [0.5, -1.25, 2.0, 0.0];
const G: [[f32; 4]; 3] = [
    [0.1, -2.0, 0.003, 1.0],
    [-0.3, 1.5, 0.002, 0.0],
    [0.2, 0.25, -0.004, -1.0],
];
/// torch.optim.AdamW(lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1) in float64, after each step.
const TORCH: [[f64; 4]; 3] = [
    [
        0.4895990099009901,
        -1.2387549975012495,
        1.9905,
        -0.009990009990009992,
    ],
    [
        0.4944962943388129,
        -1.2372010175261947,
        1.9815982512667976,
        -0.01633846933043529,
    ],
    [
        0.493550942421852,
        -1.2364516590360188,
        1.980093125449473,
        -0.014517735465829306,
    ],
];

fn adamw() -> OptimConfig {
    OptimConfig {
        weight_decay: WeightDecay::Decoupled { lambda: 0.1 },
        optimizer: Optimizer::Adamw {
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-3,
        },
        ..OptimConfig::default()
    }
}

#[test]
fn adamw_takes_pytorchs_steps() {
    let device = Device::default();
    let net = Network::new(&ModelSpec {
        arch: Arch::Mlp,
        width: 1,
        norm: NormKind::None,
        input: [1, 1, 1],
        classes: 2,
        transformer: None,
    })
    .unwrap();
    let tensor =
        |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let mut state = TrainState::new(&net, vec![tensor(&W0)], &device);
    let config = adamw();
    let mut worst = 0.0f64;
    for (t, (g, want)) in G.iter().zip(TORCH).enumerate() {
        optim::update(&config, &mut state, vec![tensor(g)], 0.01);
        let got = state.params[0]
            .to_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap();
        for (x, y) in got.iter().zip(want) {
            let e = (x - y).abs() / y.abs().max(1e-2);
            assert!(e < 1e-6, "step {}: {x} vs PyTorch {y}", t + 1);
            worst = worst.max(e);
        }
    }
    assert_eq!(state.adam.as_ref().map(|a| a.steps), Some(3));
    println!("AdamW vs torch.optim.AdamW over 3 steps: max relative error {worst:.1e}");
}

#[test]
fn impossible_adamw_settings_are_refused_by_name() {
    let sam = SamConfig::default();
    assert!(optim::check(&adamw(), &sam).is_ok());
    let with = |f: &dyn Fn(&mut OptimConfig)| {
        let mut c = adamw();
        f(&mut c);
        optim::check(&c, &sam).unwrap_err().to_string()
    };
    let e = with(&|c| c.weight_decay = WeightDecay::L2 { lambda: 5e-4 });
    assert!(e.contains("decoupled weight decay"), "{e}");
    let e = with(&|c| {
        c.optimizer = Optimizer::Adamw {
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
        }
    });
    assert!(e.contains("beta1") && e.contains("[0, 1)"), "{e}");
    let e = with(&|c| {
        c.optimizer = Optimizer::Adamw {
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
        }
    });
    assert!(e.contains("eps"), "{e}");
    let msam = SamConfig {
        variant: Variant::Msam,
        ..SamConfig::default()
    };
    let e = optim::check(&adamw(), &msam).unwrap_err().to_string();
    assert!(e.contains("MSAM"), "{e}");
    assert!(optim::check(&OptimConfig::default(), &msam).is_ok());
}
