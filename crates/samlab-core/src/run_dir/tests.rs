use super::*;
use crate::run::{CurvePoint, RunStatus, SummaryHeader};

#[test]
fn init_from_is_read_from_the_run_directory_and_recorded_relative_between_siblings() {
    let run = Path::new("/r/x/ft");
    assert_eq!(
        resolve_init_from(run, Path::new("../erm")),
        Path::new("/r/x/erm")
    );
    assert_eq!(
        resolve_init_from(run, Path::new("./../../y/./a")),
        Path::new("/r/y/a")
    );
    assert_eq!(
        resolve_init_from(run, Path::new("/abs/erm")),
        Path::new("/abs/erm")
    );
    assert_eq!(
        resolve_init_from(Path::new("runs/ft"), Path::new("../erm")),
        Path::new("runs/erm")
    );
    let record =
        |out: &str, parent: &str| init_from_record(Path::new(out), Path::new(parent)).unwrap();
    assert_eq!(record("runs/ft", "runs/erm"), Path::new("../erm"));
    assert_eq!(record("runs/ft", "runs/./x/../erm"), Path::new("../erm"));
    assert_eq!(record("/a/ft", "/b/erm"), Path::new("/b/erm"));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(record("runs/ft", "other/erm"), cwd.join("other/erm"));
    // Its own parent, however spelt.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    fs::create_dir(&out).unwrap();
    for own in ["../a", ".", "../a/."] {
        let err = check_not_own_parent(&out, Path::new(own)).unwrap_err();
        assert!(
            err.is_bad_input() && err.to_string().contains("its own parent"),
            "{err}"
        );
    }
    assert!(check_not_own_parent(&out, Path::new("../b")).is_ok());
    std::os::unix::fs::symlink(&out, tmp.path().join("link")).unwrap();
    assert!(check_not_own_parent(&out, &tmp.path().join("link")).is_err());
}

#[test]
fn artefacts_are_checked_against_their_recorded_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("a.csv"), "x\n1\n").unwrap();
    let hashes = artefact_hashes(dir, &["a.csv"]).unwrap();
    // `printf 'x\n1\n' | sha256sum`
    assert_eq!(
        hashes["a.csv"],
        "daff832f802000e645771a60983c76c963f6ee602a6230e45237bd360e91cc1a"
    );
    assert!(check_artefacts(dir, Some(&hashes), &["a.csv"]).is_ok());
    assert!(check_artefacts(dir, None, &["a.csv", "b.npy"]).is_ok());
    let err = check_artefacts(dir, Some(&hashes), &["a.csv", "b.npy"]).unwrap_err();
    assert!(err.to_string().contains("records no SHA-256"), "{err}");
    fs::write(dir.join("a.csv"), "x\n2\n").unwrap();
    let err = check_artefacts(dir, Some(&hashes), &["a.csv"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("a.csv is not the file its run wrote"),
        "{err}"
    );
    fs::remove_file(dir.join("a.csv")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("a.csv")).unwrap();
    let err = check_artefacts(dir, Some(&hashes), &["a.csv"]).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn metrics_rows_read_back_and_damaged_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let rows = [
        CurvePoint {
            sam: crate::ascent::SamObservation {
                weight_norm: 2.0,
                delta_norm: 0.25,
                grad_cos: -0.5,
                sharpness: 1e-3,
                ..crate::ascent::SamObservation::ABSENT
            },
            ..CurvePoint::new(0, 0.1 + 0.2, f64::NAN)
        },
        CurvePoint::new(7, 1.5e-7, f64::INFINITY),
    ];
    write_rows(&path, &rows).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "iteration,train_loss,test_loss,sam_weight_norm,sam_delta_norm,sam_grad_cos,sam_sharpness\n\
         0,0.30000000000000004,NaN,2,0.25,-0.5,0.001\n7,0.00000015,inf,NaN,NaN,NaN,NaN\n"
    );
    let back: Vec<CurvePoint> = read_rows(&path).unwrap();
    let bits = |r: &[CurvePoint]| -> Vec<Vec<u64>> {
        r.iter()
            .map(|p| p.values().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&back), bits(&rows));
    // A run written before the SAM columns reads back with them absent; a part of them is refused.
    fs::write(&path, "iteration,train_loss,test_loss\n3,0.5,0.25\n").unwrap();
    let old: Vec<CurvePoint> = read_rows(&path).unwrap();
    assert_eq!(old, [CurvePoint::new(3, 0.5, 0.25)]);
    assert!(old[0].sam.is_absent());
    fs::write(
        &path,
        "iteration,train_loss,test_loss,sam_weight_norm,sam_grad_cos\n3,0.5,0.25,1,1\n",
    )
    .unwrap();
    assert!(read_rows::<CurvePoint>(&path).is_err());
    for (damaged, expect) in [
        ("iteration,loss,test_loss\n", "the columns are"),
        (
            "iteration,train_loss,test_loss\n1.5,0,0\n",
            "row 1: iteration does not fit",
        ),
        (
            "iteration,train_loss,test_loss\n-1,0,0\n",
            "row 1: iteration does not fit",
        ),
        (
            "iteration,train_loss,test_loss\n1,x,0\n",
            "row 1: train_loss = \"x\" is not a number",
        ),
        ("iteration,train_loss,test_loss\n1,0\n", "metrics.csv"),
    ] {
        fs::write(&path, damaged).unwrap();
        let err = read_rows::<CurvePoint>(&path).unwrap_err().to_string();
        assert!(err.contains(expect), "{damaged:?}: {err}");
    }
}

#[test]
fn commit_publishes_and_drop_discards() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let w = RunDirWriter::create(&out, false).unwrap();
    fs::write(w.path().join("a.txt"), "first").unwrap();
    write_header(w.path());
    assert!(!out.exists(), "nothing visible before commit");
    w.commit().unwrap();
    assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "first");

    // Occupied without force: refused, old run intact.
    let err = RunDirWriter::create(&out, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");

    // Forced but abandoned (e.g. the run failed): old run intact, no staging left behind.
    let w = RunDirWriter::create(&out, true).unwrap();
    fs::write(w.path().join("b.txt"), "partial").unwrap();
    drop(w);
    assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "first");
    assert_eq!(hidden(root.path()), [".run.lock"]);

    // Forced and committed: replaced whole.
    let w = RunDirWriter::create(&out, true).unwrap();
    fs::write(w.path().join("b.txt"), "second").unwrap();
    w.commit().unwrap();
    assert!(!out.join("a.txt").exists());
    assert_eq!(fs::read_to_string(out.join("b.txt")).unwrap(), "second");
    assert_eq!(hidden(root.path()), [".run.lock"]);
}

#[test]
fn an_atomic_write_replaces_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("f.csv"), dir.path().join("f.md"));
    write_atomic(&a, |p| fs::write(p, "a")).unwrap();
    write_atomic(&b, |p| fs::write(p, "b")).unwrap();
    let failed = write_atomic(&a, |p| {
        fs::write(p, "half")?;
        Err(io::Error::other("disk full"))
    });
    assert!(failed.is_err());
    assert_eq!(fs::read_to_string(&a).unwrap(), "a");
    assert_eq!(fs::read_to_string(&b).unwrap(), "b");
    assert!(hidden(dir.path()).is_empty(), "no temporary file left");
}

/// A summary.json header that makes `dir` a run.
fn write_header(dir: &Path) {
    let header = SummaryHeader::new("diag", RunStatus::Ok);
    write_json(&dir.join("summary.json"), &header).unwrap();
}

#[test]
fn force_replaces_only_runs_and_empty_directories() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    check_replaceable(&out).unwrap();
    check_replaceable(&root.path().join("missing")).unwrap();
    fs::write(out.join("thesis.tex"), "x").unwrap();
    fs::create_dir(out.join("figures")).unwrap();
    for writer in [RunDirWriter::create, RunDirWriter::in_place] {
        let err = writer(&out, true).unwrap_err();
        assert!(
            err.to_string().contains(
                "is not a samlab run (it holds figures/, thesis.tex and no samlab summary.json)"
            ),
            "{err}"
        );
        assert!(err.is_bad_input());
    }
    assert!(out.join("thesis.tex").exists());
    // A summary header naming an engine makes it a run; so does a started deep run.
    write_header(&out);
    check_replaceable(&out).unwrap();
    fs::remove_file(out.join("summary.json")).unwrap();
    fs::write(out.join("config.toml"), "engine = \"deep\"\n").unwrap();
    assert!(check_replaceable(&out).is_err(), "no checkpoint/ yet");
    fs::create_dir(out.join("checkpoint")).unwrap();
    check_replaceable(&out).unwrap();
    let file = root.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = check_replaceable(&file).unwrap_err();
    assert!(err.to_string().contains("a regular file"), "{err}");
}

#[test]
fn an_abandoned_replacement_puts_the_old_run_back() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let w = RunDirWriter::create(&out, false).unwrap();
    write_header(w.path());
    w.commit().unwrap();
    let before = fs::read(out.join("summary.json")).unwrap();
    let w = RunDirWriter::in_place(&out, true).unwrap();
    assert!(!out.join("summary.json").exists());
    fs::write(out.join("config.toml"), "partial").unwrap();
    w.abandon().unwrap();
    assert_eq!(fs::read(out.join("summary.json")).unwrap(), before);
    assert!(!out.join("config.toml").exists());
    assert_eq!(hidden(root.path()), [".run.lock"]);
    // Abandoning a run that replaced nothing leaves it, resumable.
    let w = RunDirWriter::resume(&out).unwrap();
    w.abandon().unwrap();
    assert_eq!(fs::read(out.join("summary.json")).unwrap(), before);
}

#[test]
fn capped_reads_stop_at_the_bound() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("big.toml");
    fs::write(&path, vec![b'a'; 100]).unwrap();
    assert_eq!(read_capped(&path, 100).unwrap().len(), 100);
    let err = read_capped(&path, 99).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("longer than 99 bytes"), "{err}");
    let err = read_text(Path::new("/dev/zero")).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}

/// The hidden entries of `dir`, sorted.
fn hidden(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn the_lock_excludes_a_second_writer_and_tidies_what_killed_runs_left() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let w = RunDirWriter::create(&out, false).unwrap();
    fs::write(w.path().join("a.txt"), "first").unwrap();
    // A second writer (with or without force) and a second lock are refused while the first holds it.
    for force in [false, true] {
        let err = RunDirWriter::create(&out, force).unwrap_err();
        assert!(matches!(err, RunDirError::Busy(..)), "{err}");
    }
    assert!(matches!(RunLock::acquire(&out), Err(RunDirError::Busy(..))));
    w.commit().unwrap();
    let lock = RunLock::acquire(&out).unwrap();
    drop(lock);

    // A killed commit: staging complete, <out> set aside, never replaced. The old run comes back and the
    // staging directory goes.
    fs::create_dir(root.path().join(".run.staging-99999999")).unwrap();
    fs::rename(&out, root.path().join(".run.old-99999999")).unwrap();
    let lock = RunLock::acquire(&out).unwrap();
    assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "first");
    assert_eq!(hidden(root.path()), [".run.lock"]);

    // A run set aside while its replacement is in <out>: kept and listed until the replacement completes.
    let old = lock.set_aside().unwrap();
    fs::create_dir(&out).unwrap();
    fs::write(out.join("new.txt"), "replacement").unwrap();
    drop(lock);
    let lock = RunLock::acquire(&out).unwrap();
    assert_eq!(lock.set_aside_runs(), [old]);
    lock.remove_set_aside().unwrap();
    assert_eq!(hidden(root.path()), [".run.lock"]);
    assert!(out.join("new.txt").exists());
}

#[test]
fn an_out_below_a_regular_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = RunDirWriter::create(&file.join("run"), true).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{} is a regular file", file.display())),
        "{err}"
    );
    assert!(err.is_bad_input());
}

#[test]
fn csv_round_trips_floats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    write_csv(&path, &["a", "b"], [vec![1.0, 0.1 + 0.2]].into_iter()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let value: f64 = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(value, 0.1 + 0.2);
}
