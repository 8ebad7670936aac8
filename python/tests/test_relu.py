"""samlab.analytic.relu_train: the Rust engine's pinned numbers (bench/relu_reference.py, NumPy) through Python."""

import numpy as np
import pytest

from samlab import analytic

# (options, final train loss, sum of all parameters, updates): the cases of
# crates/samlab-analytic/src/relu/train/tests.rs `matches_numpy_reference` (width 100, bias, the notebook's init
# from seed 0, summed loss), pinned there to 1e-9.
PINNED = [
    (dict(method="gd", lr=5e-5, iters=2000), 0.556814920209392, -13.36866605807694, 2000),
    (
        dict(method="nsam", rho=0.3, normalize=True, lr=5e-5, iters=2000, lr_schedule="linear-decay"),
        1.259705756471614,
        -27.547916721439993,
        2000,
    ),
    (dict(method="1sam", rho=1e-3, lr=5e-5, iters=2000), 0.13441286211915485, -38.03874997045708, 2000),
    (
        dict(
            method="msam",
            m=4,
            rho=0.05,
            clip=True,
            sam_options={"ascent_steps": 3, "ascent_step_mult": 0.5},
            lr=5e-5,
            iters=1000,
        ),
        8.503555526709784,
        -14.085289676458636,
        1000,
    ),
    (
        dict(
            method="sgd",
            batch_size=2,
            seed=1,
            init_seed=0,
            loss="mean",
            lr=4e-4,
            iters=3000,
            lr_schedule="step",
            decay_at=[0.3],
            decay_factor=[0.25],
            warmup_steps=100,
        ),
        0.12432052084721737,
        -12.785756898184367,
        3000,
    ),
]


@pytest.mark.parametrize("case", range(len(PINNED)))
def test_relu_train_equals_the_pinned_numbers(case):
    options, train, param_sum, updates = PINNED[case]
    X, y, X_test, y_test = analytic.twelve_points()
    r = analytic.relu_train(X, y, X_test, y_test, log="ends", **options)
    assert r.status == "ok" and r.iterations == updates and not r.stopped_early
    assert r.final_train_loss == pytest.approx(train, rel=1e-9)
    assert r.params.sum() == pytest.approx(param_sum, rel=1e-9)
    assert r.w.shape == (100, 1) and r.b.shape == r.a.shape == (100,)
    np.testing.assert_array_equal(r.params, np.concatenate([r.w.T.ravel(), r.b, r.a]))


def test_the_teacher_student_run_equals_the_pinned_numbers():
    X, y, X_test, y_test, w_teacher, a_teacher = analytic.teacher_student()
    np.testing.assert_allclose(y[:3], [0.20675061405725015, 0.9886146789778149, -0.07221556570467469], rtol=1e-14)
    np.testing.assert_allclose(y, np.maximum(X @ w_teacher.T, 0) @ a_teacher, rtol=1e-12)
    r = analytic.relu_train(
        X,
        y,
        X_test,
        y_test,
        method="sgd",
        batch_size=1,
        loss="mean",
        lr=0.26,
        iters=3000,
        width=20,
        bias=False,
        init="gaussian",
        w_scale=0.5,
        a_scale=0.0,
        log="ends",
    )
    assert r.final_train_loss == pytest.approx(0.00030924270161482206, rel=1e-9)
    assert r.params.sum() == pytest.approx(6.896177313121862, rel=1e-9)
    np.testing.assert_array_equal(r.b, 0.0)


def test_the_stop_rule_ends_a_run():
    X, y, *_ = analytic.twelve_points()
    r = analytic.relu_train(X, y, method="gd", lr=5e-5, iters=5000, stop_below=1.0)
    assert r.stopped_early and r.iterations < 5000 and r.status == "ok"


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (dict(init="he", init_scale=2.0), 'init_scale is an option of init "blanc"'),
        (dict(init="xavier"), "init must be"),
        (dict(lr_schedule="exp"), "lr_schedule must be one of"),
        (dict(decay_at=[0.5]), 'need lr_schedule "step"'),
        (dict(warmup_steps=5, warmup_exp=(0.1, 1.1)), "exclude each other"),
        (dict(loss="l1"), "loss must be"),
        (dict(width=0), "width"),
        (dict(lr_schedule="step", decay_at=[0.5], decay_factor=[]), "factor|decay"),
        (dict(lr=float("nan")), "finite"),
    ],
)
def test_bad_options_are_value_errors_naming_them(kw, words):
    X, y, *_ = analytic.twelve_points()
    kw = {"method": "gd", "lr": 5e-5, "iters": 5, **kw}
    with pytest.raises(ValueError, match=words):
        analytic.relu_train(X, y, **kw)
