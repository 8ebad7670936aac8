"""samlab.torch.SAM under torch.distributed (gloo, two CPU processes, DDP-wrapped): each mode equals the
single-process step it claims to be. ``per_worker`` is m-SAM with m = the per-worker batch; ``synchronized`` is SAM
on the whole batch. With BatchNorm (plain, not SyncBatchNorm, which needs GPUs) each worker normalizes its own 4
examples: ghost BatchNorm in groups of 4, i.e. the single-process step with ``m=4`` or ``micro_batch=4``; the running
statistics are rank 0's on every worker (DDP's ``broadcast_buffers``)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from samlab.sam import SAM  # noqa: E402

POLICIES = ("both", "clean", "frozen")

# (name, SAM options, distributed mode, the single-process options it must equal)
CASES = [
    ("sam-per-worker", {"rho": 0.1}, "per_worker", {"rho": 0.1, "m": 4}),
    # two micro-batches of 2 per worker and step: each its own perturbation, one all-reduce per step
    ("sam-per-worker-accumulate", {"rho": 0.1, "accumulate": 2}, "per_worker", {"rho": 0.1, "m": 2}),
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
# (name, distributed mode, bn_policy) of the BatchNorm MLP: plain SAM against m = 4 (per_worker) or micro_batch = 4
# (synchronized), the single-process steps with BatchNorm in groups of the per-worker batch.
BN_CASES = [(f"bn-{mode}-{policy}", mode, policy) for mode in ("per_worker", "synchronized") for policy in POLICIES]
STEPS = 3


def mlp(bn=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(3, 5), *([torch.nn.BatchNorm1d(5)] if bn else []), torch.nn.Tanh(), torch.nn.Linear(5, 1)]
    return torch.nn.Sequential(*layers).double()


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


def buffers(model):
    return torch.cat([b.reshape(-1).double() for b in model.buffers()]).numpy()


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
        n = 4 // opt.accumulate
        for _ in range(STEPS):
            for i in range(0, 4, n):
                opt.step(closure_of(ddp, x[i : i + n], y[i : i + n]), batch_size=n)
        results[name] = flat(net)
    for name, mode, policy in BN_CASES:
        net = mlp(bn=True)
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        base = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        opt = SAM(ddp.parameters(), base, rho=0.1, bn_policy=policy, distributed=mode, model=ddp)
        for _ in range(STEPS):
            opt.step(closure_of(ddp, x, y), batch_size=4)
        results[name] = flat(net)
        results[f"{name}-buffers"] = buffers(net)
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
    for name, mode, policy in BN_CASES:
        for key in (name, f"{name}-buffers"):
            np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=f"{key}: the workers differ")
        net = mlp(bn=True)
        single = {"m": 4} if mode == "per_worker" else {}
        opt = SAM(
            net.parameters(),
            torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
            rho=0.1,
            **single,
            bn_policy=policy,
            model=net,
        )
        rank0 = mlp(bn=True)  # rank 0's running statistics: its own 4 examples at w (and w + delta under "both")
        for _ in range(STEPS):
            w = [p.detach().clone() for p in net.parameters()]
            opt.step(closure_of(net, x, y), batch_size=8, micro_batch=None if mode == "per_worker" else 4)
            with torch.no_grad():
                for p, wi in zip(rank0.parameters(), w):
                    p.copy_(wi)
                if policy != "frozen":
                    rank0(x[:4])
                if policy == "both":
                    for p, d in zip(rank0.parameters(), opt.last_deltas[0]):
                        p.add_(d)
                    rank0(x[:4])
        np.testing.assert_allclose(got[0][name], flat(net), rtol=0, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(got[0][f"{name}-buffers"], buffers(rank0), rtol=0, atol=1e-13, err_msg=name)
        if policy == "frozen":
            np.testing.assert_array_equal(got[0][f"{name}-buffers"], buffers(mlp(bn=True)), err_msg=name)


def test_distributed_needs_a_process_group_and_fitting_options():
    net = mlp()
    base = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="initialized torch.distributed"):
        SAM(net.parameters(), base, distributed="per_worker")
    with pytest.raises(ValueError, match="distributed must be"):
        SAM(net.parameters(), base, distributed="sometimes")
