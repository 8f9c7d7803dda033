"""Policies that see the load coming: from the published timetable or from history.

* :class:`KedaCronHPA` (``keda-cron``): KEDA's cron scaler beside a CPU trigger, as a
  ScaledObject with both runs them. Each cron trigger is an external metric whose value
  is ``desiredReplicas`` inside its window and 0 outside (``cron_scaler.go``,
  ``GetMetricsAndActivity``), with an ``AverageValue`` target of 1; the HPA computes a
  proposal per metric (``GetExternalPerPodMetricReplicas``: ``ceil(value / target)``
  unless ``value / (target * current)`` is within the tolerance) and takes the largest
  of them and the CPU proposal (``computeReplicasForMetrics``), then applies its
  behavior. Triggers are written by hand, or, as an operator would from the exam
  timetable, one per announced exam: from ``lead_min`` before its start to its end,
  ``ceil(students / students_per_replica)`` replicas.
* :class:`PredictiveHPA` (``phpa-holt-winters``): the Predictive Horizontal Pod
  Autoscaler's Holt-Winters model (jthomperoo/predictive-horizontal-pod-autoscaler):
  every ``per_sync_period`` syncs the HPA's calculated replica count is appended to a
  history of at most ``stored_seasons`` seasons of ``seasonal_periods`` values; once it
  holds ``2 * seasonal_periods`` (and ``10 + 2 * (seasonal_periods // 2)``) values,
  statsmodels' ``ExponentialSmoothing`` with fixed ``alpha``, ``beta``, ``gamma``
  (``optimized=False``) forecasts one value ahead, rounded up; the decision is the
  maximum of the calculated count and that prediction (``decisionType: maximum``), then
  the HPA's behavior.
* :class:`CalendarHSLinUCB` (``hslinucb-calendar``): HSLinUCB's forced scale-up and reward,
  with the timetable's forecast as a floor and in the bandit's context (see its docstring).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Decision, PolicyError
from scalelab.agent.policies.linucb import FIELDS, HSLinUCB, LinUCBCore, argmax_random, tie_probabilities
from scalelab.agent.policies.thresholds import HPA, Tolerances
from scalelab.orchestrator.context import Context


@dataclass(frozen=True)
class CronTrigger:
    """One KEDA cron trigger on the workload's clock: active for ``start_s <= t < end_s``
    (s), asking for ``desired_replicas``."""

    start_s: float
    end_s: float
    desired_replicas: int

    def value(self, t: float) -> int:
        """The external metric KEDA reports at ``t``: desiredReplicas inside the window, 0 outside."""
        return self.desired_replicas if self.start_s <= t < self.end_s else 0


@dataclass(frozen=True)
class Capacity:
    """Replicas a number of students needs, as an operator sizes it: from a load-test
    ``table`` ``((students, replicas), ...)`` (``scalelab capacity``: the replicas of the
    smallest tested count at or above; above the largest, its replicas scaled by
    ``students / largest``), or, without a table, ``ceil(students / students_per_replica)``."""

    table: tuple[tuple[float, int], ...] = ()
    students_per_replica: float = 50.0

    @classmethod
    def of(cls, capacity, students_per_replica: float, who: str) -> Capacity:
        """From a config's ``capacity`` (``[[students, replicas], ...]`` or None)."""
        if students_per_replica <= 0:
            raise PolicyError(f"{who}: students_per_replica must be > 0, got {students_per_replica}")
        if capacity is None:
            return cls((), float(students_per_replica))
        try:
            rows = tuple(sorted((float(u), int(n)) for u, n in capacity))
        except (TypeError, ValueError):
            raise PolicyError(f"{who}: capacity must be [[students, replicas], ...], got {capacity!r}") from None
        if not rows or any(u <= 0 or n < 1 for u, n in rows):
            raise PolicyError(f"{who}: capacity needs rows of students > 0 and replicas >= 1, got {capacity!r}")
        return cls(rows, float(students_per_replica))

    def replicas(self, students: float) -> int:
        """Replicas for ``students`` (0 for none)."""
        if students <= 0:
            return 0
        if not self.table:
            return math.ceil(round(students / self.students_per_replica, 9))
        for level, n in self.table:
            if students <= level:
                return n
        level, n = self.table[-1]
        return math.ceil(round(n * students / level, 9))


def triggers_from_timetable(timetable, lead_min: float, capacity: Capacity) -> list[CronTrigger]:
    """One trigger per announced exam of ``timetable`` (an
    :class:`~scalelab.orchestrator.context.Timetable`): from ``lead_min`` before its start to its
    end, sized for its students by ``capacity``."""
    return [CronTrigger(start - lead_min * 60.0, end, capacity.replicas(students))
            for start, end, students in timetable.exam_windows()]


def external_per_pod_proposal(current: int, value: float, target: float, tolerance: float | Tolerances) -> int:
    """``GetExternalPerPodMetricReplicas``: ``ceil(value / target)`` unless
    ``value / (target * current)`` is within the tolerance (``Tolerances.isWithin``,
    inclusive; one number is the same both ways), then ``current``."""
    ratio = value / (target * current) if current > 0 else math.inf
    if not Tolerances.of(tolerance).within(ratio):
        return math.ceil(round(value / target, 9))
    return current


class KedaCronHPA(HPA):
    """KEDA's cron scaler (one or more triggers) combined with a CPU Utilization trigger,
    as KEDA and the HPA controller run them (module docstring).

    triggers: ``[{start_s, end_s, desired_replicas}, ...]`` on the workload's clock; if
    omitted, one per exam of the announced ``timetable`` (``lead_min`` before its start
    to its end, the replicas its students need by ``capacity``, a load-test table, or
    ``students_per_replica``: :class:`Capacity`). The rest is
    :class:`~scalelab.agent.policies.thresholds.HPA`'s (``behavior: default`` by default, as a
    ScaledObject creates its HPA with the controller's defaults).
    """

    name = "keda-cron"

    def __init__(self, triggers: list | None = None, lead_min: float = 10.0, capacity: list | None = None,
                 students_per_replica: float = 50.0, timetable=None, target_utilization: int = 80,
                 behavior: str = "default", tolerance: float = 0.1,
                 sync_seconds: float = 15.0, downscale_window_s: float = 300.0, min_replicas: int = 1,
                 max_replicas: int = 10, seed=None) -> None:
        super().__init__(target_utilization=target_utilization, behavior=behavior, tolerance=tolerance,
                         sync_seconds=sync_seconds, downscale_window_s=downscale_window_s, min_replicas=min_replicas,
                         max_replicas=max_replicas, seed=seed)
        if lead_min < 0:
            raise PolicyError(f"keda-cron: lead_min must be >= 0, got {lead_min}")
        self.capacity = Capacity.of(capacity, students_per_replica, "keda-cron")
        if triggers is not None:
            try:
                self.triggers = [CronTrigger(float(t["start_s"]), float(t["end_s"]), int(t["desired_replicas"]))
                                 for t in triggers]
            except (KeyError, TypeError, ValueError) as exc:
                raise PolicyError(f"keda-cron: each trigger needs start_s, end_s and desired_replicas ({exc})") \
                    from None
        elif timetable is not None:
            self.triggers = triggers_from_timetable(timetable, lead_min, self.capacity)
        else:
            raise PolicyError("keda-cron: give triggers, or run it on a workload that publishes a timetable")
        self.workload_t = 0.0

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        self.workload_t = float((info or {}).get("workload_t_s", (info or {}).get("t_s", 0.0)))
        return super().decide(context, info)

    def combine(self, t: float, current: int, calculated: int) -> int:
        proposals = [external_per_pod_proposal(current, tr.value(self.workload_t), 1.0, self.tolerances)
                     for tr in self.triggers]
        return max([calculated, *proposals])


def holt_winters_prediction(series: Sequence[float], alpha: float, beta: float, gamma: float, seasonal_periods: int,
                            trend: str | None = "add", seasonal: str | None = "add", damped_trend: bool = False
                            ) -> int | None:
    """PHPA's ``holt_winters.py``: statsmodels' ExponentialSmoothing fitted with fixed
    smoothing parameters, the next value rounded up; None while ``series`` is shorter
    than statsmodels needs (``2 * seasonal_periods`` and ``10 + 2 * (seasonal_periods // 2)``)."""
    if len(series) < 2 * seasonal_periods or len(series) < 10 + 2 * (seasonal_periods // 2):
        return None
    import statsmodels.tsa.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = sm.ExponentialSmoothing(np.asarray(series, dtype=float), trend=trend, seasonal=seasonal,
                                        seasonal_periods=seasonal_periods, initialization_method="estimated",
                                        damped_trend=damped_trend)
        fit = model.fit(smoothing_level=alpha, smoothing_trend=beta, smoothing_seasonal=gamma, optimized=False)
        value = float(fit.forecast(steps=1)[0])
    return math.ceil(value) if math.isfinite(value) else None


class PredictiveHPA(HPA):
    """The Predictive Horizontal Pod Autoscaler with its Holt-Winters model (module
    docstring): a CPU HPA whose calculated count is maxed with a Holt-Winters forecast of
    its own history. ``seasonal_periods`` counts model runs (one per ``per_sync_period``
    syncs of ``sync_seconds``): the default, 288 runs of 20 x 15 s = 5 min, is a day."""

    name = "phpa-holt-winters"

    def __init__(self, alpha: float = 0.9, beta: float = 0.9, gamma: float = 0.9, seasonal_periods: int = 288,
                 stored_seasons: int = 2, per_sync_period: int = 20, trend: str = "add", seasonal: str = "add",
                 damped_trend: bool = False, target_utilization: int = 80, behavior: str = "default",
                 tolerance: float = 0.1, sync_seconds: float = 15.0, downscale_window_s: float = 300.0,
                 min_replicas: int = 1, max_replicas: int = 10, seed=None) -> None:
        super().__init__(target_utilization=target_utilization, behavior=behavior, tolerance=tolerance,
                         sync_seconds=sync_seconds, downscale_window_s=downscale_window_s, min_replicas=min_replicas,
                         max_replicas=max_replicas, seed=seed)
        for key, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not 0.0 <= v <= 1.0:
                raise PolicyError(f"phpa-holt-winters: {key}={v} must be within [0, 1]")
        if seasonal_periods < 2 or stored_seasons < 2 or per_sync_period < 1:
            raise PolicyError("phpa-holt-winters: seasonal_periods >= 2, stored_seasons >= 2 and per_sync_period >= 1")
        if trend not in ("add", "mul") or seasonal not in ("add", "mul"):
            raise PolicyError("phpa-holt-winters: trend and seasonal must be 'add' or 'mul'")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.seasonal_periods, self.stored_seasons, self.per_sync = int(seasonal_periods), int(stored_seasons), int(
            per_sync_period)
        self.trend, self.seasonal, self.damped = trend, seasonal, bool(damped_trend)
        self.history: list[int] = []
        self.syncs_passed = 0
        self.last_prediction: int | None = None

    def combine(self, t: float, current: int, calculated: int) -> int:
        # processModels: the count of syncs since the model last ran, then run it on this sync if due
        self.syncs_passed += 1
        if self.syncs_passed < self.per_sync:
            return calculated
        self.syncs_passed = 0
        self.history.append(int(calculated))
        prediction = holt_winters_prediction(self.history, self.alpha, self.beta, self.gamma, self.seasonal_periods,
                                             self.trend, self.seasonal, self.damped)
        m = self.seasonal_periods  # PruneHistory: keep whole seasons, at most stored_seasons of them
        remove = len(self.history) // m - self.stored_seasons
        if remove > 0:
            self.history = self.history[remove * m:]
        self.last_prediction = prediction
        return calculated if prediction is None else max(calculated, prediction)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": self.history, "syncs_passed": self.syncs_passed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = [int(x) for x in state["history"]]
        self.syncs_passed = int(state["syncs_passed"])


class CalendarHSLinUCB(HSLinUCB):
    """HSLinUCB that sees the exam coming (needs ``calendar: {features: true}``).

    1. **The forecast's floor**: the timetable expects ``E`` students over the next
       ``lookahead`` (``5min``: the most of ``expected_now`` and ``expected_5min``;
       ``15min``: ``peak_15min``), which need ``floor`` replicas by ``capacity`` (a
       load-test table, or ``students_per_replica``: :class:`Capacity`); the policy
       never asks for fewer than ``floor``. At or below ``quiet_students`` expected
       students (default 0: the floor holds at every level) there is no floor and the
       quiet hours are left to the bandit. With ``margin_cost``, leave it at 0: without a
       floor every replica counts as spare, and the bandit runs one short (on held-out
       calendars, twice HSLinUCB's violations in the diurnal hours). When the floor raises
       the order, the step is a forced one (probability 1) and the bandit does not learn
       from it, as the paper's forced scale-up.
    2. **The paper's rule above it**: p95 over the SLO forces one up; otherwise the
       bandit (disjoint LinUCB, the paper's binary reward) picks down or stay, on the
       paper's 7 features plus two: the **margin** ``replicas - floor`` (replicas) and
       the hours to the next announced exam (``minutes_to_exam / 60``), so it learns how
       much headroom to keep above the forecast and when. With ``margin_cost`` > 0, a
       "stay" that met the SLO pays ``1 - margin_cost * margin`` instead of 1: spare
       replicas above the forecast cost, so the bandit has a reason to give them back
       (the paper's reward pays stay and a successful down alike; 0 keeps it). ``scale``
       divides the paper's 7 features (default: raw, as the paper). ``max_margin``:
       while the SLO holds, a "stay" more than that many replicas above the floor (or
       above 1 without one) becomes a forced "down" (default: no cap).

    Actions: down one, stay, up one (as HSLinUCB) and ``scale to floor``: the fixed
    order the floor gives (the loop clamps it to the cluster).
    """

    name = "hslinucb-calendar"
    FLOOR = 3

    def __init__(self, capacity: list | None = None, students_per_replica: float = 50.0, lookahead: str = "5min",
                 quiet_students: float = 0.0, max_margin: int | None = None, margin_cost: float = 0.0,
                 scale: list[float] | None = None,
                 alpha: float = 1.0, lam: float = 1.0, slo_ms: float = 600.0, max_replicas: int = 10,
                 seed=None) -> None:
        super().__init__(alpha=alpha, lam=lam, slo_ms=slo_ms, seed=seed)
        if not quiet_students >= 0:
            raise PolicyError(f"hslinucb-calendar: quiet_students must be >= 0, got {quiet_students}")
        self.quiet_students = float(quiet_students)
        if max_margin is not None and max_margin < 0:
            raise PolicyError(f"hslinucb-calendar: max_margin must be >= 0, got {max_margin}")
        self.max_margin = None if max_margin is None else int(max_margin)
        if scale is not None and (len(scale) != len(FIELDS) or min(scale) <= 0):
            raise PolicyError(f"hslinucb-calendar: scale needs {len(FIELDS)} positive numbers, got {scale}")
        self.scale = None if scale is None else np.asarray(scale, dtype=float)
        if not margin_cost >= 0:
            raise PolicyError(f"hslinucb-calendar: margin_cost must be >= 0, got {margin_cost}")
        self.margin_cost = float(margin_cost)
        self.capacity = Capacity.of(capacity, students_per_replica, "hslinucb-calendar")
        if lookahead not in ("5min", "15min"):
            raise PolicyError(f"hslinucb-calendar: lookahead={lookahead!r} must be '5min' or '15min'")
        self.lookahead = lookahead
        self.max_replicas = int(max_replicas)
        orders = ActionSet.incremental(-1, 0, 1).orders
        self.actions = ActionSet((*orders, *ActionSet.fixed(0, self.max_replicas).orders))
        self.core = LinUCBCore(2, len(FIELDS) + 2, alpha, lam, exact_inverse=True)
        self._x: np.ndarray | None = None  # the features the last decision was taken on

    def floor(self, info: Mapping[str, Any] | None) -> int:
        """Replicas the timetable's forecast needs (0 without calendar features)."""
        cal = (info or {}).get("calendar")
        if cal is None:
            return 0
        expected = cal.peak_15min if self.lookahead == "15min" else max(cal.expected_now, cal.expected_5min)
        if expected <= self.quiet_students:
            return 0
        return min(self.max_replicas, self.capacity.replicas(expected))

    def features(self, context: Context, info: Mapping[str, Any] | None) -> np.ndarray:
        cal = (info or {}).get("calendar")
        hours = cal.minutes_to_exam / 60.0 if cal is not None else 0.0
        x = context.vector() if self.scale is None else context.vector() / self.scale
        return np.concatenate((x, (context.replicas - self.floor(info), hours)))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        floor = self.floor(info)
        current = int((info or {}).get("current_replicas", context.replicas))
        self._x = self.features(context, info)
        if context.p95_ms > self.slo_ms:
            if floor > current + 1:
                return self._to_floor(floor)
            return Decision(action=self.UP, probability=1.0, probabilities=self._one_hot(self.UP), forced=True)
        s = self.core.scores(self._x)
        a, p = argmax_random(s, self.rng)
        target = current - 1 if a == self.DOWN else current
        if target < floor:
            return self._to_floor(floor)
        if self.max_margin is not None and a == self.STAY and current > max(floor, 1) + self.max_margin:
            self._x = None  # forced: the bandit does not learn from it
            return Decision(action=self.DOWN, probability=1.0, probabilities=self._one_hot(self.DOWN), forced=True)
        return Decision(action=a, probability=p, probabilities=(*tie_probabilities(s, a, p),
                                                                *([0.0] * (len(self.actions) - 2))))

    def _one_hot(self, action: int) -> tuple[float, ...]:
        out = [0.0] * len(self.actions)
        out[action] = 1.0
        return tuple(out)

    def _to_floor(self, floor: int) -> Decision:
        action = self.FLOOR + floor
        return Decision(action=action, probability=1.0, probabilities=self._one_hot(action), forced=True)

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        if action not in (self.DOWN, self.STAY) or self._x is None:  # forced (SLO or floor): no learning
            return
        r = self.reward(context, action, next_context) if self.paper_reward else reward
        if action == self.STAY and r > 0:  # a kept spare replica above the forecast's need costs
            r -= self.margin_cost * max(0.0, float(self._x[len(FIELDS)]))
        self.core.update(action, self._x, r)
