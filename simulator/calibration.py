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
