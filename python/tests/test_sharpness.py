"""samlab.sharpness (the Rust ascent on callables) against samlab.torch.sharpness (the PyTorch one) and closed
forms, and its refusals of bad input."""

import math

import numpy as np
import pytest

from samlab import sharpness

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")


# --- a float64 torch model as callables ------------------------------------------------------------------------


def _problem(n=12):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return net, x, y


def _callables(net, x, y):
    from torch.func import functional_call

    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy().copy()

    def split(flat):
        out, at = {}, 0
        for name, shape in zip(names, shapes):
            k = math.prod(shape)
            out[name] = flat[at : at + k].view(shape)
            at += k
        return out

    def loss_at(flat, rows):
        idx = torch.as_tensor(rows.astype(np.int64))
        return torch.nn.functional.mse_loss(functional_call(net, split(flat), (x[idx],)), y[idx])

    def loss_and_grad(w, rows):
        p = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        loss = loss_at(p, rows)
        (g,) = torch.autograd.grad(loss, p)
        return float(loss.detach()), g.numpy()

    def loss_fn(w, rows):
        with torch.no_grad():
            return float(loss_at(torch.tensor(w, dtype=torch.float64), rows))

    return w0, loss_and_grad, loss_fn


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


CASES = [
    dict(norm="l2", adaptive=False, m=3),
    dict(norm="l2", adaptive=False, m=None),
    dict(norm="linf", adaptive=False, m=4),
    dict(norm="l2", adaptive=True, m=6),
    dict(norm="linf", adaptive=True, m=2),
    dict(norm="l2", adaptive=False, m=3, normalize=False, step_size_mult=2.0),
    dict(norm="linf", adaptive=False, m=12, normalize=False, step_size_mult=3.0),
]


@needs_torch
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_worst_case_equals_samlab_torch(case):
    import samlab.torch as st

    net, x, y = _problem()
    w0, loss_and_grad, _ = _callables(net, x, y)
    rho = 0.3 if case["norm"] == "l2" else 0.05
    if case["adaptive"]:
        rho *= 2
    # 15 steps of 0.1 rho (normalized): the iterates reach the boundary, so the projections are exercised.
    kw = dict(rho=rho, steps=15, **case)
    ours = sharpness.worst_case(loss_and_grad, w0, len(x), **kw)
    theirs = st.sharpness(net, torch.nn.functional.mse_loss, (x, y), random_init=False, **kw)
    assert ours.sharpness > 0
    assert _rel(ours.sharpness, theirs.loss_increase) < 1e-10
    assert _rel(ours.loss, theirs.loss) < 1e-10
    assert _rel(ours.group_loss, theirs.group_loss) < 1e-10
    assert _rel(ours.group_max_loss, theirs.group_max_loss) < 1e-10
    assert _rel(ours.group_delta_norm, theirs.group_delta_norm) < 1e-10
    if case.get("normalize", True):
        assert np.allclose(ours.group_delta_norm, rho, rtol=1e-6)
    assert len(ours.group_sharpness) == (1 if case["m"] is None else len(x) // case["m"])
    # The model's parameters are untouched by either.
    assert np.array_equal(torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy(), w0)


@needs_torch
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_random_restarts_are_bounded_and_seeded(norm, adaptive):
    # The random starts come from a NumPy RandomState here and from torch.Generator in samlab.torch: the streams
    # differ, so the restarts are checked against bounds, not against samlab.torch.
    net, x, y = _problem()
    w0, loss_and_grad, _ = _callables(net, x, y)
    rho = 0.2 if norm == "l2" else 0.03
    kw = dict(rho=rho, m=4, steps=5, norm=norm, adaptive=adaptive)
    one = sharpness.worst_case(loss_and_grad, w0, 12, **kw)
    many = sharpness.worst_case(loss_and_grad, w0, 12, restarts=4, seed=3, **kw)
    again = sharpness.worst_case(loss_and_grad, w0, 12, restarts=4, seed=3, **kw)
    other = sharpness.worst_case(loss_and_grad, w0, 12, restarts=4, seed=4, **kw)
    assert np.array_equal(many.group_max_loss, again.group_max_loss)
    assert not np.array_equal(many.group_max_loss, other.group_max_loss)
    assert np.all(many.group_delta_norm <= rho * (1 + 1e-8))
    assert np.all(many.group_max_loss >= many.group_loss - 1e-12)
    # Every restart is an ascent of the same length: the best of four random ones is not far below the ascent
    # from 0 (it is usually above it).
    assert many.sharpness > 0.5 * one.sharpness


@needs_torch
def test_average_case_is_seeded_and_matches_its_own_draws():
    net, x, y = _problem()
    w0, _, loss_fn = _callables(net, x, y)
    a = sharpness.average_case(loss_fn, w0, 12, rho=0.5, m=6, samples=4, seed=2)
    b = sharpness.average_case(loss_fn, w0, 12, rho=0.5, m=6, samples=4, seed=2)
    assert a.sharpness == b.sharpness and a.draws.shape == (2, 4)
    assert a.sigma == pytest.approx(0.5 / math.sqrt(w0.size), rel=1e-15)
    # The draws of RandomState(seed), group after group: recompute them here.
    rs = np.random.RandomState(2)
    want = []
    for g in range(2):
        rows = np.arange(6 * g, 6 * g + 6, dtype=np.uint64)
        base = loss_fn(w0, rows)
        want.append([loss_fn(w0 + a.sigma * rs.standard_normal(w0.size), rows) - base for _ in range(4)])
    assert _rel(a.draws, want) < 1e-10
    assert a.std_error == pytest.approx(np.std(want, ddof=1) / math.sqrt(8), rel=1e-10)
    assert "AverageCase(sharpness=" in repr(a)


# --- closed forms in NumPy -------------------------------------------------------------------------------------


def _quadratic(A, b=None):
    b = np.zeros(len(A)) if b is None else b

    def loss_and_grad(w, rows):
        return float(0.5 * w @ A @ w + b @ w), A @ w + b

    return loss_and_grad


def test_quadratic_worst_case_is_the_top_eigenvalue():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    ev = np.array([2.5, 1.0, 0.3, -0.4, 0.1])
    A = (q * ev) @ q.T
    r = sharpness.worst_case(_quadratic(A), np.zeros(5), 4, rho=0.2, m=2, steps=300, step_size_mult=0.5, restarts=3)
    want = 0.2**2 * ev.max() / 2
    assert np.allclose(r.group_sharpness, want, rtol=1e-8, atol=0)
    assert np.allclose(r.group_delta_norm, 0.2, rtol=1e-12)


def test_linear_worst_case_is_closed_form():
    b = np.array([0.5, -2.0, 0.0, 1.5])
    w = np.array([1.0, -0.5, 0.2, 0.0])
    lg = _quadratic(np.zeros((4, 4)), b)
    l2 = sharpness.worst_case(lg, w, 8, rho=0.1, m=4, steps=3, step_size_mult=1.0)
    assert l2.sharpness == pytest.approx(0.1 * np.linalg.norm(b), rel=1e-12)
    linf = sharpness.worst_case(lg, w, 8, rho=0.1, m=4, steps=3, norm="linf", step_size_mult=1.0)
    assert linf.sharpness == pytest.approx(0.1 * np.abs(b).sum(), rel=1e-12)
    box = sharpness.worst_case(lg, w, 8, rho=0.1, steps=3, norm="linf", adaptive=True, step_size_mult=1.0)
    assert box.sharpness == pytest.approx(0.1 * np.abs(b * w).sum(), rel=1e-12)
    assert box.group_delta_norm[0] == pytest.approx(0.1, rel=1e-12)
    assert "WorstCase(sharpness=" in repr(l2)
    zero = sharpness.worst_case(lg, w, 8, rho=0.0)
    assert zero.sharpness == 0.0


def test_average_case_on_a_quadratic_is_unbiased():
    A = np.diag([1.0, 2.0, 3.0])
    r = sharpness.average_case(lambda w, rows: float(0.5 * w @ A @ w), np.zeros(3), 1, rho=0.3, samples=4000)
    # E[0.5 sigma^2 z^T A z] = 0.5 sigma^2 tr(A)
    want = 0.5 * (0.3**2 / 3) * 6.0
    assert abs(r.sharpness - want) < 4 * r.std_error


# --- bad input -------------------------------------------------------------------------------------------------


def _ok(w, rows):
    return float(w @ w), 2 * w


W = np.ones(3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rho=-0.1), ValueError, "rho"),
        (dict(rho=float("nan")), ValueError, "rho"),
        (dict(rho="big"), TypeError, "rho"),
        (dict(m=3), ValueError, "m"),
        (dict(m=0), ValueError, "m"),
        (dict(steps=0), ValueError, "steps"),
        (dict(restarts=0), ValueError, "restarts"),
        (dict(restarts=2, random_init=False), ValueError, "restarts"),
        (dict(norm="l1"), ValueError, "norm"),
        (dict(step_size_mult=0.0), ValueError, "step_size_mult"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(steps=1.5), TypeError, "steps"),
    ],
)
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        sharpness.worst_case(_ok, W, 4, **kwargs)


def test_bad_w_and_n():
    with pytest.raises(ValueError, match="w"):
        sharpness.worst_case(_ok, np.array([1.0, np.nan, 0.0]), 4)
    with pytest.raises(TypeError, match="float64"):
        sharpness.worst_case(_ok, np.ones(3, dtype=np.float32), 4)
    with pytest.raises(TypeError, match="w must be"):
        sharpness.worst_case(_ok, [1.0, 2.0], 4)
    with pytest.raises(ValueError, match="1-D"):
        sharpness.worst_case(_ok, np.ones((2, 2)), 4)
    with pytest.raises(ValueError, match="n must be"):
        sharpness.worst_case(_ok, W, 0)
    with pytest.raises(TypeError, match="callable"):
        sharpness.worst_case(None, W, 4)
    with pytest.raises(ValueError, match="samples"):
        sharpness.average_case(lambda w, r: 0.0, W, 4, samples=0)


class ModelError(Exception):
    pass


def _raises(w, rows):
    raise ModelError("from the model")


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda w, r: (0.0, np.ones(2)), ValueError, "length 2"),
        (lambda w, r: (0.0, np.ones(3, dtype=np.float32)), TypeError, "float64"),
        (lambda w, r: (0.0, np.array([1.0, np.nan, 0.0])), ValueError, "non-finite"),
        (lambda w, r: (float("nan"), np.ones(3)), ValueError, "non-finite"),
        (lambda w, r: np.ones(3), TypeError, "must return"),
        (_raises, ModelError, "from the model"),
    ],
)
def test_bad_callables(fn, error, match):
    with pytest.raises(error, match=match):
        sharpness.worst_case(fn, W, 4, m=2)


def test_bad_loss_fn():
    with pytest.raises(ValueError, match="non-finite"):
        sharpness.average_case(lambda w, r: float("inf"), W, 4)
    with pytest.raises(TypeError, match="float"):
        sharpness.average_case(lambda w, r: "x", W, 4)
    with pytest.raises(ModelError):
        sharpness.average_case(_raises, W, 4)
