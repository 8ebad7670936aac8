//! Runs as data: every engine's run is a config.toml (what `samlab run --config` replays) executed into a run
//! directory. The diagonal-net ([`diag`]) and ReLU-net ([`relu`]) runs live here; deep-net runs are
//! `samlab_deep::run`. [`AnyRunConfig`] is the config of any of them.

pub mod diag;
pub mod relu;

use std::path::Path;

use samlab_deep::run::DeepRunConfig;

/// A config.toml that is not a run config of any engine (bad input).
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a samlab run config: {reason}")]
pub struct ConfigFileError {
    /// The file, as named to the user.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// The config.toml of any engine.
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

impl AnyRunConfig {
    /// Parses a config.toml of any engine (the one its `engine` key names), naming the engine and the offending key
    /// when it does not fit; `path` names the file in the message.
    pub fn parse(path: &Path, text: &str) -> Result<AnyRunConfig, ConfigFileError> {
        let what = |reason: String| ConfigFileError {
            path: path.display().to_string(),
            reason,
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

    /// Every check its engine makes before a run writes anything: the data and initialization of the analytic
    /// engines with their SAM options; a deep run's counts, optimizer and SAM options (without reading its data).
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            AnyRunConfig::Diag(c) => diag::prepare(c).map(drop),
            AnyRunConfig::Relu(c) => relu::prepare(c).map(drop),
            AnyRunConfig::Deep(c) => Ok(samlab_deep::run::check_config(c)?),
        }
    }
}
