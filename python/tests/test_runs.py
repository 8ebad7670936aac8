"""samlab.runs on run directories laid out as samlab writes them."""

import json
import sys

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
