"""Read samlab run directories and sweeps: the resolved config, the metrics curve, the summary and the arrays of a
run; the runs, their states and the mean ± std table of a sweep.

A run directory (written by ``samlab diag train``, ``samlab relu train``, ``samlab train`` and the sweeps) holds
``config.toml`` (fully resolved), ``metrics.csv`` (one row per logged step), ``summary.json`` (once finished) and
``*.npy`` arrays (parameters and data); :func:`read` reads it in Python (``tomllib``, ``json``, NumPy, and pandas
when it is installed). A sweep directory (``samlab sweep plan``) is read by samlab-sweep itself through
:func:`read_sweep`: its manifest checked as ``samlab sweep status`` checks it, the states, and the table of
``samlab sweep report``.

Runs start from Python too: :func:`run` runs a config (a dict, or a config.toml) into a run directory, the analytic
engines in-process through the Rust library and deep runs through the ``samlab`` binary; :func:`reproduce` and
:func:`sweep_run` run ``samlab reproduce`` and ``samlab sweep`` through the binary. Each takes a ``progress``
callable, called with a :class:`Progress` as the work advances.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from . import _samlab

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Checkpoint",
    "Progress",
    "Run",
    "Sweep",
    "SweepRun",
    "config_toml",
    "read",
    "read_checkpoint",
    "read_sweep",
    "reproduce",
    "run",
    "samlab_binary",
    "sweep_run",
]

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


@dataclass(frozen=True)
class Progress:
    """What a running run, sweep or ``reproduce`` reports, handed to the ``progress`` callable of :func:`run`,
    :func:`sweep_run` and :func:`reproduce`: either a count, ``done`` of ``total`` ``unit`` (``"updates"``), from an
    analytic run in-process (about 200 per run, increasing, from 0 to ``total``), or a ``line`` that the ``samlab``
    binary printed on stderr (a deep run's epoch, a warning); the other fields are then ``None``."""

    done: int | None = None
    total: int | None = None
    unit: str | None = None
    line: str | None = None


ProgressFn = Callable[[Progress], Any]
ConfigLike = Union[Mapping, str, os.PathLike]

#: How to get the binary, for the error raised when it cannot be found.
_GET_BINARY = (
    "install it from a samlab clone with `cargo install --path crates/samlab-cli` (it is then on the PATH), or set "
    "the SAMLAB_BIN environment variable to its path (e.g. target/release/samlab after `cargo build --release -p "
    "samlab-cli`)"
)


def samlab_binary() -> str:
    """The ``samlab`` command-line binary that deep runs, sweeps and ``reproduce`` run through: ``$SAMLAB_BIN`` when
    set, else ``samlab`` on the PATH.

    Raises:
        FileNotFoundError: ``$SAMLAB_BIN`` is not an executable file, or it is unset and no ``samlab`` is on the
            PATH; the message says how to get the binary.
    """
    env = os.environ.get("SAMLAB_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise FileNotFoundError(f"SAMLAB_BIN={env} is not an executable file: {_GET_BINARY}")
        return env
    found = shutil.which("samlab")
    if found is None:
        raise FileNotFoundError(
            "deep runs, sweeps and reproduce need the samlab command-line binary (which links the deep-net "
            f"engine that this package leaves out), and there is none on the PATH: {_GET_BINARY}"
        )
    return found


def _check_progress(progress: ProgressFn | None) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a samlab.runs.Progress, or None; got {progress!r}")


def _samlab_cli(args: list[str], progress: ProgressFn | None) -> str:
    """Runs ``samlab <args>``, handing each line it prints on stderr to ``progress`` as it comes, and returns its
    stdout. The one way this module runs the binary.

    Raises:
        FileNotFoundError: no binary (:func:`samlab_binary`).
        ValueError: exit status 2, bad input: the CLI's message.
        RuntimeError: any other failure: the exit status and what the CLI printed last.
        Whatever ``progress`` raises, and ``KeyboardInterrupt``: the binary is stopped first (a deep run stays
            resumable from its last checkpoint).
    """
    _check_progress(progress)
    exe = samlab_binary()
    proc = subprocess.Popen(
        [exe, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
    reader.start()
    stderr: list[str] = []
    try:
        for raw in proc.stderr:
            line = raw.rstrip("\n")
            stderr.append(line)
            del stderr[:-200]
            if progress is not None:
                progress(Progress(line=line))
        status = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join()
        proc.stdout.close()
        proc.stderr.close()
    if status == 0:
        return "".join(stdout)
    errors = [i for i, line in enumerate(stderr) if line.startswith("error")]
    message = "\n".join(stderr[errors[0] :] if errors else stderr[-20:]).strip()
    if message.startswith("error: "):
        message = message[len("error: ") :]
    command = " ".join(["samlab", *args[:1]])
    if status == 2:
        raise ValueError(f"{command}: {message}")
    how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    raise RuntimeError(f"{command} failed ({how}): {message or 'it printed nothing on stderr'}")


def _json_value(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"a config value of type {type(value).__name__} ({value!r}) is not a TOML value")


def config_toml(config: Mapping) -> str:
    """A config dict as config.toml text (the text ``samlab run --config`` reads). Values are dicts, lists,
    strings, booleans, ints, floats, paths and NumPy scalars; a key whose value is ``None`` is left out.

    Raises:
        TypeError: ``config`` is not a dict, or it holds a value TOML has no type for.
        ValueError: a NaN or infinite float, ``None`` in a list, an int too large for TOML.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a config must be a dict, got {type(config).__name__}")
    try:
        text = json.dumps(config, default=_json_value, allow_nan=False)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise ValueError(f"the config cannot be written as TOML: {e}") from None
        raise ValueError(f"the config holds a NaN or infinite float, which samlab configs do not take ({e})") from None
    return _samlab.config_toml(text)


def _config_text(config: ConfigLike) -> tuple[str, str, Path | None]:
    """A config's TOML text, its name for messages, and its file (None for a dict)."""
    if isinstance(config, Mapping):
        return config_toml(config), "the config dict", None
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            what = "is a directory, not a config.toml" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"the config file {path} {what}")
        return path.read_text(), str(path), path
    raise TypeError(f"config must be a dict or the path of a config.toml, got {type(config).__name__}")


def run(config: ConfigLike, out: PathLike, *, force: bool = False, progress: ProgressFn | None = None) -> Run:
    """Runs ``config`` into the run directory ``out`` and reads it back: ``samlab run --config`` from Python.

    ``config`` is what a run's config.toml holds, fully resolved (its ``engine`` key ``"diag"``, ``"relu"`` or
    ``"deep"``), as a dict (e.g. ``read(dir).config`` with a value changed) or the path of a config.toml. The
    analytic engines run in-process through the Rust library (the same ``RunConfig::execute`` as the CLI, so the
    same files bit for bit but the summary's ``seconds``), with the GIL released; ``progress`` gets counts of
    updates. A deep run needs the ``samlab`` binary (:func:`samlab_binary`), which runs it; ``progress`` gets the
    lines it prints (one per epoch). ``out`` is replaced only with ``force``, and only when it holds a run.

    Ctrl-C (``KeyboardInterrupt``) and an exception raised by ``progress`` end a deep run at once (it stays
    resumable); an analytic run, which cannot stop midway, finishes and writes its directory first, then the
    exception is raised.

    Raises:
        TypeError: ``config`` is neither a dict nor a path, or holds a value TOML has no type for; ``progress`` is
            not callable.
        FileNotFoundError: the config file does not exist; a deep run without the binary.
        ValueError: bad input, nothing written: an unknown engine or key, an option out of range, data that does
            not fit, ``out`` occupied without ``force`` or by something other than a run. The message names it.
        OSError: a file operation failed. RuntimeError: the run failed otherwise.
    """
    _check_progress(progress)
    text, source, path = _config_text(config)
    engine = _samlab.config_engine(text, source)
    out = Path(out)
    if engine == "deep":
        with tempfile.TemporaryDirectory(prefix="samlab-config-") as tmp:
            if path is None:
                path = Path(tmp) / "config.toml"
                path.write_text(text)
            _samlab_cli(["run", "--config", str(path), "--out", str(out), *(["--force"] if force else [])], progress)
    else:
        counts = None
        if progress is not None:

            def counts(done: int, total: int, unit: str) -> None:
                progress(Progress(done=done, total=total, unit=unit))

        _samlab.run_config(text, source, str(out), force, counts)
    return read(out)


def _flags(flags: Mapping[str, Any]) -> list[str]:
    """Keyword arguments as the CLI's flags: ``max_parallel=4`` is ``--max-parallel=4``, ``True`` a bare flag,
    ``False`` and ``None`` no flag, a list or tuple the flag once per item."""
    args = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args.extend(f"{flag}={v}" for v in value)
        else:
            args.append(f"{flag}={os.fspath(value) if isinstance(value, os.PathLike) else value}")
    return args


def reproduce(
    out: PathLike = "results",
    *,
    quick: bool = False,
    only: str | list[str] | None = None,
    extended: bool = False,
    progress: ProgressFn | None = None,
    **flags: Any,
) -> list[dict[str, Any]] | None:
    """Runs ``samlab reproduce --out OUT`` (every paper experiment, or those whose id starts with one of ``only``'s
    prefixes) through the binary and returns its claims: claims.json, one dict per claim (``id``, ``claim``,
    ``paper``, ``measured``, ``verdict``). ``None`` when the command writes no claims: ``plan=True`` (OUT/plan.json
    only) or ``executor="slurm"`` without ``wait=True``.

    ``flags`` are the command's other flags, named as in ``samlab reproduce --help`` with ``_`` for ``-``:
    ``scale``, ``data_dir``, ``device``, ``precision``, ``plan``, ``executor``, ``wait``, ``wait_timeout``,
    ``partition``, ``time``, ``cpus_per_task``, ``mem``, ``gres``, ``max_parallel``, ``sbatch_arg`` (a list).
    ``progress`` gets each line the command prints on stderr.

    Raises:
        FileNotFoundError: no binary (:func:`samlab_binary`).
        ValueError: the CLI refused its input (an unknown flag or experiment, a bad value), with its message.
        RuntimeError: the command failed otherwise (a run failed).
    """
    args = ["reproduce", "--out", os.fspath(out), *(["--quick"] if quick else [])]
    if only:
        args.append("--only=" + (only if isinstance(only, str) else ",".join(only)))
    args += ["--extended"] if extended else []
    args += _flags(flags)
    claims = Path(out) / "claims.json"
    before = claims.stat().st_mtime_ns if claims.is_file() else None
    _samlab_cli(args, progress)
    if not claims.is_file() or claims.stat().st_mtime_ns == before:
        return None
    return json.loads(claims.read_text())


def sweep_run(
    grid: Mapping | str | os.PathLike,
    out: PathLike | None = None,
    *,
    progress: ProgressFn | None = None,
    **flags: Any,
) -> Sweep:
    """Runs a sweep through the binary and reads it back (:func:`read_sweep`).

    ``grid`` is a grid file (``samlab sweep run GRID --out OUT``: planned into ``out``, every run's config
    checked first, then the runs not yet done), a grid as a dict (``base``: a config dict or the path of a
    config.toml, relative to the working directory; ``axes``; ``zip``; docs/SWEEPS.md), or the directory of a
    planned sweep (``samlab sweep submit DIR``: its failed and missing runs again; ``out`` left out).
    ``flags`` are those of ``samlab sweep run --help`` with ``_`` for ``-``: ``executor``, ``jobs``, ``wait``,
    ``wait_timeout``, ``partition``, ``time``, ``cpus_per_task``, ``mem``, ``gres``, ``max_parallel``,
    ``sbatch_arg`` (a list). ``progress`` gets each line the command prints on stderr.

    Raises:
        TypeError: ``grid`` is not a dict or a path.
        FileNotFoundError: no binary (:func:`samlab_binary`), or no such grid file or directory.
        ValueError: ``out`` missing for a grid, or given for a planned sweep; the CLI refused the grid (a run's
            config, an unknown key, another grid's sweep in ``out``), with its message.
        RuntimeError: the command failed otherwise.
    """
    if isinstance(grid, Mapping):
        if out is None:
            raise ValueError("sweep_run of a grid needs out, the sweep directory")
        grid = dict(grid)
        if isinstance(grid.get("base"), (str, os.PathLike)):
            grid["base"] = os.fspath(Path(grid["base"]).absolute())
        text = config_toml(grid)
        with tempfile.TemporaryDirectory(prefix="samlab-grid-") as tmp:
            path = Path(tmp) / "grid.toml"
            path.write_text(text)
            _samlab_cli(["sweep", "run", str(path), "--out", os.fspath(out), *_flags(flags)], progress)
        return read_sweep(out)
    if not isinstance(grid, (str, os.PathLike)):
        raise TypeError(f"grid must be a dict, a grid file or a sweep directory, got {type(grid).__name__}")
    path = Path(grid)
    if path.is_dir():
        if out is not None and Path(out).absolute() != path.absolute():
            raise ValueError(f"{path} is a sweep directory: sweep_run submits its runs again, and takes no out")
        _samlab_cli(["sweep", "submit", str(path), *_flags(flags)], progress)
        return read_sweep(path)
    if not path.is_file():
        raise FileNotFoundError(f"the grid {path} does not exist")
    if out is None:
        raise ValueError("sweep_run of a grid needs out, the sweep directory")
    _samlab_cli(["sweep", "run", str(path), "--out", os.fspath(out), *_flags(flags)], progress)
    return read_sweep(out)
