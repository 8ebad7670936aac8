//! `samlab reproduce`: every experiment, then the report.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use samlab_deep::bench::{estimate_seconds, StepTimes};
use samlab_deep::run::DeepRunConfig;
use samlab_deep::trainer::Precision;
use samlab_report::{Report, Section};

use crate::experiments::deep_common::{DeepRuns, DeepScale, ScaleKind};
use crate::experiments::{self, Ctx};
use crate::{progress, UsageError};

/// What `samlab reproduce` was asked for.
pub struct Options {
    /// Output directory.
    pub out: PathBuf,
    /// Shorter runs.
    pub quick: bool,
    /// Scale of the deep-net experiments.
    pub scale: ScaleKind,
    /// CIFAR-10 files for the paper scale.
    pub data_dir: Option<PathBuf>,
    /// Backend of the deep-net runs.
    pub device: String,
    /// Precision of the deep-net runs' training passes.
    pub precision: Precision,
    /// Experiment id prefixes to run (all when empty).
    pub only: Vec<String>,
}

/// Runs the experiments into `out` and writes `report.html`, `REPORT.md` and `claims.json` there. A failing
/// experiment is reported (its claims "not-run") and the others go on; the command then exits non-zero.
pub fn reproduce(o: &Options) -> Result<()> {
    let mut deep = match (o.scale, &o.data_dir) {
        (ScaleKind::Laptop, None) => DeepScale::laptop(o.quick),
        (ScaleKind::Paper, Some(dir)) => DeepScale::paper(dir.clone(), o.quick),
        (ScaleKind::Laptop, Some(_)) => {
            bail!(UsageError("--data-dir is only for --scale paper".into()))
        }
        (ScaleKind::Paper, None) => bail!(UsageError(
            "--scale paper needs --data-dir (the CIFAR-10 binary files)".into()
        )),
    };
    o.precision.check(&samlab_deep::device(&o.device)?)?;
    for base in [&mut deep.base, &mut deep.noise_base] {
        base.train.device = o.device.clone();
        base.train.precision = o.precision;
    }
    let selected: Vec<_> = experiments::all()
        .into_iter()
        .filter(|e| o.only.is_empty() || o.only.iter().any(|p| e.id().starts_with(p.as_str())))
        .collect();
    if selected.is_empty() {
        bail!(UsageError(format!(
            "--only {} matches no experiment",
            o.only.join(",")
        )));
    }
    let out = &o.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let start = Instant::now();
    let bar = progress::bar(0, "runs");
    let deep_runs = DeepRuns::default();
    let ctx = Ctx {
        out: out.to_path_buf(),
        quick: o.quick,
        progress: &bar,
        deep: &deep,
        deep_runs: &deep_runs,
    };
    let planned: Vec<Vec<_>> = selected.iter().flat_map(|e| e.deep_runs(&deep)).collect();
    if o.scale == ScaleKind::Paper {
        print_estimates(&planned, &o.device, &bar)?;
    }
    if let Err(err) = ctx.deep_groups(&planned) {
        // Each experiment asks again and reports the failure in its own section.
        bar.println(format!("deep-net runs failed: {err:#}"));
    }
    let mut sections = vec![];
    let mut failed = vec![];
    for exp in selected {
        bar.set_message(exp.id());
        let section = exp.run(&ctx).unwrap_or_else(|err| {
            failed.push(exp.id());
            bar.println(format!("experiment {} failed: {err:#}", exp.id()));
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
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let report = Report {
        title: "samlab: reproducing \"Towards Understanding Sharpness-Aware Minimization\" (ICML 2022)".into(),
        intro: format!(
            "Produced by samlab {} with `samlab reproduce{}` in {seconds:.1} s on {} cores. Every run directory (config.toml, metrics.csv, summary.json, .npy arrays) is under this folder; the deep-net runs are in deep_runs/.",
            env!("CARGO_PKG_VERSION"),
            std::env::args().skip(2).fold(String::new(), |a, b| a + " " + &b),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        sections,
    };
    report
        .write(out)
        .with_context(|| format!("cannot write the report into {}", out.display()))?;
    let claims = report.claims();
    let count = |v| claims.iter().filter(|c| c.verdict == v).count();
    say!(
        "{} claims: {} pass, {} fail, {} not run ({seconds:.1} s) -> {}",
        claims.len(),
        count(samlab_report::Verdict::Pass),
        count(samlab_report::Verdict::Fail),
        count(samlab_report::Verdict::NotRun),
        out.join("report.html").display()
    );
    if !failed.is_empty() {
        bail!("experiments failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Prints each planned deep-net run's estimated training time on `device`, before anything trains (steps timed
/// on the device itself: see [`estimate_seconds`]).
fn print_estimates(
    planned: &[Vec<(String, DeepRunConfig)>],
    device: &str,
    bar: &ProgressBar,
) -> Result<()> {
    let handle = samlab_deep::device(device)?;
    let mut times = StepTimes::new();
    let mut seen = HashSet::new();
    let mut total = 0.0;
    for (name, config) in planned.iter().flatten() {
        if seen.insert(name) {
            let s = estimate_seconds(config, &handle, &mut times)?;
            total += s;
            bar.println(format!("{name}: about {} on {device}", duration(s)));
        }
    }
    bar.println(format!(
        "{} deep-net runs: about {} of training in all (one after another; evaluation not included)",
        seen.len(),
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
