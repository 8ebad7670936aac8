//! Helpers shared by the end-to-end tests: run the `samlab` binary and read what it wrote.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `samlab` with `args`.
pub fn samlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args(args)
        .output()
        .expect("samlab runs")
}

/// Runs `samlab`, expecting success, and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = samlab(args);
    assert!(
        out.status.success(),
        "samlab {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `samlab`, expecting exit status 2, and returns stderr.
pub fn bad(args: &[&str]) -> String {
    let out = samlab(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "samlab {args:?}: {stderr}");
    stderr
}

/// A run directory's summary.json.
pub fn summary(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// A two-epoch MLP run (BatchNorm) on 300 images of the shipped Fashion-MNIST subset, in batches of 30, into `out`,
/// with the extra flags `extra` (its width, seed, SAM settings).
pub fn tiny_mlp_run(out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--model",
        "mlp",
        "--norm",
        "batch",
        "--dataset",
        "fashion-mnist",
        "--train-limit",
        "300",
        "--epochs",
        "2",
        "--batch-size",
        "30",
        "--out",
        p(out),
    ];
    args.extend(extra);
    ok(&args);
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An MNIST-format data set of 8x8 images the tests write themselves.
pub fn write_idx(dir: &Path, n_train: usize, n_test: usize) {
    let mut seed = 777;
    write_idx_set(dir, "train", n_train, 8, &mut seed);
    write_idx_set(dir, "t10k", n_test, 8, &mut seed);
}

/// `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte`: `n` images of `side x side` pixels, a bright
/// band at the row of their class on a noisy background, drawn from the generator state `seed`.
pub fn write_idx_set(dir: &Path, prefix: &str, n: usize, side: usize, seed: &mut u64) {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    };
    let mut images = Vec::new();
    for v in [2051u32, n as u32, side as u32, side as u32] {
        images.extend(v.to_be_bytes());
    }
    let mut labels = Vec::new();
    for v in [2049u32, n as u32] {
        labels.extend(v.to_be_bytes());
    }
    let pixels = (side * side) as u32;
    for _ in 0..n {
        let c = next() % 10;
        labels.push(c as u8);
        images.extend((0..pixels).map(|i| {
            if i * 64 / pixels / 6 == c {
                220
            } else {
                (next() % 40) as u8
            }
        }));
    }
    fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}
