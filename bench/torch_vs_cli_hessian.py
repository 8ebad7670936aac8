"""`samlab hessian` on a samlab checkpoint against `samlab.torch` on the same weights loaded into PyTorch, in one run
(issue 23: the two agree to 1e-4).

For each run directory (by default an MLP, a CNN with BatchNorm and a PreAct ResNet-18 of width 4, trained here
with `samlab train` on the shipped Fashion-MNIST subset; or the runs given with --run):

1. `samlab hessian RUN --examples N --m M --split train --bn B --top-k K --tol T --max-steps S --eps-rel E --seed 0
   --trace --probes P` (defaults: N 128, M 64, B batch, K 2, T 1e-3, S 100, E 1e-6, P 10), read back from
   RUN/hessian.json (which it writes, as ever): the loss and gradient norm at w, the top-K eigenvalues (Lanczos)
   and Hutchinson's trace;
2. the checkpoint (`samlab.runs.read`, `Run.checkpoint().state_dict()`, the checksum verified) loaded with
   strict=True into the PyTorch twin of its model (bench/torch_models.py's PreAct ResNets and WRN; the MLP and CNN
   twins below, whose module names are samlab's parameter names), then converted to float64: the CLI's products are
   f64 central differences of f64 gradients at the f32 weights (--dtype float32 runs PyTorch in float32);
3. the examples the CLI read: the first N of the run's training split, unaugmented (float32 pixels / 255, no
   normalization). That split is the training set's own order only when the run held out no validation images
   and had no label noise (else a seeded permutation: the script then asks for --split test, the first N test
   images with clean labels), cut into the same chunks of M; the same loss (the mean over chunks of the chunk's
   mean cross-entropy, no L2 term) and BatchNorm mode (`--bn batch`: each chunk normalised by its own statistics,
   running statistics untouched, which is samlab.torch's bn="train"; `--bn running`: bn="eval");
4. `samlab.curvature.lanczos(op, k=K, tol=T, max_iter=S, seed=0)` and `samlab.curvature.trace(op, probes=P,
   seed=1)` (the engines and seeds `samlab hessian` itself uses) on `op = samlab.torch.hessian(model,
   F.cross_entropy, chunks, params=..., bn=..., cache=True)`. The operator is taken in samlab's flat parameter
   order (`Network::params`: a pre-activation block's shortcut before its bn1; Linear weights as samlab's
   `[in, out]`), a fixed permutation of PyTorch's, so that the same seeds give the same start vector and the same
   Rademacher probes: the trace, a random estimate, is then compared to 1e-4 rather than to its standard error;
5. the float32 state_dict of the PyTorch model saved as SafeTensors and imported back with `samlab import-torch
   --config RUN/config.toml` (skip with --no-import), and `samlab hessian` run on that imported run too: the way
   PyTorch weights come into samlab.

Prints a table (model, checkpoint, quantity, CLI value, samlab.torch value, relative difference |CLI - torch| /
|CLI|, pass/fail at --rtol 1e-4) and writes it to --csv; exits 1 if any row fails.

    python bench/torch_vs_cli_hessian.py --samlab $CARGO_TARGET_DIR/debug/samlab \\
        --csv bench/results/torch_vs_cli_hessian.csv

Needs torch and samlab's Python package (python/), not safetensors; reads MNIST/Fashion-MNIST runs (the shipped
subset, or the run's data dir). Not part of CI.
"""

import argparse
import copy
import csv
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import samlab.torch
import torch_models
from samlab import curvature, runs

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "data" / "fashion-mnist-subset"

# The runs trained when no --run is given: (name, `samlab train` flags, split with str.split so that ruff format
# keeps them on one line). Fashion-MNIST subset, no validation split (so the training split is the data set's
# order), SAM rho 0.05, a few dozen steps: seconds each in a debug build on an idle 2-core machine (the ResNet
# trains at 12 to 260 images/s there, depending on the load).
TRAIN = {
    "mlp": "--model mlp --width 32 --train-limit 2048 --batch-size 128 --epochs 3".split(),
    "cnn": "--model cnn --width 4 --norm batch --train-limit 1024 --batch-size 64 --epochs 2".split(),
    "preact_resnet18": "--model preact_resnet18 --width 4 --train-limit 512 --batch-size 64 --epochs 2".split(),
}
COMMON = "--dataset fashion-mnist --val-fraction 0 --rho 0.05 --eval-train-examples 0 --eval-batch-size 1000".split()


# --- PyTorch twins of samlab's MLP and CNN (crates/samlab-deep/src/models.rs), modules in samlab's order ------------


class SamlabMlp(nn.Module):
    """`mlp`: flatten, two hidden layers Linear -> optional BatchNorm -> ReLU, then `head`."""

    def __init__(self, width, norm, classes, input):
        super().__init__()
        d = math.prod(input)
        self.fc1 = nn.Linear(d, width)
        self.norm1 = nn.BatchNorm1d(width) if norm == "batch" else nn.Identity()
        self.fc2 = nn.Linear(width, width)
        self.norm2 = nn.BatchNorm1d(width) if norm == "batch" else nn.Identity()
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.norm1(self.fc1(x.flatten(1))))
        return self.head(F.relu(self.norm2(self.fc2(x))))


class SamlabCnn(nn.Module):
    """`cnn`: conv3x3(w) -> norm -> ReLU -> maxpool2, conv3x3(2w) -> norm -> ReLU -> maxpool2, `fc` (4w) -> ReLU,
    `head`; the convolutions have biases only without normalization."""

    def __init__(self, width, norm, classes, input):
        super().__init__()
        c, h, w = input
        bias = norm == "none"
        self.conv1 = nn.Conv2d(c, width, 3, 1, 1, bias=bias)
        self.norm1 = nn.BatchNorm2d(width) if norm == "batch" else nn.Identity()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1, 1, bias=bias)
        self.norm2 = nn.BatchNorm2d(2 * width) if norm == "batch" else nn.Identity()
        self.fc = nn.Linear(2 * width * (h // 4) * (w // 4), 4 * width)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)
        return self.head(F.relu(self.fc(x.flatten(1))))


def twin(spec):
    """The PyTorch model of a checkpoint's model spec, and its parameter names in samlab's flat order."""
    arch, width, norm = spec["arch"], spec["width"], spec.get("norm", "none")
    classes, input = spec["classes"], spec["input"]
    if norm not in ("none", "batch"):
        sys.exit(f"{arch} with {norm} norm: only none and batch have a PyTorch twin here")
    if arch == "mlp":
        model = SamlabMlp(width, norm, classes, input)
    elif arch == "cnn":
        model = SamlabCnn(width, norm, classes, input)
    elif arch in ("preact_resnet18", "preact_resnet34", "wrn28") and norm == "batch":
        model = getattr(torch_models, arch)(width, classes=classes, in_channels=input[0])
    else:
        sys.exit(f"no PyTorch twin of {arch} with {norm} norm here")
    names = [n for n, _ in model.named_parameters()]
    # samlab builds a pre-activation block's 1x1 shortcut before its bn1 (models.rs); PyTorch registers it last.
    for short in [n for n in names if n.endswith(".shortcut.0.weight")]:
        names.remove(short)
        names.insert(names.index(short.replace("shortcut.0.weight", "bn1.weight")), short)
    return model, names


class SamlabOrder:
    """`op` (on the parameters `names`, in that order, PyTorch layout) on samlab's flat layout: the same parameters
    in the same order, but Linear weights (the only 2-D parameters) stored `[in, out]`, PyTorch's transposed."""

    def __init__(self, op):
        self.op, self.dim = op, op.dim
        self.parts, at = [], 0
        for shape in op.shapes:
            n = math.prod(shape)
            self.parts.append((at, n, shape if len(shape) == 2 else None))
            at += n

    def _move(self, v, to_torch):
        out = v.copy()
        for at, n, shape in self.parts:
            if shape is not None:
                rows, cols = (shape[1], shape[0]) if to_torch else shape
                out[at : at + n] = v[at : at + n].reshape(rows, cols).T.ravel()
        return out

    def __call__(self, v):
        return self._move(self.op(self._move(v, to_torch=True)), to_torch=False)


# --- data ---------------------------------------------------------------------------------------------------------


def read_idx(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, 1, rows, cols)
    assert magic == 0x801, f"{path}: not an IDX file"
    return np.frombuffer(data, np.uint8, n, 8)


def idx_file(folder, name):
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    sys.exit(f"{folder}: no {name}[.gz]")


def examples(run, split, n):
    """The first n examples of the run's training split (or the test set) as samlab assembles them: float32 pixels
    / 255, no normalization, no augmentation; and which split that was."""
    data = run.config["data"]
    if data["dataset"] not in ("mnist", "fashion-mnist"):
        sys.exit(f"{data['dataset']}: this script reads only the IDX data sets (mnist, fashion-mnist)")
    folder = Path(data["dir"]) if data.get("dir") else SHIPPED
    prefix = "t10k" if split == "test" else "train"
    x = read_idx(idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if split == "train":
        full = min(data.get("train_limit") or len(y), len(y))
        held_out = math.floor(data.get("val_fraction", 0.1) * full + 0.5)  # Rust's round(), half away from 0
        noisy = (data.get("label_noise") or {}).get("fraction", 0) > 0
        if held_out or noisy:
            sys.exit(
                "the run's training split is a seeded permutation (validation held out) or has noisy labels: "
                "pass --split test"
            )
    x = torch.from_numpy(x[:n].astype(np.float32) / np.float32(255.0))
    return x, torch.from_numpy(y[:n].astype(np.int64))


# --- the CLI ------------------------------------------------------------------------------------------------------


def cli(args, *argv):
    t = time.perf_counter()
    r = subprocess.run([str(args.samlab), *map(str, argv)], check=False, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"samlab {' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stderr}")
    return time.perf_counter() - t


def hessian_flags(args):
    flags = [
        "--examples",
        args.examples,
        "--m",
        args.m,
        "--split",
        args.split,
        "--bn",
        args.bn,
        "--top-k",
        args.top_k,
        "--tol",
        args.tol,
        "--max-steps",
        args.max_steps,
        "--eps-rel",
        args.eps_rel,
        "--seed",
        args.seed,
    ]
    return flags + (["--trace", "--probes", args.probes] if args.probes else [])


def cli_hessian(args, run_dir):
    secs = cli(args, "hessian", run_dir, *hessian_flags(args))
    return json.loads((Path(run_dir) / "hessian.json").read_text()), secs


def save_safetensors(path, tensors):
    """A float32 state_dict as a SafeTensors file (the format: an 8-byte little-endian header length, the JSON
    header, the tensors' bytes), so that safetensors need not be installed."""
    header, blobs, at = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


# --- samlab.torch -------------------------------------------------------------------------------------------------


def torch_side(args, model, names, batches):
    """The loss and gradient norm at w, the top-k eigenvalues and the trace, as `samlab hessian` computes them."""
    bn = "train" if args.bn == "batch" else "eval"
    m = copy.deepcopy(model)  # the loss and gradient pass may update a copy's running statistics, never the model's
    m.eval()
    if bn == "train":
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.train()
    params = dict(m.named_parameters())
    loss = sum(F.cross_entropy(m(x), y) for x, y in batches) / len(batches)
    grad = torch.autograd.grad(loss, [params[n] for n in names])
    out = {"loss": float(loss.detach()), "grad_norm": float(torch.sqrt(sum((g * g).sum() for g in grad)))}
    if args.torch_order:  # PyTorch's own parameter order and layout: another start vector and other probes
        names = [n for n, _ in model.named_parameters()]
    op = samlab.torch.hessian(model, F.cross_entropy, batches, params=names, bn=bn, cache=True)
    flat = op if args.torch_order else SamlabOrder(op)
    t = time.perf_counter()
    r = curvature.lanczos(flat, k=args.top_k, tol=args.tol, max_iter=args.max_steps, seed=args.seed)
    out["top"], out["residuals"], out["steps"] = list(r.eigenvalues), list(r.residuals), r.steps
    if args.probes:
        tr = curvature.trace(flat, probes=args.probes, seed=args.seed + 1)
        out["trace"], out["trace_se"], out["samples"] = tr.estimate, tr.std_error, tr.samples
    out["products"], out["seconds"] = op.products, time.perf_counter() - t
    return out


def rows_of(name, source, report, ours, rtol):
    quantities = [("loss", report["loss"], ours["loss"]), ("grad norm", report["grad_norm"], ours["grad_norm"])]
    for i, (pair, value) in enumerate(zip(report["top_eigenvalues"], ours["top"])):
        quantities.append((f"eigenvalue {i + 1}", pair["value"], value))
    if report.get("trace"):
        quantities.append((f"trace ({report['trace']['probes']} probes)", report["trace"]["estimate"], ours["trace"]))
    rows = []
    for q, a, b in quantities:
        rel = abs(a - b) / max(abs(a), 1e-300)
        rows.append(
            {
                "model": name,
                "checkpoint": source,
                "quantity": q,
                "cli": a,
                "samlab_torch": b,
                "rel_diff": rel,
                "pass": rel <= rtol,
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samlab", type=Path, required=True, help="the samlab binary")
    ap.add_argument(
        "--run",
        action="append",
        type=Path,
        help=f"a deep run directory (repeatable); default: train {', '.join(TRAIN)} with the CLI",
    )
    ap.add_argument("--models", default=",".join(TRAIN), help="which of the default runs to train")
    ap.add_argument("--workdir", type=Path, help="where the trained and imported runs go (default: a temporary one)")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--m", type=int, default=64, help="chunk size (batch statistics and the loss's chunks)")
    ap.add_argument("--split", choices=["train", "test"], default="train")
    ap.add_argument("--bn", choices=["batch", "running"], default="batch")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--eps-rel", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", type=int, default=10, help="Hutchinson probes of the trace (0: no trace)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="of the PyTorch model")
    ap.add_argument("--no-import", action="store_true", help="skip the import-torch round trip")
    ap.add_argument(
        "--torch-order",
        action="store_true",
        help="the operator in PyTorch's parameter order and layout, not samlab's (a check: the eigenvalues\n"
        "still agree, the trace only within its standard error)",
    )
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args()
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    dirs = args.run or []
    unknown = set(args.models.split(",")) - set(TRAIN)
    if not dirs and unknown:
        sys.exit(f"--models: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(TRAIN)}")
    if not dirs:
        for name in args.models.split(","):
            out = work / name
            secs = cli(args, "train", *TRAIN[name], *COMMON, "--out", out, "--force")
            print(f"samlab train {' '.join(TRAIN[name] + COMMON)}: {secs:.1f} s", flush=True)
            dirs.append(out)
    print(
        f"samlab hessian {' '.join(map(str, hessian_flags(args)))}; samlab.torch in {args.dtype}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    rows = []
    for run_dir in dirs:
        run = runs.read(run_dir)
        ckpt = run.checkpoint()
        spec = ckpt.model
        name = f"{spec['arch']} w{spec['width']} ({spec.get('norm', 'none')} norm)"
        x, y = examples(run, args.split, args.examples)  # first: it refuses a split it cannot reproduce
        report, secs = cli_hessian(args, run_dir)
        model, names = twin(spec)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in ckpt.state_dict().items()}, strict=True)
        sources = [("run", report, secs)]
        if not args.no_import:
            weights = work / f"{run_dir.name}.safetensors"
            save_safetensors(weights, {k: v for k, v in model.state_dict().items() if v.is_floating_point()})
            imported = work / f"{run_dir.name}-imported"
            if imported.exists():
                shutil.rmtree(imported)
            cli(args, "import-torch", weights, "--config", run_dir / "config.toml", "--out", imported)
            rep2, secs2 = cli_hessian(args, imported)
            sources.append(("import-torch", rep2, secs2))
        model = model.to(getattr(torch, args.dtype))
        x = x.to(getattr(torch, args.dtype))
        batches = [(x[i : i + args.m], y[i : i + args.m]) for i in range(0, args.examples, args.m)]
        ours = torch_side(args, model, names, batches)
        dim = sum(p.numel() for p in model.parameters())
        print(
            f"{name}: {dim} parameters; CLI {secs:.1f} s ({report['lanczos_steps']} Lanczos steps, "
            f"{report['products']} products), samlab.torch {ours['seconds']:.1f} s ({ours['steps']} steps, "
            f"{ours['products']} products)",
            flush=True,
        )
        if args.probes:
            a, b = np.asarray(report["trace"]["samples"]), np.asarray(ours["samples"])
            print(
                f"  trace probes z'Hz: max |CLI - samlab.torch| {np.abs(a - b).max():.3g} "
                f"(largest |z'Hz| {np.abs(a).max():.3g}); CLI std error {report['trace']['std_error']:.3g}"
            )
        for source, rep, _ in sources:
            rows += rows_of(name, source, rep, ours, args.rtol)

    print()
    print(
        f"| model | checkpoint | quantity | `samlab hessian` | samlab.torch ({args.dtype}) | rel. diff. | "
        f"<= {args.rtol:g} |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['checkpoint']} | {r['quantity']} | {r['cli']:.9g} | {r['samlab_torch']:.9g} | "
            f"{r['rel_diff']:.1e} | {'pass' if r['pass'] else 'FAIL'} |"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    failed = sum(not r["pass"] for r in rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    print(f"\n{len(rows) - failed} of {len(rows)} within {args.rtol:g}" + (f"; {failed} FAIL" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
