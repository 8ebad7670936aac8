//! End-to-end tests of `samlab diagnose` on tiny deep-net runs.

mod common;
use common::*;

use std::fs;
use std::path::Path;

use serde_json::Value;

/// [`tiny_mlp_run`] of width 16 with the extra flags `sam`.
fn tiny_run(out: &Path, sam: &[&str]) {
    tiny_mlp_run(out, &[&["--width", "16"], sam].concat());
}

fn diagnosis(run: &Path) -> Value {
    serde_json::from_str(&ok(&["diagnose", p(run), "--json"])).unwrap()
}

#[test]
fn diagnose_tells_erm_a_negligible_radius_and_an_active_sam_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (erm, tiny, sam) = (
        tmp.path().join("erm"),
        tmp.path().join("tiny"),
        tmp.path().join("sam"),
    );
    tiny_run(&erm, &[]);
    tiny_run(&tiny, &["--rho", "1e-6"]);
    tiny_run(&sam, &["--rho", "0.5"]);

    let text = ok(&["diagnose", p(&erm)]);
    assert!(text.contains("SAM inactive (rho = 0 / ERM run)"), "{text}");
    let d = diagnosis(&erm);
    assert_eq!(d["verdict"], "inactive");
    assert_eq!(d["measured"], 0);
    assert!(d["grad_cos_mean"].is_null());

    let d = diagnosis(&tiny);
    assert_eq!(d["verdict"], "rho_too_small", "{d}");
    assert!(d["grad_cos_mean"].as_f64().unwrap() > 0.999, "{d}");
    let ratio = d["delta_over_w"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1e-5, "{d}");

    let text = ok(&["diagnose", p(&sam)]);
    assert!(
        text.starts_with(&format!("{}: SAM active: rho up to 0.5", p(&sam))),
        "{text}"
    );
    let d = diagnosis(&sam);
    assert_eq!(d["verdict"], "active", "{d}");
    assert_eq!(d["measured"], 2);
    let cos = d["grad_cos_mean"].as_f64().unwrap();
    assert!(cos > 0.0 && cos < 0.999, "{d}");
    assert!(d["sharpness_mean"].as_f64().unwrap() > 0.0, "{d}");
    // BatchNorm's batch statistics moved between the clean and the perturbed pass.
    assert!(d["bn_mean_shift"].as_f64().unwrap() > 0.0, "{d}");
    // diagnose writes nothing.
    let before: Vec<_> = fs::read_dir(&sam)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!before
        .iter()
        .any(|f| f.to_string_lossy().contains("diagnos")));
}

#[test]
fn diagnose_refuses_a_directory_that_is_not_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let err = bad(&["diagnose", p(tmp.path())]);
    assert!(
        err.contains(&format!("{} is not a run directory", p(tmp.path()))),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
    let missing = tmp.path().join("missing");
    let err = bad(&["diagnose", p(&missing), "--json"]);
    assert!(err.contains("missing is not a run directory"), "{err}");
    assert!(!missing.exists());
    fs::write(tmp.path().join("config.toml"), "engine = \"deep\"\n").unwrap();
    let err = bad(&["diagnose", p(tmp.path())]);
    assert!(err.contains("is not a run directory"), "{err}");
}

/// The columns of a metrics.csv by name.
fn columns(run: &Path) -> Vec<(String, Vec<f64>)> {
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    names
        .iter()
        .enumerate()
        .map(|(k, n)| (n.to_string(), rows.iter().map(|r| r[k]).collect()))
        .collect()
}

/// `run`'s metrics.csv cut to its first `keep` columns: a run written before samlab logged what SAM did.
fn strip_sam_columns(run: &Path, keep: usize) {
    let path = run.join("metrics.csv");
    let text = fs::read_to_string(&path).unwrap();
    let cut: Vec<String> = text
        .lines()
        .map(|l| l.split(',').take(keep).collect::<Vec<_>>().join(","))
        .collect();
    fs::write(&path, cut.join("\n") + "\n").unwrap();
}

/// The checks of an analytic SAM run diagnosed active: every logged step but the last measured, a cosine below
/// 1 but positive, a positive realised sharpness, no BatchNorm.
fn assert_active(d: &Value, rho: f64) {
    assert_eq!(d["verdict"], "active", "{d}");
    assert_eq!(d["measured"], d["points"].as_u64().unwrap() - 1, "{d}");
    assert_eq!(d["rho_max"], rho, "{d}");
    let ratio = d["delta_over_w"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 0.1, "{d}");
    let cos = d["grad_cos_mean"].as_f64().unwrap();
    assert!(cos > 0.5 && cos < 0.999, "{d}");
    assert!(d["grad_cos_min"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(d["grad_cos_negative"], 0.0, "{d}");
    assert!(d["sharpness_mean"].as_f64().unwrap() > 0.0, "{d}");
    assert!(d["sharpness_relative"].as_f64().unwrap() > 1e-3, "{d}");
    assert!(d["bn_mean_shift"].is_null(), "{d}");
}

#[test]
fn diagnose_reads_diagonal_net_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let train = |name: &str, flags: &[&str]| {
        let out = dir(name);
        let base = [
            "diag",
            "train",
            "--lr",
            "0.3",
            "--iters",
            "3000",
            "--out",
            p(&out),
        ];
        ok(&[&base[..], flags].concat());
        out
    };
    let sam = train("sam", &["--method", "1sam", "--rho", "0.2"]);
    let erm = train("erm", &["--method", "gd"]);
    let tiny = train(
        "tiny",
        &["--method", "nsam", "--normalize", "--rho", "1e-6"],
    );

    let text = ok(&["diagnose", p(&sam)]);
    assert!(
        text.starts_with(&format!(
            "{}: SAM active: rho up to 0.2, ||delta|| / ||w|| = ",
            p(&sam)
        )),
        "{text}"
    );
    let d = diagnosis(&sam);
    assert_eq!(d["engine"], "diag");
    assert_active(&d, 0.2);
    // Unnormalized 1-SAM: ||delta|| = rho ||grad l_i|| shrinks with the loss, far below rho ||w||.
    assert!(d["delta_over_w"].as_f64().unwrap() < 0.2, "{d}");

    let d = diagnosis(&erm);
    assert_eq!(
        (&d["verdict"], &d["measured"]),
        (&"inactive".into(), &0.into()),
        "{d}"
    );
    let d = diagnosis(&tiny);
    assert_eq!(d["verdict"], "rho_too_small", "{d}");
    assert!(d["grad_cos_mean"].as_f64().unwrap() > 0.999, "{d}");
    // Normalized SAM: ||delta|| = rho.
    let c = columns(&tiny);
    let delta = &c.iter().find(|(n, _)| n == "sam_delta_norm").unwrap().1;
    assert!(
        delta[..delta.len() - 1]
            .iter()
            .all(|&x| (x - 1e-6).abs() < 1e-12),
        "{delta:?}"
    );
    assert!(delta.last().unwrap().is_nan());

    // A run written before the SAM columns still reads: not measured.
    strip_sam_columns(&sam, 3);
    let d = diagnosis(&sam);
    assert_eq!(
        (&d["verdict"], &d["measured"]),
        (&"not_measured".into(), &0.into()),
        "{d}"
    );
    // A damaged metrics.csv is bad input.
    fs::write(
        sam.join("metrics.csv"),
        "iteration,train_loss,test_loss\n0,x,1\n",
    )
    .unwrap();
    let err = bad(&["diagnose", p(&sam)]);
    assert!(
        err.contains("is not a run directory") && err.contains("train_loss"),
        "{err}"
    );
}

#[test]
fn diagnose_reads_relu_net_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let train = |name: &str, flags: &[&str]| {
        let out = tmp.path().join(name);
        let base = [
            "relu",
            "train",
            "--lr",
            "0.001",
            "--iters",
            "2000",
            "--out",
            p(&out),
        ];
        ok(&[&base[..], flags].concat());
        out
    };
    let sam = train("sam", &["--method", "nsam", "--normalize", "--rho", "0.5"]);
    let erm = train("erm", &["--method", "gd"]);
    let tiny = train(
        "tiny",
        &["--method", "nsam", "--normalize", "--rho", "1e-7"],
    );

    let d = diagnosis(&sam);
    assert_eq!(d["engine"], "relu");
    assert_active(&d, 0.5);
    // The summed training loss (12 points) is compared per example, as the sharpness is.
    let c = columns(&sam);
    let col = |name: &str| &c.iter().find(|(n, _)| n == name).unwrap().1;
    let (loss, sharpness) = (col("train_loss"), col("sam_sharpness"));
    let measured: Vec<usize> = (0..loss.len())
        .filter(|&k| !sharpness[k].is_nan())
        .collect();
    let mean = |v: &[f64]| measured.iter().map(|&k| v[k]).sum::<f64>() / measured.len() as f64;
    let relative = mean(sharpness) / (mean(loss) / 12.0);
    let got = d["sharpness_relative"].as_f64().unwrap();
    assert!(
        (got - relative).abs() < 1e-9 * relative,
        "{got} vs {relative}"
    );

    assert_eq!(diagnosis(&erm)["verdict"], "inactive");
    let d = diagnosis(&tiny);
    assert_eq!(d["verdict"], "rho_too_small", "{d}");
    assert!(d["delta_over_w"].as_f64().unwrap() < 1e-8, "{d}");

    strip_sam_columns(&sam, 6);
    assert_eq!(diagnosis(&sam)["verdict"], "not_measured");
    // Without its training data a summed loss cannot be compared: bad input.
    fs::remove_file(sam.join("y_train.npy")).unwrap();
    let err = bad(&["diagnose", p(&sam), "--json"]);
    assert!(err.contains("is not a run directory"), "{err}");
}
