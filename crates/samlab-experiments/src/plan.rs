//! The plan of a `reproduce`: every selected experiment's runs, each once, in waves (a run comes after the runs it
//! starts from), with their work; written to `plan.json` with the settings that `samlab report` rebuilds the
//! experiments from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use samlab_core::run_dir::write_json;
use samlab_runs::AnyRunConfig;
use serde::{Deserialize, Serialize};

use crate::deep_common::ScaleKind;
use crate::{Ctx, Experiment, PlannedRun};

/// The file a planned results directory holds.
pub const PLAN_FILE: &str = "plan.json";

/// What `reproduce` was asked for: everything the experiments' runs and claims depend on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Shorter runs.
    pub quick: bool,
    /// Scale of the deep-net experiments.
    pub scale: ScaleKind,
    /// CIFAR-10 files for the paper scale.
    pub data_dir: Option<PathBuf>,
    /// Backend of the deep-net runs.
    pub device: String,
    /// Precision of the deep-net runs' training passes.
    pub precision: samlab_deep::trainer::Precision,
    /// Experiment id prefixes (all experiments when empty).
    pub only: Vec<String>,
    /// Also the experiments (and parts of experiments) too large for the main job's budget (`--extended`).
    #[serde(default)]
    pub extended: bool,
}

/// The runs of a plan, each once, in training order.
pub struct Plan {
    /// The runs.
    pub runs: Vec<PlannedRun>,
    /// `wave[i]`: run `i` starts from runs of lower waves only (wave 0 starts from none).
    pub wave: Vec<usize>,
}

/// One run in plan.json.
#[derive(Serialize)]
struct Entry<'a> {
    /// The run directory, relative to the results directory.
    dir: &'a Path,
    engine: &'static str,
    wave: usize,
    /// Example gradients the run computes: updates x examples per update x gradient passes per update.
    example_gradients: f64,
    /// Its config.toml.
    config: String,
}

/// plan.json.
#[derive(Serialize)]
struct PlanFile<'a> {
    samlab_version: &'static str,
    settings: &'a Settings,
    experiments: Vec<&'static str>,
    runs: Vec<Entry<'a>>,
    /// The sum of the runs' example gradients.
    total_example_gradients: f64,
}

#[derive(Deserialize)]
struct SettingsOnly {
    settings: Settings,
}

impl Plan {
    /// The runs of `experiments`, each once. The same directory planned with two configs is a bug in a preset.
    pub fn new(ctx: &Ctx, experiments: &[Box<dyn Experiment>]) -> Result<Plan> {
        let mut runs: Vec<PlannedRun> = vec![];
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        for run in experiments.iter().flat_map(|e| e.runs(ctx)) {
            match index.get(&run.dir) {
                Some(&i) if runs[i] != run => bail!(
                    "{} is planned with two different configs (a bug in a preset)",
                    run.dir.display()
                ),
                Some(_) => {}
                None => {
                    index.insert(run.dir.clone(), runs.len());
                    runs.push(run);
                }
            }
        }
        let mut wave = vec![0; runs.len()];
        // A run's wave is one more than the wave of the run it starts from (presets chain at most a few phases).
        for _ in 0..runs.len() {
            let mut changed = false;
            for i in 0..runs.len() {
                let from = runs[i]
                    .config
                    .starts_from(&runs[i].dir)
                    .and_then(|d| index.get(&d));
                if let Some(&j) = from {
                    if wave[i] <= wave[j] {
                        wave[i] = wave[j] + 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Plan { runs, wave })
    }

    /// The runs of wave `w`, longest first so that no long run is left alone at the end: the deep-net runs (an
    /// example gradient of theirs costs far more than an analytic one's), then the analytic runs, each by work.
    pub fn wave(&self, w: usize) -> Vec<&PlannedRun> {
        let mut runs: Vec<&PlannedRun> = self
            .runs
            .iter()
            .zip(&self.wave)
            .filter(|(_, &k)| k == w)
            .map(|(r, _)| r)
            .collect();
        let key = |r: &PlannedRun| (matches!(r.config, AnyRunConfig::Deep(_)), r.config.work());
        runs.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
        });
        runs
    }

    /// The number of waves.
    pub fn waves(&self) -> usize {
        self.wave.iter().max().map_or(0, |w| w + 1)
    }

    /// Writes `<out>/plan.json`: the settings, the experiments and every run (directory, engine, wave, work,
    /// config.toml).
    pub fn write(
        &self,
        out: &Path,
        settings: &Settings,
        experiments: &[Box<dyn Experiment>],
    ) -> Result<PathBuf> {
        let runs: Vec<Entry> = self
            .runs
            .iter()
            .zip(&self.wave)
            .map(|(r, &wave)| Entry {
                dir: r.dir.strip_prefix(out).unwrap_or(&r.dir),
                engine: r.config.engine(),
                wave,
                example_gradients: r.config.work(),
                config: r.config.to_toml(),
            })
            .collect();
        let file = PlanFile {
            samlab_version: env!("CARGO_PKG_VERSION"),
            settings,
            experiments: experiments.iter().map(|e| e.id()).collect(),
            total_example_gradients: runs.iter().map(|r| r.example_gradients).sum(),
            runs,
        };
        let path = out.join(PLAN_FILE);
        write_json(&path, &file).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// The settings a results directory was planned with (its plan.json).
pub fn read_settings(out: &Path) -> Result<Settings> {
    let path = out.join(PLAN_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        crate::BadRequest(format!(
            "{} holds no reproduce results (cannot read {}: {e})",
            out.display(),
            path.display()
        ))
    })?;
    let file: SettingsOnly = serde_json::from_slice(&text)
        .map_err(|e| crate::BadRequest(format!("{} is damaged: {e}", path.display())))?;
    Ok(file.settings)
}
