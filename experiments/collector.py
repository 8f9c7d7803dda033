"""The paper's dataset collector on any backend (``scalelab dataset record``).

:func:`collect` measures a backend as the paper's ``dataset_collector`` measured its
cluster: for each replica count (scaled to and settled), users ascending then
descending, ``samples`` context samples per (users, replicas) cell split between the
two passes, after ``warmup_steps`` steps at each new level. It speaks only the
:class:`~scalelab.orchestrator.backend.Backend` protocol, so the simulator's backends and the
live one (:func:`record_live`, a local stack brought up for it) record the same way,
into the format the replay reads (``users, replicas, sample``, the context fields,
``ready_replicas`` (the context's count, which a dead replica lowers), ``missing``,
``client_p95_ms``, ``source``). Rows are appended to a JSON-lines file as
they are measured, so an interrupted recording keeps what it saw.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from scalelab.experiments.config import ExperimentConfig
from scalelab.orchestrator.backend import Backend, Clock


def collect(backend: Backend, clock: Clock, users: Sequence[int], replicas: Sequence[int], samples: int,
            step_s: float = 5.0, warmup_steps: int = 2, source: str = "", rows_file: Path | None = None,
            progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Record ``samples`` context samples per (users, replicas) cell of ``backend``."""
    rows: list[dict] = []
    up = samples - samples // 2
    out = open(rows_file, "a") if rows_file is not None else None
    try:
        for n in replicas:
            backend.scale_to(int(n))
            backend.settle()
            counts = dict.fromkeys(users, 0)
            for level, take in [(u, up) for u in users] + [(u, samples - up) for u in reversed(users)]:
                backend.set_load(level)
                t = clock.now()
                for k in range(warmup_steps + take):
                    t += step_s
                    clock.sleep_until(t)
                    obs = backend.observe()
                    if k < warmup_steps:
                        continue
                    ctx = obs.context.to_dict()
                    row = {**ctx, "ready_replicas": ctx["replicas"], "users": int(level), "replicas": int(n),
                           "sample": counts[level], "missing": ",".join(obs.missing),
                           "client_p95_ms": obs.client_p95_ms, "source": source}
                    counts[level] += 1
                    rows.append(row)
                    if out is not None:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                if progress is not None:
                    progress(1)
    finally:
        if out is not None:
            out.close()
        backend.stop_load()
    frame = pd.DataFrame(rows)
    return frame.sort_values(["users", "replicas", "sample"], kind="stable").reset_index(drop=True)


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
