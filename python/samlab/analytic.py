"""The analytic engines as NumPy functions: the diagonal linear network and the one-hidden-layer ReLU network,
with every SAM method and variant, and their data generators.

The options are those of ``samlab diag train`` and ``samlab relu train`` (the same names as their flags), resolved
the same way and handed to the same Rust engines, so a run here is the same run as through the command line.
Training runs with the GIL released.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _samlab
from ._repr import summary_repr

__all__ = [
    "DiagRun",
    "ReluRun",
    "diag_train",
    "relu_train",
    "sparse_regression",
    "teacher_student",
    "twelve_points",
]

Method = Literal["gd", "sgd", "nsam", "msam", "1sam"]

VARIANTS: tuple[str, ...] = tuple(_samlab.variant_defaults())
"""The names ``variant=`` takes (those of ``samlab diag train --variant``)."""


class _FinalLosses:
    """The final losses of a run's curve (`train_loss`, `test_loss`, `status`), shared by the engines' results."""

    train_loss: np.ndarray
    test_loss: np.ndarray
    status: str

    @property
    def final_train_loss(self) -> float:
        """The training loss after the last update (NaN if the run diverged)."""
        return float(self.train_loss[-1]) if self.status == "ok" else float("nan")

    @property
    def final_test_loss(self) -> float:
        """The test loss after the last update (NaN if the run diverged)."""
        return float(self.test_loss[-1]) if self.status == "ok" else float("nan")


@dataclass(frozen=True, repr=False)
class DiagRun(_FinalLosses):
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


def twelve_points() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 12-point 1D regression of the authors' ReLU notebook: ``(X, y, X, y)`` (``X`` is ``12 x 1``; there is no
    held-out data, so the test set is the training set)."""
    return _samlab.twelve_points()


def teacher_student(
    n: int = 15, d: int = 2, teacher_width: int = 3, n_test: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Teacher-student data: ``(X, y, X_test, y_test, W_teacher, a_teacher)``.

    Unit-norm Gaussian inputs labelled by a bias-free ReLU teacher with unit-norm Gaussian hidden weights
    (``teacher_width x d``) and sign output weights, drawn from NumPy's ``RandomState(seed)`` (the defaults are the
    paper's setting).

    Raises:
        ValueError: a size of 0, or arrays too large.
    """
    return _samlab.teacher_student(n, d, teacher_width, n_test, seed)


def _sam_settings(
    method: str,
    rho: float | None,
    m: int | None,
    batch_size: int | None,
    normalize: bool,
    clip: bool,
    variant: str | None,
    variant_options: Mapping[str, Any] | None,
    sam_options: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], int | None]:
    """The SAM settings and the batch size of ``--method ...`` (the CLI's resolution of its flags)."""
    if method not in ("gd", "sgd", "nsam", "msam", "1sam"):
        raise ValueError(f'method must be one of "gd", "sgd", "nsam", "msam", "1sam", got {method!r}')
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
    if method == "sgd" and batch_size is None:
        batch_size = 1
    elif method == "gd" and batch_size is not None:
        raise ValueError('method "gd" is full batch: use method "sgd"')
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
    return config, batch_size


def _data(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray | None, y_test: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays as contiguous float64 of the right dimensions; the test data default to the training data."""
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")

    def f64(a: np.ndarray, name: str, ndim: int) -> np.ndarray:
        arr = np.ascontiguousarray(a, dtype=np.float64)
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
        return arr

    X = f64(X, "X", 2)
    y = f64(y, "y", 1)
    if X_test is None or y_test is None:
        return X, y, X, y
    return X, y, f64(X_test, "X_test", 2), f64(y_test, "y_test", 1)


def _log(log: str) -> str:
    if log not in ("notebook", "ends"):
        raise ValueError(f'log must be "notebook" or "ends", got {log!r}')
    return log


def _json(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(config, allow_nan=False)
    except ValueError:
        raise ValueError(f"settings must be finite numbers: {config}") from None


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
    options = dict(method=method, lr=lr, iters=iters, rho=rho, alpha=alpha, m=m, batch_size=batch_size)
    options.update(normalize=normalize, clip=clip, seed=seed, log=log)
    options.update(variant=variant, variant_options=variant_options, sam_options=sam_options)
    return DiagRun(**_samlab.diag_train(*_diag_args(X, y, X_test, y_test, **options)))


def _diag_args(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None,
    y_test: np.ndarray | None,
    *,
    method: Method,
    lr: float,
    iters: int,
    rho: float | None,
    alpha: float,
    m: int | None,
    batch_size: int | None,
    normalize: bool,
    clip: bool,
    seed: int,
    log: str,
    variant: str | None = None,
    variant_options: Mapping[str, Any] | None = None,
    sam_options: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """The engine's arguments for :func:`diag_train`'s: the checked arrays, alpha and the settings as JSON."""
    sam, batch_size = _sam_settings(method, rho, m, batch_size, normalize, clip, variant, variant_options, sam_options)
    config = {"lr": lr, "iters": iters, "batch_size": batch_size, "seed": seed, "sam": sam, "log": _log(log)}
    return (*_data(X, y, X_test, y_test), alpha, _json(config))


@dataclass(frozen=True, repr=False)
class ReluRun(_FinalLosses):
    """The outcome of :func:`relu_train`.

    The final network ``f(x) = a . relu(w x + b)``: ``w`` (``width x d``), ``b`` and ``a`` (``width``), and
    ``params``, all of them flat in the engine's order (``w`` input-major, then ``b``, then ``a``); for a diverged
    run, the last finite network. The curve: ``iteration``, ``train_loss``, ``test_loss``. ``status`` is ``"ok"``
    or ``"diverged"``, ``iterations`` the updates done, ``stopped_early`` whether the stop rule ended the run.
    """

    w: np.ndarray
    b: np.ndarray
    a: np.ndarray
    params: np.ndarray
    iteration: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    status: str
    iterations: int
    stopped_early: bool

    __repr__ = summary_repr


_SHAPES = {
    "constant": "constant",
    "linear-decay": "linear_decay",
    "step": "step",
    "cosine": "cosine",
    "cyclic": "cyclic",
}


def _lr(
    lr: float,
    lr_schedule: str,
    decay_at: Sequence[float],
    decay_factor: Sequence[float],
    warmup_steps: int | None,
    warmup_exp: tuple[float, float] | None,
) -> Any:
    """The learning-rate schedule of ``--lr``, ``--lr-schedule``, ``--decay-at``, ... (a plain rate if constant)."""
    if lr_schedule not in _SHAPES:
        raise ValueError(f"lr_schedule must be one of {', '.join(_SHAPES)}, got {lr_schedule!r}")
    if (decay_at or decay_factor) and lr_schedule != "step":
        raise ValueError('decay_at and decay_factor need lr_schedule "step"')
    if warmup_steps is not None and warmup_exp is not None:
        raise ValueError("warmup_steps and warmup_exp exclude each other")
    shape: dict[str, Any] = {"kind": _SHAPES[lr_schedule]}
    if lr_schedule == "step":
        shape.update(at=list(decay_at), factors=list(decay_factor))
    if warmup_steps is not None:
        warmup: dict[str, Any] = {"kind": "linear", "steps": warmup_steps}
    elif warmup_exp is not None:
        start, rate = warmup_exp
        warmup = {"kind": "exponential", "start": start, "rate": rate}
    else:
        warmup = {"kind": "none"}
    if shape["kind"] == "constant" and warmup["kind"] == "none":
        return lr
    return {"base": lr, "shape": shape, "warmup": warmup}


def _init(init: str, init_scale: float | None, w_scale: float | None, a_scale: float | None) -> dict[str, Any]:
    """The initialization of ``--init`` and its options; an option of another initialization is refused."""
    given = {"init_scale": (init_scale, "blanc"), "w_scale": (w_scale, "gaussian"), "a_scale": (a_scale, "gaussian")}
    if init not in ("blanc", "gaussian", "he", "uniform"):
        raise ValueError(f'init must be "blanc", "gaussian", "he" or "uniform", got {init!r}')
    for name, (value, owner) in given.items():
        if value is not None and init != owner:
            raise ValueError(f'{name} is an option of init "{owner}" and init is "{init}" (it would be ignored)')
    if init == "blanc":
        return {"kind": "blanc", "scale": 1.0 if init_scale is None else init_scale}
    if init == "gaussian":
        return {
            "kind": "gaussian",
            "w_scale": 1.0 if w_scale is None else w_scale,
            "a_scale": 1.0 if a_scale is None else a_scale,
        }
    return {"kind": init}


def relu_train(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    method: Method,
    lr: float,
    iters: int,
    width: int = 100,
    bias: bool = True,
    init: Literal["blanc", "gaussian", "he", "uniform"] = "blanc",
    init_scale: float | None = None,
    w_scale: float | None = None,
    a_scale: float | None = None,
    rho: float | None = None,
    m: int | None = None,
    batch_size: int | None = None,
    normalize: bool = False,
    clip: bool = False,
    variant: str | None = None,
    variant_options: Mapping[str, Any] | None = None,
    sam_options: Mapping[str, Any] | None = None,
    lr_schedule: Literal["constant", "linear-decay", "step", "cosine", "cyclic"] = "constant",
    decay_at: Sequence[float] = (),
    decay_factor: Sequence[float] = (),
    warmup_steps: int | None = None,
    warmup_exp: tuple[float, float] | None = None,
    loss: Literal["sum", "mean"] = "sum",
    stop_below: float | None = None,
    stop_on: Literal["clean", "descent"] = "clean",
    seed: int = 0,
    init_seed: int | None = None,
    log: Literal["notebook", "ends"] = "notebook",
) -> ReluRun:
    """Trains a one-hidden-layer ReLU network ``f(x) = sum_j a_j relu(w_j . x + b_j)`` on the squared loss.

    The options of ``samlab relu train``: ``method``, ``rho``, ``m``, ``batch_size``, ``normalize``, ``clip``,
    ``variant``, ``variant_options`` and ``sam_options`` as in :func:`diag_train`, and

    Args:
        width: hidden neurons; bias: whether the hidden layer has biases.
        init: ``"blanc"`` (the notebook's, scaled by ``init_scale``, default 1), ``"gaussian"`` (``w_scale``,
            ``a_scale``, default 1), ``"he"`` or ``"uniform"`` (PyTorch's ``nn.Linear``).
        lr_schedule: the shape of the learning rate over training; ``decay_at`` and ``decay_factor`` for
            ``"step"``; ``warmup_steps`` (linear) or ``warmup_exp = (start, rate)`` (exponential) warm-up.
        loss: the per-example losses ``(f(x) - y)^2 / 2`` summed (the notebook's) or averaged.
        stop_below: stop once an update's batch loss is at most this, read on the clean or the descent
            (perturbed) parameters (``stop_on``).
        seed: seed of the SGD sampling and random perturbations, and of the initialization unless ``init_seed``
            is given (the CLI's ``--seed`` sets both).
        log: the logged iterations, as in :func:`diag_train`.

    Raises:
        ValueError: arrays whose shapes do not fit or with non-finite values, an option combination the CLI
            refuses, or a setting out of range (the message names it).
    """
    sam, batch_size = _sam_settings(method, rho, m, batch_size, normalize, clip, variant, variant_options, sam_options)
    if loss not in ("sum", "mean"):
        raise ValueError(f'loss must be "sum" or "mean", got {loss!r}')
    if stop_on not in ("clean", "descent"):
        raise ValueError(f'stop_on must be "clean" or "descent", got {stop_on!r}')
    config = {
        "lr": _lr(lr, lr_schedule, decay_at, decay_factor, warmup_steps, warmup_exp),
        "iters": iters,
        "batch_size": batch_size,
        "seed": seed,
        "sam": sam,
        "loss": loss,
        "stop": None if stop_below is None else {"below": stop_below, "on": stop_on},
        "log": _log(log),
    }
    X, y, X_test, y_test = _data(X, y, X_test, y_test)
    r = _samlab.relu_train(
        X,
        y,
        X_test,
        y_test,
        width,
        bias,
        _json(_init(init, init_scale, w_scale, a_scale)),
        seed if init_seed is None else init_seed,
        _json(config),
    )
    return ReluRun(**r)
