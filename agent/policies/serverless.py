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

#: Knative's decider tick (``tickInterval``, ``scaling/multiscaler.go``), s: the bucket
#: width of the scale-down delay window (``max.NewTimeWindow(ScaleDownDelay, tickInterval)``).
TICK_INTERVAL_S = 2

#: ``autoscaling.WindowMax``, s: the longest scale-down delay a revision may ask for.
WINDOW_MAX_S = 3600


def concurrency(context: Context) -> float:
    """Total requests in flight, by Little's law: ``rps × mean_ms / 1000``."""
    return context.rps * context.mean_ms / 1000.0


class MaxWindow:
    """Knative's ``aggregation/max/window.go``: the largest value recorded over the last
    ``size`` indexes, by the descending-minima algorithm.

    Kept: the values that are larger than every later one, oldest first, each with its
    index; :meth:`current` is the first. Indexes must not decrease.

    >>> w = MaxWindow(3)
    >>> [(w.record(i, v), w.current())[1] for i, v in enumerate([5, 8, 5, 7, 1])]
    [5, 8, 8, 8, 7]
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a max window needs at least one bucket, got {size}")
        self.size = int(size)
        self.maxima: deque[tuple[int, int]] = deque()  # (index, value), values descending

    def record(self, index: int, value: int) -> None:
        """``window.Record``: ``value`` at ``index``."""
        # Values not larger than the new one can never be the maximum again.
        while self.maxima and not value < self.maxima[-1][1]:
            self.maxima.pop()
        # The oldest fall out of the window.
        while self.maxima and index - self.maxima[0][0] >= self.size:
            self.maxima.popleft()
        # Several values at one index: the largest is kept.
        if self.maxima and self.maxima[-1][0] == index:
            value = max(value, self.maxima.pop()[1])
        self.maxima.append((index, value))
        if len(self.maxima) > self.size:  # Knative panics here: indexes went backwards
            raise ValueError(f"max window: {len(self.maxima)} entries in {self.size} buckets (index {index} "
                             "is older than one recorded)")

    def current(self) -> int:
        """``window.Current``: the largest value in the window (0 before any record)."""
        return self.maxima[0][1] if self.maxima else 0

    def state(self) -> list[list[int]]:
        return [[i, v] for i, v in self.maxima]

    def load(self, state: list) -> None:
        self.maxima = deque((int(i), int(v)) for i, v in state)


class MaxTimeWindow:
    """Knative's ``aggregation/max/timewindow.go``: a :class:`MaxWindow` of
    ``ceil(duration / granularity)`` buckets indexed by time, the bucket of ``t`` being
    ``⌊t⌋ // granularity`` (Go: ``int(now.Unix()) / int(granularity.Seconds())``).

    duration_s, granularity_s: seconds (granularity a whole number of seconds, as Go's
    integer division of Unix seconds makes it).
    """

    def __init__(self, duration_s: float, granularity_s: int) -> None:
        if int(granularity_s) < 1:
            raise ValueError(f"a time window needs a granularity of at least 1 s, got {granularity_s}")
        self.granularity = int(granularity_s)
        self.window = MaxWindow(math.ceil(duration_s / granularity_s))

    def record(self, t: float, value: int) -> None:
        """``TimeWindow.Record``: ``value`` at ``t`` seconds."""
        self.window.record(math.floor(t) // self.granularity, value)

    def current(self) -> int:
        """``TimeWindow.Current``: the largest value of the last ``duration_s``."""
        return self.window.current()


def _whole(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()


class KPA(BasePolicy):
    """Knative's Pod Autoscaler decider (``scaling/autoscaler.go``).

    target: concurrent requests per pod (Knative: container concurrency 100 × target
    utilization 0.7 = 70; a CPU-bound sandbox wants about 1). Stable window 60 s, panic
    window 6 s (whole steps, at least one), panic at 200 %; no scale-down while
    panicking; panic ends 60 s after the last over-threshold tick. As Knative's
    ``newAutoscaler``, it starts in panic mode when more than one pod is ready at its
    first tick, keeping at least that count until it has data. A step without metric
    data (its spans missing) records nothing: the windows average the steps up to the
    newest one with data (:meth:`window_average`), and with no data in the whole stable
    window the current replicas are kept (Knative's "no data, no scale").

    The rest of Knative's settings, with its defaults (``config-autoscaler`` and the
    revision's annotations):

    - max_scale_up_rate (``max-scale-up-rate``, 1000) and max_scale_down_rate
      (``max-scale-down-rate``, 2), both > 1: each tick the stable and panic pod counts
      are held to ``[⌊r / down⌋, ⌈up · r⌉]`` with ``r`` the ready pods, at least 1.
    - scale_down_delay_s (``scale-down-delay``, 0 s; whole seconds within [0, 3600]):
      the decision is the largest of those of the last ``scale_down_delay_s`` (a
      :class:`MaxTimeWindow` in 2-s buckets, Knative's decider tick); 0: no window.
    - activation_scale (``activation-scale``, 1: off): a stable or panic pod count whose
      unbounded value is above 0 is at least ``activation_scale``.
    - min_scale, max_scale (``min-scale`` 0, ``max-scale`` 0 = unbounded): the
      reconciler's bounds on the decision (none while there is no data); an
      ``activation_scale`` above 1 must lie within them.

    The revision is always reachable (it takes the traffic), so the scale-down rate and
    the delay always apply. ``max_replicas`` (the testbed's action set) caps the order.
    """

    name = "kpa"

    def __init__(self, target: float = 70.0, stable_window_s: float = 60.0, panic_window_s: float = 6.0,
                 panic_threshold: float = 2.0, max_scale_up_rate: float = 1000.0, max_scale_down_rate: float = 2.0,
                 scale_down_delay_s: float = 0.0, activation_scale: int = 1, min_scale: int = 0, max_scale: int = 0,
                 step_seconds: float = 5.0, max_replicas: int = 10, seed=None) -> None:
        self._validate(target, max_scale_up_rate, max_scale_down_rate, scale_down_delay_s, activation_scale,
                       min_scale, max_scale)
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.target, self.threshold = float(target), float(panic_threshold)
        self.up_rate, self.down_rate = float(max_scale_up_rate), float(max_scale_down_rate)
        self.stable_n = max(1, round(stable_window_s / step_seconds))
        self.panic_n = max(1, round(panic_window_s / step_seconds))
        self.stable_s = float(stable_window_s)
        self.scale_down_delay_s = float(scale_down_delay_s)
        self.activation_scale = int(activation_scale)
        self.min_scale, self.max_scale = int(min_scale), int(max_scale)
        self.reachable = True  # Knative's DeciderSpec.Reachable: the revision takes traffic
        self.history: deque[float | None] = deque(maxlen=self.stable_n)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.started = False
        # ``New``: a delay window only for a positive delay (a one-bucket window is not
        # the same as none: two decisions in one bucket would keep the larger).
        self.delay_window = (MaxTimeWindow(self.scale_down_delay_s, TICK_INTERVAL_S)
                             if self.scale_down_delay_s > 0 else None)

    @staticmethod
    def _validate(target, up_rate, down_rate, delay_s, activation, min_scale, max_scale) -> None:
        """Knative's ``config.validate`` and ``ValidateAnnotations`` rules; each error names
        the parameter, the rule and the value."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise PolicyError(f"kpa: {message}")

        need(target > 0, f"target={target!r} must be > 0 (concurrent requests per pod)")
        need(up_rate > 1, f"max_scale_up_rate={up_rate!r} must be greater than 1.0 (Knative's default: 1000)")
        need(down_rate > 1, f"max_scale_down_rate={down_rate!r} must be greater than 1.0 (Knative's default: 2)")
        need(isinstance(delay_s, int | float) and not isinstance(delay_s, bool) and 0 <= delay_s <= WINDOW_MAX_S,
             f"scale_down_delay_s={delay_s!r} must be within [0, {WINDOW_MAX_S}] seconds")
        need(float(delay_s).is_integer(), f"scale_down_delay_s={delay_s!r} must be a whole number of seconds")
        need(_whole(min_scale) and min_scale >= 0, f"min_scale={min_scale!r} must be an integer >= 0")
        need(_whole(max_scale) and max_scale >= 0, f"max_scale={max_scale!r} must be an integer >= 0 (0: unbounded)")
        need(max_scale == 0 or max_scale >= min_scale,
             f"max_scale={max_scale!r} is less than min_scale={min_scale!r}")
        need(_whole(activation) and activation >= 1,
             f"activation_scale={activation!r} must be an integer >= 1 (1: off; Knative takes 2 or more)")
        if activation > 1:
            need(min_scale <= activation, f"min_scale={min_scale!r} is greater than activation_scale={activation!r}")
            need(max_scale == 0 or activation <= max_scale,
                 f"max_scale={max_scale!r} is less than activation_scale={activation!r}")

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
        max_down = math.floor(ready / self.down_rate) if self.reachable else 0
        dspc = math.ceil(round(stable / self.target, 9))
        dppc = math.ceil(round(panic / self.target, 9))
        desired_stable = min(max(dspc, max_down), max_up)
        desired_panic = min(max(dppc, max_down), max_up)
        if self.activation_scale > 1:  # a count above 0 is at least the activation scale
            if dspc > 0:
                desired_stable = max(desired_stable, self.activation_scale)
            if dppc > 0:
                desired_panic = max(desired_panic, self.activation_scale)
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
        if self.reachable and self.delay_window is not None:  # the largest of the delay window
            self.delay_window.record(t, desired)
            desired = self.delay_window.current()
        return desired

    def bounded(self, desired: int) -> int:
        """The reconciler's ``applyBounds``: at least ``min_scale``, at most ``max_scale``
        when it is set (``scaler.scale``)."""
        if desired < self.min_scale:
            return self.min_scale
        if self.max_scale != 0 and desired > self.max_scale:
            return self.max_scale
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
        the current replicas are kept; otherwise the decision within
        ``[min_scale, max_scale]`` (:meth:`bounded`)."""
        info = info or {}
        t = float(info.get("t_s", 0.0))
        obs = info.get("observation")
        no_data = obs is not None and NO_DATA_SIGNAL in obs.missing
        d = self.desired(t, context.replicas, None if no_data else concurrency(context))
        if d is None:
            d = int(info.get("current_replicas", context.replicas))
        else:
            d = self.bounded(d)
        return Decision(action=min(d, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": list(self.history), "panic_time": self.panic_time,
                "max_panic_pods": self.max_panic_pods, "started": self.started,
                "delay_window": None if self.delay_window is None else self.delay_window.window.state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = deque((None if x is None else float(x) for x in state["history"]), maxlen=self.stable_n)
        self.panic_time, self.max_panic_pods = state["panic_time"], int(state["max_panic_pods"])
        self.started = bool(state["started"])
        if self.delay_window is not None:
            self.delay_window.window.load(state.get("delay_window") or [])


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
