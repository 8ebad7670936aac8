"""samlab.theory against closed forms."""

import json

import numpy as np
import pytest

from samlab import analytic, runs, theory


def test_hyperbolic_entropy_is_its_closed_form():
    beta = np.array([0.3, -1.2, 0.0, 2.5])
    a = np.array([0.1, 0.5, 1.0, 2.0])
    want = np.sum(beta * np.arcsinh(2 * beta / a**2) - np.sqrt(beta**2 + a**4 / 4) + a**2 / 2)
    assert theory.hyperbolic_entropy(beta, a) == pytest.approx(want, rel=1e-12)
    # One scale for all coordinates, and the l2 limit of large scales.
    assert theory.hyperbolic_entropy(beta, 0.5) == theory.hyperbolic_entropy(beta, np.full(4, 0.5))
    big = 1e3
    assert theory.hyperbolic_entropy(beta, big) == pytest.approx(np.sum(beta**2) / big**2, rel=1e-6)
    with pytest.raises(ValueError, match="same length"):
        theory.hyperbolic_entropy(beta, a[:3])


def test_alpha_eff_is_its_closed_form():
    u, v = np.array([1.0, 0.5, 0.2]), np.array([0.6, 0.5, 0.3])
    np.testing.assert_array_equal(theory.alpha_eff(u, v), [0.8, 0.0, 0.0])
    with pytest.raises(ValueError, match="same length"):
        theory.alpha_eff(u, v[:2])


def test_interpolators():
    X, y, _, _, _ = analytic.sparse_regression(n=10, d=25, r=2, n_test=1, seed=4)
    l2 = theory.min_l2(X, y)
    np.testing.assert_allclose(l2, np.linalg.pinv(X) @ y, rtol=1e-9, atol=1e-12)
    l1 = theory.min_l1(X, y)
    np.testing.assert_allclose(X @ l1, y, atol=1e-8)
    assert np.abs(l1).sum() <= np.abs(l2).sum() + 1e-9
    # Large scales: the l2 interpolator; tiny ones: the l1 limit.
    big = theory.min_entropy(X, y, 100.0)
    np.testing.assert_allclose(big.beta, l2, atol=1e-6)
    small = theory.min_entropy(X, y, 1e-8)
    assert small.method == "min_l1_limit"
    np.testing.assert_allclose(small.beta, l1, atol=1e-12)
    # In between, the optimality condition: asinh(2 beta / a^2) lies in the row space of X.
    a = np.full(25, 0.3)
    mid = theory.min_entropy(X, y, a)
    assert mid.method == "dual_newton"
    np.testing.assert_allclose(X @ mid.beta, y, atol=1e-9)
    g = np.arcsinh(2 * mid.beta / a**2)
    nu, *_ = np.linalg.lstsq(X.T, g, rcond=None)
    np.testing.assert_allclose(X.T @ nu, g, atol=1e-7)
    with pytest.raises(ValueError, match="do not fit"):
        theory.min_l2(X, y[:-1])
    with pytest.raises(ValueError, match="positive scales"):
        theory.min_entropy(X, y, -1.0)
    with pytest.raises(ValueError, match="singular"):
        theory.min_l2(np.vstack([X, X[:1]]), np.append(y, y[0]))


def test_theorem2_bounds_are_their_closed_forms():
    p = theory.least_squares(50, 20, noise=0.5, seed=0)
    assert p.A.shape == (50, 20)
    np.testing.assert_allclose(p.w_star, np.linalg.lstsq(p.A, p.b, rcond=None)[0], rtol=1e-9)
    assert p.l_star == pytest.approx(np.sum((p.A @ p.w_star - p.b) ** 2) / 100, rel=1e-12)
    assert p.beta == pytest.approx(np.max(np.sum(p.A**2, axis=1)), rel=1e-12)
    assert p.mu == pytest.approx(np.linalg.eigvalsh(p.A.T @ p.A / 50)[0], rel=1e-9)
    per_example = p.A * (p.A @ p.w_star - p.b)[:, None]
    assert p.sigma2 == pytest.approx(np.mean(np.sum((per_example - per_example.mean(0)) ** 2, axis=1)), rel=1e-9)
    gap, sigma2, b, t = 0.7, p.sigma2, 4, 1000
    want = 4 * p.beta * gap / np.sqrt(t) + 8 * sigma2 / (b * np.sqrt(t))
    assert theory.nonconvex_bound(p.beta, gap, sigma2, b, t) == pytest.approx(want, rel=1e-12)
    want = 3 * p.beta**2 * gap / (p.mu**2 * t**2) + 22 * p.beta * sigma2 / (p.mu**2 * b * t)
    assert theory.pl_bound(p.beta, p.mu, gap, sigma2, b, t) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="n >= d"):
        theory.least_squares(5, 10)
    with pytest.raises(ValueError, match="batch and steps >= 1"):
        theory.nonconvex_bound(p.beta, gap, sigma2, 0, t)
    with pytest.raises(ValueError, match="mu must be finite"):
        theory.pl_bound(p.beta, 0.0, gap, sigma2, b, t)


def test_delta_integrals_predict_alpha_eff_and_the_run_is_diag_trains():
    X, y, X_test, y_test, _ = analytic.sparse_regression(n=20, d=30, r=3, n_test=100, seed=0)
    kw = dict(lr=0.05, iters=2000, alpha=0.1)
    for method, extra in [("gd", {}), ("1sam", {"rho": 0.2}), ("msam", {"rho": 0.1, "m": 4, "normalize": True})]:
        d = theory.delta_integrals(X, y, X_test, y_test, method=method, **kw, **extra)
        run = analytic.diag_train(X, y, X_test, y_test, method=method, **kw, **extra)
        # The same engine and config: the same run, bit for bit.
        np.testing.assert_array_equal(d.run.u, run.u)
        np.testing.assert_array_equal(d.run.test_loss, run.test_loss)
        # Theorem 1's identity: alpha_eff from the integrals alone.
        np.testing.assert_allclose(d.alpha_eff_predicted, run.alpha_eff, rtol=1e-8)
        assert d.identity_error < 1e-10
        assert np.all(d.delta_total > 0) and d.int_loss > 0
        if method == "gd":
            np.testing.assert_array_equal(d.delta_sam, 0.0)
        else:
            assert d.delta_sam.max() > 0
    with pytest.raises(ValueError, match="rho"):
        theory.delta_integrals(X, y, method="1sam", lr=0.05, iters=10)


def test_implicit_bias_of_a_run_directory(tmp_path):
    config = {
        "engine": "diag",
        "alpha": 0.1,
        "data": {"synthetic": {"n": 20, "d": 30, "r": 3, "n_test": 100, "seed": 0}},
        "train": {
            "lr": 0.1,
            "iters": 10000,
            "seed": 0,
            "log": "notebook",
            "sam": {"rho": 0.2, "grouping": {"size": 1}},  # the rest at its defaults: unnormalized 1-SAM
        },
    }
    runs.run(config, tmp_path / "run")
    got = theory.implicit_bias(tmp_path / "run")
    assert got == json.loads((tmp_path / "run" / "implicit_bias.json").read_text())
    X, y, X_test, y_test, _ = analytic.sparse_regression(n=20, d=30, r=3, n_test=100, seed=0)
    d = theory.delta_integrals(X, y, X_test, y_test, method="1sam", rho=0.2, lr=0.1, iters=10000)
    np.testing.assert_allclose(got["alpha_eff"], d.alpha_eff_predicted, rtol=1e-8)
    assert got["identity_max_error"] < 1e-10
    with pytest.raises(ValueError, match="not a run directory"):
        theory.implicit_bias(tmp_path)
