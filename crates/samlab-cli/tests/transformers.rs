//! `samlab train` on the transformers and with AdamW: a tiny ViT run with AdamW and SAM-ON, and the bad input
//! (exit 2 naming the problem, nothing written).

mod common;
use common::*;

/// A tiny ViT on 8x8 images trains with AdamW and SAM-ON through the flags, and its config records both.
#[test]
fn a_vit_trains_with_adamw_and_sam_on() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(tmp.path(), 40, 10);
    let out = tmp.path().join("vit");
    #[rustfmt::skip]
    ok(&[
        "train", "--model", "vit", "--width", "8", "--depth", "1", "--patch", "4", "--heads", "2",
        "--dataset", "mnist", "--data-dir", p(tmp.path()), "--epochs", "1", "--batch-size", "8",
        "--optimizer", "adamw", "--beta2", "0.99", "--decoupled-wd", "0.05", "--lr", "0.001",
        "--rho", "0.05", "--variant", "sam-on", "--out", p(&out),
    ]);
    assert_eq!(summary(&out)["status"], "ok");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for part in [
        "arch = \"vit\"",
        "kind = \"adamw\"",
        "beta2 = 0.99",
        "patch = 4",
        "heads = 2",
    ] {
        assert!(config.contains(part), "{part} not in {config}");
    }
}

#[test]
fn bad_shapes_and_combinations_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(tmp.path(), 40, 10);
    let out = tmp.path().join("run");
    let data = p(tmp.path()).to_string();
    let run = |extra: &[&str], expect: &[&str]| {
        #[rustfmt::skip]
        let base = [
            "train", "--dataset", "mnist", "--data-dir", &data, "--epochs", "1", "--batch-size", "8",
            "--out", p(&out),
        ];
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let err = bad(&args);
        for e in expect {
            assert!(err.contains(e), "samlab {args:?}: expected {e:?} in: {err}");
        }
        assert!(!out.exists(), "samlab {args:?} wrote {}", out.display());
    };
    run(
        &["--model", "vit", "--patch", "3"],
        &["patch size 3 must divide the image's 8x8"],
    );
    run(
        &["--model", "vit", "--width", "6", "--heads", "4"],
        &["4 heads must divide the width 6"],
    );
    run(
        &["--model", "mixer", "--pool", "cls"],
        &["the Mixer pools by the mean only"],
    );
    run(
        &["--model", "cnn", "--patch", "4"],
        &["apply to vit and mixer, not cnn"],
    );
    run(
        &["--model", "vit", "--norm", "batch"],
        &["vit takes layer norm only"],
    );
    run(
        &["--model", "cnn", "--norm", "layer"],
        &["cnn takes no layer norm"],
    );
    run(
        &["--model", "vit", "--optimizer", "adamw"],
        &[
            "adamw decays the weights outside the gradient",
            "--decoupled-wd",
        ],
    );
    run(
        &[
            "--model",
            "vit",
            "--optimizer",
            "adamw",
            "--l2",
            "0",
            "--rho",
            "0.05",
            "--variant",
            "msam",
        ],
        &["MSAM", "adamw"],
    );
    run(
        &["--model", "vit", "--beta1", "0.8"],
        &["apply to --optimizer adamw"],
    );
    run(
        &[
            "--model",
            "vit",
            "--optimizer",
            "adamw",
            "--l2",
            "0",
            "--beta2",
            "1",
        ],
        &["beta2", "[0, 1)"],
    );
}
