//! Diagonal linear networks $\beta = u \odot v$ trained by any member of the SAM family, in f64.
//!
//! Loss $L(\beta) = \lVert X\beta - y \rVert^2 / (2n)$, per-example loss $\ell_i = r_i^2/2$ with residual
//! $r_i = x_i^\top \beta - y_i$. The gradient of a group loss $\frac{1}{m}\sum_{i\in G} \ell_i$ is
//! $(g \odot v,\; g \odot u)$ with $g = \frac{1}{m}\sum_{i \in G} r_i x_i$, so every step costs $O(B d)$ per
//! ascent step, whatever the group size: 1-SAM is one pass over the batch, not $B$ passes.
//! Updates are simultaneous: both gradients use the old $(u, v)$ (SPEC §2.3).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use samlab_core::ascent::{
    Ascent, GroupParts, Host, HostOracle, ObservationMean, Space, VariantState,
};
use samlab_core::batches::Batches;
use samlab_core::data::{row_major, Dataset};
use samlab_core::numpy_rng::NumpyRandomState;
use samlab_core::run::{CurvePoint, LogSchedule, RunStatus};
use samlab_core::sam::{CheckedSam, Normalization, Perturbation, SamConfig};
use samlab_core::schedule::LrSchedule;
use samlab_core::ConfigError;

/// The two factors of a diagonal linear network.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagParams {
    /// First factor.
    pub u: Vec<f64>,
    /// Second factor.
    pub v: Vec<f64>,
}

impl DiagParams {
    /// The paper's initialization $u_0 = \alpha \mathbf{1}$, $v_0 = 0$ (so $\beta_0 = 0$).
    pub fn init(alpha: f64, d: usize) -> Self {
        DiagParams {
            u: vec![alpha; d],
            v: vec![0.0; d],
        }
    }

    /// The linear predictor $\beta = u \odot v$.
    pub fn beta(&self) -> Vec<f64> {
        self.u.iter().zip(&self.v).map(|(u, v)| u * v).collect()
    }

    /// The effective initialization $\alpha_{\mathrm{eff}} = \sqrt{u^2 - v^2}$ (conserved by gradient flow;
    /// SAM shrinks it, Theorem 1). Negative $u^2 - v^2$ (never seen in practice) is clamped to 0.
    pub fn alpha_eff(&self) -> Vec<f64> {
        self.u
            .iter()
            .zip(&self.v)
            .map(|(u, v)| (u * u - v * v).max(0.0).sqrt())
            .collect()
    }

    fn is_finite(&self) -> bool {
        self.u.iter().chain(&self.v).all(|x| x.is_finite())
    }
}

/// Training settings of the analytic engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagTrainConfig {
    /// Step size $\gamma$ (a number, or a schedule table).
    pub lr: LrSchedule,
    /// Number of updates.
    pub iters: usize,
    /// Mini-batch size for SGD, drawn uniformly with replacement; `None` is full batch (GD).
    pub batch_size: Option<usize>,
    /// Seed of the SGD sampling and random perturbations (NumPy `RandomState` stream).
    pub seed: u32,
    /// The SAM variant.
    pub sam: SamConfig,
    /// Which iterations are logged.
    #[serde(default)]
    pub log: LogSchedule,
}

/// The outcome of [`train`].
#[derive(Clone, Debug)]
pub struct DiagRun {
    /// Final parameters (the last finite ones if the run diverged).
    pub params: DiagParams,
    /// Losses at the logged iterations (up to the divergence, if any), each with what the SAM step from there did.
    pub curve: Vec<CurvePoint>,
    /// Ok or diverged.
    pub status: RunStatus,
    /// Updates done (the iteration at which the run diverged, if it did).
    pub iterations: usize,
}

/// What the observer of [`train`] sees before update `t` (0-based) is applied.
pub struct StepView<'a> {
    /// Updates done so far.
    pub t: usize,
    /// Parameters before the update.
    pub params: &'a DiagParams,
    /// Step size of this update.
    pub lr: f64,
    /// Radius of this update (0 when SAM is off).
    pub rho: f64,
    /// Examples of this update's batch.
    pub batch: &'a [usize],
}

/// The loss $\lVert X\beta - y\rVert^2/(2n)$ of `beta` on rows `x` (row-major, `y.len()` rows).
pub fn loss(x: &[f64], y: &[f64], beta: &[f64]) -> f64 {
    let sum: f64 = x
        .chunks_exact(beta.len())
        .zip(y)
        .map(|(row, yi)| {
            let r = dot(row, beta) - yi;
            r * r
        })
        .sum();
    sum / (2 * y.len()) as f64
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a4.zip(b4) {
        for k in 0..4 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// $(\sum_j x_j^2 a_j, \sum_j x_j^3 b_j)$ in one pass, summed in the lanes of [`dot`]: bit for bit the dot
/// products of stored squares and cubes, without storing them.
#[inline(always)]
fn dot_square_cube(x: &[f64], a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut la, mut lb) = ([0.0; 4], [0.0; 4]);
    let (x4, a4, b4) = (x.chunks_exact(4), a.chunks_exact(4), b.chunks_exact(4));
    let (mut ta, mut tb) = (0.0, 0.0);
    for ((&v, &p), &q) in x4
        .remainder()
        .iter()
        .zip(a4.remainder())
        .zip(b4.remainder())
    {
        let v2 = v * v;
        ta += v2 * p;
        tb += v2 * v * q;
    }
    for ((cx, ca), cb) in x4.zip(a4).zip(b4) {
        for k in 0..4 {
            let v2 = cx[k] * cx[k];
            la[k] += v2 * ca[k];
            lb[k] += v2 * cx[k] * cb[k];
        }
    }
    (
        (la[0] + la[1]) + (la[2] + la[3]) + ta,
        (lb[0] + lb[1]) + (lb[2] + lb[3]) + tb,
    )
}

#[inline(always)]
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// Data in flat row-major form for the inner loops: borrowed when the arrays already are (a copy only for
/// Fortran-order files), so a run holds little more than its data.
struct Flat<'a> {
    x: Cow<'a, [f64]>,
    y: &'a [f64],
    x_test: Cow<'a, [f64]>,
    y_test: &'a [f64],
    d: usize,
}

impl<'a> Flat<'a> {
    fn new(data: &'a Dataset) -> Self {
        Flat {
            x: row_major(&data.x_train),
            y: data.y_train.as_slice().expect("1-D arrays are contiguous"),
            x_test: row_major(&data.x_test),
            y_test: data.y_test.as_slice().expect("1-D arrays are contiguous"),
            d: data.d(),
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// $\sum_{i} c\, r_i(\beta) x_i$ over `rows`, added into `out`; returns $\sum_i \ell_i(\beta)$. Not inlined:
    /// as a function of its own, its slices are known not to overlap, which keeps the inner loops vectorized
    /// (inlined into the oracle, 35% slower).
    #[inline(never)]
    fn add_residual_sum(&self, rows: &[usize], beta: &[f64], c: f64, out: &mut [f64]) -> f64 {
        let mut loss = 0.0;
        for &i in rows {
            let x = self.row(i);
            let r = dot(x, beta) - self.y[i];
            loss += 0.5 * r * r;
            axpy(c * r, x, out);
        }
        loss
    }

    fn curve_point(&self, iteration: usize, beta: &[f64]) -> CurvePoint {
        CurvePoint::new(
            iteration,
            loss(&self.x, self.y, beta),
            loss(&self.x_test, self.y_test, beta),
        )
    }
}

/// Scratch vectors of length d reused by every step (the closed-form 1-SAM step and the oracle).
struct Scratch {
    beta: Vec<f64>,
    s: Vec<f64>,
    acc_u: Vec<f64>,
    acc_v: Vec<f64>,
    du: Vec<f64>,
    pu: Vec<f64>,
    /// Per example of the last closed-form step: $(r, \tilde r, x^2 \cdot (u^2 + v^2), x^3 \cdot \beta)$.
    seen: Vec<[f64; 4]>,
}

impl Scratch {
    fn new(d: usize) -> Self {
        let z = || vec![0.0; d];
        Scratch {
            beta: z(),
            s: z(),
            acc_u: z(),
            acc_v: z(),
            du: z(),
            pu: z(),
            seen: Vec::new(),
        }
    }
}

impl DiagTrainConfig {
    /// Every check [`train`] makes on `n` examples of dimension `d` before its first update (the learning rate,
    /// the batch and its size, the SAM options): what a run, `run --config` and `sweep plan` refuse up front.
    pub fn check(&self, n: usize, d: usize) -> Result<samlab_core::sam::CheckedSam, ConfigError> {
        self.lr.check()?;
        let batch_size = self.batch_size.unwrap_or(n);
        if batch_size == 0 {
            return Err(ConfigError::Invalid {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        samlab_core::limits::product(
            "batch_size",
            &[batch_size, d],
            samlab_core::limits::MAX_ELEMENTS,
        )?;
        self.sam.check_applies()?;
        let sam = self.sam.check(batch_size)?;
        sam.check_selection(n, batch_size)?;
        sam.require_layers("diagonal-net engine", false, false)?;
        Ok(sam)
    }
}

/// Trains from `init` on `data` and returns the final parameters and the loss curve.
///
/// `observer` sees every update before it is applied (for progress bars and the theory module's accounting) and
/// says whether to go on: false stops the run there with [`RunStatus::Interrupted`]. A run whose parameters or
/// losses become non-finite stops with [`RunStatus::Diverged`].
pub fn train(
    data: &Dataset,
    config: &DiagTrainConfig,
    init: DiagParams,
    observer: &mut dyn FnMut(&StepView) -> bool,
) -> Result<DiagRun, ConfigError> {
    let n = data.n();
    let d = data.d();
    if init.u.len() != d || init.v.len() != d {
        return Err(ConfigError::Invalid {
            field: "init",
            reason: format!(
                "initial u, v have {} and {} entries but the data has d = {d}",
                init.u.len(),
                init.v.len()
            ),
        });
    }
    let sam = config.check(n, d)?;
    let flat = Flat::new(data);
    let mut rng = NumpyRandomState::new(config.seed);
    let mut p = init;
    let mut scratch = Scratch::new(d);
    let mut general = General::new(d);
    let mut batches = Batches::new(n, config.batch_size);
    let log_at = config.log.iterations(config.iters);
    let mut next_log = 0;
    let mut curve = Vec::with_capacity(log_at.len());

    for t in 0..=config.iters {
        // The step from a logged point is observed.
        let logged = log_at.get(next_log) == Some(&t);
        if logged {
            next_log += 1;
            let point = flat.curve_point(t, &p.beta());
            if !(point.train_loss.is_finite() && point.test_loss.is_finite()) {
                return Ok(stopped(p, curve, t, RunStatus::Diverged));
            }
            curve.push(point);
        }
        if t == config.iters {
            break;
        }
        let (batch, ascent_rows) = batches.advance(t, &mut rng, sam.config().ascent_source);
        let (lr, rho) = sam.lr_rho_at(&config.lr, t, config.iters);
        let go_on = observer(&StepView {
            t,
            params: &p,
            lr,
            rho,
            batch,
        });
        if !go_on {
            return Ok(stopped(p, curve, t, RunStatus::Interrupted));
        }
        let mut observed = logged.then(ObservationMean::default);
        step(
            &flat,
            &sam,
            (rho, lr),
            (batch, ascent_rows),
            &mut p,
            &mut scratch,
            &mut general,
            &mut rng,
            observed.as_mut(),
        );
        if let (Some(observed), Some(point)) = (observed, curve.last_mut()) {
            point.sam = observed.mean();
        }
        if !p.is_finite() {
            return Ok(stopped(p, curve, t + 1, RunStatus::Diverged));
        }
    }
    Ok(DiagRun {
        params: p,
        curve,
        status: RunStatus::Ok,
        iterations: config.iters,
    })
}

/// The run that stopped early after `iterations` updates.
fn stopped(
    params: DiagParams,
    curve: Vec<CurvePoint>,
    iterations: usize,
    status: RunStatus,
) -> DiagRun {
    DiagRun {
        params,
        curve,
        status,
        iterations,
    }
}

/// One update on `batch`, SAM groups perturbed with gradients on the same positions of `ascent_rows`; with
/// `observe`, each SAM group's observation ([`GroupParts`]) is added to it, from the step's own passes (the
/// update is the same either way).
#[allow(clippy::too_many_arguments)]
fn step(
    flat: &Flat,
    sam: &CheckedSam,
    (rho, lr): (f64, f64),
    (batch, ascent_rows): (&[usize], &[usize]),
    p: &mut DiagParams,
    w: &mut Scratch,
    general: &mut General,
    rng: &mut NumpyRandomState,
    observe: Option<&mut ObservationMean>,
) {
    if rho != 0.0 && is_plain_one_sam(sam) {
        w.acc_u.fill(0.0);
        w.acc_v.fill(0.0);
        match observe {
            None => one_sam_closed_form::<false>(flat, rho, batch, p, w),
            Some(mean) => {
                one_sam_closed_form::<true>(flat, rho, batch, p, w);
                observe_one_sam(flat, rho, batch, w, mean);
            }
        }
        let c = -lr / batch.len() as f64;
        axpy(c, &w.acc_u, &mut p.u);
        axpy(c, &w.acc_v, &mut p.v);
        return;
    }
    let d = p.u.len();
    general.w[..d].copy_from_slice(&p.u);
    general.w[d..].copy_from_slice(&p.v);
    general.acc.fill(0.0);
    let mut oracle = DiagOracle { flat, w };
    let m = if rho == 0.0 {
        batch.len()
    } else {
        sam.group_size()
    };
    let mut observe = observe.map(|mean| (mean, Host::norm(&general.w)));
    for (group, ascent_group) in batch.chunks(m).zip(ascent_rows.chunks(m)) {
        general.ascent.group(
            &mut oracle,
            sam.config(),
            rho,
            &general.w,
            group,
            ascent_group,
            &mut general.state,
            rng,
            &mut general.acc,
        );
        if let Some((mean, weight_norm)) = observe.as_mut() {
            if let Some(parts) = general.ascent.group_parts() {
                mean.add(&parts.observation(*weight_norm));
            }
        }
    }
    let c = -lr / batch.len() as f64;
    axpy(c, &general.acc[..d], &mut p.u);
    axpy(c, &general.acc[d..], &mut p.v);
}

/// The general step's state: the flat parameters `(u, v)`, the descent accumulator, the ascent's scratch and the
/// variant's state.
struct General {
    w: Vec<f64>,
    acc: Vec<f64>,
    ascent: Ascent<Host>,
    state: VariantState<Vec<f64>>,
}

impl General {
    fn new(d: usize) -> Self {
        General {
            w: vec![0.0; 2 * d],
            acc: vec![0.0; 2 * d],
            ascent: Ascent::new(&vec![0.0; 2 * d]),
            state: VariantState::default(),
        }
    }
}

/// The diagonal net as an [`Oracle`] over `w = (u, v)`: $\nabla_u \ell_i = r_i x_i \odot v$,
/// $\nabla_v \ell_i = r_i x_i \odot u$ with $r_i = x_i \cdot (u \odot v) - y_i$.
struct DiagOracle<'a, 'b> {
    flat: &'a Flat<'b>,
    w: &'a mut Scratch,
}

impl DiagOracle<'_, '_> {
    /// $s = \sum_{i} c\, r_i x_i$ over `rows` at `w = (u, v)`, and the loss sum $\sum_i \ell_i$ there.
    fn residual_sum(&mut self, w: &[f64], rows: &[usize], scale: f64) -> (&[f64], f64) {
        let (u, v) = w.split_at(self.flat.d);
        for ((b, &u), &v) in self.w.beta.iter_mut().zip(u).zip(v) {
            *b = u * v;
        }
        self.w.s.fill(0.0);
        let loss = self
            .flat
            .add_residual_sum(rows, &self.w.beta, scale, &mut self.w.s);
        (&self.w.s, loss)
    }
}

impl HostOracle for DiagOracle<'_, '_> {
    fn dim(&self) -> usize {
        2 * self.flat.d
    }

    fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64 {
        let d = self.flat.d;
        let (s, loss) = self.residual_sum(w, rows, scale);
        let (u, v) = w.split_at(d);
        let (out_u, out_v) = out.split_at_mut(d);
        for (((ou, ov), (&u, &v)), &s) in out_u.iter_mut().zip(out_v).zip(u.iter().zip(v)).zip(s) {
            *ou = s * v;
            *ov = s * u;
        }
        loss
    }

    fn losses(&mut self, w: &[f64], rows: &[usize], out: &mut [f64]) {
        let (u, v) = w.split_at(self.flat.d);
        for ((b, &u), &v) in self.w.beta.iter_mut().zip(u).zip(v) {
            *b = u * v;
        }
        for (o, &i) in out.iter_mut().zip(rows) {
            let r = dot(self.flat.row(i), &self.w.beta) - self.flat.y[i];
            *o = 0.5 * r * r;
        }
    }
}

/// Whether `sam` is unnormalized single-step 1-SAM on the descent batch, which [`one_sam_closed_form`] computes.
fn is_plain_one_sam(sam: &CheckedSam) -> bool {
    let c = sam.config();
    sam.group_size() == 1
        && c.normalization == Normalization::Unnormalized
        && c.ascent_steps == 1
        && c.perturbation == Perturbation::Ascent
        && !c.random_init
        && c.ascent_source == samlab_core::sam::AscentSource::SameBatch
        && c.variant == samlab_core::sam::Variant::Sam
}

/// Unnormalized 1-SAM in closed form, with the same result as the general path up to rounding.
///
/// Example $i$'s perturbed point is $u + c_i x_i \odot v$, $v + c_i x_i \odot u$ with $c_i = \rho r_i$, so
/// $\tilde\beta_i = \beta + c_i x_i \odot (u^2 + v^2) + c_i^2 x_i^2 \odot \beta$ and
/// $\tilde r_i = r_i + c_i\, x_i^2 \cdot (u^2+v^2) + c_i^2\, x_i^3 \cdot \beta$. The descent gradient
/// $\sum_i \tilde r_i x_i \odot \tilde v_i$ is $v \odot s_1 + u \odot s_2$ with $s_1 = \sum_i \tilde r_i x_i$,
/// $s_2 = \sum_i \tilde r_i c_i x_i^2$ (and symmetrically for $u$): two fused passes over the batch.
/// With `KEEP`, each example's scalars are kept in `w.seen` (what SAM did is observed from them:
/// [`one_sam_parts`]); a parameter of the function's, so that the steps that keep nothing run the loop without the
/// stores (they cost 3-5% of the step).
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn one_sam_closed_form<const KEEP: bool>(
    flat: &Flat,
    rho: f64,
    batch: &[usize],
    p: &DiagParams,
    w: &mut Scratch,
) {
    // Reuse scratch: beta = u * v, pu = u^2 + v^2, s = s_1, du = s_2.
    for j in 0..p.u.len() {
        w.beta[j] = p.u[j] * p.v[j];
        w.pu[j] = p.u[j] * p.u[j] + p.v[j] * p.v[j];
    }
    w.s.fill(0.0);
    w.du.fill(0.0);
    if KEEP {
        w.seen.resize(batch.len(), [0.0; 4]);
    }
    for (k, &i) in batch.iter().enumerate() {
        let row = i * flat.d..(i + 1) * flat.d;
        let x = &flat.x[row];
        let r = dot(x, &w.beta) - flat.y[i];
        let c = rho * r;
        let (square, cube) = dot_square_cube(x, &w.pu, &w.beta);
        let r_tilde = r + c * (square + c * cube);
        if KEEP {
            w.seen[k] = [r, r_tilde, square, cube];
        }
        let a = r_tilde * c;
        for ((s, du), &v) in w.s.iter_mut().zip(w.du.iter_mut()).zip(x) {
            *s += r_tilde * v;
            *du += a * (v * v);
        }
    }
    for j in 0..p.u.len() {
        w.acc_u[j] = p.v[j] * w.s[j] + p.u[j] * w.du[j];
        w.acc_v[j] = p.u[j] * w.s[j] + p.v[j] * w.du[j];
    }
}

/// Adds to `mean` each example's observation of the closed-form step just taken on `batch` (from `w.seen`).
#[inline(never)]
fn observe_one_sam(
    flat: &Flat,
    rho: f64,
    batch: &[usize],
    w: &Scratch,
    mean: &mut ObservationMean,
) {
    // ||w||^2 = sum_j u_j^2 + v_j^2.
    let weight_norm = w.pu.iter().sum::<f64>().sqrt();
    for (&i, &[r, r_tilde, square, cube]) in batch.iter().zip(&w.seen) {
        let parts = one_sam_parts(flat.row(i), &w.pu, (r, r_tilde, rho * r), (square, cube));
        mean.add(&parts.observation(weight_norm));
    }
}

/// Example $i$'s [`GroupParts`] in unnormalized 1-SAM, from the scalars of its closed-form step: residuals $r$ and
/// $\tilde r$, $c = \rho r$, `square` $= x^2 \cdot (u^2 + v^2)$ and `cube` $= x^3 \cdot \beta$ (`pu` $= u^2 + v^2$).
///
/// The clean gradient is $g = r\,(x \odot v, x \odot u)$, the perturbation $\delta = c\,(x \odot v, x \odot u)$ and the
/// SAM gradient $g_p = \tilde r\,(x \odot \tilde v, x \odot \tilde u)$ with $\tilde u = u + c\, x \odot v$,
/// $\tilde v = v + c\, x \odot u$, so $\lVert \delta \rVert^2 = c^2\,\text{square}$,
/// $g \cdot g_p = r \tilde r\,(\text{square} + 2c\,\text{cube})$, $\lVert g \rVert^2 = r^2\,\text{square}$ and
/// $\lVert g_p \rVert^2 = \tilde r^2\,(\text{square} + 4c\,\text{cube} + c^2\, x^4 \cdot (u^2 + v^2))$: one more
/// dot product than the step's.
fn one_sam_parts(
    x: &[f64],
    pu: &[f64],
    (r, r_tilde, c): (f64, f64, f64),
    (square, cube): (f64, f64),
) -> GroupParts {
    let quartic: f64 = x.iter().zip(pu).map(|(&x, &p)| (x * x) * (x * x) * p).sum();
    GroupParts {
        delta_sq: c * c * square,
        clean_dot_sam: r * r_tilde * (square + 2.0 * c * cube),
        clean_sq: r * r * square,
        sam_sq: r_tilde * r_tilde * (square + c * (4.0 * cube + c * quartic)),
        clean_loss: 0.5 * r * r,
        perturbed_loss: 0.5 * r_tilde * r_tilde,
    }
}

#[cfg(test)]
mod tests;
