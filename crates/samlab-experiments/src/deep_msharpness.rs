//! m-sharpness (SPEC §4.3): at a fixed batch size, SAM with one perturbation per group of m examples; the
//! paper's central observation is that test error falls as m gets smaller.

use std::path::{Path, PathBuf};

use anyhow::Result;
use samlab_core::ascent::SamObservation;
use samlab_core::run_dir::write_json;
use samlab_deep::analysis::hessian::{run_hessian, HessianConfig};
use samlab_deep::analysis::sharpness::{run_sharpness, SharpnessConfig};
use samlab_deep::analysis::{CheckpointKind, LoadedRun};
use samlab_deep::run::{DeepRunConfig, RunOutcome};
use samlab_report::{render, Figure, Section};

use super::deep_common::{
    comparison_header, comparison_row, fmt_mean, mean_std, seed_series, spearman, sweep_figure,
    test_error, test_loss, values, DeepScale, Sweep, TEST_ERROR, TEST_LOSS,
};
use super::{cached, last_checkpoint, par_map, ClaimSpec, Ctx, Experiment, PlannedRun};
use serde::{Deserialize, Serialize};

/// Geometry of a final model.
#[derive(Serialize, Deserialize)]
struct Geometry {
    /// Worst-case sharpness with the small m.
    small: f64,
    /// Worst-case sharpness with m = the batch size.
    batch: f64,
    /// Top Hessian eigenvalue of the training loss.
    eigenvalue: f64,
    /// Feature-sparsity coefficient of the last hidden layer.
    feature_sparsity: f64,
}

/// Sharpness (m = `small` and m = `batch`), the top Hessian eigenvalue and the feature sparsity of a run's last
/// checkpoint (kept in `cache` until the checkpoint changes); the reports are also written into the run directory.
fn geometry(cache: &Path, o: &RunOutcome, small: usize, batch: usize) -> Result<Geometry> {
    let name = o.dir.file_name().unwrap_or_default().to_string_lossy();
    let path = cache.join(format!("geometry_{name}.json"));
    cached(&path, &[last_checkpoint(&o.dir)], || {
        measure_geometry(o, small, batch)
    })
}

fn measure_geometry(o: &RunOutcome, small: usize, batch: usize) -> Result<Geometry> {
    let run = LoadedRun::load(&o.dir, CheckpointKind::Last)?;
    let sharp = |m: usize| -> Result<f64> {
        let r = run_sharpness(
            &run,
            &SharpnessConfig {
                m,
                ..SharpnessConfig::default()
            },
        )?;
        write_json(&o.dir.join(format!("sharpness_m{m}.json")), &r)?;
        Ok(r.result.loss_increase)
    };
    let (small, batch) = (sharp(small)?, sharp(batch)?);
    let h = run_hessian(&run, &HessianConfig::default())?;
    h.write(&o.dir)?;
    Ok(Geometry {
        small,
        batch,
        eigenvalue: h.curvature.top(),
        feature_sparsity: h.feature_sparsity.sparsity,
    })
}

/// The epochs with a curvature log and each seed's top eigenvalue at them, if every seed logged the same epochs.
fn logged_curvature(runs: &[RunOutcome]) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let logged = |o: &RunOutcome| -> Vec<(f64, f64)> {
        o.rows
            .iter()
            .filter(|r| r.hessian_top.is_finite())
            .map(|r| (r.epoch as f64, r.hessian_top))
            .collect()
    };
    let epochs: Vec<f64> = logged(runs.first()?).iter().map(|p| p.0).collect();
    let per_seed: Vec<Vec<f64>> = runs
        .iter()
        .map(|o| logged(o).iter().map(|p| p.1).collect())
        .collect();
    (!epochs.is_empty() && per_seed.iter().all(|v| v.len() == epochs.len()))
        .then_some((epochs, per_seed))
}

/// The last logged top eigenvalue of a run (NaN when it logged none).
fn last_logged(o: &RunOutcome) -> f64 {
    o.rows
        .iter()
        .rev()
        .map(|r| r.hessian_top)
        .find(|v| v.is_finite())
        .unwrap_or(f64::NAN)
}

/// The top Hessian eigenvalue over training for ERM and every m (mean +- std over seeds), where the runs logged
/// it: a line with a marker at every logged epoch, on the log's examples (`examples`, named in the title).
fn curvature_figure(
    dir: &Path,
    (erm, sweep): (&[RunOutcome], &Sweep),
    m_grid: &[usize],
    examples: &str,
) -> Result<Option<PathBuf>> {
    let mut fig = Figure::new(
        format!("Top Hessian eigenvalue in training ({examples}; mean +- std)"),
        "epoch",
        "top eigenvalue of the training loss (exact products)",
    );
    let groups = std::iter::once(("ERM".to_string(), erm)).chain(
        m_grid
            .iter()
            .zip(&sweep.runs)
            .map(|(m, r)| (format!("m = {m}"), r.as_slice())),
    );
    for (label, runs) in groups {
        if let Some((epochs, per_seed)) = logged_curvature(runs) {
            let mut series = seed_series(label, &epochs, &per_seed, 1.0, false);
            series.markers = true;
            fig.series.push(series);
        }
    }
    if fig.series.is_empty() {
        return Ok(None);
    }
    Ok(Some(render(&fig, &dir.join("curvature"))?.0))
}

/// What SAM did during the m-SAM runs, epoch by epoch for every m (mean +- std over seeds of each epoch's mean
/// over its observed steps): the cosine between the clean and the SAM gradient, and the realised sharpness.
fn sam_figures(dir: &Path, sweep: &Sweep, m_grid: &[usize]) -> Result<Vec<PathBuf>> {
    type Pick = fn(&SamObservation) -> f64;
    let quantities: [(&str, &str, &str, Pick); 2] = [
        (
            "sam_cosine",
            "What SAM did: cosine between the clean and the SAM gradient (mean +- std over seeds)",
            "cos(grad L_B(w), grad L_B(w + delta))",
            |o| o.grad_cos,
        ),
        (
            "sam_sharpness",
            "What SAM did: realised sharpness L_B(w + delta) - L_B(w) on the batch",
            "loss increase at the perturbed point",
            |o| o.sharpness,
        ),
    ];
    let mut paths = Vec::new();
    for (stem, title, y, pick) in quantities {
        let mut fig = Figure::new(title, "epoch", y);
        for (m, runs) in m_grid.iter().zip(&sweep.runs) {
            let per_seed: Vec<Vec<f64>> = runs
                .iter()
                .map(|o| o.rows.iter().map(|r| pick(&r.sam)).collect())
                .collect();
            let epochs = per_seed.iter().map(Vec::len).min().unwrap_or(0);
            if per_seed.iter().flatten().all(|v| v.is_nan()) {
                continue;
            }
            let xs: Vec<f64> = (1..=epochs).map(|e| e as f64).collect();
            fig.series
                .push(seed_series(format!("m = {m}"), &xs, &per_seed, 1.0, false));
        }
        if !fig.series.is_empty() {
            paths.push(render(&fig, &dir.join(stem))?.0);
        }
    }
    Ok(paths)
}

/// Test error against m at a fixed batch size and radius.
pub struct MSharpness;

/// The deep-net runs it judges, in groups.
fn groups(scale: &DeepScale) -> Vec<Vec<(String, DeepRunConfig)>> {
    let mut groups = vec![scale.per_seed(|s| scale.erm(s))];
    groups.extend(
        scale
            .m_grid
            .iter()
            .map(|&m| scale.per_seed(|s| scale.msam(m, scale.rho, s))),
    );
    groups
}

impl Experiment for MSharpness {
    fn id(&self) -> &'static str {
        "deep_msharpness"
    }
    fn title(&self) -> &'static str {
        "Deep nets: generalization and sharpness against m (m-sharpness; the paper: smaller m generalizes better)"
    }
    fn claims(&self) -> &'static [ClaimSpec] {
        &[
            ClaimSpec {
                id: "deep.m_small_lowers_error",
                claim: "m-SAM with the smallest m of the grid has a lower mean test error than SAM with m = batch size",
                paper: "SPEC §4.3 (abstract: m-sharpness with small m is essential for generalization); the paper's m grid and numbers could not be pinned down",
            },
            ClaimSpec {
                id: "deep.sam_lowers_msharpness",
                claim: "m-SAM with a small m ends at a point of lower worst-case m-sharpness than ERM, on every seed (same m; rho 0.1, 20 normalized ascent steps of 0.1 rho, 256 training examples: the authors' eval_sharpness.py defaults)",
                paper: "m-SAM minimizes the m-sharpness objective (SPEC §1.1, Foret et al.); the paper's evaluation script measures it (SPEC §1.3)",
            },
            ClaimSpec {
                id: "deep.m_trend_nll",
                claim: "Test cross-entropy falls as m falls: Spearman rank correlation between m and the mean test cross-entropy over the grid > 0",
                paper: "SPEC §4.3: test error decreases monotonically as m decreases (expected shape)",
            },
            ClaimSpec {
                id: "deep.m_small_lowers_hessian",
                claim: "The final models are flatter in the Hessian's top eigenvalue (exact Hessian-vector products, 1,024 training examples, chunks of 128, BatchNorm in batch mode): smallest-m m-SAM below ERM on every seed, and the mean eigenvalue falls with m (Spearman between m and the mean eigenvalue > 0)",
                paper: "Our measurement: the paper relates m-sharpness, not the Hessian, to generalization (SPEC §4.3); SAM is commonly motivated by flatter minima (Foret et al.)",
            },
        ]
    }
    fn runs(&self, ctx: &Ctx) -> Vec<PlannedRun> {
        ctx.deep_planned(&groups(ctx.deep).concat())
    }
    fn judge(&self, ctx: &Ctx) -> Result<Section> {
        let scale = ctx.deep;
        let mut runs = ctx.deep_groups(&groups(scale))?;
        let erm = runs.remove(0);
        let sweep = Sweep {
            label: format!("m-SAM (rho = {})", scale.rho),
            xs: scale.m_grid.iter().map(|&m| m as f64).collect(),
            runs,
        };
        let dir = ctx.dir(self.id());
        let figures = vec![
            sweep_figure(
                &dir,
                "test_error",
                "Test error vs m (batch 128; mean +- std over seeds)",
                "m (examples per perturbation)",
                &TEST_ERROR,
                &erm,
                std::slice::from_ref(&sweep),
            )?,
            sweep_figure(
                &dir,
                "test_loss",
                "Test cross-entropy vs m",
                "m (examples per perturbation)",
                &TEST_LOSS,
                &erm,
                std::slice::from_ref(&sweep),
            )?,
        ];
        let mut table = vec![
            comparison_header(),
            comparison_row("ERM".into(), &erm, &erm),
        ];
        for (i, m) in scale.m_grid.iter().enumerate() {
            table.push(comparison_row(format!("m = {m}"), &sweep.runs[i], &erm));
        }
        // Sharpness, curvature and features of every final model: ERM first, then the m grid.
        let small = scale.small_m;
        // The table's Hessian is `samlab hessian`'s defaults; the runs' curvature log is the same computation when
        // its settings are these (the laptop scale's), and then its last point is the table's value.
        let table_hessian = HessianConfig::default();
        let log_hessian = scale.erm(0).1.train.curvature_config();
        let same_hessian = log_hessian == table_hessian;
        let table_examples = format!(
            "first {} training examples, chunks of {}, BatchNorm in batch mode",
            table_hessian.examples, table_hessian.m
        );
        let log_examples = if same_hessian {
            format!(
                "logged every {} epochs on the table's examples: {table_examples}",
                scale.curvature_every
            )
        } else {
            format!(
                "logged every {} epochs on the first {} training examples, chunks of {}: not the table's",
                scale.curvature_every, log_hessian.examples, log_hessian.m
            )
        };
        let models: Vec<&[RunOutcome]> = std::iter::once(erm.as_slice())
            .chain(sweep.runs.iter().map(Vec::as_slice))
            .collect();
        let flat: Vec<&RunOutcome> = models.iter().flat_map(|r| r.iter()).collect();
        let cache = ctx.dir(self.id()).join("cache");
        let geometry: Vec<Geometry> = par_map(&flat, |o| {
            geometry(&cache, o, small, scale.base.train.batch_size)
        })
        .into_iter()
        .collect::<Result<_>>()?;
        // The largest gap between a run's last logged eigenvalue and its table value, relative to the latter (NaN
        // when no run logged).
        let log_gap = flat
            .iter()
            .zip(&geometry)
            .map(|(o, g)| (last_logged(o) - g.eigenvalue).abs() / g.eigenvalue.abs())
            .filter(|d| d.is_finite())
            .fold(f64::NAN, f64::max);
        let per_model: Vec<&[Geometry]> = geometry.chunks(scale.seeds.len()).collect();
        table.push(
            [
                "final model trained with".to_string(),
                format!("worst-case {small}-sharpness (loss increase)"),
                format!("worst-case {}-sharpness", scale.base.train.batch_size),
                format!(
                    "top Hessian eigenvalue (`samlab hessian`: {table_examples}{})",
                    if same_hessian {
                        "; the curvature figure's last point"
                    } else {
                        "; not the curvature figure's examples"
                    }
                ),
                "feature sparsity (last hidden layer)".into(),
            ]
            .to_vec(),
        );
        let labels = std::iter::once("ERM".to_string())
            .chain(scale.m_grid.iter().map(|m| format!("m-SAM, m = {m}")));
        for (label, g) in labels.zip(&per_model) {
            let col = |f: fn(&Geometry) -> f64| fmt_mean(&g.iter().map(f).collect::<Vec<_>>());
            table.push(vec![
                label,
                col(|g| g.small),
                col(|g| g.batch),
                col(|g| g.eigenvalue),
                col(|g| g.feature_sparsity),
            ]);
        }
        let small_idx = 1 + scale
            .m_grid
            .iter()
            .position(|&m| m == small)
            .expect("the m grid holds the small m");
        let flatter = per_model[small_idx]
            .iter()
            .zip(per_model[0])
            .all(|(sam, erm)| sam.small < erm.small);
        let mean = |i: usize, pick| mean_std(&values(&sweep.runs[i], pick)).0;
        let n = scale.m_grid.len();
        let smallest = (0..n).min_by_key(|&i| scale.m_grid[i]).expect("a grid");
        let batch = (0..n)
            .find(|&i| scale.m_grid[i] == scale.base.train.batch_size)
            .expect("the m grid holds the batch size");
        let (e_small, e_batch) = (mean(smallest, test_error), mean(batch, test_error));
        let nll: Vec<f64> = (0..n).map(|i| mean(i, test_loss)).collect();
        let rho_s = spearman(&sweep.xs, &nll);
        let top = |g: &[Geometry]| g.iter().map(|g| g.eigenvalue).collect::<Vec<_>>();
        let eig_means: Vec<f64> = (0..n).map(|i| mean_std(&top(per_model[1 + i])).0).collect();
        let rho_h = spearman(&sweep.xs, &eig_means);
        let smallest_flatter = top(per_model[1 + smallest])
            .iter()
            .zip(top(per_model[0]))
            .all(|(sam, erm)| *sam < erm);
        let mut figures = figures;
        let title_examples = if same_hessian {
            format!("the table's {} training examples", log_hessian.examples)
        } else {
            format!(
                "first {} training examples, not the table's",
                log_hessian.examples
            )
        };
        figures.extend(curvature_figure(
            &dir,
            (&erm, &sweep),
            &scale.m_grid,
            &title_examples,
        )?);
        let log_note = if log_gap.is_nan() {
            String::new()
        } else {
            format!(
                " The curvature figure is the runs' training log ({log_examples}; Lanczos as the table's, tolerance {:e}, at most {} steps){}: the largest relative difference between a run's last logged value and its table value is {log_gap:.1e}.",
                log_hessian.tol,
                log_hessian.max_steps,
                if same_hessian {
                    "; its last point is the same computation as the table's, on the final weights"
                } else {
                    ""
                }
            )
        };
        figures.extend(sam_figures(&dir, &sweep, &scale.m_grid)?);
        let spec = self.claims();
        Ok(Section {
            title: self.title().into(),
            text: format!(
                "{}. Batch {} split into groups of m examples, each with its own normalized perturbation of radius {} computed on that group (BatchNorm statistics are per group too, as in the authors' code: ERM is not re-run with ghost batches here).{log_note}",
                scale.describe(),
                scale.base.train.batch_size,
                scale.rho
            ),
            figures,
            table,
            claims: vec![
                spec[0].judge(
                    format!("m = {}: {:.2}% vs m = {}: {:.2}%", scale.m_grid[smallest], 100.0 * e_small, scale.m_grid[batch], 100.0 * e_batch),
                    e_small < e_batch,
                ),
                spec[1].judge(
                    format!(
                        "{small}-sharpness per seed: m-SAM {} vs ERM {}",
                        per_model[small_idx].iter().map(|g| format!("{:.4}", g.small)).collect::<Vec<_>>().join(", "),
                        per_model[0].iter().map(|g| format!("{:.4}", g.small)).collect::<Vec<_>>().join(", ")
                    ),
                    flatter,
                ),
                spec[2].judge(
                    format!(
                        "Spearman {rho_s:.2}; mean test cross-entropy by m: {}",
                        scale.m_grid.iter().zip(&nll).map(|(m, v)| format!("{m}: {v:.4}")).collect::<Vec<_>>().join(", ")
                    ),
                    rho_s > 0.0,
                ),
                spec[3].judge(
                    format!(
                        "per seed: m = {} {} vs ERM {}; Spearman {rho_h:.2}; mean by m: {}",
                        scale.m_grid[smallest],
                        top(per_model[1 + smallest]).iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", "),
                        top(per_model[0]).iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", "),
                        scale.m_grid.iter().zip(&eig_means).map(|(m, v)| format!("{m}: {v:.3}")).collect::<Vec<_>>().join(", ")
                    ),
                    smallest_flatter && rho_h > 0.0,
                ),
            ],
        })
    }
}
