"""Conformance vectors of the SAM family: samlab's engine on small problems, written to files that any PyTorch SAM
implementation can be checked against.

:func:`write` runs samlab-core's SAM step (``Ascent::group``, the Rust rules the command line trains with) on two
small float64 problems written here in NumPy: the diagonal linear network ``u * v`` on the paper's sparse
regression (:func:`samlab.analytic.sparse_regression`) and a tiny tanh MLP (3-4-1). Every method and variant, a few
steps of SGD each (three for the stateful ones), records the inputs and the float64 results: each group's
perturbation, every gradient the step took (its point, examples, loss and mean gradient), the descent direction
handed to the base optimizer, the weights after the update and the variant state. The randomness (random starts,
random perturbations, ESAM's keep-masks) is drawn here and written as inputs.

:func:`check` runs an implementation (an ``optimizer_factory``) on the same problems from the same weights and
reports its largest deviation per case. ``python -m samlab.conformance write DIR`` and
``python -m samlab.conformance check DIR`` (samlab.torch.SAM) do the same from the shell.

Layout (format version :data:`VERSION`): ``DIR/manifest.json`` (the version and the cases), and per case
``DIR/<case>/case.json`` (problem, samlab config, the torch options, learning rate, momentum, steps, batch,
per-step gradient counts, losses and calls) with ``w0.npy`` and per step ``t``: ``t<t>_deltas.npy`` (groups x
dim), ``t<t>_direction.npy``, ``t<t>_w.npy`` (after the update), ``t<t>_grads.npy`` (calls x dim), ``t<t>_points.npy``,
``t<t>_state.npy`` (when the variant has state), ``t<t>_normals.npy`` / ``t<t>_keeps.npy`` (noise inputs). The
problems' data are ``DIR/<problem>_X.npy`` and ``DIR/<problem>_y.npy``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import analytic
from ._samlab import sam_step

__all__ = ["CASES", "VERSION", "Problem", "check", "problems", "write"]

#: The file format's version (bumped whenever a file's meaning changes).
VERSION = 1
LR = 0.1
MOMENTUM = 0.9


class Problem:
    """A float64 model with per-example squared loss ``(f(x_i; w) - y_i)^2 / 2`` over a flat weight vector."""

    def __init__(self, name: str, X: np.ndarray, y: np.ndarray, shapes: list[tuple[str, tuple[int, ...]]]):
        self.name, self.X, self.y, self.shapes = name, X, y, shapes
        self.dim = int(sum(np.prod(s) for _, s in shapes))

    def split(self, w: np.ndarray) -> list[np.ndarray]:
        out, at = [], 0
        for _, shape in self.shapes:
            n = int(np.prod(shape))
            out.append(w[at : at + n].reshape(shape))
            at += n
        return out

    def mask(self, names: Callable[[str], bool]) -> np.ndarray:
        """1.0 on the coordinates of the parameters whose name passes ``names``."""
        return np.concatenate([np.full(int(np.prod(s)), float(names(n))) for n, s in self.shapes])

    def forward(self, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def losses(self, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        f, _ = self.forward(w, self.X[rows])
        return 0.5 * (f - self.y[rows]) ** 2

    def loss_and_grad(self, w: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError


class DiagNet(Problem):
    """``f(x) = x . (u * v)``, ``w = (u, v)``."""

    def __init__(self) -> None:
        X, y, _, _, _ = analytic.sparse_regression(n=8, d=6, r=2, n_test=1, seed=3)
        d = X.shape[1]
        super().__init__("diag", X, y, [("u", (d,)), ("v", (d,))])

    def forward(self, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, Any]:
        u, v = self.split(w)
        return X @ (u * v), None

    def loss_and_grad(self, w: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        u, v = self.split(w)
        X, y = self.X[rows], self.y[rows]
        r = X @ (u * v) - y
        gb = X.T @ r / len(rows)
        return float(0.5 * np.mean(r**2)), np.concatenate([gb * v, gb * u])


class TinyMLP(Problem):
    """``f(x) = W2 tanh(W1 x + b1) + b2`` (3-4-1), parameters named as ``nn.Sequential(Linear, Tanh, Linear)``."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        X = rng.standard_normal((8, 3))
        y = np.sin(X @ np.array([1.0, -0.5, 0.25]))
        shapes = [("0.weight", (4, 3)), ("0.bias", (4,)), ("2.weight", (1, 4)), ("2.bias", (1,))]
        super().__init__("mlp", X, y, shapes)

    def forward(self, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, Any]:
        W1, b1, W2, b2 = self.split(w)
        h = np.tanh(X @ W1.T + b1)
        return (h @ W2.T + b2)[:, 0], h

    def loss_and_grad(self, w: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        _W1, _b1, W2, _b2 = self.split(w)
        X, y = self.X[rows], self.y[rows]
        f, h = self.forward(w, X)
        r = (f - y) / len(rows)
        gW2 = (r @ h)[None, :]
        gb2 = np.array([r.sum()])
        dh = np.outer(r, W2[0]) * (1.0 - h**2)
        gW1 = dh.T @ X
        gb1 = dh.sum(axis=0)
        grad = np.concatenate([gW1.ravel(), gb1, gW2.ravel(), gb2])
        return float(0.5 * np.mean((f - y) ** 2)), grad


class BatchNormMLP(Problem):
    """``f(x) = W2 tanh(BN(W1 x + b1)) + b3`` (3-4-1) with BatchNorm in training mode: each gradient normalizes with
    the statistics of the examples it is taken over (so each m-SAM group with its own), as
    ``nn.Sequential(Linear, BatchNorm1d, Tanh, Linear)`` in train mode."""

    EPS = 1e-5

    def __init__(self) -> None:
        rng = np.random.default_rng(8)
        X = rng.standard_normal((8, 3))
        y = np.sin(X @ np.array([1.0, -0.5, 0.25]))
        shapes = [
            ("0.weight", (4, 3)),
            ("0.bias", (4,)),
            ("1.weight", (4,)),
            ("1.bias", (4,)),
            ("3.weight", (1, 4)),
            ("3.bias", (1,)),
        ]
        super().__init__("bn", X, y, shapes)

    def forward(self, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, Any]:
        W1, b1, gamma, beta, W2, b2 = self.split(w)
        z = X @ W1.T + b1
        mu = z.mean(axis=0)
        inv = 1.0 / np.sqrt(((z - mu) ** 2).mean(axis=0) + self.EPS)
        zh = (z - mu) * inv
        h = np.tanh(gamma * zh + beta)
        return (h @ W2.T + b2)[:, 0], (zh, inv, h)

    def loss_and_grad(self, w: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        _, _, gamma, _, W2, _ = self.split(w)
        X, y = self.X[rows], self.y[rows]
        f, (zh, inv, h) = self.forward(w, X)
        r = (f - y) / len(rows)
        gW2 = (r @ h)[None, :]
        gb2 = np.array([r.sum()])
        da = np.outer(r, W2[0]) * (1.0 - h**2)
        ggamma = (da * zh).sum(axis=0)
        gbeta = da.sum(axis=0)
        dzh = da * gamma
        dz = inv * (dzh - dzh.mean(axis=0) - zh * (dzh * zh).mean(axis=0))
        grad = np.concatenate([(dz.T @ X).ravel(), dz.sum(axis=0), ggamma, gbeta, gW2.ravel(), gb2])
        return float(0.5 * np.mean((f - y) ** 2)), grad


def problems() -> dict[str, Problem]:
    """The three problems, by name."""
    return {"diag": DiagNet(), "mlp": TinyMLP(), "bn": BatchNormMLP()}


def _initial(problem: Problem) -> np.ndarray:
    rng = np.random.default_rng(11)
    if problem.name == "diag":
        return np.concatenate([np.full(problem.X.shape[1], 0.5), 0.5 + 0.1 * rng.standard_normal(problem.X.shape[1])])
    w = 0.5 * rng.standard_normal(problem.dim)
    if problem.name == "bn":  # BatchNorm scales near 1
        w[problem.mask(lambda n: n == "1.weight") == 1.0] += 1.0
    return w


def _config(rho: float, variant: dict | None = None, **sam: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"rho": rho, "normalization": "normalized", "variant": variant or {"kind": "sam"}}
    cfg.update(sam)
    return cfg


# Each case: samlab's SamConfig, samlab.torch.SAM's options, steps, and the noise it needs.
#: name -> (SamConfig as a dict, SAM's keyword options, steps, noise: "normals" | "keeps" | None)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], int, str | None]] = {
    "erm": (_config(0.0, normalization="unnormalized"), {"rho": 0.0}, 2, None),
    "sam-normalized": (_config(0.2), {"rho": 0.2}, 2, None),
    "sam-unnormalized": (
        _config(0.2, normalization="unnormalized"),
        {"rho": 0.2, "normalization": "unnormalized"},
        2,
        None,
    ),
    "sam-clipped": (_config(0.2, normalization="clipped"), {"rho": 0.2, "normalization": "clipped"}, 2, None),
    "sam-multistep": (_config(0.2, ascent_steps=3), {"rho": 0.2, "ascent_steps": 3}, 2, None),
    "sam-multistep-clipped": (
        _config(0.2, ascent_steps=2, ascent_step_mult=0.75, normalization="clipped"),
        {"rho": 0.2, "ascent_steps": 2, "ascent_step_mult": 0.75, "normalization": "clipped"},
        2,
        None,
    ),
    "sam-random-init": (
        _config(0.2, ascent_steps=2, random_init=True),
        {"rho": 0.2, "ascent_steps": 2, "random_init": True},
        2,
        "normals",
    ),
    "random-perturbation": (
        _config(0.2, perturbation="random"),
        {"rho": 0.2, "random_perturbation": True},
        2,
        "normals",
    ),
    "m-sam": (_config(0.2, grouping={"size": 2}), {"rho": 0.2, "m": 2}, 2, None),
    "m-sam-unnormalized": (
        _config(0.2, grouping={"size": 4}, normalization="unnormalized"),
        {"rho": 0.2, "m": 4, "normalization": "unnormalized"},
        2,
        None,
    ),
    "asam": (_config(0.2, {"kind": "asam", "eta": 0.01}), {"rho": 0.2, "variant": "asam", "eta": 0.01}, 2, None),
    "gsam": (_config(0.2, {"kind": "gsam", "alpha": 0.3}), {"rho": 0.2, "variant": "gsam", "alpha": 0.3}, 2, None),
    "fisher-sam": (
        _config(0.2, {"kind": "fisher_sam", "eta": 1.0}),
        {"rho": 0.2, "variant": "fisher-sam", "eta": 1.0},
        2,
        None,
    ),
    "fsam": (
        _config(0.2, {"kind": "fsam", "sigma": 1.0, "lambda": 0.6}),
        {"rho": 0.2, "variant": "fsam", "sigma": 1.0, "lam": 0.6},
        3,
        None,
    ),
    "vasso": (_config(0.2, {"kind": "vasso", "theta": 0.4}), {"rho": 0.2, "variant": "vasso", "theta": 0.4}, 3, None),
    "looksam": (
        _config(0.2, {"kind": "look_sam", "k": 2, "alpha": 0.7}),
        {"rho": 0.2, "variant": "looksam", "k": 2, "alpha": 0.7},
        4,
        None,
    ),
    "esam": (
        _config(0.2, {"kind": "esam", "beta": 0.6, "gamma": 0.5}),
        {"rho": 0.2, "variant": "esam", "beta": 0.6, "gamma": 0.5},
        2,
        "keeps",
    ),
    "esam-grouped": (
        _config(0.2, {"kind": "esam", "beta": 1.0, "gamma": 0.5}, grouping={"size": 4}),
        {"rho": 0.2, "variant": "esam", "beta": 1.0, "gamma": 0.5, "m": 4},
        2,
        None,
    ),
    "msam": (_config(0.2, {"kind": "msam"}), {"rho": 0.2, "variant": "msam"}, 3, None),
    "sam-on": (_config(0.2, {"kind": "sam_on"}), {"rho": 0.2, "variant": "sam-on"}, 2, None),
}


def _norm_names(problem: Problem) -> list[str]:
    """SAM-ON's parameters: the BatchNorm layer's scale and shift; ``v`` of the diagonal net and the output layer of
    the MLP stand for normalization layers, which those models have not."""
    rule = {"diag": lambda n: n == "v", "mlp": lambda n: n.startswith("2."), "bn": lambda n: n.startswith("1.")}
    return [n for n, _ in problem.shapes if rule[problem.name](n)]


def _norm_mask(problem: Problem) -> np.ndarray:
    """SAM-ON's coordinates (those of :func:`_norm_names`)."""
    names = _norm_names(problem)
    return problem.mask(lambda n: n in names)


def _asam_mask(problem: Problem) -> np.ndarray | None:
    """ASAM's scaled coordinates: every one on the diagonal net (the analytic engines' choice), those named
    ``weight`` on the MLPs (the deep engine's and the official code's, BatchNorm's scale included)."""
    return None if problem.name == "diag" else problem.mask(lambda n: "weight" in n)


def write(directory: str | Path) -> dict[str, Any]:
    """Writes the conformance vectors to ``directory`` (created); returns the manifest."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": "samlab-conformance", "version": VERSION, "lr": LR, "cases": []}
    for pname, problem in problems().items():
        np.save(out / f"{pname}_X.npy", problem.X)
        np.save(out / f"{pname}_y.npy", problem.y)
        for cname, (config, options, steps, noise) in CASES.items():
            name = f"{pname}-{cname}"
            case_dir = out / name
            case_dir.mkdir(exist_ok=True)
            rng = np.random.default_rng(100 + len(manifest["cases"]))
            w = _initial(problem)
            np.save(case_dir / "w0.npy", w)
            batch = len(problem.y)
            msam = config["variant"]["kind"] == "msam"
            momentum = MOMENTUM if msam else 0.0
            buf: np.ndarray | None = None
            direction: np.ndarray | None = None
            vsteps = 0
            record: list[dict[str, Any]] = []
            groups = batch // config.get("grouping", {"size": batch})["size"]
            for t in range(steps):
                kw: dict[str, Any] = {}
                if noise == "normals":
                    draws = groups * (1 if config.get("perturbation") == "random" or config.get("random_init") else 0)
                    kw["normals"] = rng.standard_normal((draws, problem.dim))
                    np.save(case_dir / f"t{t}_normals.npy", kw["normals"])
                if noise == "keeps":
                    kw["keeps"] = (rng.random((groups, problem.dim)) < config["variant"]["beta"]).astype(np.float64)
                    np.save(case_dir / f"t{t}_keeps.npy", kw["keeps"])
                if msam:
                    kw["momentum"] = np.zeros(problem.dim) if buf is None else buf
                if config["variant"]["kind"] == "sam_on":
                    kw["norm_mask"] = _norm_mask(problem)
                if config["variant"]["kind"] == "asam" and _asam_mask(problem) is not None:
                    kw["asam_mask"] = _asam_mask(problem)
                res = sam_step(
                    json.dumps(config),
                    w,
                    batch,
                    problem.loss_and_grad,
                    losses=problem.losses,
                    direction=direction,
                    steps=vsteps,
                    **kw,
                )
                d = res["direction"]
                if momentum:
                    buf = d.copy() if buf is None else momentum * buf + d
                    w = w + (-LR) * buf
                else:
                    w = w + (-LR) * d
                direction, vsteps = res["state_direction"], res["state_steps"]
                calls = res["calls"]
                np.save(case_dir / f"t{t}_deltas.npy", res["deltas"])
                np.save(case_dir / f"t{t}_direction.npy", d)
                np.save(case_dir / f"t{t}_w.npy", w)
                np.save(case_dir / f"t{t}_grads.npy", np.array([c["grad"] for c in calls]))
                np.save(case_dir / f"t{t}_points.npy", np.array([c["point"] for c in calls]))
                if direction is not None:
                    np.save(case_dir / f"t{t}_state.npy", direction)
                record.append(
                    {
                        "gradient_evals": res["gradient_evals"],
                        "variant_steps": res["state_steps"],
                        "loss": res["loss"],
                        "calls": [{"pass": c["pass"], "rows": c["rows"].tolist(), "loss": c["loss"]} for c in calls],
                    }
                )
            spec = {
                "problem": pname,
                "case": cname,
                "config": config,
                "options": options,
                "lr": LR,
                "momentum": momentum,
                "steps": steps,
                "batch": batch,
                "noise": noise,
                "param_names": [n for n, _ in problem.shapes],
                "param_shapes": [list(s) for _, s in problem.shapes],
                "norm_params": _norm_names(problem),
                "named_params": problem.name != "diag",
                "record": record,
            }
            (case_dir / "case.json").write_text(json.dumps(spec, indent=1))
            manifest["cases"].append(name)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# --- the checker ---------------------------------------------------------------------------------------------------


def load(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest and every case (its spec with the arrays under ``arrays``); refuses another format version."""
    root = Path(directory)
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("format") != "samlab-conformance" or manifest.get("version") != VERSION:
        raise ValueError(
            f"{root / 'manifest.json'} is format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this samlab reads samlab-conformance version {VERSION}"
        )
    cases = []
    for name in manifest["cases"]:
        spec = json.loads((root / name / "case.json").read_text())
        spec["name"] = name
        spec["arrays"] = {p.stem: np.load(p) for p in (root / name).glob("*.npy")}
        spec["X"] = np.load(root / f"{spec['problem']}_X.npy")
        spec["y"] = np.load(root / f"{spec['problem']}_y.npy")
        cases.append(spec)
    return manifest, cases


def torch_model(spec: dict[str, Any]) -> Any:
    """The case's problem as a float64 torch module with the weights ``w0``."""
    import torch

    w0 = torch.from_numpy(spec["arrays"]["w0"])
    if spec["problem"] == "diag":
        d = spec["X"].shape[1]

        class Diag(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.u = torch.nn.Parameter(w0[:d].clone())
                self.v = torch.nn.Parameter(w0[d:].clone())

            def forward(self, x: Any) -> Any:
                return x @ (self.u * self.v)

        return Diag()
    if spec["problem"] == "bn":
        layers = [torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)]
    else:
        layers = [torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)]
    model = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        at = 0
        for p in model.parameters():
            p.copy_(w0[at : at + p.numel()].reshape(p.shape))
            at += p.numel()
    return model


def closure_for(model: Any, X: Any, y: Any) -> Callable[..., Any]:
    """The checker's closure: ``closure(rows=None)`` backpropagates the mean squared loss ``(f - y)^2 / 2`` over the
    rows and returns it; under ``torch.no_grad()`` it returns the per-example losses instead (ESAM's selection)."""
    import torch

    def closure(rows: Any = None) -> Any:
        xs, ys = (X, y) if rows is None else (X[rows], y[rows])
        out = model(xs)
        out = out.reshape(ys.shape)
        per = 0.5 * (out - ys) ** 2
        if not torch.is_grad_enabled():
            return per
        loss = per.mean()
        loss.backward()
        return loss

    return closure


def needs_rows(spec: dict[str, Any]) -> bool:
    """Whether the case's step calls ``closure(rows)`` on parts of the batch (m-SAM groups, ESAM's selection): its
    optimizer is then stepped as ``step(closure, batch_size=B)``."""
    o = spec["options"]
    return o.get("m") is not None or (o.get("variant") == "esam" and o.get("gamma", 0.5) < 0.99)


def check(
    optimizer_factory: Callable[[dict[str, Any], Any], Any], directory: str | Path, cases: list[str] | None = None
) -> dict[str, float | None]:
    """Runs ``optimizer_factory(spec, model)`` on every case and returns its largest deviation from the vectors
    (the weights after each step, relative to 1 + |w|), or None where the factory returns None (not supported).

    The factory gets the case spec (``options``: samlab.torch.SAM's keywords; ``config``: samlab's; ``lr``,
    ``momentum``, ``arrays`` with the noise inputs) and the float64 model, and returns an optimizer whose
    ``step(closure)`` takes one step (``step(closure, batch_size=B)`` where :func:`needs_rows`). The closure
    backpropagates the mean loss and returns it (per-example losses under ``torch.no_grad()``); it does not zero
    the gradients.
    """
    import torch

    _, specs = load(directory)
    out: dict[str, float | None] = {}
    for spec in specs:
        if cases is not None and spec["name"] not in cases:
            continue
        model = torch_model(spec)
        opt = optimizer_factory(spec, model)
        if opt is None:
            out[spec["name"]] = None
            continue
        X, y = torch.from_numpy(spec["X"]), torch.from_numpy(spec["y"])
        closure = closure_for(model, X, y)
        worst = 0.0
        for t in range(spec["steps"]):
            if needs_rows(spec):
                opt.step(closure, batch_size=spec["batch"])
            else:
                opt.step(closure)
            w = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
            want = spec["arrays"][f"t{t}_w"]
            worst = max(worst, float(np.max(np.abs(w - want) / (1.0 + np.abs(want)))))
        out[spec["name"]] = worst
    return out


def samlab_factory(spec: dict[str, Any], model: Any) -> Any:
    """:class:`samlab.torch.SAM` for a case, with the case's noise, SGD as the base optimizer."""
    import torch

    from .sam import SAM

    arrays = spec["arrays"]
    params = list(model.named_parameters()) if spec["named_params"] else list(model.parameters())
    tensors = [p for _, p in params] if spec["named_params"] else params
    base = torch.optim.SGD(tensors, lr=spec["lr"], momentum=spec["momentum"])
    shapes = [p.shape for p in tensors]
    draws: dict[str, list[np.ndarray]] = {"normal": [], "keep": []}
    for t in range(spec["steps"]):
        draws["normal"].extend(arrays.get(f"t{t}_normals", np.zeros((0, 1))))
        draws["keep"].extend(arrays.get(f"t{t}_keeps", np.zeros((0, 1))))

    def noise(kind: str, like: list) -> list:
        flat = torch.from_numpy(draws[kind].pop(0))
        out, at = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(flat[at : at + n].reshape(s))
            at += n
        return out

    options = dict(spec["options"])
    norm = [p for n, p in model.named_parameters() if n in spec["norm_params"]]
    extra = {"norm_params": norm} if options.get("variant") == "sam-on" else {}
    return SAM(params, base, noise=noise, **extra, **options)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("write", "check"):
        print("usage: python -m samlab.conformance write DIR | check DIR", file=sys.stderr)
        return 2
    if args[0] == "write":
        manifest = write(args[1])
        print(f"wrote {len(manifest['cases'])} cases to {args[1]} (format version {VERSION})")
        return 0
    errors = check(samlab_factory, args[1])
    for name, err in errors.items():
        print(f"{name}\t{'unsupported' if err is None else f'{err:.3e}'}")
    worst = max((e for e in errors.values() if e is not None), default=0.0)
    return 0 if worst <= 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
