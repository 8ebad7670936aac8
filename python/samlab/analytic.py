"""The analytic engines as NumPy functions: the diagonal linear network with every SAM method and variant.

The options are those of ``samlab diag train`` (the same names as its flags), resolved the same way, so a run
here equals the same run through the command line bit for bit. Training runs in samlab's Rust engine with the
GIL released.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _samlab
from ._repr import summary_repr

__all__ = ["DiagRun", "diag_train", "sparse_regression"]

Method = Literal["gd", "sgd", "nsam", "msam", "1sam"]

VARIANTS: tuple[str, ...] = tuple(_samlab.variant_defaults())
"""The names ``variant=`` takes (those of ``samlab diag train --variant``)."""


@dataclass(frozen=True, repr=False)
class DiagRun:
    """The outcome of :func:`diag_train`.

    ``u``, ``v`` are the final factors (the last finite ones if the run diverged), ``beta = u * v``, ``alpha_eff =
    sqrt(max(u^2 - v^2, 0))``. The curve: ``iteration``, ``train_loss``, ``test_loss`` at the logged iterations
    (the columns of a run directory's metrics.csv). ``status`` is ``"ok"`` or ``"diverged"``; ``iterations`` the
    updates done. ``final_train_loss`` and ``final_test_loss`` are NaN for a diverged run.
    """

    u: np.ndarray
    v: np.ndarray
    beta: np.ndarray
    alpha_eff: np.ndarray
    iteration: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    status: str
    iterations: int

    @property
    def final_train_loss(self) -> float:
        """The training loss after the last update (NaN if the run diverged)."""
        return float(self.train_loss[-1]) if self.status == "ok" else float("nan")

    @property
    def final_test_loss(self) -> float:
        """The test loss after the last update (NaN if the run diverged)."""
        return float(self.test_loss[-1]) if self.status == "ok" else float("nan")

    @property
    def l1_norm(self) -> float:
        """``||beta||_1``."""
        return float(np.abs(self.beta).sum())

    @property
    def mean_alpha_eff(self) -> float:
        """The mean effective initialization (Theorem 1)."""
        return float(self.alpha_eff.mean())

    __repr__ = summary_repr


def sparse_regression(
    n: int = 20, d: int = 30, r: int = 3, n_test: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The paper's sparse regression data: ``(X, y, X_test, y_test, theta)``.

    Gaussian inputs and an ``r``-sparse unit target ``theta`` with noiseless labels, drawn from NumPy's legacy
    ``RandomState(seed)`` stream exactly as the authors' notebook draws them (the defaults are its data).

    Raises:
        ValueError: a size of 0, ``r > d``, or arrays too large.
    """
    return _samlab.sparse_regression(n, d, r, n_test, seed)


def _sam_config(
    method: str,
    rho: float | None,
    m: int | None,
    normalize: bool,
    clip: bool,
    variant: str | None,
    variant_options: Mapping[str, Any] | None,
    sam_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The SAM settings of ``samlab diag train --method ...`` (the CLI's resolution of its flags)."""
    if method == "msam":
        if m is None:
            raise ValueError('method "msam" needs m')
        grouping: Any = {"size": m}
    elif m is not None:
        raise ValueError('m is only for method "msam"')
    elif method == "1sam":
        grouping = {"size": 1}
    else:
        grouping = "whole_batch"
    sam_method = method in ("nsam", "msam", "1sam")
    if sam_method and rho is None:
        raise ValueError(f'method "{method}" needs rho')
    if not sam_method and rho is not None:
        raise ValueError("rho is only for the SAM methods (nsam, msam, 1sam)")
    if normalize and clip:
        raise ValueError("normalize and clip exclude each other")
    config: dict[str, Any] = {
        "grouping": grouping,
        "normalization": "normalized" if normalize else "clipped" if clip else "unnormalized",
    }
    if rho is not None:
        config["rho"] = rho
    if variant is not None:
        defaults = _samlab.variant_defaults()
        if variant not in defaults:
            raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(defaults)}")
        config["variant"] = {**json.loads(defaults[variant]), **(variant_options or {})}
    elif variant_options:
        raise ValueError("variant_options need a variant")
    config.update(sam_options or {})
    return config


def diag_train(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    method: Method,
    lr: float,
    iters: int,
    rho: float | None = None,
    alpha: float = 0.1,
    m: int | None = None,
    batch_size: int | None = None,
    normalize: bool = False,
    clip: bool = False,
    variant: str | None = None,
    variant_options: Mapping[str, Any] | None = None,
    sam_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    log: Literal["notebook", "ends"] = "notebook",
) -> DiagRun:
    """Trains a diagonal linear network ``beta = u * v`` on the squared loss from ``u = alpha``, ``v = 0``.

    Args:
        X, y: training inputs (``n x d``) and targets (``n``), float64.
        X_test, y_test: test data (default: the training data).
        method: ``"gd"`` (full batch), ``"sgd"`` (mini-batches of ``batch_size``, default 1), ``"nsam"`` (one
            perturbation per batch), ``"msam"`` (one per group of ``m`` examples), ``"1sam"`` (one per example).
        lr: the step size; iters: the number of updates.
        rho: the SAM radius (the SAM methods need it; the others refuse it).
        alpha: the initialization scale.
        batch_size: mini-batch size, drawn with replacement (default: full batch; 1 for ``"sgd"``).
        normalize: Foret et al.'s normalized SAM (default: unnormalized, the theory's USAM); clip: the
            deep-net code's clipped SAM.
        variant: a SAM variant by its CLI name (see ``VARIANTS``: ``"asam"``, ``"gsam"``, ``"fisher-sam"``, ...),
            at its default options; ``variant_options`` overrides them (e.g. ``{"eta": 0.1}``).
        sam_options: further fields of samlab's SamConfig (``ascent_steps``, ``ascent_step_mult``,
            ``random_init``, ``perturbation``, ``ascent_source``, ``rho_schedule``, ``window``).
        seed: seed of the SGD sampling and random perturbations (NumPy RandomState stream).
        log: the logged iterations: the notebook's (every one of the first 500, then 201 log-spaced) or the ends.

    Raises:
        ValueError: arrays whose shapes do not fit or with non-finite values, an option combination the CLI
            refuses, or a setting out of range (the message names it).
    """
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if method not in ("gd", "sgd", "nsam", "msam", "1sam"):
        raise ValueError(f'method must be one of "gd", "sgd", "nsam", "msam", "1sam", got {method!r}')
    if method == "sgd" and batch_size is None:
        batch_size = 1
    elif method == "gd" and batch_size is not None:
        raise ValueError('method "gd" is full batch: use method "sgd"')
    if log not in ("notebook", "ends"):
        raise ValueError(f'log must be "notebook" or "ends", got {log!r}')
    config = {
        "lr": lr,
        "iters": iters,
        "batch_size": batch_size,
        "seed": seed,
        "sam": _sam_config(method, rho, m, normalize, clip, variant, variant_options, sam_options),
        "log": log,
    }

    def f64(a: np.ndarray, name: str, ndim: int) -> np.ndarray:
        arr = np.ascontiguousarray(a, dtype=np.float64)
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
        return arr

    X = f64(X, "X", 2)
    y = f64(y, "y", 1)
    X_test = X if X_test is None else f64(X_test, "X_test", 2)
    y_test = y if y_test is None else f64(y_test, "y_test", 1)
    r = _samlab.diag_train(X, y, X_test, y_test, alpha, json.dumps(config, allow_nan=False))
    return DiagRun(**r)
