"""The HPA controller's own test cases for stabilisation, scaling policies and scale
events, ported from ``pkg/controller/podautoscaler/horizontal_test.go``
(``TestConvertDesiredReplicasWithRules``, ``TestCalculateScaleUpLimitWithScalingRules``,
``TestCalculateScaleDownLimitWithBehaviors``, ``TestNormalizeDesiredReplicas``,
``TestScalingWithRules``, ``TestStoreScaleEvents``,
``TestNormalizeDesiredReplicasWithBehavior``): one pytest case per Go case, named as it.

``time.Now()`` is ``NOW``; ``generateEventsUniformDistribution`` puts the events in the
middles of equal segments of the last ``period`` seconds, whole seconds as Go truncates.
"""

from __future__ import annotations

import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.hpa_behavior import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    convert_desired_replicas_with_rules,
    convert_with_behavior_rate,
    replicas_change_per_period,
    scale_down_limit,
    scale_up_limit,
    stabilize_recommendation,
    stabilize_with_behaviors,
    store_scale_event,
)
from scalelab.agent.policies.thresholds import HPA

NOW = 10_000.0
MIN = 60.0


def rules(pods: int, pods_period: int, percent: int, percent_period: int, window: float) -> ScalingRules:
    """``generateScalingRules``: a Pods policy then a Percent one (each if non-zero), Max."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(tuple(policies), "Max", window)


def uniform_events(raw: list[int], period: int) -> list[ScaleEvent]:
    """``generateEventsUniformDistribution``."""
    segment = period / len(raw)
    return [ScaleEvent(change, NOW - int(period - segment * (i + 1) + segment / 2)) for i, change in enumerate(raw)]


# -- TestConvertDesiredReplicasWithRules (legacy: scale-up limited to max(2n, 4))
@pytest.mark.parametrize("current, desired, lo, hi, want, condition, annotation", [
    (5, 7, 3, 8, 7, "DesiredWithinRange", "prenormalized desired replicas within range"),
    (3, 1, 2, 8, 2, "TooFewReplicas", "prenormalized desired replicas < minReplicas"),
    (1, 0, 0, 10, 0, "DesiredWithinRange", "prenormalized desired zeroed replicas within range"),
    (20, 1000, 1, 10, 10, "TooManyReplicas", "maxReplicas is the limit because maxReplicas < scaleUpLimit"),
    (3, 1000, 1, 2000, 6, "ScaleUpLimit", "scaleUpLimit is the limit because scaleUpLimit < maxReplicas"),
])  # fmt: skip
def test_TestConvertDesiredReplicasWithRules(current, desired, lo, hi, want, condition, annotation):
    assert convert_desired_replicas_with_rules(current, desired, lo, hi) == (want, condition), annotation


def test_TestCalculateScaleUpLimitWithScalingRules():
    r = ScalingRules((ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)), "Min", 300.0)
    assert scale_up_limit(1, [], [], r, NOW) == 2


def test_TestCalculateScaleDownLimitWithBehaviors():
    r = ScalingRules((ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)), "Min", 300.0)
    assert scale_down_limit(5, [], [], r, NOW) == 3


# -- TestNormalizeDesiredReplicas (legacy stabilizeRecommendation, 5-min window)
@pytest.mark.parametrize("name, recs, desired, want, log_length", [
    ("empty log", [], 5, 5, 1),
    ("stabilize", [(4, -2 * MIN), (5, -1 * MIN)], 3, 5, 3),
    ("no stabilize", [(1, -2 * MIN), (2, -1 * MIN)], 3, 3, 3),
    ("no stabilize - old recommendations", [(10, -10 * MIN), (9, -9 * MIN)], 3, 3, 2),
    ("stabilize - old recommendations", [(10, -10 * MIN), (4, -1 * MIN), (5, -2 * MIN), (9, -9 * MIN)], 3, 5, 4),
])  # fmt: skip
def test_TestNormalizeDesiredReplicas(name, recs, desired, want, log_length):
    log = [(NOW + dt, r) for r, dt in recs]
    assert stabilize_recommendation(log, NOW, desired, 300.0) == want, name
    assert len(log) == log_length, name


# -- TestScalingWithRules (convertDesiredReplicasWithBehaviorRate); None rules: the API's defaults
SCALING_WITH_RULES = {
    "prenormalized desired replicas within range": dict(current=5, desired=7, lo=3, hi=8, want=(7, "DesiredWithinRange")),
    "prenormalized desired replicas < minReplicas": dict(current=3, desired=1, lo=2, hi=8, want=(2, "TooFewReplicas")),
    "prenormalized desired replicas within range when minReplicas is 0": dict(
        current=1, desired=0, lo=0, hi=10, want=(0, "DesiredWithinRange")),
    "maxReplicas is the limit because maxReplicas < scaleUpLimit": dict(
        current=20, desired=1000, lo=1, hi=10, want=(10, "TooManyReplicas")),
    "desired replica count is more than the maximum replica count": dict(
        current=100, desired=1000, lo=100, hi=150, want=(150, "TooManyReplicas")),
    "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies": dict(
        current=3, desired=1000, lo=1, hi=2000, up=rules(0, 0, 1, 60, 0), want=(4, "ScaleUpLimit")),
    "scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies": dict(
        current=1000, desired=3, lo=3, hi=2000, down=rules(20, 60, 0, 0, 0), want=(980, "ScaleDownLimit")),
    "scaleUp with default behavior": dict(current=10, desired=50, lo=1, hi=1000, want=(20, "ScaleUpLimit")),
    "scaleUp with pods policy larger than percent policy": dict(
        current=10, desired=500, lo=1, hi=1000, up=rules(100, 60, 100, 60, 0), want=(110, "ScaleUpLimit")),
    "scaleUp with percent policy larger than pods policy": dict(
        current=10, desired=500, lo=1, hi=1000, up=rules(2, 60, 100, 60, 0), want=(20, "ScaleUpLimit")),
    "scaleUp with spec MaxReplicas limitation with large pod policy": dict(
        current=10, desired=50, lo=1, hi=1000, up=rules(100, 60, 0, 0, 0), want=(50, "DesiredWithinRange")),
    "scaleUp with spec MaxReplicas limitation with large percent policy": dict(
        current=10, desired=50, lo=1, hi=1000, up=rules(10000, 60, 0, 0, 0), want=(50, "DesiredWithinRange")),
    "scaleUp with pod policy limitation": dict(
        current=10, desired=50, lo=1, hi=1000, up=rules(30, 60, 0, 0, 0), want=(40, "ScaleUpLimit")),
    "scaleUp with percent policy limitation": dict(
        current=10, desired=50, lo=1, hi=1000, up=rules(0, 0, 200, 60, 0), want=(30, "ScaleUpLimit")),
    "scaleDown with percent policy larger than pod policy": dict(
        current=100, desired=2, lo=1, hi=1000, down=rules(20, 60, 1, 60, 300), want=(80, "ScaleDownLimit")),
    "scaleDown with pod policy larger than percent policy": dict(
        current=100, desired=2, lo=1, hi=1000, down=rules(2, 60, 1, 60, 300), want=(98, "ScaleDownLimit")),
    "scaleDown with spec MinReplicas=nil limitation with large pod policy": dict(
        current=10, desired=0, lo=1, hi=1000, down=rules(100, 60, 0, 0, 300), want=(1, "TooFewReplicas")),
    "scaleDown with spec MinReplicas limitation with large pod policy": dict(
        current=10, desired=0, lo=1, hi=1000, down=rules(100, 60, 0, 0, 300), want=(1, "TooFewReplicas")),
    "scaleDown with spec MinReplicas limitation with large percent policy": dict(
        current=10, desired=2, lo=5, hi=1000, down=rules(0, 0, 100, 60, 300), want=(5, "TooFewReplicas")),
    "scaleDown with pod policy limitation": dict(
        current=10, desired=2, lo=1, hi=1000, down=rules(5, 60, 0, 0, 300), want=(5, "ScaleDownLimit")),
    "scaleDown with percent policy limitation": dict(
        current=10, desired=5, lo=1, hi=1000, down=rules(0, 0, 50, 60, 300), want=(5, "DesiredWithinRange")),
    "scaleUp with spec MaxReplicas limitation with large pod policy and events": dict(
        up_events=([1, 5, 9], 120), current=100, desired=500, lo=1, hi=200, up=rules(300, 60, 0, 0, 0),
        want=(200, "TooManyReplicas")),
    "scaleUp with spec MaxReplicas limitation with large percent policy and events": dict(
        up_events=([1, 5, 9], 120), current=100, desired=500, lo=1, hi=200, up=rules(0, 0, 10000, 60, 0),
        want=(200, "TooManyReplicas")),
    "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events": dict(
        up_events=([1, 5, 9], 120), current=100, desired=500, lo=1, hi=1000, up=rules(5, 120, 0, 0, 0),
        want=(100, "ScaleUpLimit")),
    "scaleUp with pod policy and previous scale up events": dict(
        up_events=([1, 5, 9], 120), current=100, desired=500, lo=1, hi=1000, up=rules(150, 120, 0, 0, 0),
        want=(235, "ScaleUpLimit")),
    "scaleUp with percent policy and previous scale up events": dict(
        up_events=([1, 5, 9], 120), current=100, desired=500, lo=1, hi=1000, up=rules(0, 0, 200, 120, 0),
        want=(255, "ScaleUpLimit")),
    "scaleDown with default policy and previous events": dict(
        down_events=([1, 5, 9], 120), current=10, desired=5, lo=1, hi=1000, want=(5, "DesiredWithinRange")),
    "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events": dict(
        down_events=([1, 5, 9], 120), current=100, desired=0, lo=1, hi=1000, down=rules(115, 120, 0, 0, 300),
        want=(1, "TooFewReplicas")),
    "scaleDown with spec MinReplicas limitation with large pod policy and previous events": dict(
        down_events=([1, 5, 9], 120), current=100, desired=0, lo=5, hi=1000, down=rules(130, 120, 0, 0, 300),
        want=(5, "TooFewReplicas")),
    "scaleDown with spec MinReplicas limitation with large percent policy and previous events": dict(
        down_events=([1, 5, 9], 120), current=100, desired=2, lo=5, hi=1000, down=rules(0, 0, 100, 120, 300),
        want=(5, "TooFewReplicas")),
    "scaleDown with pod policy limitation and previous events": dict(
        down_events=([1, 5, 9], 120), current=100, desired=2, lo=1, hi=1000, down=rules(5, 120, 0, 0, 300),
        want=(100, "ScaleDownLimit")),
    "scaleDown with percent policy limitation and previous events": dict(
        down_events=([2, 4, 6], 120), current=100, desired=0, lo=1, hi=1000, down=rules(0, 0, 50, 120, 300),
        want=(56, "ScaleDownLimit")),
    "scaleDown with previous events preventing further scale down": dict(
        down_events=([10, 10, 10], 120), current=100, desired=0, lo=1, hi=1000, down=rules(0, 0, 10, 120, 300),
        want=(100, "ScaleDownLimit")),
    "scaleDown with with previous events still allowing more scale down": dict(
        down_events=([10, 10, 10], 120), current=10, desired=5, lo=1, hi=1000, down=rules(0, 0, 1000, 120, 300),
        want=(5, "DesiredWithinRange")),
    "check 'outdated' flag for events for one behavior for up": dict(
        up_events=([8, 12, 9, 11], 120), current=100, desired=200, lo=1, hi=1000, up=rules(1000, 60, 0, 0, 0),
        want=(200, "DesiredWithinRange")),
    "check that events were not marked 'outdated' for two different policies in the behavior for up": dict(
        up_events=([8, 12, 9, 11], 120), current=100, desired=200, lo=1, hi=1000, up=rules(1000, 120, 100, 60, 0),
        want=(200, "DesiredWithinRange")),
    "check that events were marked 'outdated' for two different policies in the behavior for up": dict(
        up_events=([8, 12, 9, 11], 120), current=100, desired=200, lo=1, hi=1000, up=rules(1000, 30, 100, 60, 0),
        want=(200, "DesiredWithinRange")),
    "check 'outdated' flag for events for one behavior for down": dict(
        down_events=([8, 12, 9, 11], 120), current=100, desired=5, lo=1, hi=1000, down=rules(1000, 60, 0, 0, 300),
        want=(5, "DesiredWithinRange")),
    "check that events were not marked 'outdated' for two different policies in the behavior for down": dict(
        down_events=([8, 12, 9, 11], 120), current=100, desired=5, lo=1, hi=1000,
        down=rules(1000, 120, 100, 60, 300), want=(5, "DesiredWithinRange")),
    "check that events were marked 'outdated' for two different policies in the behavior for down": dict(
        down_events=([8, 12, 9, 11], 120), current=100, desired=5, lo=1, hi=1000,
        down=rules(1000, 30, 100, 60, 300), want=(5, "DesiredWithinRange")),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCALING_WITH_RULES))
def test_TestScalingWithRules(name):
    c = SCALING_WITH_RULES[name]
    up = uniform_events(*c["up_events"]) if "up_events" in c else []
    down = uniform_events(*c["down_events"]) if "down_events" in c else []
    got = convert_with_behavior_rate(c["current"], c["desired"], c["lo"], c["hi"], up, down,
                                     c.get("up", DEFAULT_SCALE_UP), c.get("down", DEFAULT_SCALE_DOWN), NOW)
    assert got == c["want"], name


# -- TestStoreScaleEvents: (replica change, seconds ago) before; (change, outdated) after
STORE_SCALE_EVENTS = {
    "empty entries with default behavior": ([], [], None, 0),
    "empty entries with two-policy-behavior": ([], [(5, False)], rules(10, 60, 100, 60, 0), 0),
    "one outdated entry to be kept untouched without behavior": ([(7, 61)], [(7, False)], None, 0),
    "one outdated entry to be replaced with behavior": ([(7, 61)], [(5, False)], rules(10, 60, 100, 60, 0), 0),
    "one actual entry to be not touched with behavior": ([(7, 58)], [(7, False), (5, False)],
                                                         rules(10, 60, 100, 60, 0), 7),
    "two entries, one of them to be replaced": ([(7, 61), (6, 59)], [(5, False), (6, False)],
                                                rules(10, 60, 0, 0, 0), 6),
    "replace one entry, use policies with different periods": (
        [(8, 29), (6, 59), (7, 61), (9, 61)], [(8, False), (6, False), (7, True), (5, False)],
        rules(10, 60, 100, 30, 0), 14),
    "two entries, both actual": ([(7, 58), (6, 59)], [(7, False), (6, False), (5, False)],
                                 rules(10, 120, 100, 30, 0), 13),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STORE_SCALE_EVENTS))
def test_TestStoreScaleEvents(name):
    """Both directions alike (the Go test stores 10 -> 15 as scale-up and 10 -> 5 as
    scale-down on copies of the same history); no behavior stores nothing."""
    before, after, scaling_rules, change_before = STORE_SCALE_EVENTS[name]
    events = [ScaleEvent(change, NOW - ago) for change, ago in before]
    assert replicas_change_per_period(60, events, NOW) == change_before
    if scaling_rules is not None:
        store_scale_event(events, scaling_rules, 5, NOW)
    assert [(e.change, e.outdated) for e in events] == after


# -- TestNormalizeDesiredReplicasWithBehavior (stabilizeRecommendationWithBehaviors)
NORMALIZE_WITH_BEHAVIOR = {
    "empty recommendations for scaling down": ([], 100, 5, 5, [5], 0, 0),
    "simple scale down stabilization": ([(4, -2 * MIN), (5, -1 * MIN)], 100, 3, 5, [4, 5, 3], 0, 180),
    "simple scale up stabilization": ([(4, -2 * MIN), (5, -1 * MIN)], 1, 7, 4, [4, 5, 7], 300, 0),
    "no scale down stabilization": ([(1, -2 * MIN), (2, -1 * MIN)], 100, 3, 3, [1, 2, 3], 300, 0),
    "no scale up stabilization": ([(4, -2 * MIN), (5, -1 * MIN)], 1, 3, 3, [4, 5, 3], 0, 300),
    "no scale down stabilization, reuse recommendation element": (
        [(10, -10 * MIN), (9, -9 * MIN)], 100, 3, 3, [10, 3], 0, 0),
    "no scale up stabilization, reuse recommendation element": (
        [(10, -10 * MIN), (9, -9 * MIN)], 1, 100, 100, [10, 100], 0, 0),
    "scale down stabilization, reuse one of obsolete recommendation element": (
        [(10, -10 * MIN), (4, -1 * MIN), (5, -2 * MIN), (9, -9 * MIN)], 100, 3, 5, [10, 4, 5, 3], 0, 180),
    "scale up stabilization, reuse one of obsolete recommendation element": (
        [(10, -100 * MIN), (6, -1 * MIN), (5, -2 * MIN), (9, -3 * MIN)], 1, 100, 5, [100, 6, 5, 9], 300, 0),
}  # fmt: skip


@pytest.mark.parametrize("name", list(NORMALIZE_WITH_BEHAVIOR))
def test_TestNormalizeDesiredReplicasWithBehavior(name):
    recs, current, desired, want, stored, up_window, down_window = NORMALIZE_WITH_BEHAVIOR[name]
    log = [(NOW + dt, r) for r, dt in recs]
    assert stabilize_with_behaviors(log, NOW, current, desired, up_window, down_window) == want, name
    assert [r for _, r in log] == stored, name


# -- the policy's parameters
def test_hpa_behavior_defaults_are_kubernetes_defaults():
    h = HPA(behavior="default")
    assert h.scale_up == DEFAULT_SCALE_UP and h.scale_down == DEFAULT_SCALE_DOWN
    assert (h.tolerances.scale_up, h.tolerances.scale_down) == (0.1, 0.1)
    assert HPA(behavior="default", downscale_window_s=120.0).scale_down.window_s == 120.0  # the controller's flag


def test_hpa_behavior_parameters_reach_the_rules():
    h = HPA(behavior="default", scale_up_policies="Pods 1/60s", scale_up_select="Min", scale_up_window_s=30,
            scale_up_tolerance=0.0, scale_down_policies="Pods 2/60s, Percent 10/60s", scale_down_select="Disabled",
            scale_down_window_s=0, scale_down_tolerance=0.2)
    assert h.scale_up == ScalingRules((ScalingPolicy("Pods", 1, 60),), "Min", 30.0, 0.0)
    assert h.scale_down.policies == (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 10, 60))
    assert (h.tolerances.scale_up, h.tolerances.scale_down) == (0.0, 0.2)
    assert h.proposal(10, 10, 0, 0.81) == 11  # 81 % of 80 %: outside a 0 scale-up tolerance
    assert h.proposal(10, 10, 0, 0.65) == 10  # 0.8125: inside a 0.2 scale-down tolerance


def test_hpa_behavior_select_disabled_never_scales_down():
    h = HPA(target_utilization=50, behavior="default", scale_down_select="Disabled", scale_down_window_s=0,
            max_replicas=20)
    assert h.reconcile(0.0, 10, 10, 0.05) == 10
    assert h.reconcile(15.0, 10, 10, 2.0) == 20  # scale-up is still allowed


def test_hpa_scale_up_stabilization_window_holds_the_lowest_recommendation():
    h = HPA(target_utilization=50, behavior="default", scale_up_window_s=60, max_replicas=20)
    assert h.reconcile(0.0, 2, 2, 0.5) == 2  # recommendation 2 at t=0
    assert h.reconcile(15.0, 2, 2, 2.0) == 2  # wants 8, the last 60 s held 2
    assert h.reconcile(61.0, 2, 2, 2.0) == 6  # t=0 left the window: 8, limited to max(2 + 4, 2 x 2)


@pytest.mark.parametrize("kw, message", [
    (dict(scale_up_policies="Pods 4 per 15s"), "is not '<Pods|Percent> <value>/<seconds>s'"),
    (dict(scale_up_policies="Replicas 4/15s"), "type 'Replicas' must be one of"),
    (dict(scale_down_policies="Percent 0/15s"), "value=0 must be an integer > 0"),
    (dict(scale_down_policies="Percent 10/3600s"), "period 3600 s must be an integer in"),
    (dict(scale_up_select="Maximum"), "selectPolicy='Maximum' must be one of"),
    (dict(scale_down_window_s=4000), "within \\[0, 3600\\]"),
    (dict(scale_up_tolerance=-0.1), "tolerance=-0.1 must be >= 0"),
])  # fmt: skip
def test_hpa_behavior_bad_parameters_name_what_is_wrong(kw, message):
    with pytest.raises(PolicyError, match=message):
        HPA(behavior="default", **kw)


def test_hpa_behavior_fields_need_a_behavior():
    with pytest.raises(PolicyError, match="scale_down_window_s apply to behavior='default' only"):
        HPA(behavior="none", scale_down_window_s=60)
