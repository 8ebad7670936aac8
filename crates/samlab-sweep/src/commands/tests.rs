use std::fs;

use super::*;
use crate::manifest::Manifest;

/// A sweep of two runs planned elsewhere (no engine needed: nothing here runs them).
fn two_runs(dir: &Path) -> Manifest {
    let m = Manifest::of_runs(vec![
        ("a".into(), "engine = \"diag\"\nseed = 0\n".into()),
        ("b".into(), "engine = \"diag\"\nseed = 1\n".into()),
    ])
    .unwrap();
    m.write(dir).unwrap();
    m
}

#[test]
fn a_new_sweep_has_every_run_pending_and_each_task_runs_its_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = two_runs(dir);
    let p = pending(dir).unwrap();
    assert_eq!(p.indices, [0, 1]);
    assert_eq!(p.states, [State::Missing, State::Missing]);
    assert_eq!(status::summary(&p.states), "2 missing");

    let Task::Run(run) = task(dir, 1).unwrap() else {
        panic!("run 1 is not finished")
    };
    assert_eq!(run.id, m.runs[1].id);
    assert_eq!(run.config, m.runs[1].config);
    assert_eq!(run.out, dir.join("b"));
    assert_eq!(run.source, dir.join("manifest.json"));
    assert!(!run.leftover);
    assert!(task(dir, 2).unwrap_err().is_bad_input());

    // A started run that died is failed, and still pending.
    fs::create_dir_all(crate::manifest::task_log(dir, 0).parent().unwrap()).unwrap();
    fs::write(crate::manifest::task_log(dir, 0), "").unwrap();
    let s = status(dir).unwrap();
    assert!(s.queue_error.is_none());
    assert_eq!(status::summary(&s.states), "1 failed, 1 missing");
    assert_eq!(pending(dir).unwrap().indices, [0, 1]);
}

#[test]
fn a_local_run_names_its_failed_tasks_and_their_first_log() {
    let dir = Path::new("/s");
    let mut ran = LocalRun {
        failures: vec![],
        states: vec![],
        report: dir.join("report.md"),
    };
    assert_eq!(ran.failure(dir), None);
    ran.failures = vec![
        TaskFailure {
            index: 3,
            status: "exit status: 1".into(),
        },
        TaskFailure {
            index: 0,
            status: "exit status: 2".into(),
        },
    ];
    assert_eq!(
        ran.failure(dir).unwrap(),
        format!(
            "2 runs failed: 3 (exit status: 1), 0 (exit status: 2) (their output: {})",
            crate::manifest::task_log(dir, 3).display()
        )
    );
}

#[test]
fn a_report_of_no_finished_run_lists_every_run_as_unfinished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    two_runs(dir);
    let w = report(dir, &[]).unwrap();
    assert_eq!(w.markdown, dir.join("report.md"));
    assert!(w.markdown.exists() && dir.join("report.csv").exists());
    assert_eq!(w.report.unfinished.len(), 2);
}
