"""The fluid engine against the discrete-event one, in steady state, both observed
through their backends (:class:`~scalelab.simulator.backends.SimBackend`,
:class:`~scalelab.simulator.backends.FluidBackend`), so the context is built where the
loop builds it.
"""

from __future__ import annotations

import numpy as np

from scalelab.orchestrator.backend import VirtualClock
from scalelab.orchestrator.context import ContextSettings
from scalelab.simulator.backends import FluidBackend, SimBackend, stream_seeds
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.fluid import FluidModel
from scalelab.simulator.models import AppProfile

#: A small grid: users x replicas (closed users, think 0..2 s), near saturation at 1-12
#: replicas.
GRID = ((1, 1), (5, 1), (10, 1), (10, 2), (20, 2), (30, 4), (50, 4), (60, 8), (100, 12))

#: The fluid engine's acceptance grid: these replica counts at these utilisations (CPU
#: used over the replicas' limits), the users found by :func:`utilisation_cells`.
GRID_REPLICAS = (4, 16, 64, 400)
GRID_UTILISATIONS = (0.2, 0.5, 0.7, 0.9)


def utilisation_cells(app: AppProfile, settings: ClusterSettings | None = None,
                      replicas: tuple[int, ...] = GRID_REPLICAS,
                      utilisations: tuple[float, ...] = GRID_UTILISATIONS) -> list[tuple[int, int]]:
    """(users, replicas) cells: for each replica count and target utilisation, the
    fewest closed users at which the fluid model's utilisation reaches the target
    (bisection; the discrete-event engine's own, measured by :func:`validate`, lands
    within a few hundredths of it)."""
    model = FluidModel(app, settings or ClusterSettings())
    cells = []
    for r in replicas:
        for target in utilisations:
            lo, hi = 1, 40 * r
            while lo < hi:
                mid = (lo + hi) // 2
                if model.closed(mid, r).rps * model.mean_demand / (r * app.cpu_limit) < target:
                    lo = mid + 1
                else:
                    hi = mid
            cells.append((lo, r))
    return cells


def validate(app: AppProfile, cells: list[tuple[int, int]], steps: int = 40, seed: int = 0,
             settings: ClusterSettings | None = None, context: ContextSettings | None = None,
             step_s: float = 5.0, warmup: int = 8) -> list[dict]:
    """Fluid against discrete-event, per (users, replicas) cell, steady state: the mean
    over ``steps`` steps (after ``warmup``) of the DES's per-step p95 (ms) and RPS, the
    fluid engine's first step, and the utilisation: the CPU the DES's pods used over
    their limit (work a wall limit cut short is not counted)."""
    settings = settings or ClusterSettings()
    context = context or ContextSettings()
    out = []
    for users, replicas in cells:
        shaped = settings.held_at(replicas)
        clock = VirtualClock()
        des = SimBackend(app, shaped, context, clock, stream_seeds(seed), max_users=max(users, 1))
        des.set_load(users)
        d_p95, d_rps, d_cpu = [], [], []
        for k in range(warmup + steps):
            clock.sleep_until((k + 1) * step_s)
            obs = des.observe()
            if k >= warmup:
                d_p95.append(obs.context.p95_ms)
                d_rps.append(obs.context.rps)
                d_cpu.append(obs.context.cpu_limit_ratio)
        fluid_clock = VirtualClock()
        fluid = FluidBackend(app, shaped, context, fluid_clock)
        fluid.set_load(users)
        fluid_clock.sleep_until(step_s)
        f = fluid.observe().context
        des_rps = float(np.mean(d_rps))
        out.append({"users": users, "replicas": replicas, "utilization": float(np.mean(d_cpu)),
                    "des_p95_ms": float(np.mean(d_p95)), "fluid_p95_ms": f.p95_ms,
                    "des_rps": des_rps, "fluid_rps": f.rps})
    return out
