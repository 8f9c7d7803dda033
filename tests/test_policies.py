"""Known answers for the bandits and the rule-based baselines."""

import math

import numpy as np
import pytest

from scalelab.agent.policies.linucb import HSLinUCB, LinUCB, LinUCBCore
from scalelab.agent.policies.thresholds import HPA, ThresholdCPU
from scalelab.agent.registry import make_policy
from scalelab.orchestrator.backend import Observation, PodSample
from scalelab.orchestrator.context import Context


def ctx(p95=100.0, replicas=2, rps=10.0, cpu=0.5, cpu_now=None):
    return Context(replicas=replicas, p95_ms=p95, rps=rps, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                   mem_request_ratio=0.3, mem_limit_ratio=0.3,
                   cpu_request_now=cpu if cpu_now is None else cpu_now)


def test_linucb_update_and_score_by_hand():
    core = LinUCBCore(n_arms=1, d=2, alpha=1.0, lam=1.0)
    x = np.array([1.0, 2.0])
    core.update(0, x, reward=1.0)
    # A = I + x xᵀ = [[2, 2], [2, 5]], det 6, A⁻¹ = [[5, -2], [-2, 2]] / 6; b = x
    np.testing.assert_allclose(core.A[0], [[2, 2], [2, 5]])
    np.testing.assert_allclose(core.A_inv[0], np.array([[5, -2], [-2, 2]]) / 6)
    # θ = A⁻¹ b = [1, 2] / 6; for y = [1, 0]: θ·y = 1/6, yᵀA⁻¹y = 5/6
    y = np.array([1.0, 0.0])
    assert core.scores(y)[0] == pytest.approx(1 / 6 + math.sqrt(5 / 6))
    exact = LinUCBCore(n_arms=1, d=2, exact_inverse=True)
    exact.update(0, x, 1.0)
    np.testing.assert_allclose(exact.A_inv, core.A_inv)


def test_linucb_finds_the_better_arm():
    rng = np.random.default_rng(0)
    pol = LinUCB(steps=[-1, 0, 1], scale=[10, 1000, 100, 1, 1, 1, 1], bias=True, seed=1)
    # arm 1 ("stay") pays 0.8, the others 0.2 (Bernoulli)
    picks = []
    for _ in range(1500):
        c = ctx(p95=rng.uniform(50, 500), rps=rng.uniform(1, 50))
        d = pol.decide(c)
        pol.update(c, d.action, float(rng.random() < (0.8 if d.action == 1 else 0.2)), c)
        picks.append(d.action)
    assert np.mean(np.array(picks[-500:]) == 1) > 0.9


def test_ties_are_broken_by_the_policys_generator():
    first = LinUCB(seed=7).decide(ctx())
    assert first.probability == pytest.approx(1 / 3)  # fresh: all three arms tie
    assert first.probabilities == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    draws = {LinUCB(seed=s).decide(ctx()).action for s in range(20)}
    assert draws == {0, 1, 2}  # the generator, not the index, breaks the tie
    assert LinUCB(seed=5).decide(ctx()) == LinUCB(seed=5).decide(ctx())


def test_hslinucb_forces_up_and_does_not_learn_on_that_step():
    pol = HSLinUCB(slo_ms=600, seed=0)
    high = ctx(p95=900.0)
    d = pol.decide(high)
    assert d.action == HSLinUCB.UP and d.probability == 1.0
    before = pol.core.A.copy()
    pol.update(high, d.action, 1.0, ctx(p95=300.0))
    np.testing.assert_array_equal(pol.core.A, before)


def test_hslinucb_paper_reward():
    pol = HSLinUCB(slo_ms=600, seed=0)
    assert pol.reward(ctx(p95=100), HSLinUCB.DOWN, ctx(p95=700, replicas=1)) == 0.0  # down judged after
    assert pol.reward(ctx(p95=100), HSLinUCB.DOWN, ctx(p95=500, replicas=1)) == 1.0
    # a down refused at the minimum (the count did not fall) pays 0, as the notebooks' armDown
    assert pol.reward(ctx(p95=100, replicas=1), HSLinUCB.DOWN, ctx(p95=100, replicas=1)) == 0.0
    assert pol.reward(ctx(p95=100), HSLinUCB.STAY, ctx(p95=9000)) == 1.0  # stay judged now
    c = ctx(p95=100.0)
    pol.update(c, HSLinUCB.DOWN, reward=123.0, next_context=ctx(p95=700))  # configured reward ignored
    np.testing.assert_allclose(pol.core.b[HSLinUCB.DOWN], 0.0)
    pol.update(c, HSLinUCB.STAY, reward=0.0, next_context=ctx(p95=700))
    np.testing.assert_allclose(pol.core.b[HSLinUCB.STAY], c.vector())


def test_state_dict_round_trip_continues_identically():
    a = HSLinUCB(seed=3)
    for k in range(30):
        c = ctx(p95=100 + 10 * k)
        a.update(c, a.decide(c).action, 1.0, c)
    b = HSLinUCB(seed=99)
    b.load_state_dict(a.state_dict())
    for k in range(10):
        c = ctx(p95=50 + 7 * k)
        assert a.decide(c) == b.decide(c)


def test_threshold_cpu_is_the_papers_formula():
    pol = ThresholdCPU(max_replicas=15, cpu_request=0.5)
    # 3 pods at 0.9 of a 500 m request: 450 m each -> ceil(3 * 450 / 470) = 3
    assert pol.desired(ctx(replicas=3, cpu=0.9)) == 3
    # at 100 %: ceil(3 * 500 / 470) = 4
    assert pol.desired(ctx(replicas=3, cpu=1.0)) == 4
    assert pol.desired(ctx(replicas=4, cpu=0.1)) == 1


def test_threshold_cpu_reads_the_pods_total_cpu_as_metrics_server_reports_it():
    pol = ThresholdCPU(max_replicas=15)

    def pod(name, cpu, phase="ready"):
        return PodSample(name, phase, 0.0, 1.0, 0.6, 2.5, 640.0, 1536.0, cpu, 200.0)

    # app 450 m + sidecar 30 m per pod, the draining pod and the one without a sample
    # left out: mean 480 m over 2 pods -> ceil(2 * 480 / 470) = 3 (the app alone: 2)
    pods = (pod("a", 0.48), pod("b", 0.48), pod("c", 0.9, "draining"), pod("d", None))
    obs = Observation(10.0, ctx(replicas=3, cpu=0.1), 3, pods=pods)
    assert pol.decide(obs.context, {"observation": obs, "current_replicas": 3}).action == 3


def hpa(**kw):
    return HPA(max_replicas=50, **kw)


def test_hpa_integer_utilization_and_inclusive_tolerance():
    h = hpa(target_utilization=50)
    # 54.9 % truncates to 54 %: ratio 1.08, inside the tolerance -> no change
    assert h.proposal(current=4, ready=4, unready=0, cpu_over_request=0.549) == 4
    # exactly 55 %: ratio 1.1 is still inside (inclusive)
    assert h.proposal(4, 4, 0, 0.55) == 4
    # 56 %: ratio 1.12 -> ceil(1.12 * 4) = 5
    assert h.proposal(4, 4, 0, 0.56) == 5
    # scale down: 20 % -> ceil(0.4 * 4) = 2
    assert h.proposal(4, 4, 0, 0.20) == 2


def test_hpa_multiplies_ready_pods_and_counts_unready_at_zero():
    h = hpa(target_utilization=50)
    # 2 ready at 100 %, 2 starting: usage 2.0; unready filled with 0 -> new util 50 %
    # ratio 1.0 is within tolerance -> keep the current 4
    assert h.proposal(current=4, ready=2, unready=2, cpu_over_request=1.0) == 4
    # 2 ready at 200 %, 2 starting: new util 100 %, ratio 2 -> ceil(2 * 4) = 8
    assert h.proposal(4, 2, 2, 2.0) == 8


def test_hpa_legacy_caps_scale_up_at_twice_or_four_and_holds_300s():
    h = hpa(target_utilization=50, behavior="none")
    # 2 pods at 500 % -> wants 20, limited to max(2 * 2, 4) = 4 in one sync
    assert h.reconcile(0.0, current=2, ready=2, cpu_over_request=5.0) == 4
    assert h.reconcile(15.0, 4, 4, 5.0) == 8  # then max(8, 4) = 8
    # load drops: the 300 s window keeps the highest recommendation (40, then 20)
    assert h.reconcile(30.0, 8, 8, 0.1) == 16  # stab = 40 from t=15, capped at 2 * 8
    h2 = hpa(target_utilization=50, behavior="none")
    h2.reconcile(0.0, 10, 10, 0.5)  # recommendation 10
    assert h2.reconcile(15.0, 10, 10, 0.1) == 10  # wants 2, held by the window
    assert h2.reconcile(300.0, 10, 10, 0.1) == 10  # t=0 still inside [0, 300]
    assert h2.reconcile(316.0, 10, 10, 0.1) == 2  # only the low recommendations remain


def test_hpa_default_behavior_worked_example_3_7_14_28_40():
    h = hpa(target_utilization=50, behavior="default")
    seen, current = [3], 3
    for k in range(5):
        # demand worth 40 pods at the target, spread on the ready pods
        current = h.reconcile(15.0 * k, current, current, cpu_over_request=0.5 * 40 / current)
        seen.append(current)
    assert seen[:5] == [3, 7, 14, 28, 40]


def test_hpa_default_behavior_scale_down_waits_300s():
    h = hpa(target_utilization=50, behavior="default")
    h.reconcile(0.0, 10, 10, 0.5)
    assert h.reconcile(15.0, 10, 10, 0.05) == 10
    assert h.reconcile(301.0, 10, 10, 0.05) == 1


def test_hpa_syncs_every_15_seconds_in_the_loop():
    h = make_policy("hpa", target_utilization=50, defaults={"max_replicas": 10})
    acts = [h.decide(ctx(replicas=2, cpu=2.0), {"t_s": 5.0 * k, "current_replicas": 2}).action for k in range(6)]
    assert acts == [4, 2, 2, 4, 2, 2]  # a sync at 0 s and at 15 s; between, hold the current count
