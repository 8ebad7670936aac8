"""Timing the samlab binary from the bench scripts: each run goes into a fresh run directory, and we record both
the training loop's own `seconds` (from summary.json) and the wall time of the whole process."""
import json
import os
import subprocess
import sys
import tempfile
import time


def check_binary(path):
    """Exits with a clear message unless `path` is an executable samlab binary."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"error: Rust binary {path!r} not found or not executable; "
                 "build it first with `cargo build --release` (run from the repo root) or pass --bin")


def time_samlab(binary, args, reps):
    """Runs `binary *args --out <tmp> --force` `reps` times; returns (loop seconds, wall seconds) lists."""
    loop_s, wall_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [binary, *args, "--out", out, "--force"]
        for _ in range(reps):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall_s.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                sys.exit(f"error: {' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stderr}")
            with open(os.path.join(out, "summary.json")) as f:
                loop_s.append(float(json.load(f)["seconds"]))
    return loop_s, wall_s
