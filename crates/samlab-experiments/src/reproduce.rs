//! `samlab reproduce` and `samlab report`: plan every experiment's runs, train them (here, or as SLURM job arrays:
//! [`submit`]), then judge the claims and write the report from the finished run directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use samlab_deep::bench::{estimate_seconds, StepTimes};
use samlab_report::{Report, Section, Verdict};
use samlab_runs::AnyRunConfig;
use samlab_sweep::manifest::Manifest;
use samlab_sweep::slurm::{self, SlurmOptions, Submission};

use crate::deep_common::{DeepScale, ScaleKind};
use crate::plan::{Plan, Settings};
use crate::{BadRequest, Ctx, Experiment, Extended};

/// What a report holds, for the command's last line.
pub struct Outcome {
    /// Claims that pass.
    pub pass: usize,
    /// Claims that fail.
    pub fail: usize,
    /// Claims not run.
    pub not_run: usize,
    /// report.html.
    pub report: PathBuf,
    /// Experiments that failed (their claims are not run), with the reason.
    pub failed: Vec<(&'static str, String)>,
}

/// The deep-net scale of `settings`, on its device and precision.
pub fn deep_scale(s: &Settings) -> Result<DeepScale> {
    let mut deep = match (s.scale, &s.data_dir) {
        (ScaleKind::Laptop, None) => DeepScale::laptop(s.quick),
        (ScaleKind::Paper, Some(dir)) => DeepScale::paper(dir.clone(), s.quick),
        (ScaleKind::Laptop, Some(_)) => {
            bail!(BadRequest("--data-dir is only for --scale paper".into()))
        }
        (ScaleKind::Paper, None) => bail!(BadRequest(
            "--scale paper needs --data-dir (the CIFAR-10 binary files)".into()
        )),
    };
    s.precision.check(&samlab_deep::device(&s.device)?)?;
    for base in [&mut deep.base, &mut deep.noise_base] {
        base.train.device = s.device.clone();
        base.train.precision = s.precision;
    }
    Ok(deep)
}

/// The experiments `settings.only` selects, in report order; without `--extended`, those that run only with it
/// are left out (see [`left_out`]).
pub fn selected(s: &Settings) -> Result<Vec<Box<dyn Experiment>>> {
    let (run, left_out): (Vec<_>, Vec<_>) = matching(s)?
        .into_iter()
        .partition(|e| s.extended || e.extended() != Extended::Whole);
    if run.is_empty() {
        let ids: Vec<&str> = left_out.iter().map(|e| e.id()).collect();
        bail!(BadRequest(format!(
            "--only {} selects only experiments too large for the main job ({}): add --extended to run them",
            s.only.join(","),
            ids.join(", ")
        )));
    }
    Ok(run)
}

/// What the main job leaves out of the experiments `settings.only` selects (nothing with `--extended`): each
/// experiment's id and the part left out ("the whole experiment" or its own description).
pub fn left_out(s: &Settings) -> Result<Vec<(&'static str, &'static str)>> {
    if s.extended {
        return Ok(vec![]);
    }
    Ok(matching(s)?
        .iter()
        .filter_map(|e| match e.extended() {
            Extended::None => None,
            Extended::Whole => Some((e.id(), "the whole experiment")),
            Extended::Part(part) => Some((e.id(), part)),
        })
        .collect())
}

/// The experiments whose id starts with one of `settings.only`'s prefixes (every one when it is empty).
fn matching(s: &Settings) -> Result<Vec<Box<dyn Experiment>>> {
    if s.only.iter().any(String::is_empty) {
        bail!(BadRequest(format!(
            "--only {:?} holds an empty prefix, which every experiment id starts with: name experiment id prefixes (e.g. deep,theory), or leave --only out to run everything",
            s.only.join(",")
        )));
    }
    let selected: Vec<_> = crate::all()
        .into_iter()
        .filter(|e| s.only.is_empty() || s.only.iter().any(|p| e.id().starts_with(p.as_str())))
        .collect();
    if selected.is_empty() {
        bail!(BadRequest(format!(
            "--only {} matches no experiment",
            s.only.join(",")
        )));
    }
    Ok(selected)
}

/// Plans the runs of `settings` into `out` and writes `out/plan.json` without training anything.
pub fn plan(out: &Path, s: &Settings, bar: &ProgressBar) -> Result<Plan> {
    let deep = deep_scale(s)?;
    let experiments = selected(s)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = &absolute(out)?;
    let ctx = Ctx {
        out: out.to_path_buf(),
        quick: s.quick,
        extended: s.extended,
        progress: bar,
        deep: &deep,
    };
    let plan = Plan::new(&ctx, &experiments)?;
    // Later waves start from weights not trained yet: they are checked when they start.
    for run in plan.wave(0) {
        run.config
            .check(&run.dir)
            .with_context(|| format!("planned run {}", run.dir.display()))?;
    }
    plan.write(out, s, &experiments)?;
    if s.scale == ScaleKind::Paper {
        print_estimates(&plan, &s.device, bar)?;
    }
    Ok(plan)
}

/// Trains the plan's runs wave by wave, in parallel (one worker per core); finished runs are kept, started deep
/// runs resume. A run that fails does not stop the others (the experiments that need it fail later): the failures
/// are returned, with their run directories.
pub fn train(plan: &Plan, bar: &ProgressBar) -> Vec<(PathBuf, String)> {
    let mut failures = vec![];
    for w in 0..plan.waves() {
        let runs = plan.wave(w);
        bar.inc_length(runs.len() as u64);
        let results = crate::par_map(&runs, |run| {
            let result = if run.config.is_finished_in(&run.dir) {
                Ok(())
            } else {
                run.config.execute_quietly(&run.dir)
            };
            bar.inc(1);
            result
        });
        for (run, result) in runs.iter().zip(results) {
            if let Err(err) = result {
                failures.push((run.dir.clone(), format!("{err:#}")));
            }
        }
    }
    failures
}

/// Judges every planned experiment of `out` from its finished runs (nothing trains) and writes `report.html`,
/// `REPORT.md` and `claims.json` there. A failing experiment is reported (its claims "not-run") and the others go
/// on.
pub fn report(out: &Path, bar: &ProgressBar) -> Result<Outcome> {
    let s = crate::plan::read_settings(out)?;
    let out = &absolute(out)?;
    let deep = deep_scale(&s)?;
    let experiments = selected(&s)?;
    let ctx = Ctx {
        out: out.to_path_buf(),
        quick: s.quick,
        extended: s.extended,
        progress: bar,
        deep: &deep,
    };
    let mut sections = vec![];
    let mut failed = vec![];
    for exp in experiments {
        bar.set_message(exp.id());
        let section = exp.judge(&ctx).unwrap_or_else(|err| {
            failed.push((exp.id(), format!("{err:#}")));
            Section {
                title: exp.title().into(),
                text: format!("This experiment failed: {err:#}"),
                claims: exp
                    .claims()
                    .iter()
                    .map(|c| c.not_run("experiment failed"))
                    .collect(),
                ..Section::default()
            }
        });
        sections.push(section);
    }
    let report = Report {
        title: "samlab: reproducing \"Towards Understanding Sharpness-Aware Minimization\" (ICML 2022)".into(),
        intro: format!(
            "Produced by samlab {} from the runs of `samlab reproduce{}`. Every run directory (config.toml, metrics.csv, summary.json with the run's wall time, .npy arrays) is under this folder; the deep-net runs are in deep_runs/, and plan.json lists them all.{}",
            env!("CARGO_PKG_VERSION"),
            flags(&s),
            left_out_note(&s)?,
        ),
        sections,
    };
    report
        .write(out)
        .with_context(|| format!("cannot write the report into {}", out.display()))?;
    let claims = report.claims();
    let count = |v| claims.iter().filter(|c| c.verdict == v).count();
    Ok(Outcome {
        pass: count(Verdict::Pass),
        fail: count(Verdict::Fail),
        not_run: count(Verdict::NotRun),
        report: out.join("report.html"),
        failed,
    })
}

/// What `reproduce` did: the report, the runs that failed, and the seconds it took.
pub struct Reproduced {
    /// The report.
    pub outcome: Outcome,
    /// The runs that failed, with the reason.
    pub failed_runs: Vec<(PathBuf, String)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Plans, trains and reports (see [`plan`], [`train`] and [`report`]).
pub fn reproduce(out: &Path, s: &Settings, bar: &ProgressBar) -> Result<Reproduced> {
    let start = Instant::now();
    let plan = plan(out, s, bar)?;
    let failed_runs = train(&plan, bar);
    let outcome = report(out, bar)?;
    Ok(Reproduced {
        outcome,
        failed_runs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The SLURM jobs of a reproduction, as [`submit`] queued them.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The results directory, absolute: also the jobs' sweep directory (`samlab sweep status DIR` follows them).
    pub dir: PathBuf,
    /// The runs submitted.
    pub runs: usize,
    /// One job array per wave, in order, each starting after the previous one ended.
    pub arrays: Vec<Submission>,
    /// The `samlab report DIR` job, after the last array.
    pub report_job: String,
}

impl Submitted {
    /// Waits until every array and the report job have left the queue (an error after `timeout`), then returns
    /// the report job's log `DIR/logs/report.log` (empty when it wrote none).
    pub fn wait(&self, timeout: Duration) -> Result<String> {
        let mut jobs: Vec<String> = self.arrays.iter().map(|s| s.array_job.clone()).collect();
        jobs.push(self.report_job.clone());
        slurm::wait(&jobs, timeout)?;
        Ok(fs::read_to_string(self.dir.join("logs").join("report.log")).unwrap_or_default())
    }
}

/// Submits `plan`'s unfinished runs to SLURM with `out` (the plan's results directory) as the sweep directory: its
/// manifest names each run's directory inside `out`, the sbatch scripts and job ids go to `out/slurm`. One job
/// array per wave (a wave starts after the previous one ended: its runs start from earlier runs), then `exe report
/// OUT`, where `exe` is the samlab binary the jobs run. Returns `None`, submitting nothing, when every run is
/// finished (then [`report`] rebuilds the report here).
pub fn submit(
    out: &Path,
    plan: &Plan,
    exe: &Path,
    opts: &SlurmOptions,
) -> Result<Option<Submitted>> {
    let dir = out
        .canonicalize()
        .context("cannot find the results directory")?;
    let entries = plan
        .runs
        .iter()
        .map(|r| {
            let rel = r
                .dir
                .strip_prefix(&dir)
                .or_else(|_| r.dir.strip_prefix(out))
                .unwrap_or(&r.dir);
            (rel.to_string_lossy().into_owned(), r.config.to_toml())
        })
        .collect();
    Manifest::of_runs(entries)?.write(&dir)?;
    let waves: Vec<Vec<usize>> = (0..plan.waves())
        .map(|w| {
            (0..plan.runs.len())
                .filter(|&i| {
                    plan.wave[i] == w && !plan.runs[i].config.is_finished_in(&plan.runs[i].dir)
                })
                .collect::<Vec<usize>>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if waves.is_empty() {
        return Ok(None);
    }
    let report = ["report".to_string(), dir.to_string_lossy().into_owned()];
    let arrays = slurm::submit_waves(&dir, exe, &waves, opts, &report)?;
    Ok(Some(Submitted {
        runs: waves.iter().map(Vec::len).sum(),
        report_job: arrays[0].report_job.clone(),
        arrays,
        dir,
    }))
}

/// `out` as an absolute path without symbolic links (the root of the runs' directories).
fn absolute(out: &Path) -> Result<PathBuf> {
    out.canonicalize()
        .with_context(|| format!("cannot find {}", out.display()))
}

/// The flags that give `s` back, as the report names them.
fn flags(s: &Settings) -> String {
    let mut f = String::new();
    if s.quick {
        f += " --quick";
    }
    if s.scale == ScaleKind::Paper {
        f += " --scale paper";
    }
    if let Some(d) = &s.data_dir {
        f += &format!(" --data-dir {}", d.display());
    }
    if s.device != "flex" {
        f += &format!(" --device {}", s.device);
    }
    if s.precision != samlab_deep::trainer::Precision::F32 {
        f += &format!(" --precision {:?}", s.precision).to_lowercase();
    }
    if !s.only.is_empty() {
        f += &format!(" --only {}", s.only.join(","));
    }
    if s.extended {
        f += " --extended";
    }
    f
}

/// The report's sentence on what the main job left out and how to get it (empty when nothing was).
fn left_out_note(s: &Settings) -> Result<String> {
    let parts = left_out(s)?;
    if parts.is_empty() {
        return Ok(String::new());
    }
    let list: Vec<String> = parts
        .iter()
        .map(|(id, part)| format!("{id} ({part})"))
        .collect();
    Ok(format!(
        " Left out as too large for the main job's budget: {}; `samlab reproduce{} --extended` runs them too (the finished runs here are kept).",
        list.join(", "),
        flags(s)
    ))
}

/// Prints each planned deep-net run's estimated training time on `device`, before anything trains (steps timed
/// on the device itself: see [`estimate_seconds`]).
fn print_estimates(plan: &Plan, device: &str, bar: &ProgressBar) -> Result<()> {
    let handle = samlab_deep::device(device)?;
    let mut times = StepTimes::new();
    let (mut count, mut total) = (0, 0.0);
    // The plan holds each run once.
    for run in &plan.runs {
        if let AnyRunConfig::Deep(config) = &run.config {
            let s = estimate_seconds(config, &handle, &mut times)?;
            count += 1;
            total += s;
            bar.println(format!(
                "{}: about {} on {device}",
                run.dir.display(),
                duration(s)
            ));
        }
    }
    bar.println(format!(
        "{count} deep-net runs: about {} of training in all (one after another; evaluation not included)",
        duration(total)
    ));
    Ok(())
}

/// `s` seconds as minutes or hours.
fn duration(s: f64) -> String {
    if s < 3600.0 {
        format!("{:.0} min", (s / 60.0).ceil())
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(only: &[&str], extended: bool) -> Settings {
        Settings {
            quick: true,
            scale: ScaleKind::Laptop,
            data_dir: None,
            device: "flex".into(),
            precision: samlab_deep::trainer::Precision::F32,
            only: only.iter().map(|s| s.to_string()).collect(),
            extended,
        }
    }

    /// Without `--extended` an experiment that runs only with it is left out of the plan and named, with the flag
    /// that adds it, in the report's opening; with the flag it runs and nothing is left out; `--only` naming such
    /// experiments alone is a bad request that says what to add.
    #[test]
    fn extended_experiments_run_only_with_the_flag_and_the_report_names_them() {
        let ids = |s: &Settings| -> Vec<&'static str> {
            selected(s).unwrap().iter().map(|e| e.id()).collect()
        };
        let main = settings(&[], false);
        assert!(!ids(&main).contains(&"transformers"));
        assert!(left_out(&main)
            .unwrap()
            .contains(&("transformers", "the whole experiment")));
        let note = left_out_note(&main).unwrap();
        assert!(
            note.contains("transformers") && note.contains("--quick --extended"),
            "{note}"
        );
        let extended = settings(&[], true);
        assert!(ids(&extended).contains(&"transformers"));
        assert!(left_out(&extended).unwrap().is_empty());
        assert!(left_out_note(&extended).unwrap().is_empty());
        assert_eq!(flags(&extended), " --quick --extended");
        assert_eq!(
            left_out(&settings(&["large_step_sgd_deep"], false)).unwrap(),
            [("large_step_sgd_deep", "the PreAct ResNet-18 runs")]
        );
        let err = selected(&settings(&["transformers"], false)).err().unwrap();
        let bad = err.downcast_ref::<BadRequest>().expect("a bad request");
        assert!(bad.0.contains("add --extended"), "{}", bad.0);
    }
}
