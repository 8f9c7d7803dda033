"""The policy seam: registry, action sets and clamping, static and oracle, rewards."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Decision, Policy, PolicyError
from scalelab.agent.registry import make_policy, policy_names
from scalelab.agent.rewards import make_reward
from scalelab.orchestrator.context import Context
from scalelab.orchestrator.protocol import OrderError, ScaleOrder


def ctx(p95=100.0, replicas=2):
    return Context(replicas=replicas, p95_ms=p95, rps=10.0, cpu_request_ratio=0.5, cpu_limit_ratio=0.5,
                   mem_request_ratio=0.3, mem_limit_ratio=0.3)


@given(st.sampled_from(["fixed", "incremental"]), st.integers(-50, 50), st.integers(0, 40),
       st.integers(1, 10), st.integers(0, 30))
def test_orders_never_leave_the_limits(mode, level, current, lo, span):
    hi = lo + span
    if mode == "fixed" and level < 0:
        with pytest.raises(OrderError):
            ScaleOrder(mode, level)
        return
    target = ScaleOrder(mode, level).target(current, lo, hi)
    assert lo <= target <= hi
    wanted = level if mode == "fixed" else current + level
    assert target == min(max(wanted, lo), hi)


def test_bad_orders_name_the_field():
    with pytest.raises(OrderError, match="mode"):
        ScaleOrder("relative", 1)
    with pytest.raises(OrderError, match="level"):
        ScaleOrder("fixed", 2.5)


def test_action_sets():
    inc = ActionSet.incremental(-1, 0, 1)
    assert len(inc) == 3 and inc.order(0) == ScaleOrder("incremental", -1)
    fixed = ActionSet.fixed(1, 10)
    assert fixed.order(9).target(3, 1, 10) == 10
    with pytest.raises(IndexError):
        inc.order(3)


def test_registry_suggests_the_closest_name_and_parameter():
    assert {"static", "oracle"} <= set(policy_names())
    with pytest.raises(PolicyError, match="did you mean 'static'"):
        make_policy("statik")
    with pytest.raises(PolicyError, match="did you mean 'replicas'"):
        make_policy("static", replica=3)


def test_static_orders_its_count_with_probability_one():
    p = make_policy("static", replicas=4, defaults={"seed": 1, "max_replicas": 10, "slo_ms": 600})
    assert isinstance(p, Policy)
    d = p.decide(ctx())
    assert isinstance(d, Decision) and d.probability == 1.0
    assert p.actions.order(d.action).target(2, 1, 10) == 4
    state = p.state_dict()
    q = make_policy("static", replicas=4)
    q.load_state_dict(state)
    with pytest.raises(PolicyError, match="static"):
        make_policy("oracle").load_state_dict(state)


def test_oracle_orders_the_level_it_is_told_and_refuses_without_it():
    p = make_policy("oracle", defaults={"max_replicas": 10})
    assert p.actions.order(p.decide(ctx(), {"oracle_replicas": 3}).action).target(7, 1, 10) == 3
    with pytest.raises(PolicyError, match="only the simulator"):
        p.decide(ctx(), {})


def test_rewards():
    r = make_reward("slo-binary-v1", slo_ms=600)
    assert r(ctx(), 0, ctx(p95=600.0)) == 1.0 and r(ctx(), 0, ctx(p95=600.1)) == 0.0
    c = make_reward("slo-cost-v1", slo_ms=600, cost=0.5, max_replicas=10)
    assert c(ctx(), 0, ctx(p95=100, replicas=4)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="did you mean 'slo-binary-v1'"):
        make_reward("slo-binary")
