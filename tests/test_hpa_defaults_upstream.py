"""``pkg/apis/autoscaling/v2/defaults_test.go``, case by case: the API's defaults for a
``behavior``'s scale-up and scale-down rules (``GenerateHPAScaleUpRules``,
``GenerateHPAScaleDownRules``), as :func:`generate_scale_up_rules` /
:func:`generate_scale_down_rules` and the ``hpa`` policy's parameters fill them.

Upstream's scale-down stabilisation left unset (nil) is the controller's flag; here it
is filled with that flag's value (300 s by default), which is what the controller uses.
"""

import pytest

from scalelab.agent.policies.hpa_behavior import (
    DOWNSCALE_STABILIZATION_S,
    ScalingPolicy,
    generate_scale_down_rules,
    generate_scale_up_rules,
)
from scalelab.agent.policies.thresholds import HPA

NIL = None


def _given(pods, pods_period, percent, percent_period):
    """The test's policies: a Pods one when either of its fields is set, then a Percent one."""
    out = []
    if pods or pods_period:
        out.append(ScalingPolicy("Pods", pods, pods_period))
    if percent or percent_period:
        out.append(ScalingPolicy("Percent", percent, percent_period))
    return tuple(out)


DOWN_CASES = {
    # annotation: (rateDownPods, period, rateDownPercent, period, stabilization, selectPolicy,
    #              expected policies, expected stabilization, expected select)
    "Default values": (0, 0, 0, 0, NIL, NIL, [("Percent", 100, 15)], NIL, "Max"),
    "All parameters are specified": (1, 2, 3, 4, 25, "Max", [("Pods", 1, 2), ("Percent", 3, 4)], 25, "Max"),
    "Percent policy is specified": (0, 0, 1, 2, NIL, "Min", [("Percent", 1, 2)], NIL, "Min"),
    "Pods policy is specified": (3, 4, 0, 0, NIL, NIL, [("Pods", 3, 4)], NIL, "Max"),
}

UP_CASES = {
    "Default values": (0, 0, 0, 0, NIL, NIL, [("Pods", 4, 15), ("Percent", 100, 15)], 0, "Max"),
    "All parameters are specified": (1, 2, 3, 4, 25, "Max", [("Pods", 1, 2), ("Percent", 3, 4)], 25, "Max"),
    "Pod policy is specified": (1, 2, 0, 0, NIL, "Min", [("Pods", 1, 2)], 0, "Min"),
    "Percent policy is specified": (0, 0, 7, 10, NIL, NIL, [("Percent", 7, 10)], 0, "Max"),
    "Pod policy and stabilization window are specified": (4, 2, 0, 0, 25, NIL, [("Pods", 4, 2)], 25, "Max"),
    "Percent policy and stabilization window are specified": (0, 0, 7, 60, 25, NIL, [("Percent", 7, 60)], 25, "Max"),
}


@pytest.mark.parametrize("annotation", list(DOWN_CASES))
def test_generate_scale_down_rules(annotation):
    pods, pods_p, pct, pct_p, window, select, policies, want_window, want_select = DOWN_CASES[annotation]
    down = generate_scale_down_rules(_given(pods, pods_p, pct, pct_p), select, window)
    assert [(p.type, p.value, p.period_s) for p in down.policies] == policies
    assert down.window_s == (DOWNSCALE_STABILIZATION_S if want_window is NIL else want_window)
    assert down.select_policy == want_select


@pytest.mark.parametrize("annotation", list(UP_CASES))
def test_generate_scale_up_rules(annotation):
    pods, pods_p, pct, pct_p, window, select, policies, want_window, want_select = UP_CASES[annotation]
    up = generate_scale_up_rules(_given(pods, pods_p, pct, pct_p), select, window)
    assert [(p.type, p.value, p.period_s) for p in up.policies] == policies
    assert up.window_s == want_window
    assert up.select_policy == want_select


def _text(policies):
    return ", ".join(f"{t} {v}/{p}s" for t, v, p in policies)


@pytest.mark.parametrize("annotation", list(UP_CASES))
def test_the_hpa_policy_fills_its_scale_up_parameters_as_the_api_does(annotation):
    pods, pods_p, pct, pct_p, window, select, policies, want_window, want_select = UP_CASES[annotation]
    given = _given(pods, pods_p, pct, pct_p)
    hpa = HPA(behavior="default", scale_up_policies=_text([(p.type, p.value, p.period_s) for p in given]),
              scale_up_select=select, scale_up_window_s=window)
    assert [(p.type, p.value, p.period_s) for p in hpa.scale_up.policies] == policies
    assert (hpa.scale_up.window_s, hpa.scale_up.select_policy) == (want_window, want_select)


@pytest.mark.parametrize("annotation", list(DOWN_CASES))
def test_the_hpa_policy_fills_its_scale_down_parameters_as_the_api_does(annotation):
    pods, pods_p, pct, pct_p, window, select, policies, want_window, want_select = DOWN_CASES[annotation]
    given = _given(pods, pods_p, pct, pct_p)
    hpa = HPA(behavior="default", downscale_window_s=120.0,
              scale_down_policies=_text([(p.type, p.value, p.period_s) for p in given]),
              scale_down_select=select, scale_down_window_s=window)
    assert [(p.type, p.value, p.period_s) for p in hpa.scale_down.policies] == policies
    assert hpa.scale_down.window_s == (120.0 if want_window is NIL else want_window)
    assert hpa.scale_down.select_policy == want_select
