"""The HPA controller's normalisation of a proposal (``horizontal.go``): the legacy path
(no ``spec.behavior``) and the ``behavior`` path (``HPAScalingRules`` per direction:
scaling policies, their selection, a stabilisation window and, KEP-4951, a tolerance).

Times are in seconds on the controller's clock; counts are replicas. The functions keep
the controller's in-memory state (recommendations, scale events) in lists they are given,
replacing an outdated entry as the controller does, so that its test cases
(``horizontal_test.go``) can be ported one for one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scalelab.agent.base import PolicyError

#: ``--horizontal-pod-autoscaler-downscale-stabilization``, s.
DOWNSCALE_STABILIZATION_S = 300.0
#: ``convertDesiredReplicasWithRules`` (legacy): at most ``max(2 x current, 4)`` per sync.
SCALE_UP_LIMIT_FACTOR, SCALE_UP_LIMIT_MINIMUM = 2.0, 4.0
SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")
_POLICY = re.compile(r"^\s*(\w+)\s+(\d+)\s*/\s*(\d+)\s*s?\s*$")


@dataclass(frozen=True)
class ScalingPolicy:
    """``HPAScalingPolicy``: in any ``period_s`` (1 to 1800 s), change the count by at
    most ``value`` pods (``Pods``) or ``value`` % of the count at the period's start
    (``Percent``)."""

    type: str
    value: int
    period_s: int

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise PolicyError(f"hpa: scaling policy type {self.type!r} must be one of {POLICY_TYPES}")
        if not (isinstance(self.value, int) and self.value > 0):
            raise PolicyError(f"hpa: scaling policy value={self.value!r} must be an integer > 0")
        if not (isinstance(self.period_s, int) and 0 < self.period_s <= 1800):
            raise PolicyError(f"hpa: scaling policy period {self.period_s!r} s must be an integer in (0, 1800]")

    def __str__(self) -> str:
        return f"{self.type} {self.value}/{self.period_s}s"


def parse_policies(text: str, where: str) -> tuple[ScalingPolicy, ...]:
    """``"Pods 4/15s, Percent 100/15s"``: comma-separated ``<type> <value>/<period>s``."""
    out = []
    for part in text.split(","):
        m = _POLICY.match(part)
        if m is None:
            raise PolicyError(f"hpa: {where}={text!r}: {part.strip()!r} is not '<Pods|Percent> <value>/<seconds>s' "
                              "(e.g. 'Pods 4/15s, Percent 100/15s')")
        out.append(ScalingPolicy(m.group(1), int(m.group(2)), int(m.group(3))))
    return tuple(out)


@dataclass(frozen=True)
class ScalingRules:
    """``HPAScalingRules`` of one direction. ``window_s``: the stabilisation window
    (0 to 3600 s); ``tolerance``: KEP-4951's per-direction tolerance (a fraction; None:
    the controller's flag)."""

    policies: tuple[ScalingPolicy, ...]
    select_policy: str = "Max"
    window_s: float = 0.0
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.select_policy not in SELECT_POLICIES:
            raise PolicyError(f"hpa: selectPolicy={self.select_policy!r} must be one of {SELECT_POLICIES}")
        if not self.policies:
            raise PolicyError("hpa: a scaling rule needs at least one policy")
        number = (int, float)
        if not isinstance(self.window_s, number) or isinstance(self.window_s, bool):
            raise PolicyError(f"hpa: stabilization window {self.window_s!r} must be a number of seconds")
        if not 0.0 <= self.window_s <= 3600.0:
            raise PolicyError(f"hpa: stabilization window {self.window_s!r} s must be within [0, 3600]")
        if self.tolerance is not None and (not isinstance(self.tolerance, number) or isinstance(self.tolerance, bool)
                                           or not self.tolerance >= 0.0):
            raise PolicyError(f"hpa: tolerance={self.tolerance!r} must be >= 0 (a fraction: 0.1 is 10 %)")

    @property
    def longest_period_s(self) -> int:
        """``getLongestPolicyPeriod``."""
        return max(p.period_s for p in self.policies)


def generate_scale_up_rules(policies: tuple[ScalingPolicy, ...] = (), select_policy: str | None = None,
                            window_s: float | None = None, tolerance: float | None = None) -> ScalingRules:
    """``GenerateHPAScaleUpRules`` (``pkg/apis/autoscaling/v2/defaults.go``): a scale-up
    rule's unset fields filled with the API's defaults. No policies: ``Pods 4/15s`` and
    ``Percent 100/15s``; no ``selectPolicy``: ``Max``; no window: 0 s."""
    if not policies:
        policies = (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))
    return ScalingRules(tuple(policies), select_policy or "Max", 0.0 if window_s is None else window_s, tolerance)


def generate_scale_down_rules(policies: tuple[ScalingPolicy, ...] = (), select_policy: str | None = None,
                              window_s: float | None = None, tolerance: float | None = None,
                              controller_window_s: float = DOWNSCALE_STABILIZATION_S) -> ScalingRules:
    """``GenerateHPAScaleDownRules``: no policies: ``Percent 100/15s``; no
    ``selectPolicy``: ``Max``; no window: left unset by the API (nil), which the
    controller reads as its ``--horizontal-pod-autoscaler-downscale-stabilization`` flag,
    ``controller_window_s`` (300 s by default)."""
    if not policies:
        policies = (ScalingPolicy("Percent", 100, 15),)
    return ScalingRules(tuple(policies), select_policy or "Max",
                        controller_window_s if window_s is None else window_s, tolerance)


#: ``GenerateHPAScaleUpRules(nil)``.
DEFAULT_SCALE_UP = generate_scale_up_rules()
#: ``GenerateHPAScaleDownRules(nil)``, its window the controller's flag (300 s).
DEFAULT_SCALE_DOWN = generate_scale_down_rules()


@dataclass
class ScaleEvent:
    """``timestampedScaleEvent``: a change of ``change`` replicas (> 0) at ``t_s``."""

    change: int
    t_s: float
    outdated: bool = False


def replicas_change_per_period(period_s: float, events: list[ScaleEvent], now_s: float) -> int:
    """``getReplicasChangePerPeriod``: the changes of the events after ``now - period``."""
    return sum(e.change for e in events if e.t_s > now_s - period_s)


def store_scale_event(events: list[ScaleEvent], rules: ScalingRules, change: int, now_s: float) -> None:
    """``storeScaleEvent`` for one direction: events older than the rules' longest
    period are marked outdated; the last outdated one is replaced, else one is added."""
    for e in events:
        if e.t_s < now_s - rules.longest_period_s:
            e.outdated = True
    new = ScaleEvent(change, now_s)
    outdated = [i for i, e in enumerate(events) if e.outdated]
    if outdated:
        events[outdated[-1]] = new
    else:
        events.append(new)


def _period_start(current: int, period_s: float, up: list[ScaleEvent], down: list[ScaleEvent], now_s: float) -> int:
    """The replicas at the start of a policy's period: ``current`` less the period's
    scale-ups, plus its scale-downs (the ``periodStartReplicas`` both limits start from)."""
    return current - replicas_change_per_period(period_s, up, now_s) + replicas_change_per_period(period_s, down, now_s)


def scale_up_limit(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: ScalingRules,
                   now_s: float) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the policies allow
    (Max: the largest; Min: the smallest; Disabled: ``current``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, p.period_s, up, down, now_s)
        if p.type == "Pods":
            proposals.append(start + p.value)
        else:  # rounded up, or a small percentage of a small count would never scale up
            proposals.append(math.ceil(start * (1 + p.value / 100)))
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: ScalingRules,
                     now_s: float) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the policies allow
    (Max: the largest change, the smallest count; Min: the largest count; Disabled:
    ``current``). A percentage truncates the count that stays."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, p.period_s, up, down, now_s)
        if p.type == "Pods":
            proposals.append(start - p.value)
        else:
            proposals.append(int(start * (1 - p.value / 100)))
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def _record(recommendations: list[tuple[float, int]], old: int | None, now_s: float, desired: int) -> None:
    if old is not None:
        recommendations[old] = (now_s, desired)
    else:
        recommendations.append((now_s, desired))


def stabilize_recommendation(recommendations: list[tuple[float, int]], now_s: float, desired: int,
                             window_s: float = DOWNSCALE_STABILIZATION_S) -> int:
    """``stabilizeRecommendation`` (legacy): the largest recommendation of the last
    ``window_s`` (the window's start included) and ``desired``, which is then recorded
    in place of the last older one (or added). ``recommendations``: ``(t_s, replicas)``."""
    best, old = desired, None
    for i, (ts, rec) in enumerate(recommendations):
        if ts < now_s - window_s:
            old = i
        elif rec > best:
            best = rec
    _record(recommendations, old, now_s, desired)
    return best


def convert_desired_replicas_with_rules(current: int, desired: int, min_replicas: int,
                                        max_replicas: int) -> tuple[int, str]:
    """``convertDesiredReplicasWithRules`` (legacy): (replicas, condition reason)."""
    scale_up_limit_ = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit_:
        maximum, condition = scale_up_limit_, "ScaleUpLimit"
    else:
        maximum, condition = max_replicas, "TooManyReplicas"
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired > maximum:
        return maximum, condition
    return desired, "DesiredWithinRange"


def stabilize_with_behaviors(recommendations: list[tuple[float, int]], now_s: float, current: int, desired: int,
                             up_window_s: float, down_window_s: float) -> int:
    """``stabilizeRecommendationWithBehaviors``: ``current`` brought up to the smallest
    recommendation of the scale-up window and down to the largest of the scale-down
    window (each with ``desired``); ``desired`` is recorded in place of the last
    recommendation older than both windows (or added)."""
    up, down, old = desired, desired, None
    for i, (ts, rec) in enumerate(recommendations):
        if ts > now_s - up_window_s:
            up = min(rec, up)
        if ts > now_s - down_window_s:
            down = max(rec, down)
        if ts < now_s - up_window_s and ts < now_s - down_window_s:
            old = i
    rec = current
    if rec < up:
        rec = up
    if rec > down:
        rec = down
    _record(recommendations, old, now_s, desired)
    return rec


def convert_with_behavior_rate(current: int, desired: int, min_replicas: int, max_replicas: int,
                               up: list[ScaleEvent], down: list[ScaleEvent], scale_up: ScalingRules,
                               scale_down: ScalingRules, now_s: float) -> tuple[int, str]:
    """``convertDesiredReplicasWithBehaviorRate``: ``desired`` within the policies' rate
    limits and the replica bounds: (replicas, condition reason)."""
    if desired > current:
        limit = max(scale_up_limit(current, up, down, scale_up, now_s), current)
        if max_replicas > limit:
            maximum, condition = limit, "ScaleUpLimit"
        else:
            maximum, condition = max_replicas, "TooManyReplicas"
        if desired > maximum:
            return maximum, condition
    elif desired < current:
        limit = min(scale_down_limit(current, up, down, scale_down, now_s), current)
        if min_replicas < limit:
            minimum, condition = limit, "ScaleDownLimit"
        else:
            minimum, condition = min_replicas, "TooFewReplicas"
        if desired < minimum:
            return minimum, condition
    return desired, "DesiredWithinRange"
