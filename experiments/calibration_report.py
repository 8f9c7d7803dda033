"""Calibration reports: the numbers of :mod:`scalelab.simulator.calibration` and
:func:`scalelab.simulator.validation.validate` as tables, lines of text and figures
(``scalelab calibrate`` prints and draws them).

Three comparisons:

- **means** -- the simulator against the paper's table of per-cell mean p95
  (:func:`means_lines`, :func:`write_means`);
- **samples** -- the simulator against measured p95 samples per cell, the paper's D1
  (:func:`paper_samples`) or a recorded dataset (:func:`dataset_samples`): quantiles and
  the fraction above the SLO (:func:`sample_lines`, :func:`write_samples`);
- **fluid** -- the fluid engine against the discrete-event one on
  :func:`scalelab.simulator.validation.utilisation_cells` (4 to 400 replicas, 0.2 to 0.9
  utilisation) for every demand kind (:func:`fluid_against_des`),
  judged by the acceptance bands :data:`FLUID_BANDS` (:func:`check_bands`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scalelab.experiments.report import plain_log_ticks
from scalelab.simulator.calibration import (
    CalibrationResult,
    MeasuredCpu,
    SampleCalibration,
    field_value,
    fit_spread,
    near_best,
    sample_loss,
    simulated_cpu_s,
)
from scalelab.simulator.models import AppProfile


@dataclass(frozen=True)
class Bands:
    """Acceptance bands of the fluid engine against the discrete-event one: a cell is
    ``within`` when ``|fluid p95 / des p95 - 1| <= p95`` and ``|fluid RPS / des RPS - 1|
    <= rps``; only cells below ``max_utilization`` are ``checked`` (nearer saturation
    the p95 of a finite run grows with its length, so no steady state is the answer)."""

    p95: float = 0.15
    rps: float = 0.05
    max_utilization: float = 0.9


#: The bands ``scalelab calibrate --engine fluid`` reports against.
FLUID_BANDS = Bands()


def check_bands(rows: pd.DataFrame, bands: Bands = FLUID_BANDS) -> pd.DataFrame:
    """``rows`` (columns ``des_p95_ms, fluid_p95_ms, des_rps, fluid_rps, utilization``)
    with the relative errors ``p95_error`` and ``rps_error`` (fluid against des) and the
    flags ``checked`` (below the utilisation bound) and ``within`` (inside both bands).

    >>> t = check_bands(pd.DataFrame({"des_p95_ms": [100.0, 100.0], "fluid_p95_ms": [110.0, 130.0],
    ...                               "des_rps": [10.0, 10.0], "fluid_rps": [10.2, 10.0], "utilization": [0.5, 0.95]}))
    >>> t[["p95_error", "checked", "within"]].round(3).to_dict("list")
    {'p95_error': [0.1, 0.3], 'checked': [True, False], 'within': [True, False]}
    """
    t = rows.copy()
    t["p95_error"] = t.fluid_p95_ms / t.des_p95_ms - 1
    t["rps_error"] = t.fluid_rps / t.des_rps - 1
    t["checked"] = t.utilization < bands.max_utilization
    t["within"] = (t.p95_error.abs() <= bands.p95) & (t.rps_error.abs() <= bands.rps)
    return t


def fluid_against_des(app: AppProfile, steps: int, seed: int = 0, cells=None, kinds=None,
                      bands: Bands = FLUID_BANDS) -> pd.DataFrame:
    """The fluid engine against the discrete-event one for ``app`` with each demand kind
    (default: every one) on ``cells`` (default: the acceptance grid,
    :func:`scalelab.simulator.validation.utilisation_cells` of each kind): one row per
    (demand, users, replicas), judged by :func:`check_bands`."""
    from scalelab.simulator.models import DEMAND_KINDS
    from scalelab.simulator.validation import utilisation_cells, validate

    rows = []
    for kind in kinds or DEMAND_KINDS:
        shaped = app if kind == app.demand.kind else app.with_overrides(demand={"kind": kind})
        for r in validate(shaped, list(cells or utilisation_cells(shaped)), steps=steps, seed=seed):
            rows.append({"demand": kind, **r})
    return check_bands(pd.DataFrame(rows), bands)


def fluid_lines(t: pd.DataFrame, bands: Bands = FLUID_BANDS) -> list[str]:
    """One line per cell of :func:`fluid_against_des` (``ok`` or ``MISS`` where checked)
    and the summary: how many checked cells are within the bands, the median |p95 error|."""
    lines = []
    for r in t.itertuples():
        flag = "" if not r.checked else ("ok" if r.within else "MISS")
        lines.append(f"{r.demand:11s} {r.users:3d} users {r.replicas:2d} replicas  util {r.utilization:4.2f}  "
                     f"p95 des {r.des_p95_ms:8.1f} fluid {r.fluid_p95_ms:8.1f} ({r.p95_error:+6.1%})  "
                     f"rps {r.rps_error:+5.1%}  {flag}")
    checked = t[t.checked]
    lines.append(f"{int(checked.within.sum())} of {len(checked)} cells below {bands.max_utilization:g} utilisation "
                 f"within {bands.p95 * 100:g} % (p95) and {bands.rps * 100:g} % (RPS); median |p95 error| "
                 f"{checked.p95_error.abs().median():.1%}")
    return lines


def means_lines(res: CalibrationResult, min_steps: int) -> list[str]:
    """One line per cell of :func:`scalelab.simulator.calibration.calibrate` and the
    summary (median and max |error|)."""
    lines = [f"{row.users:3d} users {row.containers:2d} replicas  paper {row.mean_p95_ms:7.1f} ms  "
             f"sim {row.sim_p95_ms:7.1f} ms  {row.error:+6.1%}" for row in res.table.itertuples()]
    lines.append(f"median |error| {res.median_abs_error:.1%}, max |error| {res.max_abs_error:.1%} "
                 f"over {len(res.table)} cells with >= {min_steps} steps")
    return lines


@dataclass(frozen=True)
class SampleTarget:
    """Measured p95 samples to calibrate against: ``score(profile, seed=...)`` runs the
    simulator on their cells (with the target's seed unless told); ``app`` is the
    starting profile (on the replicas the samples were measured on), ``label`` names the
    samples, ``slo_ms`` is the SLO of the fraction above, ``cpu`` the CPU per request
    measured beside them (a live recording's; None for the paper's)."""

    app: AppProfile
    score: Callable[..., SampleCalibration]
    label: str
    slo_ms: float
    cpu: MeasuredCpu | None = None
    passes: tuple[float, float] | None = None  # the samples against themselves: pass_distance (median, worst)


def paper_samples(app: AppProfile, steps: int, seed: int = 0) -> SampleTarget:
    """The paper's D1 samples (SLO 600 ms)."""
    from scalelab.simulator.calibration import calibrate_samples

    def score(a: AppProfile, seed: int = seed) -> SampleCalibration:
        return calibrate_samples(a, steps=steps, seed=seed)

    return SampleTarget(app, score, "the paper's D1 samples", 600.0)


def dataset_samples(app: AppProfile, dataset: str | Path, steps: int, seed: int = 0,
                    slo_ms: float | None = None) -> SampleTarget:
    """A recorded dataset (``scalelab dataset record``): its cells, think time, context
    and replicas (from its ``.meta.json``); the SLO is ``slo_ms`` or the dataset's."""
    from scalelab.simulator.calibration import (
        compare_cells,
        dataset_cells,
        dataset_utilization,
        measured_cpu,
        pass_distance,
    )
    from scalelab.simulator.datasets import read_dataset_meta
    from scalelab.simulator.replay import load_dataset

    frame = load_dataset(dataset)
    meta = read_dataset_meta(dataset)
    if meta.replica:  # the profile on the replicas the dataset was measured on
        app = app.with_overrides(**meta.replica)
    slo = slo_ms or meta.slo_ms
    cells, used = dataset_cells(frame), dataset_utilization(frame)

    def score(a: AppProfile, seed: int = seed) -> SampleCalibration:
        return compare_cells(a, cells, meta.cluster_settings(), meta.context, steps=steps, seed=seed, slo_ms=slo,
                             utilization=used)

    return SampleTarget(app, score, f"dataset {Path(dataset).name} ({meta.source or 'recorded'})", slo,
                        measured_cpu(frame), pass_distance(frame))


def sample_lines(res: SampleCalibration, target: SampleTarget, before: SampleCalibration | None = None) -> list[str]:
    """One line per cell (quantiles and fraction above the SLO, measured and simulated),
    the errors before a fit (``before``), the headline errors and the old criterion."""
    t, slo = res.table, target.slo_ms
    lines = [f"{r.users:3d} users {r.replicas:2d} replicas  q50 data {r.data_q50:7.1f} sim {r.sim_q50:7.1f}  "
             f"q90 data {r.data_q90:7.1f} sim {r.sim_q90:7.1f}  above {slo:g} ms data {r.data_above:4.2f} "
             f"sim {r.sim_above:4.2f}{'  (saturated)' if r.saturated else ''}" for r in t.itertuples()]
    if before is not None:
        lines.append(f"before the fit: median |quantile error| {before.median_q_error:.1%}, "
                     f"worst {before.worst_q_error:.1%}")
    lines.append(f"against {target.label} ({int((~t.saturated).sum())} cells not saturated of {len(t)}): "
                 f"|quantile error| median {res.median_q_error:.1%}, worst {res.worst_q_error:.1%}; |error of the "
                 f"fraction above {slo:g} ms| mean {res.mean_above_error:.3f}, worst {res.worst_above_error:.3f}")
    if target.passes is not None:
        lines.append(f"the samples against themselves (each cell's second pass against its first): |quantile error| "
                     f"median {target.passes[0]:.1%}, worst {target.passes[1]:.1%}")
    lines.append(f"against the means (the old criterion, same cells): median |error| {res.mean_error:.1%}")
    return lines


def cpu_lines(target: SampleTarget, app: AppProfile, res: SampleCalibration) -> list[str]:
    """The CPU per request measured beside the samples against what the profile's
    simulated replicas spent over the same cells (``res``), through one estimator."""
    if target.cpu is None:
        return []
    c = target.cpu
    spent = simulated_cpu_s(app, res)
    inside = "within" if c.low_s <= spent <= c.high_s else "OUTSIDE"
    lines = []
    for r in c.cells.to_dict("records"):
        host = (f"; beside them {r['others_cpu']:.2f} cores, host {r['host_cpu']:.2f} (q95 {r['host_cpu_q95']:.2f}), "
                f"steal {r['steal']:.3f}" if "others_cpu" in r and "steal" in r else "")
        lines.append(f"{r['users']:3d} users {r['replicas']:2d} replicas  replicas' CPU {r['cpu_cores']:.3f} cores at "
                     f"{r['rps']:.2f} req/s ({r['cpu_cores'] / max(r['rps'], 1e-9) * 1000:.0f} ms each){host}")
    return [*lines, f"CPU per request: measured {c.cpu_per_request_s * 1000:.0f} ms [{c.low_s * 1000:.0f}, "
            f"{c.high_s * 1000:.0f}] (95 %, {len(c.cells)} cells; an idle replica burns {c.idle_cores:.3f} cores); "
            f"profile {app.name!r}: its simulated replicas {spent * 1000:.0f} ms over the same cells "
            f"({app.demand.capped_mean_s * 1000:.0f} ms as its demand states it): {inside} the measured range"]


def fit_lines(app: AppProfile, res: SampleCalibration, tried: list, tolerance: float) -> list[str]:
    """The fitted profile's searched fields (its calibration ``res``) with their spread
    (:func:`fit_spread` over the candidates whose loss is within ``tolerance`` of the best)."""
    spread = fit_spread(tried, tolerance)
    if not spread:
        return [f"fit: none of {len(tried)} candidates scored (outside the measured CPU, or no finite loss)"]
    scored = sum(np.isfinite(c.loss) for c in tried)
    near = len(near_best(tried, tolerance))
    lines = [f"fit: {scored} of {len(tried)} candidates scored (the others outside the measured CPU); {near} within "
             f"{tolerance:.3f} of the best loss (twice the loss's spread between simulator seeds):"]
    for key, (low, high) in spread.items():
        value = simulated_cpu_s(app, res) if key == "cpu_per_request_s" else field_value(app, key)
        lines.append(f"  {key:18s} {value:9.4g}   [{low:.4g}, {high:.4g}]")
    return lines


def seed_tolerance(target: SampleTarget, app: AppProfile, seed: int, seeds: int = 4) -> float:
    """Twice the standard deviation of ``app``'s loss over ``seeds`` + 1 simulator seeds
    (the noise below which two candidates cannot be told apart)."""
    losses = np.array([sample_loss(target.score(app, seed=seed + k)) for k in range(seeds + 1)])
    finite = losses[np.isfinite(losses)]
    return 2.0 * float(np.std(finite, ddof=1)) if len(finite) >= 2 else 0.0


def _save(fig: Figure, table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    fig.savefig(out, dpi=90)
    table.to_csv(out.with_suffix(".csv"), index=False)
    return out, out.with_suffix(".csv")


def write_means(res: CalibrationResult, profile: str, out: str | Path) -> tuple[Path, Path]:
    """The figure of :func:`means_lines` (paper and simulator per replica count, log
    scale) at ``out`` and its table beside it (``.csv``); returns both paths."""
    t = res.table
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for reps, g in t.groupby("containers"):
        line = ax.plot(g.users, g.mean_p95_ms, "o-", label=f"paper, {reps} replicas")[0]
        ax.plot(g.users, g.sim_p95_ms, "x--", color=line.get_color(), label=f"sim, {reps} replicas")
    ax.set_yscale("log")
    ax.set_xlabel("users")
    ax.set_ylabel("mean p95 (ms)")
    ax.set_title(f"profile {profile}: median |error| {res.median_abs_error:.1%}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, t, out)


def write_samples(res: SampleCalibration, target: SampleTarget, profile: str, out: str | Path) -> tuple[Path, Path]:
    """:func:`samples_figure` at ``out``, its table beside it (``.csv``); returns both paths."""
    return _save(samples_figure(res, target, profile), res.table, out)


def samples_figure(res: SampleCalibration, target: SampleTarget, profile: str) -> Figure:
    """Per cell: measured and simulated p95 quantiles (q10-q90 bars, q50 dots;
    saturated cells shaded; the legend in headroom above the highest bar, so it covers
    none), and the fraction of samples above the SLO, measured against simulated."""
    t, slo = res.table, target.slo_ms
    fig = Figure(figsize=(12, 5))
    left, right = fig.subplots(1, 2)
    x = np.arange(len(t))
    left.vlines(x - 0.15, t.data_q10, t.data_q90, color="C0", lw=3, label="measured, q10-q90")
    left.plot(x - 0.15, t.data_q50, "o", color="C0", ms=4, label="measured, median")
    left.vlines(x + 0.15, t.sim_q10, t.sim_q90, color="C1", lw=3, label="simulator, q10-q90")
    left.plot(x + 0.15, t.sim_q50, "o", color="C1", ms=4, label="simulator, median")
    for i in np.flatnonzero(t.saturated.to_numpy()):
        left.axvspan(i - 0.5, i + 0.5, color="grey", alpha=0.12, lw=0)
    left.axhline(slo, color="grey", ls=":", label=f"SLO {slo:g} ms")
    left.set_yscale("log")
    left.set_xticks(x, [f"{u}/{r}" for u, r in zip(t.users, t.replicas, strict=True)], rotation=90, fontsize=7)
    left.set_xlabel("users / replicas (grey: saturated)")
    left.set_ylabel("p95 per step (ms)")
    low, high = left.get_ylim()
    left.set_ylim(low, high * 4)  # 0.6 of a decade more on the log scale: room for the legend
    left.legend(fontsize=7, ncol=2, loc="upper left")
    right.plot([0, 1], [0, 1], color="grey", ls=":")
    right.scatter(t.data_above, t.sim_above, s=18)
    for r in t.itertuples():
        if 0 < r.data_above < 1 or 0 < r.sim_above < 1:
            right.annotate(f"{r.users}/{r.replicas}", (r.data_above, r.sim_above), fontsize=8)
    right.set_xlabel(f"measured: fraction of steps above {slo:g} ms")
    right.set_ylabel(f"simulator: fraction above {slo:g} ms")
    fig.suptitle(f"profile {profile} against {target.label}: |quantile error| median {res.median_q_error:.1%}, "
                 f"worst {res.worst_q_error:.1%}", fontsize=10)
    fig.tight_layout()
    return fig


def write_fluid(t: pd.DataFrame, profile: str, out: str | Path, bands: Bands = FLUID_BANDS) -> tuple[Path, Path]:
    """:func:`fluid_figure` at ``out``, the table of :func:`fluid_against_des` beside it
    (``.csv``)."""
    return _save(fluid_figure(t, profile, bands), t, out)


def fluid_figure(t: pd.DataFrame, profile: str, bands: Bands = FLUID_BANDS) -> Figure:
    """Per demand kind, fluid p95 against discrete-event p95 (log-log, both axes over
    the same range holding every cell, full-number ticks) with the p95 band shaded."""
    kinds = list(dict.fromkeys(t.demand))
    fig = Figure(figsize=(5 * len(kinds), 4))
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    for ax, (kind, g) in zip(axes, t.groupby("demand", sort=False), strict=True):
        ax.loglog(g.des_p95_ms, g.fluid_p95_ms, "o")
        lim = [min(g.des_p95_ms.min(), g.fluid_p95_ms.min()) * 0.8, max(g.des_p95_ms.max(), g.fluid_p95_ms.max()) * 1.2]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.fill_between(lim, [v * (1 - bands.p95) for v in lim], [v * (1 + bands.p95) for v in lim], alpha=0.15,
                        color="green")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_title(f"{profile}, {kind}")
        ax.set_xlabel("discrete-event p95 (ms, log scale)")
        ax.set_ylabel("fluid p95 (ms, log scale)")
    fig.tight_layout()
    return fig
