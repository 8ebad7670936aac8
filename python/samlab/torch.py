"""Curvature and sharpness of your own PyTorch model.

:func:`hessian`, :func:`ggn` and :func:`hessian_residual` build an :class:`Operator`: exact products ``v -> A @ v``
with the Hessian of the loss, its generalised Gauss-Newton part or their difference, over the parameters you pick,
that plugs into every :mod:`samlab.curvature` engine::

    op = samlab.torch.hessian(model, torch.nn.functional.cross_entropy, (x, y))
    samlab.curvature.lanczos(op, k=5)                  # or lanczos(op, op.dim, k=5)

:func:`sharpness` measures worst-case (and average-case) m-sharpness as ``samlab sharpness`` defines it.
:class:`SAM` is :mod:`samlab.sam`'s optimizer.

PyTorch is an optional dependency of samlab: this module needs it (``pip install torch``), ``import samlab`` does not.

The data (``data``) is an ``(x, y)`` pair of tensors (one batch) or an iterable of ``(x, y)`` batches (a list, a
``DataLoader``); it is read once and kept, so every product sees the same batches. ``loss_fn(model(x), y)`` returns
the *mean* loss of a batch. With batches of sizes ``n_1, ..., n_B`` and ``N = n_1 + ... + n_B``, the loss of the
data is the size-weighted mean ``L = sum_b (n_b / N) L_b``, and every operator is that of ``L``:
``H v = sum_b (n_b / N) H_b v``. Two batches of 3 and 5 examples give the operator of the one batch of 8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np

try:
    import torch
    from torch.func import functional_call
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "samlab.torch needs PyTorch, which is not installed: pip install torch (samlab's tests use torch==2.9.0)"
    ) from e

from ._repr import summary_repr
from .sam import SAM  # the SAM family as a torch optimizer, samlab.sam's, re-exported here

__all__ = [
    "SAM",
    "AverageSharpness",
    "Operator",
    "SharpnessResult",
    "ggn",
    "hessian",
    "hessian_residual",
    "sharpness",
]

LossFn = Callable[[Any, Any], torch.Tensor]
Data = Union[tuple, Iterable]
Params = Union[None, str, torch.Tensor, Sequence[Union[str, torch.Tensor]]]
BnMode = Literal["train", "eval"]
_BN_MODES = ("train", "eval")
_NORMS = ("l2", "linf")
_TARGETS = ("labels", "random-wrong")
_SELECTS = ("loss", "error")


# --- inputs ---------------------------------------------------------------------------------------------------


def _batch_size(x: Any, y: Any, i: int) -> int:
    for t in (x, y):
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            return int(t.shape[0])
    raise TypeError(f"batch {i} of data holds no tensor with a batch dimension (x is {type(x).__name__})")


def _to(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, torch.Tensor) else t


def _batches(data: Data, device: torch.device) -> list[tuple[Any, Any, int]]:
    """The batches of ``data`` as ``(x, y, n)``, on ``device``; refuses data without batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        raw = [tuple(data)]
    else:
        if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
            raise TypeError(
                f"data must be an (x, y) pair of tensors or an iterable of (x, y) batches, got {type(data).__name__}"
            )
        raw = list(data)
    if not raw:
        raise ValueError("data has no batches")
    out = []
    for i, b in enumerate(raw):
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise TypeError(f"batch {i} of data is not an (x, y) pair: got {type(b).__name__}")
        x, y = b
        n = _batch_size(x, y, i)
        if n == 0:
            raise ValueError(f"batch {i} of data is empty")
        out.append((_to(x, device), _to(y, device), n))
    return out


def _select(model: torch.nn.Module, params: Params) -> tuple[list[str], list[torch.Tensor]]:
    """The names and tensors of the chosen parameters (see :func:`hessian`)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError("the model has no parameters that require grad")
    else:
        items = [params] if isinstance(params, (str, torch.Tensor)) else list(params)
        if not items:
            raise ValueError("params is empty")
        by_name = dict(named)
        by_id = {id(p): n for n, p in named}
        chosen = []
        for item in items:
            if isinstance(item, str):
                if item in by_name:
                    chosen.append((item, by_name[item]))
                    continue
                # A module's name selects its parameters that require grad ("layer1", "layer1.0.conv1").
                under = [(n, p) for n, p in named if n.startswith(item + ".") and p.requires_grad]
                if not under:
                    names = ", ".join(n for n, _ in named[:8]) + (", ..." if len(named) > 8 else "")
                    raise ValueError(f"the model has no parameter or module named {item!r} (its parameters: {names})")
                chosen.extend(under)
            elif isinstance(item, torch.Tensor):
                if id(item) not in by_id:
                    raise ValueError(f"a tensor of shape {tuple(item.shape)} in params is not a parameter of the model")
                chosen.append((by_id[id(item)], item))
            else:
                raise TypeError(f"params holds a {type(item).__name__}: give parameter names or tensors")
        seen: set[str] = set()
        for n, p in chosen:
            if n in seen:
                raise ValueError(f"parameter {n!r} is chosen twice in params")
            seen.add(n)
            if not p.requires_grad:
                raise ValueError(f"parameter {n!r} does not require grad (requires_grad=False): it has no gradient")
    dtypes = {p.dtype for _, p in chosen}
    devices = {p.device for _, p in chosen}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(f"the chosen parameters mix dtypes or devices: {sorted(map(str, dtypes | devices))}")
    if not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"the chosen parameters are not floating point: {next(iter(dtypes))}")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _check_bn(bn: str) -> None:
    if bn not in _BN_MODES:
        raise ValueError(f"bn must be 'train' or 'eval', got {bn!r}")


_NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


class _Mode:
    """Puts the model in evaluation mode, its BatchNorm layers in training mode with ``bn="train"``; on exit restores
    every module's mode and every buffer. With ``bn="train"`` the passes run on copies of the buffers (the running
    statistics that a training-mode pass updates), and the original tensors are put back untouched on exit, so that
    a kept gradient graph (``hessian(cache=...)``) never sees a buffer it saved change in place."""

    def __init__(self, model: torch.nn.Module, bn: str) -> None:
        self.model, self.bn = model, bn

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.buffers = []
        if self.bn == "train":
            for m in self.model.modules():
                for name, b in m._buffers.items():
                    if b is not None:
                        self.buffers.append((m, name, b))
                        m._buffers[name] = b.detach().clone()
        self.model.eval()
        if self.bn == "train":
            for m in self.model.modules():
                if isinstance(m, _NORM_LAYERS):
                    m.train()
        self.grad = torch.enable_grad()
        self.grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.grad.__exit__(*exc)
        for m, name, original in self.buffers:
            m._buffers[name] = original
        for m, training in self.modes:
            m.training = training


def _scalar(loss: Any) -> torch.Tensor:
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return the batch's mean loss as a scalar tensor, got {shape}")
    return loss.reshape(())


def _grads(outputs: Any, inputs: Sequence[torch.Tensor], **kw: Any) -> list[torch.Tensor]:
    """``torch.autograd.grad`` with zeros for inputs that ``outputs`` does not depend on."""
    g = torch.autograd.grad(outputs, inputs, allow_unused=True, **kw)
    return [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, inputs)]


# --- operators ------------------------------------------------------------------------------------------------


class Operator:
    """A symmetric operator ``v -> A @ v`` on the flattened chosen parameters of a PyTorch model.

    ``A`` is the Hessian (``kind="hessian"``), the generalised Gauss-Newton matrix (``"ggn"``) or their difference
    (``"residual"``) of the data's size-weighted mean loss, at the model's current parameters. ``v`` is ordered as
    ``names`` (each parameter flattened in PyTorch's row-major order); ``dim`` is the total size. Products take
    and return 1-D NumPy arrays; they are computed in the parameters' dtype (float64 models give float64
    products) and returned in it. Calling the operator is calling :meth:`matvec`; ``products`` counts them.

    Build it with :func:`hessian`, :func:`ggn` or :func:`hessian_residual`.
    """

    def __init__(
        self,
        kind: str,
        model: torch.nn.Module,
        loss_fn: LossFn,
        data: Data,
        params: Params,
        bn: BnMode,
        cache: bool | None = None,
    ) -> None:
        _check_bn(bn)
        if cache is not None and not isinstance(cache, bool):
            raise TypeError(f"cache must be True, False or None, got {type(cache).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.kind = kind
        self.model = model
        self.loss_fn = loss_fn
        self.bn = bn
        names, tensors = _select(model, params)
        self.names = tuple(names)
        self._params = tensors
        self.shapes = tuple(tuple(p.shape) for p in tensors)
        self.dtype = tensors[0].dtype
        self.device = tensors[0].device
        self.dim = sum(p.numel() for p in tensors)
        self._batches = _batches(data, self.device)
        self.examples = sum(n for _, _, n in self._batches)
        self.products = 0
        #: Whether Hessian products reuse each batch's gradient graph (see :func:`hessian`).
        self.cache = kind == "hessian" and (len(self._batches) == 1 if cache is None else cache)
        self._graph: list[tuple[list[int], list[torch.Tensor], float]] | None = None
        self._versions: list[int] = []

    @property
    def batches(self) -> int:
        """How many batches the data holds."""
        return len(self._batches)

    def __repr__(self) -> str:
        return (
            f"Operator(kind={self.kind!r}, dim={self.dim}, params={len(self.names)}, dtype={self.dtype}, "
            f"batches={self.batches}, examples={self.examples}, bn={self.bn!r})"
        )

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        out, at = [], 0
        for p in self._params:
            out.append(v[at : at + p.numel()].view_as(p))
            at += p.numel()
        return out

    def _hvp(self, out: Any, y: Any, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        loss = _scalar(self.loss_fn(out, y))
        g = _grads(loss, self._params, create_graph=True)
        live = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        if not live:  # the loss is linear in the chosen parameters
            return [torch.zeros_like(p) for p in self._params]
        return _grads([gi for gi, _ in live], self._params, grad_outputs=[vi for _, vi in live], retain_graph=True)

    def _ggn(self, out: Any, y: Any, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"ggn needs the model to return one tensor, got {type(out).__name__}")
        # J v by the double-vjp trick: J^T u is linear in u, and the gradient of <J^T u, v> in u is J v.
        u = torch.zeros_like(out, requires_grad=True)
        jtu = _grads(out, self._params, grad_outputs=u, create_graph=True, retain_graph=True)
        live = [(t, vi) for t, vi in zip(jtu, vs) if t.requires_grad]
        if not live:  # the output does not depend on the chosen parameters
            return [torch.zeros_like(p) for p in self._params]
        jv = torch.autograd.grad([t for t, _ in live], u, grad_outputs=[vi for _, vi in live], retain_graph=True)[0]
        # H_out (J v), the Hessian of the loss in the output.
        o = out.detach().requires_grad_(True)
        lg = torch.autograd.grad(_scalar(self.loss_fn(o, y)), o, create_graph=True)[0]
        hjv = torch.autograd.grad(lg, o, grad_outputs=jv)[0] if lg.requires_grad else torch.zeros_like(o)
        return _grads(out, self._params, grad_outputs=hjv, retain_graph=True)

    def _gradient_graph(self) -> list[tuple[list[int], list[torch.Tensor], float]]:
        """Each batch's gradient (with its graph: ``create_graph=True``) on the parameters it depends on, and the
        batch's weight; built again when a parameter or buffer changed in place since (its ``_version`` moved)."""
        if self._graph is None or self._state_versions() != self._versions:
            self._graph = None  # the old graph's memory is freed before the new one is built
            graph = []
            with _Mode(self.model, self.bn):
                for x, y, n in self._batches:
                    g = _grads(_scalar(self.loss_fn(self.model(x), y)), self._params, create_graph=True)
                    live = [i for i, gi in enumerate(g) if gi.requires_grad]
                    graph.append((live, [g[i] for i in live], n / self.examples))
            self._graph, self._versions = graph, self._state_versions()
        return self._graph

    def _state_versions(self) -> list[int]:
        return [t._version for t in (*self._params, *self.model.buffers())]

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``A @ v`` for a 1-D array ``v`` of length ``dim``, as a 1-D array in the parameters' dtype."""
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.shape[0] != self.dim:
            got = f"shape {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
            raise ValueError(f"the operator has dim {self.dim} ({len(self.names)} parameters); v has {got}")
        vt = torch.as_tensor(np.ascontiguousarray(v), device=self.device).to(self.dtype)
        vs = self._split(vt)
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        if self.cache:
            for live, g, w in self._gradient_graph():
                if live:  # else the loss is linear in the chosen parameters
                    prod = _grads(g, self._params, grad_outputs=[vs[i] for i in live], retain_graph=True)
                    total.add_(torch.cat([t.reshape(-1) for t in prod]), alpha=w)
            self.products += 1
            return total.detach().cpu().numpy()
        with _Mode(self.model, self.bn):
            for x, y, n in self._batches:
                out = self.model(x)
                parts = []
                if self.kind in ("hessian", "residual"):
                    parts.append((1.0, self._hvp(out, y, vs)))
                if self.kind in ("ggn", "residual"):
                    parts.append((-1.0 if self.kind == "residual" else 1.0, self._ggn(out, y, vs)))
                w = n / self.examples
                for sign, prod in parts:
                    total.add_(torch.cat([t.reshape(-1) for t in prod]), alpha=sign * w)
        self.products += 1
        return total.detach().cpu().numpy()

    __call__ = matvec

    def dense(self) -> np.ndarray:
        """The ``dim x dim`` matrix, from ``dim`` products (for small models and tests)."""
        eye = np.eye(self.dim)
        return np.stack([self.matvec(eye[i]) for i in range(self.dim)], axis=1)


def hessian(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Data,
    params: Params = None,
    bn: BnMode = "train",
    cache: bool | None = None,
) -> Operator:
    """The Hessian of the data's loss in the chosen parameters, as an :class:`Operator` of exact products.

    Each product is a forward pass and a double backward per batch (``torch.autograd.grad`` with
    ``create_graph=True``), summed with the batch weights ``n_b / N``: the operator is the Hessian of
    ``L = sum_b (n_b / N) loss_fn(model(x_b), y_b)``, each ``loss_fn`` a batch *mean*. With ``cache`` the first
    product keeps every batch's gradient graph, and each product is then one backward through it per batch (as
    PyHessian does for one batch): the same products, in the memory of the graphs. ``cache=None`` (the default)
    caches when the data is one batch. A parameter changed in place (an optimizer step, ``p.add_``) since the
    graph was built makes the next product build it again; assigning ``p.data`` does not, so build a new operator
    after that.

    Args:
        model: any ``torch.nn.Module``; its parameters are not changed.
        loss_fn: ``loss_fn(model(x), y)`` -> the batch's mean loss (a scalar tensor), e.g.
            ``torch.nn.functional.cross_entropy``.
        data: an ``(x, y)`` pair of tensors, or an iterable of ``(x, y)`` batches (read once and kept).
        params: ``None`` (every parameter that requires grad), or parameter names, module names (all their
            parameters: ``"layer1"``) and parameter tensors, in a list or alone: the operator is the block of the
            Hessian on those parameters, in that order (per-layer spectra).
        bn: ``"train"``: BatchNorm layers normalise with the batch's statistics (as in training), and their running
            statistics are restored after every product; ``"eval"``: ``model.eval()``, the running statistics. In
            both, every other module is in evaluation mode (dropout off, so that the operator is fixed), and each
            module's mode is restored after every product.

    Raises:
        ValueError: ``bn`` not one of the two, data without batches, an empty batch, ``params`` naming nothing,
            a parameter twice or one that does not require grad; at product time a ``v`` whose length is not
            ``dim``, or a ``loss_fn`` that does not return a scalar.
        TypeError: a model that is not a module, data that is not batches of ``(x, y)`` pairs.
    """
    return Operator("hessian", model, loss_fn, data, params, bn, cache)


def ggn(model: torch.nn.Module, loss_fn: LossFn, data: Data, params: Params = None, bn: BnMode = "train") -> Operator:
    """The generalised Gauss-Newton matrix ``sum_b (n_b / N) J_b^T H_b J_b``, as an :class:`Operator`.

    ``J_b`` is the Jacobian of the model's output on batch ``b`` (the whole output tensor, so that BatchNorm's
    coupling of the examples is included) in the chosen parameters and ``H_b`` the Hessian of ``loss_fn`` in that
    output. ``J v`` comes from two vector-Jacobian products (the double-vjp trick), ``H_b`` from a double backward
    through ``loss_fn`` alone, ``J^T`` from one more backward. The model must return one tensor. Positive
    semi-definite when ``loss_fn`` is convex in the output (cross-entropy, squared error). Arguments and errors as
    for :func:`hessian`.
    """
    return Operator("ggn", model, loss_fn, data, params, bn)


def hessian_residual(
    model: torch.nn.Module, loss_fn: LossFn, data: Data, params: Params = None, bn: BnMode = "train"
) -> Operator:
    """``hessian - ggn``: the part of the Hessian from the output's own curvature,
    ``sum_b (n_b / N) sum_i (dloss_b/dout_i) d^2 out_i``. Arguments and errors as for :func:`hessian`."""
    return Operator("residual", model, loss_fn, data, params, bn)


# --- sharpness ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class AverageSharpness:
    """Average-case sharpness: the mean over groups and ``samples`` draws of ``L_C(w + sigma z) - L_C(w)``,
    ``z ~ N(0, I)``, ``sigma = rho / sqrt(P)`` (``E ||delta||^2 = rho^2``; ``P`` the number of chosen
    parameters), with its standard error over the draws."""

    sigma: float
    samples: int
    loss_increase: float
    std_error: float

    __repr__ = summary_repr


@dataclass(frozen=True, repr=False)
class SharpnessResult:
    """Worst-case m-sharpness: ``loss_increase`` is the mean over groups ``C`` of ``L_C(w + delta_C) - L_C(w)``,
    ``delta_C`` the kept restart's last ascent iterate. ``loss`` is the mean of ``L_C(w)``; ``group_loss``,
    ``group_max_loss`` and ``group_delta_norm`` are per group (the norm is that of the constraint: l2 or linf, of
    ``delta / |w|`` when adaptive); ``max_delta_norm`` is the largest (at most ``rho`` up to rounding)."""

    loss: float
    loss_increase: float
    max_delta_norm: float
    group_loss: np.ndarray
    group_max_loss: np.ndarray
    group_delta_norm: np.ndarray
    average: AverageSharpness | None
    rho: float
    m: int | None
    steps: int
    restarts: int
    norm: str
    adaptive: bool
    target: str
    select: str

    __repr__ = summary_repr


def _project_ellipsoid(d: torch.Tensor, s: torch.Tensor, rho: float) -> torch.Tensor:
    """The Euclidean projection onto ``{x : ||x / s||_2 <= rho}`` (coordinates with ``s = 0`` set to 0):
    ``x_i = d_i s_i^2 / (s_i^2 + lambda)``, ``lambda >= 0`` by bisection (samlab-deep's ``project_ellipsoid``)."""
    pos = s > 0
    s2 = s * s

    def at(lam: float) -> torch.Tensor:
        return torch.where(pos, d * s2 / (s2 + lam), torch.zeros_like(d))

    def norm_at(lam: float) -> float:
        return float(torch.linalg.vector_norm(torch.where(pos, d * s / (s2 + lam), torch.zeros_like(d))))

    if norm_at(0.0) <= rho:
        return at(0.0)
    lo, hi = 0.0, float(torch.linalg.vector_norm(d * s)) / rho
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if norm_at(mid) > rho:
            lo = mid
        else:
            hi = mid
        if rho - norm_at(hi) <= 1e-9 * rho:
            break
    return at(hi)


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        least = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {least} integer, got {value!r}")


def sharpness(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Data,
    rho: float = 0.1,
    m: int | None = 128,
    steps: int = 20,
    restarts: int = 1,
    norm: Literal["l2", "linf"] = "l2",
    adaptive: bool = False,
    *,
    step_size_mult: float = 0.1,
    normalize: bool = True,
    random_init: bool | None = None,
    samples: int | None = None,
    params: Params = None,
    bn: BnMode = "eval",
    seed: int = 0,
    target: Literal["labels", "random-wrong"] = "labels",
    select: Literal["loss", "error"] = "loss",
) -> SharpnessResult:
    """Worst-case m-sharpness of the model at its current parameters (and average-case with ``samples``).

    The definition and defaults of ``samlab sharpness`` (samlab-deep's ``analysis::sharpness``, after the
    authors' ``eval_sharpness.py``): each batch of ``data`` is cut into consecutive groups ``C`` of ``m`` examples
    (``m`` must divide every batch; ``None``: each batch is one group), and for each group

        S_C = max over ||delta|| <= rho of L_C(w + delta) - L_C(w),

    ``L_C = loss_fn(model(x_C), y_C)``, estimated by projected gradient ascent over the chosen parameters at once:
    ``delta_0 = 0`` (or a random start), then ``steps`` times ``delta <- P(delta + eta h / ||h||)``,
    ``h = grad L_C(w + delta)``, ``eta = step_size_mult * rho`` (the raw ``h`` without ``normalize``), ``P`` the
    projection onto the ball. A restart's value is the loss at its last iterate; of the ``restarts``, the one of
    largest loss is kept (``select="loss"``) or, for classifiers, the one of largest classification error on the
    true labels, the first on ties (``select="error"``, samlab-deep's default). The result is the mean of ``S_C``
    over groups (unweighted: groups are equal in size).

    - ``target="random-wrong"`` (classifiers: ``model(x)`` gives ``n x classes`` logits, ``y`` class indices):
      each restart *descends* the loss on labels drawn uniformly among each example's wrong classes, as the
      authors' ``eval_sharpness.py`` restarts do; the value is still the loss on the true labels.
      ``target="random-wrong", select="error", random_init=True`` is ``samlab sharpness --random-init``'s rule
      (the same definition; the random draws are PyTorch's, not samlab-deep's).

    - ``norm="l2"``: the Euclidean ball, as samlab-deep; ``norm="linf"`` (this module only): the box
      ``|delta_i| <= rho``, steps along ``sign(h)`` (the raw ``h`` without ``normalize``), projection by clipping,
      random starts uniform in the box.
    - ``adaptive``: the ellipsoid ``||delta / |w| || <= rho`` (adaptive sharpness, Kwon et al. 2021): steps along
      ``(h * |w|) / ||h||``, Euclidean projection onto the ellipsoid by bisection, random starts on its boundary;
      coordinates with ``w_i = 0`` are not perturbed. With ``linf``: the box ``|delta_i| <= rho |w_i|``.
    - ``random_init``: start every restart at a uniformly random point of the sphere (or of the box); ``None``
      means ``restarts > 1`` (without it every restart is the same ascent).
    - ``samples``: also the average-case sharpness, ``samples`` Gaussian draws ``sigma z`` per group with
      ``sigma = rho / sqrt(P)`` (whatever ``norm`` and ``adaptive``, as samlab-deep's baseline).
    - ``bn``: ``"eval"`` (samlab-deep's default: running statistics) or ``"train"`` (each group's own statistics;
      the running statistics are restored). Every other module is in evaluation mode.

    The ascent runs in PyTorch; :func:`samlab.sharpness.worst_case` runs samlab-core's Rust one on callables and
    equals this one without random starts. It follows samlab-deep's ``own_ascent`` step for step.
    The model's parameters and buffers are unchanged afterwards (the perturbed losses come from
    ``torch.func.functional_call``). ``rho = 0`` gives 0.

    Raises:
        ValueError: ``rho`` negative or not finite, ``m`` not dividing a batch, ``steps``/``restarts``/``samples``
            out of range, more restarts than one without a random start or wrong labels, an unknown ``norm``,
            ``bn``, ``target`` or ``select``, ``random-wrong`` or ``error`` on a model that is not a classifier
            (logits not 2-D, labels not integer class indices), and the errors of :func:`hessian` about ``params``
            and ``data``.
    """
    _check_bn(bn)
    if norm not in _NORMS:
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if target not in _TARGETS:
        raise ValueError(f"target must be 'labels' or 'random-wrong', got {target!r}")
    if select not in _SELECTS:
        raise ValueError(f"select must be 'loss' or 'error', got {select!r}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating, np.integer)):
        raise TypeError(f"rho must be a number, got {type(rho).__name__}")
    rho = float(rho)
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    if not (math.isfinite(step_size_mult) and step_size_mult > 0):
        raise ValueError(f"step_size_mult must be finite and > 0, got {step_size_mult}")
    _positive("steps", steps, allow_zero=True)
    _positive("restarts", restarts)
    _positive("seed", seed, allow_zero=True)
    if m is not None:
        _positive("m", m)
    if samples is not None:
        _positive("samples", samples)
    wrong_labels = target == "random-wrong"
    if random_init is None:
        random_init = restarts > 1 and not wrong_labels
    if restarts > 1 and not (random_init or wrong_labels):
        raise ValueError(
            "more than one restart needs random_init=True or target='random-wrong': the ascent from 0 is deterministic"
        )
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    names, tensors = _select(model, params)
    batches = _batches(data, tensors[0].device)
    groups = []
    for i, (x, y, n) in enumerate(batches):
        size = n if m is None else m
        if n % size:
            raise ValueError(f"m = {m} does not divide batch {i} of data, of {n} examples")
        if size == n:
            groups.append((x, y))
            continue
        for a in range(0, n, size):
            groups.append((x[a : a + size], y[a : a + size]))

    dtype, device = tensors[0].dtype, tensors[0].device
    w = torch.cat([p.detach().reshape(-1) for p in tensors])
    dim = w.numel()
    scale = w.abs() if adaptive else None  # |w|: the ellipsoid's (or the box's) semi-axes over rho
    active = (scale > 0) if scale is not None else None
    gen = torch.Generator().manual_seed(int(seed))

    def split(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, at = {}, 0
        for name, p in zip(names, tensors):
            out[name] = flat[at : at + p.numel()].view_as(p)
            at += p.numel()
        return out

    def loss_at(point: torch.Tensor, x: Any, y: Any) -> torch.Tensor:
        return _scalar(loss_fn(functional_call(model, split(point), (x,)), y))

    def value(delta: torch.Tensor, x: Any, y: Any) -> float:
        with torch.no_grad():
            return float(loss_at(w + delta, x, y))

    def grad(delta: torch.Tensor, x: Any, y: Any, sign: float) -> torch.Tensor:
        point = (w + delta).detach().requires_grad_(True)
        (h,) = torch.autograd.grad(sign * loss_at(point, x, y), point, allow_unused=True)
        return torch.zeros_like(point) if h is None else h

    def classifier_logits(delta: torch.Tensor, x: Any, y: Any) -> torch.Tensor:
        with torch.no_grad():
            logits = functional_call(model, split(w + delta), (x,))
        ok = isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] >= 2
        if not (ok and isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point()):
            raise ValueError(
                f"target={target!r} and select={select!r} need a classifier: n x classes logits (classes >= 2) "
                "and integer class labels"
            )
        return logits

    def error(delta: torch.Tensor, x: Any, y: Any) -> float:
        return float((classifier_logits(delta, x, y).argmax(dim=1) != y).double().mean())

    def wrong(x: Any, y: Any) -> torch.Tensor:
        classes = classifier_logits(torch.zeros_like(w), x, y).shape[1]
        k = torch.randint(0, classes - 1, (len(y),), generator=gen).to(y.device)
        return k + (k >= y).to(k.dtype)

    def size(delta: torch.Tensor) -> float:
        if scale is not None:
            d = torch.where(active, delta / torch.where(active, scale, torch.ones_like(scale)), torch.zeros_like(delta))
        else:
            d = delta
        return float(d.abs().max() if norm == "linf" else torch.linalg.vector_norm(d))

    def project(delta: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            bound = rho * scale if scale is not None else torch.full_like(delta, rho)
            return torch.maximum(torch.minimum(delta, bound), -bound)
        if scale is not None:
            return _project_ellipsoid(delta, scale, rho)
        n = float(torch.linalg.vector_norm(delta))
        return delta * (rho / n) if n > rho else delta

    def start() -> torch.Tensor:
        if not random_init:
            return torch.zeros_like(w)
        if norm == "linf":
            u = (2 * torch.rand(dim, generator=gen, dtype=dtype) - 1).to(device) * rho
            return u * scale if scale is not None else u
        z = torch.randn(dim, generator=gen, dtype=dtype).to(device)
        if scale is not None:
            z = torch.where(active, z, torch.zeros_like(z))
            return rho * scale * z / torch.linalg.vector_norm(z)
        return z * (rho / torch.linalg.vector_norm(z))

    eta = rho * step_size_mult
    group_loss, group_max, group_norm, draws = [], [], [], []
    with _Mode(model, bn):
        for x, y in groups:
            base = value(torch.zeros_like(w), x, y)
            best = None
            for _ in range(restarts):
                delta = start()
                labels, sign = (wrong(x, y), -1.0) if wrong_labels else (y, 1.0)
                for _ in range(steps):
                    h = grad(delta, x, labels, sign)
                    if norm == "linf":
                        direction = h.sign() if normalize else h
                        c = eta
                    else:
                        direction = h
                        c = eta / (float(torch.linalg.vector_norm(h)) + 1e-12) if normalize else eta
                    if scale is not None:
                        direction = direction * scale
                    delta = project(delta + c * direction)
                got = value(delta, x, y)
                key = error(delta, x, y) if select == "error" else got
                if best is None or key > best[0]:
                    best = (key, got, size(delta))
            group_loss.append(base)
            group_max.append(best[1])
            group_norm.append(best[2])
            if samples is not None:
                sigma = rho / math.sqrt(dim)
                for _ in range(samples):
                    z = torch.randn(dim, generator=gen, dtype=dtype).to(device)
                    draws.append(value(sigma * z, x, y) - base)

    loss = np.asarray(group_loss)
    top = np.asarray(group_max)
    average = None
    if samples is not None:
        d = np.asarray(draws)
        average = AverageSharpness(
            sigma=rho / math.sqrt(dim),
            samples=samples,
            loss_increase=float(d.mean()),
            std_error=float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan"),
        )
    return SharpnessResult(
        loss=float(loss.mean()),
        loss_increase=float((top - loss).mean()),
        max_delta_norm=float(max(group_norm)),
        group_loss=loss,
        group_max_loss=top,
        group_delta_norm=np.asarray(group_norm),
        average=average,
        rho=rho,
        m=m,
        steps=steps,
        restarts=restarts,
        norm=norm,
        adaptive=adaptive,
        target=target,
        select=select,
    )
