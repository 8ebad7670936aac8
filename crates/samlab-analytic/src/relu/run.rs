//! One-hidden-layer ReLU network runs: the config a run directory holds, its checks, the measurements (kinks,
//! active neurons, feature sparsity) and its execution into a run directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::relu::metrics::{arange, feature_stats, kinks, plot_grid_1d, KinkTolerances};
use crate::relu::{self, ReluInit, ReluNet, ReluRun, ReluTrainConfig, TeacherStudent};
use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2};
use samlab_core::ascent::SamObservation;
use samlab_core::data::{read_array, write_array, Dataset, DATA_FILES};
use samlab_core::run::{
    read_summary, CurvePoint, Observer, RunConfig, RunStatus, Stopped, SummaryHeader, UpdateCounter,
};
use samlab_core::run_dir::{artefact_hashes, check_artefacts, nan_as_null, ReluEngine};
use samlab_core::run_dir::{
    count, read_rows, write_csv, write_json, write_rows, write_toml, MetricsRow, RunDirWriter,
};
use serde::{Deserialize, Serialize};

/// Where the data of a ReLU run comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReluData {
    /// The 12-point 1D regression of SPEC §3 (test set = training set).
    TwelvePoints,
    /// Teacher-student data (SPEC §9).
    TeacherStudent(TeacherStudent),
    /// A directory with X_train.npy and y_train.npy (f64), and optionally X_test.npy, y_test.npy (else the test
    /// set is the training set).
    Dir(PathBuf),
}

impl ReluData {
    /// Loads and validates the data.
    pub fn load(&self) -> Result<Dataset> {
        Ok(match self {
            ReluData::TwelvePoints => relu::twelve_points(),
            ReluData::TeacherStudent(spec) => spec.generate()?.0,
            ReluData::Dir(dir) => {
                let has_test = [DATA_FILES[2], DATA_FILES[3]]
                    .iter()
                    .any(|f| dir.join(f).exists());
                if has_test {
                    Dataset::load_dir(dir)?
                } else {
                    let x: Array2<f64> = read_array(&dir.join(DATA_FILES[0]))?;
                    let y: Array1<f64> = read_array(&dir.join(DATA_FILES[1]))?;
                    let data = Dataset {
                        x_train: x.clone(),
                        y_train: y.clone(),
                        x_test: x,
                        y_test: y,
                    };
                    data.validate()?;
                    data
                }
            }
        })
    }
}

/// Settings of the measurements written with a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSettings {
    /// Kink tolerances (1D only).
    pub kinks: KinkTolerances,
    /// Correlation above which two neurons count as one in the feature-sparsity coefficient.
    pub corr_threshold: f64,
    /// Spacing of the grid the learned function is written on.
    pub grid_step: f64,
}

impl Default for MetricSettings {
    fn default() -> Self {
        MetricSettings {
            kinks: KinkTolerances::default(),
            corr_threshold: 0.99,
            grid_step: 0.01,
        }
    }
}

/// A fully resolved ReLU-network run: what `config.toml` holds and `samlab run --config` replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReluRunConfig {
    /// `engine = "relu"` (absent in configs written before it existed).
    #[serde(default)]
    pub engine: ReluEngine,
    /// The training data.
    pub data: ReluData,
    /// Hidden neurons.
    pub width: usize,
    /// Whether the hidden layer has biases.
    pub bias: bool,
    /// Initialization.
    pub init: ReluInit,
    /// Seed of the initialization (NumPy `RandomState`).
    pub init_seed: u32,
    /// Optimizer and SAM settings.
    pub train: ReluTrainConfig,
    /// Measurement settings.
    #[serde(default)]
    pub metrics: MetricSettings,
}

/// The network measurements of summary.json and metrics.csv.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct NetMetrics {
    /// Kinks inside the training inputs' range (1D inputs only).
    pub kinks: Option<usize>,
    /// Distinct active neurons on the training inputs (SPEC §9).
    pub active_neurons: usize,
    /// Neurons active on at least one training input.
    pub alive_neurons: usize,
    /// The feature-sparsity coefficient (SPEC §9); null if not finite.
    #[serde(with = "nan_as_null")]
    pub feature_sparsity: f64,
    /// Fraction of non-zero activations; null if not finite.
    #[serde(with = "nan_as_null")]
    pub activation_fraction: f64,
}

/// One row of a ReLU run's metrics.csv: the losses and the network measurements after `iteration` updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReluMetricsRow {
    /// Updates done.
    pub iteration: usize,
    /// Training loss.
    pub train_loss: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Kinks inside the training inputs' range (1D inputs only; NaN in the file otherwise).
    pub kinks: Option<usize>,
    /// Distinct active neurons on the training inputs.
    pub active_neurons: usize,
    /// The feature-sparsity coefficient.
    pub feature_sparsity: f64,
    /// What the SAM step from here did (absent for ERM, at the last row, and in runs written before samlab
    /// logged it).
    pub sam: SamObservation,
}

impl MetricsRow for ReluMetricsRow {
    const COLUMNS: &'static [&'static str] = &[
        "iteration",
        "train_loss",
        "test_loss",
        "kinks",
        "active_neurons",
        "feature_sparsity",
        "sam_weight_norm",
        "sam_delta_norm",
        "sam_grad_cos",
        "sam_sharpness",
    ];
    /// Runs written before the SAM columns.
    const REQUIRED: usize = 6;

    fn values(&self) -> Vec<f64> {
        let mut v = vec![
            self.iteration as f64,
            self.train_loss,
            self.test_loss,
            self.kinks.map_or(f64::NAN, |k| k as f64),
            self.active_neurons as f64,
            self.feature_sparsity,
        ];
        v.extend(&self.sam.values()[..CurvePoint::SAM_COLUMNS]);
        v
    }

    fn from_values(v: &[f64]) -> Result<Self, &'static str> {
        Ok(ReluMetricsRow {
            iteration: count(v[0], "iteration")?,
            train_loss: v[1],
            test_loss: v[2],
            kinks: if v[3].is_nan() {
                None
            } else {
                Some(count(v[3], "kinks")?)
            },
            active_neurons: count(v[4], "active_neurons")?,
            feature_sparsity: v[5],
            sam: SamObservation::from_values(&v[6..]),
        })
    }
}

/// summary.json of a ReLU run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReluSummary {
    /// The samlab version that wrote it, `"relu"`, and whether the run finished or diverged.
    #[serde(flatten)]
    pub header: SummaryHeader,
    /// Updates done (the finite ones, if it diverged).
    pub iterations: usize,
    /// Whether the stop rule ended the run early.
    pub stopped_early: bool,
    /// Losses after the last update; null if the run diverged.
    pub final_train_loss: Option<f64>,
    /// Test loss after the last update.
    pub final_test_loss: Option<f64>,
    /// Last finite losses logged.
    pub last_finite_train_loss: Option<f64>,
    /// Last finite test loss logged.
    pub last_finite_test_loss: Option<f64>,
    /// Measurements of the final (last finite) network.
    #[serde(flatten)]
    pub metrics: NetMetrics,
    /// Hidden neurons.
    pub width: usize,
    /// The run's seed.
    pub seed: u32,
    /// Seconds in the training loop.
    pub seconds: f64,
    /// The SHA-256 of the run's [`ARTEFACTS`] (and of function.npy and function.csv where the run wrote them),
    /// checked whenever the run is read back; absent in runs written before samlab recorded them (read unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefacts_sha256: Option<BTreeMap<String, String>>,
}

/// The files of every ReLU run directory that reports judge, whose SHA-256 summary.json records.
pub const ARTEFACTS: [&str; 4] = ["metrics.csv", "W.npy", "b.npy", "a.npy"];
/// The learned function's files, written for d <= 2.
const FUNCTION_FILES: [&str; 2] = ["function.npy", "function.csv"];

/// The artefacts of the run directory `dir`: [`ARTEFACTS`] and the function's files it holds.
fn artefacts(dir: &Path) -> Vec<&'static str> {
    let present = FUNCTION_FILES.iter().filter(|f| dir.join(f).exists());
    ARTEFACTS.iter().chain(present).copied().collect()
}

/// A finished run: its outcome, summary, learned function and where it was written.
pub struct ReluOutcome {
    /// The trained run.
    pub run: ReluRun,
    /// Its summary.json.
    pub summary: ReluSummary,
    /// metrics.csv: losses and measurements at the logged iterations (same order as `run.curve`).
    pub rows: Vec<ReluMetricsRow>,
    /// The learned function on the grid: one row per point, the inputs then f (for d <= 2).
    pub function: Option<Array2<f64>>,
    /// Its run directory.
    pub dir: PathBuf,
}

impl ReluOutcome {
    /// Final train loss, NaN for a diverged run.
    pub fn train_loss(&self) -> f64 {
        self.summary.final_train_loss.unwrap_or(f64::NAN)
    }

    /// Final test loss, NaN for a diverged run.
    pub fn test_loss(&self) -> f64 {
        self.summary.final_test_loss.unwrap_or(f64::NAN)
    }
}

/// Measures `net` on the training inputs.
pub fn measure(net: &ReluNet, data: &Dataset, settings: &MetricSettings) -> NetMetrics {
    let stats = feature_stats(net, &data.x_train, settings.corr_threshold);
    let kink_count = (net.d() == 1).then(|| {
        let x = data.x_train.column(0);
        let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        kinks(net, lo, hi, &settings.kinks).map_or(0, |k| k.len())
    });
    NetMetrics {
        kinks: kink_count,
        active_neurons: stats.distinct,
        alive_neurons: stats.alive,
        feature_sparsity: stats.sparsity,
        activation_fraction: stats.activation_fraction,
    }
}

/// The learned function on a grid: for d = 1 the notebooks' `arange(min - 5 step, max + 5 step, step)`, for
/// d = 2 a 51 x 51 grid over the training inputs' bounding box; `None` for d > 2.
fn function_grid(net: &ReluNet, data: &Dataset, step: f64) -> Option<Array2<f64>> {
    let x = &data.x_train;
    let axis = |k: usize| x.column(k).iter().copied().collect::<Vec<f64>>();
    let points: Vec<Vec<f64>> = match net.d() {
        1 => plot_grid_1d(&axis(0), step)
            .into_iter()
            .map(|v| vec![v])
            .collect(),
        2 => {
            let span = |k: usize| {
                let v = axis(k);
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let h = ((hi - lo) / 50.0).max(f64::MIN_POSITIVE);
                arange(lo, hi + 0.5 * h, h)
            };
            let (g0, g1) = (span(0), span(1));
            g0.iter()
                .flat_map(|&a| g1.iter().map(move |&b| vec![a, b]))
                .collect()
        }
        _ => return None,
    };
    let flat: Vec<f64> = points.iter().flatten().copied().collect();
    let f = net.predict(&flat);
    let d = net.d();
    Some(Array2::from_shape_fn((points.len(), d + 1), |(i, k)| {
        if k < d {
            points[i][k]
        } else {
            f[i]
        }
    }))
}

/// Builds the initial network of `config` for `data` (input dimension from the data).
fn initial_net(config: &ReluRunConfig, data: &Dataset) -> Result<ReluNet> {
    Ok(ReluNet::init(
        &config.init,
        config.width,
        data.d(),
        config.bias,
        config.init_seed,
    )?)
}

impl RunConfig for ReluRunConfig {
    const ENGINE: &'static str = "relu";
    type Outcome = ReluOutcome;

    fn check(&self, _dir: &Path) -> Result<()> {
        prepare(self).map(drop)
    }

    /// A data directory's size is not read here (counted as one example).
    fn work(&self) -> f64 {
        let n = match &self.data {
            ReluData::TwelvePoints => 12,
            ReluData::TeacherStudent(t) => t.n,
            ReluData::Dir(_) => 1,
        };
        let batch = self.train.batch_size.unwrap_or(n);
        self.train.iters as f64 * batch as f64 * self.train.sam.passes()
    }

    /// Runs the config and writes the run directory `out`; `observer` counts updates.
    fn execute(&self, out: &Path, force: bool, observer: &mut dyn Observer) -> Result<ReluOutcome> {
        execute(self, out, force, observer)
    }

    /// The finished run (its artefacts checked against their recorded hashes).
    fn load(&self, dir: &Path) -> Result<ReluOutcome> {
        load(dir, self)
    }
}

fn execute(
    config: &ReluRunConfig,
    out: &Path,
    force: bool,
    observer: &mut dyn Observer,
) -> Result<ReluOutcome> {
    let (data, init) = prepare(config)?;
    let writer = RunDirWriter::create(out, force)?;
    let log_at = config.train.log.iterations(config.train.iters);
    let mut along: HashMap<usize, NetMetrics> = HashMap::new();
    let mut next = 0;
    let start = Instant::now();
    let mut counter = UpdateCounter::start(observer, config.train.iters);
    let run = relu::train(&data, &config.train, init, &mut |view| {
        if log_at.get(next) == Some(&view.t) {
            next += 1;
            along.insert(view.t, measure(view.net, &data, &config.metrics));
        }
        counter.update(view.t)
    })?;
    if run.status == RunStatus::Interrupted {
        bail!(Stopped {
            done: run.iterations,
            total: config.train.iters
        });
    }
    counter.finish(run.iterations);
    let seconds = start.elapsed().as_secs_f64();
    let final_metrics = measure(&run.net, &data, &config.metrics);
    along.insert(run.iterations, final_metrics);
    let mut summary = summarize(&run, final_metrics, config, seconds);
    let function = function_grid(&run.net, &data, config.metrics.grid_step);

    let dir = writer.path();
    write_toml(&dir.join("config.toml"), config)?;
    let rows: Vec<ReluMetricsRow> = run
        .curve
        .iter()
        .map(|p| (p, along[&p.iteration]))
        .map(|(p, m)| ReluMetricsRow {
            iteration: p.iteration,
            train_loss: p.train_loss,
            test_loss: p.test_loss,
            kinks: m.kinks,
            active_neurons: m.active_neurons,
            feature_sparsity: m.feature_sparsity,
            sam: p.sam,
        })
        .collect();
    write_rows(&dir.join("metrics.csv"), &rows)?;
    write_array(&dir.join("W.npy"), &run.net.hidden_weights())?;
    write_array(&dir.join("b.npy"), &Array1::from(run.net.biases().to_vec()))?;
    write_array(
        &dir.join("a.npy"),
        &Array1::from(run.net.output_weights().to_vec()),
    )?;
    if let Some(f) = &function {
        write_array(&dir.join("function.npy"), f)?;
        let header: Vec<String> = (0..data.d())
            .map(|k| {
                if data.d() == 1 {
                    "x".into()
                } else {
                    format!("x{k}")
                }
            })
            .chain(["f".to_string()])
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        write_csv(
            &dir.join("function.csv"),
            &header,
            f.rows().into_iter().map(|r| r.to_vec()),
        )?;
    }
    data.save_dir(dir)?;
    summary.artefacts_sha256 = Some(artefact_hashes(dir, &artefacts(dir))?);
    write_json(&dir.join("summary.json"), &summary)?;
    let dir = writer
        .commit()
        .with_context(|| format!("cannot move the finished run into {}", out.display()))?;
    Ok(ReluOutcome {
        run,
        summary,
        rows,
        function,
        dir,
    })
}

fn load(dir: &Path, config: &ReluRunConfig) -> Result<ReluOutcome> {
    let summary: ReluSummary = read_summary(dir, config)?;
    check_artefacts(dir, summary.artefacts_sha256.as_ref(), &artefacts(dir))?;
    let w: Array2<f64> = read_array(&dir.join("W.npy"))?;
    let b: Array1<f64> = read_array(&dir.join("b.npy"))?;
    let a: Array1<f64> = read_array(&dir.join("a.npy"))?;
    let net = ReluNet::from_parts(&w, &b.to_vec(), &a.to_vec(), config.bias)?;
    let rows: Vec<ReluMetricsRow> = read_rows(&dir.join("metrics.csv"))?;
    let curve = rows
        .iter()
        .map(|r| CurvePoint {
            sam: r.sam,
            ..CurvePoint::new(r.iteration, r.train_loss, r.test_loss)
        })
        .collect();
    let function_path = dir.join("function.npy");
    let function = if function_path.exists() {
        Some(read_array(&function_path)?)
    } else {
        None
    };
    Ok(ReluOutcome {
        run: ReluRun {
            net,
            curve,
            status: summary.header.status,
            iterations: summary.iterations,
            stopped_early: summary.stopped_early,
        },
        summary,
        rows,
        function,
        dir: dir.to_path_buf(),
    })
}

/// The data and initial network of `config`, after every check a run makes before touching the file system.
pub fn prepare(config: &ReluRunConfig) -> Result<(Dataset, ReluNet)> {
    let data = config.data.load()?;
    let init = initial_net(config, &data)?;
    config.train.lr.check()?;
    config.train.sam.check_applies()?;
    config
        .train
        .sam
        .check(config.train.batch_size.unwrap_or(data.n()))?;
    check_settings(config, &data)?;
    Ok((data, init))
}

fn check_settings(config: &ReluRunConfig, data: &Dataset) -> Result<()> {
    let m = &config.metrics;
    let bad = |field: &'static str, reason: String| -> Result<()> {
        Err(samlab_core::ConfigError::Invalid { field, reason }.into())
    };
    if !(m.grid_step.is_finite() && m.grid_step > 0.0) {
        return bad(
            "grid_step",
            format!("must be finite and > 0, got {}", m.grid_step),
        );
    }
    if data.d() == 1 {
        // The plotted function's grid: arange(min x - 5 step, max x + 5 step, step).
        let x = data.x_train.column(0);
        let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        samlab_core::limits::grid_len(
            "grid_step",
            lo - 5.0 * m.grid_step,
            hi + 5.0 * m.grid_step,
            m.grid_step,
            samlab_core::limits::MAX_GRID_POINTS,
        )?;
    }
    if !(m.kinks.merge.is_finite() && m.kinks.merge >= 0.0 && m.kinks.min_slope_change.is_finite())
    {
        return bad(
            "kink tolerances",
            format!(
                "need a finite merge distance >= 0 and a finite slope threshold, got {} and {}",
                m.kinks.merge, m.kinks.min_slope_change
            ),
        );
    }
    if !(0.0..=1.0).contains(&m.corr_threshold) {
        return bad(
            "corr_threshold",
            format!("must be in [0, 1], got {}", m.corr_threshold),
        );
    }
    Ok(())
}

fn summarize(
    run: &ReluRun,
    metrics: NetMetrics,
    config: &ReluRunConfig,
    seconds: f64,
) -> ReluSummary {
    let last = run.curve.last();
    let ok = run.status == RunStatus::Ok;
    ReluSummary {
        header: SummaryHeader::new(ReluRunConfig::ENGINE, run.status),
        iterations: run.iterations,
        stopped_early: run.stopped_early,
        final_train_loss: last.filter(|_| ok).map(|p| p.train_loss),
        final_test_loss: last.filter(|_| ok).map(|p| p.test_loss),
        last_finite_train_loss: last.map(|p| p.train_loss),
        last_finite_test_loss: last.map(|p| p.test_loss),
        metrics,
        width: config.width,
        seed: config.train.seed,
        seconds,
        artefacts_sha256: None,
    }
}
