"""What the step loop costs beside its engine and its policy (target: its own per-step
cost -- the observation, orders, clock, reward, the record and its row -- at most
HSLinUCB's ``decide`` + ``update``).

One episode of the compare config's day (17,280 steps of 5 s), a static policy, on the
fluid engine (whose steps are a cached lookup) and on the discrete-event one:

* **engine**: the simulated cluster advancing (``SimCluster.run_to``, ``FluidCluster.step``);
* **observation**: the rest of the backend's steps driven without the loop (``set_load``,
  the clock, ``observe``: pod samples, the context; ``scale_to`` with the static count);
* **loop**: ``StepLoop.run`` over the same backend, per step, minus the backend's;
* **row**: ``records_frame`` of the episode's records (the rows of ``steps.parquet``), per step;
* **hslinucb**: ``decide`` + ``update`` on the same contexts, per step (no backend).

Medians of ``--repeats``; microseconds per step.

    python benchmarks/bench_loop.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scalelab import load_config
from scalelab.agent.build import build_policy
from scalelab.agent.loop import StepLoop
from scalelab.experiments.config import config_path
from scalelab.experiments.episode import build_reward, episode_seeds, make_backend, records_frame, resolve
from scalelab.orchestrator.backend import VirtualClock


def episode(engine: str):
    cfg = load_config(config_path("compare"), runs=1, engine=engine, oracle=False,
                      policies=[{"name": "static", "replicas": 3}, {"name": "hslinucb"}])
    r = resolve(cfg)
    seeds = dict(episode_seeds(cfg.seed, 1, 2)[0])
    seeds["policy"] = seeds["policy"][0]
    loads = r.workload.series(cfg.step_seconds, r.steps)
    return cfg, r, seeds, loads


def backend_alone(cfg, r, seeds, loads) -> tuple[float, float]:
    """Per step, s: the backend's steps without the loop, and the part of them spent in
    the engine advancing (``SimCluster.run_to``; ``FluidCluster.step``)."""
    clock = VirtualClock()
    backend = make_backend(cfg, r, seeds, loads, clock)
    engine = backend.deployment
    name = "run_to" if hasattr(engine, "run_to") else "step"
    advance, spent = getattr(engine, name), [0.0]

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return advance(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t

    setattr(engine, name, timed)
    step_s = cfg.step_seconds
    t0 = time.perf_counter()
    for k in range(len(loads)):
        backend.set_load(loads[k])
        clock.sleep_until((k + 1) * step_s)
        backend.observe()
        backend.scale_to(3)
    return (time.perf_counter() - t0) / len(loads), spent[0] / len(loads)


def loop_run(cfg, r, seeds, loads) -> tuple[float, float, list]:
    clock = VirtualClock()
    backend = make_backend(cfg, r, seeds, loads, clock)
    from scalelab.experiments.episode import deployment_of

    policy = build_policy("static", {"replicas": 3}, deployment_of(cfg), seed=0)
    loop = StepLoop(backend, clock, loads, r.loop, build_reward(cfg))
    t0 = time.perf_counter()
    records = [rec for rec, _ in loop.run(policy)]
    run_s = (time.perf_counter() - t0) / len(loads)
    t0 = time.perf_counter()
    records_frame(records, 0, "static", None)
    return run_s, (time.perf_counter() - t0) / len(loads), records


def hslinucb(cfg, records) -> float:
    from scalelab.experiments.episode import deployment_of

    policy = build_policy("hslinucb", {}, deployment_of(cfg), seed=0)
    pairs = [(rec.before.context, rec.after.context, rec.reward) for rec in records]
    info = {"step": 0}
    t0 = time.perf_counter()
    for before, after, reward in pairs:
        d = policy.decide(before, info)
        policy.update(before, d.action, reward, after)
    return (time.perf_counter() - t0) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for engine in ("fluid", "des"):
        cfg, r, seeds, loads = episode(engine)
        loop_run(cfg, r, seeds, loads[:200])  # compile and warm caches outside the timing
        backend_alone(cfg, r, seeds, loads)  # the fluid engine's steady states, solved once
        rows = []
        for _ in range(args.repeats):
            b, eng = backend_alone(cfg, r, seeds, loads)
            run_s, row_s, records = loop_run(cfg, r, seeds, loads)
            rows.append((eng, b - eng, run_s - b, row_s, hslinucb(cfg, records)))
        eng, obs, loop, row, hsl = (statistics.median(x) * 1e6 for x in zip(*rows, strict=True))
        overhead = obs + loop + row
        print(f"{engine}: {len(loads):,} steps; per step: engine {eng:.1f} us; the loop's own: observation "
              f"{obs:.1f} us, loop {loop:.1f} us, row {row:.1f} us = {overhead:.1f} us; hslinucb decide+update "
              f"{hsl:.1f} us -> {overhead / hsl:.2f} x hslinucb (target <= 1)")
    print(f"(medians of {args.repeats}; {np.__name__} {np.__version__})")


if __name__ == "__main__":
    main()
