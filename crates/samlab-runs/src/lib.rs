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
mod tests;
