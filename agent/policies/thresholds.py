"""Rule-based baselines: the paper's CPU threshold and Kubernetes' HPA controller.

Both read the CPU usage over request of the newest scrape (``cpu_request_now``), as
metrics-server would give it, and order a fixed replica count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.agent.policies.hpa_behavior import (
    DOWNSCALE_STABILIZATION_S,
    ScaleEvent,
    ScalingRules,
    convert_desired_replicas_with_rules,
    convert_with_behavior_rate,
    generate_scale_down_rules,
    generate_scale_up_rules,
    parse_policies,
    stabilize_recommendation,
    stabilize_with_behaviors,
    store_scale_event,
)
from scalelab.orchestrator.backend import Observation, PodSample
from scalelab.orchestrator.context import Context


@dataclass(frozen=True)
class HPAPod:
    """A pod as ``replica_calculator.go`` sees it (times in s; CPU in millicores).

    phase: ``Running``, ``Pending``, ``Failed`` or ``Succeeded``. deleted: it has a
    deletion timestamp. ready: its Ready condition (None: no condition).
    ready_transition_s: that condition's last transition. request_m: the sum of its
    containers' CPU requests (None: a container has none). metric_m: its CPU usage from
    the metrics API (None: no metric), sampled at ``metric_t_s`` over ``metric_window_s``.
    """

    name: str
    request_m: int | None
    metric_m: int | None
    phase: str = "Running"
    deleted: bool = False
    ready: bool | None = True
    start_s: float | None = 0.0
    ready_transition_s: float = 0.0
    metric_t_s: float = 0.0
    metric_window_s: float = 60.0


class HPAError(PolicyError):
    """What the controller reports as a failed metric computation (it then keeps the
    current scale)."""


@dataclass(frozen=True)
class Tolerances:
    """``replica_calculator.go``'s ``Tolerances`` (KEP-4951): a usage ratio within
    ``[1 - scale_down, 1 + scale_up]`` (both ends inclusive) changes nothing. Fractions
    of the target (0.1 = 10 %); the controller's flag gives 0.1 both ways."""

    scale_down: float = 0.1
    scale_up: float = 0.1

    def __post_init__(self) -> None:
        for name in ("scale_down", "scale_up"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v):
                raise PolicyError(f"hpa: tolerance {name}={v!r} must be a number >= 0 (a fraction: 0.1 is 10 %)")

    @classmethod
    def of(cls, tolerance: float | Tolerances) -> Tolerances:
        """One number is the same tolerance both ways."""
        return tolerance if isinstance(tolerance, Tolerances) else cls(float(tolerance), float(tolerance))

    def within(self, usage_ratio: float) -> bool:
        """``Tolerances.isWithin``: the comparison is made on the ratio itself, so a
        ratio of exactly ``1 + scale_up`` (e.g. 88 % of an 80 % target) is within;
        ``abs(1 - ratio) <= tolerance`` would not be, 1 - 1.1 being -0.10000000000000009
        in floating point."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


def group_pods(pods: Sequence[HPAPod], now_s: float, cpu_initialization_period_s: float,
               delay_of_initial_readiness_status_s: float,
               metrics: Mapping[str, int] | None = None) -> tuple[int, set[str], set[str], set[str]]:
    """``groupPods`` for the CPU resource: (ready pod count, unready pods, missing pods,
    ignored pods). Ignored: deleted (a deletion timestamp) or Failed; unready: Pending,
    or not ready by the CPU rules; missing: no metric. ``metrics``: usage by pod name
    (default: each pod's ``metric_m``)."""
    if metrics is None:
        metrics = {p.name: p.metric_m for p in pods if p.metric_m is not None}
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleted or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        if pod.name not in metrics:
            missing.add(pod.name)
            continue
        if pod.ready is None or pod.start_s is None:
            not_ready = True
        elif pod.start_s + cpu_initialization_period_s > now_s:
            # still in its initialisation period: unready, or no whole metric window since it changed
            not_ready = pod.ready is False or pod.metric_t_s < pod.ready_transition_s + pod.metric_window_s
        else:
            # unready and never ready since it started
            not_ready = pod.ready is False and pod.start_s + delay_of_initial_readiness_status_s > pod.ready_transition_s
        if not_ready:
            unready.add(pod.name)
            continue
        ready += 1
    return ready, unready, missing, ignored


def utilization_ratio(metrics: Mapping[str, int], requests: Mapping[str, int], target: int) -> tuple[float, int, int]:
    """``GetResourceUtilizationRatio``: (usage ratio, utilization %, raw mean), integer
    arithmetic in the Go source's order."""
    total_m = total_r = entries = 0
    for name, value in metrics.items():
        if name in requests:
            total_m += value
            total_r += requests[name]
            entries += 1
    if total_r == 0:
        raise HPAError("no metrics returned matched known pods")
    utilization = (total_m * 100) // total_r
    return utilization / target, utilization, total_m // entries


def resource_replicas(current: int, target_utilization: int, pods: Sequence[HPAPod], now_s: float,
                      tolerance: float | Tolerances = 0.1, cpu_initialization_period_s: float = 300.0,
                      delay_of_initial_readiness_status_s: float = 30.0,
                      metrics: Mapping[str, int] | None = None) -> tuple[int, int, int]:
    """``ReplicaCalculator.GetResourceReplicas`` for CPU: (replicas, utilization %,
    raw mean usage in millicores). Defaults are kube-controller-manager's flags;
    ``tolerance``: one fraction both ways, or :class:`Tolerances`. ``metrics``: the
    metrics API's answer by pod name, which may name pods the lister does not have
    (default: each pod's ``metric_m``)."""
    tol = Tolerances.of(tolerance)
    metrics = dict({p.name: p.metric_m for p in pods if p.metric_m is not None} if metrics is None else metrics)
    if not metrics:
        raise HPAError("unable to get metrics for resource cpu: no metrics returned from resource metrics API")
    if not pods:
        raise HPAError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = group_pods(pods, now_s, cpu_initialization_period_s,
                                                  delay_of_initial_readiness_status_s, metrics)
    for name in ignored | unready:
        metrics.pop(name, None)
    if not metrics:
        raise HPAError("did not receive metrics for targeted pods (pods might be unready)")
    requests = {}
    for p in pods:
        if p.request_m is None:
            raise HPAError(f"missing request for cpu in pod {p.name}")
        requests[p.name] = p.request_m
    ratio, utilization, raw = utilization_ratio(metrics, requests, target_utilization)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if tol.within(ratio):
            return current, utilization, raw
        return math.ceil(ratio * ready), utilization, raw
    if missing:
        if ratio < 1.0:  # scale-down: missing pods at 100 % of their request, or at the target above 100 %
            fallback = max(100, target_utilization)
            for name in missing:
                metrics[name] = requests[name] * fallback // 100
        elif ratio > 1.0:  # scale-up: at 0 %
            for name in missing:
                metrics[name] = 0
    if scale_up_with_unready:  # scale-up: unready pods at 0 %
        for name in unready:
            metrics[name] = 0
    new_ratio, _, _ = utilization_ratio(metrics, requests, target_utilization)
    if tol.within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, utilization, raw
    new_replicas = math.ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return current, utilization, raw
    return new_replicas, utilization, raw


def hpa_pods(obs: Observation, metric_window_s: float) -> list[HPAPod]:
    """The observation's pods as the controller sees them: draining pods carry a
    deletion timestamp; a starting pod with a CPU sample is Running with Ready false
    since its creation; a starting pod without one has not started its containers
    (the metrics API has nothing from it): Pending."""
    out = []
    for p in obs.pods:
        metric = None if p.cpu_cores is None else math.ceil(round(p.cpu_cores * 1000.0, 6))
        starting = p.phase == "starting"
        out.append(HPAPod(
            name=p.pod, request_m=math.ceil(round(p.cpu_request * 1000.0, 6)), metric_m=metric,
            phase="Pending" if starting and metric is None else "Running",
            deleted=p.phase == "draining", ready=not starting, start_s=p.start_s,
            ready_transition_s=p.ready_s if p.ready_s is not None else p.start_s,
            metric_t_s=obs.t_s, metric_window_s=metric_window_s))
    return out


class ThresholdCPU(BasePolicy):
    """The paper's threshold autoscaler (``real/hpa.ipynb``):
    ``desired = ceil(n · cpu_millicores / threshold_m)``, n the pods measured, cpu the
    mean over them of metrics-server's pod CPU -- the sum of its containers, the
    app's and the sidecar's (``orchestrator.py`` 1229-1241) -- in millicores; threshold
    470 m (94 % of the app's 500 m request).

    It reads the pods of the observation when the backend reports them (simulator,
    live); otherwise the context's newest CPU/request ratio times ``cpu_request``, the
    pod's request in cores (0.6 with the paper's sidecar)."""

    name = "threshold-cpu"

    def __init__(self, threshold_m: float = 470.0, cpu_request: float = 0.6, max_replicas: int = 10, seed=None):
        if threshold_m <= 0 or cpu_request <= 0:
            raise PolicyError("threshold-cpu: threshold_m and cpu_request must be > 0")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.threshold_m, self.cpu_request = float(threshold_m), float(cpu_request)

    def desired(self, context: Context, replicas: int | None = None, pods: Sequence[PodSample] = ()) -> int:
        """``replicas`` is the deployment's count (the notebook read it from Kubernetes);
        the context's ready count when not given. With ``pods``, n and the CPU are
        theirs (the pods with a sample, draining ones left out)."""
        measured = [p.cpu_cores for p in pods if p.cpu_cores is not None and p.phase != "draining"]
        if measured:
            n, millicores = len(measured), 1000.0 * sum(measured) / len(measured)
        else:
            n = context.replicas if replicas is None else replicas
            millicores = context.cpu_request_now * self.cpu_request * 1000.0
        return math.ceil(round(n * millicores / self.threshold_m, 9))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        obs = info.get("observation")
        d = self.desired(context, info.get("current_replicas"), obs.pods if obs is not None else ())
        return Decision(action=min(d, len(self.actions) - 1), probability=1.0)


def direction_rules(prefix: str, policies: str, select: str, window_s: float | None, tolerance: float | None,
                    controller_window_s: float = DOWNSCALE_STABILIZATION_S) -> ScalingRules:
    """One direction's ``HPAScalingRules`` from the policy's ``<prefix>_*`` parameters,
    unset fields defaulted as the API does (:func:`generate_scale_up_rules`,
    :func:`generate_scale_down_rules`); an error names the parameter."""
    try:
        parsed = parse_policies(policies, f"{prefix}_policies") if policies.strip() else ()
        if prefix == "scale_up":
            return generate_scale_up_rules(parsed, select, window_s, tolerance)
        return generate_scale_down_rules(parsed, select, window_s, tolerance, controller_window_s)
    except PolicyError as exc:
        raise PolicyError(f"{exc} (parameters {prefix}_policies, {prefix}_select, {prefix}_window_s, "
                          f"{prefix}_tolerance)") from None


class HPA(BasePolicy):
    """The Kubernetes HorizontalPodAutoscaler on a CPU Utilization target, as the
    controller computes it (docs/baselines.md).

    behavior: ``none`` (no ``spec.behavior``, the legacy path: the largest recommendation
    of the last ``downscale_window_s``, scale-up limited to max(2n, 4) per sync) or
    ``default`` (a ``spec.behavior``, its unset fields filled with the API's defaults).
    With ``default``, each direction's ``HPAScalingRules`` are parameters, defaults
    Kubernetes': ``scale_up_policies`` ``"Pods 4/15s, Percent 100/15s"`` (``<Pods|Percent>
    <value>/<period>s``, comma-separated), ``scale_up_select`` ``Max`` (``Max``, ``Min``
    or ``Disabled``), ``scale_up_window_s`` 0; ``scale_down_policies`` ``"Percent
    100/15s"``, ``scale_down_select`` ``Max``, ``scale_down_window_s`` None (the
    controller's ``downscale_window_s``, 300 s); ``scale_up_tolerance`` and
    ``scale_down_tolerance`` (KEP-4951, fractions) None: ``tolerance``, the controller's
    flag, which is also the legacy path's both ways.

    Utilization is an integer percent (truncated); the tolerance is inclusive; the
    ratio multiplies the **ready** pods; pods still starting count as unready (at 0 %
    when scaling up); a sync happens every ``sync_seconds``.
    """

    name = "hpa"

    def __init__(self, target_utilization: int = 80, behavior: str = "none", tolerance: float = 0.1,
                 sync_seconds: float = 15.0, downscale_window_s: float = 300.0, min_replicas: int = 1,
                 max_replicas: int = 10, cpu_initialization_period_s: float = 300.0,
                 initial_readiness_delay_s: float = 30.0, metric_window_s: float = 15.0,
                 scale_up_policies: str = "Pods 4/15s, Percent 100/15s", scale_up_select: str = "Max",
                 scale_up_window_s: float = 0.0, scale_up_tolerance: float | None = None,
                 scale_down_policies: str = "Percent 100/15s", scale_down_select: str = "Max",
                 scale_down_window_s: float | None = None, scale_down_tolerance: float | None = None,
                 seed=None) -> None:
        if behavior not in ("none", "default"):
            raise PolicyError(f"hpa: behavior={behavior!r} must be 'none' (legacy) or 'default'")
        if not 0 < target_utilization:
            raise PolicyError(f"hpa: target_utilization must be > 0, got {target_utilization}")
        if not 0 <= tolerance:
            raise PolicyError(f"hpa: tolerance={tolerance!r} must be >= 0 (a fraction: 0.1 is 10 %)")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.target, self.behavior, self.tolerance = int(target_utilization), behavior, float(tolerance)
        self.sync_s, self.window_s = float(sync_seconds), float(downscale_window_s)
        self.min_r, self.max_r = int(min_replicas), int(max_replicas)
        self.scale_up = direction_rules("scale_up", scale_up_policies, scale_up_select, scale_up_window_s,
                                        scale_up_tolerance)
        self.scale_down = direction_rules("scale_down", scale_down_policies, scale_down_select, scale_down_window_s,
                                          scale_down_tolerance, controller_window_s=self.window_s)
        if behavior == "none":
            rules = {"scale_up_policies": (scale_up_policies, "Pods 4/15s, Percent 100/15s"),
                     "scale_up_select": (scale_up_select, "Max"), "scale_up_window_s": (scale_up_window_s, 0.0),
                     "scale_up_tolerance": (scale_up_tolerance, None),
                     "scale_down_policies": (scale_down_policies, "Percent 100/15s"),
                     "scale_down_select": (scale_down_select, "Max"),
                     "scale_down_window_s": (scale_down_window_s, None),
                     "scale_down_tolerance": (scale_down_tolerance, None)}
            set_ = [k for k, (v, default) in rules.items() if v != default]
            if set_:
                raise PolicyError(f"hpa: {', '.join(set_)} apply to behavior='default' only (a spec.behavior); "
                                  "behavior='none' is the legacy path")
        self.tolerances = Tolerances(
            self.tolerance if self.scale_down.tolerance is None else float(self.scale_down.tolerance),
            self.tolerance if self.scale_up.tolerance is None else float(self.scale_up.tolerance))
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[ScaleEvent] = []
        self.down_events: list[ScaleEvent] = []
        self.last_sync: float | None = None
        self.init_period_s, self.readiness_delay_s = float(cpu_initialization_period_s), float(initial_readiness_delay_s)
        self.metric_window_s = float(metric_window_s)

    # -- replica_calculator.go, CPU Utilization, pods sharing one request
    def within(self, ratio: float) -> bool:
        return self.tolerances.within(ratio)

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
        """``normalizeDesiredReplicas``."""
        stab = stabilize_recommendation(self.recommendations, t, desired, self.window_s)
        return convert_desired_replicas_with_rules(current, stab, self.min_r, self.max_r)[0]

    def _behavior(self, t: float, current: int, desired: int) -> int:
        """``normalizeDesiredReplicasWithBehaviors``."""
        rec = stabilize_with_behaviors(self.recommendations, t, current, desired, self.scale_up.window_s,
                                       self.scale_down.window_s)
        return convert_with_behavior_rate(current, rec, self.min_r, self.max_r, self.up_events, self.down_events,
                                          self.scale_up, self.scale_down, t)[0]

    def reconcile(self, t: float, current: int, ready: int, cpu_over_request: float,
                  observation: Observation | None = None) -> int:
        """One sync of the controller at ``t`` s; returns the new ``spec.replicas``.
        With an observation that has pods, the proposal is computed per pod, as
        ``replica_calculator.go`` does; otherwise from the context's mean."""
        if not self.recommendations:
            self.recommendations.append((t, current))
        if current == 0 and self.min_r != 0:
            return current
        if current > self.max_r:
            desired = self.max_r
        elif current < self.min_r:
            desired = self.min_r
        else:
            prop = self.combine(t, current, self.calculate(t, current, ready, cpu_over_request, observation))
            if self.behavior == "none":
                desired = self._legacy(t, current, prop)
            else:
                desired = self._behavior(t, current, prop)
        if desired != current and self.behavior != "none":  # storeScaleEvent
            if desired > current:
                store_scale_event(self.up_events, self.scale_up, desired - current, t)
            else:
                store_scale_event(self.down_events, self.scale_down, current - desired, t)
        return desired

    def calculate(self, t: float, current: int, ready: int, cpu_over_request: float,
                  observation: Observation | None = None) -> int:
        """The CPU metric's proposal (``computeReplicasForMetric``): per pod when the
        observation has pods, else from the context's mean. A subclass whose HPA has
        another metric (an external one: ``keda-kafka``) computes that one here."""
        if observation is not None and observation.pods:
            try:
                return resource_replicas(current, self.target, hpa_pods(observation, self.metric_window_s), t,
                                         self.tolerances, self.init_period_s, self.readiness_delay_s)[0]
            except HPAError:
                return current  # the controller keeps the scale when it cannot compute
        return self.proposal(current, ready, max(current - ready, 0), cpu_over_request)

    def combine(self, t: float, current: int, calculated: int) -> int:
        """The proposal the behavior gets from the CPU metric's ``calculated`` one: with
        one metric, itself. Subclasses add metrics (the controller takes the largest
        proposal of all its metrics, ``computeReplicasForMetrics``) or predictions."""
        return calculated

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        t = float(info.get("t_s", 0.0))
        current = int(info.get("current_replicas", context.replicas))
        if self.last_sync is not None and t - self.last_sync < self.sync_s - 1e-9:
            return Decision(action=min(current, len(self.actions) - 1), probability=1.0)
        self.last_sync = t
        desired = self.reconcile(t, current, context.replicas, context.cpu_request_now, info.get("observation"))
        return Decision(action=min(desired, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        events = {k: [(e.t_s, e.change, e.outdated) for e in getattr(self, k)] for k in ("up_events", "down_events")}
        return {**super().state_dict(), "recommendations": self.recommendations, "up": events["up_events"],
                "down": events["down_events"], "last_sync": self.last_sync}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.recommendations = [tuple(x) for x in state["recommendations"]]
        self.up_events = [ScaleEvent(int(x[1]), float(x[0]), bool(x[2]) if len(x) > 2 else False) for x in state["up"]]
        self.down_events = [ScaleEvent(int(x[1]), float(x[0]), bool(x[2]) if len(x) > 2 else False)
                            for x in state["down"]]
        self.last_sync = state["last_sync"]
