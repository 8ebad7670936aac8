//! End-to-end tests of `samlab relu train`: the run-directory contract, exact replays, divergence, bad input.
//! (The ReLU presets' claims are checked by `reproduce --quick` in cli.rs.)

mod common;
use common::*;

use std::fs;
use std::path::Path;

use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};

/// The notebook's SAM step (normalized n-SAM, rho 0.3, linear decay), 2000 updates.
const NSAM: [&str; 16] = [
    "relu",
    "train",
    "--method",
    "nsam",
    "--normalize",
    "--rho",
    "0.3",
    "--lr",
    "5e-5",
    "--lr-schedule",
    "linear-decay",
    "--iters",
    "2000",
    "--seed",
    "0",
    "--width=100",
];

#[test]
fn relu_train_writes_the_run_directory_contract_and_replays_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nsam");
    let stdout = ok(&[&NSAM[..], &["--out", p(&out)]].concat());
    assert!(stdout.starts_with("ok: 2000 updates"), "{stdout}");
    let s = summary(&out);
    assert_eq!(s["status"], "ok");
    assert_eq!(s["engine"], "relu");
    assert_eq!(s["iterations"], 2000);
    // bench/relu_reference.py (independent NumPy) gives the same final loss and 41 kinks.
    let loss = s["final_train_loss"].as_f64().unwrap();
    assert!((loss / 1.259705756471614 - 1.0).abs() < 1e-9, "{loss}");
    assert_eq!(s["kinks"], 41);
    let active = s["active_neurons"].as_u64().unwrap();
    assert!(active >= 1 && active <= s["alive_neurons"].as_u64().unwrap());
    let sparsity = s["feature_sparsity"].as_f64().unwrap();
    assert!(sparsity > 0.0 && sparsity <= s["activation_fraction"].as_f64().unwrap());

    let w: Array2<f64> = read_npy(out.join("W.npy")).unwrap();
    let a: Array1<f64> = read_npy(out.join("a.npy")).unwrap();
    assert_eq!((w.dim(), a.len()), ((100, 1), 100));
    let f: Array2<f64> = read_npy(out.join("function.npy")).unwrap();
    assert_eq!(f.ncols(), 2);
    assert!((f[[1, 0]] - f[[0, 0]] - 0.01).abs() < 1e-12);
    let csv = fs::read_to_string(out.join("function.csv")).unwrap();
    assert!(csv.starts_with("x,f\n"));
    assert_eq!(csv.lines().count(), f.nrows() + 1);
    let metrics = fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with(
        "iteration,train_loss,test_loss,kinks,active_neurons,feature_sparsity,\
         sam_weight_norm,sam_delta_norm,sam_grad_cos,sam_sharpness\n0,"
    ));
    // What the n-SAM step from the first row did (normalized: ||delta|| = rho); nothing after the last update.
    let first: Vec<f64> = metrics
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(
        (first[7] - 0.3).abs() < 1e-9 && first[8] > 0.0 && first[8] <= 1.0,
        "{first:?}"
    );
    let last = metrics.lines().last().unwrap();
    assert!(last.starts_with("2000,"), "{last}");
    assert!(
        last.ends_with(&format!(",41,{active},{sparsity},NaN,NaN,NaN,NaN")),
        "{last}"
    );
    let x: Array2<f64> = read_npy(out.join("X_train.npy")).unwrap();
    assert_eq!(x.dim(), (12, 1));

    let again = tmp.path().join("again");
    ok(&[
        "run",
        "--config",
        p(&out.join("config.toml")),
        "--out",
        p(&again),
    ]);
    for file in ["W.npy", "b.npy", "a.npy", "metrics.csv", "function.npy"] {
        assert_eq!(
            fs::read(out.join(file)).unwrap(),
            fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn teacher_student_sgd_with_a_step_schedule_writes_a_2d_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ts");
    let stdout = ok(&[
        "relu",
        "train",
        "--dataset",
        "teacher-student",
        "--width",
        "20",
        "--no-bias",
        "--init",
        "gaussian",
        "--w-scale",
        "0.5",
        "--a-scale",
        "0",
        "--loss",
        "mean",
        "--method",
        "sgd",
        "--lr",
        "0.26",
        "--lr-schedule",
        "step",
        "--decay-at",
        "0.5",
        "--decay-factor",
        "0.5",
        "--warmup-steps",
        "100",
        "--iters",
        "3000",
        "--log",
        "ends",
        "--out",
        p(&out),
    ]);
    assert!(stdout.starts_with("ok"), "{stdout}");
    let s = summary(&out);
    assert!(s["kinks"].is_null());
    assert!(s["final_test_loss"].as_f64().unwrap() < 0.1);
    assert!(fs::read_to_string(out.join("function.csv"))
        .unwrap()
        .starts_with("x0,x1,f\n"));
    let b: Array1<f64> = read_npy(out.join("b.npy")).unwrap();
    assert!(b.iter().all(|&v| v == 0.0));
    let config = fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("teacher_student") && config.contains("kind = \"step\""));
}

#[test]
fn early_stop_and_divergence_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let stopped = tmp.path().join("stopped");
    let gd = ["relu", "train", "--method", "gd", "--iters", "100000"];
    ok(&[
        &gd[..],
        &["--lr", "5e-5", "--stop-below", "0.5", "--out", p(&stopped)],
    ]
    .concat());
    let s = summary(&stopped);
    assert_eq!(s["stopped_early"], true);
    // bench/relu_reference.py stops after the same update.
    assert_eq!(s["iterations"], 2139);

    let diverged = tmp.path().join("diverged");
    let stdout = ok(&[&gd[..], &["--lr", "0.05", "--out", p(&diverged)]].concat());
    assert!(stdout.starts_with("diverged"), "{stdout}");
    let s = summary(&diverged);
    assert_eq!(s["status"], "diverged");
    assert!(s["final_train_loss"].is_null());
    assert!(s["last_finite_train_loss"].as_f64().unwrap().is_finite());
    let w: Array2<f64> = read_npy(diverged.join("W.npy")).unwrap();
    assert!(
        w.iter().all(|v| v.is_finite()),
        "the last finite network is kept"
    );
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let o = p(&out);
    let base = ["relu", "train", "--lr", "0.1", "--iters", "10", "--out", o];
    let cases: [(&[&str], &str); 9] = [
        (&["--method", "gd", "--width", "0"], "invalid width"),
        (
            &["--method", "msam", "--m", "5", "--rho", "0.1"],
            "must divide the batch size 12",
        ),
        (&["--method", "nsam"], "need --rho"),
        (
            &["--method", "gd", "--rho", "0.1"],
            "only for the SAM methods",
        ),
        (
            &["--method", "gd", "--decay-at", "0.5"],
            "need --lr-schedule step",
        ),
        (
            &[
                "--method",
                "gd",
                "--lr-schedule",
                "step",
                "--decay-at",
                "0.5",
            ],
            "1 drop points but 0 factors",
        ),
        (&["--method", "gd", "--init-scale=-1"], "invalid init scale"),
        (
            &["--method", "gd", "--corr-threshold", "2"],
            "invalid corr_threshold",
        ),
        (
            &["--method", "gd", "--n", "5"],
            "for --dataset teacher-student",
        ),
    ];
    for (extra, message) in cases {
        let stderr = bad(&[&base[..], extra].concat());
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} left {o}");
    }
    let stderr = bad(&[
        "relu", "train", "--method", "gd", "--lr=nan", "--iters", "10", "--out", o,
    ]);
    assert!(stderr.contains("invalid lr"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn bad_data_directories_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let out = tmp.path().join("out");
    let train = |dir: &Path| {
        let stderr = bad(&[
            "relu",
            "train",
            "--data",
            p(dir),
            "--method",
            "gd",
            "--lr",
            "1e-3",
            "--iters",
            "5",
            "--out",
            p(&out),
        ]);
        assert!(!out.exists());
        stderr
    };
    assert!(train(&data).contains("X_train.npy"));
    // Empty data.
    write_npy(data.join("X_train.npy"), &Array2::<f64>::zeros((0, 1))).unwrap();
    write_npy(data.join("y_train.npy"), &Array1::<f64>::zeros(0)).unwrap();
    assert!(train(&data).contains("need at least one training example"));
    // Mismatched shapes.
    let x = Array2::<f64>::from_shape_fn((6, 2), |(i, j)| (i + 3 * j) as f64 / 10.0);
    write_npy(data.join("X_train.npy"), &x).unwrap();
    write_npy(data.join("y_train.npy"), &Array1::<f64>::ones(5)).unwrap();
    assert!(train(&data).contains("y_train has 5 entries for 6 training rows"));
    // Non-finite values.
    let mut y = Array1::<f64>::ones(6);
    y[4] = f64::NAN;
    write_npy(data.join("y_train.npy"), &y).unwrap();
    assert!(train(&data).contains("y_train holds a non-finite value at index 4"));
    // Test arrays that do not match the training ones.
    write_npy(data.join("y_train.npy"), &Array1::<f64>::ones(6)).unwrap();
    write_npy(data.join("X_test.npy"), &Array2::<f64>::zeros((3, 1))).unwrap();
    write_npy(data.join("y_test.npy"), &Array1::<f64>::zeros(3)).unwrap();
    assert!(train(&data).contains("X_train has 2 columns but X_test has 1"));
    // Good data without a test set trains (test = train).
    fs::remove_file(data.join("X_test.npy")).unwrap();
    fs::remove_file(data.join("y_test.npy")).unwrap();
    ok(&[
        "relu",
        "train",
        "--data",
        p(&data),
        "--method",
        "gd",
        "--width",
        "8",
        "--init",
        "he",
        "--lr",
        "1e-2",
        "--iters",
        "5",
        "--out",
        p(&out),
    ]);
    let s = summary(&out);
    assert_eq!(s["final_train_loss"], s["final_test_loss"]);
}
