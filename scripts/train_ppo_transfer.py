"""Issue 17's transfer check: PPO (SB3 defaults, normalised observations, the env's
default reward) trained on the fluid engine, deterministic and stochastic, then run as
ONNX on the discrete-event engine beside HSLinUCB, HPA and the oracle; prints the table
and the targets (violations within 2x the oracle's, mean replicas within 20 %, scale
changes within 5x). Needs the rl extra.

    python scripts/train_ppo_transfer.py [--timesteps 100000] [--runs 3] [--out runs/ppo]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments import load_config, run_experiment
from experiments.env import SCENARIOS
from experiments.rl import export_onnx, train_ppo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timesteps", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--change-cost", type=float, default=0.0, help="the reward's cost per replica changed")
    ap.add_argument("--replica-cost", type=float, default=0.5, help="the reward's cost of the whole cluster")
    ap.add_argument("--out", default="runs/ppo")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policies = []
    for engine in ("fluid", "fluid-stochastic"):
        t0 = time.perf_counter()
        model, env = train_ppo("scalelab/PaperStaircase-v1", args.timesteps, engine=engine,
                               reward_params={"change_cost": args.change_cost,
                                                              "replica_cost": args.replica_cost})
        path = export_onnx(model, env, out / f"ppo-{engine}.onnx")
        print(f"trained on {engine}: {args.timesteps:,} steps in {time.perf_counter() - t0:.0f} s -> {path}")
        policies.append({"name": "onnx", "label": f"ppo-{engine}", "model": str(path.resolve())})
    cfg = dict(SCENARIOS["scalelab/PaperStaircase-v1"], name="ppo-transfer", runs=args.runs, engine="des",
               policies=[*policies, {"name": "hslinucb"}, {"name": "hpa", "behavior": "default",
                                                           "target_utilization": 50}, {"name": "oracle"}])
    res = run_experiment(load_config(cfg), out=out, progress=False)
    print(res.table())
    s = res.summary.set_index("policy")
    o = s.loc["oracle"]
    for label in (p["label"] for p in policies):
        r = s.loc[label]
        v, n, c = (r[m]["mean"] for m in ("violations_per_run", "replicas", "scale_changes_per_run"))
        ov, on, oc = (o[m]["mean"] for m in ("violations_per_run", "replicas", "scale_changes_per_run"))
        print(f"{label}: violations {v:.1f} vs oracle {ov:.1f} ({'PASS' if v <= 2 * ov else 'MISS'} <= 2x); "
              f"replicas {n:.2f} vs {on:.2f} ({'PASS' if abs(n / on - 1) <= 0.2 else 'MISS'} within 20 %); "
              f"changes {c:.0f} vs {oc:.0f} ({'PASS' if c <= 5 * oc else 'MISS'} <= 5x)")
    print(f"run folder: {res.path}")


if __name__ == "__main__":
    main()
