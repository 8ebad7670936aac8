"""samlab.torch.SAM under torch.distributed (gloo, two CPU processes, DDP-wrapped): each mode equals the
single-process step it claims to be. ``per_worker`` is m-SAM with m = the per-worker batch; ``synchronized`` is SAM
on the whole batch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from samlab.sam import SAM  # noqa: E402

# (name, SAM options, distributed mode, the single-process options it must equal)
CASES = [
    ("sam-per-worker", {"rho": 0.1}, "per_worker", {"rho": 0.1, "m": 4}),
    ("gsam-per-worker", {"rho": 0.1, "variant": "gsam"}, "per_worker", {"rho": 0.1, "variant": "gsam", "m": 4}),
    (
        "esam-per-worker",
        {"rho": 0.1, "variant": "esam", "beta": 1.0, "gamma": 0.5},
        "per_worker",
        {"rho": 0.1, "variant": "esam", "beta": 1.0, "gamma": 0.5, "m": 4},
    ),
    ("msam-per-worker", {"rho": 0.1, "variant": "msam"}, "per_worker", {"rho": 0.1, "variant": "msam", "m": 4}),
    ("sam-synchronized", {"rho": 0.1}, "synchronized", {"rho": 0.1}),
    ("vasso-synchronized", {"rho": 0.1, "variant": "vasso"}, "synchronized", {"rho": 0.1, "variant": "vasso"}),
    (
        "looksam-synchronized",
        {"rho": 0.1, "variant": "looksam", "k": 2},
        "synchronized",
        {"rho": 0.1, "variant": "looksam", "k": 2},
    ),
]
STEPS = 3


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x[:, 0:1])


def closure_of(model, x, y):
    def closure(rows=None):
        xs, ys = (x, y) if rows is None else (x[rows], y[rows])
        per = ((model(xs) - ys) ** 2).mean(dim=1)
        return per if not torch.is_grad_enabled() else per.mean()

    return closure


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


def worker(rank, init, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    x, y = data()
    x, y = x[4 * rank : 4 * rank + 4], y[4 * rank : 4 * rank + 4]
    results = {}
    for name, options, mode, _ in CASES:
        net = mlp()
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        base = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        opt = SAM(ddp.parameters(), base, distributed=mode, model=ddp, **options)
        for _ in range(STEPS):
            opt.step(closure_of(ddp, x, y), batch_size=4)
        results[name] = flat(net)
    np.savez(f"{out}-{rank}.npz", **results)
    dist.destroy_process_group()


def test_each_mode_equals_its_single_process_step(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "w")
    mp.spawn(worker, args=(f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    got = [np.load(f"{out}-{r}.npz") for r in range(2)]
    x, y = data()
    for name, _, _, single in CASES:
        np.testing.assert_array_equal(got[0][name], got[1][name], err_msg=f"{name}: the workers' weights differ")
        net = mlp()
        opt = SAM(net.parameters(), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), **single)
        for _ in range(STEPS):
            opt.step(closure_of(net, x, y), batch_size=8)
        np.testing.assert_allclose(got[0][name], flat(net), rtol=0, atol=1e-13, err_msg=name)


def test_distributed_needs_a_process_group_and_fitting_options():
    net = mlp()
    base = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="initialized torch.distributed"):
        SAM(net.parameters(), base, distributed="per_worker")
    with pytest.raises(ValueError, match="distributed must be"):
        SAM(net.parameters(), base, distributed="sometimes")
