"""samlab.torch against dense Hessians from torch.autograd.functional, and its refusals of bad input."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import samlab.torch as st  # noqa: E402
from samlab import curvature  # noqa: E402

F = torch.nn.functional
f64 = torch.float64


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).to(f64)


def cnn():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.Tanh(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).to(f64)


def bn_mlp():
    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).to(f64)
    with torch.no_grad():  # running statistics and affine parameters away from their initial values
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def data_for(name, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1, 6, 6) if name == "cnn" else (n, 4)
    return torch.randn(shape, generator=g, dtype=f64), torch.randint(0, 3, (n,), generator=g)


NETS = {"mlp": mlp, "cnn": cnn, "bn_mlp": bn_mlp}


def functional(model, names, shapes):
    """theta -> {name: view} for torch.func.functional_call."""
    sizes = [math.prod(s) for s in shapes]

    def split(theta):
        out, at = {}, 0
        for n, s, k in zip(names, shapes, sizes):
            out[n] = theta[at : at + k].view(s)
            at += k
        return out

    return split


def dense_hessian(model, loss_fn, x, y, names, train):
    """The Hessian over ``names`` from torch.autograd.functional.hessian, BatchNorm in train or eval mode."""
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    split = functional(model, names, shapes)
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [(m, m.training) for m in model.modules()]
    model.train(train)
    h = torch.autograd.functional.hessian(
        lambda t: loss_fn(torch.func.functional_call(model, split(t), (x,)), y), theta
    )
    model.load_state_dict(saved)
    for m, mode in modes:
        m.training = mode
    return h.numpy()


def dense_ggn(model, loss_fn, x, y, names, train):
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    split = functional(model, names, shapes)
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [(m, m.training) for m in model.modules()]
    model.train(train)
    out = model(x).detach()
    jac = torch.autograd.functional.jacobian(lambda t: torch.func.functional_call(model, split(t), (x,)), theta)
    model.load_state_dict(saved)
    for m, mode in modes:
        m.training = mode
    j = jac.reshape(out.numel(), -1).numpy()
    ho = torch.autograd.functional.hessian(lambda o: loss_fn(o.view_as(out), y), out.reshape(-1)).numpy()
    return j.T @ ho @ j


def all_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("net", NETS)
def test_lanczos_on_the_hessian_equals_eigh_of_the_dense_hessian(net):
    model = NETS[net]()
    x, y = data_for(net)
    op = st.hessian(model, F.cross_entropy, (x, y), bn="train")
    dense = dense_hessian(model, F.cross_entropy, x, y, all_names(model), train=True)
    assert op.dim == dense.shape[0]
    exact = np.linalg.eigh(dense)[0]
    r = curvature.lanczos(op, k=5, which="both", tol=1e-10, max_iter=op.dim)
    np.testing.assert_allclose(r.eigenvalues[:5], exact[::-1][:5], rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.eigenvalues[5:], exact[:5], rtol=0, atol=1e-6)
    # The products themselves, column by column.
    np.testing.assert_allclose(op.dense(), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("net", NETS)
def test_the_cached_gradient_graph_gives_the_uncached_products_and_follows_parameter_changes(net):
    model = NETS[net]()
    x, y = data_for(net)
    halves = [(x[:10], y[:10]), (x[10:], y[10:])]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cached = st.hessian(model, F.cross_entropy, (x, y))
    assert cached.cache  # one batch: cached by default
    assert not st.hessian(model, F.cross_entropy, halves).cache
    cached_halves = st.hessian(model, F.cross_entropy, halves, cache=True)
    v = np.random.default_rng(0).standard_normal(cached.dim)
    plain = st.hessian(model, F.cross_entropy, (x, y), cache=False)(v)
    np.testing.assert_allclose(cached(v), plain, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cached(v), plain, rtol=0, atol=1e-12)  # the second product reuses the graph
    halves_plain = st.hessian(model, F.cross_entropy, halves)(v)  # BatchNorm's statistics are per batch
    np.testing.assert_allclose(cached_halves(v), halves_plain, rtol=0, atol=1e-12)
    for k, t in model.state_dict().items():  # BatchNorm's running statistics restored after the build
        torch.testing.assert_close(t, before[k], rtol=0, atol=0)
    with torch.no_grad():  # an optimizer-like in-place step: the next product is at the new parameters
        for p in model.parameters():
            p.add_(0.05)
    moved = st.hessian(model, F.cross_entropy, (x, y), cache=False)(v)
    assert np.abs(moved - plain).max() > 1e-6
    np.testing.assert_allclose(cached(v), moved, rtol=0, atol=1e-12)


def test_batchnorm_train_mode_restores_running_statistics_and_modes_and_eval_mode_uses_them():
    model = bn_mlp()
    model.train()
    model[3].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data_for("bn_mlp")
    for bn in ("train", "eval"):
        op = st.hessian(model, F.cross_entropy, (x, y), bn=bn)
        dense = dense_hessian(model, F.cross_entropy, x, y, all_names(model), train=bn == "train")
        r = curvature.lanczos(op, k=3, tol=1e-10, max_iter=op.dim)
        np.testing.assert_allclose(r.eigenvalues, np.linalg.eigh(dense)[0][::-1][:3], rtol=0, atol=1e-6)
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert model.training and model[1].training and not model[3].training
    # The two modes are different operators.
    a = st.hessian(model, F.cross_entropy, (x, y), bn="train").dense()
    b = st.hessian(model, F.cross_entropy, (x, y), bn="eval").dense()
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_per_layer_params_give_the_dense_block(net):
    model = NETS[net]()
    x, y = data_for(net)
    names = all_names(model)
    full = dense_hessian(model, F.cross_entropy, x, y, names, train=False)
    sizes = [dict(model.named_parameters())[n].numel() for n in names]
    starts = np.cumsum([0, *sizes])
    for i, name in enumerate(names):
        op = st.hessian(model, F.cross_entropy, (x, y), params=[name])
        block = full[starts[i] : starts[i + 1], starts[i] : starts[i + 1]]
        assert op.dim == sizes[i] and op.names == (name,)
        np.testing.assert_allclose(op.dense(), block, rtol=0, atol=1e-12)
        if op.dim >= 2:
            r = curvature.lanczos(op, k=1, which="both", tol=1e-10, max_iter=op.dim)
            ev = np.linalg.eigh(block)[0]
            np.testing.assert_allclose(r.eigenvalues, [ev[-1], ev[0]], rtol=0, atol=1e-6)
    # Parameters by tensor, and a module's name for all of its parameters, in the order given.
    last = names[-2:]  # the last Linear's weight and bias
    module = last[0].rsplit(".", 1)[0]
    p = dict(model.named_parameters())
    by_tensor = st.hessian(model, F.cross_entropy, (x, y), params=[p[last[1]], p[last[0]]])
    assert by_tensor.names == (last[1], last[0])
    by_module = st.hessian(model, F.cross_entropy, (x, y), params=module)
    assert by_module.names == tuple(last)
    block = full[starts[-3] :, starts[-3] :]
    np.testing.assert_allclose(by_module.dense(), block, rtol=0, atol=1e-12)


def test_batches_are_weighted_by_their_sizes():
    model = mlp()
    x, y = data_for("mlp", n=20)
    one = st.hessian(model, F.cross_entropy, (x, y)).dense()
    two = st.hessian(model, F.cross_entropy, [(x[:7], y[:7]), (x[7:], y[7:])])
    assert two.batches == 2 and two.examples == 20
    np.testing.assert_allclose(two.dense(), one, rtol=0, atol=1e-12)
    # A DataLoader and a generator are read once and give the same operator.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    np.testing.assert_allclose(st.hessian(model, F.cross_entropy, loader).dense(), one, rtol=0, atol=1e-12)
    gen = ((x[i : i + 9], y[i : i + 9]) for i in range(0, 20, 9))
    want = st.ggn(model, F.cross_entropy, (x, y)).dense()
    np.testing.assert_allclose(st.ggn(model, F.cross_entropy, gen).dense(), want, rtol=0, atol=1e-12)


def squared_error(out, y):
    return F.mse_loss(out, F.one_hot(y, 3).to(f64))


@pytest.mark.parametrize(
    ("net", "loss_fn"), [("mlp", F.cross_entropy), ("cnn", squared_error), ("bn_mlp", F.cross_entropy)]
)
def test_ggn_equals_the_dense_jacobian_product_and_the_residual_the_rest(net, loss_fn):
    model = NETS[net]()
    x, y = data_for(net)
    names = all_names(model)
    g = st.ggn(model, loss_fn, (x, y)).dense()
    want = dense_ggn(model, loss_fn, x, y, names, train=True)
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(g).min() > -1e-12  # convex losses in the output: positive semi-definite
    h = dense_hessian(model, loss_fn, x, y, names, train=True)
    np.testing.assert_allclose(st.hessian_residual(model, loss_fn, (x, y)).dense(), h - want, rtol=0, atol=1e-12)
    r = curvature.lanczos(st.ggn(model, loss_fn, (x, y)), k=3, tol=1e-10, max_iter=len(g))
    np.testing.assert_allclose(r.eigenvalues, np.linalg.eigh(want)[0][::-1][:3], rtol=0, atol=1e-6)


def test_trace_and_diagonal_are_within_their_standard_errors():
    model = mlp()
    x, y = data_for("mlp")
    op = st.hessian(model, F.cross_entropy, (x, y))
    dense = op.dense()
    for method in ("hutchinson", "hutch++"):
        t = curvature.trace(op, probes=60, method=method, seed=3)
        assert abs(t.estimate - np.trace(dense)) <= 4 * t.std_error + 1e-10
    d = curvature.diagonal(op, probes=60, seed=4)
    assert np.all(np.abs(d.diagonal - np.diag(dense)) <= 5 * d.std_error + 1e-10)


def test_float32_models_give_float32_products():
    model = mlp().float()
    x, y = data_for("mlp")
    op = st.hessian(model, F.cross_entropy, (x.float(), y))
    v = op(np.ones(op.dim))
    assert v.dtype == np.float32 and v.shape == (op.dim,)
    assert op.products == 1
    r = curvature.lanczos(op, k=2, tol=1e-4, max_iter=op.dim)
    exact = np.linalg.eigh(st.hessian(mlp(), F.cross_entropy, data_for("mlp")).dense())[0][::-1][:2]
    np.testing.assert_allclose(r.eigenvalues, exact, rtol=1e-4)


# --- sharpness ---


def quadratic(seed=0, d=3, m=4, groups=3, isotropic=True):
    """A linear model with loss ||Xw - y||^2 / (2m) per group: gradient g_C, Hessian X_C^T X_C / m (I if isotropic)."""
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(groups):
        a = rng.standard_normal((m, d))
        if isotropic:  # orthonormal columns times sqrt(m): X_C^T X_C / m = I
            a = np.linalg.qr(a)[0] * math.sqrt(m)
        xs.append(a)
    x = torch.tensor(np.concatenate(xs))
    y = torch.tensor(rng.standard_normal((m * groups, 1)))
    model = torch.nn.Linear(d, 1, bias=False).to(f64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(rng.choice([-1.0, 1.0], size=(1, d))))

    def loss_fn(out, target):
        return 0.5 * ((out - target) ** 2).mean()

    w = model.weight.detach().numpy().ravel()
    parts = []
    for c in range(groups):
        xc, yc = x[c * m : (c + 1) * m].numpy(), y[c * m : (c + 1) * m].numpy().ravel()
        parts.append((xc.T @ (xc @ w - yc) / m, xc.T @ xc / m))
    return model, loss_fn, (x, y), parts


def test_sharpness_is_zero_at_rho_zero_and_grows_with_rho():
    model = mlp()
    x, y = data_for("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert st.sharpness(model, F.cross_entropy, (x, y), rho=0.0, m=6).loss_increase == 0.0
    values = [st.sharpness(model, F.cross_entropy, (x, y), rho=r, m=6).loss_increase for r in (0.01, 0.03, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2] < values[3]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    s = st.sharpness(model, F.cross_entropy, (x, y), rho=0.1, m=6)
    assert len(s.group_loss) == 4 and s.max_delta_norm <= 0.1 * (1 + 1e-12)
    assert s.loss == pytest.approx(float(F.cross_entropy(model(x), y).detach()), rel=1e-12)  # equal groups


def test_sharpness_of_an_isotropic_quadratic_is_the_closed_form():
    model, loss_fn, data, parts = quadratic()
    rho = 0.2
    s = st.sharpness(model, loss_fn, data, rho=rho, m=4)
    # max over ||delta|| <= rho of g.delta + |delta|^2 / 2 = rho |g| + rho^2 / 2, at delta = rho g / |g|.
    want = np.mean([rho * np.linalg.norm(g) + rho**2 / 2 for g, _ in parts])
    assert s.loss_increase == pytest.approx(want, rel=1e-10)
    # linf: at delta = rho sign(g): rho |g|_1 + d rho^2 / 2.
    s = st.sharpness(model, loss_fn, data, rho=rho, m=4, norm="linf")
    want = np.mean([rho * np.abs(g).sum() + 3 * rho**2 / 2 for g, _ in parts])
    assert s.loss_increase == pytest.approx(want, rel=1e-10)
    # |w| = 1: the adaptive ellipsoid is the ball.
    a = st.sharpness(model, loss_fn, data, rho=rho, m=4, adaptive=True)
    assert a.loss_increase == pytest.approx(st.sharpness(model, loss_fn, data, rho=rho, m=4).loss_increase, rel=1e-8)
    # Average case: E[g.sigma z + sigma^2 |z|^2 / 2] = rho^2 / 2.
    avg = st.sharpness(model, loss_fn, data, rho=rho, m=4, steps=0, samples=400).average
    assert avg.sigma == pytest.approx(rho / math.sqrt(3))
    assert abs(avg.loss_increase - rho**2 / 2) <= 5 * avg.std_error


def test_sharpness_of_a_quadratic_lies_within_its_bounds():
    model, loss_fn, data, parts = quadratic(seed=1, d=5, m=8, isotropic=False)
    rho = 0.3
    for restarts in (1, 4):
        s = st.sharpness(model, loss_fn, data, rho=rho, m=8, steps=50, restarts=restarts, seed=2)
        for c, (g, h) in enumerate(parts):
            lam = np.linalg.eigvalsh(h)
            u = g / np.linalg.norm(g)
            lower = rho * np.linalg.norm(g) + rho**2 / 2 * u @ h @ u  # the value at rho g / |g|
            upper = rho * np.linalg.norm(g) + rho**2 / 2 * lam[-1]
            got = s.group_max_loss[c] - s.group_loss[c]
            assert lower - 1e-9 <= got <= upper + 1e-12
        assert np.all(s.group_delta_norm <= rho * (1 + 1e-12))


def test_sharpness_in_batchnorm_train_mode_leaves_the_model_unchanged():
    model = bn_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data_for("bn_mlp")
    a = st.sharpness(model, F.cross_entropy, (x, y), rho=0.05, m=12, bn="train")
    b = st.sharpness(model, F.cross_entropy, (x, y), rho=0.05, m=12, bn="eval")
    assert a.loss_increase > 0 and b.loss_increase > 0 and a.loss != b.loss
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training


def test_samlab_torch_re_exports_the_sam_optimizer():
    import samlab.sam

    assert st.SAM is samlab.sam.SAM


# --- bad input ---


def test_bad_input_is_a_value_or_type_error_naming_the_problem():
    model = mlp()
    x, y = data_for("mlp")
    op = st.hessian(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match="dim 51"):
        op(np.ones(50))
    with pytest.raises(ValueError, match="disagrees with the operator's dim = 51"):
        curvature.lanczos(op, 50, k=2)
    with pytest.raises(ValueError, match="no batches"):
        st.hessian(model, F.cross_entropy, [])
    with pytest.raises(ValueError, match="empty"):
        st.hessian(model, F.cross_entropy, (x[:0], y[:0]))
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        st.hessian(model, F.cross_entropy, [x, y, x])
    with pytest.raises(TypeError, match="data must be"):
        st.hessian(model, F.cross_entropy, x)
    with pytest.raises(ValueError, match="no parameter or module named 'nope'"):
        st.hessian(model, F.cross_entropy, (x, y), params=["nope"])
    with pytest.raises(ValueError, match="params is empty"):
        st.hessian(model, F.cross_entropy, (x, y), params=[])
    with pytest.raises(ValueError, match="chosen twice"):
        st.hessian(model, F.cross_entropy, (x, y), params=["0.weight", "0"])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        st.hessian(model, F.cross_entropy, (x, y), params=[torch.zeros(3)])
    with pytest.raises(ValueError, match="bn must be 'train' or 'eval'"):
        st.ggn(model, F.cross_entropy, (x, y), bn="running")
    with pytest.raises(ValueError, match="scalar"):
        st.hessian(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), (x, y))(np.ones(51))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        st.hessian(lambda t: t, F.cross_entropy, (x, y))
    with pytest.raises(TypeError, match="cache must be True, False or None"):
        st.hessian(model, F.cross_entropy, (x, y), cache="yes")
    model[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="'0.weight' does not require grad"):
        st.hessian(model, F.cross_entropy, (x, y), params=["0.weight"])
    assert st.hessian(model, F.cross_entropy, (x, y)).dim == 51 - 24  # None: only those that require grad
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        st.hessian(model, F.cross_entropy, (x, y))


def test_sharpness_toward_random_wrong_labels_and_selection_by_error():
    model = mlp()
    x, y = data_for("mlp")
    kw = dict(rho=0.3, m=6, steps=5, restarts=4, seed=3)
    # Descending toward wrong labels raises the true-label loss; rho = 0 stays 0; the model is unchanged.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = st.sharpness(model, F.cross_entropy, (x, y), target="random-wrong", **kw)
    assert wrong.loss_increase > 0 and (wrong.target, wrong.select) == ("random-wrong", "loss")
    assert st.sharpness(model, F.cross_entropy, (x, y), rho=0.0, m=6, target="random-wrong").loss_increase == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # The same seed draws the same restarts: keeping the largest loss is, group by group, at least what keeping
    # the largest error gives, and with one restart the two are the same.
    for target, random_init in [("random-wrong", False), ("labels", True), ("random-wrong", True)]:
        kw2 = dict(kw, target=target, random_init=random_init)
        by_loss = st.sharpness(model, F.cross_entropy, (x, y), select="loss", **kw2)
        by_error = st.sharpness(model, F.cross_entropy, (x, y), select="error", **kw2)
        assert np.all(by_loss.group_max_loss >= by_error.group_max_loss)
        one = dict(kw2, restarts=1)
        a = st.sharpness(model, F.cross_entropy, (x, y), select="loss", **one)
        b = st.sharpness(model, F.cross_entropy, (x, y), select="error", **one)
        np.testing.assert_array_equal(a.group_max_loss, b.group_max_loss)
    # Wrong labels need a classifier.
    model_r, loss_r, data_r, _ = quadratic()
    with pytest.raises(ValueError, match="need a classifier"):
        st.sharpness(model_r, loss_r, data_r, rho=0.1, m=None, target="random-wrong")
    with pytest.raises(ValueError, match="need a classifier"):
        st.sharpness(model_r, loss_r, data_r, rho=0.1, m=None, select="error")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rho": -0.1}, "rho must be finite and >= 0"),
        ({"rho": float("nan")}, "rho must be finite"),
        ({"m": 5}, "m = 5 does not divide batch 0 of data, of 24 examples"),
        ({"m": 0}, "m must be a positive integer"),
        ({"restarts": 0}, "restarts must be a positive integer"),
        ({"restarts": 2, "random_init": False}, "needs random_init=True or target='random-wrong'"),
        ({"target": "wrong"}, "target must be 'labels' or 'random-wrong'"),
        ({"select": "acc"}, "select must be 'loss' or 'error'"),
        ({"steps": -1}, "steps must be a non-negative integer"),
        ({"samples": 0}, "samples must be a positive integer"),
        ({"norm": "l1"}, "norm must be 'l2' or 'linf'"),
        ({"bn": "batch"}, "bn must be"),
        ({"step_size_mult": 0.0}, "step_size_mult"),
    ],
)
def test_sharpness_refuses_bad_settings(kwargs, match):
    model = mlp()
    x, y = data_for("mlp")
    kwargs = {"m": 6, **kwargs}
    with pytest.raises(ValueError, match=match):
        st.sharpness(model, F.cross_entropy, (x, y), **kwargs)
