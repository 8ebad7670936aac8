"""m-SAM's groups computed together against the loop over groups, side by side in one run.

For each model and group size, `samlab bench-step` times the SAM step with the groups one after the other (how
training takes them) and computed together (`--groups-together`), interleaved `--reps` times, and an ERM step of the same
model and batch; the table gives the median step times (median over the repetitions of each run's median) and the
ratios loop / together and together / ERM.

    python3 bench/grouped_msam.py --samlab target/release/samlab [--reps 3] [--steps 5]
"""

import argparse
import json
import statistics
import subprocess

CASES = [
    # (label, bench-step flags, group sizes)
    ("MLP 768-256-256-10, BatchNorm", ["--model", "mlp", "--norm", "batch", "--image-size", "16"], [16, 32]),
    ("MLP 3072-256-256-10, BatchNorm", ["--model", "mlp", "--norm", "batch", "--image-size", "32"], [16]),
    ("CNN width 16, BatchNorm", ["--model", "cnn", "--width", "16"], [16]),
    ("PreAct ResNet-18 width 16, BatchNorm", ["--model", "preact_resnet18", "--width", "16"], [16]),
]


def step_time(samlab: str, flags: list[str], steps: int) -> float:
    out = subprocess.run(
        [samlab, "bench-step", "--batch-size", "128", "--steps", str(steps), "--warmup", "1", *flags],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["timing"]["median_step_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samlab", default="target/release/samlab")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    print("| model | m | ERM step (s) | SAM, groups together (s) | SAM, loop over groups (s) | loop / together | together / ERM |")
    print("|---|---|---|---|---|---|---|")
    for label, flags, ms in CASES:
        for m in ms:
            sam = [*flags, "--rho", "0.05", "--m", str(m)]
            erm, together, looped = [], [], []
            for _ in range(a.reps):
                erm.append(step_time(a.samlab, flags, a.steps))
                looped.append(step_time(a.samlab, sam, a.steps))
                together.append(step_time(a.samlab, [*sam, "--groups-together"], a.steps))
            e, t, lo = (statistics.median(x) for x in (erm, together, looped))
            print(f"| {label} | {m} | {e:.4f} | {t:.4f} | {lo:.4f} | {lo / t:.2f} | {t / e:.2f} |", flush=True)


if __name__ == "__main__":
    main()
