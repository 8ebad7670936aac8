"""GPU training-step throughput: samlab (burn's CubeCL over Vulkan) vs PyTorch eager on the same GPU, one run.

    python3 bench/gpu/bench.py [--bundle bench/gpu/dist] [--csv bench/gpu/results.csv] [--smoke]

For a machine with an NVIDIA GPU, its driver (with the Vulkan ICD) and Python with PyTorch; no Rust, no network.
`--bundle` is the folder `bench/gpu/build.sh` fills on a build machine: two compressed samlab binaries (`samlab.xz`,
built with `--features wgpu`, runs `--device wgpu`: WGSL shaders; `samlab-vulkan.xz`, `--features vulkan`, runs
`--device vulkan`: CubeCL's SPIR-V, the only one with bf16) and the Vulkan loader (`lib/libvulkan.so.1`) they load
at run time. `--device wgpu,vulkan` (the default) measures both beside PyTorch.

What it measures, on a fixed batch of random CIFAR-shaped images (3x32x32, 10 classes), in f32 (and bf16 mixed
precision at batch 128: samlab's `--precision bf16`, PyTorch's autocast to bfloat16, both with f32 weights and an
f32 SAM gradient norm): images/s of
the ERM step (forward + backward + SGD-momentum update), the SAM step (normalized SAM, rho 0.05, m = batch: an
ascent and a descent pass) and m-SAM (m = 16 and 32: an ascent and a descent pass per group of m, descent gradients
averaged) for PreAct ResNet-18 (width 64) and WRN-28-10, at batch 128 and 256; BatchNorm in training mode in every
pass (samlab's `both_passes` policy, the authors' code). Median step time after warm-up steps (which compile the
kernels; their time is reported apart). samlab runs as `samlab bench-step` (one process per configuration);
PyTorch runs in this process. Each step ends with a host read of the loss, so both are synchronized.

The whole run stays under --budget-s (default 450 s): each configuration's timed steps stop after --max-seconds,
and configurations that no longer fit are written as `skipped`. `--smoke` runs a tiny version (narrow nets,
8x8 images, batch 32) that finishes in a few minutes on a CPU (samlab on lavapipe, PyTorch on the CPU).
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

RHO = 0.05
FIELDS = ["engine", "version", "device", "model", "width", "batch", "method", "m", "precision", "images_per_s",
          "median_step_s", "steps", "warmup_s", "status"]


def torch_step_fn(model, opt, x, y, rho, m):
    """One ERM (rho 0) or m-SAM step of `model` on (x, y), as a closure returning the loss tensor."""
    import torch
    import torch.nn.functional as F

    params = [p for p in model.parameters()]
    n = x.shape[0]
    groups = n // m

    def erm():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def sam():
        accum = [torch.zeros_like(p) for p in params]
        total = 0.0
        for g in range(groups):
            xs, ys = x[g * m:(g + 1) * m], y[g * m:(g + 1) * m]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xs), ys).backward()
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(gr) for gr in grads]))
                scale = rho / (norm + 1e-12)
                eps = [gr * scale for gr in grads]
                torch._foreach_add_(params, eps)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs), ys)
            loss.backward()
            total = total + loss.detach()
            with torch.no_grad():
                torch._foreach_sub_(params, eps)
                torch._foreach_add_(accum, [p.grad for p in params], alpha=1.0 / groups)
        for p, a in zip(params, accum):
            p.grad = a
        opt.step()
        return total / groups

    return erm if rho == 0.0 else sam


def torch_bench(model_name, width, batch, rho, m, size, warmup, steps, max_seconds, device, precision):
    import torch
    import torch_models

    torch.manual_seed(0)
    model = (torch_models.preact_resnet18(width) if model_name == "preact_resnet18"
             else torch_models.wrn28(width)).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    f32_step = torch_step_fn(model, opt, x, y, rho, m)
    if precision == "bf16":
        def step():
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                return f32_step()
    else:
        step = f32_step
    t0 = time.perf_counter()
    for _ in range(warmup):
        step().item()
    warmup_s = time.perf_counter() - t0
    times, t_all = [], time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        step().item()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - t_all > max_seconds:
            break
    med = statistics.median(times)
    del model, opt, x, y
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"images_per_s": batch / med, "median_step_s": med, "steps": len(times), "warmup_s": warmup_s,
            "version": f"PyTorch {torch.__version__} eager"}


def samlab_bench(binary, env, device, model, width, batch, rho, m, size, warmup, steps, max_seconds, timeout,
                 precision):
    cmd = [binary, "bench-step", "--model", model, "--width", str(width), "--batch-size", str(batch),
           "--rho", str(rho), "--m", str(m), "--image-size", str(size), "--warmup", str(warmup),
           "--steps", str(steps), "--max-seconds", str(max_seconds), "--device", device,
           "--precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    t = r["timing"]
    return {"images_per_s": t["images_per_s"], "median_step_s": t["median_step_s"], "steps": t["steps"],
            "warmup_s": t["warmup_s"], "version": r["engine"]}


def unpacked_binary(bundle, device):
    """The binary for samlab's `device` in `bundle`, unpacked from build.sh's .xz on first use."""
    binary = os.path.join(bundle, "samlab-vulkan" if device == "vulkan" else "samlab")
    packed = binary + ".xz"
    if not os.path.exists(binary) and os.path.exists(packed):
        import lzma
        with lzma.open(packed) as src, open(binary + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(binary + ".part", 0o755)
        os.replace(binary + ".part", binary)
    return binary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=os.path.join(HERE, "dist"), help="folder with samlab and lib/")
    ap.add_argument("--csv", default=os.path.join(HERE, "results.csv"))
    ap.add_argument("--device", default="wgpu,vulkan", help="samlab's --device values, comma-separated")
    ap.add_argument("--torch-device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny nets and batches: a check that everything runs")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--max-seconds", type=float, default=6.0, help="timed seconds per configuration")
    ap.add_argument("--budget-s", type=float, default=450.0, help="the whole run's time budget")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-samlab", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()

    if args.smoke:
        models, batches, size = [("preact_resnet18", 4), ("wrn28", 1)], [32], 8
        args.steps, args.warmup = min(args.steps, 3), 1
    else:
        models, batches, size = [("preact_resnet18", 64), ("wrn28", 10)], [128, 256], 32
    methods = [("erm", 0.0, None), ("sam", RHO, None), ("msam16", RHO, 16), ("msam32", RHO, 32)]

    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [os.path.join(args.bundle, "lib"), env.get("LD_LIBRARY_PATH", "")] if p)
    binaries = {}
    for device in ([] if args.skip_samlab else args.device.split(",")):
        binary = unpacked_binary(args.bundle, device)
        if os.access(binary, os.X_OK):
            binaries[device] = binary
        else:
            print(f"no samlab binary at {binary}: run bench/gpu/build.sh on a build machine first", file=sys.stderr)
    torch_device = args.torch_device
    have_torch = not args.skip_torch
    if have_torch:
        try:
            import torch
            torch_device = torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
            gpu = torch.cuda.get_device_name(0) if torch_device == "cuda" else "cpu"
            print(f"PyTorch {torch.__version__} on {torch_device} ({gpu})", flush=True)
        except ImportError:
            print("PyTorch is not installed: samlab only", file=sys.stderr)
            have_torch = False

    rows = []
    configs = [(mo, w, b, me, rho, m or b, "f32") for (mo, w) in models for b in batches
               for (me, rho, m) in methods]
    # bf16 at the first batch size only: the time budget.
    configs += [(mo, w, batches[0], me, rho, m or batches[0], "bf16") for (mo, w) in models
                for (me, rho, m) in methods]
    engines = [("samlab", d) for d in binaries] + ([("torch", torch_device)] if have_torch else [])
    jobs = [(e, c) for c in configs for e in engines]
    for i, ((engine, device), (model, width, batch, method, rho, m, precision)) in enumerate(jobs):
        row = {"engine": engine, "device": device, "model": model,
               "width": width, "batch": batch, "method": method, "m": m, "precision": precision}
        left = args.budget_s - (time.perf_counter() - started)
        # Each remaining job gets an equal share of what is left (at least 20 s, or it is skipped).
        share = left / (len(jobs) - i)
        if left < 20:
            row.update(status="skipped (time budget)")
        else:
            max_s = max(1.0, min(args.max_seconds, share / 3))
            try:
                if engine == "samlab":
                    r = samlab_bench(binaries[device], env, device, model, width, batch, rho, m, size, args.warmup,
                                     args.steps, max_s, timeout=max(20.0, min(left, 4 * share)),
                                     precision=precision)
                else:
                    r = torch_bench(model, width, batch, rho, m, size, args.warmup, args.steps, max_s,
                                    torch_device, precision)
                row.update(r, status="ok")
            except Exception as e:  # a failed configuration is a row, not the end of the run
                row.update(status=f"failed: {e}"[:300])
        rows.append(row)
        print(json.dumps(row), flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def ips(engine, device, c):
        r = next((r for r in rows if (r["engine"], r["device"]) == (engine, device)
                  and (r["model"], r["width"], r["batch"], r["method"], r["precision"]) == c
                  and r["status"] == "ok"), None)
        return r["images_per_s"] if r else None

    devices = list(binaries)
    print("\n| model | batch | method | precision | " + " | ".join(f"samlab {d} img/s" for d in devices)
          + " | PyTorch img/s | " + " | ".join(f"{d} / PyTorch" for d in devices) + " |")
    print("|---" * (5 + 2 * len(devices)) + "|")
    fmt = lambda v: f"{v:.1f}" if v else "-"
    for (model, width, batch, method, _, _, precision) in configs:
        c = (model, width, batch, method, precision)
        ours = [ips("samlab", d, c) for d in devices]
        theirs = ips("torch", torch_device, c)
        ratios = [f"{a / theirs:.2f}x" if a and theirs else "-" for a in ours]
        print(f"| {model} w{width} | {batch} | {method} | {precision} | "
              + " | ".join(fmt(a) for a in ours) + f" | {fmt(theirs)} | " + " | ".join(ratios) + " |")
    print(f"\n{len(rows)} rows -> {args.csv} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
