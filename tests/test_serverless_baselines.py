"""Worked examples for Knative's KPA, PrairieLearn's two rules and Invok."""

import pytest

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
