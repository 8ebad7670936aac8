"""samlab.analytic: the Rust engine's pinned numbers (bench/diag_reference.py, NumPy) through Python."""

import _thread
import threading
import time

import numpy as np
import pytest

from samlab import analytic

# (options, alpha, lr * d, iters, final train loss, final test loss): the cases of
# crates/samlab-analytic/src/diag/net/tests.rs `matches_numpy_reference`, pinned there to 1e-9 relative.
PINNED = [
    (dict(method="gd"), 0.1, 5.0, 10001, 9.962669023683685e-09, 0.015056044189449119),
    (dict(method="nsam", rho=0.1), 0.1, 5.0, 10001, 1.0503828033694047e-08, 0.015981952251472815),
    (dict(method="1sam", rho=0.2), 0.1, 10.0, 10001, 5.914359204786012e-09, 0.0015235412218010905),
    (dict(method="msam", rho=0.1, m=5), 0.1, 5.0, 10001, 8.995387153585177e-09, 0.013622566321163451),
    (dict(method="1sam", rho=0.01, normalize=True), 0.1, 5.0, 10001, 9.884776980059694e-07, 0.008389394966811547),
    (dict(method="nsam", rho=0.05, normalize=True), 0.1, 5.0, 101, 0.009482636642389089, 0.062419448194815985),
    (
        dict(method="msam", rho=0.05, m=4, normalize=True, sam_options={"ascent_steps": 3, "ascent_step_mult": 0.5}),
        0.1,
        5.0,
        101,
        0.009187907546592091,
        0.050423295878763444,
    ),
    (
        dict(method="1sam", rho=0.1, sam_options={"ascent_steps": 2, "ascent_step_mult": 0.5}),
        0.1,
        5.0,
        2001,
        2.830043806574124e-06,
        0.0060598424851881745,
    ),
    # The notebook's 1-SAM run (its rho 0.1 ascends on r^2: our 0.2).
    (dict(method="1sam", rho=0.2), 0.02, 5.0, 10001, 2.2625988237515035e-07, 1.5396958089444142e-05),
]

DATA = analytic.sparse_regression()


@pytest.mark.parametrize("case", range(len(PINNED)))
def test_diag_train_equals_the_pinned_numbers(case):
    options, alpha, lr_d, iters, train, test = PINNED[case]
    X, y, X_test, y_test, _ = DATA
    r = analytic.diag_train(X, y, X_test, y_test, alpha=alpha, lr=lr_d / 30, iters=iters, **options)
    assert r.status == "ok"
    assert r.iterations == iters
    assert r.iteration[-1] == iters
    assert r.final_train_loss == pytest.approx(train, rel=1e-9)
    assert r.final_test_loss == pytest.approx(test, rel=1e-9)
    np.testing.assert_array_equal(r.beta, r.u * r.v)
    np.testing.assert_array_equal(r.alpha_eff, np.sqrt(np.maximum(r.u**2 - r.v**2, 0)))


def test_the_curve_follows_the_notebook_schedule_and_runs_are_deterministic():
    X, y, X_test, y_test, _ = DATA
    kw = dict(method="sgd", batch_size=4, lr=0.05, iters=3000, seed=3)
    a = analytic.diag_train(X, y, X_test, y_test, **kw)
    b = analytic.diag_train(X, y, X_test, y_test, **kw)
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.test_loss, b.test_loss)
    assert list(a.iteration[:501]) == list(range(501))
    assert a.iteration[-1] == 3000 and np.all(np.diff(a.iteration) > 0)
    ends = analytic.diag_train(X, y, X_test, y_test, log="ends", **kw)
    assert list(ends.iteration) == [0, 3000]
    np.testing.assert_array_equal(ends.u, a.u)


@pytest.mark.parametrize("engine", ["diag", "relu"])
def test_ctrl_c_stops_a_long_run(engine, ctrl_c):
    # 10^8 updates take minutes; Ctrl-C (sent 0.2 s in) is seen within 4,096 updates and raised at once.
    kw = dict(method="gd", iters=10**8, log="ends")
    if engine == "diag":
        X, y, X_test, y_test, _ = DATA

        def train():
            return analytic.diag_train(X, y, X_test, y_test, lr=0.01, **kw)
    else:
        X, y, X_test, y_test = analytic.twelve_points()

        def train():
            return analytic.relu_train(X, y, X_test, y_test, width=20, lr=1e-4, **kw)

    timer = threading.Timer(0.2, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        train()
    assert time.perf_counter() - start < 10.0


def test_sparse_regression_is_the_notebook_data():
    X, y, X_test, y_test, theta = DATA
    assert X.shape == (20, 30) and X_test.shape == (1000, 30)
    np.testing.assert_allclose(y, X @ theta, rtol=1e-13)
    np.testing.assert_allclose(y_test, X_test @ theta, rtol=1e-13)
    assert np.count_nonzero(theta) == 3 and abs(np.linalg.norm(theta) - 1) < 1e-15
    # NumPy's legacy RandomState(0) stream, drawn in the notebook's order.
    rs = np.random.RandomState(0)
    np.testing.assert_array_equal(X, rs.randn(20, 30))
    np.testing.assert_array_equal(X_test, rs.randn(1000, 30))


def test_variants_run_and_their_options_are_checked():
    X, y, *_ = DATA
    assert "asam" in analytic.VARIANTS and "fisher-sam" in analytic.VARIANTS
    r = analytic.diag_train(
        X, y, method="nsam", rho=0.05, lr=0.1, iters=50, variant="asam", variant_options={"eta": 0.1}
    )
    assert r.status == "ok" and r.iteration[-1] == 50
    with pytest.raises(ValueError, match="eta"):
        analytic.diag_train(X, y, method="nsam", rho=0.05, lr=0.1, iters=5, variant="asam", variant_options={"eta": -1})
    with pytest.raises(ValueError, match="unknown field"):
        analytic.diag_train(X, y, method="nsam", rho=0.05, lr=0.1, iters=5, variant="asam", variant_options={"x": 1})
    with pytest.raises(ValueError, match="unknown variant"):
        analytic.diag_train(X, y, method="nsam", rho=0.05, lr=0.1, iters=5, variant="nope")


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (dict(method="msam", rho=0.1), "needs m"),
        (dict(method="nsam"), "needs rho"),
        (dict(method="gd", rho=0.1), "only for the SAM methods"),
        (dict(method="gd", batch_size=4), "full batch"),
        (dict(method="adam"), "method must be one of"),
        (dict(method="msam", rho=0.1, m=3), "m"),
        (dict(method="nsam", rho=-1.0), "rho"),
        (dict(method="gd", lr=-0.1), "lr"),
        (dict(method="nsam", rho=0.1, normalize=True, clip=True), "exclude each other"),
    ],
)
def test_bad_options_are_value_errors_naming_them(kw, words):
    X, y, X_test, y_test, _ = DATA
    kw = {"lr": 0.1, "iters": 5, **kw}
    with pytest.raises(ValueError, match=words):
        analytic.diag_train(X, y, X_test, y_test, **kw)


def test_bad_data_is_a_value_error_naming_it():
    X, y, X_test, y_test, _ = DATA
    with pytest.raises(ValueError, match="y_train has 19 entries"):
        analytic.diag_train(X, y[:-1], X_test, y_test, method="gd", lr=0.1, iters=5)
    bad = X.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        analytic.diag_train(bad, y, X_test, y_test, method="gd", lr=0.1, iters=5)
    with pytest.raises(ValueError, match="X_test has 29 columns|29"):
        analytic.diag_train(X, y, X_test[:, :29], y_test, method="gd", lr=0.1, iters=5)
    with pytest.raises(ValueError, match="X must be 2-D"):
        analytic.diag_train(y, y, method="gd", lr=0.1, iters=5)
    with pytest.raises(ValueError, match="both X_test and y_test"):
        analytic.diag_train(X, y, X_test, method="gd", lr=0.1, iters=5)
    with pytest.raises(ValueError, match="n, d, r, n_test"):
        analytic.sparse_regression(r=40)


def test_a_diverging_run_reports_it():
    X, y, X_test, y_test, _ = DATA
    r = analytic.diag_train(X, y, X_test, y_test, method="gd", lr=50.0, iters=1000)
    assert r.status == "diverged" and r.iterations < 1000
    assert np.isnan(r.final_test_loss)
    assert np.all(np.isfinite(r.u))
