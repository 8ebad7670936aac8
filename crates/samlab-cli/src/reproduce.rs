//! `samlab reproduce`: every experiment, then the report.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use samlab_report::{Report, Section};

use crate::experiments::{self, Ctx};
use crate::progress;

/// Runs every experiment into `out` and writes `report.html`, `REPORT.md` and `claims.json` there. A failing
/// experiment is reported (its claims "not-run") and the others go on; the command then exits non-zero.
pub fn reproduce(out: &Path, quick: bool) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let start = Instant::now();
    let bar = progress::bar(0, "runs");
    let ctx = Ctx {
        out: out.to_path_buf(),
        quick,
        progress: &bar,
    };
    let mut sections = vec![];
    let mut failed = vec![];
    for exp in experiments::all() {
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
            "Produced by samlab {} with `samlab reproduce{}` in {seconds:.1} s on {} cores. Every run directory (config.toml, metrics.csv, summary.json, .npy arrays) is under this folder.",
            env!("CARGO_PKG_VERSION"),
            if quick { " --quick" } else { "" },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        sections,
    };
    report
        .write(out)
        .with_context(|| format!("cannot write the report into {}", out.display()))?;
    let claims = report.claims();
    let count = |v| claims.iter().filter(|c| c.verdict == v).count();
    println!(
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
