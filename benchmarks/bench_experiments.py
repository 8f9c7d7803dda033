"""End-to-end experiment times on this machine (targets: paper cold-start scale <= 15 s,
``scalelab compare`` at 5 runs <= 40 s).

1. The paper's cold-start experiment at its scale: ``paper-sim-v1`` (9000 steps of 5 s),
   10 runs, one policy, the paper's context settings, on the simulator, through
   ``run_experiment`` (oracle table, episodes in parallel, steps.parquet, report).
2. ``scalelab compare --runs 5`` (``--compare-runs``) in a subprocess.
``scalelab paper`` has its own benchmark, ``benchmarks/bench_paper.py``.

    python benchmarks/bench_experiments.py [--policy oracle] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from scalelab.experiments.config import load_config
from scalelab.experiments.experiment import run_experiment


def paper_coldstart(policy: str, out: str) -> tuple[float, int]:
    cfg = load_config({
        "name": "bench-paper-coldstart", "seed": 1, "runs": 10, "slo_ms": 600,
        "workload": {"kind": "paper-sim-v1"}, "app": {"profile": "paper"},
        "cluster": {"min_replicas": 1, "max_replicas": 10, "initial_replicas": 1},
        "context": {"preset": "paper"}, "policies": [{"name": policy}],
    })  # fmt: skip
    t0 = time.perf_counter()
    res = run_experiment(cfg, out=out, progress=False)
    return time.perf_counter() - t0, len(res.steps)


def compare(out: str, runs: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scalelab.cli", "compare", "--runs", str(runs), "--out", out], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policy", default="oracle")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--compare-runs", type=int, default=5)
    ap.add_argument("--only", choices=("paper-coldstart", "compare"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        if args.only != "compare":
            times = [paper_coldstart(args.policy, out) for _ in range(args.repeats)]
            wall = statistics.median(t for t, _ in times)
            print(f"paper cold-start scale ({args.policy}, 10 runs x 9000 steps = {times[0][1]} steps): "
                  f"{wall:.1f} s (median of {args.repeats}), target <= 15 s")
        if args.only != "paper-coldstart":
            walls = [compare(out, args.compare_runs) for _ in range(args.repeats)]
            print(f"scalelab compare --runs {args.compare_runs}: {', '.join(f'{w:.1f}' for w in walls)} s -> "
                  f"{statistics.median(walls):.1f} s (median of {args.repeats}), target <= 40 s")

if __name__ == "__main__":
    main()
