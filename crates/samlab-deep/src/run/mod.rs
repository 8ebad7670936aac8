//! Whole training runs into run directories, with checkpoints, exact resume and fine-tuning.
//!
//! ```text
//! <out>/config.toml           the fully resolved DeepRunConfig (`samlab train --config` re-runs it)
//! <out>/metrics.csv           one row per epoch (an [`EpochRow`]; `run_dir::read_rows` reads it back)
//! <out>/summary.json          status (running | ok | diverged), steps, final and best-by-validation numbers
//! <out>/label_noise.csv       the examples whose labels were changed: split, index, source_index, clean, noisy
//! <out>/checkpoint/last.ckpt  end of the last finished epoch: weights, momentum, BatchNorm statistics, progress
//! <out>/checkpoint/best.ckpt  the epoch with the lowest validation error so far (weights and statistics)
//! ```
//!
//! metrics.csv has two kinds of training numbers. `train_loss`, `train_error` and `train_error_noisy` are running
//! averages over the epoch's training passes (at the point of each descent gradient, i.e. the perturbed weights in
//! SAM steps, with augmentation and BatchNorm in training mode). `train_eval_loss`, `train_eval_error` and
//! `noisy_eval_error` are measured like the authors' code does at each evaluation: in evaluation mode at the epoch's
//! final weights, without augmentation, on a fixed seeded subset of `eval_train_examples` training examples with their
//! training labels (noisy ones included), and on up to as many of the examples whose label was corrupted, with
//! respect to those noisy labels (SPEC 4.6; NaN without label noise or with `eval_train_examples = 0`).
//!
//! Every file is replaced atomically (written beside, then renamed). A run killed at any point resumes from
//! `last.ckpt` with `resume`, and since every random draw is keyed by the run's counters ([`crate::rng`]) it ends
//! with exactly the numbers of an uninterrupted run. Nothing is written before the whole configuration, the data
//! and any checkpoint to start from have been checked.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use samlab_core::ascent::{ObservationMean, SamObservation};
use samlab_core::run::{
    read_summary, same_config, NotFinished, Observer, Quiet, RunConfig, RunStatus, SummaryHeader,
};
use samlab_core::run_dir::nan_as_null;
use samlab_core::run_dir::{
    self, check_artefacts, count, read_rows, DeepEngine, MetricsRow, RunDirError, RunDirWriter,
};
use samlab_core::sam::{AscentSource, Grouping, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_core::{ConfigError, DataError};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{
    apply_label_noise, assemble, split_validation, Augment, DatasetKind, ImageSet, LabelNoise,
};
use crate::hessian::{curvature, Curvature, HessianConfig, Split};
use crate::models::{Arch, ModelSpec, Network};
use crate::nn::{init_params, NormKind};
use crate::rng::{Purpose, Stream};
use crate::trainer::{evaluate, Batch, OptimConfig, Precision, TrainState, Trainer, WeightDecay};

mod config;
mod error;
mod prepare;
mod records;

pub use config::*;
pub use error::*;
pub use prepare::*;
pub use records::*;

/// Runs `config` into the fresh run directory `out` (an occupied `out` is replaced only with `force`, and only
/// once the new run has finished; until then the old one waits beside it as `.<name>.old-<pid>`). The run
/// directory is written in place by a [`RunDirWriter`], which holds its lock from the occupancy check to the end.
pub fn train(
    config: &DeepRunConfig,
    out: &Path,
    force: bool,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let p = plan(config)?;
    let init = match &config.init_from {
        Some(from) => Some(load_init(out, from, &p.net)?),
        None => None,
    };
    let writer = RunDirWriter::in_place(out, force).map_err(|e| match e {
        RunDirError::Exists(_) => RunError::Usage(format!(
            "{} already exists and is not empty (pass --force to replace it, or --resume to continue it)",
            out.display()
        )),
        e => e.into(),
    })?;
    start_fresh(config, &p, init.as_ref(), writer, observer)
}

/// Writes config.toml and label_noise.csv into the locked `out` and trains from the initial (or `init`'s) weights.
fn start_fresh(
    config: &DeepRunConfig,
    p: &Plan,
    init: Option<&Checkpoint>,
    writer: RunDirWriter,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let text = toml::to_string(config).map_err(|e| RunError::Io {
        path: writer.path().join("config.toml"),
        source: io::Error::other(e),
    })?;
    let prepared = (|| {
        let out = writer.path();
        let ckdir = checkpoint_dir(out);
        fs::create_dir_all(&ckdir).map_err(io_err(&ckdir))?;
        let path = out.join("config.toml");
        run_dir::write_atomic(&path, |p| fs::write(p, &text)).map_err(io_err(&path))?;
        write_noise_records(out, &p.data.noise_records)
    })();
    if let Err(e) = prepared {
        abandon(writer, &e);
        return Err(e);
    }
    let state = match init {
        Some(ckpt) => {
            let mut s = ckpt.to_state(&p.device);
            s.velocity = s
                .params
                .iter()
                .map(burn::tensor::Tensor::zeros_like)
                .collect();
            s
        }
        None => TrainState::new(
            &p.net,
            init_params(p.net.params(), config.train.seed, &p.device),
            &p.device,
        ),
    };
    let progress = Progress {
        config_sha256: Some(config_sha256(&text)),
        ..Progress::new()
    };
    run_locked(config, p, writer, state, progress, observer)
}

/// The SHA-256 (hex) of a config.toml's text, as [`Progress::config_sha256`] records it.
pub fn config_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An error unless the progress record `progress` of the checkpoint `path` was written by a run of the config.toml
/// `text` (of the run directory `dir`); a record without the hash (an older run) passes.
pub fn check_config_sha256(
    progress: &serde_json::Value,
    text: &str,
    dir: &Path,
    path: &Path,
) -> Result<(), RunError> {
    let Some(recorded) = progress.get("config_sha256").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let now = config_sha256(text);
    if recorded == now {
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "{} was written by a run of another config.toml (SHA-256 {recorded}) than {}'s (SHA-256 {now}): the \
         config was edited since the run started, or the checkpoint comes from another run; put back the \
         config (or the checkpoint) the run started with, or start a new run (--init-from keeps the weights)",
        path.display(),
        dir.display()
    )))
}

/// Gives up the run of `writer` after `error`: a run that replaced another (`force`) is deleted and the other put
/// back ([`RunDirWriter::abandon`]). Should that fail too, the earlier run stays set aside beside `<out>` (only a
/// successful commit deletes it), and a warning says where.
fn abandon(writer: RunDirWriter, error: &RunError) {
    if let Err(e) = writer.abandon() {
        // Written without panicking on a closed stderr.
        let _ = writeln!(
            io::stderr(),
            "warning: after {error}, the run that --force replaced could not be put back ({e}); it waits beside \
             the run directory as a hidden .<name>.old-<pid> directory"
        );
    }
}

/// [`run_loop`], then (once the run has finished: ok or diverged) commits it, deleting any earlier run that `force`
/// set aside; a failing run is abandoned, putting back the run it was to replace.
fn run_locked(
    config: &DeepRunConfig,
    p: &Plan,
    writer: RunDirWriter,
    state: TrainState,
    progress: Progress,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let outcome =
        match device_guard(|| run_loop(config, p, writer.path(), state, progress, observer)) {
            Ok(outcome) => outcome,
            Err(e) => {
                abandon(writer, &e);
                return Err(e);
            }
        };
    // Only a finished run is committed: one stopped early (killed, interrupted) is continued by `--resume`, and
    // the run it replaces waits beside it until then.
    if outcome.summary.header.status.finished() {
        writer.commit()?;
    }
    Ok(outcome)
}

/// Continues the run in `out` from its last checkpoint, to the numbers an uninterrupted run would have reached.
/// A run killed before its first checkpoint starts again from scratch; a finished run is left as it is.
pub fn resume(out: &Path, observer: &mut dyn Observer) -> Result<RunOutcome, RunError> {
    resume_on(out, None, observer)
}

/// [`resume`] on the backend `device` instead of the one in config.toml (checkpoints do not depend on the device);
/// summary.json then records the device the run finished on.
pub fn resume_on(
    out: &Path,
    device: Option<&str>,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let config_path = out.join("config.toml");
    if !config_path.exists() {
        return Err(RunError::Usage(format!(
            "nothing to resume in {}: it holds no config.toml",
            out.display()
        )));
    }
    let writer = RunDirWriter::resume(out)?;
    let text = run_dir::read_text(&config_path).map_err(|e| {
        RunError::Usage(format!(
            "nothing to resume in {}: cannot read config.toml ({e})",
            out.display()
        ))
    })?;
    let mut config: DeepRunConfig = toml::from_str(&text).map_err(|e| DataError::Read {
        path: config_path.clone(),
        reason: format!("not a deep-net run config: {e}"),
    })?;
    if let Some(header) = SummaryHeader::read(out).filter(SummaryHeader::finished) {
        return Err(RunError::Usage(format!(
            "{} already finished (status {}); nothing to resume (train into another --out, or pass --force to train it again)",
            out.display(),
            header.status.name()
        )));
    }
    if let Some(d) = device {
        config.train.device = d.to_string();
    }
    let p = plan(&config)?;
    let path = checkpoint_dir(out).join("last.ckpt");
    if !path.exists() {
        // Killed before its first checkpoint: nothing was trained that could be kept.
        let init = match &config.init_from {
            Some(from) => Some(load_init(out, from, &p.net)?),
            None => None,
        };
        return start_fresh(&config, &p, init.as_ref(), writer, observer);
    }
    let ckpt = load_checkpoint(&path, &p.net)?;
    check_config_sha256(&ckpt.progress, &text, out, &path)?;
    let mut progress: Progress =
        serde_json::from_value(ckpt.progress.clone()).map_err(|e| DataError::Read {
            path: path.clone(),
            reason: format!("bad progress record: {e}"),
        })?;
    // Checkpoints are written at the end of epochs, so the progress record has exactly one consistent shape.
    let expected_steps = progress
        .epochs_done
        .saturating_mul(p.steps_per_epoch)
        .min(p.total_steps);
    if progress.steps_done != expected_steps
        || progress.rows.len() != progress.epochs_done
        || progress
            .rows
            .last()
            .is_some_and(|r| r.step != progress.steps_done)
    {
        return Err(DataError::Read {
            path,
            reason: format!(
                "its progress record ({} steps, {} epochs, {} metrics rows) does not fit the run's schedule ({} steps per epoch, {} in all)",
                progress.steps_done,
                progress.epochs_done,
                progress.rows.len(),
                p.steps_per_epoch,
                p.total_steps
            ),
        }
        .into());
    }
    // Every update takes at least one gradient and at most one per example and ascent step, plus the descent.
    let most = (progress.steps_done as u64)
        .saturating_mul(config.train.batch_size as u64)
        .saturating_mul(config.sam.ascent_steps as u64 + 1);
    if let Some(n) = progress
        .gradient_evals
        .filter(|&n| n < progress.steps_done as u64 || n > most)
    {
        return Err(DataError::Read {
            path,
            reason: format!(
                "its gradient count ({n}) does not fit its {} steps",
                progress.steps_done
            ),
        }
        .into());
    }
    progress.resumes += 1;
    let state = ckpt.to_state(&p.device);
    run_locked(&config, &p, writer, state, progress, observer)
}

fn write_noise_records(out: &Path, records: &[[usize; 5]]) -> Result<(), RunError> {
    let mut text = String::from("split,index,source_index,clean_label,noisy_label\n");
    for r in records {
        let split = if r[0] == 0 { "train" } else { "val" };
        let source = if r[2] == usize::MAX {
            String::new()
        } else {
            r[2].to_string()
        };
        text.push_str(&format!("{split},{},{source},{},{}\n", r[1], r[3], r[4]));
    }
    let path = out.join("label_noise.csv");
    run_dir::write_atomic(&path, |p| fs::write(p, text)).map_err(io_err(&path))
}

fn write_metrics(out: &Path, rows: &[EpochRow]) -> Result<(), RunError> {
    let path = out.join("metrics.csv");
    run_dir::write_atomic(&path, |p| fs::write(p, run_dir::rows_text(rows))).map_err(io_err(&path))
}

fn summarize(config: &DeepRunConfig, p: &Plan, progress: &Progress, status: RunStatus) -> Summary {
    let last = progress.rows.last().filter(|_| status == RunStatus::Ok);
    let images: f64 = progress.steps_done as f64 * config.train.batch_size as f64;
    Summary {
        header: SummaryHeader::new(DeepRunConfig::ENGINE, status),
        steps: progress.steps_done,
        total_steps: p.total_steps,
        epochs: progress.epochs_done,
        final_train_loss: last.map(|r| r.train_loss),
        final_train_error: last.map(|r| r.train_error),
        final_train_eval_loss: last.map(|r| r.train_eval_loss),
        final_train_eval_error: last.map(|r| r.train_eval_error),
        final_noisy_eval_error: last.map(|r| r.noisy_eval_error),
        best_val_error: progress.best.as_ref().map(|b| b.val_error),
        best_epoch: progress.best.as_ref().map(|b| b.epoch),
        test_error: last.map(|r| r.test_error),
        test_loss: last.map(|r| r.test_loss),
        test_error_at_best_val: progress.best.as_ref().map(|b| b.test_error),
        test_loss_at_best_val: progress.best.as_ref().map(|b| b.test_loss),
        num_params: p.net.num_params(),
        seed: config.train.seed,
        train_seconds: progress.train_seconds,
        images_per_s: if progress.train_seconds > 0.0 {
            images / progress.train_seconds
        } else {
            0.0
        },
        gradient_evals: progress.gradient_evals,
        device: config.train.device.clone(),
        precision: config.train.precision,
        resumes: progress.resumes,
        artefacts_sha256: None,
    }
}

fn write_summary(out: &Path, summary: &Summary) -> Result<(), RunError> {
    let path = out.join("summary.json");
    let text =
        serde_json::to_string_pretty(summary).map_err(|e| io_err(&path)(io::Error::other(e)))?;
    run_dir::write_atomic(&path, |p| fs::write(p, text + "\n")).map_err(io_err(&path))
}

fn finish(
    config: &DeepRunConfig,
    p: &Plan,
    out: &Path,
    progress: Progress,
    status: RunStatus,
) -> Result<RunOutcome, RunError> {
    let mut summary = summarize(config, p, &progress, status);
    write_metrics(out, &progress.rows)?;
    if status.finished() {
        let names = ["metrics.csv"];
        summary.artefacts_sha256 =
            Some(run_dir::artefact_hashes(out, &names).map_err(io_err(&out.join(names[0])))?);
    }
    write_summary(out, &summary)?;
    Ok(RunOutcome {
        dir: out.to_path_buf(),
        summary,
        rows: progress.rows,
    })
}

fn run_loop(
    config: &DeepRunConfig,
    p: &Plan,
    out: &Path,
    mut state: TrainState,
    mut progress: Progress,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, RunError> {
    let t = &config.train;
    let sam = config.sam.check(t.batch_size)?;
    let trainer = Trainer {
        net: &p.net,
        sam: sam.clone(),
        optim: t.optim,
        seed: t.seed,
        device: p.device.clone(),
        precision: t.precision,
    };
    if progress.steps_done >= p.total_steps {
        return finish(config, p, out, progress, RunStatus::Ok);
    }
    write_summary(out, &summarize(config, p, &progress, RunStatus::Running))?;
    let images = |steps: usize| (steps * t.batch_size) as u64;
    observer.started(images(progress.steps_done), images(p.total_steps), "images");
    let uses_previous = config.sam.ascent_source == AscentSource::PreviousBatch;
    let mut previous: Option<Batch> = (uses_previous && progress.steps_done > 0)
        .then(|| batch_at(config, p, progress.steps_done - 1));
    let bs = t.batch_size;
    let mut step = progress.steps_done;
    // The observer's request to stop, honoured at the end of the epoch (after its checkpoint).
    let mut stop = false;
    while step < p.total_steps {
        let epoch = step / p.steps_per_epoch;
        let order =
            Stream::new(t.seed, Purpose::Shuffle, epoch as u64, 0).permutation(p.data.train.len());
        let first = step % p.steps_per_epoch;
        let last = p
            .steps_per_epoch
            .min(p.total_steps - epoch * p.steps_per_epoch);
        let started = Instant::now();
        let (mut loss_sum, mut wrong, mut seen, mut noisy_wrong, mut noisy_seen) =
            (0.0, 0usize, 0usize, 0usize, 0usize);
        let mut gradient_evals = 0;
        let mut observed = ObservationMean::default();
        let (mut lr, mut rho) = (0.0, 0.0);
        for b in first..last {
            let batch = batch_from_order(config, p, &order, epoch, b, bs);
            (lr, rho) = sam.lr_rho_at(&t.lr, step, p.total_steps);
            let prev = previous.as_ref().unwrap_or(&batch);
            let observe = b.is_multiple_of(OBSERVE_EVERY);
            let outcome =
                trainer.observed_step(&mut state, &batch, prev, lr, rho, step as u64, observe);
            gradient_evals += outcome.gradient_evals;
            if !outcome.finite {
                progress.add_updates(started.elapsed().as_secs_f64(), gradient_evals);
                return finish(config, p, out, progress, RunStatus::Diverged);
            }
            loss_sum += outcome.loss_sum;
            if let Some(o) = &outcome.sam {
                observed.add(o);
            }
            seen += bs;
            for (k, ok) in outcome.correct.iter().enumerate() {
                let noisy = p.data.train_noisy[order[b * bs + k]];
                wrong += usize::from(!ok);
                noisy_seen += usize::from(noisy);
                noisy_wrong += usize::from(noisy && !ok);
            }
            if uses_previous {
                previous = Some(batch);
            }
            step += 1;
            stop |= !observer.advanced(images(step));
        }
        let seconds = started.elapsed().as_secs_f64();
        progress.add_updates(seconds, gradient_evals);
        let eval = |set: &ImageSet| {
            evaluate(
                &p.net,
                &state.params,
                &state.bn,
                set,
                &set.labels,
                t.eval_batch_size,
                &p.device,
            )
        };
        let (val_loss, val_error) = if p.data.val.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            eval(&p.data.val)
        };
        let (test_loss, test_error) = eval(&p.data.test);
        let (train_eval_loss, train_eval_error) = eval(&p.eval_subsets[0]);
        let noisy_eval_error = eval(&p.eval_subsets[1]).1;
        let row = EpochRow {
            epoch: epoch + 1,
            step,
            train_loss: loss_sum / seen as f64,
            train_error: wrong as f64 / seen as f64,
            train_error_noisy: if noisy_seen > 0 {
                noisy_wrong as f64 / noisy_seen as f64
            } else {
                f64::NAN
            },
            val_loss,
            val_error,
            test_loss,
            test_error,
            lr,
            rho,
            seconds,
            images_per_s: seen as f64 / seconds.max(1e-9),
            train_eval_loss,
            train_eval_error,
            noisy_eval_error,
            hessian_top: f64::NAN,
            hessian_trace: f64::NAN,
            sam: observed.mean(),
        };
        let mut row = row;
        if t.curvature_every > 0
            && ((epoch + 1).is_multiple_of(t.curvature_every) || step == p.total_steps)
            && row.train_loss.is_finite()
        {
            (row.hessian_top, row.hessian_trace) = log_curvature(config, p, &state);
        }
        // A finite loss is not enough for a good checkpoint: every tensor must be finite (a BatchNorm running
        // variance can overflow while the loss, in training mode, stays finite), else the run diverged here and
        // the last good checkpoint stays the previous epoch's.
        let last = Checkpoint::capture(&p.net, &state, true, serde_json::Value::Null);
        if !(test_loss.is_finite() && row.train_loss.is_finite())
            || last.impossible_value().is_some()
        {
            progress.steps_done = step;
            progress.rows.push(row);
            return finish(config, p, out, progress, RunStatus::Diverged);
        }
        progress.steps_done = step;
        progress.epochs_done = epoch + 1;
        let improved = !val_error.is_nan()
            && progress
                .best
                .as_ref()
                .is_none_or(|b| val_error < b.val_error);
        if improved {
            progress.best = Some(Best {
                epoch: epoch + 1,
                val_error,
                test_error,
                test_loss,
            });
        }
        progress.rows.push(row.clone());
        let ckdir = checkpoint_dir(out);
        let value = serde_json::to_value(&progress).expect("progress serializes");
        if improved {
            Checkpoint::capture(&p.net, &state, false, value.clone())
                .save(&ckdir.join("best.ckpt"))
                .map_err(io_err(&ckdir))?;
        }
        Checkpoint {
            progress: value,
            ..last
        }
        .save(&ckdir.join("last.ckpt"))
        .map_err(io_err(&ckdir))?;
        write_metrics(out, &progress.rows)?;
        let line = row.line(p.epochs);
        if !observer.line(&line) || stop {
            let summary = summarize(config, p, &progress, RunStatus::Interrupted);
            write_summary(out, &summary)?;
            return Ok(RunOutcome {
                dir: out.to_path_buf(),
                summary,
                rows: progress.rows,
            });
        }
    }
    finish(config, p, out, progress, RunStatus::Ok)
}

impl RunConfig for DeepRunConfig {
    const ENGINE: &'static str = "deep";
    type Outcome = RunOutcome;

    /// The counts, optimizer and SAM options (without reading the data).
    fn check(&self, _dir: &Path) -> anyhow::Result<()> {
        Ok(check_config(self)?)
    }

    fn init_from_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        Some(&mut self.init_from)
    }

    /// Images seen times passes, with small m-SAM groups counted as less efficient (m = 16 costs 1.7x m = 128 per
    /// pass); the full training split (10,000 images) when unlimited.
    fn work(&self) -> f64 {
        let images = self.data.train_limit.unwrap_or(10_000) as f64;
        let groups = match self.sam.grouping {
            Grouping::Size(m) if self.sam.rho > 0.0 => (self.train.batch_size / m.max(1)) as f64,
            _ => 1.0,
        };
        self.train.epochs as f64 * images * self.sam.passes() * groups.powf(0.3)
    }

    /// [`train`]; `observer` counts images and sees each epoch's line.
    fn execute(
        &self,
        out: &Path,
        force: bool,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<RunOutcome> {
        Ok(train(self, out, force, observer)?)
    }

    /// The finished run (an error for one still running or killed: resume it with `samlab train --resume`; or if
    /// its metrics.csv is not the file the run wrote).
    fn load(&self, dir: &Path) -> anyhow::Result<RunOutcome> {
        let summary: Summary = read_summary(dir, self)?;
        if !summary.header.status.finished() {
            return Err(NotFinished {
                dir: dir.display().to_string(),
                why: format!(
                    "the run has not finished (status \"{}\"): resume it",
                    summary.header.status.name()
                ),
            }
            .into());
        }
        check_artefacts(dir, summary.artefacts_sha256.as_ref(), &["metrics.csv"])?;
        Ok(RunOutcome {
            dir: dir.to_path_buf(),
            rows: read_rows(&dir.join("metrics.csv"))?,
            summary,
        })
    }

    /// A run already started in `out` from this config is resumed; anything else in `out` is replaced.
    fn execute_quietly(&self, out: &Path) -> anyhow::Result<()> {
        let started = fs::read_to_string(out.join("config.toml"))
            .ok()
            .and_then(|t| toml::from_str::<DeepRunConfig>(&t).ok())
            .is_some_and(|on_disk| same_config(out, &on_disk, self));
        if started && out.join("summary.json").exists() {
            resume(out, &mut Quiet)?;
        } else {
            train(self, out, true, &mut Quiet)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_backend_is_a_device_error_not_a_crash() {
        let err = device_guard::<()>(|| panic!("Device lost: {}", 7)).unwrap_err();
        assert!(
            matches!(&err, RunError::Device(m) if m == "Device lost: 7"),
            "{err}"
        );
        assert!(!err.is_bad_input());
        assert!(err.to_string().contains("--resume"), "{err}");
        let err = device_guard::<()>(|| std::panic::panic_any(3u8)).unwrap_err();
        assert!(
            err.to_string().contains("a panic without a message"),
            "{err}"
        );
        assert_eq!(device_guard(|| Ok(5)).unwrap(), 5);
    }
}
