"""Which part of the paper's loop moves its numbers: the cold start on the replay, one
factor changed at a time from the paper's setup (``paper-coldstart``), 10 runs each;
with ``--real-week``, the real week on the simulator (``paper-real-week``); with
``--hot-networks``, the unseen hot start (``paper-hotstart-unseen``, on paper-D2) from
each of the cold start's saved learners in turn (``load_run`` 0-9; the paper's loads
the last).

    python scripts/paper_factorial.py [--runs 10] [--policies hslinucb dqn q-learning]
    python scripts/paper_factorial.py --real-week [--policies hslinucb threshold-cpu]
    python scripts/paper_factorial.py --hot-networks [--runs 3] [--policies dqn]

Factors: the dataset (paper-D1 / the simulator's sim-D1), the loop (settle / period),
the replay's positions (shared across runs / per run), the first step's double draw,
the learners (the notebooks' / corrected). Real week: the sidecar's CPU (none, Istio's
0.6 ms per request, 3 ms), the pods' start-up time, the loop. Prints violations per run and replicas,
mean ± 1.96·SE, per policy and setting.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

from scalelab.experiments.config import ReplayConfig, config_path, load_config
from scalelab.experiments.runner import run_simulated


def settings(base):
    yield "the paper's setup", base
    yield "dataset sim-D1 (simulator)", replace(base, dataset="sim-D1")
    yield "loop period (fixed 5-s steps)", replace(base, loop="period")
    yield "replay positions per run", replace(base, replay=ReplayConfig(index="run", first_draws=2))
    yield "single first draw", replace(base, replay=ReplayConfig(index="experiment", first_draws=1))
    yield "corrected learners", replace(base, policies=[replace(p, params={k: v for k, v in p.params.items()
                                                                          if k != "paper"}) for p in base.policies])


def real_week_settings(base):
    yield "the paper's setup", base
    yield "no sidecar", replace(base, app=replace(base.app, sidecar="none"))
    yield "sidecar 3 ms per request", replace(base, app=replace(base.app, sidecar={"cpu_ms_per_request": 3.0}))
    yield "pod start-up 15 s", replace(base, cluster=replace(base.cluster, startup_seconds=15))
    yield "pod start-up 30 s", replace(base, cluster=replace(base.cluster, startup_seconds=30))
    yield "loop period (fixed 5-s steps)", replace(base, loop="period")


def hot_network_settings(base):
    cold_runs = load_config(config_path("paper-coldstart")).runs
    for k in range(cold_runs):  # the last is the paper's setup (load_run: last)
        label = f"the cold start's run {k}" + (" (the last)" if k == cold_runs - 1 else "")
        yield label, replace(base, policies=[replace(p, params={**p.params, "load_run": k}) for p in base.policies])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--policies", nargs="+")
    ap.add_argument("--real-week", action="store_true", help="the real week's factors instead")
    ap.add_argument("--hot-networks", action="store_true",
                    help="the unseen hot start from each of the cold start's saved learners instead")
    args = ap.parse_args()
    name, each = (("paper-real-week", real_week_settings) if args.real_week else
                  ("paper-hotstart-unseen", hot_network_settings) if args.hot_networks else
                  ("paper-coldstart", settings))
    chosen = args.policies or (["hslinucb", "threshold-cpu"] if args.real_week else ["hslinucb", "dqn", "q-learning"])
    base = load_config(config_path(name), runs=args.runs)
    base = replace(base, policies=[p for p in base.policies if p.name in chosen])
    print(f"{'setting':32s} {'policy':12s} {'violations/run':>18s} {'replicas':>14s}")
    with tempfile.TemporaryDirectory() as out:
        if args.hot_networks:  # the cold start with its own runs (a hot start would run it with the hot runs)
            run_simulated(load_config(config_path("paper-coldstart")), out=out, progress=False)
        for label, cfg in each(base):
            res = run_simulated(cfg, out=out, progress=False)
            for r in res.summary.to_dict(orient="records"):
                v, n = r["violations_per_run"], r["replicas"]
                print(f"{label:32s} {r['policy']:12s} {v['mean']:9.1f} ± {v['ci95']:6.1f} "
                      f"{n['mean']:7.2f} ± {n['ci95']:4.2f}", flush=True)


if __name__ == "__main__":
    main()
