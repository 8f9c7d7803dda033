"""Figures and one self-contained HTML report for a run folder, and a comparison of
several run folders (``scalelab report A B ...``).

PNGs (for a paper; every policy keeps one colour, line style and marker everywhere,
from :func:`policy_styles`):

- ``tradeoff.png``  violations per run against replica-hours, mean and 95 % t-interval
  (clipped at 0), the front filled, labels placed so that they do not overlap;
- ``replicas.png``  small multiples: one panel per policy, its ready replicas against the
  oracle's level, averaged per time bin (a minute up to a day, so that a week stays
  readable);
- ``p95.png``       small multiples: per-bin median and maximum of the per-step p95
  against the SLO, and the violations per bin;
- ``zoom.png``      the hour around the workload's steepest rise (an exam start), step by
  step: replicas, the oracle's level, load and violations;
- ``load.png``      the offered load.

``report.html`` leads with the experiment and a glossary, ranks the policies (Pareto
front marked), and holds interactive figures (Plotly, its JavaScript inlined: hover,
zoom, click a legend entry to hide a policy, double-click to keep only it) that work
offline, then the PNGs, the gaps, the config and the versions.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from scalelab.experiments import runfolder
from scalelab.experiments.metrics import (
    COLUMNS,
    FRONT_RESAMPLES,
    ORACLE_TEXT,
    PARETO_TEXT,
    cell,
    conclusion,
    experiment_lines,
    interval,
    is_reference,
    metric_cell,
    pareto_ranks,
    ranked,
    steps_per_run,
    t95,
    with_pareto_ranks,
)

LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "*")
#: tab20 reordered: its 10 dark colours first, then their light twins
PALETTE = [colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]
#: time bins a timeline may use, s: the smallest giving at most MAX_BINS points
BINS_S = (5, 60, 300, 900, 3600, 4 * 3600, 86400)
MAX_BINS = 400


def policy_styles(policies) -> dict[str, dict]:
    """One colour, line style and marker per policy, in order (20 colours; the style and
    marker change with each round of colours, so no two of 80 policies look alike)."""
    out = {}
    for k, p in enumerate(dict.fromkeys(policies)):
        if is_reference(p):
            out[p] = {"color": "black", "ls": ":", "marker": "*"}
            continue
        out[p] = {"color": PALETTE[k % 20], "ls": LINESTYLES[(k // 20 + k) % 4], "marker": MARKERS[k % len(MARKERS)]}
    return out


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3]) if not isinstance(rgba, str) else rgba


def time_bin_s(duration_s: float, step_s: float) -> float:
    """The smallest bin of :data:`BINS_S` (at least one step) giving <= MAX_BINS bins."""
    for b in BINS_S:
        if b >= step_s and duration_s / b <= MAX_BINS:
            return float(b)
    return float(BINS_S[-1])


def _bin_label(bin_s: float) -> str:
    return {5: "5 s", 60: "minute", 300: "5 minutes", 900: "15 minutes", 3600: "hour", 14400: "4 hours",
            86400: "day"}.get(int(bin_s), f"{bin_s:g} s")


def binned(steps: pd.DataFrame, bin_s: float) -> pd.DataFrame:
    """Per policy and time bin, over every run: mean replicas, mean oracle level, mean load,
    q10, median, q90 and max of the per-step p95 (steps with spans), violations per run."""
    measured = steps["p95_ms"].where(steps["p95_ms"] > 0)  # a step with no span has no p95
    g = steps.assign(bin=(steps.t_s // bin_s) * bin_s, p95=measured)
    runs = max(int(steps.run.nunique()), 1)
    groups = g.groupby(["policy", "bin"], sort=False)
    out = groups.agg(
        replicas=("replicas", "mean"), oracle=("oracle_replicas", "mean"), users=("users", "mean"),
        p95_median=("p95", "median"), p95_max=("p95", "max"), violations=("violation", "sum"),
    )  # fmt: skip
    for name, q in (("p95_q10", 0.1), ("p95_q90", 0.9)):  # the grouped quantile (vectorised), as Series.quantile
        out.insert(3 if q < 0.5 else 5, name, groups["p95"].quantile(q))
    out = out.reset_index()
    out["violations"] = out["violations"] / runs
    out["hour"] = out["bin"] / 3600.0
    return out


def timeline_bins(steps: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The bin length a timeline of ``steps`` uses (:func:`time_bin_s`) and the binned
    frame (:func:`binned`); the report computes it once for every figure."""
    bin_s = time_bin_s(float(steps.t_s.max()) + 1, float(steps.t_s.diff().abs().median() or 5))
    return bin_s, binned(steps, bin_s)


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def _timeline_axes(n: int, title: str, ylabel: str):
    rows, cols = _grid(n)
    fig = Figure(figsize=(4.6 * cols, 1.75 * rows + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel("time (h)")
    for ax in axes[::cols]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    return fig, axes


def _policies(steps: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(steps.policy))


def plot_load(steps: pd.DataFrame, path: Path, run: int = 0) -> Path:
    """Writes :func:`load_figure` to ``path / "load.png"``."""
    out = path / "load.png"
    load_figure(steps, run).savefig(out, dpi=100)
    return out


def load_figure(steps: pd.DataFrame, run: int = 0) -> Figure:
    """The offered load of ``run`` (the first policy's steps), users or req/s per step."""
    first = steps[(steps.run == run) & (steps.policy == steps.policy.iloc[0])]
    fig = Figure(figsize=(10, 2.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(first.t_s / 3600.0, first.users, color="black", lw=0.8)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("load (users or req/s)")
    ax.set_title(f"offered load, run {run}")
    return fig


def plot_replicas(steps: pd.DataFrame, path: Path, styles: dict | None = None,
                  bins: tuple[float, pd.DataFrame] | None = None) -> Path:
    """Writes :func:`replicas_figure` to ``path / "replicas.png"``."""
    out = path / "replicas.png"
    replicas_figure(steps, styles, bins).savefig(out, dpi=100)
    return out


def replicas_figure(steps: pd.DataFrame, styles: dict | None = None,
                    bins: tuple[float, pd.DataFrame] | None = None) -> Figure:
    """Small multiples: each policy's ready replicas and the oracle's level, per bin
    (``bins``: :func:`timeline_bins` of ``steps``, computed if not given)."""
    styles = styles or policy_styles(_policies(steps))
    bin_s, b = bins or timeline_bins(steps)
    pols = _policies(steps)
    fig, axes = _timeline_axes(len(pols), f"ready replicas per policy (mean per {_bin_label(bin_s)}, all runs); "
                                          "grey: the oracle's level", "replicas")
    for ax, pol in zip(axes, pols, strict=False):
        p = b[b.policy == pol]
        if (p.oracle >= 0).all():
            ax.fill_between(p.hour, p.oracle, step="post", color="0.85", lw=0)
        st = styles[pol]
        ax.step(p.hour, p.replicas, where="post", color=st["color"], lw=1.1)
        ax.set_title(pol, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    return fig


def plot_p95(steps: pd.DataFrame, path: Path, slo_ms: float, styles: dict | None = None,
             bins: tuple[float, pd.DataFrame] | None = None) -> Path:
    """Writes :func:`p95_figure` to ``path / "p95.png"``."""
    out = path / "p95.png"
    p95_figure(steps, slo_ms, styles, bins).savefig(out, dpi=100)
    return out


def p95_figure(steps: pd.DataFrame, slo_ms: float, styles: dict | None = None,
               bins: tuple[float, pd.DataFrame] | None = None) -> Figure:
    """Small multiples: per-bin median and max of the per-step p95 against the SLO; the
    panel title gives the violations per run. The panels share one logarithmic range that
    holds every plotted value of every policy (and the SLO)."""
    styles = styles or policy_styles(_policies(steps))
    bin_s, b = bins or timeline_bins(steps)
    pols = _policies(steps)
    fig, axes = _timeline_axes(len(pols), f"per-step p95 per {_bin_label(bin_s)} (all runs): line the median, band "
                                          f"q10-q90, red dots the bins whose worst step broke the SLO ({slo_ms:g} ms, "
                                          "dashed)", "p95 (ms)")
    runs = max(int(steps.run.nunique()), 1)
    plotted = b[b.policy.isin(pols)][["p95_q10", "p95_median", "p95_q90", "p95_max"]].to_numpy(float)
    positive = plotted[np.isfinite(plotted) & (plotted > 0)]  # a log axis shows no 0 (a window with nothing)
    floor = max(1.0, 0.8 * float(positive.min())) if positive.size else 1.0
    top = float(slo_ms)
    for ax, pol in zip(axes, pols, strict=False):
        p = b[b.policy == pol]
        st = styles[pol]
        ax.fill_between(p.hour, p.p95_q10, p.p95_q90, step="post", color=st["color"], alpha=0.3, lw=0)
        ax.step(p.hour, p.p95_median, where="post", color=st["color"], lw=1.1)
        worst = p[p.p95_max > slo_ms]
        ax.plot(worst.hour, worst.p95_max, ".", color="red", ms=3)
        top = max(top, *(float(np.nanmax(c)) for c in (p.p95_q90, p.p95_median, worst.p95_max) if np.isfinite(c).any()))
        ax.axhline(slo_ms, color="red", ls="--", lw=0.9)
        v = float(steps[steps.policy == pol].violation.sum()) / runs
        ax.set_title(f"{pol}: {v:.1f} violations/run", fontsize=9, loc="left")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(floor, top * 1.3)  # shared: one range holding every panel's values
    for ax in axes[:len(pols)]:  # full numbers on the log axis (1,000 not 10^3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return fig


def steepest_rise(steps: pd.DataFrame, window_s: float = 900.0) -> float:
    """The time (s) where the load rises most over ``window_s``: an exam's start."""
    first = steps[(steps.run == steps.run.min()) & (steps.policy == steps.policy.iloc[0])]
    t, u = first.t_s.to_numpy(float), first.users.to_numpy(float)
    if len(t) < 2:
        return float(t[0]) if len(t) else 0.0
    lag = max(1, int(np.searchsorted(t, t[0] + window_s)))
    lag = min(lag, len(u) - 1)
    rise = u[lag:] - u[:-lag]
    return float(t[int(np.argmax(rise))])


def plot_zoom(steps: pd.DataFrame, path: Path, styles: dict | None = None, run: int = 0,
              before_s: float = 900.0, after_s: float = 2700.0) -> Path:
    """Writes :func:`zoom_figure` to ``path / "zoom.png"``."""
    out = path / "zoom.png"
    zoom_figure(steps, styles, run, before_s, after_s).savefig(out, dpi=100)
    return out


def zoom_figure(steps: pd.DataFrame, styles: dict | None = None, run: int = 0, before_s: float = 900.0,
                after_s: float = 2700.0) -> Figure:
    """Small multiples, step by step, of the hour around the steepest load rise: ready
    replicas, the oracle's level (grey), the load (on its own axis, right) and violations
    (red ticks)."""
    styles = styles or policy_styles(_policies(steps))
    at = steepest_rise(steps)
    lo, hi = max(at - before_s, float(steps.t_s.min())), min(at + after_s, float(steps.t_s.max()) + 1.0)
    z = steps[(steps.run == run) & (steps.t_s >= lo) & (steps.t_s < hi)]
    pols = _policies(steps)
    umax = float(z.users.max()) if len(z) and z.users.max() > 0 else 1.0
    top = float(max(z.replicas.max(), z.oracle_replicas.max(), 1)) if len(z) else 1.0
    fig, axes = _timeline_axes(len(pols), f"zoom on the steepest rise of the load: {lo / 3600:.2f} h to {hi / 3600:.2f} h "
                                          f"of run {run}, every step\ngrey: the oracle's level; thin black: the load "
                                          f"(its own axis, right; peak {umax:.0f}); red ticks: violations", "replicas")
    _, cols = _grid(len(pols))
    for k, (ax, pol) in enumerate(zip(axes, pols, strict=False)):
        p = z[z.policy == pol]
        h = p.t_s / 3600.0
        if (p.oracle_replicas >= 0).all():
            ax.fill_between(h, p.oracle_replicas, step="post", color="0.85", lw=0)
        load = ax.twinx()  # the load on its own axis, never on the replicas'
        load.plot(h, p.users, color="black", lw=0.6, alpha=0.7)
        load.set_ylim(-0.12 * umax, umax * 1.08)
        if k % cols == cols - 1 or k == len(pols) - 1:
            load.set_ylabel("load (users or req/s)", fontsize=8)
        st = styles[pol]
        ax.step(h, p.replicas, where="post", color=st["color"], lw=1.3)
        bad = p[p.violation.astype(bool)]
        ax.plot(bad.t_s / 3600.0, np.full(len(bad), -0.05 * top), "|", color="red", ms=7, mew=1.2)
        ax.set_ylim(-0.12 * top, top * 1.08)
        ax.set_title(pol, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    return fig


def _place_labels(ax, xs, ys, labels, fig) -> None:
    """Annotate points, trying offsets around each until its box overlaps no label placed
    and no marker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(fig).get_renderer()
    centres = ax.transData.transform(np.column_stack([xs, ys])) if len(xs) else np.zeros((0, 2))
    placed = [Bbox.from_bounds(cx - 5, cy - 5, 10, 10) for cx, cy in centres]
    offsets = [(6, 6), (6, -12), (-6, 6), (-6, -12), (10, 16), (10, -22), (-10, 16), (-10, -22), (16, 0), (-16, 0),
               (6, 28), (6, -34), (-6, 28), (-6, -34)]
    order = np.argsort(xs)
    for i in order:
        for k, (dx, dy) in enumerate(offsets):
            ha = "left" if dx >= 0 else "right"
            t = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                            ha=ha, va="center", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5}
                            if abs(dy) > 12 else None)
            box = t.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(box.overlaps(b) for b in placed) or k == len(offsets) - 1:
                placed.append(box)
                break
            t.remove()


def plot_tradeoff(summary: pd.DataFrame, path: Path, styles: dict | None = None, name: str = "tradeoff.png",
                  title: str | None = None) -> Path:
    """Writes :func:`tradeoff_figure` to ``path / name``."""
    out = path / name
    tradeoff_figure(summary, styles, title).savefig(out, dpi=100)
    return out


#: A "reaches 0" triangle sits this factor left of its point on a log cost axis.
REACHES_ZERO_OFFSET = 1.18


def drawn_intervals(rec: dict, log: bool) -> tuple[tuple[float, float], tuple[float, float], bool]:
    """The replica-hours and violations intervals of a summary row as the trade-off
    figures draw them: cut at 0; on a log cost axis (which has no 0) an interval reaching
    0 stops at its mean, and the third value says so (a triangle marks it)."""
    (x0, x1), (y0, y1) = interval(rec["replica_hours"]), interval(rec["violations_per_run"])
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    reaches = bool(log and x0 <= 0)
    return ((rec["replica_hours"]["mean"] if reaches else x0, x1), (y0, y1), reaches)


def tradeoff_figure(summary: pd.DataFrame, styles: dict | None = None, title: str | None = None) -> Figure:
    """Violations per run against replica-hours: mean and 95 % t-interval (clipped at
    0), one marker and colour per policy, the front filled. On a log cost axis an
    interval reaching 0 is drawn down to its mean only, with a left triangle saying so;
    the axes hold every interval's ends; the markers are drawn over every bar."""
    summary = with_pareto_ranks(summary) if "pareto_rank" not in summary else summary
    styles = styles or policy_styles(summary.policy)
    fig = Figure(figsize=(11, 7), layout="constrained")
    ax = fig.subplots()
    rows = [r for r in summary.to_dict(orient="records")
            if r["replica_hours"]["mean"] is not None and r["violations_per_run"]["mean"] is not None]
    xs = [r["replica_hours"]["mean"] for r in rows]
    ys = [r["violations_per_run"]["mean"] for r in rows]
    labels = [r["policy"] for r in rows]
    log = _log_worthy(xs)
    ends: list[float] = []
    reaches_zero = False
    for rec, x, y in zip(rows, xs, ys, strict=True):
        st = styles.get(rec["policy"], {"color": "grey", "marker": "o"})
        (x0, x1), (y0, y1), reaches = drawn_intervals(rec, log)
        if reaches:
            reaches_zero = True
            ax.plot(x / REACHES_ZERO_OFFSET, y, "<", color=st["color"], ms=5, zorder=3)
        ends += [x0, x1]
        ax.errorbar(x, y, xerr=[[x - x0], [x1 - x]], yerr=[[y - y0], [y1 - y]], fmt="none", ecolor=st["color"],
                    capsize=3, lw=1, zorder=2)
    for rec, x, y in zip(rows, xs, ys, strict=True):  # markers over every bar: a point at 0 is never hidden
        st = styles.get(rec["policy"], {"color": "grey", "marker": "o"})
        ax.plot(x, y, st["marker"], color=st["color"], ms=8, zorder=4, label=rec["policy"],
                mfc="white" if rec.get("pareto_rank") not in (1,) else st["color"])
    if reaches_zero:
        ax.plot([], [], "<", color="black", ms=5, label="interval reaches 0 (not drawable on a log axis)")
    ax.plot([], [], "o", color="black", ms=8, label="filled: the front (no policy beats it beyond the intervals)")
    ax.set_xlabel("replica-hours per run (cost)")
    ax.set_ylabel("SLO violations per run")
    top = max([1.0, *(interval(r["violations_per_run"])[1] for r in rows)])
    ax.set_ylim(-0.03 * top, top * 1.08)  # a point at 0 sits above the frame, not on it
    _cost_axis(ax, xs, [e for e in ends if e > 0] if log else ends, log)
    ax.grid(alpha=0.3)
    runs = int(summary.runs.max()) if len(summary) else 1
    ax.set_title(title or f"cost against SLO violations: mean and 95 % interval over {runs} runs\nfilled: the "
                          "front (no policy beats it on both axes beyond the intervals)", fontsize=10)
    ax.legend(fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _place_labels(ax, np.array(xs), np.array(ys), labels, fig)
    return fig


def plot_comparison(table: pd.DataFrame, keys: list[str], path: Path) -> Path:
    """:func:`comparison_figure`, saved as ``path/comparison.png``."""
    out = path / "comparison.png"
    comparison_figure(table, keys).savefig(out, dpi=100)
    return out


def comparison_figure(table: pd.DataFrame, keys: list[str]) -> Figure:
    """Run folders compared: one colour per policy, one marker per folder (the key's
    letter), each policy's points joined in folder order, labelled once. Violations on a
    symmetric-log axis (linear below 1) when they spread over more than 100 times, so
    that one architecture's thousands do not flatten the others' tens to 0."""
    styles = policy_styles(table.base_policy)
    fig = Figure(figsize=(11, 7), layout="constrained")
    ax = fig.subplots()
    xs, ys, labels, every_x = [], [], [], []
    for pol, g in table.groupby("base_policy", sort=False):
        px = [r["mean"] for r in g.replica_hours]
        every_x += px
        py = [r["mean"] for r in g.violations_per_run]
        color = styles[pol]["color"]
        ax.plot(px, py, color=color, lw=0.8, alpha=0.7)
        for k, (x, y, key) in enumerate(zip(px, py, g.folder, strict=True)):
            ax.plot(x, y, MARKERS[keys.index(key) % len(MARKERS)], color=color, ms=8,
                    mfc=color if k == len(px) - 1 else "white")
        xs.append(px[-1])
        ys.append(py[-1])
        labels.append(str(pol))
    for k, key in enumerate(keys):
        ax.plot([], [], MARKERS[k % len(MARKERS)], color="black", mfc="white", label=key)
    ax.set_xlabel("replica-hours per run (cost)")
    ax.set_ylabel("SLO violations per run")
    every_y = [r["mean"] for r in table.violations_per_run]
    positive = [y for y in every_y if y > 0]
    if positive and max(positive) > 100 * max(min(positive), 1.0):
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(0 if len(positive) < len(every_y) else min(positive) / 2, max(positive) * 2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v)))
        ax.set_ylabel("SLO violations per run, symmetric log scale (linear below 1)")
    else:
        ax.set_ylim(bottom=0)
    _cost_axis(ax, every_x, every_x, _log_worthy(every_x))
    ax.grid(alpha=0.3)
    ax.legend(title="folder", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("run folders compared: each policy's mean per folder, joined in folder order (filled: the last)",
                 fontsize=10)
    _place_labels(ax, np.array(xs), np.array(ys), labels, fig)
    return fig


def _log_worthy(xs) -> bool:
    """A log cost axis when the costs spread over more than 4x."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 4


def _cost_axis(ax, xs, ends, log: bool) -> None:
    """The cost axis: linear from 0, or logarithmic with plain ticks (:func:`_log_worthy`);
    either way wide enough for ``ends`` (the intervals' drawn ends)."""
    if not log:
        hi = max([*xs, *ends]) if xs else 0
        ax.set_xlim(0, hi * 1.08 if hi > 0 else None)
        return
    ax.set_xscale("log")
    ax.set_xlim(min([*xs, *ends]) / 1.3, max([*xs, *ends]) * 1.3)
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel(ax.get_xlabel() + ", log scale")


def plain_log_ticks(axis) -> None:
    """Ticks of a logarithmic ``axis`` (``ax.xaxis`` or ``ax.yaxis``, limits already set)
    at 1, 2, 3 and 5 times the powers of ten inside its limits, written as full numbers
    (``300``, not ``3×10²``), and no minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    axis.set_ticks(log_ticks(lo, hi))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v)))
    axis.set_minor_formatter(NullFormatter())


def _img(p: Path) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(p.name)}</figcaption></figure>'


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
    services = runfolder.read_text(path, "services.json")
    if services:
        restarts = json.loads(services).get("restarts", {})
        if any(restarts.values()):
            parts.append("<p><b>Services restarted during the run:</b> "
                         + html.escape(", ".join(f"{k} {v}" for k, v in restarts.items() if v)) + "</p>")
    failed = runfolder.failed_parts(path)
    if failed:
        parts.append("<p><b>Episodes that failed</b> (their rows up to the failure are kept; "
                     f"<code>scalelab live run --resume</code> continues them): {html.escape(', '.join(failed))}</p>")
    return "".join(parts)


# -- interactive figures (Plotly, JavaScript inlined once) ----------------------------


def _plotly_divs(figures: list) -> list[str]:
    """HTML of Plotly figures; the first carries plotly.js inlined (offline, no CDN)."""
    return [f.to_html(full_html=False, include_plotlyjs=(k == 0), config={"displaylogo": False})
            for k, f in enumerate(figures)]


#: matplotlib's markers (:data:`MARKERS`) under plotly's names, so both figures mark a policy alike
PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down",
                  "P": "cross", "X": "x", "h": "hexagon", "<": "triangle-left", ">": "triangle-right",
                  "p": "pentagon", "*": "star"}


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 3 and 5 times the powers of ten in ``[lo, hi]`` (``lo > 0``): a log axis's
    ticks, written as full numbers by :func:`plain_log_ticks` and the interactive figures."""
    return [t for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in (1, 2, 3, 5)
            if lo <= (t := m * 10.0**e) <= hi]


def _tick_text(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def interactive_tradeoff(summary: pd.DataFrame, styles: dict, group: pd.Series | None = None):
    """Violations per run against replica-hours, as :func:`tradeoff_figure`: each policy
    its colour and marker (filled on the front), its interval cut at 0.
    No text on the points (names overlapped where policies sit close): the legend
    names each marker, and hovering gives the figures. A spread cost axis is logarithmic
    with full-number ticks; both axes hold every interval's ends."""
    import plotly.graph_objects as go

    summary = with_pareto_ranks(summary) if "pareto_rank" not in summary else summary
    fig = go.Figure()
    log = _log_worthy([r["mean"] for r in summary.replica_hours if r["mean"] is not None])
    xs, x_ends, y_ends, reach = [], [], [0.0], []
    for rec in summary.to_dict(orient="records"):
        x, y = rec["replica_hours"], rec["violations_per_run"]
        if x["mean"] is None or y["mean"] is None:
            continue
        st = styles.get(rec["policy"], {"color": "grey", "marker": "o"})
        front = rec.get("pareto_rank") == 1
        (x0, x1), (y0, y1), reaches = drawn_intervals(rec, log)
        if reaches:
            reach.append((x["mean"] / REACHES_ZERO_OFFSET, y["mean"], _hex(st["color"])))
        xs.append(x["mean"])
        x_ends += [x0, x1]
        y_ends.append(y1)
        hover = (f"<b>{html.escape(str(rec['policy']))}</b><br>violations/run {cell(y, 1)}"
                 f"<br>replica-h {cell(x)}<br>p95 {rec['p95_ms']['mean'] or 0:.0f} ms"
                 f"<br>changes/run {rec['scale_changes_per_run']['mean']:.1f}<br>pareto rank "
                 f"{rec.get('pareto_rank') or 'ref'}")
        symbol = PLOTLY_SYMBOLS.get(st.get("marker", "o"), "circle")
        fig.add_trace(go.Scatter(
            x=[x["mean"]], y=[y["mean"]], mode="markers", name=str(rec["policy"]),
            hovertemplate=hover + "<extra></extra>",
            marker={"size": 11, "color": _hex(st["color"]), "symbol": symbol if front else f"{symbol}-open",
                    "line": {"width": 2, "color": _hex(st["color"])}},
            error_x={"type": "data", "symmetric": False, "array": [x1 - x["mean"]], "arrayminus": [x["mean"] - x0]},
            error_y={"type": "data", "symmetric": False, "array": [y1 - y["mean"]], "arrayminus": [y["mean"] - y0]},
        ))  # fmt: skip
    if reach:
        fig.add_trace(go.Scatter(x=[r[0] for r in reach], y=[r[1] for r in reach], mode="markers",
                                 marker={"symbol": "triangle-left", "size": 7, "color": [r[2] for r in reach]},
                                 name="interval reaches 0 (not drawable on a log axis)", hoverinfo="skip"))
    fig.update_layout(title="violations per run against replica-hours (filled: the front, which no policy beats "
                            "beyond the intervals on both axes; bars: 95 % intervals)", height=560, template="plotly_white",
                      xaxis_title="replica-hours per run", yaxis_title="SLO violations per run")
    top = max(y_ends)
    fig.update_yaxes(range=[-0.03 * max(top, 1.0), max(top, 1.0) * 1.08])  # a point at 0 is inside, not on the edge
    if log:  # spread costs: log axis, as the PNG
        lo, hi = min([*xs, *(e for e in x_ends if e > 0)]) / 1.3, max([*xs, *x_ends]) * 1.3
        ticks = log_ticks(lo, hi)
        fig.update_xaxes(type="log", title="replica-hours per run (log scale)", range=[math.log10(lo), math.log10(hi)],
                         tickvals=ticks, ticktext=[_tick_text(t) for t in ticks])
    elif xs:
        fig.update_xaxes(range=[0.0, max([*xs, *x_ends]) * 1.08 or 1.0])
    return fig


def interactive_timelines(steps: pd.DataFrame, styles: dict, slo_ms: float,
                          bins: tuple[float, pd.DataFrame] | None = None):
    """Replicas and p95 per time bin (the PNGs' bins), every policy; a legend click
    hides a policy in both panels, and a menu shows one policy alone (with the load, the
    oracle's level and the SLO, which every view keeps). The p95 axis is logarithmic with
    full-number ticks."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bin_s, b = bins or timeline_bins(steps)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.45, 0.4, 0.15],
                        subplot_titles=(f"ready replicas (mean per {_bin_label(bin_s)}, all runs)",
                                        f"per-step p95, median per {_bin_label(bin_s)} (ms, log); dashed: SLO",
                                        "load"))
    first = True
    owner: list[str | None] = []  # per trace: its policy, or None for what every view keeps
    for pol in _policies(steps):
        p = b[b.policy == pol]
        color = _hex(styles[pol]["color"])
        dash = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}[styles[pol]["ls"]]
        fig.add_trace(go.Scatter(x=p.hour, y=p.replicas, name=str(pol), legendgroup=str(pol), line={"color": color,
                                 "dash": dash, "shape": "hv", "width": 1.4}), row=1, col=1)
        fig.add_trace(go.Scatter(x=p.hour, y=p.p95_median, name=str(pol), legendgroup=str(pol),
                                 showlegend=False, line={"color": color, "dash": dash, "shape": "hv", "width": 1.1}),
                      row=2, col=1)
        owner += [str(pol), str(pol)]
        if first:
            fig.add_trace(go.Scatter(x=p.hour, y=p.users, name="load", line={"color": "black", "width": 1}),
                          row=3, col=1)
            owner.append(None)
            if (p.oracle >= 0).all():
                fig.add_trace(go.Scatter(x=p.hour, y=p.oracle, name="oracle level", line={"color": "grey", "width": 1,
                                         "dash": "dot", "shape": "hv"}), row=1, col=1)
                owner.append(None)
            first = False
    fig.add_hline(y=slo_ms, line_dash="dash", line_color="red", row=2, col=1)
    fig.update_yaxes(type="log", tickformat=",.0f", row=2, col=1)
    views = [("all policies", None), *((pol, pol) for pol in dict.fromkeys(o for o in owner if o is not None))]
    fig.update_layout(updatemenus=[{
        "type": "dropdown", "x": 1.0, "xanchor": "right", "y": 1.06, "yanchor": "bottom",
        "buttons": [{"label": label, "method": "restyle",
                     "args": [{"visible": [who is None or pol is None or who == pol for who in owner]}]}
                    for label, pol in views]}])
    fig.update_xaxes(title_text="time (h)", row=3, col=1)
    fig.update_layout(height=820, template="plotly_white", hovermode="x unified",
                      legend={"title": "click: hide; double-click: only this"})
    return fig


# -- the report ------------------------------------------------------------------------


def summary_table_html(summary: pd.DataFrame, label: str = "policy") -> str:
    """The ranked summary as an HTML table, the front marked ★."""
    heads = ["pareto", "front share", label, "runs", *(h for _, h, _ in COLUMNS), "dominated by"]
    rows = []
    for rec in ranked(summary).to_dict(orient="records"):
        rank = rec.get("pareto_rank")
        mark = "ref" if rank is None or rank != rank else f"{int(rank)}{' ★' if rank == 1 else ''}"
        share = rec.get("front_share")
        share = "-" if share is None or share != share else f"{100 * share:.0f} %"
        cells = "".join(f"<td>{metric_cell(rec[m], m)}</td>" for m, _, _ in COLUMNS)
        style = ' class="front"' if rank == 1 else ""
        by = html.escape(str(rec.get("dominated_by") or ""))
        rows.append(f"<tr{style}><td>{mark}</td><td>{share}</td><td>{html.escape(str(rec['policy']))}</td>"
                    f"<td>{rec['runs']}</td>{cells}<td>{by}</td></tr>")
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr>{''.join(rows)}</table>"


def glossary_html(slo_ms: float | None) -> str:
    items = [(h, t + (f" (SLO {slo_ms:g} ms)" if h == "violations/run" and slo_ms else "")) for _, h, t in COLUMNS]
    items.append(("pareto", PARETO_TEXT.split(": ", 1)[1]))
    items.append(("dominated by", "the policies that beat it: no worse on both means, and better beyond the 95 % "
                                  "intervals on at least one axis (empty on the front)"))
    items.append(("front share", f"the share of {FRONT_RESAMPLES} bootstrap resamples of the runs (each policy's runs "
                                 "drawn with replacement) in which the policy's means are on the front of the means"))
    items.append(("±", "a 95 % Student-t interval over runs: t(0.975, runs − 1) · SD / √runs"))
    items.append(("[low, high]", "that interval where it would leave the quantity's range, cut there (a count is "
                                 "not below 0, a share not above 1, replicas not above max_replicas): the true mean "
                                 "lies in the range, so the cut interval keeps the coverage"))
    return "<dl>" + "".join(f"<dt>{html.escape(h)}</dt><dd>{html.escape(t)}</dd>" for h, t in items) + "</dl>"


STYLE = """body{font-family:sans-serif;max-width:1250px;margin:auto;padding:0 12px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}tr.front td{background:#eef7ee}img{max-width:100%}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;
font-size:13px}dt{font-weight:bold}dd{margin:0}figure{margin:14px 0}figcaption{font-size:12px;color:#666}
.lead{background:#f3f6fb;padding:8px 12px;border-left:4px solid #4a76b8}"""


def write_report(path: Path, steps: pd.DataFrame | None = None, summary: pd.DataFrame | None = None,
                 cfg=None) -> Path:
    """Write the PNGs and ``report.html`` into the run folder ``path``
    (:mod:`scalelab.experiments.runfolder`; its steps, summary and config are read from
    it unless given)."""
    path = Path(path)
    cfg = cfg or runfolder.read_config(path)
    steps = steps if steps is not None else runfolder.read_steps(path)
    if summary is None:
        summary = runfolder.read_summary(path)
    summary = with_pareto_ranks(summary)
    for old in path.glob("p95-*.png"):  # one file per policy before; p95.png holds them all now
        old.unlink()
    styles = policy_styles(_policies(steps))
    bins = timeline_bins(steps)  # once, for the PNGs and the interactive timelines
    pngs = [plot_tradeoff(summary, path, styles), plot_replicas(steps, path, styles, bins),
            plot_p95(steps, path, cfg.slo_ms, styles, bins), plot_zoom(steps, path, styles), plot_load(steps, path)]
    interactive = _plotly_divs([interactive_tradeoff(summary, styles),
                                interactive_timelines(steps, styles, cfg.slo_ms, bins)])
    lead = "<br>".join(html.escape(line) for line in experiment_lines(cfg, steps_per_run(steps),
                                                                      int(summary.runs.max())))
    front = [f"<b>{html.escape(str(r['policy']))}</b> ({r['violations_per_run']['mean']:.1f} violations, "
             f"{r['replica_hours']['mean']:.2f} replica-h)" for r in ranked(summary).to_dict(orient="records")
             if r.get("pareto_rank") == 1]
    oracle = f"<p>{html.escape(ORACLE_TEXT)}</p>" if any(is_reference(p) for p in summary.policy) else ""
    never = [str(p) for p, g in steps.groupby("policy", sort=False) if (g["probability"] >= 1.0).all()]
    warning = ""
    if never:
        warning = ("<p><b>Off-policy evaluation:</b> these policies never explored (every logged propensity "
                   f"is 1): {html.escape(', '.join(never))}. Estimates of another policy's value from their "
                   "records (scalelab.experiments.ope) are meaningless.</p>")
    warning += gaps_html(steps, path)
    versions = runfolder.read_text(path, runfolder.VERSIONS, "{}")
    command = runfolder.read_text(path, runfolder.COMMAND)
    plugins = runfolder.read_text(path, runfolder.PLUGINS)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>scalelab: {html.escape(cfg.name)}</title>
<style>{STYLE}</style></head><body><h1>scalelab run: {html.escape(cfg.name)}</h1>
<p class="lead">{lead}</p>
<h2>Results, ranked</h2>
<p class="conclusion">{html.escape(conclusion(summary))}</p>
<p>The front (no policy beats these on violations and replica-hours beyond the intervals): {'; '.join(front) or 'none'}.</p>
{summary_table_html(summary)}
<h3>What the columns mean</h3>{glossary_html(cfg.slo_ms)}{oracle}{warning}
<h2>Interactive figures</h2><p>Hover for values, drag to zoom (double-click resets), click a policy in a legend
to hide it, double-click to show it alone.</p>{''.join(interactive)}
<h2>Figures (PNG, in the run folder)</h2>{''.join(_img(p) for p in pngs)}
<h2>Config</h2><pre>{html.escape(runfolder.read_text(path, runfolder.CONFIG))}</pre>
{f'<h2>Imported from outside scalelab</h2><pre>{html.escape(plugins)}</pre>' if plugins else ''}
<h2>Command and versions</h2><pre>{html.escape(command)}\n{html.escape(versions[:4000])}</pre>
</body></html>"""
    out = path / "report.html"
    out.write_text(doc)
    return out


# -- several run folders ----------------------------------------------------------------


def folder_summary(folder: Path) -> tuple[object, pd.DataFrame]:
    """A run folder's config (its plug-ins restored) and summary (``summary.json``)."""
    folder = Path(folder)
    for need in (runfolder.CONFIG, runfolder.SUMMARY_JSON):
        if not (folder / need).is_file():
            from scalelab.experiments.config import ConfigError

            raise ConfigError(f"report: {str(folder)!r} has no {need}; is it a finished run folder?")
    return runfolder.read_config(folder), runfolder.read_summary(folder)


def write_comparison(folders: list[Path], out: Path) -> Path:
    """Compare run folders in one report (``comparison.html``, ``comparison.csv``,
    ``comparison.png``): every (folder, policy) in one ranked table and one trade-off
    plot, with what differs between the configs."""
    from scalelab.experiments.twin import config_differences

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(f).name for f in folders]
    keys = [chr(ord("A") + k) if k < 26 else f"F{k}" for k in range(len(folders))]
    frames, cfgs = [], []
    for key, folder in zip(keys, folders, strict=True):
        cfg, summary = folder_summary(Path(folder))
        cfgs.append(cfg)
        frames.append(summary.assign(base_policy=summary.policy, policy=[f"{key} {p}" for p in summary.policy],
                                     folder=key))
    table = with_pareto_ranks(pd.concat(frames, ignore_index=True))
    styles = policy_styles(table.policy)
    png = plot_comparison(table, keys, out)
    flat = []
    for rec in table.to_dict(orient="records"):
        row = {"folder": names[keys.index(rec["folder"])], "key": rec["folder"], "policy": rec["base_policy"],
               "runs": rec["runs"], "pareto_rank": rec["pareto_rank"]}
        for m, _, _ in COLUMNS:
            row[f"{m}_mean"], row[f"{m}_ci95"] = rec[m]["mean"], rec[m]["ci95"]
            row[f"{m}_low"], row[f"{m}_high"] = interval(rec[m])
        flat.append(row)
    pd.DataFrame(flat).to_csv(out / "comparison.csv", index=False)
    base = cfgs[0].to_dict()
    diffs = []
    for key, cfg in zip(keys[1:], cfgs[1:], strict=True):
        d = config_differences(base, cfg.to_dict())
        backend = "" if cfg.backend == cfgs[0].backend else f" (backend {cfgs[0].backend} -> {cfg.backend})"
        diffs.append(f"<li><b>A</b> → <b>{key}</b>{html.escape(backend)}: "
                     + (html.escape("; ".join(map(str, d))) if d else "the same experiment otherwise") + "</li>")
    leads = "".join(f"<p class='lead'><b>{k}: {html.escape(n)}</b><br>" + "<br>".join(
        html.escape(x) for x in experiment_lines(c, runs=c.runs)) + "</p>"
        for k, n, c in zip(keys, names, cfgs, strict=True))
    caveat = ("" if all(c.slo_ms == cfgs[0].slo_ms and c.workload == cfgs[0].workload for c in cfgs) else
              "<p><b>The folders ran different workloads or SLOs:</b> their violations and costs are not on one "
              "scale; the ranking across them is only indicative.</p>")
    div = _plotly_divs([interactive_tradeoff(table, styles)])[0]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>scalelab: comparison</title>
<style>{STYLE}</style></head><body><h1>scalelab: {len(folders)} run folders compared</h1>{leads}
<h2>What differs</h2><ul>{''.join(diffs) or '<li>one folder</li>'}</ul>{caveat}
<h2>Every policy of every folder, ranked</h2>{summary_table_html(table, label="folder policy")}
<h3>What the columns mean</h3>{glossary_html(cfgs[0].slo_ms)}
<h2>Interactive</h2>{div}<h2>PNG</h2>{_img(png)}</body></html>"""
    (out / "comparison.html").write_text(doc)
    return out / "comparison.html"


__all__ = [
    "binned",
    "pareto_ranks",
    "plot_load",
    "plot_p95",
    "plot_replicas",
    "plot_tradeoff",
    "plot_zoom",
    "policy_styles",
    "t95",
    "time_bin_s",
    "write_comparison",
    "write_report",
]
