#!/usr/bin/env python3
"""Speed: 10^6 full-batch SAM steps on the 12-point 1D problem, width 100 (SPEC section 3: normalized n-SAM,
rho 0.3, lr 5e-5 decaying linearly, loss 0.5 * sum of squares), NumPy reference vs the samlab Rust binary.

NumPy (bench/relu_reference.py, vectorized over neurons and examples) runs --numpy-iters updates and is
extrapolated linearly to --iters (its cost per update is constant); samlab runs the full --iters, timed by its
own `seconds` (training loop) and as a whole process (start-up and writing the run directory included).
Both sides run on one core (samlab's training loop is single-threaded; NumPy's BLAS is limited to one thread).

Usage: python3 bench/relu_speed.py [--iters 1000000] [--numpy-iters 20000] [--reps 5] [--csv out.csv] [--bin PATH]
Run from the repository root after `cargo build --release`.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relu_reference import X12, Y12, init_blanc, train  # noqa: E402
from samlab_timing import check_binary, time_samlab  # noqa: E402

RHO, LR = 0.3, 5e-5


def time_numpy(iters, reps):
    p0 = init_blanc(100, 1, 0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        train(X12, Y12, p0, iters, LR, rho=RHO, lr_kw={"shape": "linear_decay"})
        times.append(time.perf_counter() - t0)
    return times


def time_rust(binary, iters, reps):
    args = ["relu", "train", "--method", "nsam", "--normalize", "--rho", repr(RHO), "--lr", repr(LR),
        "--lr-schedule", "linear-decay", "--iters", str(iters), "--seed", "0", "--width", "100",
        "--log", "ends"
    ]
    return time_samlab(binary, args, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=1_000_000)
    ap.add_argument("--numpy-iters", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--csv", help="write the table as CSV to this path")
    ap.add_argument("--bin", default="target/release/samlab", help="samlab binary")
    a = ap.parse_args()
    check_binary(a.bin)

    np_times = time_numpy(a.numpy_iters, a.reps)
    scale = a.iters / a.numpy_iters
    np_med, np_min = statistics.median(np_times) * scale, min(np_times) * scale
    loop_s, wall_s = time_rust(a.bin, a.iters, a.reps)
    rows = [
        ("numpy_extrapolated", a.iters, a.reps, np_med, np_min),
        ("rust_loop", a.iters, a.reps, statistics.median(loop_s), min(loop_s)),
        ("rust_process", a.iters, a.reps, statistics.median(wall_s), min(wall_s)),
    ]
    print(f"{'case':<20}{'iters':>9}{'median s':>11}{'min s':>9}{'numpy/this':>12}")
    for case, it, _, med, mn in rows:
        print(f"{case:<20}{it:>9}{med:>11.3f}{mn:>9.3f}{np_med / med:>12.1f}")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("case", "iters", "reps", "median_s", "min_s", "numpy_median_over_median"))
            for r in rows:
                w.writerow(r + (np_med / r[3],))


if __name__ == "__main__":
    main()
