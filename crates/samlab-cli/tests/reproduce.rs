//! `samlab reproduce` as plan, train and report: `--plan` trains nothing, `samlab report DIR` rebuilds the same
//! claims from the finished runs alone, a second `reproduce` keeps every finished run, a run of another config is
//! found and trained again, and the SLURM executor (one array per wave, then the report job) gives the local
//! executor's claims. The SLURM test needs a running SLURM (`.ci/slurm.sh start`, which `.ci/run` calls).

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Two presets: one of a single wave, one whose second phase starts from its first (two waves).
const ONLY: &str = "diag_gd_vs_nsam,diag_finetune";

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn claims(out: &Path) -> String {
    fs::read_to_string(out.join("claims.json")).unwrap()
}

#[test]
fn report_rebuilds_the_claims_from_finished_runs_and_reproduce_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");

    // --plan: every run with its wave and config, nothing trained.
    let stdout = ok(&["reproduce", "--only", ONLY, "--out", p(&out), "--plan"]);
    assert!(stdout.contains("11 runs in 2 waves"), "{stdout}");
    let plan = json(&out.join("plan.json"));
    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 11);
    let wave = |dir: &str| runs.iter().find(|r| r["dir"] == dir).unwrap()["wave"].clone();
    assert_eq!(wave("diag_finetune/erm"), 0);
    assert_eq!(wave("diag_finetune/erm_then_1sam"), 1);
    assert!(runs
        .iter()
        .all(|r| r["example_gradients"].as_f64().unwrap() > 0.0));
    assert!(runs[0]["config"]
        .as_str()
        .unwrap()
        .contains("engine = \"diag\""));
    assert!(!out.join("diag_gd_vs_nsam").exists());
    // A report before the runs exist names the missing run, and every claim is "not run".
    let out_fail = samlab(&["report", p(&out)]);
    assert_eq!(out_fail.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out_fail.stderr);
    assert!(stderr.contains("no finished run here"), "{stderr}");

    let stdout = ok(&["reproduce", "--only", ONLY, "--out", p(&out)]);
    assert!(stdout.contains("0 fail, 0 not run"), "{stdout}");
    let first = claims(&out);
    let gd = out.join("diag_gd_vs_nsam/GD/summary.json");
    let finetuned = out.join("diag_finetune/erm_then_1sam/summary.json");
    let kept = [fs::read(&gd).unwrap(), fs::read(&finetuned).unwrap()];

    // `samlab report`: the same claims from the run directories alone.
    for f in ["claims.json", "report.html", "REPORT.md"] {
        fs::remove_file(out.join(f)).unwrap();
    }
    ok(&["report", p(&out)]);
    assert_eq!(claims(&out), first);
    assert!(out.join("report.html").exists());

    // A second reproduce trains nothing: the summaries (with their wall times) are the same bytes.
    ok(&["reproduce", "--only", ONLY, "--out", p(&out)]);
    assert_eq!(
        [fs::read(&gd).unwrap(), fs::read(&finetuned).unwrap()],
        kept
    );
    assert_eq!(claims(&out), first);

    // A run of another config in a planned directory: report refuses it by name, reproduce trains it again.
    let config = out.join("diag_gd_vs_nsam/GD/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replacen("alpha = 0.1", "alpha = 0.2", 1)).unwrap();
    let stale = samlab(&["report", p(&out)]);
    assert_eq!(stale.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("GD: it holds a run of another config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("experiments failed: diag_gd_vs_nsam"),
        "{stderr}"
    );
    ok(&["reproduce", "--only", ONLY, "--out", p(&out)]);
    assert_eq!(fs::read_to_string(&config).unwrap(), text);
    assert_eq!(claims(&out), first);

    // Issue 27: a results directory can move. The second phases name the runs they start from relatively
    // (`init_from = "../erm"`), so `samlab report` of the moved directory gives the same claims and a reproduce into
    // it trains nothing.
    let tuned = |root: &Path| root.join("diag_finetune/erm_then_1sam");
    let config = fs::read_to_string(tuned(&out).join("config.toml")).unwrap();
    assert!(config.contains("init_from = \"../erm\""), "{config}");
    let gd = |root: &Path| root.join("diag_gd_vs_nsam/GD/summary.json");
    let kept = [
        fs::read(gd(&out)).unwrap(),
        fs::read(tuned(&out).join("summary.json")).unwrap(),
    ];
    let moved = tmp.path().join("elsewhere/copy");
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::rename(&out, &moved).unwrap();
    for f in ["claims.json", "report.html", "REPORT.md"] {
        fs::remove_file(moved.join(f)).unwrap();
    }
    ok(&["report", p(&moved)]);
    assert_eq!(claims(&moved), first);
    ok(&["reproduce", "--only", ONLY, "--out", p(&moved)]);
    let now = [
        fs::read(gd(&moved)).unwrap(),
        fs::read(tuned(&moved).join("summary.json")).unwrap(),
    ];
    assert_eq!(now, kept);
    // An artefact edited after its run (its last metrics row dropped) is not judged: the report names it, and
    // reproduce trains the run again.
    let metrics = tuned(&moved).join("metrics.csv");
    let text = fs::read_to_string(&metrics).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&metrics, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let stale = samlab(&["report", p(&moved)]);
    assert_eq!(stale.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("metrics.csv is not the file its run wrote"),
        "{stderr}"
    );
    ok(&["reproduce", "--only", ONLY, "--out", p(&moved)]);
    assert_eq!(fs::read_to_string(&metrics).unwrap(), text);
    assert_eq!(claims(&moved), first);

    // A directory without a plan is bad input.
    let err = bad(&["report", p(tmp.path())]);
    assert!(err.contains("holds no reproduce results"), "{err}");
}

/// Whether a SLURM controller answers (`sinfo`).
fn slurm_is_up() -> bool {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

#[test]
fn reproduce_on_slurm_gives_the_local_claims() {
    if !slurm_is_up() {
        eprintln!(
            "skipped: no SLURM answers here (sinfo failed); `.ci/slurm.sh start DIR` starts one"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (local, cluster) = (tmp.path().join("local"), tmp.path().join("cluster"));
    ok(&["reproduce", "--only", ONLY, "--out", p(&local)]);
    let stdout = ok(&[
        "reproduce",
        "--only",
        ONLY,
        "--out",
        p(&cluster),
        "--executor",
        "slurm",
        "--wait",
        "--wait-timeout",
        "600",
    ]);
    assert!(
        stdout.contains("submitted 11 runs as 2 job arrays"),
        "{stdout}"
    );
    assert!(stdout.contains("0 fail, 0 not run"), "{stdout}");
    assert_eq!(claims(&cluster), claims(&local));
    let status = ok(&["sweep", "status", p(&cluster)]);
    assert!(status.contains("11 done"), "{status}");
    // Everything is finished: a second submission runs nothing and rebuilds the report here.
    let stdout = ok(&[
        "reproduce",
        "--only",
        ONLY,
        "--out",
        p(&cluster),
        "--executor",
        "slurm",
    ]);
    assert!(stdout.contains("every run is finished"), "{stdout}");
}

/// An experiment with an extended part plans it only with `--extended`, and the main job's report names what it
/// left out: the ResNet runs of the large-step preset.
#[test]
fn an_extended_part_is_planned_only_with_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = |extended: bool| -> Vec<String> {
        let out = tmp.path().join(extended.to_string());
        let mut args = vec![
            "reproduce",
            "--only",
            "large_step_sgd_deep",
            "--out",
            p(&out),
            "--plan",
        ];
        if extended {
            args.push("--extended");
        }
        ok(&args);
        json(&out.join("plan.json"))["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dir"].as_str().unwrap().to_string())
            .collect()
    };
    let (main, extended) = (dirs(false), dirs(true));
    assert_eq!(main.len(), 14);
    assert!(main.iter().all(|d| !d.contains("resnet")), "{main:?}");
    assert_eq!(extended.len(), 28);
    let resnet = extended.iter().filter(|d| d.contains("largestep_resnet_"));
    assert_eq!(resnet.count(), 14);
}
