//! Runs as data: every engine's run is a config.toml (what `samlab run --config` replays) executed into a run
//! directory. The diagonal-net ([`diag`]) and ReLU-net ([`relu`]) runs live here; deep-net runs are
//! `samlab_deep::run`. [`AnyRunConfig`] is the config of any of them.
#![deny(missing_docs)]

pub mod deep;
pub mod diag;
pub mod diagnose;
pub mod implicit_bias;
pub mod relu;

use std::path::{Path, PathBuf};

use samlab_core::run_dir::{check_artefacts, resolve_init_from, same_dir};
use samlab_core::BadInput;
use samlab_deep::run::DeepRunConfig;
use serde::de::DeserializeOwned;

/// The config.toml of any engine.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyRunConfig {
    /// A diagonal-net run.
    Diag(diag::DiagRunConfig),
    /// A ReLU-net run.
    Relu(relu::ReluRunConfig),
    /// A deep-net run.
    Deep(Box<DeepRunConfig>),
}

/// The engines a config.toml can be for, each with a top-level key only its config has (for configs written before
/// the `engine` key).
const ENGINE_KEYS: [(&str, &str); 3] = [("model", "deep"), ("width", "relu"), ("alpha", "diag")];

impl From<diag::DiagRunConfig> for AnyRunConfig {
    fn from(c: diag::DiagRunConfig) -> Self {
        AnyRunConfig::Diag(c)
    }
}

impl From<relu::ReluRunConfig> for AnyRunConfig {
    fn from(c: relu::ReluRunConfig) -> Self {
        AnyRunConfig::Relu(c)
    }
}

impl AnyRunConfig {
    /// Parses a config.toml of any engine (the one its `engine` key names), naming the engine and the offending key
    /// when it does not fit (bad input); `path` names the file in the message.
    pub fn parse(path: &Path, text: &str) -> Result<AnyRunConfig, BadInput> {
        let what = |reason: String| {
            BadInput(format!(
                "{} is not a samlab run config: {reason}",
                path.display()
            ))
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| what(format!("not TOML: {e}")))?;
        let engine = match table.get("engine") {
            Some(toml::Value::String(e)) if ENGINE_KEYS.iter().any(|&(_, name)| name == e) => e.as_str(),
            Some(other) => {
                return Err(what(format!(
                    "`engine` must be \"diag\", \"relu\" or \"deep\", got {other}"
                )))
            }
            // Configs written before the `engine` key: the engine is told by a key only its config has.
            None => ENGINE_KEYS
                .iter()
                .find(|(key, _)| table.contains_key(*key))
                .map(|&(_, engine)| engine)
                .ok_or_else(|| {
                    what("it has no `engine` key and none of the top-level keys `model` (deep net), `width` (ReLU net), `alpha` (diagonal net)".into())
                })?,
        };
        let bad = |e: toml::de::Error| what(format!("as a {engine} run config: {e}"));
        Ok(match engine {
            "deep" => AnyRunConfig::Deep(Box::new(toml::from_str(text).map_err(bad)?)),
            "relu" => AnyRunConfig::Relu(toml::from_str(text).map_err(bad)?),
            _ => AnyRunConfig::Diag(toml::from_str(text).map_err(bad)?),
        })
    }

    /// Every check its engine makes before a run writes anything into the run directory `dir` (which a relative
    /// `init_from` is read from): the data and initialization of the analytic engines with their SAM options; a
    /// deep run's counts, optimizer and SAM options (without reading its data).
    pub fn check(&self, dir: &Path) -> anyhow::Result<()> {
        match self {
            AnyRunConfig::Diag(c) => diag::prepare(c, dir).map(drop),
            AnyRunConfig::Relu(c) => relu::prepare(c).map(drop),
            AnyRunConfig::Deep(c) => Ok(samlab_deep::run::check_config(c)?),
        }
    }

    /// The engine's name, as config.toml's `engine` key writes it.
    pub fn engine(&self) -> &'static str {
        match self {
            AnyRunConfig::Diag(_) => "diag",
            AnyRunConfig::Relu(_) => "relu",
            AnyRunConfig::Deep(_) => "deep",
        }
    }

    /// The config.toml text.
    pub fn to_toml(&self) -> String {
        let text = match self {
            AnyRunConfig::Diag(c) => toml::to_string(c),
            AnyRunConfig::Relu(c) => toml::to_string(c),
            AnyRunConfig::Deep(c) => toml::to_string(c),
        };
        text.expect("run configs serialize")
    }

    /// The run directory whose final weights this run, in the run directory `dir`, starts from, if any (it must
    /// finish first): `init_from` resolved as the engines read it (`run_dir::resolve_init_from`).
    pub fn starts_from(&self, dir: &Path) -> Option<PathBuf> {
        let from = match self {
            AnyRunConfig::Diag(c) => c.init_from.as_deref(),
            AnyRunConfig::Relu(_) => None,
            AnyRunConfig::Deep(c) => c.init_from.as_deref(),
        };
        from.map(|f| resolve_init_from(dir, f))
    }

    /// Whether `dir` holds this run, finished (ok or diverged).
    pub fn is_finished_in(&self, dir: &Path) -> bool {
        match self {
            AnyRunConfig::Diag(c) => finished::<_, diag::DiagSummary>(dir, c).is_ok_and(|s| {
                check_artefacts(dir, s.artefacts_sha256.as_ref(), &diag::ARTEFACTS).is_ok()
            }),
            AnyRunConfig::Relu(c) => relu::load(dir, c).is_ok(),
            AnyRunConfig::Deep(c) => deep::load(dir, c).is_ok(),
        }
    }

    /// Trains this run into `out` without printing anything: a deep run already started there from this config is
    /// resumed; anything else in `out` is replaced.
    pub fn execute_quietly(&self, out: &Path) -> anyhow::Result<()> {
        use samlab_deep::run::Quiet;
        match self {
            AnyRunConfig::Diag(c) => diag::execute(c, out, true, &mut |_| {}).map(drop),
            AnyRunConfig::Relu(c) => relu::execute(c, out, true, &mut |_| {}).map(drop),
            AnyRunConfig::Deep(c) => {
                let started = std::fs::read_to_string(out.join("config.toml"))
                    .ok()
                    .and_then(|t| toml::from_str::<DeepRunConfig>(&t).ok())
                    .is_some_and(|on_disk| same_config(out, &on_disk, &**c));
                if started && out.join("summary.json").exists() {
                    samlab_deep::run::resume(out, &mut Quiet)?;
                } else {
                    samlab_deep::run::train(c, out, true, &mut Quiet)?;
                }
                Ok(())
            }
        }
    }
}

/// A run directory that does not hold the finished run asked for: missing, unfinished, or of another config.
#[derive(Debug, thiserror::Error)]
#[error("{dir}: {why}")]
pub struct NotFinished {
    /// The run directory.
    pub dir: String,
    /// What is there instead.
    pub why: String,
}

/// A run config whose parent run (`init_from`) is compared by the directory it names, not by its spelling.
trait StartsFrom: Clone + PartialEq {
    /// The config without its `init_from`, and the `init_from`.
    fn split_init_from(mut self) -> (Self, Option<PathBuf>) {
        let from = self.init_from_mut().and_then(Option::take);
        (self, from)
    }
    /// Its `init_from` field, if the engine has one.
    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>>;
}

impl StartsFrom for diag::DiagRunConfig {
    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        Some(&mut self.init_from)
    }
}

impl StartsFrom for relu::ReluRunConfig {
    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        None
    }
}

impl StartsFrom for DeepRunConfig {
    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        Some(&mut self.init_from)
    }
}

/// Whether `a` and `b` are one run config for the run directory `dir`: equal but for how `init_from` is spelt, each
/// naming the same parent run (so the absolute `init_from` of a results tree written before samlab recorded
/// relative ones, and the relative one planned now, are one config while the tree stays where it was).
fn same_config<C: StartsFrom>(dir: &Path, a: &C, b: &C) -> bool {
    let ((a, from_a), (b, from_b)) = (a.clone().split_init_from(), b.clone().split_init_from());
    a == b
        && match (from_a, from_b) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                x == y || same_dir(&resolve_init_from(dir, &x), &resolve_init_from(dir, &y))
            }
            _ => false,
        }
}

/// Reads `dir`'s config.toml and summary.json, checking that the run was made from `expected` and finished.
fn finished<C, S>(dir: &Path, expected: &C) -> Result<S, NotFinished>
where
    C: DeserializeOwned + StartsFrom,
    S: DeserializeOwned,
{
    let fail = |why: String| NotFinished {
        dir: dir.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(dir.join("config.toml"))
        .map_err(|e| fail(format!("no finished run here (config.toml: {e})")))?;
    let config: C = toml::from_str(&text)
        .map_err(|e| fail(format!("config.toml is not this engine's: {e}")))?;
    if !same_config(dir, &config, expected) {
        return Err(fail(
            "it holds a run of another config (made with other settings): train it again".into(),
        ));
    }
    let summary = std::fs::read(dir.join("summary.json"))
        .map_err(|e| fail(format!("the run has not finished (summary.json: {e})")))?;
    serde_json::from_slice(&summary).map_err(|e| fail(format!("summary.json: {e}")))
}

#[cfg(test)]
mod tests {
    use samlab_core::data::SparseRegression;
    use samlab_core::diag_net::{DiagTrainConfig, RunStatus};
    use samlab_core::sam::{Grouping, SamConfig};
    use samlab_core::schedule::LrSchedule;

    use samlab_core::relu_net::{LossReduction, ReluInit, ReluTrainConfig};
    use samlab_core::run_dir::SummaryHeader;

    use super::*;
    use crate::diag::{self, DataSource, DiagRunConfig};
    use crate::relu::{self, ReluData, ReluRunConfig};

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

    #[test]
    fn a_loaded_run_equals_the_executed_one_and_only_for_its_config() {
        let tmp = tempfile::tempdir().unwrap();
        // A run that converges and one that diverges (its non-finite summary values are written as null).
        for (name, lr) in [("ok", 0.1), ("diverged", 50.0)] {
            let config = diag_config(lr);
            let dir = tmp.path().join(name);
            let ran = diag::execute(&config, &dir, false, &mut |_| {}).unwrap();
            let loaded = diag::load(&dir, &config).unwrap();
            assert_eq!(loaded.run.params, ran.run.params);
            assert_eq!(loaded.run.curve, ran.run.curve);
            assert_eq!(loaded.run.status, ran.run.status);
            assert_eq!(loaded.run.iterations, ran.run.iterations);
            assert_eq!(loaded.data.x_train, ran.data.x_train);
            assert_eq!(loaded.summary.seconds, ran.summary.seconds);
            assert!(AnyRunConfig::Diag(config.clone()).is_finished_in(&dir));
            let header = SummaryHeader::read(&dir).unwrap();
            assert_eq!(
                (header.engine.as_str(), header.status.as_str()),
                ("diag", name)
            );
            if name == "diverged" {
                assert_eq!(loaded.run.status, RunStatus::Diverged);
            }
            let other = diag_config(lr / 2.0);
            let err = diag::load(&dir, &other).err().unwrap().to_string();
            assert!(err.contains("it holds a run of another config"), "{err}");
            assert!(!AnyRunConfig::Diag(other).is_finished_in(&dir));
        }
        // A ReLU run: the network, the rows and the learned function come back.
        let relu = ReluRunConfig {
            engine: Default::default(),
            data: ReluData::TwelvePoints,
            width: 20,
            bias: true,
            init: ReluInit::Blanc { scale: 1.0 },
            init_seed: 1,
            train: ReluTrainConfig {
                lr: LrSchedule::constant(0.01),
                iters: 200,
                batch_size: None,
                seed: 1,
                sam: SamConfig::erm(),
                loss: LossReduction::Sum,
                stop: None,
                log: Default::default(),
            },
            metrics: Default::default(),
        };
        let dir = tmp.path().join("relu");
        let ran = relu::execute(&relu, &dir, false, &mut |_| {}).unwrap();
        let loaded = relu::load(&dir, &relu).unwrap();
        assert_eq!(SummaryHeader::read(&dir).unwrap().engine, "relu");
        assert_eq!(loaded.run.net, ran.run.net);
        assert_eq!(loaded.run.curve, ran.run.curve);
        assert_eq!(loaded.rows, ran.rows);
        assert_eq!(loaded.function, ran.function);
        assert_eq!(
            loaded.summary.metrics.feature_sparsity,
            ran.summary.metrics.feature_sparsity
        );
        let err = diag::load(&tmp.path().join("none"), &diag_config(0.1))
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
        diag::execute(&parent, &old.join("erm"), false, &mut |_| {}).unwrap();
        let tuned = diag::execute(&child, &old.join("ft"), false, &mut |_| {}).unwrap();
        assert_eq!(
            AnyRunConfig::Diag(child.clone()).starts_from(&old.join("ft")),
            Some(old.join("erm"))
        );
        std::fs::rename(&old, &new).unwrap();
        let ft = new.join("ft");
        let loaded = diag::load(&ft, &child).unwrap();
        assert_eq!(loaded.run.params, tuned.run.params);
        assert!(AnyRunConfig::Diag(child.clone()).is_finished_in(&ft));
        // Replaying the moved run reads the moved parent.
        let again = diag::execute(&child, &new.join("ft2"), false, &mut |_| {}).unwrap();
        assert_eq!(again.run.params, tuned.run.params);
        let absolute = DiagRunConfig {
            init_from: Some(new.join("erm")),
            ..child.clone()
        };
        assert!(AnyRunConfig::Diag(absolute).is_finished_in(&ft));
        let elsewhere = DiagRunConfig {
            init_from: Some("../ft2".into()),
            ..child.clone()
        };
        assert!(!AnyRunConfig::Diag(elsewhere).is_finished_in(&ft));
        // A run cannot start from itself.
        let own = DiagRunConfig {
            init_from: Some("../ft".into()),
            ..child.clone()
        };
        let err = diag::execute(&own, &ft, true, &mut |_| {}).err().unwrap();
        assert!(
            format!("{err:#}").contains("a run cannot be its own parent"),
            "{err:#}"
        );
        assert!(diag::load(&ft, &child).is_ok());

        // An edited artefact: u.npy scaled, metrics.csv with a row dropped.
        let u = ft.join("u.npy");
        let bytes = std::fs::read(&u).unwrap();
        let scaled: ndarray::Array1<f64> =
            samlab_core::data::read_array::<ndarray::Ix1>(&u).unwrap() * 1.01;
        samlab_core::data::write_array(&u, &scaled).unwrap();
        let err = format!("{:#}", diag::load(&ft, &child).err().unwrap());
        assert!(err.contains("u.npy is not the file its run wrote"), "{err}");
        assert!(!AnyRunConfig::Diag(child.clone()).is_finished_in(&ft));
        std::fs::write(&u, &bytes).unwrap();
        let metrics = ft.join("metrics.csv");
        let text = std::fs::read_to_string(&metrics).unwrap();
        let shorter: Vec<&str> = text.lines().take(3).collect();
        std::fs::write(&metrics, shorter.join("\n") + "\n").unwrap();
        let err = format!("{:#}", diag::load(&ft, &child).err().unwrap());
        assert!(err.contains("metrics.csv is not the file"), "{err}");
        // A run written before the hashes were recorded is read unchecked.
        let summary = ft.join("summary.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("artefacts_sha256");
        std::fs::write(&summary, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        assert_eq!(diag::load(&ft, &child).unwrap().run.curve.len(), 2);

        // ReLU runs record theirs too (the learned function's files included).
        let relu = ReluRunConfig {
            engine: Default::default(),
            data: ReluData::TwelvePoints,
            width: 8,
            bias: true,
            init: ReluInit::Blanc { scale: 1.0 },
            init_seed: 1,
            train: ReluTrainConfig {
                lr: LrSchedule::constant(0.01),
                iters: 20,
                batch_size: None,
                seed: 1,
                sam: SamConfig::erm(),
                loss: LossReduction::Sum,
                stop: None,
                log: Default::default(),
            },
            metrics: Default::default(),
        };
        let dir = tmp.path().join("relu");
        let ran = relu::execute(&relu, &dir, false, &mut |_| {}).unwrap();
        let recorded = ran.summary.artefacts_sha256.unwrap();
        assert!(recorded.contains_key("W.npy") && recorded.contains_key("function.npy"));
        std::fs::write(dir.join("function.npy"), b"not the function").unwrap();
        let err = format!("{:#}", relu::load(&dir, &relu).err().unwrap());
        assert!(err.contains("function.npy is not the file"), "{err}");
    }
}
