"""Rule-based baselines: the paper's CPU threshold and Kubernetes' HPA controller.

Both read the CPU usage over request of the newest scrape (``cpu_request_now``), as
metrics-server would give it, and order a fixed replica count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent.actions import ActionSet
from agent.base import BasePolicy, Decision, PolicyError
from orchestrator.context import Context


class ThresholdCPU(BasePolicy):
    """The paper's threshold autoscaler (``real/hpa.ipynb``):
    ``desired = ceil(n · cpu_millicores / threshold_m)``, n ready replicas, cpu per pod in
    millicores, threshold 470 m (94 % of the 500 m request)."""

    name = "threshold-cpu"

    def __init__(self, threshold_m: float = 470.0, cpu_request: float = 0.5, max_replicas: int = 10, seed=None):
        if threshold_m <= 0 or cpu_request <= 0:
            raise PolicyError("threshold-cpu: threshold_m and cpu_request must be > 0")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.threshold_m, self.cpu_request = float(threshold_m), float(cpu_request)

    def desired(self, context: Context, replicas: int | None = None) -> int:
        """``replicas`` is the deployment's count (the notebook read it from Kubernetes);
        the context's ready count when not given."""
        n = context.replicas if replicas is None else replicas
        millicores = context.cpu_request_now * self.cpu_request * 1000.0
        return math.ceil(round(n * millicores / self.threshold_m, 9))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        d = self.desired(context, (info or {}).get("current_replicas"))
        return Decision(action=min(d, len(self.actions) - 1), probability=1.0)


class HPA(BasePolicy):
    """The Kubernetes HorizontalPodAutoscaler on a CPU Utilization target, as the
    controller computes it (reference/baselines.md, section 1).

    behavior: ``none`` (the legacy path: 300 s max-recommendation window, scale-up limited
    to max(2n, 4) per sync) or ``default`` (``behavior: {}``: scale up by max(4 pods,
    100 %) per 15 s, scale down 100 % per 15 s after a 300 s stabilization window).
    Utilization is an integer percent (truncated); the tolerance is inclusive; the
    ratio multiplies the **ready** pods; pods still starting count as unready (at 0 %
    when scaling up); a sync happens every ``sync_seconds``.
    """

    name = "hpa"

    def __init__(self, target_utilization: int = 80, behavior: str = "none", tolerance: float = 0.1,
                 sync_seconds: float = 15.0, downscale_window_s: float = 300.0, min_replicas: int = 1,
                 max_replicas: int = 10, seed=None) -> None:
        if behavior not in ("none", "default"):
            raise PolicyError(f"hpa: behavior={behavior!r} must be 'none' (legacy) or 'default'")
        if not 0 < target_utilization:
            raise PolicyError(f"hpa: target_utilization must be > 0, got {target_utilization}")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.target, self.behavior, self.tolerance = int(target_utilization), behavior, float(tolerance)
        self.sync_s, self.window_s = float(sync_seconds), float(downscale_window_s)
        self.min_r, self.max_r = int(min_replicas), int(max_replicas)
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []
        self.last_sync: float | None = None

    # -- replica_calculator.go, CPU Utilization, pods sharing one request
    def within(self, ratio: float) -> bool:
        return 1.0 - self.tolerance <= ratio <= 1.0 + self.tolerance

    def proposal(self, current: int, ready: int, unready: int, cpu_over_request: float) -> int:
        if ready == 0:
            return current  # no metrics for the targeted pods: no change
        util = int(cpu_over_request * 100.0 + 1e-9)
        usage = util / self.target
        if not (unready > 0 and usage > 1.0):
            return current if self.within(usage) else math.ceil(round(usage * ready, 9))
        new_util = int(cpu_over_request * 100.0 * ready / (ready + unready) + 1e-9)  # unready at 0 %
        new_ratio = new_util / self.target
        if self.within(new_ratio) or new_ratio < 1.0:
            return current
        new_replicas = math.ceil(round(new_ratio * (ready + unready), 9))
        return current if new_replicas < current else new_replicas

    # -- horizontal.go
    def _legacy(self, t: float, current: int, desired: int) -> int:
        stab = max([r for ts, r in self.recommendations if ts >= t - self.window_s] + [desired])
        self.recommendations = [(ts, r) for ts, r in self.recommendations if ts >= t - self.window_s]
        self.recommendations.append((t, desired))
        max_allowed = min(self.max_r, max(2 * current, 4))
        return max(self.min_r, min(stab, max_allowed))

    def _events(self, events, t, period=15.0) -> int:
        return sum(change for ts, change in events if ts > t - period)

    def _behavior(self, t: float, current: int, desired: int) -> int:
        down_rec = max([r for ts, r in self.recommendations if ts > t - self.window_s] + [desired])
        rec = current
        if rec < desired:  # scale-up stabilization window is 0 s: upRec = desired
            rec = desired
        if rec > down_rec:
            rec = down_rec
        self.recommendations = [(ts, r) for ts, r in self.recommendations if ts > t - self.window_s]
        self.recommendations.append((t, desired))
        start = current - self._events(self.up_events, t) + self._events(self.down_events, t)
        if rec > current:
            limit = max(start + 4, math.ceil(start * 2.0))  # Pods 4 / 15 s, Percent 100 / 15 s, Max
            return min(rec, self.max_r, max(limit, current))
        if rec < current:
            limit = min(int(start * (1.0 - 1.0)), current)  # Percent 100 / 15 s
            return max(rec, self.min_r, limit)
        return rec

    def reconcile(self, t: float, current: int, ready: int, cpu_over_request: float) -> int:
        """One sync of the controller at ``t`` s; returns the new ``spec.replicas``."""
        if not self.recommendations:
            self.recommendations.append((t, current))
        if current == 0 and self.min_r != 0:
            return current
        if current > self.max_r:
            desired = self.max_r
        elif current < self.min_r:
            desired = self.min_r
        else:
            prop = self.proposal(current, ready, max(current - ready, 0), cpu_over_request)
            if self.behavior == "none":
                desired = self._legacy(t, current, prop)
            else:
                desired = self._behavior(t, current, prop)
        if desired != current and self.behavior != "none":
            events = self.up_events if desired > current else self.down_events
            events.append((t, abs(desired - current)))
        return desired

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        t = float(info.get("t_s", 0.0))
        current = int(info.get("current_replicas", context.replicas))
        if self.last_sync is not None and t - self.last_sync < self.sync_s - 1e-9:
            return Decision(action=min(current, len(self.actions) - 1), probability=1.0)
        self.last_sync = t
        desired = self.reconcile(t, current, context.replicas, context.cpu_request_now)
        return Decision(action=min(desired, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "recommendations": self.recommendations, "up": self.up_events,
                "down": self.down_events, "last_sync": self.last_sync}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.recommendations = [tuple(x) for x in state["recommendations"]]
        self.up_events = [tuple(x) for x in state["up"]]
        self.down_events = [tuple(x) for x in state["down"]]
        self.last_sync = state["last_sync"]
