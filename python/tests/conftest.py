"""Shared helpers of the samlab tests."""

import signal

import numpy as np
import pytest


@pytest.fixture
def ctrl_c():
    """Python's Ctrl-C handler (KeyboardInterrupt), installed for the test: a process started in the background by a
    non-interactive shell ignores SIGINT, and Python then installs none."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def with_spectrum(eigenvalues, seed=0):
    """A dense symmetric matrix ``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q``."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((ev.size, ev.size)))
    return (q * ev) @ q.T
