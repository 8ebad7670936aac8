//! What verifying a checkpoint costs on read, in interleaved rounds on one machine. Each model's checkpoint (random
//! weights, as `--init-from` and the analysis tools read them) is written to a temporary directory and read back
//! from the page cache twice: verified, as the tools read it (`run::load_checkpoint`: read, parse, the payload's
//! XXH3-128 checked on a second thread while the tensors are converted and checked, then `to_state`), and
//! unverified (`Checkpoint::from_state_dict` of the same file: the same reading, parsing, conversion and value
//! checks without the checksum, then `to_state`). Written without momentum, a checkpoint holds exactly the tensors
//! a state dict does, so both read the same bytes into the same state.
//!
//! ```text
//! cargo run --release -p samlab-deep --example checkpoint_verify_cost -- [ROUNDS=31]
//! ```
//!
//! Per model it prints the file's size and median milliseconds: the XXH3-128 of the payload alone and the SHA-256
//! (version 2's checksum) alone, the unverified and the verified load, and verification's cost (verified over
//! unverified, minus one). The last column is the XXH3-128's share of the unverified load: what the check would
//! cost on one core, run after the conversion instead of beside it.

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
    let rounds: usize = std::env::args().nth(1).map_or(Ok(31), |s| s.parse())?;
    let device = samlab_deep::device("flex")?;
    let tmp = std::env::temp_dir().join(format!("samlab-verify-cost-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    println!(
        "| model | parameters | file MB | XXH3-128 ms | SHA-256 ms | unverified load ms | verified load ms | verification's cost | XXH3-128 / unverified load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
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
        let path = tmp.join("init.ckpt");
        Checkpoint::capture(&net, &state, false, serde_json::json!({"epochs_done": 1}))
            .save(&path)?;
        let bytes = std::fs::read(&path)?;
        let header = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let payload = &bytes[8 + header..];
        let (mut xxh, mut sha, mut plain, mut verified) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            xxh.push(ms(|| {
                std::hint::black_box(payload_checksum([("payload", payload)]));
            }));
            sha.push(ms(|| {
                std::hint::black_box(payload_sha256([("payload", payload)]));
            }));
            plain.push(ms(|| {
                let ckpt = Checkpoint::from_state_dict(&path, &spec).unwrap();
                std::hint::black_box(ckpt.to_state(&device));
            }));
            verified.push(ms(|| {
                let ckpt = samlab_deep::run::load_checkpoint(&path, &net).unwrap();
                std::hint::black_box(ckpt.to_state(&device));
            }));
        }
        let (xxh, sha) = (median(xxh), median(sha));
        let (plain, verified) = (median(plain), median(verified));
        println!(
            "| {name} | {} | {:.1} | {xxh:.3} | {sha:.2} | {plain:.2} | {verified:.2} | {:+.1}% | {:.1}% |",
            net.num_params(),
            bytes.len() as f64 / 1e6,
            100.0 * (verified / plain - 1.0),
            100.0 * xxh / plain
        );
    }
    std::fs::remove_dir_all(Path::new(&tmp))?;
    Ok(())
}
