"""Knative's KPA decider test cases, ported one for one from knative/serving
``pkg/autoscaler/scaling/autoscaler_test.go`` (each test is named after its Go test),
with the cases of ``aggregation/max/window_test.go`` and ``timewindow_test.go`` (the
scale-down delay window) and the rules of ``config/config_test.go`` and
``apis/autoscaling/annotation_validation_test.go`` that the ``kpa`` parameters take.

``newTestAutoscaler``: target utilisation 0.75 (not used by the decision), panic
threshold 2 (200 %), scale-up and scale-down rates 10, a 60-s stable window, created
over one ready pod, reachable. The metric client's stable and panic values are handed
to :meth:`KPA.scale` directly. Left out: the concurrency metric only (not
``TestAutoscalerStableModeIncreaseWithRPS``), no OpenTelemetry metrics or excess burst
capacity (``TestAutoscalerStartMetrics``, ``TestAutoscalerMetrics``,
``TestAutoscalerMetricsWithRPS``; the EBC of every other case), and a pod count that
cannot fail (``TestCantCountPods``, ``TestNewFail``)."""

from __future__ import annotations

from collections import deque

import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.serverless import KPA, MaxTimeWindow, MaxWindow

STABLE_WINDOW = 60.0
TICK = 2.0
#: Go's zero ``time.Time`` in Unix seconds: the scale-down delay cases start there.
GO_ZERO_TIME = -62135596800.0


def autoscaler(target: float, up: float = 10.0, down: float = 10.0, created_over: int = 1, t: float = 0.0,
               **params) -> KPA:
    k = KPA(target=target, max_scale_up_rate=up, max_scale_down_rate=down, stable_window_s=STABLE_WINDOW,
            max_replicas=10_000, **params)
    k.begin(t, created_over)
    return k


# -- scaling/autoscaler_test.go ---------------------------------------------------------


def delayed_autoscaler(delay_s: float) -> KPA:
    """The spec of the scale-down delay cases: target 10, rates 10, panic threshold 100
    (never reached), reachable, created over the fake pod counter's 0 ready pods."""
    return autoscaler(10, panic_threshold=100.0, scale_down_delay_s=delay_s, created_over=0, t=GO_ZERO_TIME)


def test_autoscaler_scale_down_delay():
    """TestAutoscalerScaleDownDelay: a 5-min delay; its subtests "simple" and "gradual"
    run on one autoscaler, as upstream."""
    a = delayed_autoscaler(300)
    now = GO_ZERO_TIME
    # simple
    assert a.scale(now + 2, 0, 40, 40) == 4  # scale up
    assert a.scale(now + 300, 0, 0, 0) == 4  # five minutes at reduced concurrency: less than the delay
    assert a.scale(now + 302, 0, 0, 0) == 0  # five minutes and 2 s: now down
    # gradual
    assert a.scale(now + 540, 0, 40, 40) == 4
    assert a.scale(now + 600, 0, 30, 30) == 4  # 4 still dominates
    assert a.scale(now + 660, 0, 0, 0) == 4  # still at 4
    assert a.scale(now + 840, 0, 0, 0) == 3  # 4 scrolls out, drop to 3
    assert a.scale(now + 900, 0, 0, 0) == 0  # everything scrolled out, drop to 0


def test_autoscaler_scale_down_delay_not_reachable():
    """TestAutoscalerScaleDownDelayNotReachable: an unreachable revision (another one
    takes the traffic) neither waits for the delay nor is held to the scale-down rate."""
    a = delayed_autoscaler(300)
    now = GO_ZERO_TIME
    assert a.scale(now + 2, 0, 40, 40) == 4
    assert a.scale(now + 60, 0, 0, 0) == 4  # one minute at reduced concurrency: less than the delay
    a.reachable = False  # as.Update(unreachableSpec)
    assert a.scale(now + 2, 0, 0, 0) == 0


def test_autoscaler_scale_down_delay_zero():
    """TestAutoscalerScaleDownDelayZero: with no delay, a decision in the same 2-s bucket
    as the last one scales down at once."""
    a = delayed_autoscaler(0)
    assert a.delay_window is None
    now = GO_ZERO_TIME
    assert a.scale(now, 0, 40, 40) == 4
    assert a.scale(now + 0.5, 0, 20, 20) == 2


def test_a_one_bucket_delay_window_is_not_no_delay():
    """The reason ``New`` makes no window for a zero delay (its comment): a one-bucket
    window keeps the larger of two decisions in one bucket."""
    a = delayed_autoscaler(TICK)
    now = GO_ZERO_TIME
    assert a.scale(now, 0, 40, 40) == 4
    assert a.scale(now + 0.5, 0, 20, 20) == 4
    assert a.scale(now + TICK, 0, 20, 20) == 2  # the next bucket


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


def test_autoscaler_stable_mode_increase_with_concurrency_default():
    """TestAutoscalerStableModeIncreaseWithConcurrencyDefault."""
    a = autoscaler(10)
    assert a.scale(0.0, 1, 50, 10) == 5
    assert a.scale(0.0, 1, 100, 10) == 10


def test_autoscaler_unpanic_after_slow_increase():
    """TestAutoscalerUnpanicAfterSlowIncrease."""
    a = autoscaler(1)
    start = 1000.0
    assert a.scale(start, 10, 11, 25) == 25 and a.panic_time == start
    tm = start + STABLE_WINDOW / 2
    assert a.scale(tm, 25 + 15, 30, 41) == 41 and a.panic_time == start  # the panic time does not move
    tm += STABLE_WINDOW / 2 + TICK
    assert a.scale(tm, 25 + 30, 50, 56) == 50 and a.panic_time is None  # no longer in panic


def test_autoscaler_extend_panic_window():
    """TestAutoscalerExtendPanicWindow."""
    a = autoscaler(1)
    start = 1000.0
    assert a.scale(start, 10, 11, 25) == 25
    tm = start + STABLE_WINDOW / 2
    assert a.scale(tm, 40, 30, 80) == 80 and a.panic_time == tm


def test_autoscaler_stable_mode_decrease():
    """TestAutoscalerStableModeDecrease."""
    a = autoscaler(10)
    assert a.scale(0.0, 8, 100, 100) == 10
    assert a.scale(0.0, 8, 50, 50) == 5


def test_autoscaler_stable_mode_no_traffic_scale_to_zero():
    """TestAutoscalerStableModeNoTrafficScaleToZero."""
    a = autoscaler(10)
    assert a.scale(0.0, 1, 1, 0) == 1
    assert a.scale(0.0, 1, 0, 0) == 0


def test_autoscaler_activation_scale():
    """TestAutoscalerActivationScale: activation scale 2; no traffic stays at 0, a little
    traffic (one pod's worth) asks for 2."""
    a = autoscaler(10, activation_scale=2)
    assert a.scale(0.0, 1, 0, 0) == 0
    assert a.scale(0.0, 1, 1, 0) == 2


def test_autoscaler_panic_mode_exponential_track_and_stabilize():
    """TestAutoscalerPanicModeExponentialTrackAndStabilize."""
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
    ("AutoscalerNoDataAtZeroNoAutoscaleWithExplicitEPs", 10, 0, 0, 1, {}, 0),
    ("AutoscalerStableModeUnlimitedTBC", 181, 21, 26, 1, {}, 1),
    ("Autoscaler0TBC", 10, 50, 49, 1, {}, 5),
    ("AutoscalerStableModeNoChange", 10, 50, 50, 1, {}, 5),
    ("AutoscalerPanicStableLargerThanPanic", 1, 50, 30, 5, {"panic_for": 5.0, "max_panic_pods": 5}, 50),
    ("AutoscalerPanicStableLessThanPanic", 1, 20, 30, 5, {"panic_for": 5.0, "max_panic_pods": 5}, 30),
    ("AutoscalerStableModeNoChangeAlreadyScaled", 10, 50, 50, 5, {}, 5),
    ("AutoscalerStableModeIncreaseWithSmallScaleUpRate", 1, 3, 3.1, 2, {"up": 1.1}, 3),
    ("AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10, 1, 1, 100, {"down": 1.1}, 90),
    ("AutoscalerStableModeDecreaseNonReachable", 10, 1, 1, 100, {"down": 1.1, "reachable": False}, 1),
    ("AutoscalerPanicModeDoublePodCount", 10, 50, 100, 1, {}, 10),
])  # fmt: skip
def test_autoscaler_scale(label, target, stable, panic, base, prep, want):
    """TestAutoscalerScale, its table case by case."""
    now = 1000.0
    a = autoscaler(target, up=prep.get("up", 10.0), down=prep.get("down", 10.0))
    if "panic_for" in prep:
        a.panic_time, a.max_panic_pods = now - prep["panic_for"], prep["max_panic_pods"]
    a.reachable = prep.get("reachable", True)
    assert a.scale(now, base, stable, panic) == want, label


def test_autoscaler_panic_then_un_panic_scale_down():
    """TestAutoscalerPanicThenUnPanicScaleDown."""
    a = autoscaler(10)
    assert a.scale(0.0, 1, 100, 100) == 10
    panic_time = 10.0
    assert a.scale(panic_time, 10, 100, 1000) == 100
    assert a.scale(panic_time + 30, 10, 1, 1) == 100  # traffic dropped; still in panic
    assert a.scale(panic_time + 61, 10, 1, 1) == 1  # after the stable window


def test_autoscaler_rate_limit_scale_up():
    """TestAutoscalerRateLimitScaleUp: needs 100 pods, scales ×10 per decision."""
    a = autoscaler(10)
    assert a.scale(0.0, 1, 1000, 1001) == 10
    assert a.scale(0.0, 10, 1000, 1001) == 100


def test_autoscaler_rate_limit_scale_down():
    """TestAutoscalerRateLimitScaleDown: needs 1 pod, scales ÷10 per decision."""
    a = autoscaler(10)
    assert a.scale(0.0, 100, 1, 1) == 10
    assert a.scale(0.0, 10, 1, 1) == 1


def test_autoscaler_use_one_pod_as_minimum_if_endpoints_not_found():
    """TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound: 0 ready pods count as 1 for
    the rate limit (×10 of 1, not of 0)."""
    assert autoscaler(10).scale(0.0, 0, 1000, 888) == 10


def test_autoscaler_update_target():
    """TestAutoscalerUpdateTarget: ``Update`` with target 1 (rates 10, panic threshold 2,
    the 60-s stable window) takes effect at the next decision."""
    a = autoscaler(10)
    assert a.scale(0.0, 1, 100, 101) == 10
    a.target, a.threshold, a.up_rate, a.down_rate, a.stable_s = 1.0, 2.0, 10.0, 10.0, STABLE_WINDOW
    assert a.scale(0.0, 10, 100, 101) == 100


def test_start_in_panic_mode():
    """TestStartInPanicMode."""
    for ready in (0, 1):
        a = autoscaler(100, created_over=ready)
        assert a.panic_time is None and a.max_panic_pods == ready
    a = autoscaler(100, created_over=2)
    assert a.panic_time is not None and a.max_panic_pods == 2


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


# -- aggregation/max/window_test.go and timewindow_test.go ------------------------------


def _shifted(i: int) -> int:
    return i + 3 if i >= 3 else i


@pytest.mark.parametrize("name, values, index, expect", [
    ("single value", [1], None, [1]),
    ("ascending values", [1, 2], None, [1, 2]),
    ("descending values", [2, 1], None, [2, 2]),
    ("up, down, up", [1, 2, 1], None, [1, 2, 2]),
    ("windowing out", [5, 6, 5, 5, 5, 5, 5], None, [5, 6, 6, 6, 6, 6, 5]),
    ("windowing out with gaps", [6, 5, 2, 1], _shifted, [6, 6, 6, 2]),
    ("windowing out 2", [5, 6, 5, 7, 5, 5, 1], None, [5, 6, 6, 7, 7, 7, 7]),
    ("windowing out 3", [5, 8, 5, 7, 5, 5], None, [5, 8, 8, 8, 8, 8]),
    ("windowing out 4", [5, 8, 5, 7, 5, 5, 1], None, [5, 8, 8, 8, 8, 8, 7]),
    ("windowing out 5", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4], None, [5, 8, 8, 8, 8, 8, 7, 7, 5, 5]),
    ("windowing out 6", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4], None, [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4]),
    ("windowing out 7", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9], None, [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9]),
    ("windowing out 8", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9, 3, 4, 2, 1, 0], None,
     [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9, 9, 9, 9, 9, 4]),
    ("multiple with same index, ascending", [1, 2, 3, 4, 5, 6, 7], lambda i: 1, [1, 2, 3, 4, 5, 6, 7]),
    ("multiple with same index, descending", [7, 6, 5, 4, 3, 2, 1], lambda i: 1, [7, 7, 7, 7, 7, 7, 7]),
])  # fmt: skip
def test_window_max(name, values, index, expect):
    """TestWindowMax: a five-bucket window, ``Current`` after each ``Record``."""
    w = MaxWindow(5)
    current = []
    for i, v in enumerate(values):
        w.record(index(i) if index else i, v)
        current.append(w.current())
    assert current == expect, name


NOW = 1_765_000_000.25  # any time: the cases are relative to it


@pytest.mark.parametrize("name, values, expect", [
    ("single value", [(NOW, 5)], 5),
    ("two values in same second", [(NOW, 6), (NOW + 0.5, 5)], 6),
    ("two values", [(NOW, 5), (NOW + 1, 8)], 8),
    ("time gap", [(NOW, 5), (NOW + 6, 4)], 4),
])  # fmt: skip
def test_timed_window_max(name, values, expect):
    """TestTimedWindowMax: a 5-s window in 1-s buckets."""
    m = MaxTimeWindow(5, 1)
    for t, v in values:
        m.record(t, v)
    assert m.current() == expect, name


# -- the parameters' rules: config/config_test.go, annotation_validation_test.go --------


def test_new_config_default():
    """TestNewConfig "default": Knative's defaults are the parameters' defaults."""
    k = KPA()
    assert (k.target, k.stable_s, k.threshold) == (70.0, 60.0, 2.0)
    assert (k.up_rate, k.down_rate, k.scale_down_delay_s) == (1000.0, 2.0, 0.0)
    assert (k.min_scale, k.max_scale, k.activation_scale, k.delay_window) == (0, 0, 1, None)


@pytest.mark.parametrize("name, params, error", [
    ("invalid scale-down-delay", {"scale_down_delay_s": -83}, "scale_down_delay_s=-83 must be within"),
    ("scale-down-delay not seconds", {"scale_down_delay_s": 61.984}, "scale_down_delay_s=61.984 must be a whole"),
    ("max scale up rate 1.0", {"max_scale_up_rate": 1}, "max_scale_up_rate=1 must be greater than 1.0"),
    ("max down down rate negative", {"max_scale_down_rate": -55}, "max_scale_down_rate=-55 must be greater"),
    ("max down down rate 1.0", {"max_scale_down_rate": 1}, "max_scale_down_rate=1 must be greater than 1.0"),
    ("with negative default max scale", {"max_scale": -1}, "max_scale=-1 must be an integer >= 0"),
    ("with valid default max scale", {"max_scale": 10}, None),
    ("with max scale less than min-scale", {"min_scale": 4, "max_scale": 3}, "max_scale=3 is less than min_scale=4"),
    ("with min scale set but max-scale not set", {"min_scale": 4}, None),
])  # fmt: skip
def test_new_config(name, params, error):
    """TestNewConfig, the cases about the ``kpa`` parameters."""
    if error is None:
        KPA(**params)
    else:
        with pytest.raises(PolicyError, match=error.replace(".", r"\.")):
            KPA(**params)


@pytest.mark.parametrize("name, params, error", [
    ("minScale is -1", {"min_scale": -1}, "min_scale=-1 must be an integer >= 0"),
    ("maxScale is -1", {"max_scale": -1}, "max_scale=-1 must be an integer >= 0"),
    ("minScale is 5", {"min_scale": 5}, None),
    ("maxScale is 2", {"max_scale": 2}, None),
    ("minScale is 2, maxScale is 5", {"min_scale": 2, "max_scale": 5}, None),
    ("minScale is 5, maxScale is 2", {"min_scale": 5, "max_scale": 2}, "max_scale=2 is less than min_scale=5"),
    ("minScale is 0, maxScale is 0", {"min_scale": 0, "max_scale": 0}, None),
    ("min-scale, activation-scale, max-scale all set appropriately",
     {"min_scale": 1, "activation_scale": 2, "max_scale": 3}, None),
    ("min-scale is greater than activation-scale", {"min_scale": 3, "activation_scale": 2},
     "min_scale=3 is greater than activation_scale=2"),
    ("max-scale is less than activation-scale", {"max_scale": 1, "activation_scale": 2},
     "max_scale=1 is less than activation_scale=2"),
    ("valid 0 scale down delay", {"scale_down_delay_s": 0}, None),
    ("valid positive scale down delay", {"scale_down_delay_s": 21 * 60 + 31}, None),
    ("invalid positive scale down delay", {"scale_down_delay_s": 311 * 60}, "scale_down_delay_s=18660 must be within"),
    ("invalid positive scale down delay - too precise", {"scale_down_delay_s": 42.5},
     "scale_down_delay_s=42.5 must be a whole number of seconds"),
    ("invalid negative scale down delay", {"scale_down_delay_s": -42}, "scale_down_delay_s=-42 must be within"),
])  # fmt: skip
def test_validate_annotations(name, params, error):
    """TestValidateAnnotations, the cases about the ``kpa`` parameters (activation scale
    1 is scalelab's "off"; Knative's annotation, when set, takes 2 or more)."""
    if error is None:
        KPA(**params)
    else:
        with pytest.raises(PolicyError, match=error.replace(".", r"\.")):
            KPA(**params)
