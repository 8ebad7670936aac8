#!/usr/bin/env python3
"""Speed baseline: 1-SAM (m=1, rho 0.2, alpha 0.1, lr 10/30, unnormalized) on
make_data(20, 30, 3, 1000, 0), vectorized NumPy reference vs. the samlab Rust binary.

Usage: python3 bench/diag_speed.py [--iters 10000] [--reps 5] [--csv out.csv] [--bin PATH]
Run from the repository root after `cargo build --release`.
"""
import argparse
import csv
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diag_reference import make_data, train  # noqa: E402
from samlab_timing import check_binary, time_samlab  # noqa: E402

RHO, ALPHA, LR = 0.2, 0.1, 10 / 30


def time_numpy(iters, reps):
    data = make_data(20, 30, 3, 1000, 0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        train(*data, alpha=ALPHA, lr=LR, iters=iters, rho=RHO, m=1)
        times.append(time.perf_counter() - t0)
    return times


def time_rust(binary, iters, reps, log):
    args = ["diag", "train", "--n", "20", "--d", "30", "--r", "3", "--n-test", "1000",
        "--seed", "0", "--method", "1sam", "--rho", repr(RHO), "--lr", repr(LR),
        "--alpha", repr(ALPHA), "--iters", str(iters), "--log", log
    ]
    return time_samlab(binary, args, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--csv", help="write the table as CSV to this path")
    ap.add_argument("--bin", default="target/release/samlab", help="samlab binary")
    a = ap.parse_args()

    check_binary(a.bin)

    np_s = statistics.median(time_numpy(a.iters, a.reps))
    # "ends" does the same work as the NumPy loop (losses only at the end); "notebook" also logs train and
    # test loss at ~700 iterations (the 1000 x 30 test set dominates that).
    rows = []
    for log in ("ends", "notebook"):
        rust_loop, rust_wall = time_rust(a.bin, a.iters, a.reps, log)
        rows.append((f"1sam_log_{log}", a.iters, a.reps, np_s, statistics.median(rust_loop),
                     statistics.median(rust_wall)))
    header = ("case", "iters", "reps", "numpy_median_s", "rust_median_s", "rust_wall_median_s",
              "ratio_numpy_over_rust", "ratio_numpy_over_rust_wall")
    table = [r + (r[3] / r[4] if r[4] > 0 else float("inf"), r[3] / r[5]) for r in rows]

    print(f"{'case':<20}{'iters':>7}{'numpy s':>11}{'rust s':>11}{'rust wall s':>13}{'ratio':>9}{'ratio wall':>12}")
    for c, it, _, n, r, w, q, qw in table:
        print(f"{c:<20}{it:>7}{n:>11.4f}{r:>11.4f}{w:>13.4f}{q:>9.1f}{qw:>12.1f}")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            csv.writer(f).writerows([header, *table])


if __name__ == "__main__":
    main()
