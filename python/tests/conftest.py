"""Shared helpers of the samlab tests."""

import numpy as np


def with_spectrum(eigenvalues, seed=0):
    """A dense symmetric matrix ``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q``."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((ev.size, ev.size)))
    return (q * ev) @ q.T
