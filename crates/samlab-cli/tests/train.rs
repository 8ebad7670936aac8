//! End-to-end tests of `samlab train`: the run directory, replay, kill and resume, fine-tuning, bad input.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// metrics.csv without the timing columns (seconds, images_per_s: the 12th and 13th), which differ between runs.
fn metrics(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            [&cells[..11], &cells[13..]].concat().join(",")
        })
        .collect()
}

const TINY: [&str; 13] = [
    "train",
    "--model",
    "cnn",
    "--width",
    "2",
    "--dataset",
    "mnist",
    "--epochs",
    "3",
    "--batch-size",
    "8",
    "--seed",
    "3",
];

#[test]
fn train_writes_the_run_directory_and_run_config_replays_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(tmp.path(), 60, 20);
    let out = tmp.path().join("sam");
    let stdout = ok(&[
        &TINY[..],
        &[
            "--data-dir",
            p(tmp.path()),
            "--m",
            "4",
            "--rho",
            "0.05",
            "--previous-batch",
            "--label-noise",
            "0.2",
            "--eval-train-examples",
            "20",
            "--curvature-every",
            "2",
            "--curvature-examples",
            "16",
            "--curvature-probes",
            "2",
            "--out",
            p(&out),
        ],
    ]
    .concat());
    assert!(stdout.starts_with("ok: 18 steps"), "{stdout}");
    let s = summary(&out);
    assert_eq!(s["status"], "ok");
    assert_eq!(
        s["steps"], 18,
        "54 training images / 8 = 6 steps per epoch, 3 epochs"
    );
    for key in [
        "final_train_loss",
        "final_train_eval_loss",
        "final_train_eval_error",
        "final_noisy_eval_error",
        "best_val_error",
        "test_error",
        "test_error_at_best_val",
    ] {
        assert!(s[key].as_f64().unwrap().is_finite(), "{key}");
    }
    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0], "epoch,step,train_loss,train_error,train_error_noisy,val_loss,val_error,test_loss,test_error,lr,rho,train_eval_loss,train_eval_error,noisy_eval_error,hessian_top,hessian_trace,sam_weight_norm,sam_delta_norm,sam_grad_cos,sam_sharpness,sam_bn_mean_shift,sam_bn_var_shift");
    // The curvature is logged after epochs 2 and 3 (the last), not after epoch 1.
    let column = |name: &str| m[0].split(',').position(|c| c == name).unwrap();
    let (top, trace) = (column("hessian_top"), column("hessian_trace"));
    let curvature = |row: &str| -> Vec<Option<f64>> {
        let cells: Vec<&str> = row.split(',').collect();
        [top, trace]
            .iter()
            .map(|&i| cells[i].parse::<f64>().ok())
            .collect()
    };
    assert!(
        curvature(&m[1]).iter().all(|v| v.is_some_and(f64::is_nan)),
        "{}",
        m[1]
    );
    for row in &m[2..] {
        assert!(
            curvature(row).iter().all(|v| v.is_some_and(f64::is_finite)),
            "{row}"
        );
    }
    let config = fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("eval_train_examples = 20"), "{config}");
    assert!(
        config.contains("grouping = { size = 4 }") || config.contains("size = 4"),
        "{config}"
    );
    assert_eq!(
        fs::read_to_string(out.join("label_noise.csv"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("train,"))
            .count(),
        10,
        "floor(0.2 * 54)"
    );
    // Replaying the resolved config gives the same numbers.
    let again = tmp.path().join("again");
    ok(&[
        "run",
        "--config",
        p(&out.join("config.toml")),
        "--out",
        p(&again),
    ]);
    assert_eq!(metrics(&again), m);
    // A partial config file, with flags on top.
    let partial = tmp.path().join("partial.toml");
    fs::write(&partial, format!("[model]\narch = \"mlp\"\nwidth = 3\n[data]\ndataset = \"mnist\"\ndir = {:?}\n[train]\nepochs = 1\nbatch_size = 9\n", p(tmp.path()))).unwrap();
    let part_out = tmp.path().join("partial");
    ok(&[
        "train",
        "--config",
        p(&partial),
        "--batch-size",
        "6",
        "--out",
        p(&part_out),
    ]);
    let written = fs::read_to_string(part_out.join("config.toml")).unwrap();
    assert!(
        written.contains("arch = \"mlp\"") && written.contains("batch_size = 6"),
        "{written}"
    );
    assert_eq!(summary(&part_out)["steps"], 9);
}

#[test]
fn a_killed_run_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            "mlp",
            "--width",
            "16",
            "--dataset",
            "fashion-mnist",
            "--train-limit",
            "3000",
            "--epochs",
            "12",
            "--batch-size",
            "50",
            "--m",
            "10",
            "--rho",
            "0.05",
            "--random-init",
            "--seed",
            "1",
            "--out",
            p(out),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full = tmp.path().join("full");
    ok(&args(&full).iter().map(String::as_str).collect::<Vec<_>>());

    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !killed.join("checkpoint/last.ckpt").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        summary(&killed)["status"],
        "running",
        "killed before the end"
    );
    let stdout = ok(&["train", "--resume", "--out", p(&killed)]);
    assert!(stdout.starts_with("ok: 648 steps"), "{stdout}");
    assert_eq!(metrics(&killed), metrics(&full));
    assert_eq!(summary(&killed)["resumes"], 1);
    for key in [
        "final_train_loss",
        "final_train_eval_loss",
        "final_train_eval_error",
        "best_val_error",
        "test_error",
        "test_error_at_best_val",
    ] {
        assert_eq!(summary(&killed)[key], summary(&full)[key], "{key}");
    }

    // Fine-tuning from it: same model works, a different one is refused with exit 2 and nothing written.
    let tuned = tmp.path().join("tuned");
    ok(&[
        "train",
        "--model",
        "mlp",
        "--width",
        "16",
        "--dataset",
        "fashion-mnist",
        "--train-limit",
        "3000",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--rho",
        "0.05",
        "--lr",
        "0.001",
        "--lr-schedule",
        "constant",
        "--init-from",
        p(&full),
        "--out",
        p(&tuned),
    ]);
    let err = bad(&[
        "train",
        "--model",
        "mlp",
        "--width",
        "8",
        "--dataset",
        "fashion-mnist",
        "--train-limit",
        "3000",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--init-from",
        p(&full),
        "--out",
        p(&tmp.path().join("x")),
    ]);
    assert!(err.contains("different model"), "{err}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(tmp.path(), 60, 20);
    let out = tmp.path().join("out");
    let data = p(tmp.path());
    let run = |extra: &[&str]| bad(&[&TINY[..], &["--out", p(&out)], extra].concat());
    let err = bad(&[
        "train",
        "--model",
        "resnet99",
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("unknown model \"resnet99\""), "{err}");
    assert!(bad(&[
        "train",
        "--model",
        "cnn",
        "--dataset",
        "svhn",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        p(&out)
    ])
    .contains("unknown dataset \"svhn\""));
    assert!(run(&["--data-dir", data, "--m", "3"])
        .contains("group size 3 must divide the batch size 8"));
    assert!(run(&["--data-dir", p(&tmp.path().join("nowhere"))]).contains("missing"));
    fs::write(
        tmp.path().join("t10k-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 8, 0, 0, 0, 8, 1, 2, 3],
    )
    .unwrap();
    assert!(run(&["--data-dir", data]).contains("truncated"));
    assert!(!out.exists());
    let err = bad(&["train", "--resume", "--out", p(&out)]);
    assert!(err.contains("nothing to resume"), "{err}");
    assert!(!out.exists());
    // --resume takes no other option than --device, whichever flag it is (the variant's flags were once let
    // through and the run resumed as plain SAM without a word).
    let err = bad(&["train", "--resume", "--rho", "0.1", "--out", p(&out)]);
    assert!(err.contains("but --rho was given"), "{err}");
    let err = bad(&[
        "train",
        "--resume",
        "--out",
        p(&out),
        "--variant",
        "asam",
        "--variant-eta",
        "0.5",
    ]);
    assert!(
        err.contains("but --variant, --variant-eta were given"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `samlab train ... 2>&1 | head -1`: the reader goes away after the first epoch's line. The run stops at the
/// next epoch's line, without a panic, exit status 0 as for `head`, resumable and marked `interrupted`.
#[test]
fn a_closed_stderr_interrupts_the_run_resumably() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("piped");
    let mut child = Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args([
            "train",
            "--model",
            "mlp",
            "--width",
            "16",
            "--dataset",
            "fashion-mnist",
            "--train-limit",
            "3000",
            "--epochs",
            "12",
            "--batch-size",
            "50",
            "--rho",
            "0.05",
            "--out",
            p(&out),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("epoch") && first[5..].trim_start().starts_with("1/12"),
        "{first}"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "no panic (101)");
    let s = summary(&out);
    assert_eq!(s["status"], "interrupted");
    let steps = s["steps"].as_u64().unwrap();
    assert!((54..648).contains(&steps), "{steps}");

    // A config.toml edited since the run started is not resumed: the rest would train another config than the
    // one config.toml claims for the whole run.
    let config = out.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("rho = 0.05"), "{text}");
    fs::write(&config, text.replace("rho = 0.05", "rho = 0.5")).unwrap();
    let err = bad(&["train", "--resume", "--out", p(&out)]);
    assert!(
        err.contains("was written by a run of another config.toml"),
        "{err}"
    );
    fs::write(&config, &text).unwrap();
    assert!(ok(&["train", "--resume", "--out", p(&out)]).starts_with("ok: 648 steps"));
    assert_eq!(summary(&out)["status"], "ok");

    // Nor is a checkpoint copied from another run read as this run's.
    let other = tmp.path().join("other");
    ok(&[
        "train",
        "--model",
        "mlp",
        "--width",
        "16",
        "--dataset",
        "fashion-mnist",
        "--train-limit",
        "600",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--out",
        p(&other),
    ]);
    fs::copy(
        other.join("checkpoint/last.ckpt"),
        out.join("checkpoint/last.ckpt"),
    )
    .unwrap();
    let err = bad(&["hessian", p(&out)]);
    assert!(
        err.contains("was written by a run of another config.toml"),
        "{err}"
    );
}

#[test]
fn a_nan_loss_ends_the_run_as_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(tmp.path(), 60, 20);
    let out = tmp.path().join("nan");
    let stdout = ok(&[
        &TINY[..],
        &[
            "--data-dir",
            p(tmp.path()),
            "--norm",
            "none",
            "--lr",
            "1e30",
            "--lr-schedule",
            "constant",
            "--out",
            p(&out),
        ],
    ]
    .concat());
    assert!(stdout.starts_with("diverged"), "{stdout}");
    let s = summary(&out);
    assert_eq!(s["status"], "diverged");
    assert!(s["final_train_loss"].is_null() && s["test_error"].is_null());
}
