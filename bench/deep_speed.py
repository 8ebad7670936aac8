"""ERM and SAM training-step throughput: samlab-deep (burn) vs PyTorch on CPU, side by side in one run.

    python3 bench/deep_speed.py [--steps-cnn 20] [--steps-resnet 6] [--threads 2] [--csv bench/results/deep_speed.csv]

Each (engine, model, method) runs in its own process so that its peak RSS is its own. Models (batch 128, 32x32x3
random inputs, 10 classes): the small CNN of notes/burn-0.22.md (conv3x3 32 + ReLU + maxpool, conv3x3 64 + ReLU +
maxpool, linear 128 + ReLU, linear 10; 545,098 parameters) and the authors' PreAct ResNet-18 with BatchNorm at
width 16 (701,018 parameters). ERM = forward + backward + SGD-momentum update; SAM = the standard two-pass
normalized SAM step (rho 0.05): gradient, perturb by rho g/||g||, gradient at the perturbed point, restore, update.
Median step time over the timed steps after warm-up. The Rust side is `crates/samlab-deep/benches/step.rs`
(release profile; built here with `cargo bench --no-run` unless --rust-bin is given); PyTorch is pip's `torch`
with `torch.set_num_threads(threads)`. With --tch-bin (the same bench built with `--features tch`, see
docs/BENCHMARKS.md) samlab-deep also runs on burn's libtorch backend, with the libtorch of --python's torch.
"""
import argparse
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time


def torch_worker(model_name, method, steps, warmup, threads, batch=128):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_models import preact_resnet18, small_cnn

    model = small_cnn() if model_name == "cnn" else preact_resnet18(16)
    model.train()
    params = [p for p in model.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    rho = 0.05
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if method == "sam":
            with torch.no_grad():
                norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
                scale = rho / (norm + 1e-12)
                eps = [p.grad * scale for p in params]
                for p, e in zip(params, eps):
                    p.add_(e)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p, e in zip(params, eps):
                    p.sub_(e)
        opt.step()
        loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "engine": f"PyTorch {torch.__version__} CPU ({threads} threads)",
        "model": model_name,
        "method": method,
        "batch": batch,
        "params": sum(p.numel() for p in params),
        "steps": steps,
        "median_step_s": round(median, 5),
        "images_per_s": round(batch / median, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-cnn", type=int, default=20)
    ap.add_argument("--steps-resnet", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--python", default=sys.executable, help="python with torch installed")
    ap.add_argument("--rust-bin", default=None, help="the step bench binary (default: build it with cargo)")
    ap.add_argument("--tch-bin", default=None, help="the step bench built with --features tch")
    ap.add_argument("--worker", nargs=4, metavar=("MODEL", "METHOD", "STEPS", "WARMUP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        model, method, steps, warmup = args.worker
        print(json.dumps(torch_worker(model, method, int(steps), int(warmup), args.threads)))
        return

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rust_bin = args.rust_bin
    if rust_bin is None:
        built = subprocess.run(["cargo", "bench", "-p", "samlab-deep", "--bench", "step", "--no-run"], cwd=root,
                               check=True, capture_output=True, text=True)
        rust_bin = re.search(r"Executable benches/step.rs \((.*)\)", built.stderr).group(1)
    torch_lib = subprocess.run([args.python, "-c", "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"],
                               check=True, capture_output=True, text=True).stdout.strip()
    engines = [("flex", rust_bin, {})]
    if args.tch_bin:
        engines.append(("tch", args.tch_bin, {"LD_LIBRARY_PATH": torch_lib}))
    rows = []
    for model, steps in (("cnn", args.steps_cnn), ("resnet18w16", args.steps_resnet)):
        for method in ("erm", "sam"):
            for device, binary, extra_env in engines:
                rust = subprocess.run(
                    [binary, "--model", model, "--method", method, "--steps", str(steps), "--warmup",
                     str(args.warmup), "--device", device],
                    check=True, capture_output=True, text=True,
                    env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
                             **extra_env))
                rows.append(json.loads(rust.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
            torch_out = subprocess.run(
                [args.python, os.path.abspath(__file__), "--threads", str(args.threads), "--worker", model, method,
                 str(steps), str(args.warmup)], check=True, capture_output=True, text=True)
            rows.append(json.loads(torch_out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)

    def find(engine_prefix, model, method):
        return next(r for r in rows if r["engine"].startswith(engine_prefix) and r["model"] == model
                    and r["method"] == method)

    print()
    print("| model | engine | ERM img/s | SAM img/s | SAM/ERM cost | peak RSS ERM / SAM (MB) | ERM / SAM vs PyTorch |")
    print("|---|---|---|---|---|---|---|")
    prefixes = ["samlab-deep (burn 0.22.1, flex)"] + (["samlab-deep (burn 0.22.1, tch)"] if args.tch_bin else []) + ["PyTorch"]
    for model in ("cnn", "resnet18w16"):
        t_erm, t_sam = find("PyTorch", model, "erm"), find("PyTorch", model, "sam")
        for prefix in prefixes:
            erm, sam = find(prefix, model, "erm"), find(prefix, model, "sam")
            print(f"| {model} | {erm['engine']} | {erm['images_per_s']:.1f} | {sam['images_per_s']:.1f} | "
                  f"{erm['images_per_s'] / sam['images_per_s']:.2f}x | {erm['peak_rss_mb']:.0f} / {sam['peak_rss_mb']:.0f} | "
                  f"{erm['images_per_s'] / t_erm['images_per_s']:.2f}x / {sam['images_per_s'] / t_sam['images_per_s']:.2f}x |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
