"""samlab.torch.SAM: the conformance vectors of samlab's engine (to 1e-10 in float64), the two APIs, state, the
BatchNorm policies and the refusals of bad input."""

import copy
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from samlab import _samlab, conformance  # noqa: E402
from samlab.sam import SAM, VARIANTS  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny float64 problems: one intra-op thread (on a busy machine, two threads make each small op slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    d = tmp_path_factory.mktemp("conformance")
    conformance.write(d)
    return d


def test_variants_are_the_variant_table():
    """samlab.sam's variants and their defaults are samlab's variant table (``sam::VARIANTS``), in its order."""
    table = {name: json.loads(v) for name, v in _samlab.variant_defaults().items()}
    assert list(VARIANTS) == list(table)
    for name, options in VARIANTS.items():
        expected = {("lam" if k == "lambda" else k): v for k, v in table[name].items() if k != "kind"}
        assert options == expected, name


def test_every_case_equals_samlab_engine(vectors):
    errors = conformance.check(conformance.samlab_factory, vectors)
    assert len(errors) == 3 * len(conformance.CASES)
    bad = {k: v for k, v in errors.items() if v is None or v > 1e-10}
    assert not bad, bad


def test_perturbations_gradient_counts_and_state_equal_the_engine(vectors):
    _, specs = conformance.load(vectors)
    for spec in specs:
        model = conformance.torch_model(spec)
        opt = conformance.samlab_factory(spec, model)
        closure = conformance.closure_for(model, torch.from_numpy(spec["X"]), torch.from_numpy(spec["y"]))
        evals = 0
        for t, record in enumerate(spec["record"]):
            opt.step(closure, batch_size=spec["batch"])
            evals += record["gradient_evals"]
            assert opt.gradient_evals == evals, spec["name"]
            want = spec["arrays"][f"t{t}_deltas"]
            got = np.stack(
                [
                    np.zeros(want.shape[1]) if d is None else torch.cat([x.reshape(-1) for x in d]).numpy()
                    for d in opt.last_deltas
                ]
            )
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{spec['name']} step {t}")
            if f"t{t}_state" in spec["arrays"]:
                state = torch.cat([x.reshape(-1) for x in opt.direction]).numpy()
                np.testing.assert_allclose(state, spec["arrays"][f"t{t}_state"], rtol=0, atol=1e-12)


def test_the_checker_sees_a_wrong_rule(vectors):
    def plain_sam(spec, model):
        spec = dict(spec)
        keep = ("rho", "m", "normalization", "ascent_steps", "ascent_step_mult", "random_init", "random_perturbation")
        spec["options"] = {k: v for k, v in spec["options"].items() if k in keep}
        return conformance.samlab_factory(spec, model)

    variants = [c for c in conformance.CASES if c in ("asam", "gsam", "fisher-sam", "fsam", "vasso", "looksam", "msam")]
    errors = conformance.check(plain_sam, vectors, cases=[f"mlp-{c}" for c in variants])
    assert all(e > 1e-4 for e in errors.values()), errors


def test_cli_writes_and_checks(vectors, tmp_path):
    assert conformance.main(["write", str(tmp_path)]) == 0
    for f in ("manifest.json", "mlp-looksam/case.json", "bn-esam/t1_w.npy"):  # deterministic: the same files
        assert (tmp_path / f).read_bytes() == (vectors / f).read_bytes(), f
    assert conformance.main(["check", str(vectors)]) == 0
    assert conformance.main(["bogus"]) == 2
    (tmp_path / "manifest.json").write_text('{"format": "samlab-conformance", "version": 99, "cases": []}')
    with pytest.raises(ValueError, match="version 99"):
        conformance.load(tmp_path)


# --- small models ------------------------------------------------------------------------------------------------


def mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(3, 5)]
    if bn:
        layers.append(torch.nn.BatchNorm1d(5))
    layers += [torch.nn.Tanh(), torch.nn.Linear(5, 1)]
    return torch.nn.Sequential(*layers).double()


def data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x[:, 0:1])


def closure_of(model, x, y):
    def closure(rows=None):
        xs, ys = (x, y) if rows is None else (x[rows], y[rows])
        per = ((model(xs) - ys) ** 2).mean(dim=1)
        if not torch.is_grad_enabled():
            return per
        loss = per.mean()
        loss.backward()
        return loss

    return closure


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def sam_for(net, lr=0.1, momentum=0.9, **kw):
    return SAM(net.parameters(), torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum), **kw)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_rho_zero_is_the_base_optimizer_bit_for_bit(base):
    x, y = data()
    a, b = mlp(), mlp()
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    }[base]
    sam = SAM(a.parameters(), make, rho=0.0)
    plain = make(b.parameters())
    for _ in range(3):
        sam.step(closure_of(a, x, y))
        plain.zero_grad()
        closure_of(b, x, y)()
        plain.step()
    assert torch.equal(flat(a), flat(b))
    assert sam.gradient_evals == 3


@pytest.mark.parametrize("variant", ["sam", "asam", "gsam", "fisher-sam", "fsam", "vasso", "msam", "sam-on"])
def test_two_call_api_equals_closure_api(variant):
    x, y = data()
    a, b = mlp(bn=variant == "sam-on"), mlp(bn=variant == "sam-on")
    kw = {"rho": 0.1, "variant": variant}
    opt_a = SAM(a.named_parameters(), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), model=a, **kw)
    opt_b = SAM(b.named_parameters(), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), model=b, **kw)
    for _ in range(3):
        opt_a.step(closure_of(a, x, y))
        closure_of(b, x, y)()
        opt_b.first_step(zero_grad=True)
        closure_of(b, x, y)()
        opt_b.second_step(zero_grad=True)
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-14)
    assert opt_a.gradient_evals == opt_b.gradient_evals


def test_two_call_api_refuses_what_needs_a_closure():
    model = mlp()
    for kw in ({"m": 2}, {"ascent_steps": 2}, {"variant": "looksam"}):
        with pytest.raises(ValueError, match="step\\(closure\\)"):
            sam_for(model, **kw).first_step()
    with pytest.raises(RuntimeError, match="first_step first"):
        sam_for(model).second_step()


@pytest.mark.parametrize("variant", ["fsam", "vasso", "looksam", "msam", "esam"])
def test_state_dict_resumes_exactly(variant):
    x, y = data()
    a = mlp()
    opt_a = sam_for(a, rho=0.1, variant=variant, generator=torch.Generator().manual_seed(0))
    closure_a = closure_of(a, x, y)
    for _ in range(2):
        opt_a.step(closure_a, batch_size=8)
    b = copy.deepcopy(a)
    opt_b = sam_for(b, rho=0.1, variant=variant, generator=torch.Generator().manual_seed(1))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as torch.save + torch.load
    if variant == "esam":  # the keep-masks come from the generator, which is the caller's to restore
        opt_b.generator.set_state(opt_a.generator.get_state())
    for _ in range(3):
        opt_a.step(closure_a, batch_size=8)
        opt_b.step(closure_of(b, x, y), batch_size=8)
    assert torch.equal(flat(a), flat(b))
    assert opt_a.gradient_evals == opt_b.gradient_evals
    assert opt_a.variant_steps == opt_b.variant_steps


def test_state_dict_of_another_variant_is_refused():
    model = mlp()
    vasso = sam_for(model, variant="vasso")
    vasso.step(closure_of(model, *data()))
    for other in (sam_for(model, variant="fsam"), sam_for(model, variant="vasso", theta=0.5), sam_for(model, m=2)):
        with pytest.raises(ValueError, match="from another SAM"):
            other.load_state_dict(vasso.state_dict())
    with pytest.raises(ValueError, match="not a samlab SAM state_dict"):
        vasso.load_state_dict(torch.optim.SGD(model.parameters(), lr=1).state_dict())


def test_scheduler_on_the_base_optimizer_drives_the_step():
    x, y = data()
    a, b = mlp(), mlp()
    opt_a = sam_for(a, rho=0.1, momentum=0.0)
    sched = torch.optim.lr_scheduler.StepLR(opt_a.base_optimizer, step_size=1, gamma=0.5)
    opt_b = sam_for(b, rho=0.1, momentum=0.0)
    for lr in (0.1, 0.05, 0.025):
        opt_a.step(closure_of(a, x, y))
        sched.step()
        for g in opt_b.param_groups:
            g["lr"] = lr
        opt_b.step(closure_of(b, x, y))
    assert opt_a.param_groups[0]["lr"] == 0.0125
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=0)


def test_m_sam_gives_each_group_its_slice_and_its_own_perturbation():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, m=2)
    seen = []
    inner = closure_of(model, x, y)

    def closure(rows):
        seen.append(rows)
        return inner(rows)

    opt.step(closure, batch_size=8)
    assert seen == [slice(i, i + 2) for i in range(0, 8, 2) for _ in range(2)]
    assert opt.gradient_evals == 8 and len(opt.last_deltas) == 4
    assert not torch.equal(opt.last_deltas[0][0], opt.last_deltas[1][0])


def bn_stats(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)


@pytest.mark.parametrize("policy", ["both", "clean", "frozen"])
def test_batchnorm_policies(policy):
    x, y = data()
    model = mlp(bn=True)
    ref = copy.deepcopy(model)
    opt = sam_for(model, rho=0.1, bn_policy=policy, model=model)
    seen_modes = []
    inner = closure_of(model, x, y)

    def closure():
        seen_modes.append(model[1].training)
        return inner()

    opt.step(closure)
    mean, var, count = bn_stats(model)
    assert model[1].training
    if policy == "both":
        assert count == 2 and seen_modes == [True, True]
    elif policy == "clean":
        ref(x)  # one forward at w: the ERM update of the running statistics
        assert count == 1
        torch.testing.assert_close((mean, var), bn_stats(ref)[:2], rtol=0, atol=0)
    else:
        assert count == 0 and seen_modes == [False, False]
        torch.testing.assert_close((mean, var), bn_stats(ref)[:2], rtol=0, atol=0)


def test_clean_policy_without_a_pass_at_w_adds_one():
    x, y = data()
    model = mlp(bn=True)
    opt = sam_for(model, rho=0.1, variant="msam", bn_policy="clean", model=model)
    for _ in range(2):
        opt.step(closure_of(model, x, y))
    assert bn_stats(model)[2] == 2  # one statistics update per step, the extra pass's


def test_esam_selection_needs_per_example_losses():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, variant="esam")

    def scalar(rows=None):
        loss = ((model(x[rows]) - y[rows]) ** 2).mean()
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    before = flat(model)
    with pytest.raises(ValueError, match="per-example losses"):
        opt.step(scalar, batch_size=8)
    assert torch.equal(flat(model), before)
    with pytest.raises(ValueError, match="batch_size"):
        opt.step(closure_of(model, x, y))


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"rho": -0.1}, ValueError, "rho"),
        ({"rho": float("nan")}, ValueError, "rho must be finite"),
        ({"rho": "0.1"}, TypeError, "rho must be a real number"),
        ({"variant": "bogus"}, ValueError, "variant must be one of"),
        ({"variant": "sam", "eta": 0.1}, ValueError, "eta is an option of asam and fisher-sam, not of variant 'sam'"),
        ({"variant": "gsam", "theta": 0.5}, ValueError, "theta is an option of vasso"),
        ({"variant": "asam", "bogus": 1}, TypeError, "unexpected keyword argument 'bogus'"),
        ({"variant": "asam", "eta": float("nan")}, ValueError, "eta must be finite"),
        ({"variant": "gsam", "alpha": float("inf")}, ValueError, "alpha must be finite"),
        ({"variant": "esam", "beta": 0.0}, ValueError, "beta must be in \\(0, 1\\]"),
        ({"variant": "esam", "gamma": 1.5}, ValueError, "gamma must be in \\(0, 1\\]"),
        ({"variant": "looksam", "k": 0}, ValueError, "k must be an integer of at least 1"),
        ({"variant": "looksam", "k": 2.5}, ValueError, "k must be an integer"),
        ({"variant": "fsam", "lam": 1.0}, ValueError, "lam"),
        ({"variant": "vasso", "m": 2}, ValueError, "whole batch"),
        ({"variant": "asam", "rho": 0.0}, ValueError, "needs a radius"),
        ({"variant": "asam", "ascent_steps": 2}, ValueError, "defines its own ascent"),
        ({"m": 0}, ValueError, "m must be a positive integer"),
        ({"normalization": "l1"}, ValueError, "normalization must be one of"),
        ({"ascent_steps": 0}, ValueError, "ascent_steps"),
        ({"bn_policy": "clean"}, ValueError, "needs model="),
        ({"bn_policy": "sometimes"}, ValueError, "bn_policy must be one of"),
        ({"variant": "sam-on"}, ValueError, "normalization layers"),
    ],
)
def test_bad_options_are_refused_naming_them(kw, error, match):
    model = mlp()
    with pytest.raises(error, match=match):
        sam_for(model, **kw)


def test_msam_needs_momentum():
    model = mlp()
    with pytest.raises(ValueError, match="momentum"):
        sam_for(model, variant="msam", momentum=0.0)


def test_base_optimizer_that_is_not_one():
    model = mlp()
    with pytest.raises(TypeError, match="class SGD"):
        SAM(model.parameters(), torch.optim.SGD)
    with pytest.raises(TypeError, match="must be a torch.optim.Optimizer"):
        SAM(model.parameters(), "sgd")
    with pytest.raises(TypeError, match="returned a dict"):
        SAM(model.parameters(), lambda p: {})
    other = mlp(seed=3)
    with pytest.raises(ValueError, match="not one of the base optimizer's"):
        SAM(model.parameters(), torch.optim.SGD(other.parameters(), lr=0.1))


def test_parameters_without_gradients():
    model = mlp()
    frozen = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64), requires_grad=False)
    with pytest.raises(ValueError, match="does not require grad"):
        SAM([*model.parameters(), frozen], lambda p: torch.optim.SGD(p, lr=0.1))
    unused = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    named = [*model.named_parameters(), ("unused", unused)]
    opt = SAM(named, lambda p: torch.optim.SGD(p, lr=0.1), rho=0.1)
    before = flat(model)
    with pytest.raises(ValueError, match="parameters without gradients after the closure \\(unused\\)"):
        opt.step(closure_of(model, *data()))
    assert torch.equal(flat(model), before)


@pytest.mark.parametrize("bad", ["none", "nan", "string", "no-grad"])
def test_bad_closures_leave_the_parameters(bad):
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1)
    before = flat(model)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        if bad == "none":
            loss.backward()
            return None
        if bad == "nan":
            return loss * float("nan")
        if bad == "string":
            return "loss"
        return loss.detach()

    error = TypeError if bad in ("none", "string") else ValueError
    with pytest.raises(error):
        opt.step(closure)
    assert torch.equal(flat(model), before)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()


def test_m_must_divide_the_batch():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, m=3)
    before = flat(model)
    with pytest.raises(ValueError, match="m = 3 must divide the batch size 8"):
        opt.step(closure_of(model, x, y), batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        opt.step(closure_of(model, x, y))
    assert torch.equal(flat(model), before)


def test_non_finite_gradients_skip_the_step():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, variant="vasso")
    opt.step(closure_of(model, x, y))
    before, state, steps = flat(model), [d.clone() for d in opt.direction], opt.variant_steps
    calls = []

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        calls.append(1)
        if len(calls) == 2:  # the descent pass
            next(model.parameters()).grad[0, 0] = float("inf")
        return loss

    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step(closure)
    assert opt.skipped
    assert torch.equal(flat(model), before)
    assert all(torch.equal(a, b) for a, b in zip(opt.direction, state)) and opt.variant_steps == steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(closure_of(model, x, y))
    assert not opt.skipped and not torch.equal(flat(model), before)
    assert math.isfinite(float(flat(model).sum()))


# --- mixed precision ---------------------------------------------------------------------------------------------


def scaled_pair(huge_pass=None):
    """Two f32 MLPs: SAM with a GradScaler (whose closure leaves backward to SAM) and plain SAM; ``huge_pass`` (1 or
    2) multiplies that pass's loss by 1e35, which overflows once scaled."""
    x, y = data()
    a, b = mlp().float(), mlp().float()
    x, y = x.float(), y.float()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    opt_a = SAM(a.parameters(), torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), rho=0.1, scaler=scaler)
    opt_b = sam_for(b, rho=0.1)
    calls = []

    def closure_a():
        calls.append(1)
        loss = ((a(x) - y) ** 2).mean()
        return loss * 1e35 if len(calls) == huge_pass else loss

    return a, b, opt_a, opt_b, closure_a, closure_of(b, x, y), scaler, calls


def test_scaler_without_overflow_equals_the_unscaled_step():
    a, b, opt_a, opt_b, closure_a, closure_b, scaler, calls = scaled_pair()
    for _ in range(3):
        calls.clear()
        opt_a.step(closure_a)
        opt_b.step(closure_b)
    # Power-of-two scales: scaling and unscaling are exact, so the steps are equal bit for bit.
    assert torch.equal(flat(a), flat(b))
    assert scaler.get_scale() == 2.0**16


@pytest.mark.parametrize("huge_pass", [1, 2])
def test_scaler_overflow_in_either_pass_skips_the_step_and_lowers_the_scale(huge_pass):
    a, _, opt_a, _, closure_a, _, scaler, calls = scaled_pair(huge_pass)
    before = flat(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt_a.step(closure_a)
    assert opt_a.skipped and torch.equal(flat(a), before)
    assert scaler.get_scale() == 2.0**15
    assert len(calls) == huge_pass  # the step stops at the overflowing pass
    calls.extend([0, 0, 0])  # past the overflowing pass's number: no pass overflows now
    opt_a.step(closure_a)  # the next step runs (no double unscale)
    assert not opt_a.skipped and not torch.equal(flat(a), before)


def test_scaler_refuses_the_two_call_api_and_non_scalers():
    model = mlp()
    with pytest.raises(TypeError, match="GradScaler"):
        sam_for(model, scaler=object())
    opt = sam_for(model.float(), scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="step\\(closure\\)"):
        opt.first_step()


def test_bf16_autocast_keeps_f32_norms():
    x, y = data()
    model = mlp().float()
    x, y = x.float(), y.float()
    opt = sam_for(model, rho=0.1)

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = ((out.float() - y) ** 2).mean()
        loss.backward()
        return loss

    before = flat(model)
    opt.step(closure)
    delta = opt.last_deltas[0]
    assert all(d.dtype == torch.float32 for d in delta)
    norm = torch.sqrt(sum((d.double() ** 2).sum() for d in delta))
    assert abs(float(norm) - 0.1) < 1e-6  # radius rho, from an f32 norm of f32 gradients
    assert not torch.equal(flat(model), before)


# --- accumulation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "micro"), [({}, 2), ({"variant": "gsam"}, 4), ({"m": 4}, 2), ({"variant": "looksam"}, 2)]
)
def test_micro_batches_accumulate_to_the_whole_batch_step(kw, micro):
    x, y = data()
    a, b = mlp(), mlp()
    opt_a, opt_b = sam_for(a, rho=0.1, **kw), sam_for(b, rho=0.1, **kw)
    seen = []
    inner = closure_of(a, x, y)

    def closure(rows):
        seen.append(rows)
        return inner(rows)

    for _ in range(3):
        opt_a.step(closure, batch_size=8, micro_batch=micro)
        opt_b.step(closure_of(b, x, y), batch_size=8)
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-14)
    assert all(r.stop - r.start == micro for r in seen)
    assert opt_a.gradient_evals == opt_b.gradient_evals  # a pass counts once, however many micro-batches


def test_micro_batch_must_divide_the_group():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, m=4)
    with pytest.raises(ValueError, match="micro_batch = 3 must divide the group size 4"):
        opt.step(closure_of(model, x, y), batch_size=8, micro_batch=3)
    with pytest.raises(ValueError, match="micro_batch needs batch_size"):
        opt.step(closure_of(model, x, y), micro_batch=2)


def test_two_call_api_esam_without_selection():
    x, y = data()
    a, b = mlp(), mlp()
    kw = {"rho": 0.1, "variant": "esam", "beta": 0.6, "gamma": 1.0}
    opt_a = sam_for(a, generator=torch.Generator().manual_seed(4), **kw)
    opt_b = sam_for(b, generator=torch.Generator().manual_seed(4), **kw)
    for _ in range(3):
        opt_a.step(closure_of(a, x, y))
        closure_of(b, x, y)()
        opt_b.first_step()
        closure_of(b, x, y)()
        opt_b.second_step()
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-14)


# --- accumulation across calls -----------------------------------------------------------------------------------

MICRO = 4  # two micro-batches of 4 make the batch of 8


def micro_batches(x, y):
    return [(x[i : i + MICRO], y[i : i + MICRO]) for i in range(0, len(x), MICRO)]


def buffers(model):
    return torch.cat([b.reshape(-1).double() for b in model.buffers()] or [torch.zeros(0, dtype=torch.float64)])


def assert_same_run(a, b, opt_a, opt_b):
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-12)
    torch.testing.assert_close(buffers(a), buffers(b), rtol=0, atol=1e-12)  # BatchNorm's running statistics
    if opt_b.direction is not None:
        torch.testing.assert_close(_cat(opt_a.direction), _cat(opt_b.direction), rtol=0, atol=1e-12)
    assert opt_a.gradient_evals == opt_b.gradient_evals and opt_a.accumulated == 0


def _cat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def accumulated_pair(kw, policy, bn=True, seed=3, **acc):
    """Two equal BatchNorm MLPs: one with ``accumulate=2`` (and ``acc``), one for the single-call step."""
    a, b = mlp(bn=bn), mlp(bn=bn)
    gen = {"generator": torch.Generator().manual_seed(seed)}
    opt_a = sam_for(a, rho=0.1, bn_policy=policy, model=a, accumulate=2, **acc, **gen, **kw)
    single = {"m": MICRO, **kw} if not acc.get("sync_perturbation") else kw
    opt_b = sam_for(b, rho=0.1, bn_policy=policy, model=b, generator=torch.Generator().manual_seed(seed), **single)
    return a, b, opt_a, opt_b


@pytest.mark.parametrize(
    ("kw", "policy"),
    [
        ({}, "both"),
        ({}, "clean"),
        ({}, "frozen"),
        ({"variant": "gsam"}, "clean"),
        ({"variant": "msam"}, "both"),
        ({"variant": "esam", "gamma": 0.5}, "both"),
        ({"m": 2, "normalization": "unnormalized"}, "both"),
    ],
)
def test_accumulating_step_calls_is_m_sam(kw, policy):
    x, y = data()
    a, b, opt_a, opt_b = accumulated_pair(kw, policy)
    for _ in range(3):
        before = flat(a)
        for i, (xs, ys) in enumerate(micro_batches(x, y)):
            opt_a.step(closure_of(a, xs, ys), batch_size=MICRO)
            assert opt_a.accumulated == (i + 1) % 2
            assert torch.equal(flat(a), before) == (i == 0)  # the base optimizer steps on the second call only
        opt_b.step(closure_of(b, x, y), batch_size=8)
        assert_same_run(a, b, opt_a, opt_b)


@pytest.mark.parametrize(
    ("variant", "policy", "bn"),
    [
        ("sam", "both", True),
        ("sam", "clean", True),
        ("gsam", "clean", True),
        ("asam", "both", True),
        ("msam", "both", False),  # its pass at w is the caller's: the single call has none to compare with
    ],
)
def test_accumulating_two_call_steps_is_m_sam(variant, policy, bn):
    x, y = data()
    a, b, opt_a, opt_b = accumulated_pair({"variant": variant}, policy, bn=bn)
    for _ in range(3):
        for xs, ys in micro_batches(x, y):
            closure_of(a, xs, ys)()
            opt_a.first_step()
            closure_of(a, xs, ys)()
            opt_a.second_step()
        opt_b.step(closure_of(b, x, y), batch_size=8)
        assert_same_run(a, b, opt_a, opt_b)


@pytest.mark.parametrize(
    ("variant", "policy", "bn"),
    [
        ("sam", "both", True),
        ("sam", "clean", True),
        ("gsam", "both", True),
        ("vasso", "clean", True),
        ("fsam", "both", True),
        ("msam", "both", False),  # as above
        ("sam-on", "both", True),
    ],
)
def test_sync_perturbation_is_sam_on_the_whole_batch(variant, policy, bn):
    x, y = data()
    a, b, opt_a, opt_b = accumulated_pair({"variant": variant}, policy, bn=bn, sync_perturbation=True)
    for _ in range(3):
        before = flat(a)
        for i, (xs, ys) in enumerate(micro_batches(x, y)):  # the gradients at w
            closure_of(a, xs, ys)()
            opt_a.first_step()
            # perturbed once, from both micro-batches' gradients (MSAM's first step has no momentum to perturb with)
            assert torch.equal(flat(a), before) == (i == 0 or opt_a.last_deltas[0] is None)
        for xs, ys in micro_batches(x, y):  # the gradients at w + delta
            closure_of(a, xs, ys)()
            opt_a.second_step()
        opt_b.step(closure_of(b, x, y), batch_size=8, micro_batch=MICRO)
        da, db = opt_a.last_deltas[0], opt_b.last_deltas[0]
        assert (da is None) == (db is None)
        if da is not None:
            torch.testing.assert_close(_cat(da), _cat(db), rtol=0, atol=1e-12)
        assert_same_run(a, b, opt_a, opt_b)


def test_two_call_api_honours_clean_and_refuses_frozen():
    x, y = data()
    a, b = mlp(bn=True), mlp(bn=True)
    opt_a, opt_b = sam_for(a, rho=0.1, bn_policy="clean", model=a), sam_for(b, rho=0.1, bn_policy="clean", model=b)
    for _ in range(2):
        closure_of(a, x, y)()
        opt_a.first_step()
        closure_of(a, x, y)()
        opt_a.second_step()
        opt_b.step(closure_of(b, x, y))
    assert_same_run(a, b, opt_a, opt_b)
    assert bn_stats(a)[2] == 2  # one update per step: the pass at w + delta's is undone
    frozen = sam_for(a, rho=0.1, bn_policy="frozen", model=a)
    closure_of(a, x, y)()
    with pytest.raises(ValueError, match="bn_policy='frozen' needs step\\(closure\\)"):
        frozen.first_step()


def test_a_non_finite_micro_batch_skips_the_accumulated_step():
    x, y = data()
    model = mlp()
    opt = sam_for(model, rho=0.1, accumulate=2)
    (x0, y0), (x1, y1) = micro_batches(x, y)

    def poisoned():
        loss = ((model(x0) - y0) ** 2).mean()
        loss.backward()
        next(model.parameters()).grad[0, 0] = float("inf")
        return loss

    before = flat(model)
    opt.step(poisoned)
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step(closure_of(model, x1, y1))  # the second micro-batch ends the accumulation: skipped
    assert opt.skipped and opt.accumulated == 0 and torch.equal(flat(model), before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for xs, ys in micro_batches(x, y):
            opt.step(closure_of(model, xs, ys))
    assert not opt.skipped and not torch.equal(flat(model), before)


def test_accumulation_refuses_bad_options():
    model = mlp(bn=True)
    for kw, match in [
        ({"accumulate": 0}, "accumulate must be a positive integer"),
        ({"accumulate": 2.0}, "accumulate must be a positive integer"),
        ({"sync_perturbation": True}, "needs accumulate > 1"),
        ({"accumulate": 2, "variant": "vasso"}, "vasso keeps one direction.*sync_perturbation=True"),
        ({"accumulate": 2, "variant": "msam", "bn_policy": "clean", "model": model}, "needs a pass at w"),
        ({"accumulate": 2, "sync_perturbation": True, "m": 2}, "sync_perturbation=True accumulates.*m-SAM"),
        ({"accumulate": 2, "sync_perturbation": True, "variant": "looksam"}, "LookSAM"),
        ({"accumulate": 2, "sync_perturbation": True, "bn_policy": "frozen", "model": model}, "frozen"),
    ]:
        with pytest.raises(ValueError, match=match):
            sam_for(model, **kw)


def test_accumulation_refuses_wrong_order_before_changing_anything():
    x, y = data()
    (x0, y0), (x1, y1) = micro_batches(x, y)
    model = mlp()
    sync = sam_for(model, rho=0.1, accumulate=2, sync_perturbation=True)
    before = flat(model)
    with pytest.raises(ValueError, match="sync_perturbation=True the perturbation needs every micro-batch"):
        sync.step(closure_of(model, x0, y0))
    closure_of(model, x0, y0)()
    sync.first_step()
    closure_of(model, x0, y0)()
    with pytest.raises(ValueError, match="second_step after 1 of the 2 micro-batches' first_step"):
        sync.second_step()
    with pytest.raises(ValueError, match="state_dict in the middle of a step \\(1 of 2"):
        sync.state_dict()
    assert torch.equal(flat(model), before) and sync.accumulated == 1
    sync.first_step()
    perturbed = flat(model)
    closure_of(model, x1, y1)()
    with pytest.raises(ValueError, match="first_step after the perturbation.*second_step \\(0 done\\)"):
        sync.first_step()
    assert torch.equal(flat(model), perturbed)

    opt = sam_for(model, rho=0.1, accumulate=2)
    opt.step(closure_of(model, x0, y0), batch_size=4)
    for call, match in [
        (lambda: opt.step(closure_of(model, x, y), batch_size=8), "batch_size 8 differs from this accumulation's 4"),
        (opt.first_step, "first_step/second_step after 1 of the 2 micro-batches were accumulated by step"),
        (lambda: opt.step_vmap(model, torch.nn.functional.mse_loss, x, y), "accumulate"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
        assert torch.equal(flat(model), perturbed) and opt.accumulated == 1
    two_call = sam_for(model, rho=0.1, accumulate=2)
    closure_of(model, x0, y0)()
    two_call.first_step()
    with pytest.raises(ValueError, match="step\\(closure\\) between first_step and second_step"):
        two_call.step(closure_of(model, x0, y0))
    closure_of(model, x0, y0)()
    two_call.second_step()
    with pytest.raises(ValueError, match="step\\(closure\\) after 1 of the 2 micro-batches were accumulated by first"):
        two_call.step(closure_of(model, x1, y1))


# --- vectorised m-SAM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"m": 2},
        {"m": 4, "normalization": "unnormalized"},
        {"m": 2, "normalization": "clipped", "ascent_steps": 2},
        {"m": 2, "ascent_steps": 3, "ascent_step_mult": 0.5},
        {},
        {"rho": 0.0, "m": 2},
    ],
)
def test_vmap_m_sam_equals_the_loop(kw):
    x, y = data()
    a, b = mlp(), mlp()
    kw = {"rho": 0.1, **kw}
    opt_a, opt_b = sam_for(a, **kw), sam_for(b, **kw)

    def loss_fn(out, target):
        return ((out - target) ** 2).mean()

    for _ in range(3):
        la = opt_a.step_vmap(a, loss_fn, x, y)
        lb = opt_b.step(closure_of(b, x, y), batch_size=8)
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-12)
    assert opt_a.gradient_evals == opt_b.gradient_evals
    if kw.get("m") == 2 and kw["rho"] > 0:
        assert len(opt_a.last_deltas) == 4
    assert math.isfinite(float(la)) and math.isfinite(float(lb))


def test_vmap_refuses_batchnorm_variants_and_bad_batches():
    x, y = data()
    loss_fn = torch.nn.functional.mse_loss
    bn = mlp(bn=True)
    with pytest.raises(ValueError, match="without BatchNorm"):
        sam_for(bn, m=2).step_vmap(bn, loss_fn, x, y)
    model = mlp()
    with pytest.raises(ValueError, match="plain SAM"):
        sam_for(model, variant="asam").step_vmap(model, loss_fn, x, y)
    with pytest.raises(ValueError, match="m = 3 must divide the batch size 8"):
        sam_for(model, m=3).step_vmap(model, loss_fn, x, y)


def test_samlab_torch_exports_sam():
    import samlab.torch

    assert samlab.torch.SAM is SAM and "SAM" in samlab.torch.__all__
