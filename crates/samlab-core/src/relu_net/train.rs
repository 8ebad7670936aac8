//! The training loop: GD, SGD and every member of the SAM family on a [`ReluNet`], following [`SamConfig`] and
//! [`LrSchedule`] exactly as the diagonal-net engine does.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::model::{accumulate_grad, loss_sum, ReluNet, Shape};
use crate::ascent::{Ascent, Host, HostOracle, VariantState};
use crate::batches::Batches;
use crate::data::{row_major, Dataset};
use crate::diag_net::{CurvePoint, LogSchedule, RunStatus};
use crate::numpy_rng::NumpyRandomState;
use crate::sam::{CheckedSam, SamConfig};
use crate::schedule::LrSchedule;
use crate::ConfigError;

/// How per-example losses $\ell_i = (f(x_i) - y_i)^2/2$ are combined, for the objective, the SAM ascent of a
/// group and the logged losses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    /// $\sum_i \ell_i = \frac12 \sum_i (f(x_i) - y_i)^2$ (the 1D notebook's `0.5 * MSELoss(reduction='sum')`).
    #[default]
    Sum,
    /// $\frac1n \sum_i \ell_i$. (The sparse-features code minimises $\frac1n\sum_i (f - y)^2$, twice this: its
    /// step $\gamma$ is our $2\gamma$.)
    Mean,
}

impl LossReduction {
    /// The factor in front of $\sum_{i \in S} \ell_i$ for a set of `size` examples.
    pub fn factor(self, size: usize) -> f64 {
        match self {
            LossReduction::Sum => 1.0,
            LossReduction::Mean => 1.0 / size.max(1) as f64,
        }
    }
}

/// Which loss the stopping test reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOn {
    /// The batch loss at the current parameters (before the update).
    Clean,
    /// The batch loss at the points the descent gradient is taken at: the perturbed points under SAM (what the
    /// authors' 1D notebook tests in its SAM branch), the current parameters otherwise.
    Descent,
}

/// Stop once an update's batch loss (before the update) is at most `below`: that update is the last one done.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRule {
    /// Loss threshold.
    pub below: f64,
    /// Which loss is compared.
    pub on: StopOn,
}

/// Training settings of the ReLU-network engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReluTrainConfig {
    /// Step size (a number, or a schedule table).
    pub lr: LrSchedule,
    /// Maximum number of updates.
    pub iters: usize,
    /// Mini-batch size for SGD, drawn uniformly with replacement; `None` is full batch.
    pub batch_size: Option<usize>,
    /// Seed of the SGD sampling and random perturbations (NumPy `RandomState` stream).
    pub seed: u32,
    /// The SAM variant.
    pub sam: SamConfig,
    /// Sum or mean of the per-example losses.
    #[serde(default)]
    pub loss: LossReduction,
    /// Optional early stop on a small loss.
    #[serde(default)]
    pub stop: Option<StopRule>,
    /// Which iterations are logged.
    #[serde(default)]
    pub log: LogSchedule,
}

/// What the observer of [`train`] sees before update `t` (0-based) is applied.
pub struct ReluStepView<'a> {
    /// Updates done so far.
    pub t: usize,
    /// The network before the update.
    pub net: &'a ReluNet,
    /// Step size of this update.
    pub lr: f64,
    /// Radius of this update (0 when SAM is off).
    pub rho: f64,
    /// Examples of this update's batch.
    pub batch: &'a [usize],
}

/// The outcome of [`train`].
#[derive(Clone, Debug)]
pub struct ReluRun {
    /// Final network; for a diverged run, the last one with finite parameters.
    pub net: ReluNet,
    /// Losses at the logged iterations, the last update included (up to the divergence, if any).
    pub curve: Vec<CurvePoint>,
    /// Ok or diverged.
    pub status: RunStatus,
    /// Updates done.
    pub iterations: usize,
    /// Whether the stop rule ended the run before `iters`.
    pub stopped_early: bool,
}

/// Scratch buffers of the parameter length, reused by every step (the loop allocates nothing).
struct Scratch {
    /// Descent accumulator.
    acc: Vec<f64>,
    /// The SAM step's scratch.
    ascent: Ascent<Host>,
    /// The variant's state.
    state: VariantState<Vec<f64>>,
    /// Next parameters (swapped in only when finite).
    next: Vec<f64>,
    /// Per-neuron scratch of the gradient kernel.
    pre: Vec<f64>,
}

/// The training set in flat form.
struct Flat<'a> {
    x: Cow<'a, [f64]>,
    y: &'a [f64],
    x_test: Cow<'a, [f64]>,
    y_test: &'a [f64],
}

impl Flat<'_> {
    fn curve_point(
        &self,
        t: usize,
        net: &ReluNet,
        reduction: LossReduction,
        pre: &mut [f64],
    ) -> CurvePoint {
        let s = net.shape();
        let (n, n_test) = (self.y.len(), self.y_test.len());
        CurvePoint {
            iteration: t,
            train_loss: reduction.factor(n) * loss_sum(s, &net.theta, &self.x, self.y, 0..n, pre),
            test_loss: reduction.factor(n_test)
                * loss_sum(s, &net.theta, &self.x_test, self.y_test, 0..n_test, pre),
        }
    }
}

/// Trains `init` on `data` and returns the final network and the loss curve.
///
/// Every update follows [`SamConfig`]: the batch (all examples in order, or `batch_size` draws with replacement)
/// is split into groups of `m`; each group gets its own perturbation from `ascent_steps` steps of (normalized,
/// $+10^{-12}$; unnormalized; or clipped) ascent on the group loss, projected onto the $\rho$-ball unless
/// unnormalized, optionally from a random point on the sphere, on the same or the previous batch, or Gaussian
/// noise for the random baseline; the descent gradient adds each example's gradient at its group's point.
/// `observer` sees every update before it is applied. A run whose loss or parameters become non-finite stops
/// with [`RunStatus::Diverged`] and the last finite network.
pub fn train(
    data: &Dataset,
    config: &ReluTrainConfig,
    init: ReluNet,
    observer: &mut dyn FnMut(&ReluStepView),
) -> Result<ReluRun, ConfigError> {
    let (n, d) = (data.n(), data.d());
    if init.d() != d {
        return Err(ConfigError::Invalid {
            field: "init",
            reason: format!(
                "the network takes {}-dimensional inputs but the data has d = {d}",
                init.d()
            ),
        });
    }
    config.lr.check()?;
    let batch_size = config.batch_size.unwrap_or(n);
    if batch_size == 0 || n == 0 {
        return Err(ConfigError::Invalid {
            field: "batch_size",
            reason: format!(
                "needs at least one example per batch, got batch {batch_size} of n = {n}"
            ),
        });
    }
    let row = init.d().max(init.width());
    crate::limits::product(
        "batch_size",
        &[batch_size, row],
        crate::limits::MAX_ELEMENTS,
    )?;
    if let Some(stop) = config.stop {
        if !stop.below.is_finite() {
            return Err(ConfigError::Invalid {
                field: "stop",
                reason: format!("threshold must be finite, got {}", stop.below),
            });
        }
    }
    let sam = config.sam.check(batch_size)?;
    sam.check_selection(n, batch_size)?;
    sam.require_layers("ReLU-net engine", false, false)?;
    let flat = Flat {
        x: row_major(&data.x_train),
        y: data.y_train.as_slice().expect("1-D arrays are contiguous"),
        x_test: row_major(&data.x_test),
        y_test: data.y_test.as_slice().expect("1-D arrays are contiguous"),
    };
    let mut rng = NumpyRandomState::new(config.seed);
    let mut net = init;
    let len = net.theta.len();
    let mut w = Scratch {
        acc: vec![0.0; len],
        ascent: Ascent::new(&vec![0.0; len]),
        state: VariantState::default(),
        next: vec![0.0; len],
        pre: vec![0.0; net.width()],
    };
    let mut batches = Batches::new(n, config.batch_size);
    let log_at = config.log.iterations(config.iters);
    let mut next_log = 0;
    let mut curve = Vec::with_capacity(log_at.len() + 1);
    let log = |t: usize, net: &ReluNet, pre: &mut [f64], curve: &mut Vec<CurvePoint>| {
        let point = flat.curve_point(t, net, config.loss, pre);
        let finite = point.train_loss.is_finite() && point.test_loss.is_finite();
        if finite {
            curve.push(point);
        }
        finite
    };
    let stepper = Stepper {
        flat: &flat,
        sam: &sam,
        shape: net.shape(),
        reduction: config.loss,
        stop_on: config.stop.map(|s| s.on),
    };

    for t in 0..=config.iters {
        if log_at.get(next_log) == Some(&t) {
            next_log += 1;
            if !log(t, &net, &mut w.pre, &mut curve) {
                return Ok(finish(net, curve, RunStatus::Diverged, t, false));
            }
        }
        if t == config.iters {
            break;
        }
        let (batch, ascent_rows) = batches.advance(t, &mut rng, sam.config().ascent_source);
        let (lr, rho) = sam.lr_rho_at(&config.lr, t, config.iters);
        observer(&ReluStepView {
            t,
            net: &net,
            lr,
            rho,
            batch,
        });
        let batch_loss = stepper.step(rho, lr, batch, ascent_rows, &net.theta, &mut w, &mut rng);
        if !(batch_loss.is_finite() && w.next.iter().all(|v| v.is_finite())) {
            return Ok(finish(net, curve, RunStatus::Diverged, t, false));
        }
        std::mem::swap(&mut net.theta, &mut w.next);
        if config.stop.is_some_and(|s| batch_loss <= s.below) {
            if !log(t + 1, &net, &mut w.pre, &mut curve) {
                return Ok(finish(net, curve, RunStatus::Diverged, t + 1, true));
            }
            return Ok(finish(
                net,
                curve,
                RunStatus::Ok,
                t + 1,
                t + 1 < config.iters,
            ));
        }
    }
    Ok(finish(net, curve, RunStatus::Ok, config.iters, false))
}

fn finish(
    net: ReluNet,
    curve: Vec<CurvePoint>,
    status: RunStatus,
    iterations: usize,
    stopped_early: bool,
) -> ReluRun {
    ReluRun {
        net,
        curve,
        status,
        iterations,
        stopped_early,
    }
}

/// What every step needs besides the parameters.
struct Stepper<'a> {
    flat: &'a Flat<'a>,
    sam: &'a CheckedSam,
    shape: Shape,
    reduction: LossReduction,
    stop_on: Option<StopOn>,
}

impl Stepper<'_> {
    /// One update of `theta` into `w.next`; returns the batch loss the stop rule reads (NaN when there is none).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        rho: f64,
        lr: f64,
        batch: &[usize],
        ascent_rows: &[usize],
        theta: &Vec<f64>,
        w: &mut Scratch,
        rng: &mut NumpyRandomState,
    ) -> f64 {
        w.acc.fill(0.0);
        let mut oracle = ReluOracle {
            stepper: self,
            pre: &mut w.pre,
            dim: theta.len(),
        };
        let m = if rho == 0.0 {
            batch.len()
        } else {
            self.sam.group_size()
        };
        let mut descent_loss = 0.0;
        for (group, ascent_group) in batch.chunks(m).zip(ascent_rows.chunks(m)) {
            descent_loss += w.ascent.group(
                &mut oracle,
                self.sam.config(),
                rho,
                theta,
                group,
                ascent_group,
                &mut w.state,
                rng,
                &mut w.acc,
            );
        }
        let c = -lr * self.reduction.factor(batch.len());
        for ((next, t), g) in w.next.iter_mut().zip(theta).zip(&w.acc) {
            *next = t + c * g;
        }
        let batch_loss = match self.stop_on {
            None => return 0.0,
            Some(StopOn::Clean) if rho != 0.0 => loss_sum(
                self.shape,
                theta,
                &self.flat.x,
                self.flat.y,
                batch.iter().copied(),
                &mut w.pre,
            ),
            Some(_) => descent_loss,
        };
        self.reduction.factor(batch.len()) * batch_loss
    }
}

/// The ReLU net as an [`Oracle`] over its parameter vector $\theta$; without biases their block is frozen.
struct ReluOracle<'a, 'b> {
    stepper: &'a Stepper<'b>,
    pre: &'a mut Vec<f64>,
    dim: usize,
}

impl HostOracle for ReluOracle<'_, '_> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64 {
        let s = self.stepper;
        out.fill(0.0);
        accumulate_grad(s.shape, w, &s.flat.x, s.flat.y, rows, scale, out, self.pre)
    }

    fn losses(&mut self, w: &[f64], rows: &[usize], out: &mut [f64]) {
        let s = self.stepper;
        for (o, &i) in out.iter_mut().zip(rows) {
            *o = loss_sum(
                s.shape,
                w,
                &s.flat.x,
                s.flat.y,
                std::iter::once(i),
                self.pre,
            );
        }
    }

    fn ascent_scale(&self, rows: usize) -> f64 {
        self.stepper.reduction.factor(rows)
    }

    fn frozen(&self) -> std::ops::Range<usize> {
        let s = self.stepper.shape;
        if s.bias {
            0..0
        } else {
            s.d * s.width..(s.d + 1) * s.width
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relu_net::data::{twelve_points, TeacherStudent};
    use crate::relu_net::metrics::{kinks, KinkTolerances};
    use crate::relu_net::model::ReluInit;
    use crate::sam::{ActiveWindow, AscentSource, Grouping, Normalization, Perturbation};
    use crate::schedule::{LrShape, Warmup};

    fn blanc(seed: u32) -> ReluNet {
        ReluNet::init(&ReluInit::Blanc { scale: 1.0 }, 100, 1, true, seed).unwrap()
    }

    fn config(lr: f64, iters: usize, sam: SamConfig) -> ReluTrainConfig {
        ReluTrainConfig {
            lr: LrSchedule::constant(lr),
            iters,
            batch_size: None,
            seed: 0,
            sam,
            loss: LossReduction::Sum,
            stop: None,
            log: LogSchedule::Ends,
        }
    }

    fn run(config: &ReluTrainConfig, init: ReluNet) -> ReluRun {
        train(&twelve_points(), config, init, &mut |_| {}).unwrap()
    }

    fn normalized(rho: f64, grouping: Grouping) -> SamConfig {
        SamConfig {
            normalization: Normalization::Normalized,
            ..SamConfig::usam(rho, grouping)
        }
    }

    fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
        assert!(
            ((got - want) / want).abs() <= tol,
            "{what}: got {got:e}, want {want:e}"
        );
    }

    /// `(train loss, sum of all parameters, updates, kinks)` from bench/relu_reference.py (independent NumPy).
    fn check(r: &ReluRun, want: (f64, f64, usize, Option<usize>), tol: f64, what: &str) {
        assert_eq!(r.status, RunStatus::Ok, "{what}");
        assert_eq!(r.iterations, want.2, "{what}");
        assert_rel(r.curve.last().unwrap().train_loss, want.0, tol, what);
        assert_rel(r.net.params().iter().sum(), want.1, tol, what);
        if let Some(k) = want.3 {
            let x = crate::relu_net::data::twelve_point_inputs();
            let count = kinks(&r.net, x[0], x[11], &KinkTolerances::default())
                .unwrap()
                .len();
            assert_eq!(count, k, "{what}");
        }
    }

    #[test]
    fn matches_numpy_reference() {
        let gd = run(&config(5e-5, 2000, SamConfig::erm()), blanc(0));
        check(
            &gd,
            (0.556814920209392, -13.36866605807694, 2000, Some(36)),
            1e-9,
            "gd",
        );

        let mut c = config(5e-5, 2000, normalized(0.3, Grouping::WholeBatch));
        c.lr.shape = LrShape::LinearDecay;
        let r = run(&c, blanc(0));
        check(
            &r,
            (1.259705756471614, -27.547916721439993, 2000, Some(41)),
            1e-9,
            "n-SAM",
        );

        let r = run(
            &config(5e-5, 2000, SamConfig::usam(1e-3, Grouping::Size(1))),
            blanc(0),
        );
        check(
            &r,
            (0.13441286211915485, -38.03874997045708, 2000, Some(41)),
            1e-9,
            "1-SAM",
        );

        let clipped = SamConfig {
            normalization: Normalization::Clipped,
            ascent_steps: 3,
            ascent_step_mult: 0.5,
            ..SamConfig::usam(0.05, Grouping::Size(4))
        };
        let r = run(&config(5e-5, 1000, clipped), blanc(0));
        check(
            &r,
            (8.503555526709784, -14.085289676458636, 1000, Some(41)),
            1e-9,
            "m-SAM",
        );

        let mut c = config(4e-4, 3000, SamConfig::erm());
        c.batch_size = Some(2);
        c.seed = 1;
        c.loss = LossReduction::Mean;
        c.lr.shape = LrShape::Step {
            at: vec![0.3],
            factors: vec![0.25],
        };
        c.lr.warmup = Warmup::Linear { steps: 100 };
        let r = run(&c, blanc(0));
        check(
            &r,
            (0.12432052084721737, -12.785756898184367, 3000, Some(42)),
            1e-9,
            "SGD",
        );

        let (data, _) = TeacherStudent::PAPER.generate().unwrap();
        let want_y = [
            0.20675061405725015,
            0.9886146789778149,
            -0.07221556570467469,
        ];
        for (got, want) in data.y_train.iter().zip(want_y) {
            assert_rel(*got, want, 1e-14, "teacher labels");
        }
        let student = ReluInit::Gaussian {
            w_scale: 0.5,
            a_scale: 0.0,
        };
        let mut c = config(0.26, 3000, SamConfig::erm());
        c.batch_size = Some(1);
        c.loss = LossReduction::Mean;
        let init = ReluNet::init(&student, 20, 2, false, 0).unwrap();
        let r = train(&data, &c, init, &mut |_| {}).unwrap();
        check(
            &r,
            (0.00030924270161482206, 6.896177313121862, 3000, None),
            1e-9,
            "teacher-student",
        );
    }

    #[test]
    fn stop_rules_match_numpy_reference() {
        let mut c = config(5e-5, 1_000_000, SamConfig::erm());
        c.stop = Some(StopRule {
            below: 0.5,
            on: StopOn::Clean,
        });
        let r = run(&c, blanc(0));
        assert!(r.stopped_early);
        check(
            &r,
            (0.4993833358613401, -13.39206700281953, 2139, Some(36)),
            1e-9,
            "gd stop",
        );
        // The notebook's SAM branch: stop on the loss at the perturbed point (here after ~1.3e5 updates).
        let mut c = config(5e-5, 1_000_000, normalized(0.3, Grouping::WholeBatch));
        c.stop = Some(StopRule {
            below: 2.0,
            on: StopOn::Descent,
        });
        let r = run(&c, blanc(0));
        check(
            &r,
            (0.08184375110674329, -153.79745833100526, 125101, Some(19)),
            1e-6,
            "n-SAM stop",
        );
    }

    /// One SAM step against a hand computation from the gradient kernel's definition: two neurons, three points.
    #[test]
    fn one_sam_step_by_hand() {
        let w = ndarray::Array2::from_shape_vec((2, 1), vec![1.0, -1.0]).unwrap();
        let net = ReluNet::from_parts(&w, &[0.5, 0.25], &[2.0, -1.0], true).unwrap();
        let data = crate::data::Dataset {
            x_train: ndarray::Array2::from_shape_vec((3, 1), vec![-1.0, 0.0, 1.0]).unwrap(),
            y_train: ndarray::Array1::from(vec![0.0, 1.0, 2.0]),
            x_test: ndarray::Array2::zeros((1, 1)),
            y_test: ndarray::Array1::zeros(1),
        };
        // theta = (w1, w2, b1, b2, a1, a2); f(x) = a1 relu(w1 x + b1) + a2 relu(w2 x + b2).
        let grad = |th: [f64; 6]| -> [f64; 6] {
            let mut g = [0.0; 6];
            for (x, y) in [(-1.0, 0.0), (0.0, 1.0), (1.0, 2.0)] {
                let (p1, p2) = (th[0] * x + th[2], th[1] * x + th[3]);
                let r = th[4] * p1.max(0.0) + th[5] * p2.max(0.0) - y;
                let (m1, m2) = (f64::from(p1 > 0.0), f64::from(p2 > 0.0));
                let step = [
                    r * th[4] * m1 * x,
                    r * th[5] * m2 * x,
                    r * th[4] * m1,
                    r * th[5] * m2,
                    r * p1.max(0.0),
                    r * p2.max(0.0),
                ];
                for k in 0..6 {
                    g[k] += step[k];
                }
            }
            g
        };
        let theta = [1.0, -1.0, 0.5, 0.25, 2.0, -1.0];
        let (rho, lr) = (0.1, 0.01);
        let g = grad(theta);
        let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut point = theta;
        for k in 0..6 {
            point[k] += rho * g[k] / gnorm;
        }
        let gp = grad(point);
        let want: Vec<f64> = (0..6).map(|k| theta[k] - lr * gp[k]).collect();
        let r = train(
            &data,
            &config(lr, 1, normalized(rho, Grouping::WholeBatch)),
            net,
            &mut |_| {},
        )
        .unwrap();
        for (got, want) in r.net.params().iter().zip(&want) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
    }

    #[test]
    fn degenerate_sam_settings_equal_their_simpler_twins_exactly() {
        let gd = run(&config(5e-5, 300, SamConfig::erm()), blanc(1));
        let zero = run(
            &config(5e-5, 300, normalized(0.0, Grouping::Size(1))),
            blanc(1),
        );
        assert_eq!(gd.net, zero.net);
        let closed = SamConfig {
            window: ActiveWindow {
                start: 1.0,
                end: 1.0,
            },
            ..normalized(0.3, Grouping::Size(3))
        };
        assert_eq!(run(&config(5e-5, 300, closed), blanc(1)).net, gd.net);
        let whole = run(
            &config(5e-5, 300, normalized(0.3, Grouping::WholeBatch)),
            blanc(1),
        );
        let m_is_n = run(
            &config(5e-5, 300, normalized(0.3, Grouping::Size(12))),
            blanc(1),
        );
        assert_eq!(whole.net, m_is_n.net);
        assert_ne!(whole.net, gd.net);
    }

    /// The variants run on the ReLU net through the same oracle: at their reducing options they train exactly as
    /// plain normalized SAM (full batch, mini-batches, groups of 3), and otherwise differ from it; a network without
    /// biases keeps its bias block at 0 under every variant.
    #[test]
    fn variants_at_their_reducing_options_are_plain_sam_exactly() {
        use crate::sam::Variant;
        let moving = [
            Variant::Asam { eta: 0.01 },
            Variant::Gsam { alpha: 0.3 },
            Variant::FisherSam { eta: 10.0 },
            Variant::Fsam {
                sigma: 1.0,
                lambda: 0.6,
            },
            Variant::Vasso { theta: 0.4 },
            Variant::LookSam { k: 3, alpha: 0.7 },
            Variant::Esam {
                beta: 0.6,
                gamma: 0.5,
            },
        ];
        // Every variant the analytic engines run but plain SAM, in the table's order.
        let analytic = crate::sam::VARIANTS
            .iter()
            .filter(|r| r.needs == crate::sam::Needs::Gradients && r.default != Variant::Sam);
        assert!(moving
            .iter()
            .map(|v| v.label())
            .eq(analytic.map(|r| r.label)));
        for batch_size in [None, Some(6)] {
            for grouping in [Grouping::WholeBatch, Grouping::Size(3)] {
                let sam = |variant| SamConfig {
                    variant,
                    ..normalized(0.3, grouping)
                };
                let train_with = |variant, bias| {
                    let mut c = config(5e-5, 200, sam(variant));
                    c.batch_size = batch_size;
                    let init =
                        ReluNet::init(&ReluInit::Blanc { scale: 1.0 }, 100, 1, bias, 1).unwrap();
                    train(&twelve_points(), &c, init, &mut |_| {})
                };
                let plain = train_with(Variant::Sam, true).unwrap();
                for v in crate::ascent::reducing() {
                    match train_with(v, true) {
                        Ok(r) => assert_eq!(r.net, plain.net, "{v:?} {grouping:?} {batch_size:?}"),
                        Err(e) => assert!(
                            v.is_stateful() && grouping != Grouping::WholeBatch,
                            "{v:?}: {e}"
                        ),
                    }
                }
                for v in moving {
                    let full_batch_selection = matches!(v, Variant::Esam { .. })
                        && batch_size.is_none()
                        && grouping == Grouping::WholeBatch;
                    let Ok(r) = train_with(v, false) else {
                        assert!(
                            full_batch_selection
                                || (v.is_stateful() && grouping != Grouping::WholeBatch),
                            "{v:?} refused"
                        );
                        continue;
                    };
                    assert!(
                        r.net.biases().iter().all(|&b| b == 0.0),
                        "{v:?}: biases moved"
                    );
                    assert_ne!(train_with(v, true).unwrap().net, plain.net, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn runs_are_deterministic_and_seeded() {
        let sgd = |seed, random| {
            let sam = SamConfig {
                perturbation: if random {
                    Perturbation::Random
                } else {
                    Perturbation::Ascent
                },
                random_init: !random,
                ascent_steps: 2,
                ..normalized(0.1, Grouping::Size(2))
            };
            let mut c = config(1e-4, 500, sam);
            c.batch_size = Some(4);
            c.seed = seed;
            run(&c, blanc(2))
        };
        for random in [false, true] {
            let a = sgd(3, random);
            assert_eq!(a.net, sgd(3, random).net);
            assert_ne!(a.net, sgd(4, random).net);
            assert_eq!(a.status, RunStatus::Ok);
        }
        let prev = SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..normalized(0.1, Grouping::WholeBatch)
        };
        let mut c = config(1e-4, 200, prev);
        c.batch_size = Some(3);
        let mut same = c.clone();
        same.sam.ascent_source = AscentSource::SameBatch;
        assert_ne!(run(&c, blanc(0)).net, run(&same, blanc(0)).net);
    }

    #[test]
    fn divergence_is_a_status_with_the_curve_and_last_finite_network_kept() {
        let mut c = config(0.05, 10_000, SamConfig::erm());
        c.log = LogSchedule::Notebook;
        let r = run(&c, blanc(0));
        assert_eq!(r.status, RunStatus::Diverged);
        assert!(r.iterations < 10_000);
        assert!(r.net.is_finite());
        assert!(!r.curve.is_empty());
        assert!(r.curve.iter().all(|p| p.train_loss.is_finite()));
    }

    #[test]
    fn observer_sees_every_update_and_logs_end_at_the_stop() {
        let mut seen = vec![];
        let mut c = config(1e-5, 100, SamConfig::erm());
        c.lr.shape = LrShape::LinearDecay;
        c.log = LogSchedule::Notebook;
        let r = train(&twelve_points(), &c, blanc(0), &mut |v| {
            seen.push((v.t, v.lr, v.batch.len()))
        })
        .unwrap();
        assert_eq!(seen.len(), 100);
        assert_eq!((seen[10].0, seen[10].2), (10, 12));
        assert!((seen[10].1 - 0.9e-5).abs() < 1e-20);
        assert_eq!(r.curve.len(), 101);
        assert_eq!(r.curve.last().unwrap().iteration, 100);
        assert!(!r.stopped_early);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let data = twelve_points();
        let c = config(-1.0, 10, SamConfig::erm());
        assert!(train(&data, &c, blanc(0), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("lr"));
        let c = config(0.1, 10, SamConfig::usam(0.1, Grouping::Size(5)));
        assert!(train(&data, &c, blanc(0), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("divide"));
        let two_d = ReluNet::init(&ReluInit::He, 4, 2, true, 0).unwrap();
        let c = config(0.1, 10, SamConfig::erm());
        assert!(train(&data, &c, two_d, &mut |_| {}).is_err());
        let mut c = config(0.1, 10, SamConfig::erm());
        c.stop = Some(StopRule {
            below: f64::NAN,
            on: StopOn::Clean,
        });
        assert!(train(&data, &c, blanc(0), &mut |_| {}).is_err());
    }
}
