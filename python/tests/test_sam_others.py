"""The conformance checker on other PyTorch SAM implementations, where installed: pytorch-optimizer 4.x (SAM,
LookSAM, FriendlySAM). davda54/sam is not on PyPI and is not run. What each does differently: docs/VARIANTS.md."""

import pytest

torch = pytest.importorskip("torch")
po = pytest.importorskip("pytorch_optimizer")

from samlab import conformance  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny float64 problems: one intra-op thread (on a busy machine, two threads make each small op slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class GradientsFirst:
    """pytorch-optimizer's closure API: the gradients at w are computed before step(closure)."""

    def __init__(self, opt):
        self.opt = opt

    def step(self, closure):
        self.opt.zero_grad()
        closure()
        self.opt.step(closure)


def factory(spec, model):
    o, lr = spec["options"], spec["lr"]
    if spec["momentum"] or o.get("m") or o.get("random_perturbation") or o.get("random_init"):
        return None
    if o.get("normalization", "normalized") != "normalized" or o.get("ascent_steps", 1) != 1:
        return None
    sgd = torch.optim.SGD
    params = model.parameters()
    variant = o.get("variant", "sam")
    if variant == "sam":
        return GradientsFirst(po.SAM(params, sgd, rho=o["rho"], lr=lr))
    if variant == "asam":
        return GradientsFirst(po.SAM(params, sgd, rho=o["rho"], adaptive=True, lr=lr))
    if variant == "looksam":
        return GradientsFirst(po.LookSAM(params, sgd, rho=o["rho"], k=o["k"], alpha=o["alpha"], lr=lr))
    if variant == "fsam":
        return GradientsFirst(po.FriendlySAM(params, sgd, rho=o["rho"], sigma=o["sigma"], lmbda=o["lam"], lr=lr))
    return None


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    d = tmp_path_factory.mktemp("conformance")
    conformance.write(d)
    return conformance.check(factory, d)


def test_pytorch_optimizer_against_the_vectors(errors):
    # rho = 0 is SGD exactly. SAM and FriendlySAM follow samlab's rules but take the global gradient norm in float32
    # even for float64 parameters (their radius is off by ~1e-8 relative, the weights by ~1e-9). ASAM
    # (adaptive=True: T = |w| on every parameter, no eta) and LookSAM (per-tensor projection and rescaling, eps 1e-8)
    # follow other rules.
    for problem in ("diag", "mlp"):
        assert errors[f"{problem}-erm"] <= 1e-15, errors
        for case in ("sam-normalized", "fsam"):
            assert 1e-12 < errors[f"{problem}-{case}"] <= 1e-8, (case, errors)
        for case in ("asam", "looksam"):
            assert errors[f"{problem}-{case}"] > 1e-4, (case, errors)
