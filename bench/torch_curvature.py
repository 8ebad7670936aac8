"""samlab.torch against PyHessian 0.1 and hessian-eigenthings on the same PyTorch model and data, in one run.

The top Hessian eigenvalue of a PreAct ResNet-18 (bench/torch_models.py, width --width) at its seeded
initialization, on --examples CIFAR-shaped random examples in batches of --batch (BatchNorm in evaluation mode,
PyHessian's only mode), float32, CPU:

- samlab: `curvature.lanczos(samlab.torch.hessian(...), k=1)` at its defaults (tol 1e-3, the stopping rule of
  docs/PYTHON.md), with its residual; once with a forward and a double backward per batch and product, once with
  `cache=True` (every batch's gradient graph kept: one backward per batch and product, in the graphs' memory);
- PyHessian: `hessian(model, criterion, dataloader=...).eigenvalues(top_n=1)` at its defaults (power iteration,
  maxIter 100, tol 1e-3 on the change of the Rayleigh quotient), and at tol 1e-4 and 1e-5 (its answer at the
  default is not within 1e-3 of the top eigenvalue; the tighter rows compare at equal accuracy);
- hessian-eigenthings: `lanczos(HessianOperator(...), k=1, which="LA")` at its default max_iter (2k = 2 steps) and
  with max_iter 30, and `power_iteration_one` at its defaults (tol 1e-4, max_iter 100).

The trace at equal products (--trace-probes): samlab's Hutchinson and Hutch++ against PyHessian's Hutchinson
(`trace(maxIter=probes)`, its tolerance disabled), each with its standard error.

Every method's products are counted and each product's cost is measured alone: samlab's operator against the same
double backward written inline (the overhead of the operator and the NumPy round trip).

    python bench/torch_curvature.py --examples 256 --csv bench/results/torch_curvature.csv

Needs torch, samlab (pip install ./python), PyHessian and hessian-eigenthings (pip install pyhessian
hessian-eigenthings; PyHessian's only runtime needs are torch and numpy, hessian-eigenthings' add scipy and tqdm).
"""

import argparse
import csv
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402

import samlab.torch  # noqa: E402
from samlab import curvature  # noqa: E402


def setup(args):
    torch.manual_seed(args.seed)
    model = torch_models.preact_resnet18(args.width).eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.examples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.examples,), generator=g)
    batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, args.examples, args.batch)]
    if args.train_epochs:
        # SGD on the batches (BatchNorm in training mode), then back to evaluation mode: a trained spectrum.
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(args.train_epochs):
            for xb, yb in batches:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            loss = sum(F.cross_entropy(model(xb), yb).item() * len(xb) for xb, yb in batches) / args.examples
        print(f"trained {args.train_epochs} epochs: training loss {loss:.4f}", flush=True)
    return model, batches


class Counted:
    """hessian-eigenthings' operator with its products counted."""

    def __init__(self, op):
        self.op, self.products = op, 0

    def __getattr__(self, name):
        return getattr(self.op, name)

    def matvec(self, v):
        self.products += 1
        return self.op.matvec(v)


def run_samlab(model, batches, cache):
    op = samlab.torch.hessian(model, F.cross_entropy, batches, bn="eval", cache=cache)
    t = time.perf_counter()
    r = curvature.lanczos(op, k=1)
    return float(r.eigenvalues[0]), time.perf_counter() - t, op.products, float(r.residuals[0])


def pyhessian_counted(model, batches):
    """PyHessian's operator on the whole data, with its products counted."""
    from pyhessian import hessian

    h = hessian(model, torch.nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
    count = [0]
    product = h.dataloader_hv_product

    def counted(v):
        count[0] += 1
        return product(v)

    h.dataloader_hv_product = counted
    return h, count


def run_pyhessian(model, batches, tol=1e-3):
    h, count = pyhessian_counted(model, batches)
    torch.manual_seed(0)  # PyHessian draws its start vector from torch's global generator
    t = time.perf_counter()
    ev, _ = h.eigenvalues(top_n=1, tol=tol)
    return float(ev[0]), time.perf_counter() - t, count[0], float("nan")


def trace_rows(model, batches, probes):
    """The trace at equal products: samlab's Hutchinson and Hutch++ (cached graphs) and PyHessian's Hutchinson
    (its tolerance disabled, so that it takes exactly ``probes`` products)."""
    rows = []
    for method in ("hutchinson", "hutch++"):
        op = samlab.torch.hessian(model, F.cross_entropy, batches, bn="eval", cache=True)
        t = time.perf_counter()
        r = curvature.trace(op, probes=probes, method=method, seed=0)
        rows.append((f"samlab trace ({method})", r.estimate, r.std_error, op.products, time.perf_counter() - t))
    h, count = pyhessian_counted(model, batches)
    torch.manual_seed(0)
    t = time.perf_counter()
    vhv = np.array(h.trace(maxIter=probes, tol=-1.0))
    rows.append(("PyHessian trace (Hutchinson)", float(vhv.mean()), float(vhv.std(ddof=1) / np.sqrt(len(vhv))),
                 count[0], time.perf_counter() - t))
    return rows


def run_eigenthings(model, batches, method, max_iter=None):
    import hessian_eigenthings as he

    op = Counted(he.HessianOperator(model, batches, he.supervised_loss(F.cross_entropy)))
    t = time.perf_counter()
    if method == "lanczos":
        r = he.lanczos(op, k=1, which="LA", max_iter=max_iter, seed=0)
        ev, res = float(r.eigenvalues[0]), float(r.residuals[0])
    else:
        ev, _, res, _, _ = he.power_iteration_one(op, seed=0)
    return float(ev), time.perf_counter() - t, op.products, float(res)


def print_traces(traces):
    for name, est, se, products, secs in traces:
        print(f"{name:50s} {est:12.4f} +- {se:.4f} {products:4d} products {secs:9.2f} s", flush=True)


def product_cost(model, batches, reps):
    """Seconds per product: samlab's operator without and with its cached gradient graphs, and the same double
    backward inline (median of reps)."""
    op = samlab.torch.hessian(model, F.cross_entropy, batches, bn="eval", cache=False)
    cached = samlab.torch.hessian(model, F.cross_entropy, batches, bn="eval", cache=True)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(0)
    v = rng.standard_normal(op.dim)
    vt = torch.tensor(v, dtype=torch.float32)
    vs, at = [], 0
    for p in params:
        vs.append(vt[at : at + p.numel()].view_as(p))
        at += p.numel()
    n = sum(len(x) for x, _ in batches)

    def inline():
        total = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(g, params, grad_outputs=vs)
            for t_, h in zip(total, hv):
                t_.add_(h, alpha=len(x) / n)
        return torch.cat([t_.reshape(-1) for t_ in total]).numpy()

    times = {"samlab": [], "inline": [], "cached": []}
    cached(v)  # builds the graphs
    for _ in range(reps):
        for name, f in (("inline", inline), ("samlab", lambda: op(v)), ("cached", lambda: cached(v))):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    a, b, c = op(v), inline(), cached(v)
    med = {k: statistics.median(t) for k, t in times.items()}
    return med, float(max(np.abs(a - b).max(), np.abs(c - b).max()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--examples", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the per-product timing")
    ap.add_argument("--trace-probes", type=int, default=30, help="products of each trace estimate")
    ap.add_argument("--train-epochs", type=int, default=0, help="train the model this long first (SGD, lr 0.05)")
    ap.add_argument("--trace-only", action="store_true", help="only the trace rows")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--csv", help="write the table here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, batches = setup(args)
    dim = sum(p.numel() for p in model.parameters())
    print(f"PreAct ResNet-18 width {args.width}: {dim} parameters; {args.examples} examples in batches of "
          f"{args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    if args.trace_only:
        traces = trace_rows(model, batches, args.trace_probes)
        print_traces(traces)
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                csv.writer(f).writerows([("method", "estimate", "std_error", "products", "seconds"), *traces])
        return
    rows = []
    for name, run in [
        ("samlab lanczos (tol 1e-3)", lambda: run_samlab(model, batches, False)),
        ("samlab lanczos (tol 1e-3), cached graphs", lambda: run_samlab(model, batches, True)),
        ("PyHessian power iteration (tol 1e-3)", lambda: run_pyhessian(model, batches)),
        ("PyHessian power iteration (tol 1e-4)", lambda: run_pyhessian(model, batches, 1e-4)),
        ("PyHessian power iteration (tol 1e-5)", lambda: run_pyhessian(model, batches, 1e-5)),
        ("hessian-eigenthings lanczos (default: 2 steps)", lambda: run_eigenthings(model, batches, "lanczos")),
        ("hessian-eigenthings lanczos (max_iter 30)", lambda: run_eigenthings(model, batches, "lanczos", 30)),
        ("hessian-eigenthings power iteration (tol 1e-4)", lambda: run_eigenthings(model, batches, "power")),
    ]:
        ev, secs, products, res = run()
        rows.append({"method": name, "top_eigenvalue": ev, "seconds": secs, "products": products, "residual": res})
        print(f"{name:50s} {ev:12.6f} {secs:9.2f} s {products:4d} products  residual {res:.3g}", flush=True)
    ref = rows[0]["top_eigenvalue"]
    for r in rows:
        r["rel_diff_vs_samlab"] = abs(r["top_eigenvalue"] - ref) / abs(ref)
        r["time_vs_samlab"] = r["seconds"] / rows[0]["seconds"]
    traces = trace_rows(model, batches, args.trace_probes)
    print_traces(traces)
    med, diff = product_cost(model, batches, args.reps)
    ours, inline, cached = med["samlab"], med["inline"], med["cached"]
    print(f"per product: samlab operator {ours:.3f} s, inline double backward {inline:.3f} s "
          f"(overhead {100 * (ours / inline - 1):+.1f}%), cached graphs {cached:.3f} s "
          f"({ours / cached:.2f}x faster), max |difference| {diff:.2g}")
    print()
    print("| method | top eigenvalue | rel. diff. vs samlab | products | seconds | time / samlab's |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['top_eigenvalue']:.6f} | {r['rel_diff_vs_samlab']:.1e} | {r['products']} | "
              f"{r['seconds']:.1f} | {r['time_vs_samlab']:.2f}x |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            f.write(f"# per product: samlab {ours:.4f} s, inline {inline:.4f} s, cached {cached:.4f} s\n")
            for name, est, se, products, secs in traces:
                f.write(f"# {name}: {est:.6g} +- {se:.3g} in {products} products, {secs:.1f} s\n")


if __name__ == "__main__":
    main()
