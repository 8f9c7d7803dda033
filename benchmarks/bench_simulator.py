"""Simulated requests per second on one core (target >= 1,000,000).

Runs the event core alone (no context, no policy) on three loads and prints, for each,
the median over repeats of requests completed per wall-clock second.

    python benchmarks/bench_simulator.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import PAPER, SANDBOX


def one(app, replicas, users=0, rate=0.0, sim_seconds=10_000.0, step=5.0, seed=0) -> tuple[float, int]:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    cluster = SimCluster(app, ClusterSettings(initial_replicas=replicas, max_replicas=replicas), *rngs,
                         max_users=max(users, 1))
    cluster.set_users(users)
    t0 = time.perf_counter()
    t, done = 0.0, 0
    while t < sim_seconds:
        t += step
        if rate:
            cluster.add_open_arrivals(rate, t)
        done += len(cluster.run_to(t).spans)
    return time.perf_counter() - t0, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    one(PAPER, 2, users=10, sim_seconds=50)  # compile / load the numba cache
    cases = [
        ("paper profile, 50 closed users, 5 replicas (CFS quota)", PAPER, 5, 50, 0.0, 10_000.0),
        ("paper profile, 500 closed users, 10 replicas, overloaded", PAPER, 10, 500, 0.0, 2_000.0),
        ("open arrivals 2000 req/s, exponential 4 ms, 10 replicas", SANDBOX.with_overrides(
            demand={"kind": "exponential", "mean_ms": 4.0}), 10, 0, 2000.0, 500.0),
    ]
    print(f"{'case':66s} {'requests':>10s} {'median s':>9s} {'req/s (median)':>15s}")
    for label, app, reps, users, rate, secs in cases:
        runs = [one(app, reps, users, rate, secs, seed=k) for k in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        n = runs[0][1]
        print(f"{label:66s} {n:10d} {wall:9.3f} {n / wall:15,.0f}")


if __name__ == "__main__":
    main()
