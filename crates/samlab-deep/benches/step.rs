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
//! Inputs: a fixed batch of 128 random 32x32x3 images with random labels. The timing is
//! `samlab_deep::bench::time_steps`, which `samlab bench-step` also runs.

use burn::tensor::Device;
use samlab_deep::bench::{time_steps, GroupPath, StepBench};
use samlab_deep::models::{Arch, ModelSpec};
use samlab_deep::nn::NormKind;
use samlab_deep::trainer::Precision;

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
            transformer: None,
        },
        // The authors' PreAct ResNet-18 (BatchNorm) at width 16.
        "resnet18w16" => ModelSpec {
            arch: Arch::PreactResnet18,
            width: 16,
            norm: NormKind::Batch,
            input: [3, 32, 32],
            classes: 10,
            transformer: None,
        },
        other => panic!("unknown --model {other} (cnn, resnet18w16)"),
    };
    let rho = match method.as_str() {
        "erm" => 0.0,
        "sam" => 0.05,
        other => panic!("unknown --method {other} (erm, sam)"),
    };
    let batch: usize = arg(&args, "--batch", "128").parse().unwrap();
    let bench = StepBench {
        spec,
        batch,
        rho,
        m: None,
        variant: samlab_core::sam::Variant::Sam,
        groups: GroupPath::Auto,
        precision: Precision::F32,
        warmup: arg(&args, "--warmup", "2").parse().unwrap(),
        steps: arg(&args, "--steps", "10").parse().unwrap(),
        max_seconds: f64::INFINITY,
    };
    let t = time_steps(&bench, &device).expect("benchmark");
    println!(
        "{{\"engine\": \"samlab-deep (burn 0.22.1, {device_name})\", \"model\": \"{model}\", \"method\": \"{method}\", \"batch\": {batch}, \"params\": {}, \"steps\": {}, \"median_step_s\": {:.5}, \"images_per_s\": {:.2}, \"peak_rss_mb\": {:.1}}}",
        t.params,
        t.steps,
        t.median_step_s,
        t.images_per_s,
        peak_rss_mb()
    );
}
