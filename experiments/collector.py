"""A dataset recorded on the live stack (``scalelab dataset record --backend live``):
:func:`record_live` brings a local stack up for it and runs the paper's collector
(:func:`scalelab.simulator.datasets.collect`, the same one the simulator's recordings
use) against the live backend. Rows are appended to a JSON-lines file as they are
measured, so an interrupted recording keeps what it saw.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from scalelab.experiments.config import ExperimentConfig
from scalelab.simulator.datasets import collect


def record_live(cfg: ExperimentConfig, users: Sequence[int], replicas: Sequence[int], samples: int,
                out: Path, warmup_steps: int = 2, stack_dir: Path | None = None,
                progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Record a dataset on a local stack brought up for it with ``cfg``'s replicas,
    request mix (``/compute`` clients or corpus students), think time and context
    settings; rows go to ``out`` (Parquet) and, as measured, ``out`` + ``.rows.jsonl``."""
    from scalelab.experiments.episode import resolve
    from scalelab.experiments.live import live_settings, start_services, stop_services
    from scalelab.orchestrator.backend import WallClock
    from scalelab.orchestrator.client import OrchestratorClient
    from scalelab.orchestrator.live_backend import OrchestratorBackend
    from scalelab.orchestrator.stack import LocalStack

    settings = live_settings(cfg, resolve(cfg))
    rows_file = Path(str(out) + ".rows.jsonl")
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    rows_file.write_text("")
    with tempfile.TemporaryDirectory(prefix="scalelab-record-") as d:
        stack = LocalStack(stack_dir or Path(d))
        stack.up(replicas=int(replicas[0]), spec=settings.replica)
        procs = []
        try:
            procs = start_services(stack, settings)
            client = OrchestratorClient(stack.state["kafka"]["bootstrap"])
            try:
                clock = WallClock()
                backend = OrchestratorBackend(client, clock, 1, max(replicas), retry_s=60.0,
                                              injector_task={**settings.task, "seed": int(cfg.seed)})
                backend.setup(int(replicas[0]))
                enforced = stack.scaler.cpu_limit_enforced
                frame = collect(backend, clock, users, replicas, samples, float(cfg.step_seconds), warmup_steps,
                                source=f"live:{settings.task['task']}" + ("" if enforced else ":no-cpu-quota"),
                                rows_file=rows_file, progress=progress)
            finally:
                client.close()
        finally:
            stop_services(procs)
            stack.down()
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return frame
