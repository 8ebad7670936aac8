"""Worst-case and average-case m-sharpness of any model given as callables, computed by samlab's Rust ascent.

:func:`worst_case` and :func:`average_case` run samlab-core's ``sharpness`` module (the definitions of
``samlab sharpness`` and of :func:`samlab.torch.sharpness`) on a model known only through Python callables over a
flat float64 parameter vector ``w``: ``loss_and_grad(w, rows) -> (mean loss, mean gradient)`` for the worst case,
``loss_fn(w, rows) -> mean loss`` for the average case. ``rows`` is the NumPy array (unsigned integers) of the
example indices of one group (``n`` examples, consecutive groups of ``m``). The ascent runs in Rust with the GIL
released; each call of the model takes it back (Ctrl-C interrupts).

Errors: bad settings raise ``ValueError`` naming the field (``TypeError`` for a wrong type); a callable returning
the wrong type, shape or dtype, or a NaN/inf, raises ``ValueError``/``TypeError`` saying so; the callable's own
exception propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._repr import summary_repr
from ._samlab import sharpness_average_case, sharpness_worst_case

__all__ = ["AverageCase", "WorstCase", "average_case", "worst_case"]

LossAndGrad = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]
LossFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True, repr=False)
class WorstCase:
    """Worst-case m-sharpness: ``sharpness`` is the mean over groups ``C`` of ``L_C(w + delta_C) - L_C(w)``
    (``group_sharpness``), ``delta_C`` the kept restart's last ascent iterate; ``loss`` the mean clean loss;
    ``group_delta_norm`` the constraint's norm of each ``delta_C`` (of ``delta / |w|`` when adaptive)."""

    sharpness: float
    loss: float
    group_sharpness: np.ndarray
    group_loss: np.ndarray
    group_max_loss: np.ndarray
    group_delta_norm: np.ndarray
    rho: float
    m: int
    steps: int
    restarts: int
    norm: str
    adaptive: bool

    __repr__ = summary_repr


@dataclass(frozen=True, repr=False)
class AverageCase:
    """Average-case sharpness: ``sharpness`` is the mean over groups and draws of ``L_C(w + sigma z) - L_C(w)``,
    ``z ~ N(0, I)``, ``sigma = rho / sqrt(P)``, with its standard error over the draws (``draws``: groups x
    samples); ``loss`` the mean clean loss."""

    sharpness: float
    std_error: float
    loss: float
    sigma: float
    group_sharpness: np.ndarray
    group_loss: np.ndarray
    draws: np.ndarray
    rho: float
    m: int
    samples: int

    __repr__ = summary_repr


def _int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return int(value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _common(fn: Any, what: str, w: Any, n: Any, rho: Any, m: Any, seed: Any) -> tuple[np.ndarray, int, float, int, int]:
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {type(fn).__name__}")
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w must be a 1-D float64 NumPy array, got {type(w).__name__}")
    if w.dtype != np.float64:
        raise TypeError(f"w must be a 1-D float64 NumPy array, got dtype {w.dtype}")
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"w must be a non-empty 1-D array, got shape {w.shape}")
    n = _int("n", n, 1)
    m = n if m is None else _int("m", m, 1)
    seed = _int("seed", seed, 0)
    if seed >= 2**32:
        raise ValueError(f"seed must be < 2**32, got {seed}")
    return np.ascontiguousarray(w), n, _float("rho", rho), m, seed


def worst_case(
    loss_and_grad: LossAndGrad,
    w: np.ndarray,
    n: int,
    rho: float = 0.1,
    m: int | None = None,
    steps: int = 20,
    restarts: int = 1,
    norm: Literal["l2", "linf"] = "l2",
    adaptive: bool = False,
    step_size_mult: float = 0.1,
    normalize: bool = True,
    random_init: bool | None = None,
    seed: int = 0,
) -> WorstCase:
    """Worst-case m-sharpness at ``w``: for each group ``C`` of ``m`` consecutive examples (``None``: one group of
    all ``n``), ``max over ||delta|| <= rho of L_C(w + delta) - L_C(w)``, estimated by ``steps`` of projected
    gradient ascent of step ``step_size_mult * rho`` (normalized, or along ``sign(h)`` for ``linf``; raw without
    ``normalize``); ``norm`` ``"l2"`` (ball) or ``"linf"`` (box); ``adaptive``: scaled by ``|w|``; ``restarts``
    keep the largest loss at the last iterate, each from a random start (``random_init``, default
    ``restarts > 1``; drawn from a NumPy-compatible ``RandomState(seed)``). The definitions of
    :func:`samlab.torch.sharpness`, run by samlab's Rust ascent.
    """
    w, n, rho, m, seed = _common(loss_and_grad, "loss_and_grad", w, n, rho, m, seed)
    steps = _int("steps", steps, 1)
    restarts = _int("restarts", restarts, 1)
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if random_init is None:
        random_init = restarts > 1
    r = sharpness_worst_case(
        loss_and_grad,
        w,
        n,
        rho,
        m,
        steps,
        restarts,
        norm,
        bool(adaptive),
        _float("step_size_mult", step_size_mult),
        bool(normalize),
        bool(random_init),
        seed,
    )
    return WorstCase(**r, rho=rho, m=m, steps=steps, restarts=restarts, norm=norm, adaptive=bool(adaptive))


def average_case(
    loss_fn: LossFn,
    w: np.ndarray,
    n: int,
    rho: float = 0.1,
    m: int | None = None,
    samples: int = 10,
    seed: int = 0,
) -> AverageCase:
    """Average-case sharpness at ``w``: for each group ``C`` of ``m`` consecutive examples (``None``: all ``n``),
    the mean over ``samples`` Gaussian draws of ``L_C(w + sigma z) - L_C(w)``, ``sigma = rho / sqrt(P)``
    (``P = len(w)``), ``z`` from a NumPy-compatible ``RandomState(seed)``; run by samlab's Rust code."""
    w, n, rho, m, seed = _common(loss_fn, "loss_fn", w, n, rho, m, seed)
    samples = _int("samples", samples, 1)
    r = sharpness_average_case(loss_fn, w, n, rho, m, samples, seed)
    return AverageCase(**r, rho=rho, m=m, samples=samples)
