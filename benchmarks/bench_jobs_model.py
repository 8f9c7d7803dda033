"""The jobs model's cost against the service model's (target: the 5-day evaluation week on
the jobs model takes no longer than on the service model).

One episode of ``experiments/configs/evaluation-week-5d.yaml`` (86,400 steps of 5 s, up
to 500 students) under one policy, on ``architecture: service`` and on ``architecture:
jobs`` (the ``jobs:`` section's defaults unless given), same seed, oracle off, one run,
calendar features off (the policy does not read them). Wall time of the whole episode
(the backend, the loop, the policy, the rows), the median of ``--repeats``; the numba
functions are compiled (and cached) by a short warm-up episode first.

    python benchmarks/bench_jobs_model.py [--policy hpa|static] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scalelab import load_config
from scalelab.experiments.config import config_path
from scalelab.experiments.episode import episode_seeds, resolve, run_episode


def episode(architecture: str, policy: dict, steps: int | None = None) -> tuple[float, int, int]:
    """Wall seconds of one episode, its steps and its violations."""
    cfg = load_config(config_path("evaluation-week-5d"), runs=1, oracle=False, architecture=architecture,
                      steps=steps, policies=[policy], calendar={"features": False})
    r = resolve(cfg)
    seeds = dict(episode_seeds(cfg.seed, 1, 1)[0])
    seeds["policy"] = seeds["policy"][0]
    loads = r.workload.series(cfg.step_seconds, r.steps)
    t0 = time.perf_counter()
    frame = run_episode(cfg, r, 0, 0, seeds, loads, None)
    return time.perf_counter() - t0, len(frame), int(np.sum(frame["violation"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", choices=("hpa", "static"), default="hpa")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    policy = {"name": "hpa", "target_utilization": 80} if args.policy == "hpa" else {"name": "static", "replicas": 4}
    for arch in ("service", "jobs"):
        episode(arch, policy, steps=200)  # compile
    times: dict[str, list[float]] = {"service": [], "jobs": []}
    facts = {}
    for _ in range(args.repeats):
        for arch in ("service", "jobs"):
            wall, steps, violations = episode(arch, policy)
            times[arch].append(wall)
            facts[arch] = (steps, violations)
    med = {a: statistics.median(v) for a, v in times.items()}
    for arch in ("service", "jobs"):
        steps, violations = facts[arch]
        print(f"{arch:8s} {args.policy}: {', '.join(f'{t:.2f}' for t in times[arch])} s -> median {med[arch]:.2f} s "
              f"({steps} steps, {violations} violations)")
    print(f"jobs / service: {med['jobs'] / med['service']:.2f}")


if __name__ == "__main__":
    main()
