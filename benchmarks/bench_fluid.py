"""Week-scale and training-scale speed: the fluid engine beside the discrete-event one.

1. A 5-day ``evaluation-week-v1`` with up to 500 concurrent students (``diurnal_peak``
   60 and the default exams), 5-s steps (86,400 steps), under LinUCB: seconds per run
   through ``run_experiment`` (oracle, parquet, everything), median of ``--repeats``
   (target: <= 5 s with the fluid engine). The discrete-event engine runs the same work
   once (``--des-days`` days, scaled to 5 days if fewer).
2. Gymnasium steps per second through ``gym.make("scalelab/SandboxScaling-v1")`` for a
   trivial policy (always "stay"), over whole 86,400-step episodes after a first one
   (targets: >= 100,000 with the fluid engine, >= 50,000 with ``fluid-stochastic``), and
   the discrete-event engine's figure.

    python benchmarks/bench_fluid.py [--repeats 3] [--des-days 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import gymnasium as gym

import scalelab.experiments.env  # noqa: F401  (registers the env)
from scalelab import load_config, run_experiment


def week(engine: str, days: float = 5.0):
    return load_config("experiments/configs/compare.yaml", name=f"week-{engine}", runs=1, engine=engine,
                       workload={"kind": "evaluation-week-v1", "days": days, "diurnal_peak": 60},
                       policies=[{"name": "linucb"}])


def run_seconds(cfg) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = run_experiment(cfg, out=out, progress=False, workers=1, report=False)
        return time.perf_counter() - t0, len(res.steps), int(res.steps.users.max())


def env_rate(cfg, episodes: int) -> float:
    env = gym.make("scalelab/SandboxScaling-v1", config=cfg, reward="config", oracle=False)
    rates = []
    for ep in range(episodes + 1):
        env.reset(seed=ep)
        n, t0, done = 0, time.perf_counter(), False
        while not done:
            _, _, _, done, _ = env.step(1)
            n += 1
        if ep > 0:  # the first episode solves the steady states the others reuse
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--des-days", type=float, default=5.0, help="days the discrete-event engine runs")
    args = ap.parse_args()
    run_seconds(week("fluid", 0.1))  # compile (numba cache) outside the timing
    fluid = [run_seconds(week("fluid")) for _ in range(args.repeats)]
    secs = statistics.median(f[0] for f in fluid)
    print(f"5-day evaluation week, {fluid[0][1]:,} steps, up to {fluid[0][2]} students, LinUCB: "
          f"fluid {secs:.2f} s per run (median of {args.repeats}; target <= 5 s)")
    des_s, des_steps, _ = run_seconds(week("des", args.des_days))
    scaled = des_s * 5.0 / args.des_days
    print(f"  discrete-event: {des_s:.1f} s for {args.des_days:g} day(s) ({des_steps:,} steps) -> "
          f"{scaled:.0f} s for 5 days; fluid is {scaled / secs:.0f}x faster")
    rate = env_rate(week("fluid"), args.repeats)
    print(f"Gymnasium env, trivial policy: fluid {rate:,.0f} steps/s (median of {args.repeats} episodes; "
          f"target >= 300,000)")
    noisy = env_rate(week("fluid-stochastic"), args.repeats)
    print(f"  fluid-stochastic {noisy:,.0f} steps/s (target >= 50,000)")
    des_rate = env_rate(week("des", 0.25), 1)
    print(f"  discrete-event: {des_rate:,.0f} steps/s; fluid is {rate / des_rate:.0f}x faster")


if __name__ == "__main__":
    main()
