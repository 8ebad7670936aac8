//! End-to-end tests of `samlab sharpness`, `samlab interpolate` and `samlab hessian` on tiny runs.

mod common;
use common::*;

use std::fs;
use std::path::Path;

use serde_json::Value;

/// [`tiny_mlp_run`] of width `width` with seed `seed`.
fn tiny_run(out: &Path, width: &str, seed: &str) {
    tiny_mlp_run(out, &["--width", width, "--seed", seed]);
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn sharpness_and_hessian_write_their_json() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run, "8", "1");
    let stdout = ok(&[
        "sharpness",
        p(&run),
        "--examples",
        "64",
        "--m",
        "32",
        "--rho",
        "0.2",
        "--average",
        "--samples",
        "2",
    ]);
    assert!(
        stdout.contains("worst case") && stdout.contains("average case"),
        "{stdout}"
    );
    let s = json(&run.join("sharpness.json"));
    assert_eq!(s["run"]["checkpoint"], "last");
    assert_eq!(s["run"]["model"]["arch"], "mlp");
    assert_eq!(num(&s["config"]["rho"]), 0.2);
    // The authors' defaults: evaluation-mode BatchNorm, restarts kept by error, ascent on the labels.
    assert_eq!(s["config"]["bn"], "running");
    assert_eq!(s["config"]["select"], "error");
    assert_eq!(s["config"]["target"], "labels");
    assert_eq!(s["config"]["adaptive"], false);
    let r = &s["result"];
    assert_eq!(r["chunks"].as_array().unwrap().len(), 2);
    assert!(num(&r["loss_increase"]) > 0.0, "{r}");
    assert!(num(&r["max_delta_norm"]) <= 0.2 * (1.0 + 1e-5), "{r}");
    assert!(num(&r["average"]["loss_increase"]).is_finite(), "{r}");
    assert!(num(&r["loss"]) > 0.0 && (0.0..=1.0).contains(&num(&r["error"])));
    // Random starts come with random wrong labels unless told otherwise; adaptive stays in its ellipsoid.
    let stdout = ok(&[
        "sharpness",
        p(&run),
        "--examples",
        "64",
        "--m",
        "32",
        "--rho",
        "0.2",
        "--random-init",
        "--restarts",
        "2",
        "--adaptive",
        "--bn",
        "batch",
        "--select",
        "loss",
    ]);
    assert!(
        stdout.contains("adaptive") && stdout.contains("random wrong labels"),
        "{stdout}"
    );
    let s = json(&run.join("sharpness.json"));
    assert_eq!(s["config"]["bn"], "batch");
    assert_eq!(s["config"]["select"], "loss");
    assert_eq!(s["config"]["target"], "random_wrong");
    assert_eq!(s["config"]["adaptive"], true);
    let r = &s["result"];
    assert!(num(&r["max_delta_norm"]) <= 0.2 * (1.0 + 1e-5), "{r}");
    assert!(num(&r["max_delta_norm"]) >= 0.19, "{r}");
    ok(&[
        "sharpness",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--random-init",
        "--ascent-target",
        "labels",
    ]);
    assert_eq!(
        json(&run.join("sharpness.json"))["config"]["target"],
        "labels"
    );

    ok(&[
        "hessian",
        p(&run),
        "--checkpoint",
        "best",
        "--examples",
        "32",
        "--m",
        "16",
        "--max-iters",
        "40",
        "--top-k",
        "2",
        "--trace",
        "--probes",
        "4",
        "--density",
        "--density-steps",
        "6",
    ]);
    let h = json(&run.join("hessian.json"));
    assert_eq!(h["run"]["checkpoint"], "best");
    let top = h["top_eigenvalues"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let (l1, l2) = (num(&top[0]["value"]), num(&top[1]["value"]));
    assert!(l1 >= l2 && l2 > 0.0, "{top:?}");
    let bottom = num(&h["bottom_eigenvalue"]["value"]);
    assert!(bottom <= l2, "{bottom}");
    // Converged means every residual is within tol (1e-3) of the largest eigenvalue.
    let steps = h["lanczos_steps"].as_u64().unwrap();
    assert!(steps <= 40 && h["products"].as_u64().unwrap() == steps + 3);
    if h["converged"].as_bool().unwrap() {
        assert!(top
            .iter()
            .all(|p| num(&p["residual"]) <= 1e-3 * l1.max(-bottom)));
    }
    let trace = &h["trace"];
    assert_eq!(trace["samples"].as_array().unwrap().len(), 4);
    assert!(num(&trace["std_error"]) > 0.0);
    let density = &h["density"];
    assert_eq!(density["grid"].as_array().unwrap().len(), 400);
    assert!(run.join("hessian_density.svg").exists());
    assert_eq!(h["feature_neurons"], 8);
    let f = &h["feature_sparsity"];
    assert!((0.0..=1.0).contains(&num(&f["sparsity"])), "{f}");
    assert!(num(&f["sparsity"]) <= num(&f["activation_fraction"]), "{f}");
}

#[test]
fn interpolate_writes_the_curve_and_refuses_other_models() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    tiny_run(&a, "8", "1");
    tiny_run(&b, "8", "2");
    tiny_run(&c, "6", "1");
    let out = tmp.path().join("interp");
    let args = |b: &Path, out: &Path| -> Vec<String> {
        [
            "interpolate",
            p(&a),
            p(b),
            "--out",
            p(out),
            "--from",
            "-0.5",
            "--to",
            "1.5",
            "--step",
            "0.5",
            "--bn-examples",
            "100",
            "--examples",
            "40",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    ok(&strs(&args(&b, &out)));
    let csv = fs::read_to_string(out.join("interpolation.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "alpha,train_loss,train_error,test_loss,test_error"
    );
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(
        lines[2].starts_with("0,") && lines[4].starts_with("1,"),
        "{csv}"
    );
    let j = json(&out.join("interpolation.json"));
    assert_eq!(j["points"].as_array().unwrap().len(), 5);
    assert_eq!(j["bn_reestimated"], true);
    let s = &j["summary"];
    assert_eq!(num(&s["at_0"]["alpha"]), 0.0);
    assert_ne!(s["at_0"]["test_loss"], s["at_1"]["test_loss"]);
    assert!(num(&s["train_loss_barrier"]) >= 0.0);
    assert!(num(&s["min_test_error"]) <= num(&s["at_0"]["test_error"]));
    assert!(out.join("interpolation.svg").exists() && out.join("interpolation.png").exists());

    let refused = tmp.path().join("refused");
    let err = bad(&strs(&args(&c, &refused)));
    assert!(err.contains("different models"), "{err}");
    assert!(!refused.exists(), "nothing written");
}

#[test]
fn bad_input_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run, "4", "3");
    let err = bad(&[
        "sharpness",
        p(&run),
        "--rho",
        "0",
        "--examples",
        "32",
        "--m",
        "32",
    ]);
    assert!(err.contains("rho"), "{err}");
    let err = bad(&["sharpness", p(&run), "--examples", "50", "--m", "32"]);
    assert!(err.contains("divide"), "{err}");
    let err = bad(&[
        "sharpness",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--restarts",
        "2",
    ]);
    assert!(err.contains("restarts"), "{err}");
    let err = bad(&["hessian", p(&run), "--examples", "100000"]);
    assert!(err.contains("examples"), "{err}");
    let err = bad(&[
        "hessian",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--top-k",
        "100000000",
    ]);
    assert!(err.contains("number of parameters"), "{err}");
    let err = bad(&[
        "hessian",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--top-k",
        "0",
    ]);
    assert!(err.contains("top_k"), "{err}");
    let err = bad(&[
        "hessian",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--trace",
        "--probes",
        "0",
    ]);
    assert!(err.contains("probes"), "{err}");
    let err = bad(&[
        "hessian",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--density",
        "--density-points",
        "0",
    ]);
    assert!(err.contains("points"), "{err}");
    let err = bad(&[
        "hessian",
        p(&run),
        "--examples",
        "32",
        "--m",
        "32",
        "--eps-rel",
        "1e30",
    ]);
    assert!(err.contains("eps_rel"), "{err}");
    assert!(!run.join("sharpness.json").exists() && !run.join("hessian.json").exists());
    // A directory with a config but no checkpoint yet, and one that is not a run at all.
    let fresh = tmp.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    fs::copy(run.join("config.toml"), fresh.join("config.toml")).unwrap();
    let err = bad(&["sharpness", p(&fresh)]);
    assert!(err.contains("no checkpoint"), "{err}");
    let err = bad(&["hessian", p(tmp.path())]);
    assert!(err.contains("config.toml"), "{err}");
}

/// `import-torch`: a state_dict with PyTorch's names and shapes (here a run's weights-only best.ckpt) becomes a run
/// directory that the analysis tools read, with the numbers of the run it came from; weights of another model are
/// refused, naming the tensor.
#[test]
fn import_torch_makes_an_analysable_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run, "8", "1");
    let state_dict = run.join("checkpoint").join("best.ckpt");
    let import = |width: &str, out: &Path| -> Vec<String> {
        [
            "import-torch",
            p(&state_dict),
            "--model",
            "mlp",
            "--width",
            width,
            "--norm",
            "batch",
            "--dataset",
            "fashion-mnist",
            "--train-limit",
            "300",
            "--seed",
            "1",
            "--out",
            p(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let imported = tmp.path().join("imported");
    let stdout = ok(&strs(&import("8", &imported)));
    assert!(stdout.contains("imported"), "{stdout}");
    let flags = ["--examples", "64", "--m", "32", "--rho", "0.2"];
    ok(&[&["sharpness", p(&run), "--checkpoint", "best"][..], &flags].concat());
    ok(&[&["sharpness", p(&imported)][..], &flags].concat());
    let (a, b) = (
        json(&run.join("sharpness.json")),
        json(&imported.join("sharpness.json")),
    );
    for key in ["loss", "error", "loss_increase"] {
        assert_eq!(a["result"][key], b["result"][key], "{key}");
    }
    let err = bad(&strs(&import("16", &tmp.path().join("wide"))));
    assert!(err.contains("fc1.weight has shape"), "{err}");
    assert!(!tmp.path().join("wide").exists());
}
