"""m-SAM in samlab.torch: ``SAM.step_vmap`` (the groups through ``torch.func.vmap``) beside ``SAM.step`` (a loop of
closure calls, one per group), on a CNN without BatchNorm (issue 24's number: the vectorised path at least 1.5x the
loop's speed at m = 16, batch 128).

    python bench/sam_torch_vmap.py [--device cuda] [--m 16] [--batch 128] [--rounds 7] [--steps 2]

The two paths are timed in interleaved rounds (each round: both, `--steps` steps after one warm-up step), from the
same weights; the output is a JSON line of each path's median step time and the loop/vmap speed ratio (above 1: vmap
is faster), and the largest difference between the two paths' weights after the first step (float32)."""

import argparse
import json
import statistics
import time

import torch
from samlab.sam import SAM
from torch import nn
from torch.nn import functional


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(dev)

    def make(path):
        model = cnn().to(dev)
        opt = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05, m=args.m)
        if path == "vmap":
            return model, lambda: opt.step_vmap(model, functional.cross_entropy, x, y)

        def closure(rows=None):
            loss = functional.cross_entropy(model(x[rows]), y[rows])
            loss.backward()
            return loss

        return model, lambda: opt.step(closure, batch_size=args.batch)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    models = {}
    times: dict[str, list[float]] = {"loop": [], "vmap": []}
    for r in range(args.rounds):
        for path, kept in times.items():
            model, step = make(path)
            step()
            sync()
            if r == 0:
                models[path] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            kept.append((time.perf_counter() - t) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "device": str(dev),
        "m": args.m,
        "batch": args.batch,
        "median_s": med,
        "loop_over_vmap": med["loop"] / med["vmap"],
        "max_weight_difference_after_one_step": float((models["loop"] - models["vmap"]).abs().max()),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
