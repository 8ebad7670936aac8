//! Throughput of one ERM or SAM training step (forward + backward [+ ascent pass] + SGD update), for
//! `bench/deep_speed.py`, which runs it beside the same step in PyTorch.
//!
//! ```sh
//! cargo bench -p samlab-deep --bench step -- --model cnn --method sam --steps 20 --warmup 3
//! ```
//!
//! Prints one JSON line: the median step time over `--steps` timed steps (after `--warmup`), images per second
//! and the process's peak resident memory (`VmHWM`). Each step ends with a host read of the loss and logits
//! (the trainer reads them to detect divergence), so asynchronous backends are synchronized inside the clock.
//! Inputs: a fixed batch of 128 random 32x32x3 images with random labels.

use std::time::Instant;

use burn::tensor::Device;
use samlab_core::sam::{Normalization, SamConfig};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, NormKind};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::trainer::{Batch, BnPolicy, OptimConfig, TrainState, Trainer, WeightDecay};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = arg(&args, "--model", "cnn");
    let method = arg(&args, "--method", "erm");
    let steps: usize = arg(&args, "--steps", "10").parse().unwrap();
    let warmup: usize = arg(&args, "--warmup", "2").parse().unwrap();
    let batch: usize = arg(&args, "--batch", "128").parse().unwrap();
    let device_name = arg(&args, "--device", "flex");
    let device: Device = samlab_deep::device(&device_name).expect("device");
    let spec = match model.as_str() {
        // conv3x3(3->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2, linear(->128)+ReLU, linear(->10)
        "cnn" => ModelSpec {
            arch: Arch::Cnn,
            width: 32,
            norm: NormKind::None,
            input: [3, 32, 32],
            classes: 10,
        },
        // The authors' PreAct ResNet-18 (BatchNorm) at width 16.
        "resnet18w16" => ModelSpec {
            arch: Arch::PreactResnet18,
            width: 16,
            norm: NormKind::Batch,
            input: [3, 32, 32],
            classes: 10,
        },
        other => panic!("unknown --model {other} (cnn, resnet18w16)"),
    };
    let sam = match method.as_str() {
        "erm" => SamConfig::erm(),
        "sam" => SamConfig {
            rho: 0.05,
            normalization: Normalization::Normalized,
            ..SamConfig::erm()
        },
        other => panic!("unknown --method {other} (erm, sam)"),
    };
    let rho = sam.rho;
    let net = Network::new(&spec).unwrap();
    let mut state = TrainState::new(&net, init_params(net.params(), 0, &device), &device);
    let trainer = Trainer {
        net: &net,
        sam: sam.check(batch).unwrap(),
        optim: OptimConfig {
            momentum: 0.9,
            weight_decay: WeightDecay::None,
            bn_policy: BnPolicy::BothPasses,
        },
        seed: 0,
        device: device.clone(),
    };
    let mut s = Stream::new(0, Purpose::Augment, 0, 0);
    let images: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| s.uniform() as f32)
        .collect();
    let labels: Vec<u16> = (0..batch).map(|_| s.below(10) as u16).collect();
    let b = Batch::new(images, labels, [3, 32, 32], 10, &device);
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let out = trainer.step(&mut state, &b, &b, 0.01, rho, i as u64);
        assert!(out.finite, "non-finite loss in the benchmark");
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    println!(
        "{{\"engine\": \"samlab-deep (burn 0.22.1, {device_name})\", \"model\": \"{model}\", \"method\": \"{method}\", \"batch\": {batch}, \"params\": {}, \"steps\": {steps}, \"median_step_s\": {median:.5}, \"images_per_s\": {:.2}, \"peak_rss_mb\": {:.1}}}",
        net.num_params(),
        batch as f64 / median,
        peak_rss_mb()
    );
}
