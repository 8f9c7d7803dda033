"""Simulated requests per second on one core (targets: >= 1,000,000, and >= 10 times a
plain-Python processor-sharing loop of the same model, flat in cluster size).

1. The event core alone (no context, no policy) on three loads: the median over repeats
   of requests completed per wall-clock second.
2. The core against :class:`scalelab.simulator.reference.ReferenceCluster` -- the same
   model (CFS quota and burst, contention, closed users, round robin) written the
   straightforward way in Python, which gives the same spans bit for bit -- on one
   workload: the paper profile, 400 closed users (think 0..2 s) on 40 replicas, 600
   simulated seconds in 5-s steps. Both draw from generators in the same state, so both
   simulate the same requests; the ratio of their medians is the target's.
3. The core by size: 400 x 40, 4,000 x 400 and 20,000 x 1,000 (users x replicas), the
   same load per replica, 120 simulated seconds: requests per second should not fall
   with size more than the users' heap (O(log users)) makes it.

    python benchmarks/bench_simulator.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import PAPER, SANDBOX
from scalelab.simulator.reference import ReferenceCluster


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


def reference(app, replicas, users, sim_seconds, step=5.0, seed=0) -> tuple[float, int]:
    """:func:`one`'s measure for the plain-Python reference (closed users only)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    cluster = ReferenceCluster(app, replicas, users, rngs[0], rngs[1])
    t0 = time.perf_counter()
    t, done = 0.0, 0
    while t < sim_seconds:
        t += step
        done += len(cluster.run_to(t))
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

    print("\nagainst the plain-Python reference: paper profile, 400 closed users, 40 replicas, 600 s")
    engine = [one(PAPER, 40, 400, 0.0, 600.0, seed=k) for k in range(args.repeats)]
    plain = [reference(PAPER, 40, 400, 600.0, seed=k) for k in range(args.repeats)]
    assert [r[1] for r in engine] == [r[1] for r in plain], "the two loops simulated different requests"
    fast = statistics.median(r[1] / r[0] for r in engine)
    slow = statistics.median(r[1] / r[0] for r in plain)
    print(f"{'engine':12s} {fast:12,.0f} req/s")
    print(f"{'reference':12s} {slow:12,.0f} req/s")
    print(f"engine / reference: {fast / slow:.1f}x (target >= 10x)")

    print("\nby size: paper profile, 10 users per replica, 120 s")
    for users, replicas in ((400, 40), (4000, 400), (20000, 1000)):
        runs = [one(PAPER, replicas, users, 0.0, 120.0, seed=k) for k in range(args.repeats)]
        rate = statistics.median(r[1] / r[0] for r in runs)
        print(f"{f'{users:,} x {replicas:,}':>16s} {runs[0][1]:10d} requests {rate:12,.0f} req/s")


if __name__ == "__main__":
    main()
