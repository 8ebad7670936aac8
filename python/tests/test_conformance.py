"""samlab.conformance without PyTorch: the Rust SAM step on a Python model, and its refusals."""

import json

import numpy as np
import pytest

from samlab import conformance
from samlab._samlab import sam_step


def test_the_engine_step_on_a_python_model_is_plain_sam():
    problem = conformance.problems()["mlp"]
    w = np.linspace(-0.5, 0.5, problem.dim)
    res = sam_step(json.dumps({"rho": 0.1, "normalization": "normalized"}), w, 8, problem.loss_and_grad)
    rows = np.arange(8)
    _, g = problem.loss_and_grad(w, rows)
    delta = 0.1 * g / (np.linalg.norm(g) + 1e-12)
    np.testing.assert_allclose(res["deltas"][0], delta, rtol=0, atol=1e-15)
    _, gp = problem.loss_and_grad(w + delta, rows)
    np.testing.assert_allclose(res["direction"], gp, rtol=0, atol=1e-15)
    assert res["gradient_evals"] == 2 and [c["pass"] for c in res["calls"]] == ["ascent_at_w", "descent"]


def test_refusals_name_the_problem():
    problem = conformance.problems()["diag"]
    w = np.ones(problem.dim)
    step = problem.loss_and_grad
    cfg = json.dumps
    with pytest.raises(ValueError, match="momentum"):
        sam_step(cfg({"rho": 0.1, "variant": {"kind": "msam"}}), w, 8, step)
    with pytest.raises(ValueError, match="invalid SAM config"):
        sam_step(cfg({"rho": 0.1, "bogus": 1}), w, 8, step)
    with pytest.raises(ValueError, match="divide"):
        sam_step(cfg({"rho": 0.1, "grouping": {"size": 3}}), w, 8, step)
    with pytest.raises(ValueError, match="normals"):
        sam_step(cfg({"rho": 0.1, "perturbation": "random"}), w, 8, step)
    with pytest.raises(ValueError, match="losses"):
        sam_step(cfg({"rho": 0.1, "variant": {"kind": "esam", "beta": 1.0, "gamma": 0.5}}), w, 8, step)
    with pytest.raises(ValueError, match="length 3"):
        sam_step(cfg({"rho": 0.1}), w, 8, lambda w, rows: (0.0, np.zeros(3)))

    def boom(w, rows):
        raise KeyError("the model's own error")

    with pytest.raises(KeyError, match="the model's own error"):
        sam_step(cfg({"rho": 0.1}), w, 8, boom)


def test_written_vectors_have_the_documented_layout(tmp_path):
    manifest = conformance.write(tmp_path)
    assert manifest["version"] == conformance.VERSION
    assert len(manifest["cases"]) == 3 * len(conformance.CASES)
    case = tmp_path / "mlp-looksam"
    spec = json.loads((case / "case.json").read_text())
    assert spec["steps"] == 4 and [r["gradient_evals"] for r in spec["record"]] == [2, 1, 2, 1]
    for t in range(4):
        for name in ("deltas", "direction", "w", "grads", "points", "state"):
            assert (case / f"t{t}_{name}.npy").exists(), (t, name)
