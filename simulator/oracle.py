"""The oracle: the fewest replicas that meet the SLO at a given load.

As the paper's oracle did over its recorded datasets, a load level's answer is the
smallest replica count whose steady-state p95 samples (one per 5 s step) all stay at
or below the SLO: their mean **and** their maximum. Here the samples come from the
simulator itself, run at that load for ``measure_steps`` steps after a warm-up of one
think cycle. Answers are cached per load level; required replicas grow with the load,
so the search starts from the previous level's answer.

On the jobs model (``jobs`` given) the samples are the turnaround p95s of a
:class:`~scalelab.simulator.backends.JobsBackend` held at that many runners (in
``runner_mode: job``, topped up to that many every step, as a scaler would), so the
oracle's answer is the fewest runners whose turnaround meets the SLO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scalelab.orchestrator.backend import VirtualClock
from scalelab.orchestrator.context import ContextSettings
from scalelab.simulator.backends import JobsBackend, SimBackend, stream_seeds
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.jobs import JobsSettings
from scalelab.simulator.models import AppProfile


@dataclass(frozen=True)
class SteadySteps:
    """What each step of a steady-state run measured: the context's p95 (ms) and request
    rate (1/s), and the replicas' CPU (cores, summed over the pods' last scrape)."""

    p95_ms: np.ndarray
    rps: np.ndarray
    cpu_cores: np.ndarray


def steady_state_p95s(
    app: AppProfile,
    settings: ClusterSettings,
    context: ContextSettings,
    replicas: int,
    users: int = 0,
    rate_rps: float | None = None,
    steps: int = 20,
    warmup: int = 6,
    seed: int = 0,
    step_s: float = 5.0,
    jobs: JobsSettings | None = None,
) -> np.ndarray:
    """Per-step p95 (ms), shape ``(steps,)``, at a fixed load and replica count,
    observed through a :class:`~scalelab.simulator.backends.SimBackend` held at ``replicas``.

    The load is ``users`` closed users, or ``rate_rps`` open arrivals when given. A
    window where nothing completed while requests were in flight reads the p95 of their
    ages, as the step loop scores it (an empty window is not a fast one). With ``jobs``,
    the jobs model's runners and their turnaround p95.
    """
    return steady_state_steps(app, settings, context, replicas, users, rate_rps, steps, warmup, seed, step_s,
                              jobs).p95_ms


def steady_state_steps(app: AppProfile, settings: ClusterSettings, context: ContextSettings, replicas: int,
                       users: int = 0, rate_rps: float | None = None, steps: int = 20, warmup: int = 6, seed: int = 0,
                       step_s: float = 5.0, jobs: JobsSettings | None = None) -> SteadySteps:
    """:func:`steady_state_p95s` with the request rate and the replicas' CPU of each step."""
    clock = VirtualClock()
    if jobs is None:
        backend = SimBackend(app, settings.held_at(replicas), context, clock, stream_seeds(seed),
                             closed=rate_rps is None, max_users=max(users, 1))
    else:
        backend = JobsBackend(app, settings.held_at(replicas), jobs, context, clock, stream_seeds(seed),
                              closed=rate_rps is None, max_users=max(users, 1))
    backend.set_load(users if rate_rps is None else rate_rps)
    out, rps, cpu = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    for k in range(warmup + steps):
        clock.sleep_until((k + 1) * step_s)
        obs = backend.observe()
        if jobs is not None and jobs.runner_mode == "job":
            backend.scale_to(replicas)  # one-shot runners exit: held at the count as a scaler would
        # the p95 is censored where nothing completed under load, as the loop scores it
        if k >= warmup:
            out[k - warmup] = obs.context.p95_ms
            rps[k - warmup] = obs.context.rps
            cpu[k - warmup] = sum(p.cpu_cores or 0.0 for p in obs.pods)
    return SteadySteps(out, rps, cpu)


@dataclass
class OracleTable:
    """Fewest replicas meeting ``slo_ms`` per load level, computed lazily and cached."""

    app: AppProfile
    settings: ClusterSettings
    context: ContextSettings
    slo_ms: float
    open_loop: bool = False
    step_s: float = 5.0
    measure_steps: int = 20
    seed: int = 0
    engine: str = "des"  # or "fluid": the fluid model's p95 decides
    jobs: JobsSettings | None = None  # the jobs model's runners (engine des)
    cache: dict[float, int] = field(default_factory=dict)

    def _meets(self, load: float, replicas: int) -> bool:
        if self.engine == "fluid":
            from scalelab.simulator.fluid import FluidCluster  # its steady states are shared per process

            fluid = FluidCluster(self.app, self.settings.held_at(replicas), self.context, closed=not self.open_loop)
            return fluid.step(load, self.step_s).p95_ms <= self.slo_ms
        warmup = max(6, math.ceil(self.settings.think_high_s / self.step_s) + 2)
        kwargs = {"rate_rps": load} if self.open_loop else {"users": int(load)}
        p95 = steady_state_p95s(
            self.app, self.settings, self.context, replicas, steps=self.measure_steps,
            warmup=warmup, seed=self.seed, step_s=self.step_s, jobs=self.jobs, **kwargs,
        )
        return bool(p95.mean() <= self.slo_ms and p95.max() <= self.slo_ms)

    def replicas_for(self, load: float) -> int:
        """Fewest replicas in ``[min, max]`` meeting the SLO at ``load`` (``max`` if
        none does)."""
        load = float(load)
        if load in self.cache:
            return self.cache[load]
        lo, hi = self.settings.min_replicas, self.settings.max_replicas
        if load <= 0:
            self.cache[load] = lo
            return lo
        below = [v for k, v in self.cache.items() if k < load]
        n = max([lo, *below])
        if n >= hi or self._meets(load, n):
            self.cache[load] = min(n, hi)
            return self.cache[load]
        # galloping search: n, n+1, n+3, n+7, ... until one meets (or hi), then bisect the last gap;
        # the same answer as counting up one by one where more replicas never hurt, in O(log) probes
        fail, step = n, 1
        while True:
            probe = min(fail + step, hi)
            if probe >= hi and not self._meets(load, hi):  # not even the cap meets: the cap
                self.cache[load] = hi
                return hi
            if probe >= hi or self._meets(load, probe):
                break
            fail, step = probe, 2 * step
        ok = probe  # meets
        while ok - fail > 1:
            mid = (fail + ok) // 2
            if self._meets(load, mid):
                ok = mid
            else:
                fail = mid
        self.cache[load] = ok
        return ok

    def for_levels(self, levels: np.ndarray, progress=None) -> np.ndarray:
        """Answers for every value of ``levels`` (shape kept), lowest load first."""
        levels = np.asarray(levels, dtype=float)
        for value in np.unique(levels):
            self.replicas_for(value)
            if progress is not None:
                progress(1)
        return np.array([self.cache[float(v)] for v in levels.ravel()]).reshape(levels.shape)
