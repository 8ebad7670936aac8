"""Step time of samlab.torch.SAM beside an SGD step and davda54/sam's SAM, on PreAct ResNet-18 (issue 24's
numbers: SAM at most 1.05x davda54's step, LookSAM k = 5 at most 1.35x an SGD step).

    python bench/sam_torch_step.py [--device cuda] [--width 16] [--batch 128] [--rounds 5] [--davda54 PATH/sam.py]

davda54/sam is not on PyPI: give the path of its `sam.py` (github.com/davda54/sam) to time it; without it, only SGD,
SAM and LookSAM run. The kinds are timed in interleaved rounds (each round: every kind, `--steps` steps after one
warm-up step); the output is a JSON line of each kind's median step time over the rounds and the ratios. Timings on a
machine shared with other work are not comparable; this script was not run on an idle machine yet.
"""

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from torch_models import preact_resnet18  # noqa: E402

from samlab.sam import SAM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--davda54", type=Path, default=None, help="path of davda54/sam's sam.py")
    args = ap.parse_args()
    dev = torch.device(args.device)
    davda = None
    if args.davda54 is not None:
        spec = importlib.util.spec_from_file_location("davda54_sam", args.davda54)
        davda = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(davda)
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def make(kind):
        torch.manual_seed(0)
        model = preact_resnet18(args.width).to(dev)
        loss = lambda: F.cross_entropy(model(x), y)  # noqa: E731
        if kind == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

            def step():
                opt.zero_grad()
                loss().backward()
                opt.step()

        elif kind == "davda54":
            opt = davda.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

            def step():
                loss().backward()
                opt.first_step(zero_grad=True)
                loss().backward()
                opt.second_step(zero_grad=True)

        else:
            kw = {"variant": "looksam", "k": 5} if kind == "looksam" else {}
            opt = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05, **kw)

            def step():
                opt.step(loss)

        return step

    kinds = ["sgd", "samlab", "looksam"] + (["davda54"] if davda else [])
    times = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            step = make(kind)
            step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[kind].append((time.perf_counter() - t) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"device": str(dev), "width": args.width, "batch": args.batch, "median_s": med}
    out["looksam_over_sgd"] = med["looksam"] / med["sgd"]
    if davda:
        out["samlab_over_davda54"] = med["samlab"] / med["davda54"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
