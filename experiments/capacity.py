"""A load test on the simulator: how many replicas a number of students needs.

What an operator measures before an evaluation week (Locust at a few student counts,
replicas added until the p95 holds), done on the simulated service of a config: for each
level, the fewest replicas whose steady-state p95 stays within the SLO over
``measure_steps`` steps (:class:`scalelab.simulator.oracle.OracleTable`, the oracle's search).
The table feeds the ``capacity`` parameter of the calendar policies (``keda-cron``,
``hslinucb-calendar``).

    scalelab capacity evaluation-week-5d --students 50 100 200 400
"""

from __future__ import annotations

import numpy as np

from scalelab.experiments.config import ExperimentConfig
from scalelab.experiments.episode import resolve
from scalelab.simulator.oracle import OracleTable

#: Student counts of the default load test.
LEVELS = (25, 50, 100, 150, 200, 300, 400, 500)


def load_test(cfg: ExperimentConfig, levels=LEVELS, measure_steps: int = 60) -> list[list[int]]:
    """``[[students, replicas], ...]`` for ``levels`` (closed-loop users) on ``cfg``'s
    service, cluster and SLO, on its engine (``des`` unless a fluid one is named);
    replicas never decrease with the level (the search starts from the level below)."""
    r = resolve(cfg)
    engine = "fluid" if cfg.engine.startswith("fluid") else "des"
    table = OracleTable(app=r.app, settings=r.cluster, context=r.context, slo_ms=cfg.slo_ms,
                        step_s=cfg.step_seconds, measure_steps=measure_steps, engine=engine,
                        seed=int(np.random.SeedSequence([cfg.seed, 11]).generate_state(1)[0]))
    return [[int(u), int(table.replicas_for(float(u)))] for u in sorted(levels)]
