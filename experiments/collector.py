"""A dataset recorded on the live stack (``scalelab dataset record --backend live``):
:func:`record_live` brings a local stack up for it and runs the paper's collector
(:func:`scalelab.simulator.datasets.collect`, the same one the simulator's recordings
use) against the live backend. Rows are appended to a JSON-lines file as they are
measured, so an interrupted recording keeps what it saw.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from scalelab.experiments.config import ExperimentConfig
from scalelab.orchestrator.backend import Clock
from scalelab.sandbox.usage import cgroup_usage
from scalelab.simulator.datasets import collect, recorded_cells, sorted_samples

TICKS = os.sysconf("SC_CLK_TCK")

#: The columns :class:`HostCpuMeter` adds to each sample (cores, averaged over the step).
HOST_CPU_COLUMNS = ("replicas_cpu_cores", "host_cpu_cores", "others_cpu_cores", "steal_cores")


class HostCpuMeter:
    """What the host's CPU did over each step, beside the latency a sample measures.

    ``replicas_cpu_cores``: the CPU the stack's replicas used (the sum of their cgroups'
    ``cpuacct.usage``, sandboxed runs included: they nest in their replica's group), in
    cores over the step; with the step's request rate it gives the CPU per submission.
    ``host_cpu_cores``: the host's busy CPU (``/proc/stat``: user, nice, system, irq,
    softirq). ``others_cpu_cores``: the difference, the contention beside the replicas
    (the stack's services, the load generator, the recorder). ``steal_cores``: the CPU
    the hypervisor gave to other machines. The replicas' CPU (and so the rest) is NaN
    over a step in which a replica's cgroup went away (its last CPU went with it) or
    where the cgroups cannot be read; a replica started during a step counts whole.

    ``cgroup_prefix`` is the stack's key (``LocalScaler.cgroup_name("")``), so that only
    this stack's replicas are counted; the clock gives the step's length."""

    def __init__(self, clock: Clock, cgroup_prefix: str, cgroups: Path = Path("/sys/fs/cgroup/cpuacct/scalelab"),
                 proc_stat: Path = Path("/proc/stat")):
        self.clock, self.prefix, self.cgroups, self.proc_stat = clock, cgroup_prefix, cgroups, proc_stat
        self._last: tuple[float, dict[str, float], float, float] | None = None

    def _replicas(self) -> dict[str, float]:
        """CPU seconds of each replica's cgroup, by name."""
        usage = {}
        for d in self.cgroups.glob(self.prefix + "*"):
            read = cgroup_usage(str(d), None)
            if read is not None:  # else removed while we read: missing from this reading
                usage[d.name] = read[0]
        return usage

    def _host(self) -> tuple[float, float]:
        """(busy, steal) CPU seconds of the host since boot."""
        fields = [int(x) for x in self.proc_stat.read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq) / TICKS, steal / TICKS

    def __call__(self) -> dict[str, float]:
        now, replicas, (busy, steal) = self.clock.now(), self._replicas(), self._host()
        last, self._last = self._last, (now, replicas, busy, steal)
        if last is None or now <= last[0]:
            return dict.fromkeys(HOST_CPU_COLUMNS, math.nan)
        dt = now - last[0]
        if not replicas or set(last[1]) - set(replicas):
            used = math.nan  # no cgroup to read, or a replica removed during the step took its last CPU with it
        else:  # a replica started during the step spent all its CPU in it
            used = sum(v - last[1].get(k, 0.0) for k, v in replicas.items()) / dt
        host = (busy - last[2]) / dt
        return {"replicas_cpu_cores": used, "host_cpu_cores": host, "others_cpu_cores": host - used,
                "steal_cores": (steal - last[3]) / dt}


def record_live(cfg: ExperimentConfig, users: Sequence[int], replicas: Sequence[int], samples: int,
                out: Path, warmup_steps: int = 2, stack_dir: Path | None = None,
                progress: Callable[[int], None] | None = None, resume: bool = False) -> pd.DataFrame:
    """Record a dataset on a local stack brought up for it with ``cfg``'s replicas,
    request mix (``/compute`` clients or corpus students), think time and context
    settings; rows go to ``out`` (Parquet) and, as measured, ``out`` + ``.rows.jsonl``,
    each with what :class:`HostCpuMeter` measured over its step. ``resume`` keeps the
    rows an interrupted recording left there and takes only the samples still missing."""
    from scalelab.experiments.episode import resolve
    from scalelab.experiments.live import live_settings, start_services, stop_services
    from scalelab.orchestrator.backend import WallClock
    from scalelab.orchestrator.client import OrchestratorClient
    from scalelab.orchestrator.live_backend import OrchestratorBackend
    from scalelab.orchestrator.stack import LocalStack

    settings = live_settings(cfg, resolve(cfg))
    rows_file = Path(str(out) + ".rows.jsonl")
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    kept, recorded = recorded_cells(rows_file) if resume else ([], {})
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in kept))  # without a line cut by the interruption
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
                meter = HostCpuMeter(clock, stack.scaler.cgroup_name(""))
                frame = collect(backend, clock, users, replicas, samples, float(cfg.step_seconds), warmup_steps,
                                source=f"live:{settings.task['task']}" + ("" if enforced else ":no-cpu-quota"),
                                rows_file=rows_file, progress=progress, meter=meter, recorded=recorded)
            finally:
                client.close()
        finally:
            stop_services(procs)
            stack.down()
    frame = sorted_samples(kept + frame.to_dict("records"))
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return frame
