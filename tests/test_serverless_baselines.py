"""Worked examples for Knative's KPA, PrairieLearn's two rules and Invok."""

import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.serverless import KPA, Invok, PrairieLearn, PrairieLearnNotes, concurrency
from scalelab.orchestrator.context import Context


def ctx(replicas=2, rps=10.0, mean_ms=100.0, cpu=0.5, mem=0.3):
    return Context(replicas, 200.0, rps, cpu, cpu, mem, mem, mean_ms=mean_ms, cpu_request_now=cpu)


def test_concurrency_is_littles_law():
    assert concurrency(ctx(rps=20.0, mean_ms=250.0)) == pytest.approx(5.0)


def test_kpa_panics_at_twice_the_target_and_never_scales_down_in_panic():
    k = KPA(target=10, step_seconds=5, max_replicas=100)
    assert k.desired(0.0, ready_pods=1, observed=15.0) == 2  # ceil(15 / 10); 2 / 1 >= 2: panic
    assert k.panic_time == 0.0
    assert k.desired(5.0, 2, 1.0) == 2  # stable mean 8 -> 1 pod, but no scale-down in panic
    for t in range(10, 65, 5):
        assert k.desired(float(t), 2, 1.0) == 2
    assert k.panic_time == 0.0  # at 60 s the panic is not over yet (strictly after 60 s)
    assert k.desired(65.0, 2, 1.0) == 1  # 60 s below the threshold: out of panic, stable says 1
    assert k.panic_time is None


def test_kpa_halves_at_most_per_decision():
    k = KPA(target=10, max_replicas=100)
    assert k.desired(0.0, ready_pods=1, observed=0.0) == 0  # created over one pod: not in panic
    assert k.desired(5.0, ready_pods=8, observed=0.0) == 4  # floor(8 / 2)
    assert k.desired(7.0, 4, 0.0) == 2


def test_kpa_starts_in_panic_over_more_than_one_ready_pod():
    """Knative's newAutoscaler: created over curC > 1 ready pods, it is in panic mode with
    maxPanicPods = curC, so it keeps at least that scale until it has data; over one pod
    it is not."""
    k = KPA(target=10, max_replicas=100)
    assert k.desired(0.0, ready_pods=8, observed=0.0) == 8 and k.panic_time == 0.0
    assert k.desired(30.0, 8, 0.0) == 8  # still in panic: no scale-down
    assert k.desired(61.0, 8, 0.0) == 4  # 60 s with no over-threshold tick: panic over, halve
    one = KPA(target=10, max_replicas=100)
    assert one.desired(0.0, ready_pods=1, observed=0.0) == 0 and one.panic_time is None


def test_kpa_scale_down_delay_holds_the_largest_decision_of_the_delay():
    """scale_down_delay_s=30: a decision stays for 30 s after the need has fallen (the
    2-s buckets of Knative's window), then the rate limit halves it per decision."""
    k = KPA(target=10, scale_down_delay_s=30, max_replicas=100)
    assert k.desired(0.0, 1, 80.0) == 8  # 8 / 1 >= 2: panic, for 60 s
    got = [k.desired(float(t), 8, 0.0) for t in range(5, 130, 5)]
    # panic holds 8 through 60 s; the window then keeps 8 until 8 was last decided (60 s) + 30 s
    assert got[:17] == [8] * 17 and got[17:] == [4, 4, 4, 4, 4, 4, 4, 4]  # t >= 90: floor(8 / 2)
    plain = KPA(target=10, max_replicas=100)
    plain.desired(0.0, 1, 80.0)
    assert [plain.desired(float(t), 8, 0.0) for t in range(5, 70, 5)][-1] == 4  # at 65 s without a delay


def test_kpa_activation_scale_and_bounds_act_on_the_order():
    """activation_scale lifts a count above 0 to at least 3; min_scale and max_scale
    bound the order, but not while there is no data (the current replicas are kept)."""
    from scalelab.orchestrator.backend import Observation

    act = KPA(target=10, activation_scale=3, max_replicas=100)
    assert act.decide(ctx(replicas=1, rps=10.0, mean_ms=100.0), {"t_s": 0.0}).action == 3  # 1 in flight
    idle = KPA(target=10, activation_scale=3, max_replicas=100)
    assert idle.decide(ctx(replicas=1, rps=0.0), {"t_s": 0.0}).action == 0  # no traffic: 0 stays 0
    low = KPA(target=10, min_scale=2, max_scale=5, max_replicas=100)
    assert low.decide(ctx(replicas=1, rps=0.0), {"t_s": 0.0}).action == 2
    high = KPA(target=10, min_scale=2, max_scale=5, max_replicas=100)
    assert high.decide(ctx(replicas=1, rps=500.0, mean_ms=200.0), {"t_s": 0.0}).action == 5  # wants 10
    capped = KPA(target=10, max_scale=50, max_replicas=8)
    assert capped.decide(ctx(replicas=1, rps=500.0, mean_ms=200.0), {"t_s": 0.0}).action == 8  # the action set
    blind = KPA(target=10, min_scale=6, max_replicas=100)
    c = ctx(replicas=4)
    obs = Observation(0.0, c, 4, missing=("spans",))
    assert blind.decide(c, {"t_s": 0.0, "current_replicas": 4, "observation": obs}).action == 4


def test_kpa_state_round_trip_keeps_the_delay_window():
    a = KPA(target=10, scale_down_delay_s=20, max_replicas=100)
    for t, obs in [(0.0, 50.0), (5.0, 10.0), (10.0, 10.0)]:
        a.desired(t, 5, obs)
    b = KPA(target=10, scale_down_delay_s=20, max_replicas=100)
    b.load_state_dict(a.state_dict())
    assert b.delay_window.window.maxima == a.delay_window.window.maxima
    assert [b.desired(float(t), 5, 0.0) for t in range(15, 60, 5)] == \
        [a.desired(float(t), 5, 0.0) for t in range(15, 60, 5)]


@pytest.mark.parametrize("params, words", [
    ({"max_scale_up_rate": 1.0}, "max_scale_up_rate=1.0"),
    ({"max_scale_down_rate": 0.5}, "max_scale_down_rate=0.5"),
    ({"scale_down_delay_s": 7200.0}, "scale_down_delay_s=7200.0"),
    ({"activation_scale": 0}, "activation_scale=0"),
    ({"min_scale": -2}, "min_scale=-2"),
    ({"activation_scale": 1.5}, "activation_scale=1.5"),
])
def test_kpa_bad_parameters_are_named(params, words):
    from scalelab.agent.registry import make_policy

    with pytest.raises(PolicyError, match=words):
        make_policy("kpa", **params)


def test_prairielearn_rules():
    notes = PrairieLearnNotes(jobs_per_host=5)
    assert notes.hosts(16) == 5  # (16 + 2 * 4) / 5 = 4.8 -> 5
    assert notes.hosts(0) == 1
    code = PrairieLearn(host_capacity=40, capacity_factor=1.3)
    assert code.hosts(52, 52) == 2  # (52 + 0.3 * 52) / 40 = 1.69 -> 2
    assert code.hosts(40, 40) == 2  # 52 / 40
    assert code.hosts(30, 30) == 1


def test_invok_adds_one_when_overloaded_and_removes_one_after_30s_idle():
    inv = Invok()
    assert inv.decide(ctx(cpu=0.8), {"t_s": 0.0, "current_replicas": 2}).action == 2  # +1
    assert inv.decide(ctx(cpu=0.5, mem=0.75), {"t_s": 5.0, "current_replicas": 3}).action == 2  # memory
    assert inv.decide(ctx(cpu=0.5), {"t_s": 10.0, "current_replicas": 3}).action == 1  # healthy: stay
    acts = [inv.decide(ctx(cpu=0.0), {"t_s": 15.0 + 5 * k, "current_replicas": 3}).action for k in range(8)]
    assert acts == [1, 1, 1, 1, 1, 1, 0, 1]  # idle since 15 s: removal at 45 s, then the cooldown restarts
    assert Invok().decide(ctx(cpu=0.9), {"t_s": 0.0, "current_replicas": 10}).action == 1  # max 10
