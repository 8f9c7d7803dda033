"""The policy seam: registry, action sets and clamping, static and oracle, rewards, and
the state round trip a resumed run relies on. Every expected value is worked by hand
or found by brute force, not recomputed the way the code computes it."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Policy, PolicyError
from scalelab.agent.registry import make_policy, policy_names
from scalelab.agent.rewards import make_reward
from scalelab.orchestrator.context import Context
from scalelab.orchestrator.protocol import OrderError, ScaleOrder


def ctx(p95=100.0, replicas=2, cpu=0.5):
    return Context(replicas=replicas, p95_ms=p95, rps=10.0, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                   mem_request_ratio=0.3, mem_limit_ratio=0.3)


@pytest.mark.parametrize("mode, level, current, lo, hi, expected", [
    ("fixed", 4, 2, 1, 10, 4),  # within the limits: as ordered
    ("fixed", 12, 3, 1, 10, 10),  # above: the maximum
    ("fixed", 0, 3, 1, 10, 1),  # below: the minimum
    ("fixed", 3, 0, 3, 3, 3),  # a one-count range
    ("incremental", 1, 2, 1, 10, 3),
    ("incremental", -3, 5, 1, 10, 2),
    ("incremental", 1, 10, 1, 10, 10),  # up at the maximum: stays
    ("incremental", -1, 1, 1, 10, 1),  # down at the minimum: stays
    ("incremental", 2, 0, 1, 10, 2),  # from 0 replicas: 0 + 2
    ("incremental", 0, 12, 1, 10, 10),  # "stay" above a lowered maximum: brought down to it
    ("incremental", -50, 40, 0, 5, 0),
])  # fmt: skip
def test_orders_by_hand(mode, level, current, lo, hi, expected):
    assert ScaleOrder(mode, level).target(current, lo, hi) == expected


@given(st.sampled_from(["fixed", "incremental"]), st.integers(-50, 50), st.integers(0, 40),
       st.integers(1, 10), st.integers(0, 30))
def test_an_order_gets_the_count_within_the_limits_nearest_to_what_it_asks(mode, level, current, lo, span):
    """The oracle is a search over every allowed count, not the clamp's formula."""
    hi = lo + span
    if mode == "fixed" and level < 0:
        with pytest.raises(OrderError, match="level"):
            ScaleOrder(mode, level)
        return
    asked = level if mode == "fixed" else current + level  # what the two modes mean (protocol.py)
    target = ScaleOrder(mode, level).target(current, lo, hi)
    assert target in range(lo, hi + 1)
    assert abs(target - asked) == min(abs(n - asked) for n in range(lo, hi + 1))


def test_bad_orders_name_the_field():
    with pytest.raises(OrderError, match="mode"):
        ScaleOrder("relative", 1)
    with pytest.raises(OrderError, match="level"):
        ScaleOrder("fixed", 2.5)
    with pytest.raises(OrderError, match="not a range"):
        ScaleOrder("fixed", 2).target(1, 5, 4)


def test_action_sets():
    inc = ActionSet.incremental(-1, 0, 1)
    assert list(inc.orders) == [ScaleOrder("incremental", -1), ScaleOrder("incremental", 0),
                                ScaleOrder("incremental", 1)]
    assert inc.index_of(ScaleOrder("incremental", 1)) == 2
    fixed = ActionSet.fixed(1, 10)
    assert len(fixed) == 10 and fixed.order(0) == ScaleOrder("fixed", 1) and fixed.order(9) == ScaleOrder("fixed", 10)
    assert [fixed.order(a).target(3, 1, 10) for a in (0, 4, 9)] == [1, 5, 10]
    with pytest.raises(IndexError):
        inc.order(3)
    with pytest.raises(IndexError):
        inc.order(-1)  # not Python's last element
    with pytest.raises(ValueError):
        ActionSet.fixed(5, 4)
    with pytest.raises(ValueError):
        ActionSet(())


def test_registry_suggests_the_closest_name_and_parameter():
    assert {"static", "oracle", "hslinucb", "linucb", "hpa"} <= set(policy_names())
    with pytest.raises(PolicyError, match="did you mean 'static'"):
        make_policy("statik")
    with pytest.raises(PolicyError, match="did you mean 'replicas'"):
        make_policy("static", replica=3)
    with pytest.raises(PolicyError, match=r"replicas=2.5 must be an integer"):
        make_policy("static", replicas=2.5)


def test_the_runners_defaults_reach_only_policies_that_take_them():
    # static takes max_replicas and seed, not slo_ms: given as a default it is dropped, given by hand refused
    p = make_policy("static", replicas=4, defaults={"seed": 1, "max_replicas": 10, "slo_ms": 600})
    with pytest.raises(PolicyError, match="has no parameter 'slo_ms'"):
        make_policy("static", replicas=4, slo_ms=600)
    # the oracle's action set is one action per count 0..max_replicas: the default sized it
    assert len(make_policy("oracle", defaults={"max_replicas": 7}).actions) == 8
    assert p.replicas == 4


def test_static_orders_its_count_every_step_with_probability_one():
    p = make_policy("static", replicas=4, defaults={"seed": 1, "max_replicas": 10, "slo_ms": 600})
    assert isinstance(p, Policy)
    for context, current in ((ctx(), 2), (ctx(p95=5000.0, replicas=9), 9), (ctx(p95=1.0, replicas=1), 1)):
        d = p.decide(context)
        assert d.probability == 1.0 and p.actions.order(d.action).target(current, 1, 10) == 4
        p.update(context, d.action, 0.0, context)  # nothing to learn
    assert p.actions.order(p.decide(ctx()).action).target(2, 1, 3) == 3  # the orchestrator's limit wins


def test_a_state_of_one_policy_is_refused_by_another():
    state = make_policy("static", replicas=4, seed=1).state_dict()
    with pytest.raises(PolicyError, match="state is for policy 'static', not 'oracle'"):
        make_policy("oracle").load_state_dict(state)


def test_oracle_orders_the_level_it_is_told_and_refuses_without_it():
    p = make_policy("oracle", defaults={"max_replicas": 10})
    for told in (1, 3, 10):
        assert p.actions.order(p.decide(ctx(), {"oracle_replicas": told}).action).target(7, 1, 10) == told
    assert p.actions.order(p.decide(ctx(), {"oracle_replicas": 25}).action).target(7, 1, 10) == 10
    with pytest.raises(PolicyError, match="only the simulator"):
        p.decide(ctx(), {})


def _contexts(seed: int, n: int) -> list[Context]:
    rng = np.random.default_rng(seed)
    return [ctx(p95=float(rng.uniform(50, 1500)), replicas=int(rng.integers(1, 8)), cpu=float(rng.uniform(0, 1)))
            for _ in range(n)]


@pytest.mark.parametrize("name", ["hslinucb", "linucb", "lin-ts", "epsilon-greedy", "ucb1", "q-learning", "static"])
def test_a_state_through_json_resumes_the_policy_exactly(name):
    """What a resumed run does (``policy.json``, the agent's checkpoint): the state of a
    policy that has learned, written as JSON and loaded into one built with another seed,
    takes the same decisions with the same propensities and keeps learning the same."""
    a = make_policy(name, defaults={"seed": 3, "max_replicas": 10, "slo_ms": 600.0})
    for c, nxt in zip(_contexts(0, 40), _contexts(1, 40), strict=True):
        d = a.decide(c, {"current_replicas": c.replicas})
        a.update(c, d.action, float(nxt.p95_ms <= 600.0), nxt)
    b = make_policy(name, defaults={"seed": 99, "max_replicas": 10, "slo_ms": 600.0})
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for c, nxt in zip(_contexts(2, 30), _contexts(3, 30), strict=True):
        da, db = (p.decide(c, {"current_replicas": c.replicas}) for p in (a, b))
        assert (da.action, da.probability, da.probabilities) == (db.action, db.probability, db.probabilities)
        for p in (a, b):
            p.update(c, da.action, float(nxt.p95_ms <= 600.0), nxt)
    assert json.dumps(a.state_dict(), sort_keys=True) == json.dumps(b.state_dict(), sort_keys=True)


def test_rewards_by_hand():
    r = make_reward("slo-binary-v1", slo_ms=600)
    assert r(ctx(), 0, ctx(p95=600.0)) == 1.0 and r(ctx(), 0, ctx(p95=600.1)) == 0.0  # the SLO itself is met
    c = make_reward("slo-cost-v1", slo_ms=600, cost=0.5, max_replicas=10)
    assert c(ctx(), 0, ctx(p95=100, replicas=4)) == pytest.approx(1 - 0.5 * 4 / 10)
    assert c(ctx(), 0, ctx(p95=900, replicas=10)) == pytest.approx(0 - 0.5)
    v2 = make_reward("slo-cost-v2", defaults={"max_replicas": 10})  # replica_cost 0.3, change_cost 0.3
    # 2 -> 5 replicas within the SLO: 1 - 1 - 0.3 * 5 / 10 - 0.3 * 3 / 10 = -0.24
    assert v2(ctx(replicas=2), 0, ctx(p95=500, replicas=5)) == pytest.approx(-0.24)
    # the same above the SLO: one more -1
    assert v2(ctx(replicas=2), 0, ctx(p95=700, replicas=5)) == pytest.approx(-1.24)
    # the loop's flag overrides the p95 both ways (missing spans read p95 0; censored ages)
    assert v2(ctx(replicas=2), 0, ctx(p95=0, replicas=5), violation=True) == pytest.approx(-1.24)
    assert v2(ctx(replicas=2), 0, ctx(p95=700, replicas=5), violation=False) == pytest.approx(-0.24)
    assert make_reward("slo-cost-v2", max_replicas=4).max_replicas == 4  # given beats the runner's default
    with pytest.raises(ValueError, match="did you mean 'slo-binary-v1'"):
        make_reward("slo-binary")
    with pytest.raises(ValueError, match="cost must be >= 0"):
        make_reward("slo-cost-v1", cost=-1)
