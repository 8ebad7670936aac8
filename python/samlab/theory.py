"""The paper's theorems as NumPy functions.

Theorem 1: the hyperbolic entropy, the effective initialization and the interpolators of ``X beta = y`` (minimum
l2, minimum l1, minimum hyperbolic entropy: the implicit bias of a diagonal linear network trained from scale
``a``). Theorem 2: the convergence bounds of stochastic unnormalized SAM and the least-squares problem they are
checked on. The work is done by samlab's Rust theory module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _samlab
from ._repr import summary_repr

__all__ = [
    "EntropySolution",
    "LeastSquares",
    "alpha_eff",
    "hyperbolic_entropy",
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
