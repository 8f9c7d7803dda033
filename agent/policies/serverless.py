"""Baselines from serverless and education platforms (docs/baselines.md), driven by
the context.

The context has no per-pod concurrency; these rules use the total in-flight requests
that Little's law gives, ``rps × mean response time``, and the newest scrape's CPU.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.orchestrator.context import Context

#: The signal the KPA's concurrency comes from (the spans' rate and mean latency): a step
#: whose observation lists it as missing brings the KPA no metric data.
NO_DATA_SIGNAL = "spans"


def concurrency(context: Context) -> float:
    """Total requests in flight, by Little's law: ``rps × mean_ms / 1000``."""
    return context.rps * context.mean_ms / 1000.0


class KPA(BasePolicy):
    """Knative's Pod Autoscaler decider (``scaling/autoscaler.go``).

    target: concurrent requests per pod (Knative: container concurrency 100 × target
    utilization 0.7 = 70; a CPU-bound sandbox wants about 1). Stable window 60 s, panic
    window 6 s (whole steps, at least one), panic at 200 %, scale-up rate 1000, scale-down
    rate 2; no scale-down while panicking; panic ends 60 s after the last over-threshold
    tick. As Knative's ``newAutoscaler``, it starts in panic mode when more than one pod
    is ready at its first tick, keeping at least that count until it has data. A step
    without metric data (its spans missing) records nothing: the windows average the
    steps up to the newest one with data (:meth:`window_average`), and with no data in
    the whole stable window the current replicas are kept (Knative's "no data, no
    scale").
    """

    name = "kpa"

    def __init__(self, target: float = 70.0, stable_window_s: float = 60.0, panic_window_s: float = 6.0,
                 panic_threshold: float = 2.0, max_scale_up_rate: float = 1000.0, max_scale_down_rate: float = 2.0,
                 step_seconds: float = 5.0, max_replicas: int = 10, seed=None) -> None:
        if target <= 0 or max_scale_down_rate <= 1 or max_scale_up_rate <= 1:
            raise PolicyError("kpa: need target > 0, max_scale_up_rate > 1, max_scale_down_rate > 1")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.target, self.threshold = float(target), float(panic_threshold)
        self.up_rate, self.down_rate = float(max_scale_up_rate), float(max_scale_down_rate)
        self.stable_n = max(1, round(stable_window_s / step_seconds))
        self.panic_n = max(1, round(panic_window_s / step_seconds))
        self.stable_s = float(stable_window_s)
        self.history: deque[float | None] = deque(maxlen=self.stable_n)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.started = False

    def begin(self, t: float, ready_pods: int) -> None:
        """``newAutoscaler``: created over more than one ready pod, it starts in panic mode
        with ``maxPanicPods`` = that count."""
        self.started = True
        if ready_pods > 1:
            self.panic_time, self.max_panic_pods = t, ready_pods
        else:
            self.panic_time, self.max_panic_pods = None, ready_pods

    def scale(self, t: float, ready_pods: int, stable: float, panic: float) -> int:
        """``autoscaler.Scale`` on the stable- and panic-window averages of the observed
        concurrency (requests in flight, all pods together): the desired pod count."""
        ready = max(1, ready_pods)
        max_up = math.ceil(self.up_rate * ready)
        max_down = math.floor(ready / self.down_rate)
        dspc = math.ceil(round(stable / self.target, 9))
        dppc = math.ceil(round(panic / self.target, 9))
        desired_stable = min(max(dspc, max_down), max_up)
        desired_panic = min(max(dppc, max_down), max_up)
        over = dppc / ready >= self.threshold
        if over:  # begin panicking, or extend the panic window
            self.panic_time = t
        elif self.panic_time is not None and t > self.panic_time + self.stable_s:
            self.panic_time, self.max_panic_pods = None, 0  # the surge has reached the stable window
        desired = desired_stable
        if self.panic_time is not None:  # no scale-down in panic; the larger of stable and panic
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return desired

    def window_average(self, steps: int) -> float | None:
        """The mean over the newest ``steps`` ticks of the history, as Knative's
        ``TimedFloat64Buckets.WindowAverage``: ticks without data after the newest one
        with data are left out; earlier ones count as 0. None: no data in those ticks."""
        recent = list(self.history)[-steps:]
        while recent and recent[-1] is None:
            recent.pop()
        if not recent:
            return None
        return sum(v for v in recent if v is not None) / len(recent)

    def desired(self, t: float, ready_pods: int, observed: float | None) -> int | None:
        """One tick: ``observed`` joins the windows (whole steps; None: the tick has no
        metric data), then :meth:`scale`; the first tick creates the autoscaler
        (:meth:`begin`). None when the stable window has no data at all (Knative's
        ``ErrNoData``: ``Scale`` returns an invalid result and the scale is kept)."""
        if not self.started:
            self.begin(t, ready_pods)
        if observed is not None or self.history:  # the windows start at the first data
            self.history.append(observed)
        stable = self.window_average(self.stable_n)
        if stable is None:
            return None
        panic = self.window_average(self.panic_n)
        return self.scale(t, ready_pods, stable, 0.0 if panic is None else panic)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        """The observation's concurrency; a step whose spans are missing
        (``observation.missing``) brings no data, and without data in the stable window
        the current replicas are kept."""
        info = info or {}
        t = float(info.get("t_s", 0.0))
        obs = info.get("observation")
        no_data = obs is not None and NO_DATA_SIGNAL in obs.missing
        d = self.desired(t, context.replicas, None if no_data else concurrency(context))
        if d is None:
            d = int(info.get("current_replicas", context.replicas))
        return Decision(action=min(d, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": list(self.history), "panic_time": self.panic_time,
                "max_panic_pods": self.max_panic_pods, "started": self.started}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = deque((None if x is None else float(x) for x in state["history"]), maxlen=self.stable_n)
        self.panic_time, self.max_panic_pods = state["panic_time"], int(state["max_panic_pods"])
        self.started = bool(state["started"])


class PrairieLearnNotes(BasePolicy):
    """The rule in PrairieLearn's design notes: ``desired jobs = n + 2√n`` for ``n`` jobs
    in flight, divided by ``jobs_per_host``, rounded up (at least 1)."""

    name = "prairielearn-notes"

    def __init__(self, jobs_per_host: float = 1.0, max_replicas: int = 10, seed=None) -> None:
        if jobs_per_host <= 0:
            raise PolicyError(f"prairielearn-notes: jobs_per_host must be > 0, got {jobs_per_host}")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.jobs_per_host = float(jobs_per_host)

    def hosts(self, jobs: float) -> int:
        return max(1, math.ceil(round((jobs + 2 * math.sqrt(max(jobs, 0.0))) / self.jobs_per_host, 9)))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        return Decision(action=min(self.hosts(concurrency(context)), len(self.actions) - 1), probability=1.0)


class PrairieLearn(BasePolicy):
    """The rule PrairieLearn's code runs (``workspaceHostLoads.ts``):
    ``hosts = max(1, ceil((active_healthy + (capacity_factor − 1) · active) / host_capacity))``;
    every in-flight request counts as active and healthy (on a ready replica)."""

    name = "prairielearn"

    def __init__(self, host_capacity: float = 40.0, capacity_factor: float = 1.3, max_replicas: int = 10,
                 seed=None) -> None:
        if host_capacity <= 0 or capacity_factor < 1:
            raise PolicyError("prairielearn: need host_capacity > 0 and capacity_factor >= 1")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.capacity, self.factor = float(host_capacity), float(capacity_factor)

    def hosts(self, active_healthy: float, active: float) -> int:
        return max(1, math.ceil(round((active_healthy + active * (self.factor - 1)) / self.capacity, 9)))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        n = concurrency(context)
        return Decision(action=min(self.hosts(n, n), len(self.actions) - 1), probability=1.0)


class Invok(BasePolicy):
    """Invok's thresholds (``runtime/src/core/autoscaler.rs``, server-config defaults):
    one more replica when the pods are overloaded (CPU or memory above 70 % of the
    limit); one fewer after they have been idle (CPU at most ``idle_cpu`` of the limit)
    for ``cooldown_s``; bounds 1..10. The context gives means over pods, so "all pods
    overloaded" is read as "the mean pod overloaded"."""

    name = "invok"

    def __init__(self, cpu_threshold: float = 0.7, memory_threshold: float = 0.7, idle_cpu: float = 0.0,
                 cooldown_s: float = 30.0, min_replicas: int = 1, max_replicas: int = 10, seed=None) -> None:
        super().__init__(ActionSet.incremental(-1, 0, 1), seed)
        self.cpu_thr, self.mem_thr, self.idle_cpu = float(cpu_threshold), float(memory_threshold), float(idle_cpu)
        self.cooldown = float(cooldown_s)
        self.min_r, self.max_r = int(min_replicas), min(int(max_replicas), 10)
        self.idle_since: float | None = None

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        t = float(info.get("t_s", 0.0))
        n = int(info.get("current_replicas", context.replicas))
        cpu = context.cpu_request_now * context.cpu_limit_ratio / max(context.cpu_request_ratio, 1e-12) \
            if context.cpu_request_ratio > 0 else 0.0  # newest CPU over the limit
        if cpu > self.cpu_thr or context.mem_limit_ratio > self.mem_thr:
            self.idle_since = None
            return Decision(action=2 if n < self.max_r else 1, probability=1.0)
        if cpu <= self.idle_cpu:
            if self.idle_since is None:
                self.idle_since = t
            if t - self.idle_since >= self.cooldown and n > self.min_r:
                self.idle_since = t
                return Decision(action=0, probability=1.0)
        else:
            self.idle_since = None
        return Decision(action=1, probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "idle_since": self.idle_since}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.idle_since = state["idle_since"]
