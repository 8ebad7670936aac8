"""The paper's theorems as NumPy functions.

Theorem 1: the hyperbolic entropy, the effective initialization and the interpolators of ``X beta = y`` (minimum
l2, minimum l1, minimum hyperbolic entropy: the implicit bias of a diagonal linear network trained from scale
``a``), and the Delta integrals that give a SAM run's effective initialization (:func:`delta_integrals`,
:func:`implicit_bias`). Theorem 2: the convergence bounds of stochastic unnormalized SAM and the least-squares
problem they are checked on. The work is done by samlab's Rust theory module.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _samlab
from ._repr import summary_repr
from .analytic import DiagRun, Method, _diag_args

__all__ = [
    "DeltaIntegrals",
    "EntropySolution",
    "LeastSquares",
    "alpha_eff",
    "delta_integrals",
    "hyperbolic_entropy",
    "implicit_bias",
    "least_squares",
    "min_entropy",
    "min_l1",
    "min_l2",
    "nonconvex_bound",
    "pl_bound",
]


def _vector(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _matrix(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr


def hyperbolic_entropy(beta: np.ndarray, a: np.ndarray | float) -> float:
    """``phi_a(beta) = sum_j [beta_j asinh(2 beta_j / a_j^2) - sqrt(beta_j^2 + a_j^4 / 4) + a_j^2 / 2]``.

    Its gradient is ``asinh(2 beta / a^2)``; it tends to ``||beta||_2^2 / a^2`` for large ``a`` and to
    ``||beta||_1 log(1 / a^2)`` for small. ``a`` is a scale per coordinate, or one for all.

    Raises:
        ValueError: ``beta`` and ``a`` of different lengths.
    """
    beta = _vector(beta, "beta")
    a = np.full(beta.shape, float(a)) if np.ndim(a) == 0 else _vector(a, "a")
    return _samlab.hyperbolic_entropy(beta, a)


def alpha_eff(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The effective initialization ``sqrt(max(u^2 - v^2, 0))``, conserved by gradient flow and shrunk by SAM.

    Raises:
        ValueError: ``u`` and ``v`` of different lengths.
    """
    return _samlab.alpha_eff(_vector(u, "u"), _vector(v, "v"))


def min_l2(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimum-l2 interpolator ``X^T (X X^T)^{-1} y``.

    Raises:
        ValueError: shapes that do not fit, non-finite values, or linearly dependent rows of ``X``.
    """
    return _samlab.min_l2(_matrix(X, "X"), _vector(y, "y"))


def min_l1(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimum-l1 interpolator, by linear programming.

    Raises:
        ValueError: shapes that do not fit, non-finite values, or an infeasible program.
    """
    return _samlab.min_l1(_matrix(X, "X"), _vector(y, "y"))


@dataclass(frozen=True, repr=False)
class EntropySolution:
    """The minimum-entropy interpolator ``beta``, how it was computed (``"dual_newton"``, or ``"min_l1_limit"``
    when every scale is below 1e-6) and the Newton steps taken."""

    beta: np.ndarray
    method: str
    newton_steps: int

    __repr__ = summary_repr


def min_entropy(X: np.ndarray, y: np.ndarray, a: np.ndarray | float) -> EntropySolution:
    """``argmin phi_a(beta)`` subject to ``X beta = y``: the solution Theorem 1 predicts for a diagonal network
    trained from ``u = a``, ``v = 0`` (or from ``a = alpha_eff`` after SAM).

    Newton's method on the dual with continuation in the scale (samlab-core's solver).

    Raises:
        ValueError: shapes that do not fit, non-finite values, scales that are not positive, or no convergence.
    """
    X = _matrix(X, "X")
    a = np.full(X.shape[1], float(a)) if np.ndim(a) == 0 else _vector(a, "a")
    beta, method, steps = _samlab.min_entropy(X, _vector(y, "y"), a)
    return EntropySolution(beta=beta, method=method, newton_steps=steps)


@dataclass(frozen=True, repr=False)
class LeastSquares:
    """``L(w) = ||A w - b||^2 / (2 n)`` with its minimizer ``w_star``, ``l_star = L(w_star)``, the smoothness
    ``beta = max_i ||a_i||^2`` of every example's loss, the PL constant ``mu`` (the smallest eigenvalue of
    ``A^T A / n``) and the gradient noise ``sigma2 = mean_i ||grad l_i(w_star) - grad L(w_star)||^2``."""

    A: np.ndarray
    b: np.ndarray
    w_star: np.ndarray
    l_star: float
    beta: float
    mu: float
    sigma2: float

    __repr__ = summary_repr


def least_squares(n: int = 50, d: int = 20, noise: float = 0.5, seed: int = 0) -> LeastSquares:
    """The least-squares problem Theorem 2 is checked on: inputs ``a_i ~ N(0, I_d / d)``, targets ``A w0 + noise *
    N(0, 1)``, drawn from NumPy's ``RandomState(seed)``.

    Raises:
        ValueError: ``n < d``, ``d`` 0, or a non-finite ``noise``.
    """
    A, b, w_star, l_star, beta, mu, sigma2 = _samlab.least_squares(n, d, noise, seed)
    return LeastSquares(A=A, b=b, w_star=w_star, l_star=l_star, beta=beta, mu=mu, sigma2=sigma2)


def nonconvex_bound(beta: float, initial_gap: float, sigma2: float, batch: int, steps: int) -> float:
    """Theorem 2: with ``gamma = 1 / (sqrt(T) beta)`` and ``rho = 1 / (T^(1/4) beta)``, stochastic unnormalized SAM
    on batches of ``batch`` keeps ``(1/T) sum_t E||grad L(w_t)||^2`` below ``4 beta (L(w_0) - L*) / sqrt(T) + 8
    sigma^2 / (b sqrt(T))``; ``initial_gap`` is ``L(w_0) - L*``, ``steps`` is ``T``.

    Raises:
        ValueError: ``beta`` not finite and positive, ``batch`` or ``steps`` 0.
    """
    return _samlab.nonconvex_bound(beta, initial_gap, sigma2, batch, steps)


def pl_bound(beta: float, mu: float, initial_gap: float, sigma2: float, batch: int, steps: int) -> float:
    """Under the PL condition with ``gamma_t = min((8t + 4) / (3 mu (t + 1)^2), 1 / (2 beta))`` and ``rho_t =
    sqrt(gamma_t / beta)``: ``E L(w_T) - L* <= 3 beta^2 (L(w_0) - L*) / (mu^2 T^2) + 22 beta sigma^2 / (mu^2 b T)``.

    Raises:
        ValueError: ``beta`` or ``mu`` not finite and positive, ``batch`` or ``steps`` 0.
    """
    return _samlab.pl_bound(beta, mu, initial_gap, sigma2, batch, steps)


@dataclass(frozen=True, repr=False)
class DeltaIntegrals:
    """Theorem 1's accounting along a diagonal-net run (:func:`delta_integrals`).

    Every single-step SAM update multiplies ``u^2 - v^2`` by ``(1 - lr Q)^2 - lr^2 P^2`` (exact algebra), so
    ``alpha_eff = alpha0 * exp(-delta_total)`` with ``delta_total = -1/2 sum_t log((1 - lr Q_t)^2 - lr^2 P_t^2)``
    per coordinate; ``delta_sam = sum_t lr Q_t`` is its first-order SAM part (0 for GD and SGD), ``int_loss`` the
    integral of the training loss over ``s = sum lr``, and ``identity_error`` the largest violation of the
    identity along the run, relative to ``alpha0^2`` (rounding only). ``run`` is the run itself, the same as
    :func:`samlab.analytic.diag_train` gives.
    """

    run: DiagRun
    alpha0: np.ndarray
    delta_sam: np.ndarray
    delta_total: np.ndarray
    int_loss: float
    identity_error: float

    @property
    def alpha_eff_predicted(self) -> np.ndarray:
        """``alpha0 * exp(-delta_total)``: Theorem 1's effective initialization, from the integrals alone."""
        return self.alpha0 * np.exp(-self.delta_total)

    __repr__ = summary_repr


def delta_integrals(
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
    seed: int = 0,
    log: Literal["notebook", "ends"] = "notebook",
) -> DeltaIntegrals:
    """Trains as :func:`samlab.analytic.diag_train` does (the same options, but no variants: Theorem 1 covers
    single-step SAM on the descent batch) while accumulating the Delta integrals of Theorem 1.

    Raises:
        ValueError: what :func:`samlab.analytic.diag_train` refuses, and a SAM setting the theorem does not
            cover (multi-step or random ascents, another ascent batch).
    """
    options = dict(method=method, lr=lr, iters=iters, rho=rho, alpha=alpha, m=m, batch_size=batch_size)
    options.update(normalize=normalize, clip=clip, seed=seed, log=log)
    out = _samlab.diag_train(*_diag_args(X, y, X_test, y_test, **options), accounting=True)
    accounting = {k: out.pop(k) for k in ("delta_sam", "delta_total", "int_loss", "identity_error")}
    run = DiagRun(**out)
    return DeltaIntegrals(run=run, alpha0=np.full(len(run.u), float(alpha)), **accounting)


def implicit_bias(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Theorem 1 on a finished diagonal-net run directory, as ``samlab theory implicit-bias RUN_DIR`` computes it
    (its training replayed to accumulate the Delta integrals): alpha0 and alpha_eff, the interpolators they
    predict against the trained beta, the integrals and the identity's error. Also writes
    ``run_dir/implicit_bias.json``, whose content this returns.

    Raises:
        ValueError: a directory that is not a finished diagonal-net run, or a run the theorem does not cover.
    """
    return json.loads(_samlab.implicit_bias(os.fspath(run_dir)))
