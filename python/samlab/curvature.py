"""Spectra of a symmetric operator known only through its products ``v -> A @ v``.

Every function takes ``matvec``, a callable that maps a 1-D float64 array of length ``dim`` to ``A @ v`` as a 1-D
float64 or float32 array of the same length (a NumPy matrix product, a Hessian-vector product of a model, ...).
The engines are samlab's Rust ones (those of ``samlab hessian``); they run with the GIL released and check for
Ctrl-C between products. A ``matvec`` that returns the wrong shape, dtype or a non-finite value raises
``ValueError`` naming it; an exception raised by ``matvec`` propagates unchanged, with its traceback. Every
engine takes ``symmetry_tol``: when given, :func:`asymmetry` is checked first (two more products) and an operator
above it is a ``ValueError``. ``dim`` may be left out when ``matvec`` has a ``dim`` attribute (the operators of
:mod:`samlab.torch`); given as well, it must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from . import _samlab
from ._repr import summary_repr

MatVec = Callable[[np.ndarray], np.ndarray]

__all__ = [
    "DensityResult",
    "DiagonalResult",
    "LanczosResult",
    "TraceResult",
    "asymmetry",
    "density",
    "diagonal",
    "lanczos",
    "trace",
]


@dataclass(frozen=True, repr=False)
class LanczosResult:
    """Eigenpairs from Lanczos, each with its true residual ``||A x - theta x||``.

    ``eigenvalues`` are the top ``k`` in decreasing order (``which="top"``), the bottom ``k`` in increasing order
    (``"bottom"``), or the top ``k`` followed by the bottom ``k`` (``"both"``); ``eigenvectors[:, i]`` is the unit
    Ritz vector of ``eigenvalues[i]``. Some eigenvalue of A lies within ``residuals[i]`` of ``eigenvalues[i]``.
    ``converged`` says whether every residual is at most ``tol`` times the largest ``|theta|``.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    steps: int
    products: int
    converged: bool
    which: str

    __repr__ = summary_repr


@dataclass(frozen=True, repr=False)
class TraceResult:
    """A stochastic trace estimate with its standard error.

    ``samples`` are the per-probe values ``z^T A z`` (Hutchinson) or those of the deflated operator (Hutch++, whose
    low-rank part is exact); ``products`` is the number of operator products used.
    """

    estimate: float
    std_error: float
    products: int
    method: str
    samples: np.ndarray

    __repr__ = summary_repr


@dataclass(frozen=True, repr=False)
class DensityResult:
    """The eigenvalue density by stochastic Lanczos quadrature.

    ``nodes`` and ``weights`` are the quadrature nodes (Ritz values) of all probes and their weights (squared first
    components of the Ritz vectors divided by the number of probes: they sum to 1); ``probe[i]`` is the probe of
    node ``i``. ``density`` is their Gaussian-smoothed density (width ``sigma``) on ``grid``; it integrates to about 1.
    """

    nodes: np.ndarray
    weights: np.ndarray
    probe: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float

    __repr__ = summary_repr


@dataclass(frozen=True, repr=False)
class DiagonalResult:
    """Hutchinson's estimate of ``diag(A)``: ``mean(z * (A @ z))`` over Rademacher probes ``z``.

    ``std_error`` is each entry's standard error; ``sum_of_squares`` is ``sum(diagonal**2)`` of the estimate
    (biased up by ``sum(std_error**2)`` on average).
    """

    diagonal: np.ndarray
    std_error: np.ndarray
    sum_of_squares: float
    probes: int

    __repr__ = summary_repr


def _counts(**values: int) -> None:
    """Refuses negative or non-integer counts with a ValueError naming them (the engines check the ranges)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _dim(matvec: MatVec, dim: int | None) -> int:
    """``dim``, or ``matvec.dim`` when ``dim`` is None (an operator object such as :mod:`samlab.torch`'s); a
    ValueError when both are given and differ."""
    own = getattr(matvec, "dim", None)
    if dim is None:
        if own is None:
            raise TypeError("dim is required unless matvec has a dim attribute")
        return own
    if own is not None and not isinstance(dim, bool) and isinstance(dim, (int, np.integer)) and dim != own:
        raise ValueError(f"dim = {dim} disagrees with the operator's dim = {own}")
    return dim


def asymmetry(matvec: MatVec, dim: int | None = None, *, seed: int = 0) -> float:
    """A two-product check that ``matvec`` is symmetric: ``|u.Av - v.Au| / sqrt((|Au|^2 + |Av|^2) / 2)`` for
    Gaussian ``u``, ``v``, whose square averages ``||A - A^T||_F^2 / ||A||_F^2``.

    About 1e-15 for a symmetric float64 matrix product; a float32 product (or a Hessian-vector product by finite
    differences) carries its own rounding, about 1e-7 (resp. its truncation error). A random estimate: a
    non-symmetric operator passes a threshold ``t`` with probability about ``t ||A||_F / ||A - A^T||_F``.

    Raises:
        ValueError: ``dim`` 0, or a bad ``matvec`` result.
    """
    dim = _dim(matvec, dim)
    _counts(dim=dim, seed=seed)
    return _samlab.asymmetry(matvec, dim, seed)


def _check_symmetry(matvec: MatVec, dim: int, symmetry_tol: float | None) -> None:
    if symmetry_tol is None:
        return
    _counts(dim=dim)
    a = _samlab.asymmetry(matvec, dim, 12345)
    if not a <= symmetry_tol:
        raise ValueError(f"matvec is not symmetric: its asymmetry is {a:.3g} > symmetry_tol = {symmetry_tol:g}")


def lanczos(
    matvec: MatVec,
    dim: int | None = None,
    k: int = 1,
    which: Literal["top", "bottom", "both"] = "top",
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    symmetry_tol: float | None = None,
) -> LanczosResult:
    """The ``k`` extreme eigenpairs of the symmetric operator ``matvec`` by Lanczos with full reorthogonalisation.

    Args:
        matvec: ``v -> A @ v`` on 1-D arrays of length ``dim``.
        dim: the dimension of A (at least 1).
        k: how many eigenpairs at each requested end (``1 <= k <= dim``).
        which: ``"top"`` (largest), ``"bottom"`` (smallest, Lanczos on ``-A``) or ``"both"`` (two runs).
        tol: stop once every wanted residual is at most ``tol`` times the largest ``|theta|``, in (0, 1).
        max_iter: the most Lanczos steps (one product each) per run; must exceed ``k``.
        seed: seed of the Gaussian start vector.

    Stopping rule: a small residual proves an eigenpair, not that it is the largest one. So once the residuals
    first pass, at Krylov dimension ``j0``, Lanczos goes on to dimension ``max(2 j0, 20)`` (capped at ``max_iter``
    and ``dim``) and stops there if they pass again (see docs/PYTHON.md, "The Lanczos stopping rule").

    Raises:
        ValueError: ``dim`` 0, ``k`` outside ``1..=dim``, ``max_iter <= k``, ``tol`` outside (0, 1), an unknown
            ``which``, or ``matvec`` returning a wrong shape, dtype or non-finite value.
        KeyboardInterrupt: Ctrl-C between two products.
    """
    dim = _dim(matvec, dim)
    _counts(dim=dim, k=k, max_iter=max_iter, seed=seed)
    _check_symmetry(matvec, dim, symmetry_tol)
    r = _samlab.lanczos(matvec, dim, k, which, tol, max_iter, seed)
    return LanczosResult(which=which, **r)


def trace(
    matvec: MatVec,
    dim: int | None = None,
    probes: int = 100,
    method: Literal["hutchinson", "hutch++"] = "hutchinson",
    *,
    seed: int = 0,
    symmetry_tol: float | None = None,
) -> TraceResult:
    """A stochastic estimate of ``trace(A)`` from ``probes`` operator products, with its standard error.

    ``method="hutchinson"``: the mean of ``z^T A z`` over Rademacher ``z`` (at least 2 probes).
    ``method="hutch++"``: Hutch++ (Meyer et al. 2021) with the same number of products: a third sketch the
    dominant range ``Q`` of A, a third give ``trace(Q^T A Q)`` exactly, the rest are Hutchinson probes of the
    deflated operator; much more accurate when the spectrum decays (at least 4 products).

    Raises:
        ValueError: ``dim`` 0, too few probes, an unknown ``method``, or a bad ``matvec`` result.
    """
    dim = _dim(matvec, dim)
    _counts(dim=dim, probes=probes, seed=seed)
    _check_symmetry(matvec, dim, symmetry_tol)
    r = _samlab.trace(matvec, dim, probes, method, seed)
    return TraceResult(method=method, **r)


def density(
    matvec: MatVec,
    dim: int | None = None,
    probes: int = 2,
    steps: int = 30,
    *,
    points: int = 400,
    sigma_rel: float = 0.01,
    seed: int = 1,
    symmetry_tol: float | None = None,
) -> DensityResult:
    """The eigenvalue density of A by stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017).

    Args:
        probes: Rademacher start vectors (at least 1).
        steps: Lanczos steps per probe, the quadrature nodes (at least 2; at most ``dim`` are taken).
        points: points of the output grid (2..=100000).
        sigma_rel: the Gaussian kernel's width relative to the width of the spectrum found, in (0, 1].

    Raises:
        ValueError: ``dim`` 0, a setting out of range, or a bad ``matvec`` result.
    """
    dim = _dim(matvec, dim)
    _counts(dim=dim, probes=probes, steps=steps, points=points, seed=seed)
    _check_symmetry(matvec, dim, symmetry_tol)
    return DensityResult(**_samlab.density(matvec, dim, probes, steps, points, sigma_rel, seed))


def diagonal(
    matvec: MatVec, dim: int | None = None, probes: int = 100, *, seed: int = 0, symmetry_tol: float | None = None
) -> DiagonalResult:
    """Hutchinson's estimate of the diagonal of A from ``probes`` Rademacher probes (at least 2).

    Raises:
        ValueError: ``dim`` 0, fewer than 2 probes, or a bad ``matvec`` result.
    """
    dim = _dim(matvec, dim)
    _counts(dim=dim, probes=probes, seed=seed)
    _check_symmetry(matvec, dim, symmetry_tol)
    return DiagonalResult(**_samlab.diagonal(matvec, dim, probes, seed))
