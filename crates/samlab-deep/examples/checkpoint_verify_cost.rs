//! What verifying a checkpoint costs on read: the XXH3-128 of its payload (what `Checkpoint::load` checks against
//! the `payload_xxh3_128` a version-3 checkpoint records) and the SHA-256 that version 2 recorded, beside loading
//! it, in interleaved rounds on one machine. Each model's
//! checkpoint (random weights with momentum, as `train` writes `last.ckpt`) is written to a temporary directory and
//! read back from the page cache.
//!
//! ```text
//! cargo run --release -p samlab-deep --example checkpoint_verify_cost -- [ROUNDS=15]
//! ```
//!
//! Per model it prints the file's size and the median milliseconds of: reading the file (`fs::read`), the XXH3-128
//! and the SHA-256 of its payload, `Checkpoint::load` (read, parse, verify, convert to `f32` vectors), `run::load_checkpoint`
//! (that plus the model's tensors checked: names, shapes, finite values) followed by `to_state` (the tensors onto
//! the device): what `--resume`, `--init-from` and the analysis tools do with a checkpoint. The last columns are
//! each checksum's share of the last one.

use std::path::Path;
use std::time::Instant;

use samlab_core::checkpoint_file::{payload_checksum, payload_sha256};
use samlab_deep::checkpoint::Checkpoint;
use samlab_deep::models::{ModelSpec, Network};
use samlab_deep::nn::init_params;
use samlab_deep::trainer::TrainState;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(15), |s| s.parse())?;
    let device = samlab_deep::device("flex")?;
    let tmp = std::env::temp_dir().join(format!("samlab-verify-cost-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    println!(
        "| model | parameters | file MB | read ms | XXH3-128 ms | SHA-256 ms | Checkpoint::load ms | load_checkpoint + to_state ms | XXH3-128 / load + to_state | SHA-256 / load + to_state |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, spec) in [
        (
            "MLP w256, Fashion-MNIST",
            r#"{"arch":"mlp","width":256,"norm":"none","input":[1,28,28],"classes":10}"#,
        ),
        (
            "PreAct ResNet-18 w16, CIFAR-10",
            r#"{"arch":"preact_resnet18","width":16,"norm":"batch","input":[3,32,32],"classes":10}"#,
        ),
        (
            "PreAct ResNet-18 w64, CIFAR-10",
            r#"{"arch":"preact_resnet18","width":64,"norm":"batch","input":[3,32,32],"classes":10}"#,
        ),
    ] {
        let spec: ModelSpec = serde_json::from_str(spec)?;
        let net = Network::new(&spec)?;
        let state = TrainState::new(&net, init_params(net.params(), 0, &device), &device);
        let path = tmp.join("last.ckpt");
        Checkpoint::capture(&net, &state, true, serde_json::json!({"epochs_done": 1}))
            .save(&path)?;
        let bytes = std::fs::read(&path)?;
        let header = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let payload = &bytes[8 + header..];
        let (mut read, mut xxh, mut sha, mut load, mut full) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            read.push(ms(|| {
                std::hint::black_box(std::fs::read(&path).unwrap());
            }));
            xxh.push(ms(|| {
                std::hint::black_box(payload_checksum([("payload", payload)]));
            }));
            sha.push(ms(|| {
                std::hint::black_box(payload_sha256([("payload", payload)]));
            }));
            load.push(ms(|| {
                std::hint::black_box(Checkpoint::load(&path).unwrap());
            }));
            full.push(ms(|| {
                let ckpt = samlab_deep::run::load_checkpoint(&path, &net).unwrap();
                std::hint::black_box(ckpt.to_state(&device));
            }));
        }
        let (read, xxh, sha) = (median(read), median(xxh), median(sha));
        let (load, full) = (median(load), median(full));
        println!(
            "| {name} | {} | {:.1} | {read:.2} | {xxh:.3} | {sha:.2} | {load:.2} | {full:.2} | {:.1}% | {:.1}% |",
            net.num_params(),
            bytes.len() as f64 / 1e6,
            100.0 * xxh / full,
            100.0 * sha / full
        );
    }
    std::fs::remove_dir_all(Path::new(&tmp))?;
    Ok(())
}
