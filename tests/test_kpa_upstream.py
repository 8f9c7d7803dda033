"""Knative's KPA decider test cases, ported from ``pkg/autoscaler/scaling/
autoscaler_test.go`` (the concurrency metric; excess burst capacity and the scale-down
delay window are not modelled, so their assertions and the cases about them are left
out). ``newTestAutoscaler``: target utilisation 0.75 (not used by the decision), panic
threshold 2 (200 %), scale-up and scale-down rates 10, a 60-s stable window, created
over one ready pod. The metric client's stable and panic values are handed to
:meth:`KPA.scale` directly."""

from __future__ import annotations

from collections import deque

import pytest

from scalelab.agent.policies.serverless import KPA

STABLE_WINDOW = 60.0
TICK = 2.0


def autoscaler(target: float, up: float = 10.0, down: float = 10.0, created_over: int = 1, t: float = 0.0) -> KPA:
    k = KPA(target=target, max_scale_up_rate=up, max_scale_down_rate=down, stable_window_s=STABLE_WINDOW,
            max_replicas=10_000)
    k.begin(t, created_over)
    return k


def test_stable_mode_increase_with_concurrency_default():
    a = autoscaler(10)
    assert a.scale(0.0, 1, 50, 10) == 5
    assert a.scale(0.0, 1, 100, 10) == 10


def test_unpanic_after_slow_increase():
    a = autoscaler(1)
    start = 1000.0
    assert a.scale(start, 10, 11, 25) == 25 and a.panic_time == start
    tm = start + STABLE_WINDOW / 2
    assert a.scale(tm, 25 + 15, 30, 41) == 41 and a.panic_time == start  # the panic time does not move
    tm += STABLE_WINDOW / 2 + TICK
    assert a.scale(tm, 25 + 30, 50, 56) == 50 and a.panic_time is None  # no longer in panic


def test_extend_panic_window():
    a = autoscaler(1)
    start = 1000.0
    assert a.scale(start, 10, 11, 25) == 25
    tm = start + STABLE_WINDOW / 2
    assert a.scale(tm, 40, 30, 80) == 80 and a.panic_time == tm


def test_stable_mode_decrease():
    a = autoscaler(10)
    assert a.scale(0.0, 8, 100, 100) == 10
    assert a.scale(0.0, 8, 50, 50) == 5


def test_stable_mode_no_traffic_scale_to_zero():
    a = autoscaler(10)
    assert a.scale(0.0, 1, 1, 0) == 1
    assert a.scale(0.0, 1, 0, 0) == 0


def test_panic_mode_exponential_track_and_stabilize():
    a = autoscaler(1)
    assert a.scale(0.0, 1, 6, 6) == 6
    tm = 10.0
    assert a.scale(tm, 6, 36, 36) == 36 and a.panic_time == tm
    tm += 1
    assert a.scale(tm, 36, 216, 216) == 216 and a.panic_time == tm
    assert a.scale(tm, 216, 1296, 1296) == 1296 and a.panic_time == tm
    assert a.scale(tm + 1, 1296, 1296, 1296) == 1296


@pytest.mark.parametrize("label, target, stable, panic, base, prep, want", [
    ("AutoscalerNoDataAtZeroNoAutoscale", 10, 0, 0, 1, {}, 0),
    ("AutoscalerStableModeUnlimitedTBC", 181, 21, 26, 1, {}, 1),
    ("Autoscaler0TBC", 10, 50, 49, 1, {}, 5),
    ("AutoscalerStableModeNoChange", 10, 50, 50, 1, {}, 5),
    ("AutoscalerPanicStableLargerThanPanic", 1, 50, 30, 5, {"panic_for": 5.0, "max_panic_pods": 5}, 50),
    ("AutoscalerPanicStableLessThanPanic", 1, 20, 30, 5, {"panic_for": 5.0, "max_panic_pods": 5}, 30),
    ("AutoscalerStableModeNoChangeAlreadyScaled", 10, 50, 50, 5, {}, 5),
    ("AutoscalerStableModeIncreaseWithSmallScaleUpRate", 1, 3, 3.1, 2, {"up": 1.1}, 3),
    ("AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10, 1, 1, 100, {"down": 1.1}, 90),
    ("AutoscalerPanicModeDoublePodCount", 10, 50, 100, 1, {}, 10),
])  # fmt: skip
def test_autoscaler_scale_table(label, target, stable, panic, base, prep, want):
    now = 1000.0
    a = autoscaler(target, up=prep.get("up", 10.0), down=prep.get("down", 10.0))
    if "panic_for" in prep:
        a.panic_time, a.max_panic_pods = now - prep["panic_for"], prep["max_panic_pods"]
    assert a.scale(now, base, stable, panic) == want, label


def test_panic_then_unpanic_scale_down():
    a = autoscaler(10)
    assert a.scale(0.0, 1, 100, 100) == 10
    panic_time = 10.0
    assert a.scale(panic_time, 10, 100, 1000) == 100
    assert a.scale(panic_time + 30, 10, 1, 1) == 100  # traffic dropped; still in panic
    assert a.scale(panic_time + 61, 10, 1, 1) == 1  # after the stable window


def test_rate_limits():
    a = autoscaler(10)
    assert a.scale(0.0, 1, 1000, 1001) == 10  # needs 100 pods, scales x10
    assert a.scale(0.0, 10, 1000, 1001) == 100
    b = autoscaler(10)
    assert b.scale(0.0, 100, 1, 1) == 10  # needs 1, scales down /10
    assert b.scale(0.0, 10, 1, 1) == 1


def test_use_one_pod_as_minimum_if_endpoints_not_found():
    assert autoscaler(10).scale(0.0, 0, 1000, 888) == 10


def test_start_in_panic_mode():
    for ready in (0, 1):
        a = autoscaler(100, created_over=ready)
        assert a.panic_time is None and a.max_panic_pods == ready
    a = autoscaler(100, created_over=2)
    assert a.panic_time is not None and a.max_panic_pods == 2


def test_autoscaler_no_data_no_autoscale():
    """TestAutoscalerNoDataNoAutoscale: the metric client has no data, ``Scale`` returns
    an invalid result and the scale is kept. Here: a step whose spans are missing brings
    no data; with none in the stable window the decider returns None and the policy
    orders the current replicas (it read such a step as no traffic and ordered 0)."""
    from scalelab.orchestrator.backend import Observation
    from scalelab.orchestrator.context import Context

    a = autoscaler(10)
    assert a.desired(0.0, 1, None) is None
    k = KPA(target=10, max_replicas=100)
    ctx = Context(replicas=4, p95_ms=0.0, rps=0.0, cpu_request_ratio=0.1, cpu_limit_ratio=0.1,
                  mem_request_ratio=0.1, mem_limit_ratio=0.1, cpu_request_now=0.1)
    obs = Observation(0.0, ctx, 4, missing=("spans",))
    assert k.decide(ctx, {"t_s": 0.0, "current_replicas": 4, "observation": obs}).action == 4
    assert k.history == deque()  # nothing recorded before the first data


def test_no_data_ticks_are_left_out_of_the_window_average():
    """``TimedFloat64Buckets.WindowAverage``: ticks without data after the newest data
    are left out of the average; a gap before newer data counts as 0."""
    a = KPA(target=10, step_seconds=5.0, stable_window_s=60.0, panic_window_s=10.0, max_replicas=100)
    assert a.desired(0.0, 1, 40.0) == 4
    assert a.desired(5.0, 4, None) == 4  # the stable window is 40 over one tick with data
    assert a.window_average(a.stable_n) == 40.0 and a.window_average(a.panic_n) == 40.0
    a.desired(10.0, 4, 20.0)
    assert a.window_average(a.stable_n) == 20.0  # (40 + 0 + 20) / 3
    assert a.window_average(a.panic_n) == 10.0  # (0 + 20) / 2
