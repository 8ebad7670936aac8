"""m-SAM's groups computed together against the loop over groups, side by side in one run.

For each model and group size, `samlab bench-step` times the SAM step with the groups one after the other
(`--groups loop`), as low-rank perturbations of one copy of the weights (`--groups auto`, what training takes on the
MLP; the loop elsewhere) and with each group's copy of the weights stacked (`--groups stacked`), interleaved `--reps`
times, and an ERM step of the same model and batch; the table gives the median step times (median over the
repetitions of each run's median) and the ratios loop / low-rank, loop / stacked and low-rank / ERM.

    python3 bench/grouped_msam.py --samlab target/release/samlab [--reps 3] [--steps 5]
"""

import argparse
import json
import statistics
import subprocess

CASES = [
    # (label, bench-step flags, group sizes)
    ("MLP 768-256-256-10, BatchNorm", ["--model", "mlp", "--norm", "batch", "--image-size", "16"], [8, 16, 32]),
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
    print(
        "| model | m | ERM step (s) | SAM, loop (s) | SAM, low-rank (s) | SAM, stacked (s) "
        "| loop / low-rank | loop / stacked | low-rank / ERM |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, flags, ms in CASES:
        low_rank = "MLP" in label
        for m in ms:
            sam = [*flags, "--rho", "0.05", "--m", str(m)]
            times: dict[str, list[float]] = {"erm": [], "loop": [], "auto": [], "stacked": []}
            for _ in range(a.reps):
                times["erm"].append(step_time(a.samlab, flags, a.steps))
                for path in ("loop", "auto", "stacked") if low_rank else ("loop", "stacked"):
                    times[path].append(step_time(a.samlab, [*sam, "--groups", path], a.steps))
            e, lo, st = (statistics.median(times[k]) for k in ("erm", "loop", "stacked"))
            if low_rank:
                r = statistics.median(times["auto"])
                cells = f"{r:.4f} | {st:.4f} | {lo / r:.2f} | {lo / st:.2f} | {r / e:.2f}"
            else:
                cells = f"(loop) | {st:.4f} | - | {lo / st:.2f} | -"
            print(f"| {label} | {m} | {e:.4f} | {lo:.4f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
