//! The training loop: GD, SGD and every member of the SAM family on a [`ReluNet`], following [`SamConfig`] and
//! [`LrSchedule`] exactly as the diagonal-net engine does.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::model::{accumulate_grad, loss_sum, ReluNet, Shape};
use samlab_core::ascent::{Ascent, Host, HostOracle, ObservationMean, Space, VariantState};
use samlab_core::batches::Batches;
use samlab_core::data::{row_major, Dataset};
use samlab_core::numpy_rng::NumpyRandomState;
use samlab_core::run::{CurvePoint, LogSchedule, RunStatus};
use samlab_core::sam::{CheckedSam, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_core::ConfigError;

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
    /// Losses at the logged iterations, the last update included (up to the divergence, if any), each with what
    /// the SAM step from there did.
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
        CurvePoint::new(
            t,
            reduction.factor(n) * loss_sum(s, &net.theta, &self.x, self.y, 0..n, pre),
            reduction.factor(n_test)
                * loss_sum(s, &net.theta, &self.x_test, self.y_test, 0..n_test, pre),
        )
    }
}

/// Trains `init` on `data` and returns the final network and the loss curve.
///
/// Every update follows [`SamConfig`]: the batch (all examples in order, or `batch_size` draws with replacement)
/// is split into groups of `m`; each group gets its own perturbation from `ascent_steps` steps of (normalized,
/// $+10^{-12}$; unnormalized; or clipped) ascent on the group loss, projected onto the $\rho$-ball unless
/// unnormalized, optionally from a random point on the sphere, on the same or the previous batch, or Gaussian
/// noise for the random baseline; the descent gradient adds each example's gradient at its group's point.
/// `observer` sees every update before it is applied and says whether to go on: false stops the run there with
/// [`RunStatus::Interrupted`]. A run whose loss or parameters become non-finite stops with
/// [`RunStatus::Diverged`] and the last finite network.
pub fn train(
    data: &Dataset,
    config: &ReluTrainConfig,
    init: ReluNet,
    observer: &mut dyn FnMut(&ReluStepView) -> bool,
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
    samlab_core::limits::product(
        "batch_size",
        &[batch_size, row],
        samlab_core::limits::MAX_ELEMENTS,
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
        // The step from a logged point is observed.
        let logged = log_at.get(next_log) == Some(&t);
        if logged {
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
        let go_on = observer(&ReluStepView {
            t,
            net: &net,
            lr,
            rho,
            batch,
        });
        if !go_on {
            return Ok(finish(net, curve, RunStatus::Interrupted, t, false));
        }
        let mut observed = ObservationMean::default();
        let batch_loss = stepper.step(
            (rho, lr),
            (batch, ascent_rows),
            &net.theta,
            &mut w,
            &mut rng,
            logged.then_some(&mut observed),
        );
        if let (true, Some(point)) = (logged, curve.last_mut()) {
            point.sam = observed.mean();
        }
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
    /// With `observe`, each SAM group's observation is added to it, from the step's own passes (the update is the
    /// same either way).
    fn step(
        &self,
        (rho, lr): (f64, f64),
        (batch, ascent_rows): (&[usize], &[usize]),
        theta: &Vec<f64>,
        w: &mut Scratch,
        rng: &mut NumpyRandomState,
        observe: Option<&mut ObservationMean>,
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
        let mut observe = observe.map(|mean| (mean, Host::norm(theta)));
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
            if let Some((mean, weight_norm)) = observe.as_mut() {
                if let Some(parts) = w.ascent.group_parts() {
                    mean.add(&parts.observation(*weight_norm));
                }
            }
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
mod tests;
