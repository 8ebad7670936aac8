//! Runs as data: [`AnyRunConfig`] is the config.toml of any engine, dispatched onto the run contract every engine
//! keeps (`samlab_core::run::RunConfig`): diagonal-net and ReLU-net runs (`samlab_analytic`), deep-net runs
//! (`samlab_deep::run`). Beside it, [`diagnose`]: what SAM did in a finished run of any engine.
#![deny(missing_docs)]

pub mod diagnose;

use std::path::Path;

use samlab_analytic::diag::run::DiagRunConfig;
use samlab_analytic::relu::run::ReluRunConfig;
use samlab_core::run::{engine_of, AnyRun, RunConfig};
use samlab_core::BadInput;
use samlab_deep::run::DeepRunConfig;

/// The config.toml of any engine.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyRunConfig {
    /// A diagonal-net run.
    Diag(DiagRunConfig),
    /// A ReLU-net run.
    Relu(ReluRunConfig),
    /// A deep-net run.
    Deep(Box<DeepRunConfig>),
}

impl From<DiagRunConfig> for AnyRunConfig {
    fn from(c: DiagRunConfig) -> Self {
        AnyRunConfig::Diag(c)
    }
}

impl From<ReluRunConfig> for AnyRunConfig {
    fn from(c: ReluRunConfig) -> Self {
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
        let engine = engine_of(&table).map_err(what)?;
        let bad = |e: toml::de::Error| what(format!("as a {engine} run config: {e}"));
        Ok(match engine {
            DeepRunConfig::ENGINE => {
                AnyRunConfig::Deep(Box::new(toml::from_str(text).map_err(bad)?))
            }
            ReluRunConfig::ENGINE => AnyRunConfig::Relu(toml::from_str(text).map_err(bad)?),
            _ => AnyRunConfig::Diag(toml::from_str(text).map_err(bad)?),
        })
    }
}

/// Any config is its engine's run contract: `check`, `engine`, `to_toml`, `starts_from`, `is_finished_in`,
/// `execute_quietly` ([`AnyRun`]); a new engine adds its arm here and in [`AnyRunConfig::parse`].
impl std::ops::Deref for AnyRunConfig {
    type Target = dyn AnyRun;

    fn deref(&self) -> &Self::Target {
        match self {
            AnyRunConfig::Diag(c) => c,
            AnyRunConfig::Relu(c) => c,
            AnyRunConfig::Deep(c) => &**c,
        }
    }
}

#[cfg(test)]
mod tests {
    use samlab_core::run::ENGINE_KEYS;

    use super::*;

    #[test]
    fn core_names_the_engines_as_they_name_themselves() {
        let names: Vec<&str> = ENGINE_KEYS.iter().map(|&(_, name)| name).collect();
        assert_eq!(
            names,
            [
                DeepRunConfig::ENGINE,
                ReluRunConfig::ENGINE,
                DiagRunConfig::ENGINE
            ]
        );
    }
}
