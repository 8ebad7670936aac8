"""The MLP's ERM, SAM and m-SAM steps: samlab (flex, `samlab bench-step`) against PyTorch on the CPU, side by side.

The MLP 768-256-256-10 with BatchNorm (the reproduce MLP's shape on 3 x 16 x 16 random images, as `samlab
bench-step --model mlp --norm batch --image-size 16` builds it), batch 128, 10 classes, SGD with momentum, 2
threads on both sides (samlab's rayon pool on this 2-core machine, `torch.set_num_threads(2)`). SAM is normalized
SAM at rho 0.05 with one perturbation per batch; m-SAM takes groups of 16: PyTorch one after the other, as the
authors' code does, samlab as its training does (all groups at once as low-rank perturbations on this MLP).
BatchNorm is in training mode in every pass (samlab's `both` policy). Each step time is the median of a run's timed
steps; the table gives the median over --reps interleaved repetitions.

    python3 bench/mlp_vs_torch.py --samlab target/release/samlab [--reps 3] [--steps 30]
"""

import argparse
import json
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

BATCH, WIDTH, INPUTS, CLASSES = 128, 256, 768, 10
CASES = [("ERM", 0.0, BATCH), ("SAM", 0.05, BATCH), ("m-SAM, m = 16", 0.05, 16)]


def samlab_step(samlab: str, rho: float, m: int, steps: int) -> float:
    flags = ["--model", "mlp", "--norm", "batch", "--image-size", "16", "--batch-size", str(BATCH)]
    flags += ["--rho", str(rho), "--m", str(m), "--steps", str(steps), "--warmup", "2", "--max-seconds", "120"]
    out = subprocess.run([samlab, "bench-step", *flags], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["timing"]["median_step_s"]


def torch_step(rho: float, m: int, steps: int) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(INPUTS, WIDTH),
        torch.nn.BatchNorm1d(WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.BatchNorm1d(WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, CLASSES),
    ).train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = torch.randn(BATCH, INPUTS), torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        opt.zero_grad()
        if rho == 0:
            F.cross_entropy(model(x), y).backward()
        else:
            total = [torch.zeros_like(p) for p in params]
            for a in range(0, BATCH, m):
                xg, yg = x[a : a + m], y[a : a + m]
                grads = torch.autograd.grad(F.cross_entropy(model(xg), yg), params)
                norm = torch.sqrt(sum((g * g).sum() for g in grads))
                eps = [rho * g / (norm + 1e-12) for g in grads]
                with torch.no_grad():
                    for p, e in zip(params, eps):
                        p.add_(e)
                perturbed = torch.autograd.grad(F.cross_entropy(model(xg), yg), params)
                with torch.no_grad():
                    for p, e, t, g in zip(params, eps, total, perturbed):
                        p.sub_(e)
                        t.add_(g, alpha=m / BATCH)
            for p, t in zip(params, total):
                p.grad = t
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samlab", default="target/release/samlab")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| step | samlab (s) | PyTorch (s) | samlab speed / PyTorch's | step / ERM step: samlab, PyTorch |")
    print("|---|---|---|---|---|")
    erm = None
    for label, rho, m in CASES:
        ours, theirs = [], []
        for _ in range(a.reps):
            ours.append(samlab_step(a.samlab, rho, m, a.steps))
            theirs.append(torch_step(rho, m, a.steps))
        o, t = statistics.median(ours), statistics.median(theirs)
        erm = erm or (o, t)
        print(f"| {label} | {o:.5f} | {t:.5f} | {t / o:.2f} | {o / erm[0]:.2f}, {t / erm[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
