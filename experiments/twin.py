"""The twin: one config on the simulator and on the live stack, side by side.

``scalelab twin CONFIG`` runs ``CONFIG`` on ``sim`` and on ``live`` (same seed, same
runs), then :func:`twin_report` on the two run folders (also ``scalelab report A B``):

- per policy, the per-step p95, replicas and request rate of both (median over runs,
  ``twin.png``);
- the twin's error per policy: the per-step p95 error ``|sim - live| / live`` over the
  steps both measured (live steps with a missing signal are left out), median and
  worst (95th percentile of the steps, so that one stray step does not decide);
- violations per run and replica-hours of each policy on each backend (mean ± 95 % Student-t interval),
  whether each simulated mean falls inside the live run's interval, and the ranking of
  the policies on both;
- whether the live replicas' CPU limit was a CFS quota (``stack.json``).

Everything goes to ``twin.md``, ``twin.csv`` and ``twin.png`` in ``out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.experiments.metrics import mean_ci


def _per_run(steps: pd.DataFrame, step_s: float) -> pd.DataFrame:
    g = steps.groupby(["policy", "run"])
    return pd.DataFrame({"violations": g.violation.sum(),
                         "replica_hours": g.replicas.sum() * step_s / 3600.0}).reset_index()


def _mean_ci(v: pd.Series) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width (nan with fewer than two runs)."""
    m = mean_ci(v.to_numpy(float))
    if m["mean"] is None:
        return float("nan"), float("nan")
    return m["mean"], m["ci95"] if v.notna().sum() > 1 else float("nan")


def _config(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two resolved configs (``backend``, ``runs``
    and ``name`` left out), as ``key: a -> b``."""
    out = []
    for key in sorted(set(a) | set(b)):
        if not prefix and key in ("backend", "runs", "name"):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def twin_table(sim: pd.DataFrame, live: pd.DataFrame, step_s: float) -> pd.DataFrame:
    """One row per policy: violations/run and replica-hours (mean, ci95) on each backend,
    whether the simulated mean is inside the live interval, and the per-step p95 error
    (median, worst = 95th percentile of steps)."""
    rows = []
    sim_runs, live_runs = _per_run(sim, step_s), _per_run(live, step_s)
    for policy in [p for p in live.policy.unique() if p in set(sim.policy)]:
        row = {"policy": policy}
        for name, runs in (("sim", sim_runs), ("live", live_runs)):
            r = runs[runs.policy == policy]
            row[f"{name}_runs"] = len(r)
            for metric in ("violations", "replica_hours"):
                row[f"{name}_{metric}"], row[f"{name}_{metric}_ci95"] = _mean_ci(r[metric])
        for metric in ("violations", "replica_hours"):
            lo = row[f"live_{metric}"] - row[f"live_{metric}_ci95"]
            hi = row[f"live_{metric}"] + row[f"live_{metric}_ci95"]
            row[f"{metric}_within"] = bool(lo <= row[f"sim_{metric}"] <= hi) if np.isfinite(lo) else None
        s = sim[sim.policy == policy].groupby("step").p95_ms.median()
        lv = live[(live.policy == policy) & (live.missing.fillna("") == "")].groupby("step").p95_ms.median()
        both = pd.concat([s.rename("sim"), lv.rename("live")], axis=1).dropna()
        both = both[both.live > 0]
        err = ((both.sim - both.live).abs() / both.live).to_numpy()
        row["steps_compared"] = len(err)
        row["p95_error_median"] = float(np.median(err)) if len(err) else float("nan")
        row["p95_error_worst"] = float(np.quantile(err, 0.95)) if len(err) else float("nan")
        lv_steps = live[live.policy == policy]
        row["live_missing_steps"] = int((lv_steps.missing.fillna("") != "").sum())
        both = lv_steps[(lv_steps.client_p95_ms > 0) & (lv_steps.p95_ms > 0)]
        gap = ((both.p95_ms - both.client_p95_ms).abs() / both.client_p95_ms).to_numpy()
        row["orchestrator_vs_locust_p95"] = float(np.median(gap)) if len(gap) else float("nan")
        rows.append(row)
    t = pd.DataFrame(rows)
    if len(t):
        for name in ("sim", "live"):
            t[f"{name}_rank"] = t[[f"{name}_violations", f"{name}_replica_hours"]].apply(tuple, axis=1).rank(
                method="min").astype(int)
    return t


def twin_report(sim_dir: str | Path, live_dir: str | Path, out: str | Path | None = None) -> Path:
    """Compare two run folders of one config (any two backends; ``sim`` and ``live``
    in the usual case) and write ``twin.md``, ``twin.csv``, ``twin.png`` to ``out``
    (default: ``live_dir/twin``); returns the path of ``twin.md``."""
    sim_dir, live_dir = Path(sim_dir), Path(live_dir)
    out = Path(out) if out else live_dir / "twin"
    out.mkdir(parents=True, exist_ok=True)
    cfg_sim, cfg_live = _config(sim_dir), _config(live_dir)
    step_s = float(cfg_live.get("step_seconds", 5.0))
    sim, live = pd.read_parquet(sim_dir / "steps.parquet"), pd.read_parquet(live_dir / "steps.parquet")
    t = twin_table(sim, live, step_s)
    stack = {}
    if (live_dir / "stack.json").exists():
        stack = json.loads((live_dir / "stack.json").read_text())
    quota = stack.get("cpu_limit_enforced")
    differ = config_differences(cfg_sim, cfg_live)
    injector = json.loads((live_dir / "injector.json").read_text()) if (live_dir / "injector.json").exists() else {}
    t["live_requests"] = [injector.get(p, {}).get("requests") for p in t.policy]
    t["live_failure_rate"] = [injector.get(p, {}).get("failure_rate") for p in t.policy]
    t.to_csv(out / "twin.csv", index=False)
    _plot(sim, live, out / "twin.png", cfg_live.get("slo_ms"))
    lines = [f"# Twin: {cfg_live.get('name')} on {cfg_sim.get('backend')} and {cfg_live.get('backend')}", "",
             f"- simulated: `{sim_dir}` ({cfg_sim.get('backend')}); measured: `{live_dir}` ({cfg_live.get('backend')})",
             f"- SLO {cfg_live.get('slo_ms')} ms on the per-step p95; a violation is a step above it",
             "- the two configs " + ("are the same experiment (only the backend and the runs differ)" if not differ
                                     else "DIFFER beyond the backend: " + "; ".join(differ[:10])),
             "- the live replicas' CPU limit: " + ({True: "a CFS quota (enforced by the kernel)",
                                                     False: "NOT enforced (no writable cgroup here)",
                                                     None: "not recorded"}[quota]
                                                    if cfg_live.get("backend") == "live" else "n/a (no live run)"), "",
             "| policy | violations/run sim | live | sim in live's 95 % CI | replica-h sim | live | "
             "rank sim / live | per-step p95 error median / worst (p95 of steps) | steps compared |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        within = {True: "yes", False: "no", None: "n/a (1 live run)"}[r.violations_within]
        lines.append(f"| {r.policy} | {r.sim_violations:.1f} ± {r.sim_violations_ci95:.1f} | "
                     f"{r.live_violations:.1f} ± {r.live_violations_ci95:.1f} | {within} | "
                     f"{r.sim_replica_hours:.3f} | {r.live_replica_hours:.3f} | {r.sim_rank} / {r.live_rank} | "
                     f"{r.p95_error_median:.0%} / {r.p95_error_worst:.0%} | {r.steps_compared} |")
    lines += ["", "| policy | live requests | failed, not as the program meant | orchestrator p95 vs Locust's "
              "(median per-step relative gap) | live steps with a missing signal |", "|---|---|---|---|---|"]
    window = (cfg_live.get("context") or {}).get("window_s")
    for r in t.itertuples():
        rate = "n/a" if r.live_failure_rate is None or pd.isna(r.live_failure_rate) else f"{r.live_failure_rate:.2%}"
        lines.append(f"| {r.policy} | {r.live_requests if r.live_requests is not None else 'n/a'} | {rate} | "
                     f"{r.orchestrator_vs_locust_p95:.1%} | {r.live_missing_steps} |")
    reasons: dict[str, int] = {}
    for agg in injector.values():
        for k, v in agg.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + int(v)
    if reasons:
        lines += ["", "Failure reasons (all policies): " + "; ".join(f"{k}: {v}" for k, v in sorted(
            reasons.items(), key=lambda kv: -kv[1])[:8])]
    lines += ["", "The orchestrator's p95 is over its context window (spans of the last "
              f"{window or 'preset'} s); Locust's is its current p95 over about the last 10 s, rounded to two "
              "significant digits: a gap between them is partly the windows."]
    same = len(t) and (t.sim_rank == t.live_rank).all()
    lines += ["", f"Ranking (by violations, then replica-hours): {'the same' if same else 'DIFFERENT'} on both.",
              "Intervals are mean ± a 95 % Student-t interval over runs (nan with one run).", "", "![twin](twin.png)"]
    (out / "twin.md").write_text("\n".join(lines) + "\n")
    return out / "twin.md"


def _plot(sim: pd.DataFrame, live: pd.DataFrame, path: Path, slo_ms) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = [p for p in live.policy.unique() if p in set(sim.policy)]
    fig, axes = plt.subplots(len(policies), 3, figsize=(14, 2.8 * max(len(policies), 1)), squeeze=False,
                             sharex=True)
    for i, policy in enumerate(policies):
        for name, frame, color in (("sim", sim, "C1"), ("live", live, "C0")):
            g = frame[frame.policy == policy].groupby("step")
            t = g.t_s.median() / 60.0
            axes[i, 0].plot(t, g.p95_ms.median(), color=color, lw=1, label=name)
            axes[i, 1].step(t, g.replicas.median(), where="post", color=color, lw=1.2, label=name)
            axes[i, 2].plot(t, g.rps.median(), color=color, lw=1, label=name)
        if slo_ms:
            axes[i, 0].axhline(float(slo_ms), color="grey", ls=":", lw=1, label="SLO")
        axes[i, 0].set_yscale("log")
        axes[i, 0].set_ylabel(f"{policy}\np95 (ms)")
        axes[i, 1].set_ylabel("ready replicas")
        axes[i, 2].set_ylabel("requests/s")
        axes[i, 0].legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle("simulator (orange) and live stack (blue), per step, median over runs")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
