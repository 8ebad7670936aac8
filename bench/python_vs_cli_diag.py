"""The notebook's 1-SAM diagonal-net run (10^4 iterations) through ``samlab.analytic.diag_train`` beside the same
run through ``samlab diag train``, in one script run (issue 23's number: Python within 1.1x of the CLI's loop).

    python bench/python_vs_cli_diag.py --samlab target/release/samlab [--rounds 7]

Rounds are interleaved (Python, then the CLI); Python's time is the call's wall time, the CLI's the training time
its summary.json records (the loop, without process start-up and the run directory's writing). Prints the medians,
their ratio, and whether both reached the same test loss."""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from samlab import analytic

LR = 5 / 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samlab", type=Path, required=True, help="the samlab binary (a release build)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    X, y, X_test, y_test, _ = analytic.sparse_regression()
    py, cli = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            t = time.perf_counter()
            run = analytic.diag_train(X, y, X_test, y_test, method="1sam", rho=0.2, lr=LR, iters=10_001, alpha=0.02)
            py.append(time.perf_counter() - t)
            out = Path(tmp) / f"run{r}"
            cmd = [str(args.samlab), "diag", "train", "--method", "1sam", "--rho", "0.2", "--lr", repr(LR)]
            cmd += ["--iters", "10001", "--alpha", "0.02", "--out", str(out)]
            subprocess.run(cmd, check=True, capture_output=True)
            summary = json.loads((out / "summary.json").read_text())
            cli.append(summary["seconds"])
    med_py, med_cli = statistics.median(py), statistics.median(cli)
    out = {
        "python_s": med_py,
        "cli_loop_s": med_cli,
        "python_over_cli": med_py / med_cli,
        "test_loss_python": run.final_test_loss,
        "test_loss_cli": summary["final_test_loss"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
