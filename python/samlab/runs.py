"""Read samlab run directories and sweeps: the resolved config, the metrics curve, the summary and the arrays of a
run; the runs, their states and the mean ± std table of a sweep.

A run directory (written by ``samlab diag train``, ``samlab relu train``, ``samlab train`` and the sweeps) holds
``config.toml`` (fully resolved), ``metrics.csv`` (one row per logged step), ``summary.json`` (once finished) and
``*.npy`` arrays (parameters and data); :func:`read` reads it in Python (``tomllib``, ``json``, NumPy, and pandas
when it is installed). A sweep directory (``samlab sweep plan``) is read by samlab-sweep itself through
:func:`read_sweep`: its manifest checked as ``samlab sweep status`` checks it, the states, and the table of
``samlab sweep report``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import _samlab

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Checkpoint", "Run", "Sweep", "SweepRun", "read", "read_checkpoint", "read_sweep"]

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

    def checkpoint(self, name: str = "last") -> Checkpoint:
        """A deep run's checkpoint ``checkpoint/<name>.ckpt`` (``"last"``, or ``"best"`` for runs that keep the best
        validation epoch), verified (:func:`read_checkpoint`).

        Raises:
            KeyError: the run holds no such checkpoint.
        """
        path = self.path / "checkpoint" / f"{name}.ckpt"
        if not path.is_file():
            held = sorted(p.stem for p in (self.path / "checkpoint").glob("*.ckpt"))
            raise KeyError(f"{self.path} holds no checkpoint/{name}.ckpt; it has {', '.join(held) or 'none'}")
        return read_checkpoint(path)

    def array(self, name: str) -> np.ndarray:
        """The array ``<name>.npy`` (e.g. ``"beta"``, ``"u"``, ``"X_train"``).

        Raises:
            KeyError: the run holds no such array.
        """
        if name not in self.arrays:
            raise KeyError(f"{self.path} holds no {name}.npy; it has {', '.join(self.arrays) or 'none'}")
        return np.load(self.path / f"{name}.npy", allow_pickle=False)


@dataclass(frozen=True)
class Checkpoint:
    """A deep run's checkpoint read back: ``model`` (the model spec) and ``progress`` (where the run stood) from
    its metadata, every metadata string in ``metadata``, and the tensors by name as float32 arrays in PyTorch's
    names and shapes (``docs/DEEP.md``): parameters, BatchNorm running statistics, and the optimizer's state under
    names starting with ``optimizer.``."""

    path: Path
    model: dict[str, Any]
    progress: dict[str, Any]
    metadata: dict[str, str]
    tensors: dict[str, np.ndarray]

    def state_dict(self) -> dict[str, np.ndarray]:
        """The model's tensors (the optimizer's left out): with ``torch.from_numpy`` on each, a ``state_dict`` that
        the matching PyTorch model loads with ``strict=True`` (samlab writes no ``num_batches_tracked``, which
        PyTorch's BatchNorm fills in)."""
        return {k: v for k, v in self.tensors.items() if not k.startswith("optimizer.")}


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Reads a samlab checkpoint (SafeTensors, version 3 or 2) through samlab-core: its format and version checked
    and its payload checksum (XXH3-128, or version 2's SHA-256) verified before any value is handed out.

    Raises:
        ValueError: not a samlab checkpoint, another version (a version-1 file must be converted first:
            docs/DEEP.md), a damaged file (the checksum does not match), a tensor that is not float32.
        OSError: the file cannot be read.
    """
    path = Path(path)
    metadata, tensors = _samlab.read_checkpoint(str(path))
    return Checkpoint(
        path=path,
        model=json.loads(metadata["model"]) if "model" in metadata else {},
        progress=json.loads(metadata["progress"]) if "progress" in metadata else {},
        metadata=metadata,
        tensors=dict(tensors),
    )


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


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its index (the SLURM array task id), id, run directory, state (``"done"``,
    ``"diverged"``, ``"running"``, ``"queued"``, ``"failed"`` or ``"missing"``), axis values and config.toml."""

    index: int
    id: str
    path: Path
    state: str
    values: dict[str, Any]
    config: str

    def read(self) -> Run:
        """The run directory read back (:func:`read`)."""
        return read(self.path)


@dataclass(frozen=True)
class Sweep:
    """A sweep directory read back: its axis keys (in loop order) and runs (in manifest order)."""

    path: Path
    axes: tuple[str, ...]
    runs: tuple[SweepRun, ...]

    @property
    def counts(self) -> dict[str, int]:
        """How many runs are in each state (states without runs left out)."""
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def table(self, metrics: list[str] | None = None) -> Any:
        """``samlab sweep report``'s table: one row per group of finished runs that differ only in their seed (axis
        keys ending in ``seed``), with the other axes' values, ``runs``, ``diverged``, and per metric (a dotted
        summary.json key; by default every numeric key the finished runs share) ``<metric>_mean``,
        ``<metric>_std`` (sample standard deviation, 0 for one value) and ``<metric>_n`` (its finite values).
        A pandas DataFrame when pandas is importable, else a dict of column name to list.

        Raises:
            ValueError: a metric that no finished run's summary holds as a number.
        """
        names, rows, _ = _samlab.sweep_table(str(self.path), list(metrics or []))
        keys = [k for k in json.loads(rows[0][0])] if rows else []
        columns: dict[str, list[Any]] = {k: [] for k in [*keys, "runs", "diverged"]}
        for m in names:
            for part in ("mean", "std", "n"):
                columns[f"{m}_{part}"] = []
        for values, runs, diverged, stats in rows:
            for k, v in json.loads(values).items():
                columns[k].append(v)
            columns["runs"].append(runs)
            columns["diverged"].append(diverged)
            for m, (mean, std, n) in zip(names, stats):
                columns[f"{m}_mean"].append(mean)
                columns[f"{m}_std"].append(std)
                columns[f"{m}_n"].append(n)
        try:
            import pandas as pd
        except ImportError:
            return columns
        return pd.DataFrame(columns)


def read_sweep(path: PathLike) -> Sweep:
    """Reads the sweep directory ``path`` (planned by ``samlab sweep plan``) as ``samlab sweep status`` does,
    without SLURM's queue: a task SLURM still holds as pending shows as ``"failed"`` until it starts.

    Raises:
        ValueError: ``path`` holds no sweep, or its manifest was edited after planning (it does not match
            manifest.sha256) or names a run directory outside the sweep.
        OSError: a file of the sweep cannot be read.
    """
    path = Path(path)
    axes, runs = _samlab.sweep_runs(str(path))
    return Sweep(
        path=path,
        axes=tuple(axes),
        runs=tuple(
            SweepRun(index=i, id=rid, path=Path(d), state=state, values=json.loads(values), config=config)
            for i, rid, d, state, values, config in runs
        ),
    )
