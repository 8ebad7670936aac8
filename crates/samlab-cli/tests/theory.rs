//! `samlab theory implicit-bias`: the numbers it writes and its refusals.

mod common;
use common::*;

use std::fs;

use serde_json::Value;

#[test]
fn implicit_bias_of_a_1sam_run_matches_theorem_1() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("1sam");
    let train = samlab(&[
        "diag",
        "train",
        "--method",
        "1sam",
        "--rho",
        "0.2",
        "--lr",
        "0.16666666666666666",
        "--iters",
        "10001",
        "--out",
        p(&run),
    ]);
    assert!(train.status.success());
    let out = samlab(&["theory", "implicit-bias", p(&run)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alpha_eff (mean, min, max)"));
    let r: Value =
        serde_json::from_str(&fs::read_to_string(run.join("implicit_bias.json")).unwrap()).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
    assert!((f("alpha0_mean") - 0.1).abs() < 1e-15);
    // SPEC §2.7 (notebook rho 0.1 = ours 0.2, gamma 5/d): mean alpha_eff 0.0393, prediction error 1.8e-3 vs 1.2e-1.
    assert!(
        (f("alpha_eff_mean") - 0.0393).abs() < 5e-4,
        "{}",
        f("alpha_eff_mean")
    );
    assert!(f("rel_err_pred_alpha_eff") < 5e-3 && f("rel_err_pred_alpha0") > 0.1);
    assert!(f("alpha_eff_max_increase") <= 0.0);
    assert!(f("identity_max_error") < 1e-10);
    assert!(f("delta_l1") > 0.0 && f("d_int_loss") > f("d_over_n_int_loss"));
    assert!((f("d_int_loss") / f("d_over_n_int_loss") - 20.0).abs() < 1e-9);
    assert_eq!(r["alpha_eff"].as_array().unwrap().len(), 30);

    // Issue 27: what is judged is the run's own u.npy. One scaled by 1% (a valid .npy) is refused by its SHA-256
    // in summary.json; in a run without the recorded hashes (written before them), a NaN in u.npy fails the replay
    // check (a comparison with NaN used to pass it).
    let u = run.join("u.npy");
    let bytes = fs::read(&u).unwrap();
    let data = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let with = |f: &dyn Fn(f64) -> f64| -> Vec<u8> {
        let mut b = bytes.clone();
        for x in b[data..].chunks_exact_mut(8) {
            let v = f64::from_le_bytes(x.try_into().unwrap());
            x.copy_from_slice(&f(v).to_le_bytes());
        }
        b
    };
    fs::write(&u, with(&|v| 1.01 * v)).unwrap();
    let err = bad(&["theory", "implicit-bias", p(&run)]);
    assert!(err.contains("u.npy is not the file its run wrote"), "{err}");
    let summary_path = run.join("summary.json");
    let mut s: Value = serde_json::from_str(&fs::read_to_string(&summary_path).unwrap()).unwrap();
    s.as_object_mut()
        .unwrap()
        .remove("artefacts_sha256")
        .unwrap();
    fs::write(&summary_path, s.to_string()).unwrap();
    fs::write(&u, with(&|v| if v > 0.05 { f64::NAN } else { v })).unwrap();
    let err = bad(&["theory", "implicit-bias", p(&run)]);
    assert!(
        err.contains("does not give the stored u.npy") && err.contains("NaN stored"),
        "{err}"
    );
    // Without the NaN, a run without hashes is judged as before.
    fs::write(&u, &bytes).unwrap();
    ok(&["theory", "implicit-bias", p(&run)]);
}

#[test]
fn runs_outside_the_theorem_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("short");
    // 50 updates do not interpolate.
    assert!(samlab(&[
        "diag",
        "train",
        "--method",
        "gd",
        "--lr",
        "0.1",
        "--iters",
        "50",
        "--out",
        p(&run)
    ])
    .status
    .success());
    let out = samlab(&["theory", "implicit-bias", p(&run)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("assumes the run interpolates") && stderr.contains("times the initial one"),
        "{stderr}"
    );
    assert!(!run.join("implicit_bias.json").exists());

    let multi = tmp.path().join("multi");
    let args = [
        "diag",
        "train",
        "--method",
        "1sam",
        "--rho",
        "0.1",
        "--ascent-steps",
        "2",
        "--lr",
        "0.1",
        "--iters",
        "100",
        "--out",
        p(&multi),
    ];
    assert!(samlab(&args).status.success());
    let out = samlab(&["theory", "implicit-bias", p(&multi)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("single-step"));

    let out = samlab(&["theory", "implicit-bias", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a run directory"));
}
