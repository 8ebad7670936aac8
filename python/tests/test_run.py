"""samlab.runs.run, reproduce and sweep_run: runs started from Python.

The analytic engines run in-process; their run directories are compared with the `samlab` binary's runs of the
same config, file by file. The tests that need the binary find it through SAMLAB_BIN or the PATH (python/test.sh
points SAMLAB_BIN at the debug binary that `cargo test --workspace` builds) and skip, saying so, without it.
"""

import copy
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from samlab import runs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = Path(__file__).resolve().parents[2] / "data" / "fashion-mnist-subset"

SAM = {
    "rho": 0.05,
    "normalization": "unnormalized",
    "ascent_steps": 1,
    "ascent_step_mult": 1.0,
    "random_init": False,
    "perturbation": "ascent",
    "ascent_source": "same_batch",
    "grouping": {"size": 1},
    "rho_schedule": {"kind": "constant"},
    "window": {"start": 0.0, "end": 1.0},
    "variant": {"kind": "sam"},
}

# Fully resolved, as config.toml holds them: a 1-SAM diagonal-net run and a normalized n-SAM ReLU run.
DIAG = {
    "engine": "diag",
    "alpha": 0.1,
    "data": {"synthetic": {"n": 20, "d": 30, "r": 3, "n_test": 1000, "seed": 0}},
    "train": {"lr": 0.01, "iters": 1000, "seed": 0, "log": "notebook", "sam": SAM},
}
RELU = {
    "engine": "relu",
    "data": "twelve_points",
    "width": 100,
    "bias": True,
    "init_seed": 0,
    "init": {"kind": "blanc", "scale": 1.0},
    "train": {
        "lr": 5e-05,
        "iters": 500,
        "seed": 0,
        "loss": "sum",
        "log": "notebook",
        "sam": {**SAM, "rho": 0.3, "grouping": "whole_batch", "normalization": "normalized"},
    },
    "metrics": {"corr_threshold": 0.99, "grid_step": 0.01, "kinks": {"merge": 0.02, "min_slope_change": 1.0}},
}
# One epoch of a width-16 MLP on 300 images of the shipped Fashion-MNIST subset.
DEEP = {
    "engine": "deep",
    "model": {"arch": "mlp", "width": 16, "norm": "none"},
    "data": {
        "dataset": "fashion-mnist",
        "dir": str(DATA),
        "val_fraction": 0.1,
        "noisy_val": True,
        "train_limit": 300,
        "augment": {"kind": "none"},
    },
    "train": {
        "epochs": 1,
        "batch_size": 30,
        "seed": 0,
        "eval_batch_size": 500,
        "eval_train_examples": 1024,
        "device": "flex",
        "precision": "f32",
        "curvature_every": 0,
        "curvature_examples": 512,
        "curvature_probes": 10,
        "lr": {
            "base": 0.1,
            "shape": {"kind": "step", "at": [0.5, 0.75], "factors": [0.1, 0.1]},
            "warmup": {"kind": "none"},
        },
        "optim": {"momentum": 0.9, "bn_policy": "both_passes", "weight_decay": {"kind": "l2", "lambda": 0.0005}},
    },
    "sam": {**SAM, "rho": 0.0, "grouping": "whole_batch", "normalization": "normalized"},
}


def with_key(config, dotted, value):
    """A deep copy of `config` with the dotted key set to `value`."""
    out = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


@pytest.fixture
def samlab_bin():
    """The samlab binary, or a skip saying how to get one."""
    try:
        return runs.samlab_binary()
    except FileNotFoundError as e:
        pytest.skip(f"needs the samlab binary: {e}")


def cli_run(binary, config_path, out):
    subprocess.run([binary, "run", "--config", str(config_path), "--out", str(out)], check=True, capture_output=True)


def assert_same_run(a: Path, b: Path):
    """Two run directories hold the same files with the same bytes, the summary's `seconds` aside."""
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert "metrics.csv" in files and any(f.endswith(".npy") for f in files)
    for name in files:
        if name != "summary.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa.pop("seconds") >= 0 and sb.pop("seconds") >= 0
    assert sa == sb


def assert_counts(events, total):
    """In-process progress: counts of `total` updates, increasing from 0 to the total."""
    assert events and all(e.total == total and e.unit == "updates" and e.line is None for e in events)
    done = [e.done for e in events]
    assert done[0] == 0 and done[-1] == total
    assert all(x < y for x, y in zip(done, done[1:])), done
    assert 50 <= len(done) <= 400


@pytest.mark.parametrize("config", [DIAG, RELU], ids=["diag", "relu"])
def test_an_analytic_run_from_a_dict_is_the_cli_run_bit_for_bit(tmp_path, samlab_bin, config):
    events = []
    r = runs.run(config, tmp_path / "py", progress=events.append)
    assert r.path == tmp_path / "py" and r.engine == config["engine"] and r.summary["status"] == "ok"
    # The run holds the config given, no key lost or changed on the way through TOML.
    assert tomllib.loads((tmp_path / "py" / "config.toml").read_text()) == config
    assert_counts(events, config["train"]["iters"])
    cli_run(samlab_bin, tmp_path / "py" / "config.toml", tmp_path / "cli")
    assert_same_run(tmp_path / "py", tmp_path / "cli")
    # The path of a config.toml is the same run.
    runs.run(tmp_path / "cli" / "config.toml", tmp_path / "from_path")
    assert_same_run(tmp_path / "from_path", tmp_path / "cli")


def test_a_run_replaces_a_run_only_with_force(tmp_path):
    out = tmp_path / "run"
    first = runs.run(DIAG, out)
    with pytest.raises(ValueError, match="already exists"):
        runs.run(with_key(DIAG, "train.lr", 0.02), out)
    assert runs.read(out).config == first.config
    second = runs.run(with_key(DIAG, "train.lr", 0.02), out, force=True)
    assert second.config["train"]["lr"] == 0.02
    assert second.summary["final_train_loss"] != first.summary["final_train_loss"]


@pytest.mark.parametrize(
    "config, match",
    [
        (with_key(DIAG, "engine", "quantum"), r'`engine` must be "diag", "relu" or "deep", got "quantum"'),
        ({"train": {"lr": 0.1}}, "has no `engine` key"),
        (with_key(DIAG, "train.sam.rho", -1.0), "rho.*got -1"),
        (with_key(DIAG, "train.lr", -0.5), "lr"),
        (with_key(RELU, "width", 0), "width"),
        (with_key(DIAG, "train.rhoo", 0.1), "unknown field `rhoo`"),
        (with_key(DIAG, "alpha", "big"), r"(?s)as a diag run config.*alpha = \"big\".*expected f64"),
        (with_key(DIAG, "train.sam.rho", float("nan")), "NaN or infinite"),
        (with_key(DIAG, "train.sam.window.start", [0.0, None]), r"train.sam.window.start\[1\]: None in a list"),
        (with_key(DIAG, "train.iters", 2**63), "the integer 9223372036854775808 is too large for TOML"),
    ],
)
def test_bad_input_is_a_value_error_naming_it_and_writes_nothing(tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        runs.run(config, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_what_is_not_a_config_or_a_run_directory_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the config file .*missing\.toml does not exist"):
        runs.run(tmp_path / "missing.toml", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        runs.run(tmp_path, tmp_path / "out")
    with pytest.raises(TypeError, match="config must be a dict or the path of a config.toml, got list"):
        runs.run([DIAG], tmp_path / "out")
    with pytest.raises(TypeError, match="of type set"):
        runs.run(with_key(DIAG, "train.iters", {1}), tmp_path / "out")
    with pytest.raises(TypeError, match="progress must be a callable"):
        runs.run(DIAG, tmp_path / "out", progress=3)
    (tmp_path / "bad.toml").write_text("engine = ")
    with pytest.raises(ValueError, match=r"bad\.toml is not a samlab run config: not TOML"):
        runs.run(tmp_path / "bad.toml", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # An occupied directory that holds no run is never replaced, with force or without.
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        runs.run(DIAG, keep)
    with pytest.raises(ValueError, match="keep"):
        runs.run(DIAG, keep, force=True)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"] and (keep / "notes.txt").read_text() == "mine"


def test_what_progress_raises_stops_an_analytic_run_and_nothing_is_written(tmp_path):
    calls = []

    def progress(event):
        calls.append(event)
        if event.done >= 500:
            raise KeyError("enough")

    with pytest.raises(KeyError, match="enough"):
        runs.run(DIAG, tmp_path / "out", progress=progress)
    # Called until it raised, then no more; the run stopped there and wrote nothing.
    assert calls[-1].done >= 500 and sum(e.done >= 500 for e in calls) == 1
    assert not (tmp_path / "out").exists()
    # A run that force was to replace is kept as it was.
    kept = runs.run(DIAG, tmp_path / "kept")
    with pytest.raises(KeyError, match="enough"):
        runs.run(with_key(DIAG, "train.lr", 0.02), tmp_path / "kept", force=True, progress=progress)
    assert runs.read(tmp_path / "kept").summary == kept.summary


def test_ctrl_c_during_an_analytic_run_raises_keyboard_interrupt(tmp_path, ctrl_c):
    calls = []

    def progress(event):
        calls.append(event.done)
        if event.done >= 500:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        runs.run(DIAG, tmp_path / "out", progress=progress)
    assert sum(d >= 500 for d in calls) == 1
    assert not (tmp_path / "out").exists()


def test_a_dict_with_none_leaves_the_key_out(tmp_path):
    # init_from = None is no init_from, as config.toml leaves it out.
    r = runs.run({**DIAG, "init_from": None}, tmp_path / "out")
    assert "init_from" not in r.config and r.summary["iterations"] == 1000


def test_a_deep_run_runs_through_the_binary_and_reads_back(tmp_path, samlab_bin):
    lines = []
    r = runs.run(DEEP, tmp_path / "deep", progress=lines.append)
    assert r.engine == "deep" and r.summary["status"] == "ok"
    assert r.config["model"] == DEEP["model"] and r.config["data"]["train_limit"] == 300
    assert r.metrics is not None and len(r.metrics["epoch"]) == 1
    assert r.checkpoint().tensors, "the last checkpoint holds the weights"
    assert all(e.done is None and isinstance(e.line, str) for e in lines)
    assert any(e.line.lstrip().startswith("epoch") and "1/1" in e.line for e in lines), lines


def test_what_progress_raises_stops_a_deep_run(tmp_path, samlab_bin):
    def progress(event):
        raise KeyError(event.line)

    with pytest.raises(KeyError, match="epoch"):
        runs.run(with_key(DEEP, "train.epochs", 5), tmp_path / "deep", progress=progress)
    # Stopped after its first epoch line, so unfinished (the killed run may be mid-write: its text is checked).
    summary = tmp_path / "deep" / "summary.json"
    assert not summary.is_file() or '"status": "ok"' not in summary.read_text()


def test_a_bad_deep_config_is_the_cli_s_value_error_and_writes_nothing(tmp_path, samlab_bin):
    with pytest.raises(ValueError, match=r"samlab run: .*batch_size"):
        runs.run(with_key(DEEP, "train.batch_size", 0), tmp_path / "deep")
    with pytest.raises(ValueError, match="unknown field `epochz`"):
        runs.run(with_key(DEEP, "train.epochz", 1), tmp_path / "deep")
    assert not (tmp_path / "deep").exists()


def test_without_the_binary_deep_runs_say_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLAB_BIN", str(tmp_path / "no-such-samlab"))
    with pytest.raises(FileNotFoundError, match=r"SAMLAB_BIN=.*no-such-samlab is not an executable file"):
        runs.run(DEEP, tmp_path / "deep")
    monkeypatch.delenv("SAMLAB_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    for call in (
        lambda: runs.run(DEEP, tmp_path / "deep"),
        lambda: runs.reproduce(tmp_path / "results", quick=True),
        lambda: runs.sweep_run({"base": DIAG, "axes": {"train.seed": [0, 1]}}, tmp_path / "sweep"),
    ):
        with pytest.raises(FileNotFoundError, match=r"cargo install --path crates/samlab-cli.*SAMLAB_BIN"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # The analytic engines need no binary.
    assert runs.run(DIAG, tmp_path / "diag").summary["status"] == "ok"


def test_reproduce_returns_the_claims_it_wrote(tmp_path, samlab_bin):
    out = tmp_path / "results"
    assert runs.reproduce(out, only="diag_gd_vs_nsam", quick=True, plan=True) is None
    plan = json.loads((out / "plan.json").read_text())
    assert plan["runs"] and all(r["dir"].startswith("diag_gd_vs_nsam/") for r in plan["runs"])
    claims = runs.reproduce(out, only=["diag_gd_vs_nsam"], quick=True)
    assert claims == json.loads((out / "claims.json").read_text())
    assert claims and all(c["id"].startswith("diag.") for c in claims)
    assert {c["verdict"] for c in claims} <= {"pass", "fail", "not run"}
    gd = runs.read(out / "diag_gd_vs_nsam" / "GD")
    assert gd.summary["status"] == "ok"
    with pytest.raises(ValueError, match="--only nonexistent matches no experiment"):
        runs.reproduce(tmp_path / "other", only="nonexistent")
    with pytest.raises(ValueError, match="unexpected argument '--bogus'"):
        runs.reproduce(tmp_path / "other", bogus=1)
    assert not (tmp_path / "other").exists()


def test_a_sweep_from_a_dict_runs_every_config_as_run_does(tmp_path, samlab_bin):
    base = with_key(DIAG, "train.iters", 300)
    grid = {"base": base, "axes": {"train.sam.rho": [0.0, 0.05]}}
    sweep = runs.sweep_run(grid, tmp_path / "sweep", jobs=1)
    assert sweep.axes == ("train.sam.rho",) and sweep.counts == {"done": 2}
    for run, rho in zip(sweep.runs, [0.0, 0.05]):
        assert run.values == {"train.sam.rho": rho}
        alone = runs.run(with_key(base, "train.sam.rho", rho), tmp_path / f"alone_{rho}")
        assert_same_run(run.path, alone.path)
    # A planned sweep's directory is run again: nothing is left to do, every run is kept.
    before = [(r.path / "summary.json").read_bytes() for r in sweep.runs]
    again = runs.sweep_run(tmp_path / "sweep")
    assert again.counts == {"done": 2}
    assert [(r.path / "summary.json").read_bytes() for r in again.runs] == before
    # The CLI's refusals, with its message.
    with pytest.raises(ValueError, match="rho"):
        runs.sweep_run({"base": base, "axes": {"train.sam.rho": [-1.0]}}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="needs out"):
        runs.sweep_run(grid)


def test_a_sweep_from_a_grid_file_with_a_relative_base(tmp_path, samlab_bin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs.run(with_key(DIAG, "train.iters", 200), "base_run")
    (tmp_path / "grid.toml").write_text('base = "base_run/config.toml"\n\n[axes]\n"train.seed" = [1, 2]\n')
    sweep = runs.sweep_run("grid.toml", "sweep", jobs=1)
    assert sweep.counts == {"done": 2}
    assert [r.read().config["train"]["seed"] for r in sweep.runs] == [1, 2]
    # The same grid as a dict: its base relative to the working directory.
    sweep2 = runs.sweep_run({"base": "base_run/config.toml", "axes": {"train.seed": [1, 2]}}, "sweep2", jobs=1)
    # A run's id is its config's hash: the same configs, so the same base was read.
    assert [r.id for r in sweep2.runs] == [r.id for r in sweep.runs] and sweep2.counts == {"done": 2}
