"""samlab.curvature against dense linear algebra, and its refusals of bad input."""

import signal
import traceback

import numpy as np
import pytest
from conftest import with_spectrum

from samlab import curvature

rng = np.random.default_rng(0)
SPECTRA = {
    "gaussian": rng.standard_normal(120),
    # Outliers above a bulk with a negative tail: the shape of a trained net's Hessian.
    "hessian-like": np.concatenate([[10.0, 7.0, 5.0, 4.5, 4.4, -2.0], 0.1 * rng.standard_normal(114)]),
    # Five top eigenvalues within 1e-3 of each other.
    "clustered": np.concatenate([3.0 - 2e-4 * np.arange(5), rng.uniform(-1, 1, 115)]),
    "negative": -np.abs(rng.standard_normal(120)) - 0.5,
}


def matvec_of(a):
    return lambda v: a @ v


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("which", ["top", "bottom"])
def test_lanczos_equals_eigh_to_1e_8(name, which):
    a = with_spectrum(SPECTRA[name], seed=1)
    exact = np.linalg.eigh(a)[0]
    want = exact[::-1][:5] if which == "top" else exact[:5]
    r = curvature.lanczos(matvec_of(a), a.shape[0], k=5, which=which, tol=1e-10, max_iter=120)
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues, want, rtol=1e-8, atol=0)
    assert r.eigenvectors.shape == (120, 5)
    np.testing.assert_allclose(np.linalg.norm(r.eigenvectors, axis=0), 1.0, rtol=1e-12)
    # The reported residuals are the true ones.
    true = np.linalg.norm(a @ r.eigenvectors - r.eigenvectors * r.eigenvalues, axis=0)
    np.testing.assert_allclose(r.residuals, true, rtol=1e-6, atol=1e-12)


def test_lanczos_both_ends_and_float32_products():
    a = with_spectrum(SPECTRA["hessian-like"], seed=2)
    exact = np.linalg.eigvalsh(a)
    r = curvature.lanczos(matvec_of(a), 120, k=2, which="both", tol=1e-10, max_iter=120)
    np.testing.assert_allclose(r.eigenvalues, [exact[-1], exact[-2], exact[0], exact[1]], rtol=1e-8)
    r32 = curvature.lanczos(lambda v: (a @ v).astype(np.float32), 120, k=1, tol=1e-5, max_iter=120)
    assert abs(r32.eigenvalues[0] - exact[-1]) < 1e-5 * exact[-1]
    assert "LanczosResult(eigenvalues=array(" in repr(r)


def test_lanczos_does_not_stop_on_a_settled_second_eigenvalue():
    # The top pair 1.465 and 1.462 above 30 outliers and a bulk (a Hessian-like spectrum; see spectral.rs).
    gen = np.random.default_rng(5)
    ev = np.concatenate([[1.465, 1.462], 1.35 - 0.04 * np.arange(30), 0.1 * gen.standard_normal(1968)])
    for seed in range(20):
        r = curvature.lanczos(lambda v: ev * v, ev.size, k=1, seed=seed)
        assert abs(r.eigenvalues[0] - 1.465) <= 1e-3 * 1.465, (seed, r)


def test_trace_is_within_its_standard_error_and_hutchpp_beats_hutchinson():
    gen = np.random.default_rng(3)
    # Low rank plus noise: 10 large eigenvalues over a small bulk.
    ev = np.concatenate([100.0 / np.arange(1, 11), 0.05 * gen.standard_normal(190)])
    a = with_spectrum(ev, seed=4)
    exact = float(np.trace(a))
    err = {"hutchinson": [], "hutch++": []}
    for seed in range(10):
        for method in err:
            t = curvature.trace(matvec_of(a), 200, probes=60, method=method, seed=seed)
            assert t.products == 60
            assert abs(t.estimate - exact) <= 4 * t.std_error + 1e-9, (method, t, exact)
            err[method].append((t.estimate - exact) ** 2)
    assert np.mean(err["hutch++"]) < 0.01 * np.mean(err["hutchinson"]), err


def test_density_weights_sum_to_one_and_the_curve_integrates_to_one():
    a = with_spectrum(SPECTRA["hessian-like"], seed=5)
    d = curvature.density(matvec_of(a), 120, probes=3, steps=40)
    assert d.nodes.shape == d.weights.shape == d.probe.shape == (120,)
    assert abs(d.weights.sum() - 1.0) < 1e-12
    for p in range(3):
        assert abs(d.weights[d.probe == p].sum() - 1 / 3) < 1e-12
    h = d.grid[1] - d.grid[0]
    assert abs(d.density.sum() * h - 1.0) < 1e-3
    assert abs(d.nodes.max() - 10.0) < 1e-6


def test_diagonal_is_within_its_standard_errors():
    a = with_spectrum(SPECTRA["gaussian"][:40], seed=6)
    d = curvature.diagonal(matvec_of(a), 40, probes=2000, seed=1)
    assert np.all(np.abs(d.diagonal - np.diag(a)) <= 4.5 * d.std_error)
    assert d.sum_of_squares == pytest.approx(float(np.sum(d.diagonal**2)), rel=1e-12)
    exact = curvature.diagonal(lambda v: np.arange(5.0) * v, 5, probes=2)
    np.testing.assert_array_equal(exact.diagonal, np.arange(5.0))


BAD_PRODUCTS = {
    "length 3": (lambda v: v[:3], "length 3"),
    "int64": (lambda v: v.astype(np.int64), "dtype int64"),
    "2-D": (lambda v: v[:, None], "shape (50, 1)"),
    "NaN": (lambda v: v * np.nan, "non-finite"),
    "list": (lambda v: list(v), "a list"),
}


@pytest.mark.parametrize("case", BAD_PRODUCTS)
@pytest.mark.parametrize("engine", ["lanczos", "trace", "density", "diagonal"])
def test_a_bad_product_is_a_value_error_naming_it(case, engine):
    matvec, words = BAD_PRODUCTS[case]
    with pytest.raises(ValueError, match="matvec returned") as e:
        getattr(curvature, engine)(matvec, 50)
    assert words in str(e.value)


class BoomError(RuntimeError):
    pass


def test_the_callables_own_exception_propagates_with_its_traceback():
    calls = []

    def matvec(v):
        calls.append(1)
        if len(calls) == 3:
            raise BoomError("third product")
        return 2.0 * v

    with pytest.raises(BoomError, match="third product") as e:
        curvature.lanczos(matvec, 30, k=2)
    assert "matvec" in "".join(traceback.format_tb(e.value.__traceback__))
    # The engine stopped calling it after the error.
    assert len(calls) == 3


def test_ctrl_c_interrupts_a_run(ctrl_c):
    calls = []

    def matvec(v):
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGINT)
        return np.arange(1000.0) * v

    with pytest.raises(KeyboardInterrupt):
        curvature.lanczos(matvec, 1000, k=1, max_iter=500)
    assert len(calls) <= 6


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda f: curvature.lanczos(f, 0), "dim must be at least 1"),
        (lambda f: curvature.lanczos(f, 5, k=6), "k must be in 1..=dim"),
        (lambda f: curvature.lanczos(f, 5, k=0), "k must be in 1..=dim"),
        (lambda f: curvature.lanczos(f, 50, k=5, max_iter=5), "max_iter must exceed k"),
        (lambda f: curvature.lanczos(f, 5, tol=2.0), "tol"),
        (lambda f: curvature.lanczos(f, 5, which="middle"), "which must be"),
        (lambda f: curvature.trace(f, 5, probes=0), "probes"),
        (lambda f: curvature.trace(f, 5, probes=3, method="hutch++"), "at least 4 products"),
        (lambda f: curvature.trace(f, 5, method="exact"), "method must be"),
        (lambda f: curvature.diagonal(f, 5, probes=0), "probes"),
        (lambda f: curvature.density(f, 5, probes=0), "probes"),
        (lambda f: curvature.density(f, 0), "dim must be at least 1"),
        (lambda f: curvature.diagonal(f, 2**40), "invalid dim: 1099511627776 would make arrays of more than"),
        (lambda f: curvature.trace(f, 2**20, probes=3 << 11, method="hutch++"), "invalid probes"),
        (lambda f: curvature.lanczos(f, 2**30, max_iter=100), "invalid max_iter: 100 Lanczos vectors"),
    ],
)
def test_bad_settings_are_value_errors_naming_them(call, words):
    with pytest.raises(ValueError, match=words):
        call(lambda v: v)


@pytest.mark.parametrize("value", [-1, 2.5, "3", True])
def test_a_count_that_is_not_a_non_negative_integer_is_refused(value):
    with pytest.raises(ValueError, match="dim must be a non-negative integer"):
        curvature.lanczos(lambda v: v, value)
    with pytest.raises(ValueError, match="probes must be a non-negative integer"):
        curvature.trace(lambda v: v, 5, probes=value)


def test_a_non_symmetric_operator_is_refused_when_asked():
    sym = with_spectrum(SPECTRA["gaussian"], seed=7)
    assert curvature.asymmetry(matvec_of(sym), 120) < 1e-13
    assert curvature.asymmetry(lambda v: (sym @ v).astype(np.float32), 120) < 1e-5
    g = np.random.default_rng(8).standard_normal((120, 120))
    assert curvature.asymmetry(matvec_of(g), 120) > 0.1
    for engine in ("lanczos", "trace", "density", "diagonal"):
        with pytest.raises(ValueError, match="matvec is not symmetric: its asymmetry is"):
            getattr(curvature, engine)(matvec_of(g), 120, symmetry_tol=1e-6)
        getattr(curvature, engine)(matvec_of(sym), 120, symmetry_tol=1e-10)


def test_dim_comes_from_an_operator_objects_dim_attribute():
    a = with_spectrum(np.arange(1.0, 11.0), seed=2)

    class Op:
        dim = 10

        def __call__(self, v):
            return a @ v

    r = curvature.lanczos(Op(), k=2, tol=1e-10, max_iter=10)
    np.testing.assert_allclose(r.eigenvalues, [10.0, 9.0], rtol=1e-10)
    assert curvature.trace(Op(), probes=4, method="hutch++").products == 4
    with pytest.raises(ValueError, match="dim = 9 disagrees with the operator's dim = 10"):
        curvature.diagonal(Op(), 9)
    with pytest.raises(TypeError, match="dim is required unless matvec has a dim attribute"):
        curvature.density(matvec_of(a))
