use super::*;

/// A random symmetric matrix with the given eigenvalues: $Q \operatorname{diag}(\lambda) Q^\top$.
fn with_spectrum(eigenvalues: &[f64], seed: u32) -> DenseSymmetric {
    let n = eigenvalues.len();
    let mut r = NumpyRandomState::new(seed);
    let mut g = vec![0.0; n * n];
    r.fill_standard_normal(&mut g);
    let q = DMatrix::from_row_slice(n, n, &g).qr().q();
    let a = &q
        * DMatrix::from_diagonal(&nalgebra::DVector::from_row_slice(eigenvalues))
        * q.transpose();
    DenseSymmetric::new(n, a.transpose().as_slice().to_vec())
}

fn spectrum(n: usize) -> Vec<f64> {
    // A few outliers above a bulk, and a negative tail: the shape of a trained net's Hessian.
    (0..n)
        .map(|i| match i {
            0 => 10.0,
            1 => 7.0,
            2 => 5.0,
            3 => -2.0,
            _ => 0.5 * ((i as f64) / n as f64) - 0.1,
        })
        .collect()
}

#[test]
fn lanczos_finds_the_top_eigenvalues_and_the_bottom_one_with_true_residuals() {
    let op = with_spectrum(&spectrum(120), 3);
    let cfg = LanczosConfig {
        k: 3,
        max_steps: 100,
        tol: 1e-8,
        seed: 5,
    };
    let r = extreme_eigenpairs(&op, &cfg).unwrap();
    assert!(r.converged, "{r:?}");
    let got: Vec<f64> = r.top.iter().map(|p| p.value).collect();
    for (g, want) in got.iter().zip([10.0, 7.0, 5.0]) {
        assert!((g - want).abs() < 1e-7, "{got:?}");
    }
    assert!(
        (r.bottom.value + 2.0).abs() <= r.bottom.residual + 1e-9,
        "{:?}",
        r.bottom
    );
    assert!(r.top.iter().all(|p| p.residual <= 1e-8 * 10.0));
    assert!(r.steps < 100, "stopped early: {}", r.steps);
    assert_eq!(r.products, r.steps + 4);
}

#[test]
fn a_step_budget_too_small_is_reported_as_not_converged() {
    let op = with_spectrum(&spectrum(120), 3);
    let cfg = LanczosConfig {
        k: 3,
        max_steps: 5,
        tol: 1e-10,
        seed: 5,
    };
    let r = extreme_eigenpairs(&op, &cfg).unwrap();
    assert!(!r.converged);
    assert_eq!(r.steps, 5);
    // The reported residuals are the true ones, so they bound the distance to some eigenvalue.
    let exact = spectrum(120);
    for p in r.top.iter().chain([&r.bottom]) {
        let nearest = exact
            .iter()
            .map(|e| (e - p.value).abs())
            .fold(f64::MAX, f64::min);
        assert!(nearest <= p.residual * (1.0 + 1e-9), "{p:?} {nearest}");
    }
}

#[test]
fn an_invariant_start_ends_lanczos_early_and_exactly() {
    // Three distinct eigenvalues: the Krylov space closes after three steps.
    let mut ev = vec![1.0; 10];
    ev[0] = 4.0;
    ev[9] = -3.0;
    let op = with_spectrum(&ev, 8);
    let cfg = LanczosConfig {
        k: 2,
        ..LanczosConfig::default()
    };
    let r = extreme_eigenpairs(&op, &cfg).unwrap();
    assert_eq!(r.steps, 3);
    assert!((r.top[0].value - 4.0).abs() < 1e-10);
    assert!((r.top[1].value - 1.0).abs() < 1e-10);
    assert!((r.bottom.value + 3.0).abs() < 1e-10);
    assert!(r.converged);
}

#[test]
fn hutchinson_is_unbiased_within_its_standard_error() {
    let ev = spectrum(60);
    let exact: f64 = ev.iter().sum();
    let op = with_spectrum(&ev, 4);
    let t = hutchinson_trace(&op, 400, 9).unwrap();
    assert!(t.std_error > 0.0);
    assert!(
        (t.estimate - exact).abs() <= 3.0 * t.std_error,
        "{} vs {exact} +- {}",
        t.estimate,
        t.std_error
    );
    // A diagonal matrix has zero variance under Rademacher probes: the estimate is exact.
    let d = DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -4.0]);
    let t = hutchinson_trace(&d, 5, 0).unwrap();
    assert_eq!((t.estimate, t.std_error), (-1.0, 0.0));
    assert!(hutchinson_trace(&d, 1, 0).is_err());
}

#[test]
fn slq_density_integrates_to_one_and_puts_its_mass_where_the_eigenvalues_are() {
    let ev = spectrum(200);
    let op = with_spectrum(&ev, 6);
    let cfg = DensityConfig {
        probes: 4,
        steps: 40,
        ..DensityConfig::default()
    };
    let d = slq_density(&op, &cfg).unwrap();
    let h = d.grid[1] - d.grid[0];
    let mass: f64 = d.density.iter().sum::<f64>() * h;
    assert!((mass - 1.0).abs() < 1e-3, "{mass}");
    // The bulk in [-0.1, 0.4] holds 196 of 200 eigenvalues.
    let bulk: f64 = d
        .grid
        .iter()
        .zip(&d.density)
        .filter(|(t, _)| (-0.3..0.6).contains(*t))
        .map(|(_, v)| v * h)
        .sum();
    assert!(bulk > 0.9, "{bulk}");
    // The extreme quadrature nodes are the extreme eigenvalues.
    let max = d.nodes.iter().flatten().fold(f64::MIN, |m, &x| m.max(x));
    assert!((max - 10.0).abs() < 1e-6, "{max}");
    for w in &d.weights {
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-10);
    }
    let bad = DensityConfig {
        points: 0,
        ..DensityConfig::default()
    };
    assert!(slq_density(&op, &bad).is_err());
}

/// A diagonal operator: Lanczos from a Gaussian start sees the same spectrum as $Q \Lambda Q^\top$, at $O(n)$
/// per product.
struct Diagonal(Vec<f64>);

impl SymmetricOperator for Diagonal {
    fn dim(&self) -> usize {
        self.0.len()
    }

    fn apply(&self, v: &[f64]) -> Vec<f64> {
        self.0.iter().zip(v).map(|(a, b)| a * b).collect()
    }
}

/// A Hessian-like spectrum (decreasing): the top pair 1.465 and 1.465 - `gap`, 30 outliers from 1.35 down to
/// 0.19, and a Gaussian bulk of width 0.1.
fn two_top_eigenvalues(n: usize, gap: f64, seed: u32) -> Vec<f64> {
    let mut r = NumpyRandomState::new(seed);
    let mut ev: Vec<f64> = (0..n)
        .map(|i| match i {
            0 => 1.465,
            1 => 1.465 - gap,
            2..=31 => 1.35 - 0.04 * (i - 2) as f64,
            _ => 0.1 * r.standard_normal(),
        })
        .collect();
    ev.sort_by(|a, b| b.total_cmp(a));
    ev
}

/// Start vectors from which the top Ritz value settles on the second eigenvalue, with a residual below `tol`,
/// before the top one shows: the stopping rule must not stop there.
#[test]
fn a_settled_second_eigenvalue_does_not_stop_lanczos() {
    for (gap, k) in [(0.003, 1), (0.01, 1), (0.0364, 1), (0.0364, 5)] {
        let ev = two_top_eigenvalues(3000, gap, 1000);
        let op = Diagonal(ev.clone());
        let mut wrong = Vec::new();
        let mut steps = 0;
        for seed in 0..100 {
            let cfg = LanczosConfig {
                k,
                max_steps: 100,
                tol: 1e-3,
                seed,
            };
            let r = extreme_eigenpairs(&op, &cfg).unwrap();
            steps += r.steps;
            let off = r
                .top
                .iter()
                .zip(&ev)
                .any(|(p, e)| (p.value - e).abs() > 1e-3 * ev[0]);
            if off || !r.converged {
                wrong.push((seed, r.top[0].value, r.steps));
            }
        }
        assert!(wrong.is_empty(), "gap {gap}, k {k}: {wrong:?}");
        // The rule costs steps, not the budget: it stops well before max_steps.
        assert!(steps < 100 * 80, "gap {gap}, k {k}: {steps} steps");
    }
}

/// Clustered top eigenvalues closer together than `tol`: any Ritz value in the cluster is within `tol` of the
/// top, and the top-k are the cluster's.
#[test]
fn clustered_top_eigenvalues_are_found_to_the_tolerance() {
    let mut ev = two_top_eigenvalues(2000, 0.0005, 7);
    ev[2] = 1.465 - 0.0009;
    ev.sort_by(|a, b| b.total_cmp(a));
    let op = Diagonal(ev.clone());
    for seed in 0..50 {
        let cfg = LanczosConfig {
            k: 3,
            max_steps: 150,
            tol: 1e-3,
            seed,
        };
        let r = extreme_eigenpairs(&op, &cfg).unwrap();
        for (p, e) in r.top.iter().zip(&ev) {
            assert!(
                (p.value - e).abs() <= 1e-3 * ev[0],
                "seed {seed}: {:?}",
                r.top
            );
        }
    }
}

#[test]
fn hutchpp_beats_hutchinson_on_a_decaying_spectrum_at_equal_products() {
    // Low rank plus noise: 10 large eigenvalues above a small bulk.
    let ev: Vec<f64> = (0..200)
        .map(|i| {
            if i < 10 {
                100.0 / (i + 1) as f64
            } else {
                0.01 * ((i % 7) as f64 - 3.0)
            }
        })
        .collect();
    let exact: f64 = ev.iter().sum();
    let op = with_spectrum(&ev, 11);
    let (mut err_h, mut err_pp) = (0.0, 0.0);
    for seed in 0..20 {
        let h = hutchinson_trace(&op, 60, seed).unwrap();
        let pp = hutchpp_trace(&op, 60, seed).unwrap();
        assert_eq!(pp.probes, 60);
        assert!(
            (pp.estimate - exact).abs() <= 4.0 * pp.std_error + 1e-9,
            "{pp:?} vs {exact}"
        );
        err_h += (h.estimate - exact).powi(2);
        err_pp += (pp.estimate - exact).powi(2);
    }
    assert!(
        err_pp * 100.0 < err_h,
        "Hutch++ {err_pp} vs Hutchinson {err_h}"
    );
    assert!(hutchpp_trace(&op, 3, 0).is_err());
    // Sizes that would exhaust memory are refused before anything is allocated.
    let huge = Diagonal(vec![1.0; 1 << 20]);
    assert!(hutchpp_trace(&huge, 3 << 11, 0).is_err());
    assert!(hutchinson_trace(&huge, usize::MAX, 0).is_err());
    // A matrix of rank below the sketch: exact.
    let d = DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    let t = hutchpp_trace(&d, 9, 0).unwrap();
    assert!((t.estimate - 3.0).abs() < 1e-12, "{t:?}");
}

#[test]
fn hutchinson_diagonal_is_unbiased_within_its_standard_errors() {
    let ev = spectrum(40);
    let op = with_spectrum(&ev, 12);
    let exact: Vec<f64> = (0..40).map(|i| op.data[i * 40 + i]).collect();
    let d = hutchinson_diagonal(&op, 2000, 3).unwrap();
    for ((g, e), se) in d.diagonal.iter().zip(&exact).zip(&d.std_error) {
        assert!(*se > 0.0);
        assert!((g - e).abs() <= 4.5 * se, "{g} vs {e} +- {se}");
    }
    let sq: f64 = d.diagonal.iter().map(|x| x * x).sum();
    assert_eq!(d.sum_of_squares, sq);
    // Diagonal matrices are recovered exactly, with zero standard errors.
    let diag = DenseSymmetric::new(2, vec![3.0, 0.0, 0.0, -1.0]);
    let d = hutchinson_diagonal(&diag, 2, 0).unwrap();
    assert_eq!((d.diagonal, d.std_error), (vec![3.0, -1.0], vec![0.0, 0.0]));
    assert!(hutchinson_diagonal(&diag, 1, 0).is_err());
}

#[test]
fn asymmetry_tells_symmetric_operators_from_others() {
    let sym = with_spectrum(&spectrum(50), 13);
    assert!(asymmetry(&sym, 0) < 1e-13, "{}", asymmetry(&sym, 0));
    // A symmetric matrix plus a small antisymmetric part: the measure scales with it.
    let mut data = sym.data.clone();
    data[1] += 1e-3;
    data[50] -= 1e-3;
    let skewed = asymmetry(&DenseSymmetric::new(50, data), 0);
    assert!((1e-6..1e-3).contains(&skewed), "{skewed}");
    let mut r = NumpyRandomState::new(2);
    let mut g = vec![0.0; 2500];
    r.fill_standard_normal(&mut g);
    // A Gaussian matrix: ||A - A^T||_F / ||A||_F = sqrt(2).
    let generic = asymmetry(&DenseSymmetric::new(50, g), 0);
    assert!(generic > 0.1, "{generic}");
    assert_eq!(asymmetry(&DenseSymmetric::new(2, vec![0.0; 4]), 0), 0.0);
}

#[test]
fn bad_settings_are_refused() {
    let op = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 1.0]);
    let cfg = |k| LanczosConfig {
        k,
        ..LanczosConfig::default()
    };
    assert!(extreme_eigenpairs(&op, &cfg(0)).is_err());
    assert!(extreme_eigenpairs(&op, &cfg(3)).is_err());
    assert!(extreme_eigenpairs(&op, &cfg(2)).is_ok());
}
