"""The transfer check: PPO (SB3 defaults, normalised observations, the env's
default reward) trained on the fluid engine, deterministic and stochastic, or on the
discrete-event engine itself (``--engines des``), with several training seeds, then run
as ONNX on the discrete-event engine beside HSLinUCB, HPA and the oracle; prints the
table, each agent against the targets (violations within 2x the oracle's, mean replicas
within 20 %, scale changes within 5x) and the medians over training seeds per engine.
Needs the rl extra.

    python scripts/train_ppo_transfer.py [--timesteps 100000] [--seeds 0 1 2] [--engines des fluid-stochastic]
                                         [--runs 3] [--out runs/ppo]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from scalelab import load_config, run_experiment
from scalelab.experiments.env import SCENARIOS
from scalelab.experiments.rl import export_onnx, train_ppo

ENGINES = ("des", "fluid", "fluid-stochastic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timesteps", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="PPO training seeds")
    ap.add_argument("--engines", nargs="+", default=["fluid", "fluid-stochastic"], choices=ENGINES,
                    help="the engines to train on (des: the discrete-event one)")
    ap.add_argument("--runs", type=int, default=3, help="evaluation runs on the DES")
    ap.add_argument("--change-cost", type=float, default=None, help="the reward's cost per replica changed")
    ap.add_argument("--replica-cost", type=float, default=None, help="the reward's cost of the whole cluster")
    ap.add_argument("--out", default="runs/ppo")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reward = {k: v for k, v in (("change_cost", args.change_cost), ("replica_cost", args.replica_cost))
              if v is not None}
    policies = []
    for engine in args.engines:
        for seed in args.seeds:
            t0 = time.perf_counter()
            model, env = train_ppo("scalelab/PaperStaircase-v1", args.timesteps, engine=engine, seed=seed,
                                   reward_params=reward)
            path = export_onnx(model, env, out / f"ppo-{engine}-s{seed}.onnx")
            print(f"trained on {engine}, seed {seed}: {args.timesteps:,} steps in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            policies.append({"name": "onnx", "label": f"ppo-{engine}-s{seed}", "model": str(path.resolve())})
    cfg = dict(SCENARIOS["scalelab/PaperStaircase-v1"], name="ppo-transfer", runs=args.runs, engine="des",
               policies=[*policies, {"name": "hslinucb"}, {"name": "hpa", "behavior": "default",
                                                           "target_utilization": 50}, {"name": "oracle"}])
    res = run_experiment(load_config(cfg), out=out, progress=False)
    print(res.table())
    s = res.summary.set_index("policy")
    metrics = ("violations_per_run", "replicas", "scale_changes_per_run")
    ov, on, oc = (s.loc["oracle"][m]["mean"] for m in metrics)
    by_engine: dict[str, list] = {e: [] for e in args.engines}
    for p in policies:
        v, n, c = (s.loc[p["label"]][m]["mean"] for m in metrics)
        ok = (v <= 2 * ov, abs(n / on - 1) <= 0.2, c <= 5 * oc)
        by_engine[p["label"].rsplit("-s", 1)[0].removeprefix("ppo-")].append((v, n, c, all(ok)))
        print(f"{p['label']}: violations {v:.1f} vs oracle {ov:.1f} ({'PASS' if ok[0] else 'MISS'} <= 2x); "
              f"replicas {n:.2f} vs {on:.2f} ({'PASS' if ok[1] else 'MISS'} within 20 %); "
              f"changes {c:.0f} vs {oc:.0f} ({'PASS' if ok[2] else 'MISS'} <= 5x)")
    for engine, rows in by_engine.items():
        a = np.array([r[:3] for r in rows])
        print(f"trained on {engine}, {len(rows)} seeds: violations median {np.median(a[:, 0]):.1f} "
              f"(min {a[:, 0].min():.1f}, max {a[:, 0].max():.1f}), replicas median {np.median(a[:, 1]):.2f}, "
              f"changes median {np.median(a[:, 2]):.0f}; {sum(r[3] for r in rows)}/{len(rows)} meet every target")
    print(f"run folder: {res.path}")


if __name__ == "__main__":
    main()
