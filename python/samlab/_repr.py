"""Readable ``__repr__`` for the result dataclasses: arrays summarised by shape and a few values."""

from __future__ import annotations

import dataclasses

import numpy as np


def _short(value: object) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 6:
            body = np.array2string(value, precision=6, separator=", ")
        else:
            flat = value.ravel()
            head = ", ".join(f"{x:.6g}" for x in flat[:3])
            body = f"[{head}, ...]"
        return f"array({body}, shape={value.shape})" if value.ndim > 1 else f"array({body})"
    if isinstance(value, float):
        return f"{value:.10g}"
    return repr(value)


def summary_repr(obj: object) -> str:
    """``Name(field=value, ...)`` with arrays shortened."""
    fields = ", ".join(f"{f.name}={_short(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
    return f"{type(obj).__name__}({fields})"
