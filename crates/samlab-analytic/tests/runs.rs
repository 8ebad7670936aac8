use samlab_analytic::diag::DiagTrainConfig;
use samlab_core::data::SparseRegression;
use samlab_core::run::{Observer, Quiet, RunConfig, RunStatus, Stopped};
use samlab_core::sam::{Grouping, SamConfig};
use samlab_core::schedule::LrSchedule;

use samlab_analytic::relu::{LossReduction, ReluInit, ReluTrainConfig};
use samlab_core::run::SummaryHeader;

use samlab_analytic::diag::run::{DataSource, DiagRunConfig};
use samlab_analytic::relu::run::{ReluData, ReluRunConfig};

fn diag_config(lr: f64) -> DiagRunConfig {
    DiagRunConfig {
        engine: Default::default(),
        data: DataSource::Synthetic(SparseRegression::NOTEBOOK),
        alpha: 0.1,
        init_from: None,
        train: DiagTrainConfig {
            lr: LrSchedule::constant(lr),
            iters: 300,
            batch_size: None,
            seed: 0,
            sam: SamConfig::usam(0.05, Grouping::Size(1)),
            log: Default::default(),
        },
    }
}

fn relu_config(lr: f64) -> ReluRunConfig {
    ReluRunConfig {
        engine: Default::default(),
        data: ReluData::TwelvePoints,
        width: 20,
        bias: true,
        init: ReluInit::Blanc { scale: 1.0 },
        init_seed: 1,
        train: ReluTrainConfig {
            lr: LrSchedule::constant(lr),
            iters: 200,
            batch_size: None,
            seed: 1,
            sam: SamConfig::erm(),
            loss: LossReduction::Sum,
            stop: None,
            log: Default::default(),
        },
        metrics: Default::default(),
    }
}

#[test]
fn a_loaded_run_equals_the_executed_one_and_only_for_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    // A run that converges and one that diverges (its non-finite summary values are written as null).
    for (name, lr) in [("ok", 0.1), ("diverged", 50.0)] {
        let config = diag_config(lr);
        let dir = tmp.path().join(name);
        let ran = config.execute(&dir, false, &mut Quiet).unwrap();
        let loaded = config.load(&dir).unwrap();
        assert_eq!(loaded.run.params, ran.run.params);
        assert_eq!(loaded.run.curve, ran.run.curve);
        assert_eq!(loaded.run.status, ran.run.status);
        assert_eq!(loaded.run.iterations, ran.run.iterations);
        assert_eq!(loaded.data.x_train, ran.data.x_train);
        assert_eq!(loaded.summary.seconds, ran.summary.seconds);
        assert!(config.is_finished_in(&dir));
        let header = SummaryHeader::read(&dir).unwrap();
        assert_eq!(
            (header.engine.as_str(), header.status.name()),
            ("diag", name)
        );
        if name == "diverged" {
            assert_eq!(loaded.run.status, RunStatus::Diverged);
        }
        let other = diag_config(lr / 2.0);
        let err = other.load(&dir).err().unwrap().to_string();
        assert!(err.contains("it holds a run of another config"), "{err}");
        assert!(!other.is_finished_in(&dir));
    }
    // A ReLU run: the network, the rows and the learned function come back.
    let relu = relu_config(0.01);
    let dir = tmp.path().join("relu");
    let ran = relu.execute(&dir, false, &mut Quiet).unwrap();
    let loaded = relu.load(&dir).unwrap();
    assert_eq!(SummaryHeader::read(&dir).unwrap().engine, "relu");
    assert_eq!(loaded.run.net, ran.run.net);
    assert_eq!(loaded.run.curve, ran.run.curve);
    assert_eq!(loaded.rows, ran.rows);
    assert_eq!(loaded.function, ran.function);
    assert_eq!(
        loaded.summary.metrics.feature_sparsity,
        ran.summary.metrics.feature_sparsity
    );
    let err = diag_config(0.1)
        .load(&tmp.path().join("none"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no finished run here"), "{err}");
}

/// A parent and the run that starts from it, moved together: the relative `init_from` still names the parent,
/// the moved runs load and count as finished, and an absolute `init_from` naming the same parent is the same
/// config; artefacts edited after the run are refused by name, and a run without recorded hashes (older) loads.
#[test]
fn runs_move_with_their_parent_and_their_artefacts_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    let parent = diag_config(0.1);
    let child = DiagRunConfig {
        init_from: Some("../erm".into()),
        ..diag_config(0.05)
    };
    parent.execute(&old.join("erm"), false, &mut Quiet).unwrap();
    let tuned = child.execute(&old.join("ft"), false, &mut Quiet).unwrap();
    assert_eq!(child.starts_from(&old.join("ft")), Some(old.join("erm")));
    std::fs::rename(&old, &new).unwrap();
    let ft = new.join("ft");
    let loaded = child.load(&ft).unwrap();
    assert_eq!(loaded.run.params, tuned.run.params);
    assert!(child.is_finished_in(&ft));
    // Replaying the moved run reads the moved parent.
    let again = child.execute(&new.join("ft2"), false, &mut Quiet).unwrap();
    assert_eq!(again.run.params, tuned.run.params);
    let absolute = DiagRunConfig {
        init_from: Some(new.join("erm")),
        ..child.clone()
    };
    assert!(absolute.is_finished_in(&ft));
    let elsewhere = DiagRunConfig {
        init_from: Some("../ft2".into()),
        ..child.clone()
    };
    assert!(!elsewhere.is_finished_in(&ft));
    // A run cannot start from itself.
    let own = DiagRunConfig {
        init_from: Some("../ft".into()),
        ..child.clone()
    };
    let err = own.execute(&ft, true, &mut Quiet).err().unwrap();
    assert!(
        format!("{err:#}").contains("a run cannot be its own parent"),
        "{err:#}"
    );
    assert!(child.load(&ft).is_ok());

    // An edited artefact: u.npy scaled, metrics.csv with a row dropped.
    let u = ft.join("u.npy");
    let bytes = std::fs::read(&u).unwrap();
    let scaled: ndarray::Array1<f64> =
        samlab_core::data::read_array::<ndarray::Ix1>(&u).unwrap() * 1.01;
    samlab_core::data::write_array(&u, &scaled).unwrap();
    let err = format!("{:#}", child.load(&ft).err().unwrap());
    assert!(err.contains("u.npy is not the file its run wrote"), "{err}");
    assert!(!child.is_finished_in(&ft));
    std::fs::write(&u, &bytes).unwrap();
    let metrics = ft.join("metrics.csv");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let shorter: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&metrics, shorter.join("\n") + "\n").unwrap();
    let err = format!("{:#}", child.load(&ft).err().unwrap());
    assert!(err.contains("metrics.csv is not the file"), "{err}");
    // A run written before the hashes were recorded is read unchecked.
    let summary = ft.join("summary.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("artefacts_sha256");
    std::fs::write(&summary, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    assert_eq!(child.load(&ft).unwrap().run.curve.len(), 2);

    // ReLU runs record theirs too (the learned function's files included).
    let mut relu = relu_config(0.01);
    relu.width = 8;
    relu.train.iters = 20;
    let dir = tmp.path().join("relu");
    let ran = relu.execute(&dir, false, &mut Quiet).unwrap();
    let recorded = ran.summary.artefacts_sha256.unwrap();
    assert!(recorded.contains_key("W.npy") && recorded.contains_key("function.npy"));
    std::fs::write(dir.join("function.npy"), b"not the function").unwrap();
    let err = format!("{:#}", relu.load(&dir).err().unwrap());
    assert!(err.contains("function.npy is not the file"), "{err}");
}

/// Asks the run to stop once `at` units are done.
struct StopAt {
    at: u64,
    last: u64,
}

impl Observer for StopAt {
    fn advanced(&mut self, done: u64) -> bool {
        self.last = done;
        done < self.at
    }
}

/// An observer's request to stop ends an analytic run there: the error says where, nothing is written, and with
/// `force` the run that was to be replaced is kept as it was.
#[test]
fn a_request_to_stop_ends_an_analytic_run_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = tmp.path().join("kept");
    diag_config(0.1).execute(&kept, false, &mut Quiet).unwrap();
    let summary = std::fs::read(kept.join("summary.json")).unwrap();
    let new = tmp.path().join("new");
    for (dir, force) in [(&new, false), (&kept, true)] {
        stops_early(&diag_config(0.05), 300, dir, force);
        stops_early(&relu_config(1e-4), 200, dir, force);
    }
    assert!(!new.exists());
    assert_eq!(std::fs::read(kept.join("summary.json")).unwrap(), summary);
}

/// Runs `config` (of `total` updates) into `dir`, asking it to stop at update 20.
fn stops_early<C: RunConfig>(config: &C, total: usize, dir: &std::path::Path, force: bool) {
    let mut observer = StopAt { at: 20, last: 0 };
    let err = config.execute(dir, force, &mut observer).err().unwrap();
    let stopped = err.downcast_ref::<Stopped>().expect("a Stopped error");
    assert_eq!(stopped.total, total);
    assert!(stopped.done >= 20 && stopped.done < total, "{stopped:?}");
    assert_eq!(observer.last, 20, "no count after the request");
    assert!(err.to_string().contains("nothing was written"), "{err}");
}
