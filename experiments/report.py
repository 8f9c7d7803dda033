"""Plots (PNG) and one self-contained HTML report for a run folder."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from experiments.config import load_config
from experiments.metrics import METRICS, format_table


def _timeline(steps: pd.DataFrame, run: int) -> pd.DataFrame:
    return steps[steps.run == run]


def plot_load(steps: pd.DataFrame, path: Path, run: int = 0) -> Path:
    g = _timeline(steps, run)
    first = g[g.policy == g.policy.iloc[0]]
    fig = Figure(figsize=(10, 3))
    ax = fig.subplots()
    ax.plot(first.t_s / 3600.0, first.users, color="black", lw=0.8)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("load (users or req/s)")
    ax.set_title(f"load, run {run}")
    fig.tight_layout()
    out = path / "load.png"
    fig.savefig(out, dpi=90)
    return out


def plot_replicas(steps: pd.DataFrame, path: Path, run: int = 0) -> Path:
    g = _timeline(steps, run)
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    for policy, p in g.groupby("policy", sort=False):
        ax.step(p.t_s / 3600.0, p.replicas, where="post", lw=0.9, label=policy)
    first = g[g.policy == g.policy.iloc[0]]
    if (first.oracle_replicas >= 0).all():
        ax.step(first.t_s / 3600.0, first.oracle_replicas, where="post", lw=0.8, ls=":", color="black",
                label="oracle level")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("ready replicas")
    ax.set_title(f"replicas, run {run}")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    out = path / "replicas.png"
    fig.savefig(out, dpi=90)
    return out


def plot_p95(steps: pd.DataFrame, path: Path, slo_ms: float, run: int = 0) -> list[Path]:
    g = _timeline(steps, run)
    outs = []
    for policy, p in g.groupby("policy", sort=False):
        fig = Figure(figsize=(10, 3))
        ax = fig.subplots()
        ax.plot(p.t_s / 3600.0, p.p95_ms, lw=0.7)
        ax.axhline(slo_ms, color="red", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("time (h)")
        ax.set_ylabel("p95 (ms)")
        ax.set_title(f"p95 against the SLO: {policy}, run {run}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(policy))
        out = path / f"p95-{safe}.png"
        fig.savefig(out, dpi=90)
        outs.append(out)
    return outs


def plot_tradeoff(summary: pd.DataFrame, path: Path) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for rec in summary.to_dict(orient="records"):
        x, y = rec["replica_hours"], rec["violations_per_run"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["ci95"], yerr=y["ci95"], fmt="o", capsize=3)
        ax.annotate(rec["policy"], (x["mean"], y["mean"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("replica-hours per run")
    ax.set_ylabel("SLO violations per run")
    ax.set_title("cost against SLO (mean ± 1.96 SE)")
    fig.tight_layout()
    out = path / "tradeoff.png"
    fig.savefig(out, dpi=90)
    return out


def _img(p: Path) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">'


#: How steps with missing signals are scored (stated in every report that has some).
GAP_RULE = ("A step whose outcome lacked a signal is a <i>gap</i>. Every gap is left out of the mean p95; a gap "
            "without spans while load was offered also counts as a violation (nothing to tell, never scored as "
            "fine); a stale or failed Prometheus sample does not. <code>missing_per_run</code> counts gaps; "
            "<code>steps.parquet</code> names the missing signals per step (<code>missing</code>).")


def gaps_html(steps: pd.DataFrame, path: Path) -> str:
    """The report's gap section: how many steps lacked which signal, per policy, the
    rule, and (live runs) the services restarted and the episodes that failed."""
    parts = []
    if "missing" in steps and (steps["missing"].str.len() > 0).any():
        gap = steps[steps["missing"].str.len() > 0]
        rows = "".join(f"<tr><td>{html.escape(str(pol))}</td><td>{html.escape(str(sig))}</td><td>{n}</td></tr>"
                       for (pol, sig), n in gap.groupby(["policy", "missing"], sort=False).size().items())
        parts.append(f"<h2>Gaps</h2><p>{GAP_RULE}</p><table><tr><th>policy</th><th>missing</th><th>steps</th></tr>"
                     f"{rows}</table>")
    services = path / "services.json"
    if services.exists():
        restarts = json.loads(services.read_text()).get("restarts", {})
        if any(restarts.values()):
            parts.append("<p><b>Services restarted during the run:</b> "
                         + html.escape(", ".join(f"{k} {v}" for k, v in restarts.items() if v)) + "</p>")
    failed = [p.parent.name for p in sorted(path.glob("parts/*/status.json"))
              if json.loads(p.read_text()).get("status") == "failed"]
    if failed:
        parts.append("<p><b>Episodes that failed</b> (their rows up to the failure are kept; "
                     f"<code>scalelab live run --resume</code> continues them): {html.escape(', '.join(failed))}</p>")
    return "".join(parts)


def write_report(path: Path, steps: pd.DataFrame | None = None, summary: pd.DataFrame | None = None,
                 cfg=None) -> Path:
    """Write the PNGs and ``report.html`` into the run folder ``path``."""
    path = Path(path)
    cfg = cfg or load_config(path / "config.yaml")
    steps = steps if steps is not None else pd.read_parquet(path / "steps.parquet")
    if summary is None:
        summary = pd.DataFrame(json.loads((path / "summary.json").read_text()))
    pngs = [plot_load(steps, path), plot_replicas(steps, path), plot_tradeoff(summary, path)]
    pngs += plot_p95(steps, path, cfg.slo_ms)
    rows = []
    for rec in summary.to_dict(orient="records"):
        cells = "".join(
            "<td>-</td>" if rec[m]["mean"] is None else f"<td>{rec[m]['mean']:.2f} ± {rec[m]['ci95']:.2f}</td>"
            for m in METRICS
        )
        rows.append(f"<tr><td>{html.escape(str(rec['policy']))}</td><td>{rec['runs']}</td>{cells}</tr>")
    head = "".join(f"<th>{m}</th>" for m in ("policy", "runs", *METRICS))
    never = [str(p) for p, g in steps.groupby("policy", sort=False) if (g["probability"] >= 1.0).all()]
    warning = ""
    if never:
        warning = ("<p><b>Off-policy evaluation:</b> these policies never explored (every logged propensity "
                   f"is 1): {html.escape(', '.join(never))}. Estimates of another policy's value from their "
                   "records (experiments.ope) are meaningless.</p>")
    warning += gaps_html(steps, path)
    versions = (path / "versions.json").read_text() if (path / "versions.json").exists() else "{}"
    command = (path / "command.txt").read_text() if (path / "command.txt").exists() else ""
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>scalelab: {html.escape(cfg.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}pre{{background:#f6f6f6;padding:8px}}</style>
</head><body><h1>scalelab run: {html.escape(cfg.name)}</h1>
<p>backend <b>{cfg.backend}</b>, workload <b>{html.escape(str(cfg.workload.get('kind')))}</b>, {cfg.runs} run(s),
seed {cfg.seed}, SLO {cfg.slo_ms:g} ms, step {cfg.step_seconds:g} s. Mean ± 1.96·SE over runs.</p>
<table><tr>{head}</tr>{''.join(rows)}</table>{warning}
<h2>Figures</h2>{''.join(_img(p) for p in pngs)}
<h2>Config</h2><pre>{html.escape((path / 'config.yaml').read_text())}</pre>
<h2>Command and versions</h2><pre>{html.escape(command)}\n{html.escape(versions[:4000])}</pre>
<pre>{html.escape(format_table(summary))}</pre>
</body></html>"""
    out = path / "report.html"
    out.write_text(doc)
    return out
