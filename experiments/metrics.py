"""The paper-format summary: per policy, mean ± 1.96·SE over runs.

Per run (one policy, one run), from its steps:

Every figure is read off each step's **outcome** (``agent.loop``: in ``period`` mode the
observation one step after the order, in ``settle`` mode the one after the order took
effect):

violations_per_run     steps whose outcome breaks the SLO: p95 above it (where nothing
                       completed, the p95 of the in-flight requests' ages), or no spans
forced_ups_per_run     steps whose action a rule imposed (the paper's +1 above the SLO)
missing_per_run        steps whose outcome lacked a signal (spans or metrics)
p95_ms                 mean over steps of the outcome's p95 (steps with no spans left out), ms
replicas               mean over steps of the ready replicas
replica_hours          sum over steps of ready replicas × step length, replica-hours
scale_changes_per_run  steps whose ordered replica count differs from the previous one
regret_replicas        mean over steps of (ready replicas − oracle replicas); NaN with no
                       oracle. Positive: over-provisioned; negative: under.
client_p95_ms          live runs only: mean of the load generator's own p95 (Locust's, over
                       its last ~10 s), ms, over the steps where both it and the spans
                       measured something;
p95_vs_client          live runs only: mean span p95 over those same steps / client_p95_ms
                       (1.0 when the orchestrator's p95 is what the users saw).

Each becomes ``{"mean": m, "ci95": 1.96 * std(ddof=1) / sqrt(runs)}`` (ci95 = 0 for
one run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = (
    "violations_per_run", "p95_ms", "replicas", "replica_hours", "scale_changes_per_run",
    "regret_replicas", "forced_ups_per_run", "missing_per_run",
)  # fmt: skip


def per_run(steps: pd.DataFrame, step_seconds: float) -> pd.DataFrame:
    """One row per (policy, run) with the raw metrics."""
    rows = []
    for (policy, run), g in steps.groupby(["policy", "run"], sort=False):
        target = g["target_replicas"].to_numpy()
        has_oracle = bool((g["oracle_replicas"] >= 0).all())
        rows.append({
            "policy": policy,
            "run": run,
            "violations_per_run": float(g["violation"].sum()),
            "p95_ms": float(g["p95_ms"][g["missing"].str.len() == 0].mean()) if "missing" in g else float(g["p95_ms"].mean()),
            "replicas": float(g["replicas"].mean()),
            "replica_hours": float(g["replicas"].sum() * step_seconds / 3600.0),
            "scale_changes_per_run": float(np.count_nonzero(np.diff(target))),
            "regret_replicas": float((g["replicas"] - g["oracle_replicas"]).mean()) if has_oracle else np.nan,
            "forced_ups_per_run": float(g["forced"].sum()) if "forced" in g else 0.0,
            "missing_per_run": float((g["missing"].str.len() > 0).sum()) if "missing" in g else 0.0,
            **(_client_p95(g) if "client_p95_ms" in g and g["client_p95_ms"].notna().any() else {}),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _client_p95(g: pd.DataFrame) -> dict:
    both = g["client_p95_ms"].notna() & (g["spans"] > 0)
    client = float(g["client_p95_ms"][both].mean()) if both.any() else np.nan
    return {"client_p95_ms": client, "p95_vs_client": float(g["p95_ms"][both].mean()) / client}


def mean_ci(values: np.ndarray) -> dict:
    """``{"mean", "ci95"}`` of per-run values (NaN-aware)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": None, "ci95": None}
    ci = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "ci95": float(ci)}


def summarize(steps: pd.DataFrame, cfg) -> pd.DataFrame:
    """One row per policy (config order): ``policy, runs`` and each metric as a dict."""
    runs = per_run(steps, cfg.step_seconds)
    order = [p.display for p in cfg.policies]
    rows = []
    for policy in order:
        g = runs[runs.policy == policy]
        if g.empty:
            continue
        metrics = (*METRICS, "client_p95_ms", "p95_vs_client") if "p95_vs_client" in runs else METRICS
        rows.append({"policy": policy, "runs": len(g), **{m: mean_ci(g[m].to_numpy()) for m in metrics}})
    return pd.DataFrame(rows)


def format_table(summary: pd.DataFrame) -> str:
    """A fixed-width text table of the summary (mean ± ci95)."""
    heads = ["policy", "runs", "violations/run", "p95 ms", "replicas", "replica-h", "changes/run", "regret",
             "forced-ups/run", "missing/run"]
    lines = []
    for rec in summary.to_dict(orient="records"):
        cells = [str(rec["policy"]), str(rec["runs"])]
        for m in METRICS:
            v = rec[m]
            if v["mean"] is None:
                cells.append("-")
            else:
                digits = 0 if m == "p95_ms" else 1 if m.endswith("_per_run") and m != "scale_changes_per_run" else 2
                cells.append(f"{v['mean']:.{digits}f} ± {v['ci95']:.{digits}f}")
        lines.append(cells)
    widths = [max(len(h), *(len(r[k]) for r in lines)) for k, h in enumerate(heads)]
    out = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    return "\n".join(out)
