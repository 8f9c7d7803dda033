"""Cost against size: thousands of students and hundreds of replicas .

1. **10 simulated minutes**, paper profile, closed users (think 0..2 s), a static
   policy holding R replicas (cluster 1..R), for 400 x 40, 4,000 x 400 and
   20,000 x 1,000 (students x replicas), on each engine:

   * the backend alone, as the step loop drives it (``set_load``, ``observe`` every 5 s):
     wall time, requests simulated (DES) and requests per second, or steps per second
     (fluid);
   * the oracle for that load (:class:`scalelab.simulator.oracle.OracleTable`, a fresh table);
   * the whole ``run_experiment`` (oracle, policy, records, parquet; no report).

2. **A 5-day evaluation-week-v1 scaled to 5,000 students** (``user_scale``: the busiest
   step has 5,000), up to 300 replicas, the sandbox profile of ``compare.yaml``, under HPA:
   the oracle for its load levels, then the whole run (oracle cached), per engine
   (``--week-des`` adds the discrete-event engine, minutes).

3. **The fluid engine against the discrete-event one at scale** (:func:`scalelab.simulator.validation.validate`,
   sandbox profile with exponential demand and with its own heavy-tailed demand (the
   measured corpus), both validated on the acceptance grid; 6 and 18 (exponential), 3 and 6
   (heavy-tailed) students per replica at 4, 40, 400 and 1,000 replicas): p95 and
   request rate, each cell's utilisation.

Targets: DES >= 1 M simulated requests/s at every size; fluid: the week <= 5 s and
20,000 x 1,000 for 10 minutes <= 1 s; the week's oracle <= 10 s; the fluid engine within
15 % of the DES on p95 and 5 % on the request rate below 0.9 utilisation.

    python benchmarks/bench_scale.py [--repeats 3] [--week-des] [--only des|fluid]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from scalelab import load_config, run_experiment
from scalelab.experiments.episode import episode_seeds, make_backend, oracle_levels, resolve
from scalelab.orchestrator.backend import VirtualClock

SIZES = ((400, 40), (4000, 400), (20000, 1000))
STEPS = 120  # 10 minutes of 5-s steps


def sized(engine: str, users: int, replicas: int):
    return load_config({"name": f"scale-{engine}-{users}x{replicas}", "engine": engine, "steps": STEPS,
                        "slo_ms": 600, "app": {"profile": "paper"},
                        "workload": {"kind": "constant", "users": users, "duration_s": STEPS * 5},
                        "cluster": {"min_replicas": 1, "max_replicas": replicas, "initial_replicas": replicas},
                        "policies": [{"name": "static", "replicas": replicas}]})


def cold() -> None:
    """Forget the fluid engine's solved steady states (shared per process), so that each
    figure includes solving them."""
    from scalelab.simulator.fluid import shared_model

    shared_model.cache_clear()


def backend_alone(cfg) -> tuple[float, int]:
    """Seconds to drive the backend through the run, and requests it simulated (0: fluid)."""
    cold()
    r = resolve(cfg)
    seeds = dict(episode_seeds(cfg.seed, 1, 1)[0], policy=0)
    loads = r.workload.series(cfg.step_seconds, r.steps)
    clock = VirtualClock()
    backend = make_backend(cfg, r, seeds, loads, clock)
    t0 = time.perf_counter()
    for k in range(r.steps):
        backend.set_load(loads[k])
        clock.sleep_until((k + 1) * cfg.step_seconds)
        backend.observe()
    seconds = time.perf_counter() - t0
    return seconds, int(getattr(getattr(backend, "deployment", None), "requests_started", 0))


def oracle_seconds(cfg) -> tuple[float, int]:
    """A fresh oracle table for the run's load levels: seconds and distinct levels."""
    cold()
    r = resolve(cfg)
    t0 = time.perf_counter()
    oracle_levels(cfg, r, None)
    return time.perf_counter() - t0, len(np.unique(r.workload.series(cfg.step_seconds, r.steps)))


def whole_run(cfg) -> float:
    cold()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_experiment(cfg, out=out, progress=False, workers=1, report=False)
        return time.perf_counter() - t0


def week(engine: str):
    base = load_config("experiments/configs/compare.yaml")
    peak = float(max(make_users(1.0)))
    return load_config({**base.to_dict(), "name": f"week-5000-{engine}", "engine": engine, "runs": 1,
                        "workload": {"kind": "evaluation-week-v1", "days": 5, "user_scale": float(5000 / peak)},
                        "cluster": {**base.to_dict()["cluster"], "max_replicas": 300},
                        "policies": [{"name": "hpa", "behavior": "default", "target_utilization": 80}]})


def make_users(scale: float) -> np.ndarray:
    from scalelab.injector.workloads import make_workload

    w = make_workload({"kind": "evaluation-week-v1", "days": 5, "user_scale": scale})
    return w.series(5.0)


def median(f, repeats: int):
    out = [f() for _ in range(repeats)]
    if isinstance(out[0], tuple):
        return tuple(statistics.median(x) for x in zip(*out, strict=True))
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="medians of this many repeats (one for the DES week)")
    ap.add_argument("--only", choices=["des", "fluid"], help="one engine")
    ap.add_argument("--week-des", action="store_true", help="also the 5-day week on the discrete-event engine")
    args = ap.parse_args()
    engines = [args.only] if args.only else ["des", "fluid"]
    for engine in engines:  # compile and warm caches once
        backend_alone(sized(engine, 50, 5))
    print(f"10 simulated minutes ({STEPS} steps of 5 s), paper profile, static policy; medians of {args.repeats}")
    print(f"{'engine':6s} {'students x replicas':>20s} {'backend s':>10s} {'requests':>10s} {'req/s':>12s} "
          f"{'steps/s':>9s} {'oracle s':>9s} {'run s':>7s}")
    for engine in engines:
        for users, replicas in SIZES:
            cfg = sized(engine, users, replicas)
            seconds, requests = median(lambda cfg=cfg: backend_alone(cfg), args.repeats)
            oracle_s, _ = median(lambda cfg=cfg: oracle_seconds(cfg), args.repeats)
            run_s = median(lambda cfg=cfg: whole_run(cfg), args.repeats)
            rate = f"{requests / seconds:12,.0f}" if requests else f"{'-':>12s}"
            print(f"{engine:6s} {f'{users:,} x {replicas:,}':>20s} {seconds:10.3f} {requests:10,d} {rate} "
                  f"{STEPS / seconds:9,.0f} {oracle_s:9.3f} {run_s:7.2f}", flush=True)
    print("\n5-day evaluation-week-v1 scaled to 5,000 students, 1..300 replicas, sandbox profile, HPA")
    print(f"{'engine':6s} {'levels':>7s} {'oracle s':>9s} {'run s':>8s} {'steps':>7s}")
    week_engines = [e for e in engines if e == "fluid" or args.week_des]
    for engine in week_engines:
        cfg = week(engine)
        repeats = args.repeats if engine == "fluid" else 1
        oracle_s, levels = median(lambda cfg=cfg: oracle_seconds(cfg), repeats)
        run_s = median(lambda cfg=cfg: whole_run(cfg), repeats)
        print(f"{engine:6s} {levels:7,.0f} {oracle_s:9.2f} {run_s:8.2f} {86400:7,d}", flush=True)
    if "fluid" in engines:
        validation()


def validation() -> None:
    from scalelab.simulator.models import find_profile
    from scalelab.simulator.validation import validate

    for kind in ("exponential", "sandbox"):
        validation_table(validate, find_profile("sandbox").with_overrides(demand={"kind": kind}), kind)


def validation_table(validate, app, kind: str) -> None:
    cells = [(k * r, r) for r in (4, 40, 400, 1000) for k in ((6, 18) if kind == "exponential" else (3, 6))]
    print(f"\nfluid against DES, sandbox profile, {kind} demand (40 steps after 8 of warm-up)")
    print(f"{'students x replicas':>20s} {'util':>5s} {'DES p95':>9s} {'fluid p95':>9s} {'err':>7s} "
          f"{'DES rps':>9s} {'fluid rps':>9s} {'err':>7s}")
    for row in validate(app, cells):
        e_p95 = row["fluid_p95_ms"] / row["des_p95_ms"] - 1
        e_rps = row["fluid_rps"] / row["des_rps"] - 1
        ok = "" if row["utilization"] >= 0.9 else (
            "  ok" if abs(e_p95) <= 0.15 and abs(e_rps) <= 0.05 else "  MISS")
        cell = f"{row['users']:,} x {row['replicas']:,}"
        print(f"{cell:>20s} {row['utilization']:5.2f} {row['des_p95_ms']:9.0f} "
              f"{row['fluid_p95_ms']:9.0f} {e_p95:+7.1%} {row['des_rps']:9.1f} {row['fluid_rps']:9.1f} "
              f"{e_rps:+7.1%}{ok}", flush=True)


if __name__ == "__main__":
    main()
