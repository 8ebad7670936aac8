"""Read samlab run directories: the resolved config, the metrics curve, the summary and the arrays.

A run directory (written by ``samlab diag train``, ``samlab relu train``, ``samlab train`` and the sweeps) holds
``config.toml`` (fully resolved), ``metrics.csv`` (one row per logged step), ``summary.json`` (once finished) and
``*.npy`` arrays (parameters and data). Pure Python: ``tomllib`` (``tomli`` before Python 3.11), ``json``, NumPy,
and pandas when it is installed.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Run", "read"]

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Run:
    """A run directory read back.

    ``config`` is config.toml as a dict; ``summary`` is summary.json as a dict (``None`` while the run has not
    finished); ``metrics`` is metrics.csv as a pandas DataFrame when pandas is importable, else a dict of column
    name to NumPy array (``None`` if there is no metrics.csv); ``arrays`` names the ``*.npy`` files, read with
    :meth:`array`.
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: Any
    arrays: tuple[str, ...] = field(default=())

    @property
    def engine(self) -> str:
        """``"diag"``, ``"relu"`` or ``"deep"`` (configs written before the key existed are diagonal-net runs)."""
        return str(self.config.get("engine", "diag"))

    def array(self, name: str) -> np.ndarray:
        """The array ``<name>.npy`` (e.g. ``"beta"``, ``"u"``, ``"X_train"``).

        Raises:
            KeyError: the run holds no such array.
        """
        if name not in self.arrays:
            raise KeyError(f"{self.path} holds no {name}.npy; it has {', '.join(self.arrays) or 'none'}")
        return np.load(self.path / f"{name}.npy", allow_pickle=False)


def read_metrics(path: PathLike) -> Any:
    """A metrics.csv as a pandas DataFrame when pandas is importable, else as a dict of float64 arrays.

    Raises:
        ValueError: a cell that is not a number, or a row of the wrong length.
    """
    path = Path(path)
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        return pd.read_csv(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty: a metrics.csv starts with its header")
    header, body = rows[0], rows[1:]
    columns: list[list[float]] = [[] for _ in header]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} cells for {len(header)} columns")
        for column, cell in zip(columns, row):
            try:
                column.append(float(cell))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {cell!r} is not a number") from None
    return {name: np.asarray(values, dtype=np.float64) for name, values in zip(header, columns)}


def read(path: PathLike) -> Run:
    """Reads the run directory ``path``.

    Raises:
        ValueError: ``path`` is not a directory holding a config.toml, or a file of it cannot be parsed (the
            message names the file).
    """
    path = Path(path)
    config_path = path / "config.toml"
    if not path.is_dir():
        raise ValueError(f"{path} is not a samlab run directory: no such directory")
    if not config_path.is_file():
        raise ValueError(f"{path} is not a samlab run directory: it has no config.toml")
    try:
        config = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{config_path} is not valid TOML: {e}") from None
    summary = None
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{summary_path} is not valid JSON: {e}") from None
    metrics_path = path / "metrics.csv"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else None
    arrays = tuple(sorted(p.stem for p in path.glob("*.npy")))
    return Run(path=path, config=config, summary=summary, metrics=metrics, arrays=arrays)
