#!/usr/bin/env python3
"""Cost of one deep-net training step for each SAM variant, relative to ERM, side by side in one run.

Runs `samlab bench-step` for ERM, SAM and each variant in interleaved rounds (so machine drift hits all alike),
takes each one's mean step time (LookSAM alternates cheap and full steps: the mean is its cost; use a multiple of
its period as --steps), and prints the median over rounds of the ratio to the same round's ERM step.

    python3 bench/variant_cost.py --samlab target/release/samlab --rounds 3 -- --model resnet18 --width 16 \
        --batch-size 64 --steps 10

With --baseline OTHER_SAMLAB, compares the ERM and SAM steps of two builds instead (before/after a change).
"""
import argparse
import json
import statistics
import subprocess

VARIANTS = {
    "erm": ["--rho", "0"],
    "sam": ["--rho", "0.05"],
    "asam": ["--rho", "0.05", "--variant", "asam"],
    "gsam": ["--rho", "0.05", "--variant", "gsam"],
    "fisher-sam": ["--rho", "0.05", "--variant", "fisher-sam"],
    "fsam": ["--rho", "0.05", "--variant", "fsam"],
    "vasso": ["--rho", "0.05", "--variant", "vasso"],
    "looksam": ["--rho", "0.05", "--variant", "looksam", "--variant-k", "5"],
    "esam": ["--rho", "0.05", "--variant", "esam"],
    "msam": ["--rho", "0.05", "--variant", "msam"],
    "sam-on": ["--rho", "0.05", "--variant", "sam-on"],
}


def step_seconds(samlab, args):
    out = subprocess.run([samlab, "bench-step", *args], check=True, capture_output=True, text=True).stdout
    timing = json.loads(out.strip().splitlines()[-1])["timing"]
    return timing.get("mean_step_s", timing["median_step_s"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samlab", required=True)
    p.add_argument("--baseline", help="another samlab binary: compare its ERM and SAM steps with --samlab's")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", nargs="*", help="variants to time (default: all)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then bench-step flags (model, batch, steps)")
    a = p.parse_args()
    common = [x for x in a.rest if x != "--"]
    if a.baseline:
        rows = {}
        for _ in range(a.rounds):
            for name in ["erm", "sam"]:
                old = step_seconds(a.baseline, common + VARIANTS[name])
                new = step_seconds(a.samlab, common + VARIANTS[name])
                rows.setdefault(name, []).append(new / old)
        for name, r in rows.items():
            print(f"{name}: new/baseline step time, median of {len(r)} pairs: {statistics.median(r):.3f} ({', '.join(f'{x:.3f}' for x in r)})")
        return
    names = a.only or list(VARIANTS)
    ratios = {n: [] for n in names}
    for _ in range(a.rounds):
        erm = step_seconds(a.samlab, common + VARIANTS["erm"])
        for n in names:
            ratios[n].append(step_seconds(a.samlab, common + VARIANTS[n]) / erm)
    print(json.dumps({"flags": common, "rounds": a.rounds}))
    for n in names:
        r = ratios[n]
        print(f"{n}: {statistics.median(r):.2f}x ERM (median of {len(r)}: {', '.join(f'{x:.2f}' for x in r)})")


if __name__ == "__main__":
    main()
