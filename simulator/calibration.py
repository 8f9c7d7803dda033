"""Calibration of an app profile against the paper's measured p95 table.

``paper-calibration.csv`` (shipped in ``simulator/data``) holds the mean p95 by users ×
replicas that the paper logged on its real platform. :func:`calibrate` runs the
simulator at each cell in steady state (closed users, ``between(0, 2)`` think time), builds
the context exactly as the paper's code did (4000-span buffer, 12 s window) every 5 s
step, and compares the mean p95 over the steps with the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from orchestrator.context import PAPER as PAPER_CONTEXT
from simulator.cluster import ClusterSettings
from simulator.models import PAPER, AppProfile
from simulator.oracle import steady_state_p95s


def paper_table(min_steps: int = 0) -> pd.DataFrame:
    """The paper's table: ``users, containers, mean_p95_ms, median_p95_ms, max_p95_ms,
    n_steps``; cells measured on fewer than ``min_steps`` steps are dropped."""
    with resources.files("simulator.data").joinpath("paper-calibration.csv").open() as f:
        table = pd.read_csv(f)
    return table[table.n_steps >= min_steps].reset_index(drop=True)


def steady_state_p95(app: AppProfile, users: int, replicas: int, steps: int = 150,
                     seed: int = 0) -> float:
    """Mean over steps of the paper-mode p95 (ms) at a fixed population and replica count."""
    p95 = steady_state_p95s(app, ClusterSettings(), PAPER_CONTEXT, replicas, users=users,
                            steps=steps - 6, warmup=6, seed=seed)
    return float(np.mean(p95))


@dataclass(frozen=True)
class CalibrationResult:
    """Per-cell comparison (``table``) and the two headline errors (fractions)."""

    table: pd.DataFrame
    median_abs_error: float
    max_abs_error: float


def calibrate(app: AppProfile = PAPER, min_steps: int = 100, steps: int = 150, seed: int = 0,
              progress=None) -> CalibrationResult:
    """Compare ``app`` with the paper's table on every cell with ``>= min_steps`` steps."""
    table = paper_table(min_steps).copy()
    sim = []
    for row in table.itertuples():
        sim.append(steady_state_p95(app, int(row.users), int(row.containers), steps=steps, seed=seed))
        if progress is not None:
            progress(1)
    table["sim_p95_ms"] = sim
    table["error"] = (table.sim_p95_ms - table.mean_p95_ms) / table.mean_p95_ms
    err = table.error.abs()
    return CalibrationResult(table=table, median_abs_error=float(err.median()), max_abs_error=float(err.max()))


#: The quantiles compared per cell.
QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class SampleCalibration:
    """The simulator against the paper's D1 samples, per cell (``table``): the paper's
    known samples and the simulator's per-step p95 at the same cell, their quantiles
    (``q10, q50, q90``, ms) and fraction above the SLO (``above``). Headlines:
    ``median_q_error`` (median over cells and quantiles of the relative error),
    ``mean_above_error`` (mean absolute error of the fraction above the SLO, over
    cells) and ``mean_error`` (the old criterion: median relative error of the mean)."""

    table: pd.DataFrame
    median_q_error: float
    mean_above_error: float
    mean_error: float


def calibrate_samples(app: AppProfile = PAPER, steps: int = 80, seed: int = 0, min_known: int = 10,
                      slo_ms: float = 600.0, progress=None) -> SampleCalibration:
    """Compare ``app`` with the paper's D1 samples on every cell with at least
    ``min_known`` known samples: ``steps`` steady-state steps of the paper's context
    (4000 spans, 12 s window) per cell."""
    from simulator.datasets import read_p95_recording

    rec = read_p95_recording()
    rows = []
    for (users, replicas), samples in sorted(rec.cells.items()):
        known = np.array([v for v in samples if v is not None])
        if len(known) < min_known:
            continue
        sim = steady_state_p95s(app, ClusterSettings(), PAPER_CONTEXT, replicas, users=users, steps=steps,
                                warmup=6, seed=seed)
        row = {"users": users, "replicas": replicas, "known": len(known),
               "paper_mean": known.mean(), "sim_mean": sim.mean(),
               "paper_above": float((known > slo_ms).mean()), "sim_above": float((sim > slo_ms).mean())}
        for q in QUANTILES:
            row[f"paper_q{round(q * 100)}"] = float(np.quantile(known, q))
            row[f"sim_q{round(q * 100)}"] = float(np.quantile(sim, q))
        rows.append(row)
        if progress is not None:
            progress(1)
    t = pd.DataFrame(rows)
    q_err = np.concatenate([((t[f"sim_q{round(q * 100)}"] - t[f"paper_q{round(q * 100)}"])
                             / t[f"paper_q{round(q * 100)}"]).abs().to_numpy() for q in QUANTILES])
    return SampleCalibration(
        table=t, median_q_error=float(np.median(q_err)),
        mean_above_error=float((t.sim_above - t.paper_above).abs().mean()),
        mean_error=float(((t.sim_mean - t.paper_mean) / t.paper_mean).abs().median()))


#: The profile fields :func:`fit_to_samples` searches, with the relative spread of the
#: search around the starting profile.
FIT_FIELDS = {"demand.cpu_ms": 0.12, "demand.cv": 0.3, "overhead_ms": 0.3, "contention": 0.5}


def sample_loss(result: SampleCalibration) -> float:
    """What :func:`fit_to_samples` minimises: the error of the fraction above the SLO
    (what produces violations) plus half the quantiles' median relative error."""
    return result.mean_above_error + 0.5 * result.median_q_error


def _perturbed(app: AppProfile, rng: np.random.Generator) -> AppProfile:
    demand, top = {}, {}
    for key, spread in FIT_FIELDS.items():
        factor = float(np.exp(rng.uniform(-spread, spread)))
        if key.startswith("demand."):
            name = key.split(".", 1)[1]
            demand[name] = getattr(app.demand, name) * factor
        else:
            top[key] = getattr(app, key) * factor
    return app.with_overrides(demand=demand, **top)


def fit_to_samples(app: AppProfile = PAPER, candidates: int = 40, seed: int = 0, steps: int = 80,
                   progress=None) -> tuple[AppProfile, SampleCalibration, list[tuple[float, AppProfile]]]:
    """Random search around ``app`` over :data:`FIT_FIELDS`, scored by
    :func:`sample_loss` against the paper's D1 samples; returns the best profile, its
    calibration and every candidate's loss (the starting profile first)."""
    rng = np.random.default_rng(seed)
    tried = []
    best_app, best = app, calibrate_samples(app, steps=steps)
    tried.append((sample_loss(best), app))
    for _ in range(candidates):
        cand = _perturbed(app, rng)
        res = calibrate_samples(cand, steps=steps)
        tried.append((sample_loss(res), cand))
        if sample_loss(res) < sample_loss(best):
            best_app, best = cand, res
        if progress is not None:
            progress(1)
    return best_app, best, tried
