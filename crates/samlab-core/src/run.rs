//! The run contract every engine keeps: a config ([`RunConfig`]) is checked before any byte is written, executed into
//! a run directory ([`crate::run_dir`]) and read back checked against itself; [`AnyRun`] is the same contract for a
//! config whose engine is known only at run time. Beside it, what the engines' runs share: their status, a loss curve
//! point, the notebook's log schedule and what watches a run while it executes ([`Observer`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ascent::SamObservation;
use crate::run_dir::{count, read_capped, resolve_init_from, same_dir, MetricsRow};

/// The config of one engine's run: what config.toml holds, fully resolved.
pub trait RunConfig: Clone + PartialEq + Serialize + DeserializeOwned {
    /// The engine's name, as config.toml's `engine` key writes it.
    const ENGINE: &'static str;
    /// A finished run, read back.
    type Outcome;

    /// Every check the engine makes before a run writes anything into the run directory `dir` (which a relative
    /// `init_from` is read from).
    fn check(&self, dir: &Path) -> anyhow::Result<()>;

    /// Runs this config into `out` (an occupied `out` is replaced only with `force`, and only by a run) with
    /// `observer` watching.
    fn execute(
        &self,
        out: &Path,
        force: bool,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<Self::Outcome>;

    /// The finished run of this config in `dir`, read back: an error if `dir` holds no run of this config, one that
    /// has not finished, or one whose recorded files are not the ones the run wrote.
    fn load(&self, dir: &Path) -> anyhow::Result<Self::Outcome>;

    /// What the run costs, in example gradients (updates x examples per update x gradient passes per update): a
    /// proxy that orders runs of any engine by cost (`reproduce` schedules the costliest first).
    fn work(&self) -> f64;

    /// Its `init_from` (the run directory whose final weights it starts from), for engines that have one.
    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        None
    }

    /// The run directory whose final weights this run, in the run directory `dir`, starts from, if any (it must
    /// finish first): `init_from` resolved as the engines read it ([`resolve_init_from`]).
    fn starts_from(&self, dir: &Path) -> Option<PathBuf> {
        let (_, from) = self.clone().split_init_from();
        from.map(|f| resolve_init_from(dir, &f))
    }

    /// Whether `dir` holds this run, finished (ok or diverged).
    fn is_finished_in(&self, dir: &Path) -> bool {
        self.load(dir).is_ok()
    }

    /// Trains this run into `out` without showing anything, replacing what is there.
    fn execute_quietly(&self, out: &Path) -> anyhow::Result<()> {
        self.execute(out, true, &mut Quiet).map(drop)
    }

    /// The config without its `init_from`, and the `init_from`.
    fn split_init_from(mut self) -> (Self, Option<PathBuf>) {
        let from = self.init_from_mut().and_then(Option::take);
        (self, from)
    }
}

/// The run contract for a config whose engine is told at run time (`samlab run --config`, sweeps, `reproduce`):
/// every [`RunConfig`] is one.
pub trait AnyRun {
    /// The engine's name, as config.toml's `engine` key writes it.
    fn engine(&self) -> &'static str;
    /// [`RunConfig::check`].
    fn check(&self, dir: &Path) -> anyhow::Result<()>;
    /// The config.toml text.
    fn to_toml(&self) -> String;
    /// [`RunConfig::starts_from`].
    fn starts_from(&self, dir: &Path) -> Option<PathBuf>;
    /// [`RunConfig::is_finished_in`].
    fn is_finished_in(&self, dir: &Path) -> bool;
    /// [`RunConfig::execute_quietly`].
    fn execute_quietly(&self, out: &Path) -> anyhow::Result<()>;
    /// [`RunConfig::work`].
    fn work(&self) -> f64;
}

impl<C: RunConfig> AnyRun for C {
    fn engine(&self) -> &'static str {
        C::ENGINE
    }

    fn check(&self, dir: &Path) -> anyhow::Result<()> {
        RunConfig::check(self, dir)
    }

    fn to_toml(&self) -> String {
        toml::to_string(self).expect("run configs serialize")
    }

    fn starts_from(&self, dir: &Path) -> Option<PathBuf> {
        RunConfig::starts_from(self, dir)
    }

    fn is_finished_in(&self, dir: &Path) -> bool {
        RunConfig::is_finished_in(self, dir)
    }

    fn execute_quietly(&self, out: &Path) -> anyhow::Result<()> {
        RunConfig::execute_quietly(self, out)
    }

    fn work(&self) -> f64 {
        RunConfig::work(self)
    }
}

/// The engines a config.toml can be for, each with a top-level key only its config has (how configs written before
/// the `engine` key tell their engine).
pub const ENGINE_KEYS: [(&str, &str); 3] =
    [("model", "deep"), ("width", "relu"), ("alpha", "diag")];

/// The engine a config.toml (parsed as a table) is for: its `engine` key, or for a config written before that key,
/// the key only its engine's config has; why it names none otherwise.
pub fn engine_of(table: &toml::Table) -> Result<&'static str, String> {
    match table.get("engine") {
        Some(toml::Value::String(e)) => ENGINE_KEYS
            .iter()
            .find(|&&(_, name)| name == e)
            .map(|&(_, name)| name)
            .ok_or_else(|| format!("`engine` must be \"diag\", \"relu\" or \"deep\", got {e:?}")),
        Some(other) => Err(format!(
            "`engine` must be \"diag\", \"relu\" or \"deep\", got {other}"
        )),
        None => ENGINE_KEYS
            .iter()
            .find(|(key, _)| table.contains_key(*key))
            .map(|&(_, engine)| engine)
            .ok_or_else(|| {
                "it has no `engine` key and none of the top-level keys `model` (deep net), `width` (ReLU net), \
                 `alpha` (diagonal net)"
                    .into()
            }),
    }
}

/// What watches a run while it executes: progress bars, a log, a request to stop.
pub trait Observer {
    /// The run starts (or resumes) with `done` of `total` units of work done (`unit`: updates, or a deep run's
    /// images).
    fn started(&mut self, _done: u64, _total: u64, _unit: &'static str) {}
    /// `done` units are done; return false to stop the run (an analytic run stops at once and writes nothing,
    /// [`Stopped`]; a deep run at the end of the epoch, its status `interrupted`, resumable).
    fn advanced(&mut self, _done: u64) -> bool {
        true
    }
    /// A line worth showing (a deep run's epoch, after its checkpoint); return false to stop the run there (a deep
    /// run stays resumable, its status `interrupted`).
    fn line(&mut self, _text: &str) -> bool {
        true
    }
}

/// A [`Observer`] that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// Tells an [`Observer`] about an analytic run's updates, which take microseconds: the start, about 200 counts on
/// the way, and the count done at the end, each count once; and passes on its request to stop.
pub struct UpdateCounter<'a> {
    observer: &'a mut dyn Observer,
    every: usize,
    last: u64,
    go_on: bool,
}

impl<'a> UpdateCounter<'a> {
    /// The run of `total` updates starts.
    pub fn start(observer: &'a mut dyn Observer, total: usize) -> Self {
        observer.started(0, total as u64, "updates");
        UpdateCounter {
            observer,
            every: (total / 200).max(1),
            last: 0,
            go_on: true,
        }
    }

    /// `done` updates are done (every update's count may be given: one in `total / 200` is passed on); whether the
    /// run goes on (false once the observer asked it to stop).
    pub fn update(&mut self, done: usize) -> bool {
        if done.is_multiple_of(self.every) {
            self.tell(done);
        }
        self.go_on
    }

    /// The run ended after `done` updates (fewer than planned if it diverged or stopped early).
    pub fn finish(mut self, done: usize) {
        self.tell(done);
    }

    fn tell(&mut self, done: usize) {
        if done as u64 != self.last && self.go_on {
            self.last = done as u64;
            self.go_on = self.observer.advanced(self.last);
        }
    }
}

/// A run's status, as summary.json writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running, or killed (a deep run: resume it).
    Running,
    /// Stopped at the end of an epoch on its [`Observer`]'s request (its output was closed, as by `| head`); resume
    /// it.
    Interrupted,
    /// Finished.
    Ok,
    /// A parameter or loss became NaN or infinite; the run stopped there (a deep run keeps its last good
    /// checkpoint).
    Diverged,
}

impl RunStatus {
    /// Whether the run has finished (ok or diverged); a running, killed or interrupted run resumes.
    pub fn finished(self) -> bool {
        matches!(self, RunStatus::Ok | RunStatus::Diverged)
    }

    /// Its name in summary.json.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Ok => "ok",
            RunStatus::Diverged => "diverged",
        }
    }
}

/// What every engine's summary.json begins with (each engine's summary flattens it in first): the samlab that wrote
/// it, the engine, and the run's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryHeader {
    /// samlab's version.
    pub samlab_version: String,
    /// `diag`, `relu` or `deep`.
    pub engine: String,
    /// `ok` or `diverged` once finished; `running` while a deep run trains, or after it was killed; `interrupted`
    /// when it was stopped at the end of an epoch (its output closed).
    pub status: RunStatus,
}

impl SummaryHeader {
    /// The header of a run of `engine` written by this samlab.
    pub fn new(engine: &str, status: RunStatus) -> SummaryHeader {
        SummaryHeader {
            samlab_version: env!("CARGO_PKG_VERSION").into(),
            engine: engine.into(),
            status,
        }
    }

    /// The header of `<run>/summary.json`, if the run has a readable one.
    pub fn read(run: &Path) -> Option<SummaryHeader> {
        serde_json::from_slice(&read_capped(&run.join("summary.json"), 1 << 26).ok()?).ok()
    }

    /// Whether the run has finished (ok or diverged).
    pub fn finished(&self) -> bool {
        self.status.finished()
    }
}

/// Iterations at which an analytic run logs its losses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSchedule {
    /// The notebook's: every one of the first 500, then 201 log-spaced ones ([`log_iterations`]).
    #[default]
    Notebook,
    /// Only the start and the end (for sweeps and timing).
    Ends,
}

impl LogSchedule {
    /// The logged iterations of a run of `iters` updates.
    pub fn iterations(self, iters: usize) -> Vec<usize> {
        match self {
            LogSchedule::Notebook => log_iterations(iters),
            LogSchedule::Ends => vec![0, iters],
        }
    }
}

/// Iterations at which losses are logged: every one of the first 500, then 201 log-spaced ones up to `iters`
/// (the notebook's schedule, SPEC §2.3), and `iters` itself.
pub fn log_iterations(iters: usize) -> Vec<usize> {
    let mut its: Vec<usize> = (0..=iters.min(500)).collect();
    let top = (iters.max(1) as f64).log10();
    its.extend((0..=200).map(|k| 10f64.powf(top * k as f64 / 200.0).floor() as usize));
    its.push(iters);
    its.retain(|&i| i <= iters);
    its.sort_unstable();
    its.dedup();
    its
}

/// One point of a training curve: losses after `iteration` updates, and what the SAM step taken there did (the
/// analytic engines observe the step that starts from the logged weights: absent for ERM, outside SAM's window and
/// at the last point).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Updates done.
    pub iteration: usize,
    /// Training loss.
    pub train_loss: f64,
    /// Test loss.
    pub test_loss: f64,
    /// What the SAM step from these weights did: weight and perturbation norms, clean/SAM gradient cosine,
    /// realised sharpness (no BatchNorm here).
    #[serde(default)]
    pub sam: SamObservation,
}

impl CurvePoint {
    /// The SAM columns an analytic engine's metrics.csv holds after its own (the [`SamObservation::COLUMNS`]
    /// without BatchNorm's).
    pub const SAM_COLUMNS: usize = 4;

    /// The point of `iteration` with its losses, nothing observed yet.
    pub fn new(iteration: usize, train_loss: f64, test_loss: f64) -> Self {
        CurvePoint {
            iteration,
            train_loss,
            test_loss,
            sam: SamObservation::ABSENT,
        }
    }
}

impl MetricsRow for CurvePoint {
    const COLUMNS: &'static [&'static str] = &[
        "iteration",
        "train_loss",
        "test_loss",
        "sam_weight_norm",
        "sam_delta_norm",
        "sam_grad_cos",
        "sam_sharpness",
    ];
    /// Runs written before the SAM columns.
    const REQUIRED: usize = 3;

    fn values(&self) -> Vec<f64> {
        let mut v = vec![self.iteration as f64, self.train_loss, self.test_loss];
        v.extend(&self.sam.values()[..Self::SAM_COLUMNS]);
        v
    }

    fn from_values(v: &[f64]) -> Result<Self, &'static str> {
        Ok(CurvePoint {
            iteration: count(v[0], "iteration")?,
            train_loss: v[1],
            test_loss: v[2],
            sam: SamObservation::from_values(&v[3..]),
        })
    }
}

/// An analytic run stopped on its [`Observer`]'s request ([`Observer::advanced`] returned false): nothing was
/// written, and a run that `force` was to replace is kept.
#[derive(Debug, thiserror::Error)]
#[error("the run stopped at update {done} of {total} on request; nothing was written")]
pub struct Stopped {
    /// The updates done.
    pub done: usize,
    /// The updates planned.
    pub total: usize,
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

/// Whether `a` and `b` are one run config for the run directory `dir`: equal but for how `init_from` is spelt, each
/// naming the same parent run (so the absolute `init_from` of a results tree written before samlab recorded
/// relative ones, and the relative one planned now, are one config while the tree stays where it was).
pub fn same_config<C: RunConfig>(dir: &Path, a: &C, b: &C) -> bool {
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

/// Reads `dir`'s config.toml and summary.json, checking that the run was made from `expected` (and has a summary:
/// whether it finished is the summary's to say).
pub fn read_summary<C, S>(dir: &Path, expected: &C) -> Result<S, NotFinished>
where
    C: RunConfig,
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
    use super::*;

    #[test]
    fn log_schedule_is_dense_then_log_spaced() {
        let its = log_iterations(10001);
        assert_eq!(&its[..3], &[0, 1, 2]);
        assert!(its.contains(&500) && its.contains(&10001));
        assert!(its.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(log_iterations(3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_status_is_named_as_summary_json_writes_it() {
        for s in [
            RunStatus::Running,
            RunStatus::Interrupted,
            RunStatus::Ok,
            RunStatus::Diverged,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
