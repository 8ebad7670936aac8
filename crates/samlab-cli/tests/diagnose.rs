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
