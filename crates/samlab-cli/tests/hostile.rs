//! Hostile input: files, flags, configs and run directories a careless script or a damaged disk can produce.
//! Every case must end with exit status 2 and a message naming the problem (never a panic, exit 101, or an
//! abort), and leave every file that existed before untouched. Plus a stress test of concurrent runs into one
//! directory. Inputs are tiny: the whole file runs in seconds.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use samlab_deep::checkpoint::Checkpoint;

/// Every file under `dir` with its bytes, lock files excepted (a refused run may leave `.<name>.lock`); a symbolic
/// link stands for its target's path (it is not followed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                files.insert(path, target.to_string_lossy().as_bytes().to_vec());
            } else if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().ends_with(".lock") {
                let bytes = fs::read(&path).unwrap();
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Runs `samlab args`, asserting exit status 2, a message containing every one of `expect`, and no change to
/// any file under `root`.
fn refused(root: &Path, args: &[&str], expect: &[&str]) {
    let before = snapshot(root);
    let err = bad(args);
    for e in expect {
        assert!(err.contains(e), "samlab {args:?}: expected {e:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(snapshot(root), before, "samlab {args:?} changed files");
}

/// `samlab diag train` with gradient descent for `iters` updates into `out`, plus `extra` flags.
fn diag_iters(out: &Path, iters: usize, extra: &[&str]) -> Vec<String> {
    let iters = iters.to_string();
    let base = [
        "diag",
        "train",
        "--method",
        "gd",
        "--lr",
        "0.1",
        "--iters",
        &iters,
        "--out",
        p(out),
    ];
    [&base[..], extra]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
}

fn diag(out: &Path, extra: &[&str]) -> Vec<String> {
    diag_iters(out, 100, extra)
}

fn refused_owned(root: &Path, args: &[String], expect: &[&str]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(root, &args, expect);
}

#[test]
fn config_files_and_output_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    let missing = root.join("missing.toml");
    for cmd in ["run", "train"] {
        refused(
            root,
            &[cmd, "--config", p(&missing), "--out", p(&out)],
            &["cannot read the config file", "missing.toml"],
        );
    }
    // A config that never ends is read no further than the bound.
    for cmd in ["run", "train"] {
        refused(
            root,
            &[cmd, "--config", "/dev/zero", "--out", p(&out)],
            &[
                "cannot read the config file /dev/zero",
                "longer than 16777216 bytes",
            ],
        );
    }
    // `train` without a schedule and without a config to take it from.
    refused(
        root,
        &[
            "train",
            "--model",
            "mlp",
            "--dataset",
            "mnist",
            "--epochs",
            "1",
            "--out",
            p(&out),
        ],
        &["--epochs and --batch-size"],
    );
    // A diag config with an unknown key: the engine and the key are named.
    let good = root.join("good");
    ok(&diag(&good, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let text = fs::read_to_string(good.join("config.toml")).unwrap();
    let typo = root.join("typo.toml");
    fs::write(&typo, text.replace("[train]", "[train]\nbogus_key = 1")).unwrap();
    refused(
        root,
        &["run", "--config", p(&typo), "--out", p(&out)],
        &["diag run config", "bogus_key"],
    );
    // The `engine` key opens every config.toml; a wrong one is named, a contradicting one fails as that engine.
    assert!(text.starts_with("engine = \"diag\"\n"), "{text}");
    let wrong = root.join("wrong.toml");
    for (engine, expect) in [
        ("tpu", "`engine` must be"),
        ("deep", "as a deep run config"),
    ] {
        fs::write(&wrong, text.replace("\"diag\"", &format!("{engine:?}"))).unwrap();
        refused(
            root,
            &["run", "--config", p(&wrong), "--out", p(&out)],
            &[expect],
        );
    }
    let none = root.join("none.toml");
    fs::write(&none, "seed = 3\n").unwrap();
    refused(
        root,
        &["run", "--config", p(&none), "--out", p(&out)],
        &["none of the top-level keys"],
    );
    // --out below a regular file.
    let file = root.join("plain");
    fs::write(&file, "x").unwrap();
    refused_owned(
        root,
        &diag(&file.join("run"), &[]),
        &[&format!("{} is a regular file", file.display())],
    );
    // An occupied --out is kept.
    refused_owned(root, &diag(&good, &[]), &["already exists"]);
}

#[test]
fn sizes_from_flags_and_headers_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    for (flags, expect) in [
        (&["--n", "4294967296"][..], "invalid n"),
        (&["--n-test", "1000000000000"], "invalid n_test"),
        (&["--d", "4294967296", "--n", "2"], "invalid n"),
        (&["--rho", "1e20"], "f32"),
        (&["--rho", "nan"], "rho"),
    ] {
        let mut args = diag(&out, flags);
        if flags[0] == "--rho" {
            args[3] = "nsam".into(); // --method nsam
        }
        refused_owned(root, &args, &[expect]);
    }
    refused(
        root,
        &[
            "diag",
            "train",
            "--method",
            "sgd",
            "--batch-size",
            "1000000000000",
            "--lr",
            "0.1",
            "--iters",
            "10",
            "--out",
            p(&out),
        ],
        &["batch_size"],
    );
    // A .npy header that claims 2^40 x 5 values over a file of 15.
    let data = root.join("data");
    fs::create_dir(&data).unwrap();
    ok(&diag(
        &root.join("src"),
        &["--n", "3", "--d", "5", "--n-test", "2", "--r", "1"],
    )
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    for f in ["X_train.npy", "y_train.npy", "X_test.npy", "y_test.npy"] {
        fs::copy(root.join("src").join(f), data.join(f)).unwrap();
    }
    let x = fs::read(data.join("X_train.npy")).unwrap();
    let end = x.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(x[10..end].to_vec()).unwrap(); // after magic, version, length
                                                                  // The same header length: the longer shape eats 12 bytes of padding.
    let forged =
        header
            .replacen("(3, 5)", "(1099511627776, 5)", 1)
            .replacen(&" ".repeat(12), "", 1);
    assert_eq!(forged.len(), header.len());
    fs::write(
        data.join("X_train.npy"),
        [&x[..10], forged.as_bytes(), &x[end..]].concat(),
    )
    .unwrap();
    refused_owned(
        root,
        &diag(&out, &["--data", p(&data)]),
        &["X_train.npy", "declares shape [1099511627776, 5]"],
    );
    // The ReLU engine: width and grid bounds, checked before training.
    let relu = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "relu",
                "train",
                "--method",
                "gd",
                "--lr",
                "0.01",
                "--iters",
                "10",
                "--out",
                p(&out),
            ][..],
            extra,
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
    };
    refused_owned(
        root,
        &relu(&["--width", "100000000000"]),
        &["invalid width"],
    );
    refused_owned(
        root,
        &relu(&["--grid-step", "1e-300"]),
        &["grid_step", "points"],
    );
    assert!(!out.exists());
}

#[test]
fn deep_flags_and_data_are_checked_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_idx(root, 60, 20);
    let out = root.join("out");
    // One epoch of batches of 8 unless the flags under test say otherwise (the MLP's default width).
    let train = |extra: &[&str]| -> Vec<String> {
        let mut base = vec![
            "train",
            "--model",
            "mlp",
            "--dataset",
            "mnist",
            "--data-dir",
            p(root),
            "--out",
            p(&out),
        ];
        for (flag, value) in [("--batch-size", "8"), ("--epochs", "1")] {
            if !extra.contains(&flag) {
                base.extend([flag, value]);
            }
        }
        [&base[..], extra]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    };
    let wgpu_bf16 = match samlab_deep::compiled_backends().contains(&"wgpu") {
        true => "precision",
        false => "not available in this build",
    };
    for (flags, expect) in [
        (&["--rho", "1e20"][..], "f32"),
        (&["--l2=-0.1"], "weight_decay"),
        (&["--decoupled-wd", "inf"], "weight_decay"),
        (&["--lr", "nan"], "lr"),
        (&["--augment", "crop", "--pad", "1000000"], "pad"),
        (&["--width", "1000000"], "at most 65536"),
        (&["--width", "60000"], "more than 2147483648 parameters"),
        (
            &["--batch-size", "1000000000000"],
            "larger than the training split",
        ),
        (&["--epochs", "4611686018427387904"], "64-bit counter"),
        (&["--device", "tpu"], "device"),
        // WGSL has no bf16 (the wgpu device runs on lavapipe in CI); a build without the wgpu feature (the
        // binary's default, or `cargo test -p samlab-cli` alone) refuses the device itself.
        (&["--device", "wgpu", "--precision", "bf16"], wgpu_bf16),
    ] {
        refused_owned(root, &train(flags), &[expect]);
    }
    // Test images of another size than the training images.
    let mut seed = 5;
    write_idx_set(root, "t10k", 20, 6, &mut seed);
    refused_owned(
        root,
        &train(&[]),
        &["test images are [1, 6, 6]", "[1, 8, 8]"],
    );
    // An empty test set.
    write_idx_set(root, "t10k", 0, 8, &mut seed);
    refused_owned(
        root,
        &train(&[]),
        &["at least one training and one test image"],
    );
    // IDX dimensions whose product overflows.
    let mut header = vec![0u8, 0, 8, 3];
    header.extend([0xff; 12]);
    fs::write(root.join("t10k-images-idx3-ubyte"), &header).unwrap();
    refused_owned(root, &train(&[]), &["t10k-images-idx3-ubyte", "overflow"]);
    assert!(!out.exists());
}

#[test]
fn bench_step_flags_are_checked_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, expect) in [
        (&["--batch-size", "0"][..], "batch-size"),
        (&["--batch-size", "1000000000000"], "batch-size"),
        (&["--m", "3", "--batch-size", "8"], "divide"),
        (&["--rho", "nan"], "rho"),
        (&["--steps", "0"], "steps"),
        (&["--steps", "1000000000000000"], "steps"),
        (&["--warmup", "1000000000000000"], "warmup"),
        (&["--max-seconds", "nan"], "max-seconds"),
        (&["--max-seconds", "0"], "max-seconds"),
        (&["--image-size", "100000"], "more than 2147483648"),
        (&["--width", "100000000"], "at most 65536"),
        (&["--device", "tpu"], "compiled backends"),
        (
            &["--rho", "0.05", "--variant", "sam-on"],
            "needs normalization layers",
        ),
        (&["--variant", "looksam", "--variant-k", "0"], "k"),
        (
            &["--variant-theta", "0.5"],
            "--variant-theta is an option of",
        ),
        // The groups are stacked only for plain SAM or ERM, with more than one group.
        (&["--groups", "stacked"], "here 1 group(s)"),
        (
            &[
                "--rho",
                "0.05",
                "--m",
                "16",
                "--variant",
                "asam",
                "--groups",
                "stacked",
            ],
            "variant ASAM",
        ),
    ] {
        let args = [&["bench-step", "--model", "mlp"][..], flags].concat();
        refused(tmp.path(), &args, &[expect]);
    }
}

/// Trains the tiny deep run `out` (3 epochs of an MLP with BatchNorm on 60 + 20 8x8 images).
fn tiny_run(root: &Path, out: &Path) {
    write_idx(root, 60, 20);
    ok(&[
        "train",
        "--model",
        "mlp",
        "--width",
        "3",
        "--norm",
        "batch",
        "--dataset",
        "mnist",
        "--data-dir",
        p(root),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        p(out),
    ]);
}

#[test]
fn damaged_checkpoints_and_run_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run = root.join("run");
    tiny_run(root, &run);
    // A finished run is not resumed (nor rewritten).
    refused(
        root,
        &["train", "--resume", "--out", p(&run)],
        &["already finished (status ok)"],
    );
    let last = run.join("checkpoint/last.ckpt");
    let good = Checkpoint::load(&last).unwrap();
    let check = |what: &str, write: &dyn Fn()| {
        write();
        // Resume needs a running status.
        let summary = fs::read_to_string(run.join("summary.json")).unwrap();
        fs::write(
            run.join("summary.json"),
            summary.replace("\"ok\"", "\"running\""),
        )
        .unwrap();
        refused(
            root,
            &["train", "--resume", "--out", p(&run)],
            &["last.ckpt", what],
        );
        refused(
            root,
            &["sharpness", p(&run), "--m", "4"],
            &["last.ckpt", what],
        );
        fs::write(run.join("summary.json"), summary).unwrap();
    };
    let damage = |what: &str, f: &dyn Fn(&mut Checkpoint)| {
        check(what, &|| {
            let mut c = good.clone();
            f(&mut c);
            c.save(&last).unwrap();
        })
    };
    damage("BatchNorm running variance", &|c| {
        c.bn_var[0].pop();
    });
    damage("momentum tensor optimizer.momentum.fc1.weight", &|c| {
        c.velocity.as_mut().unwrap()[0].truncate(1);
    });
    damage("non-finite value", &|c| c.params[1][2] = f32::NAN);
    // Damaged bytes of the SafeTensors file.
    good.save(&last).unwrap();
    let raw = fs::read(&last).unwrap();
    check("truncated", &|| {
        fs::write(&last, &raw[..raw.len() - 7]).unwrap()
    });
    check("runs past the end of the file", &|| {
        let mut r = raw.clone();
        r[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&last, r).unwrap()
    });
    check("checksum mismatch", &|| {
        let mut r = raw.clone();
        let at = r.len() - 9;
        r[at] ^= 1;
        fs::write(&last, r).unwrap()
    });
    // A version-1 file (no checksum) is refused whatever it holds, with the way to convert it.
    check("version-1 (SAMLABCK)", &|| {
        let mut r = b"SAMLABCK".to_vec();
        r.extend(&raw[8..]);
        fs::write(&last, r).unwrap()
    });
    // A forged step count.
    let mut forged = good.clone();
    forged.progress["steps_done"] = 3.into();
    forged.save(&last).unwrap();
    let summary = fs::read_to_string(run.join("summary.json")).unwrap();
    fs::write(
        run.join("summary.json"),
        summary.replace("\"ok\"", "\"running\""),
    )
    .unwrap();
    refused(
        root,
        &["train", "--resume", "--out", p(&run)],
        &["progress record", "3 steps"],
    );
    // A forged gradient count: fewer than one per step, or more than any step can take.
    for n in [1, u64::MAX] {
        let mut forged = good.clone();
        forged.progress["gradient_evals"] = n.into();
        forged.save(&last).unwrap();
        refused(
            root,
            &["train", "--resume", "--out", p(&run)],
            &["gradient count", &n.to_string()],
        );
    }
    // A config.toml naming another model than the checkpoint's.
    good.save(&last).unwrap();
    let config = fs::read_to_string(run.join("config.toml")).unwrap();
    fs::write(
        run.join("config.toml"),
        config.replace("width = 3", "width = 4"),
    )
    .unwrap();
    refused(
        root,
        &["sharpness", p(&run), "--m", "4"],
        &["different model"],
    );
    refused(root, &["hessian", p(&run)], &["different model"]);
}

#[test]
fn resume_before_the_first_checkpoint_starts_from_scratch_and_stale_staging_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let full = root.join("full");
    tiny_run(root, &full);
    // A run killed before its first checkpoint: config.toml and a running summary, no checkpoint.
    let killed = root.join("killed");
    fs::create_dir_all(killed.join("checkpoint")).unwrap();
    fs::copy(full.join("config.toml"), killed.join("config.toml")).unwrap();
    let finished = fs::read_to_string(full.join("summary.json")).unwrap();
    fs::write(
        killed.join("summary.json"),
        finished.replace("\"ok\"", "\"running\""),
    )
    .unwrap();
    ok(&["train", "--resume", "--out", p(&killed)]);
    let strip = |dir: &Path| -> Vec<String> {
        fs::read_to_string(dir.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(11).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(strip(&killed), strip(&full));
    assert_eq!(summary(&killed)["status"], "ok");

    // Staging directories of killed diag runs are removed by the next run into the same --out.
    let out = root.join("diag");
    let stale = root.join(".diag.staging-4000000");
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("u.npy"), "half").unwrap();
    ok(&diag(&out, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!stale.exists());

    // theory implicit-bias refuses a u.npy that is not the run's (by the SHA-256 in summary.json), and, in a run
    // written before the hashes, one of another length than d.
    let u = out.join("u.npy");
    ndarray_npy::write_npy(&u, &ndarray::Array1::<f64>::zeros(5)).unwrap();
    refused(
        root,
        &["theory", "implicit-bias", p(&out)],
        &["u.npy is not the file its run wrote"],
    );
    let mut s = summary(&out);
    s.as_object_mut()
        .unwrap()
        .remove("artefacts_sha256")
        .unwrap();
    fs::write(out.join("summary.json"), s.to_string()).unwrap();
    refused(
        root,
        &["theory", "implicit-bias", p(&out)],
        &["u.npy holds 5 entries", "d = 30"],
    );
}

/// 20 pairs of runs started at once, each pair into one directory (16 diagonal-net pairs, 4 deep-net pairs):
/// in every pair exactly one wins, the other exits 2 naming the conflict, and the winner's files all come from
/// the winner (its seed in config.toml, summary.json and, for deep runs, the checkpoint).
#[test]
fn concurrent_runs_into_one_directory_never_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_idx(root, 60, 20);
    let spawn = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_samlab"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut pairs = Vec::new();
    for i in 0..20 {
        let out = root.join(format!("r{i}"));
        let deep = i % 5 == 4;
        let children: Vec<_> = [11u32, 22]
            .into_iter()
            .map(|seed| {
                let args: Vec<String> = if deep {
                    [
                        "train",
                        "--model",
                        "mlp",
                        "--width",
                        "3",
                        "--dataset",
                        "mnist",
                        "--data-dir",
                        p(root),
                        "--epochs",
                        "2",
                        "--batch-size",
                        "8",
                        "--seed",
                        &seed.to_string(),
                        "--out",
                        p(&out),
                    ]
                    .map(String::from)
                    .to_vec()
                } else {
                    diag_iters(&out, 20000, &["--seed", &seed.to_string(), "--n", "40"])
                };
                spawn(args)
            })
            .collect();
        pairs.push((out, deep, children));
    }
    for (out, deep, children) in pairs {
        let results: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let codes: Vec<_> = results.iter().map(|r| r.status.code()).collect();
        let winners = codes.iter().filter(|c| **c == Some(0)).count();
        assert_eq!(winners, 1, "{}: exit codes {codes:?}", out.display());
        let loser = results.iter().find(|r| r.status.code() != Some(0)).unwrap();
        let err = String::from_utf8_lossy(&loser.stderr);
        assert_eq!(loser.status.code(), Some(2), "{err}");
        assert!(
            err.contains("another samlab process") || err.contains("already exists"),
            "{err}"
        );
        let config = fs::read_to_string(out.join("config.toml")).unwrap();
        let seed = summary(&out)["seed"].as_u64().unwrap();
        assert!(config.contains(&format!("seed = {seed}")), "{config}");
        if deep {
            let ckpt = Checkpoint::load(&out.join("checkpoint/last.ckpt")).unwrap();
            assert_eq!(ckpt.progress["steps_done"], summary(&out)["steps"]);
            let rows = fs::read_to_string(out.join("metrics.csv"))
                .unwrap()
                .lines()
                .count();
            assert_eq!(rows, 3);
        }
    }
    let leftovers: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `samlab args` under a file-size limit of `blocks` KiB with SIGXFSZ ignored, so writing past it fails with
/// "File too large" as a full disk fails with "No space left on device"; returns the exit status and stderr.
fn with_file_limit(blocks: u32, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_samlab"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--force` replaces only a run or an empty directory, on every engine: a directory of other files, a regular
/// file and a symbolic link are refused (exit 2, naming what is there) and nothing is deleted. A started deep run
/// (config.toml and checkpoint/, no summary) is a run.
#[test]
fn force_replaces_only_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_idx(root, 60, 20);
    let notarun = root.join("notarun");
    fs::create_dir(&notarun).unwrap();
    fs::write(notarun.join("thesis.tex"), "\\chapter{SAM}").unwrap();
    let file = root.join("plain.txt");
    fs::write(&file, "keep me").unwrap();
    let link = root.join("link");
    std::os::unix::fs::symlink(&notarun, &link).unwrap();
    let good = root.join("good");
    ok(&diag(&good, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let config = good.join("config.toml");
    let deep = |out: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            "mlp",
            "--width",
            "3",
            "--dataset",
            "mnist",
            "--data-dir",
            p(root),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            p(out),
            "--force",
        ]
        .map(String::from)
        .to_vec()
    };
    let relu = |out: &Path| -> Vec<String> {
        [
            "relu",
            "train",
            "--method",
            "gd",
            "--lr",
            "0.01",
            "--iters",
            "10",
            "--out",
            p(out),
            "--force",
        ]
        .map(String::from)
        .to_vec()
    };
    for (out, what) in [
        (&notarun, "it holds thesis.tex"),
        (&file, "a regular file"),
        (&link, "a symbolic link"),
    ] {
        let expect = [what, "is not a samlab run", "nothing was deleted"];
        refused_owned(root, &diag(out, &["--force"]), &expect);
        refused_owned(root, &relu(out), &expect);
        refused_owned(root, &deep(out), &expect);
        refused(
            root,
            &["run", "--config", p(&config), "--out", p(out), "--force"],
            &expect,
        );
    }
    assert_eq!(
        fs::read_to_string(notarun.join("thesis.tex")).unwrap(),
        "\\chapter{SAM}"
    );
    // A run of any engine, an empty directory, and a deep run that started (no summary yet) are replaced.
    let empty = root.join("empty");
    fs::create_dir(&empty).unwrap();
    ok(&diag(&empty, &["--force"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    ok(&relu(&good).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(summary(&good)["engine"], "relu");
    let started = root.join("started");
    ok(&deep(&started)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    fs::remove_file(started.join("summary.json")).unwrap();
    fs::remove_file(started.join("metrics.csv")).unwrap();
    ok(&diag(&started, &["--force"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(summary(&started)["engine"], "diag");
}

/// A replacement that fails (here at a file-size limit, as on a full disk) leaves the run it was to replace at
/// `--out`, on the deep engine as on the diagonal one, and a later `--resume` finds a finished run to refuse.
#[test]
fn a_failed_replacement_puts_the_old_run_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run = root.join("run");
    tiny_run(root, &run);
    let before = snapshot(&run);
    let (code, err) = with_file_limit(
        2,
        &[
            "train",
            "--model",
            "mlp",
            "--width",
            "64",
            "--dataset",
            "mnist",
            "--data-dir",
            p(root),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            p(&run),
            "--force",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("too large"), "{err}");
    assert_eq!(
        snapshot(&run),
        before,
        "the old deep run is back, unchanged"
    );
    let leftovers: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".old-") || n.contains(".staging-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    refused(
        root,
        &["train", "--resume", "--out", p(&run)],
        &["already finished (status ok)"],
    );
    // The diagonal engine, failing while it writes its staged files.
    let d = root.join("diag");
    ok(&diag(&d, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    let before = snapshot(&d);
    let args = diag(&d, &["--force", "--n", "2000", "--d", "200"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = with_file_limit(2, &args);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(snapshot(&d), before, "the old diag run is intact");
}

/// A sweep manifest is data: a run directory that is absolute, goes up with `..`, or passes through a symbolic
/// link is refused on every read of the manifest (exit 2, naming the entry), even with its id and checksum
/// recomputed, and the directory it names is left alone.
#[test]
fn sweep_run_paths_stay_inside_the_sweep() {
    use samlab_sweep::manifest::{run_id, Manifest, RunEntry};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src = root.join("src");
    ok(&diag(&src, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let config = fs::read_to_string(src.join("config.toml")).unwrap();
    let victim = root.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("thesis.tex"), "keep").unwrap();
    let sweeps = root.join("sweeps");
    fs::create_dir(&sweeps).unwrap();
    let forge = |name: &str, dir: Option<&str>| -> PathBuf {
        let sweep = sweeps.join(name);
        let id = match dir {
            Some(d) => run_id(&format!("{d}\n{config}")),
            None => run_id(&config),
        };
        Manifest {
            format: 1,
            axes: vec![],
            runs: vec![RunEntry {
                id,
                values: vec![],
                config: config.clone(),
                dir: dir.map(String::from),
            }],
        }
        .write(&sweep)
        .unwrap();
        sweep
    };
    let abs = victim.display().to_string();
    let cases = [
        ("absolute", Some(abs.as_str()), "is absolute"),
        ("up", Some("../../victim"), "goes up with `..`"),
        ("link", Some("link/victim"), "symbolic link"),
        ("runs-link", None, "symbolic link"),
        ("empty", Some(""), "is empty"),
    ];
    for (name, dir, expect) in cases {
        let sweep = forge(name, dir);
        if name == "link" {
            std::os::unix::fs::symlink(root, sweep.join("link")).unwrap();
        }
        if name == "runs-link" {
            std::os::unix::fs::symlink(&victim, sweep.join("runs")).unwrap();
        }
        for cmd in [
            &["sweep", "task", p(&sweep), "--index", "0"][..],
            &["sweep", "status", p(&sweep)],
            &["sweep", "report", p(&sweep)],
            &["sweep", "submit", p(&sweep)],
        ] {
            refused(root, cmd, &["run 0 names the run directory", expect]);
        }
    }
    assert_eq!(
        fs::read_to_string(victim.join("thesis.tex")).unwrap(),
        "keep"
    );
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
}

/// One rule for options: an option that does not apply to the chosen method is refused (exit 2, naming both),
/// never silently dropped.
#[test]
fn options_that_do_not_apply_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_idx(root, 60, 20);
    let out = root.join("out");
    let deep = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "train",
                "--model",
                "mlp",
                "--width",
                "3",
                "--dataset",
                "mnist",
                "--data-dir",
                p(root),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                p(&out),
            ][..],
            extra,
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
    };
    for (flags, expect) in [
        (
            &["--rho", "0", "--variant", "asam"][..],
            &["variant ASAM needs a SAM radius", "rho = 0"][..],
        ),
        (&["--variant", "gsam"], &["GSAM", "rho = 0"]),
        (&["--ascent-steps", "3"], &["ascent_steps = 3", "rho = 0"]),
        (&["--random-init"], &["random_init", "rho = 0"]),
        (&["--previous-batch"], &["previous-batch", "rho = 0"]),
        (
            &["--rho", "5", "--rho-lr-factor", "1"],
            &["--rho-lr-factor", "--rho"],
        ),
    ] {
        refused_owned(root, &deep(flags), expect);
    }
    // The analytic engines: an ascent flag with GD or SGD.
    for (method, flags, expect) in [
        ("gd", &["--variant", "asam"][..], "--variant"),
        ("gd", &["--normalize"], "--normalize"),
        ("sgd", &["--random-init"], "--random-init"),
        ("gd", &["--clip"], "--clip"),
    ] {
        let mut args = diag(&out, flags);
        args[3] = method.into();
        refused_owned(root, &args, &[expect, &format!("--method {method}")]);
    }
    let relu = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "relu",
                "train",
                "--method",
                "gd",
                "--lr",
                "0.01",
                "--iters",
                "10",
                "--out",
                p(&out),
            ][..],
            extra,
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
    };
    refused_owned(
        root,
        &relu(&["--normalize"]),
        &["--normalize", "--method gd"],
    );
    refused_owned(
        root,
        &relu(&["--w-scale", "3"]),
        &[
            "--w-scale is an option of --init gaussian",
            "--init is blanc",
        ],
    );
    refused_owned(
        root,
        &relu(&["--init", "gaussian", "--init-scale", "2"]),
        &["--init-scale", "--init is gaussian"],
    );
    // bench-step at rho 0 with a variant would time ERM under the variant's name.
    refused(
        root,
        &["bench-step", "--model", "mlp", "--variant", "asam"],
        &["ASAM", "rho = 0"],
    );
    // A config.toml: options beside `kind = "sam"`, and a rho beside a rho tied to the learning rate.
    let src = root.join("src");
    ok(&[
        "diag",
        "train",
        "--method",
        "nsam",
        "--rho",
        "0.1",
        "--lr",
        "0.1",
        "--iters",
        "10",
        "--out",
        p(&src),
    ]);
    let text = fs::read_to_string(src.join("config.toml")).unwrap();
    let edited = root.join("edited.toml");
    for (from, to, expect) in [
        (
            "[train.sam.variant]\nkind = \"sam\"",
            "[train.sam.variant]\nkind = \"sam\"\neta = 3.0",
            "unknown field `eta`",
        ),
        (
            "[train.sam.rho_schedule]\nkind = \"constant\"",
            "[train.sam.rho_schedule]\nkind = \"proportional_to_lr\"\nfactor = 1.0",
            "rho = 0.1 and rho_schedule proportional_to_lr",
        ),
    ] {
        assert!(text.contains(from), "{text}");
        fs::write(&edited, text.replace(from, to)).unwrap();
        refused(
            root,
            &["run", "--config", p(&edited), "--out", p(&out)],
            &[expect],
        );
    }
    // --rho-lr-factor over a config with a constant rho records rho = 0 (what runs), not the config's radius.
    ok(&[
        "diag",
        "train",
        "--method",
        "nsam",
        "--rho-lr-factor",
        "1",
        "--lr",
        "0.1",
        "--iters",
        "10",
        "--out",
        p(&out),
    ]);
    let ran = fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(ran.contains("rho = 0.0"), "{ran}");
    refused(
        root,
        &[
            "reproduce",
            "--plan",
            "--only",
            "",
            "--out",
            p(&root.join("r")),
        ],
        &["--only", "empty prefix"],
    );
}

/// `sweep plan` runs every engine's checks on every run before writing anything, as `run --config` does.
#[test]
fn sweep_plan_checks_every_run_as_run_config_does() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run = root.join("run");
    tiny_run(root, &run);
    let base = run.join("config.toml");
    let grid = root.join("grid.toml");
    let out = root.join("sweep");
    for (axes, expect) in [
        ("\"train.device\" = [\"flex\", \"tpu\"]", "tpu"),
        (
            "\"train.epochs\" = [1, 9223372036854775807]",
            "64-bit counter",
        ),
        (
            "\"train.batch_size\" = [8, 100000]",
            "larger than the training split",
        ),
    ] {
        fs::write(&grid, format!("base = {:?}\n[axes]\n{axes}\n", p(&base))).unwrap();
        refused(
            root,
            &["sweep", "plan", p(&grid), "--out", p(&out)],
            &["run 1", expect],
        );
        assert!(!out.exists());
    }
    // The diagonal engine's learning rate.
    let d = root.join("diag");
    ok(&diag(&d, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    let text = fs::read_to_string(d.join("config.toml")).unwrap();
    let lr_key = if text.contains("[train.lr]") {
        "train.lr.base"
    } else {
        "train.lr"
    };
    for bad_lr in ["nan", "inf", "-0.1"] {
        fs::write(
            &grid,
            format!(
                "base = {:?}\n[axes]\n\"{lr_key}\" = [0.01, {bad_lr}]\n",
                p(&d.join("config.toml"))
            ),
        )
        .unwrap();
        refused(
            root,
            &["sweep", "plan", p(&grid), "--out", p(&out)],
            &["run 1", "lr"],
        );
        assert!(!out.exists());
    }
}

/// Sizes from flags are bounded before anything is allocated from them, with the flag and the bound named.
#[test]
fn relu_and_hessian_sizes_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    let ts = |flags: &[&str]| -> Vec<String> {
        [
            &[
                "relu",
                "train",
                "--dataset",
                "teacher-student",
                "--method",
                "gd",
                "--lr",
                "0.01",
                "--iters",
                "1",
                "--out",
                p(&out),
            ][..],
            flags,
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
    };
    for (flags, expect) in [
        (&["--n", "4294967296", "--d", "4294967296"][..], "invalid n"),
        (&["--n", "1000000000", "--d", "1000"], "invalid n"),
        (&["--n-test", "1000000000000"], "invalid n_test"),
        (&["--d", "1099511627776"], "invalid n"),
        (
            &["--teacher-width", "1000000000000"],
            "invalid teacher_width",
        ),
    ] {
        refused_owned(root, &ts(flags), &[expect, "1073741824 values"]);
    }
    let run = root.join("run");
    tiny_run(root, &run);
    refused(
        root,
        &["hessian", p(&run), "--trace", "--probes", "1000000000"],
        &["probes", "at most 100000"],
    );
}

/// `import-torch` takes only weights a trained network can hold (finite, BatchNorm variances >= 0) and writes
/// only training flags `train` accepts into config.toml.
#[test]
fn imports_take_only_possible_weights_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run = root.join("run");
    tiny_run(root, &run);
    let good = Checkpoint::load(&run.join("checkpoint/best.ckpt")).unwrap();
    let weights = root.join("weights.safetensors");
    good.save(&weights).unwrap();
    let out = root.join("imported");
    let import = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "import-torch",
                p(&weights),
                "--model",
                "mlp",
                "--width",
                "3",
                "--norm",
                "batch",
                "--dataset",
                "mnist",
                "--data-dir",
                p(root),
                "--batch-size",
                "8",
                "--out",
                p(&out),
            ][..],
            extra,
        ]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
    };
    for (flags, expect) in [
        (&["--epochs", "0"][..], "epochs"),
        (&["--rho", "nan"], "rho"),
        (&["--device", "nope"], "device"),
    ] {
        refused_owned(root, &import(flags), &[expect]);
    }
    let mut negative = good.clone();
    negative.bn_var[0][1] = -0.5;
    negative.save(&weights).unwrap();
    refused_owned(
        root,
        &import(&[]),
        &["BatchNorm running variance", "negative variance"],
    );
    assert!(!out.exists());
}

/// A run cannot be its own parent (issue 27): `--init-from X --out X --force`, on both engines and through
/// `run --config` (an `init_from` that resolves to `--out`, however spelt), is exit 2 with X untouched; it used to
/// record the run as its own parent, so that `run --config` replayed other numbers.
#[test]
fn a_run_cannot_be_its_own_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let erm = root.join("erm");
    ok(&diag(&erm, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let own = ["cannot start from itself", "a run cannot be its own parent"];
    refused_owned(
        root,
        &diag(&erm, &["--init-from", p(&erm), "--force"]),
        &own,
    );
    // The same directory named another way.
    let dotted = root.join("sub/../erm");
    refused_owned(
        root,
        &diag(&erm, &["--init-from", p(&dotted), "--force"]),
        &own,
    );
    let text = fs::read_to_string(erm.join("config.toml")).unwrap();
    for spelling in ["../erm", ".", p(&erm)] {
        let config = root.join("own.toml");
        fs::write(&config, format!("init_from = {spelling:?}\n{text}")).unwrap();
        refused(
            root,
            &["run", "--config", p(&config), "--out", p(&erm), "--force"],
            &own,
        );
    }
    // A sibling is another run: recorded relatively, so the pair can move.
    let tuned = root.join("tuned");
    ok(&diag(&tuned, &["--init-from", p(&erm)])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(fs::read_to_string(tuned.join("config.toml"))
        .unwrap()
        .contains("init_from = \"../erm\""));

    // Deep runs.
    let deep = root.join("deep");
    tiny_run(root, &deep);
    let train = |extra: &[&str]| -> Vec<String> {
        [
            "train",
            "--model",
            "mlp",
            "--width",
            "3",
            "--norm",
            "batch",
            "--dataset",
            "mnist",
            "--data-dir",
            p(root),
            "--epochs",
            "1",
            "--batch-size",
            "8",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    refused_owned(
        root,
        &train(&["--init-from", p(&deep), "--out", p(&deep), "--force"]),
        &own,
    );
    let text = fs::read_to_string(deep.join("config.toml")).unwrap();
    let config = root.join("own-deep.toml");
    fs::write(&config, format!("init_from = \"../deep\"\n{text}")).unwrap();
    refused(
        root,
        &["run", "--config", p(&config), "--out", p(&deep), "--force"],
        &own,
    );
}

/// Issue 27: a SAM run's last checkpoint copied over an ERM run's is not judged as the ERM run's. The deep presets
/// of `samlab report` read checkpoints only through `samlab_experiments::cached` analyses of `last_checkpoint`,
/// computed by `LoadedRun::load`: the copy changes the checkpoint's SHA-256, so the kept analysis is not reused,
/// and the new one refuses the checkpoint (its progress record names another config.toml). Before the check,
/// `samlab report` flipped 2 claims with exit 0.
#[test]
fn a_checkpoint_copied_from_another_run_is_not_judged() {
    use samlab_deep::analysis::{CheckpointKind, LoadedRun};
    use samlab_experiments::{cached, last_checkpoint};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (erm, sam) = (root.join("erm"), root.join("sam"));
    tiny_run(root, &erm);
    let config = fs::read_to_string(erm.join("config.toml")).unwrap();
    ok(&[
        "train",
        "--config",
        p(&erm.join("config.toml")),
        "--rho",
        "0.05",
        "--out",
        p(&sam),
    ]);
    let cache = root.join("cache/steps.json");
    let analysis = || {
        cached(&cache, &[last_checkpoint(&erm)], || {
            Ok(LoadedRun::load(&erm, CheckpointKind::Last)?.info.steps_done)
        })
    };
    let steps = summary(&erm)["steps"].as_u64();
    assert_eq!(analysis().unwrap(), steps);
    fs::copy(last_checkpoint(&sam), last_checkpoint(&erm)).unwrap();
    let err = format!("{:#}", analysis().unwrap_err());
    assert!(
        err.contains("was written by a run of another config.toml"),
        "{err}"
    );
    // The ERM run's own files are untouched, so only the copied checkpoint is refused.
    assert_eq!(fs::read_to_string(erm.join("config.toml")).unwrap(), config);
    let err = bad(&["sharpness", p(&erm)]);
    assert!(err.contains("another config.toml"), "{err}");
}
