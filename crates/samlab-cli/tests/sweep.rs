//! `samlab sweep`: grids checked before anything runs, the local executor (skips finished runs, reruns missing
//! ones, reports mean ± std over seeds), and a real SLURM (a job array equal to the local executor bit for bit,
//! a cancelled task found by `status` and resubmitted alone). The SLURM test needs a running SLURM
//! (`.ci/slurm.sh start`, which `.ci/run` calls) and says so where it finds none.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A diag run's config.toml to sweep over (nSAM, 200 updates), written by samlab itself.
fn diag_base(root: &Path) -> PathBuf {
    let run = root.join("diag-base");
    ok(&[
        "diag",
        "train",
        "--method",
        "nsam",
        "--rho",
        "0.05",
        "--lr",
        "0.1",
        "--iters",
        "200",
        "--out",
        p(&run),
    ]);
    run.join("config.toml")
}

/// A tiny deep run's config.toml (an MLP on 60 + 20 8x8 images, 2 epochs).
fn deep_base(root: &Path) -> PathBuf {
    write_idx(root, 60, 20);
    let run = root.join("deep-base");
    ok(&[
        "train",
        "--model",
        "mlp",
        "--width",
        "4",
        "--dataset",
        "mnist",
        "--data-dir",
        p(root),
        "--epochs",
        "2",
        "--batch-size",
        "10",
        "--rho",
        "0.1",
        "--out",
        p(&run),
    ]);
    run.join("config.toml")
}

fn grid(root: &Path, name: &str, base: &Path, axes: &str) -> PathBuf {
    let path = root.join(name);
    fs::write(&path, format!("base = {:?}\n{axes}", p(base))).unwrap();
    path
}

const DIAG_AXES: &str =
    "[axes]\n\"train.sam.rho\" = [0.0, 0.05, 0.1]\n\"data.synthetic.seed\" = [0, 1]\n";

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    manifest(dir)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join("runs").join(r["id"].as_str().unwrap()))
        .collect()
}

/// A run directory's files with wall-clock measurements taken out: JSON keys and CSV columns whose name says
/// seconds or a rate per second.
fn results(run: &Path) -> BTreeMap<PathBuf, String> {
    // artefacts_sha256 holds the hash of a metrics.csv with timing columns.
    let timing = |k: &str| {
        k.contains("second") || k.ends_with("_per_s") || k == "seconds" || k == "artefacts_sha256"
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![run.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&path).unwrap();
            let text = if name.ends_with(".json") {
                let mut v: Value = serde_json::from_slice(&bytes).unwrap();
                if let Some(map) = v.as_object_mut() {
                    map.retain(|k, _| !timing(k));
                }
                v.to_string()
            } else if name.ends_with(".csv") {
                let text = String::from_utf8(bytes).unwrap();
                let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
                let keep: Vec<bool> = rows[0].iter().map(|h| !timing(h)).collect();
                rows.iter()
                    .map(|r| {
                        r.iter()
                            .zip(&keep)
                            .filter(|(_, k)| **k)
                            .map(|(c, _)| *c)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if name.ends_with(".ckpt") {
                // SafeTensors: the header's metadata holds the training log, timings included; the tensors'
                // names, shapes and bytes are the result.
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
                header.as_object_mut().unwrap().remove("__metadata__");
                format!("{header} {}", fingerprint(&bytes[8 + n..]))
            } else {
                fingerprint(&bytes)
            };
            out.insert(path.strip_prefix(run).unwrap().to_path_buf(), text);
        }
    }
    out
}

/// Length and FNV-1a hash of `bytes`.
fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{} bytes, fnv1a {hash:016x}", bytes.len())
}

fn assert_same_results(a: &Path, b: &Path) {
    let (ra, rb) = (run_dirs(a), run_dirs(b));
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(&rb) {
        let (fx, fy) = (results(x), results(y));
        assert!(!fx.is_empty(), "{} is empty", x.display());
        assert_eq!(fx, fy, "{} and {} differ", x.display(), y.display());
    }
}

#[test]
fn grids_are_checked_for_every_run_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = diag_base(root);
    let out = root.join("sweep");
    for (axes, expect) in [
        (
            "[axes]\n\"train.sam.rhoo\" = [0.1]\n",
            &["unknown field `rhoo`"][..],
        ),
        (
            "[axes]\n\"train.sam.rho\" = [0.05, nan]\n",
            &["run 1 (train.sam.rho = nan)", "rho"],
        ),
        (
            "[axes]\n\"train.sam.rho\" = []\n",
            &["axis `train.sam.rho` is empty"],
        ),
        (
            "[[zip]]\n\"train.sam.rho\" = [0.1, 0.2]\n\"train.seed\" = [1]\n",
            &["`train.sam.rho` has 2 values, `train.seed` has 1"],
        ),
        ("[axes]\n\"train.lr\" = [\"fast\"]\n", &["run 0", "lr"]),
    ] {
        let g = grid(root, "bad.toml", &base, axes);
        let err = bad(&["sweep", "run", p(&g), "--out", p(&out)]);
        for e in expect {
            assert!(err.contains(e), "{axes}: expected {e:?} in {err}");
        }
        assert!(
            !out.exists(),
            "{axes}: a refused grid wrote {}",
            out.display()
        );
    }
    let g = grid(root, "grid.toml", &base, DIAG_AXES);
    let err = bad(&[
        "sweep",
        "run",
        p(&g),
        "--out",
        p(&out),
        "--executor",
        "slurm",
        "--max-parallel",
        "0",
    ]);
    assert!(err.contains("--max-parallel"), "{err}");
    assert!(
        !out.exists(),
        "a refused executor option wrote {}",
        out.display()
    );
    // No sbatch on the PATH: a failing scheduler is exit status 1 with the reason, and nothing counts as submitted.
    let no_slurm = Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args([
            "sweep",
            "run",
            p(&g),
            "--out",
            p(&out),
            "--executor",
            "slurm",
        ])
        .env("PATH", root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&no_slurm.stderr);
    assert_eq!(no_slurm.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot run sbatch"), "{err}");
    let status = ok(&["sweep", "status", p(&out)]);
    assert!(status.ends_with("6 missing\n"), "{status}");
    // Garbage for the other inputs of a planned sweep: exit 2, the problem named, nothing run.
    let err = bad(&["sweep", "submit", p(&out), "--jobs", "0"]);
    assert!(err.contains("--jobs must be at least 1"), "{err}");
    let err = bad(&["sweep", "task", p(&out), "--index", "6"]);
    assert!(
        err.contains("--index 6 is outside the sweep's 6 runs"),
        "{err}"
    );
    let err = bad(&["sweep", "status", p(root)]);
    assert!(err.contains("is not a sweep directory"), "{err}");
    fs::create_dir_all(out.join("slurm")).unwrap();
    fs::write(out.join("slurm").join("jobs.json"), "[{\"array_job\": 3").unwrap();
    let err = bad(&["sweep", "submit", p(&out)]);
    assert!(err.contains("jobs.json is damaged"), "{err}");
    assert!(!out.join("runs").exists(), "a refused input ran something");
}

#[test]
fn the_local_executor_runs_what_is_missing_and_reports_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = diag_base(root);
    let g = grid(root, "grid.toml", &base, DIAG_AXES);
    let out = root.join("sweep");
    let stdout = ok(&["sweep", "run", p(&g), "--out", p(&out), "--jobs", "2"]);
    assert!(stdout.contains("6 done"), "{stdout}");
    let runs = run_dirs(&out);
    assert_eq!(runs.len(), 6);
    // Each run equals the same config run by hand.
    let by_hand = root.join("by-hand");
    ok(&[
        "run",
        "--config",
        p(&runs[3].join("config.toml")),
        "--out",
        p(&by_hand),
    ]);
    assert_eq!(results(&runs[3]), results(&by_hand));
    // Finished runs are skipped; a missing one (and only it) runs again.
    let stdout = ok(&["sweep", "run", p(&g), "--out", p(&out)]);
    assert!(stdout.contains("nothing to run: 6 done"), "{stdout}");
    let before = fs::metadata(runs[0].join("summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    let kept = results(&runs[4]);
    fs::remove_dir_all(&runs[4]).unwrap();
    fs::remove_file(out.join("logs").join("task-4.log")).unwrap();
    let status = ok(&["sweep", "status", p(&out)]);
    assert!(status.contains("5 done, 1 missing"), "{status}");
    ok(&["sweep", "submit", p(&out)]);
    assert_eq!(results(&runs[4]), kept);
    assert_eq!(
        fs::metadata(runs[0].join("summary.json"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    // The report: mean and sample std over the two seeds of each rho.
    let csv = fs::read_to_string(out.join("report.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
    assert_eq!(row[col("train.sam.rho")], "0.05");
    assert_eq!(row[col("runs")], "2");
    // Axes loop in key order: data.synthetic.seed outside, train.sam.rho inside.
    let m = manifest(&out);
    let losses: Vec<f64> = (0..6)
        .filter(|&i| m["runs"][i]["values"][1] == serde_json::json!(["train.sam.rho", 0.05]))
        .map(|i| summary(&runs[i])["final_test_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 2);
    let mean: f64 = row[col("final_test_loss_mean")].parse().unwrap();
    let std: f64 = row[col("final_test_loss_std")].parse().unwrap();
    assert_eq!(mean, (losses[0] + losses[1]) / 2.0);
    assert!((std - (losses[0] - losses[1]).abs() / 2f64.sqrt()).abs() <= 1e-15 * std.max(1.0));
    let md = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| `train.sam.rho` | runs | diverged |"), "{md}");
    // One figure per metric against rho (the only numeric axis left once the seeds are grouped).
    for metric in ["final_test_loss", "mean_alpha_eff"] {
        let svg = fs::read_to_string(out.join("figures").join(format!("{metric}.svg"))).unwrap();
        assert!(svg.contains("train.sam.rho"), "{metric}.svg has no x label");
    }
    // A manifest edited after planning is refused, and so is another grid into the same directory.
    let other = grid(
        root,
        "other.toml",
        &base,
        "[axes]\n\"train.sam.rho\" = [0.2]\n",
    );
    let err = bad(&["sweep", "run", p(&other), "--out", p(&out)]);
    assert!(err.contains("holds another sweep"), "{err}");
    let path = out.join("manifest.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("rho = 0.1", "rho = 0.2", 1)).unwrap();
    let err = bad(&["sweep", "task", p(&out), "--index", "0"]);
    assert!(err.contains("edited after the sweep was planned"), "{err}");
}

/// Two `sweep run`s into one sweep directory (issue 27): the second, finding the sweep's lock held, exits 2 naming
/// the process that holds it and runs, writes and lists nothing (it used to start the same tasks, overwrite their
/// logs, and list the first one's runs as failed). Started at once, each ends in 0 or that refusal, never in
/// failed runs, and the sweep ends with every run done.
#[test]
fn concurrent_sweep_runs_into_one_directory_never_list_each_others_runs_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = diag_base(root);
    let g = grid(root, "grid.toml", &base, DIAG_AXES);
    let out = root.join("sweep");
    // The lock held (here by this test process): refused before anything is planned or started.
    let held = samlab_sweep::lock::SweepLock::acquire(&out).unwrap();
    for args in [
        &["sweep", "run", p(&g), "--out", p(&out)][..],
        &["sweep", "plan", p(&g), "--out", p(&out)][..],
    ] {
        let err = bad(args);
        assert!(
            err.contains("is being planned or run by another samlab sweep")
                && err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
    }
    let names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [".sweep.lock"]);
    drop(held);
    // Pairs started at once.
    for pair in 0..3 {
        let dir = root.join(format!("pair{pair}"));
        let start = || {
            Command::new(env!("CARGO_BIN_EXE_samlab"))
                .args(["sweep", "run", p(&g), "--out", p(&dir), "--jobs", "2"])
                .output()
                .unwrap()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(start);
            let b = s.spawn(start);
            (a.join().unwrap(), b.join().unwrap())
        });
        for o in [&a, &b] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("failed"), "{err}");
            match o.status.code() {
                Some(0) => {}
                Some(2) => assert!(err.contains("another samlab sweep"), "{err}"),
                c => panic!("exit {c:?}: {err}"),
            }
        }
        let status = ok(&["sweep", "status", p(&dir)]);
        assert!(status.trim_end().ends_with("6 done"), "{status}");
    }
}

/// Whether a SLURM controller answers (`sinfo`).
fn slurm_is_up() -> bool {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// Polls `samlab sweep status` until nothing is queued or running.
fn settle(dir: &Path) -> String {
    let start = Instant::now();
    loop {
        let status = ok(&["sweep", "status", p(dir)]);
        let last = status.lines().last().unwrap_or("").to_string();
        if !last.contains("queued") && !last.contains("running") {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "SLURM never finished: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn slurm_job_arrays_equal_the_local_executor_and_resubmit_only_what_failed() {
    if !slurm_is_up() {
        eprintln!(
            "skipped: no SLURM answers here (sinfo failed); `.ci/slurm.sh start DIR` starts one"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = diag_base(root);
    let diag = grid(root, "diag.toml", &base, DIAG_AXES);
    let deep = grid(
        root,
        "deep.toml",
        &deep_base(root),
        "[axes]\n\"train.seed\" = [1, 2]\n",
    );
    for (name, g) in [("diag", &diag), ("deep", &deep)] {
        let local = root.join(format!("{name}-local"));
        let slurm = root.join(format!("{name}-slurm"));
        ok(&["sweep", "run", p(g), "--out", p(&local)]);
        let stdout = ok(&[
            "sweep",
            "run",
            p(g),
            "--out",
            p(&slurm),
            "--executor",
            "slurm",
            "--wait",
            "--wait-timeout",
            "300",
        ]);
        assert!(stdout.contains("submitted"), "{stdout}");
        assert!(
            !stdout.contains("failed") && !stdout.contains("missing"),
            "{stdout}"
        );
        assert_same_results(&local, &slurm);
        // The report job ran after the array.
        assert!(slurm.join("report.md").exists());
        assert!(slurm.join("logs").join("task-1.log").exists());
    }
    // A task cancelled while pending (one task at a time: task 3 waits for 0, 1 and 2).
    let g = grid(
        root,
        "cancel.toml",
        &base,
        "[axes]\n\"train.sam.rho\" = [0.01, 0.02]\n\"train.seed\" = [5, 6]\n",
    );
    let dir = root.join("cancel");
    let stdout = ok(&[
        "sweep",
        "run",
        p(&g),
        "--out",
        p(&dir),
        "--executor",
        "slurm",
        "--max-parallel",
        "1",
    ]);
    let job = stdout
        .split("job array ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let cancel = Command::new("scancel")
        .arg(format!("{job}_3"))
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let last = settle(&dir);
    assert_eq!(last, "3 done, 1 failed");
    let stdout = ok(&["sweep", "submit", p(&dir), "--executor", "slurm", "--wait"]);
    assert!(stdout.contains("submitted 1 runs"), "{stdout}");
    let jobs: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("slurm").join("jobs.json")).unwrap())
            .unwrap();
    assert_eq!(jobs[1]["indices"], serde_json::json!([3]));
    assert_eq!(settle(&dir), "4 done");
}

/// A deep task killed after its first checkpoint is `failed`; running the sweep again resumes it from the
/// checkpoint, and it ends where an uninterrupted run ends.
#[test]
fn a_killed_deep_task_resumes_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let g = grid(
        root,
        "long.toml",
        &deep_base(root),
        "[axes]\n\"train.epochs\" = [800]\n\"model.width\" = [64]\n",
    );
    let dir = root.join("killed");
    ok(&["sweep", "plan", p(&g), "--out", p(&dir)]);
    let run = run_dirs(&dir)[0].clone();
    let mut task = Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args(["sweep", "task", p(&dir), "--index", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !run.join("checkpoint").join("last.ckpt").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    task.kill().unwrap();
    task.wait().unwrap();
    assert_eq!(
        summary(&run)["status"],
        "running",
        "the task finished before it was killed"
    );
    let status = ok(&["sweep", "status", p(&dir)]);
    assert!(status.ends_with("1 failed\n"), "{status}");
    ok(&["sweep", "submit", p(&dir)]);
    let resumed = summary(&run);
    assert_eq!(
        (resumed["status"].as_str(), resumed["resumes"].as_u64()),
        (Some("ok"), Some(1))
    );
    let whole = root.join("whole");
    ok(&["sweep", "run", p(&g), "--out", p(&whole)]);
    let (a, b) = (results(&run), results(&run_dirs(&whole)[0]));
    for file in [
        "checkpoint/last.ckpt",
        "checkpoint/best.ckpt",
        "metrics.csv",
    ] {
        assert_eq!(a[Path::new(file)], b[Path::new(file)], "{file}");
    }
}
