"""samlab.runs on run directories laid out as samlab writes them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from samlab import runs


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.toml").write_text('engine = "diag"\nalpha = 0.1\n\n[train]\niters = 3\nlr = 0.1\n')
    (d / "metrics.csv").write_text("iteration,train_loss,test_loss\n0,0.5,0.6\n1,0.25,NaN\n3,0.125,inf\n")
    (d / "summary.json").write_text(json.dumps({"status": "ok", "iterations": 3, "final_test_loss": None}))
    np.save(d / "beta.npy", np.arange(4.0))
    return d


def test_a_run_reads_as_dicts_and_arrays(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    r = runs.read(str(run_dir))
    assert r.engine == "diag"
    assert r.config["train"] == {"iters": 3, "lr": 0.1}
    assert r.summary["status"] == "ok" and r.summary["final_test_loss"] is None
    np.testing.assert_array_equal(r.metrics["iteration"], [0, 1, 3])
    assert np.isnan(r.metrics["test_loss"][1]) and np.isinf(r.metrics["test_loss"][2])
    assert r.arrays == ("beta",)
    np.testing.assert_array_equal(r.array("beta"), np.arange(4.0))
    with pytest.raises(KeyError, match="no u.npy"):
        r.array("u")


def test_metrics_are_a_dataframe_when_pandas_is_installed(run_dir):
    pd = pytest.importorskip("pandas")
    r = runs.read(run_dir)
    assert isinstance(r.metrics, pd.DataFrame)
    assert list(r.metrics.columns) == ["iteration", "train_loss", "test_loss"]


def test_an_unfinished_run_has_no_summary(run_dir):
    (run_dir / "summary.json").unlink()
    assert runs.read(run_dir).summary is None


def test_what_is_not_a_run_is_a_value_error_naming_it(tmp_path, run_dir, monkeypatch):
    with pytest.raises(ValueError, match="no such directory"):
        runs.read(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"empty.* is not a samlab run directory: it has no config.toml"):
        (tmp_path / "empty").mkdir()
        runs.read(tmp_path / "empty")
    (run_dir / "summary.json").write_text("{")
    with pytest.raises(ValueError, match="summary.json is not valid JSON"):
        runs.read(run_dir)
    (run_dir / "summary.json").unlink()
    (run_dir / "config.toml").write_text("engine = ")
    with pytest.raises(ValueError, match="config.toml is not valid TOML"):
        runs.read(run_dir)
    (run_dir / "config.toml").write_text("engine = 'diag'")
    (run_dir / "metrics.csv").write_text("iteration,train_loss\n0,x\n")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ValueError, match="'x' is not a number"):
        runs.read(run_dir)


# --- sweeps ---------------------------------------------------------------------------------------------------


def write_sweep(root, runs_spec, dirs=None):
    """A sweep directory as `samlab sweep plan` writes it: manifest.json (runs with their axis values and
    config.toml; an id of 16 hex digits of the config's SHA-256, or of `dir` + newline + config when the run
    names its directory) and manifest.sha256."""
    import hashlib

    entries = []
    for i, (values, config) in enumerate(runs_spec):
        d = None if dirs is None else dirs[i]
        keyed = config if d is None else f"{d}\n{config}"
        entry = {"id": hashlib.sha256(keyed.encode()).hexdigest()[:16], "values": values, "config": config}
        if d is not None:
            entry["dir"] = d
        entries.append(entry)
    text = json.dumps({"format": 1, "axes": ["train.lr", "seed"], "runs": entries}, indent=2)
    root.mkdir(exist_ok=True)
    (root / "manifest.json").write_text(text)
    (root / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    return entries


@pytest.fixture
def sweep_dir(tmp_path):
    root = tmp_path / "sweep"
    spec = [
        ([["train.lr", lr], ["seed", seed]], f'engine = "diag"\nseed = {seed}\n\n[train]\nlr = {lr}\n')
        for lr in (0.1, 0.2)
        for seed in (0, 1)
    ]
    entries = write_sweep(root, spec)
    losses = {(0.1, 0): 1.0, (0.1, 1): 3.0, (0.2, 0): 5.0}
    for (values, config), entry in zip(spec, entries):
        key = (values[0][1], values[1][1])
        if key not in losses:
            continue  # never started: missing
        d = root / "runs" / entry["id"]
        d.mkdir(parents=True)
        (d / "config.toml").write_text(config)
        header = {"samlab_version": "0.1.0", "engine": "diag", "status": "ok"}
        (d / "summary.json").write_text(json.dumps({**header, "final_test_loss": losses[key]}))
    return root


def test_a_sweep_reads_with_states_and_its_mean_std_table(sweep_dir, monkeypatch):
    s = runs.read_sweep(sweep_dir)
    assert s.axes == ("train.lr", "seed")
    assert [r.state for r in s.runs] == ["done", "done", "done", "missing"]
    assert s.counts == {"done": 3, "missing": 1}
    assert s.runs[2].values == {"train.lr": 0.2, "seed": 0}
    assert s.runs[0].read().summary["final_test_loss"] == 1.0
    monkeypatch.setitem(sys.modules, "pandas", None)
    t = s.table(["final_test_loss"])
    assert t["train.lr"] == [0.1, 0.2] and t["runs"] == [2, 2] and t["diverged"] == [0, 0]
    assert t["final_test_loss_mean"] == [2.0, 5.0]
    assert t["final_test_loss_std"][0] == pytest.approx(np.sqrt(2.0))
    assert t["final_test_loss_std"][1] == 0.0  # one finished run: no spread (n tells it apart)
    assert t["final_test_loss_n"] == [2, 1]
    assert "final_test_loss_mean" in s.table()  # every numeric key the finished runs share


def test_a_sweep_table_is_a_dataframe_when_pandas_is_installed(sweep_dir):
    pd = pytest.importorskip("pandas")
    t = runs.read_sweep(sweep_dir).table(["final_test_loss"])
    assert isinstance(t, pd.DataFrame) and list(t["final_test_loss_n"]) == [2, 1]


def test_a_bad_sweep_is_a_value_error_naming_it(tmp_path, sweep_dir):
    with pytest.raises(ValueError, match="is not a sweep directory"):
        runs.read_sweep(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no finished run's summary.json has a number `nope`"):
        runs.read_sweep(sweep_dir).table(["nope"])
    manifest = sweep_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace("0.2", "0.3"))
    with pytest.raises(ValueError, match="was edited after the sweep was planned"):
        runs.read_sweep(sweep_dir)
    # A forged manifest whose checksum and ids were recomputed still may not name a directory outside the sweep.
    escape = tmp_path / "forged"
    write_sweep(escape, [([["train.lr", 0.1], ["seed", 0]], 'engine = "diag"\n')], dirs=["../elsewhere"])
    with pytest.raises(ValueError, match="run 0 names the run directory"):
        runs.read_sweep(escape)


# --- checkpoints ----------------------------------------------------------------------------------------------

# A deep run's checkpoint as samlab-deep writes it (an MLP with momentum buffers; also the fuzzers' seed).
CKPT = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "checkpoint" / "seed-mlp-momentum.safetensors"


def test_a_checkpoint_reads_verified_into_numpy(tmp_path):
    c = runs.read_checkpoint(CKPT)
    assert c.metadata["format"] == "samlab-checkpoint" and c.metadata["version"] == "3"
    assert len(c.metadata["payload_xxh3_128"]) == 32
    assert isinstance(c.model, dict) and isinstance(c.progress, dict)
    assert all(v.dtype == np.float32 for v in c.tensors.values())
    state = c.state_dict()
    assert state and not any(k.startswith("optimizer.") for k in state)
    assert any(k.startswith("optimizer.momentum.") for k in c.tensors)
    for k, v in state.items():  # a momentum buffer has its parameter's shape
        m = c.tensors.get("optimizer.momentum." + k)
        assert m is None or m.shape == v.shape
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.toml").write_text('engine = "deep"\n')
    (run / "checkpoint" / "last.ckpt").write_bytes(CKPT.read_bytes())
    r = runs.read(run)
    assert r.checkpoint().tensors.keys() == c.tensors.keys()
    with pytest.raises(KeyError, match=r"no checkpoint/best.ckpt; it has last"):
        r.checkpoint("best")


def as_version_2(raw: bytes) -> bytes:
    """The same checkpoint in format version 2: the payload's SHA-256 under `payload_sha256` instead of XXH3-128."""
    import hashlib

    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    del meta["payload_xxh3_128"]
    meta["version"] = "2"
    meta["payload_sha256"] = hashlib.sha256(raw[8 + n :]).hexdigest()  # all F32, laid out in name order
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def test_a_version_2_checkpoint_still_reads_and_its_checksum_is_checked(tmp_path):
    v2 = tmp_path / "v2.ckpt"
    raw = as_version_2(CKPT.read_bytes())
    v2.write_bytes(raw)
    c = runs.read_checkpoint(v2)
    assert c.metadata["version"] == "2"
    for k, v in runs.read_checkpoint(CKPT).tensors.items():
        np.testing.assert_array_equal(c.tensors[k], v)
    v2.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(ValueError, match="checksum mismatch"):
        runs.read_checkpoint(v2)


def test_a_damaged_or_foreign_checkpoint_is_a_value_error(tmp_path):
    raw = bytearray(CKPT.read_bytes())
    raw[-3] ^= 0x40  # one bit of the last tensor's data
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        runs.read_checkpoint(damaged)
    short = tmp_path / "short.ckpt"
    short.write_bytes(CKPT.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        runs.read_checkpoint(short)
    v1 = CKPT.parent / "seed-mlp-v1.ckpt"
    with pytest.raises(ValueError, match="seed-mlp-v1.ckpt: not a"):
        runs.read_checkpoint(v1)
    with pytest.raises(OSError):
        runs.read_checkpoint(tmp_path / "missing.ckpt")
