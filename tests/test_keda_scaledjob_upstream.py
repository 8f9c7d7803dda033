"""KEDA's ScaledJob, ported from kedacore/keda (read at 8b4f083): every
``GetEffectiveMaxScale`` case of ``pkg/scaling/executor/scale_jobs_test.go`` for the four
strategies (each test named after its Go test), ``NewScalingStrategy``'s choice, the
``getScalingDecision`` cases about ``minReplicaCount``, ``IsScaledJobActive`` of
``pkg/scaling/scaledjob/metrics.go``, and the policy driven through ``decide`` on queue
signals (a Job is a one-shot runner)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.keda_scaledjob import (
    KedaScaledJob,
    ScalerMetrics,
    ScalingStrategy,
    is_scaled_job_active,
    jobs_to_create,
    queue_length_and_max_value,
    scaling_decision,
)
from scalelab.orchestrator.backend import Observation, PartitionOffsets, PodSample, QueueSignals
from scalelab.orchestrator.context import Context


def eff(strategy: ScalingStrategy, max_scale, running, pending, max_replica_count, scale_to=1):
    return strategy.effective_max_scale(max_scale, running, pending, max_replica_count, scale_to)


def test_new_scaling_strategy():
    """TestNewNewScalingStrategy."""
    assert ScalingStrategy.of("custom", 10, "0").strategy == "custom"
    assert ScalingStrategy.of("accurate", 0, "0").strategy == "accurate"
    assert ScalingStrategy.of("default").strategy == "default"
    assert ScalingStrategy.of("eager").strategy == "eager"


@pytest.mark.parametrize("args, expected", [((3, 2, 0, 5), 1), ((2, 0, 0, 5), 2)])
def test_default_scaling_strategy(args, expected):
    """TestDefaultScalingStrategy: maxScale − running."""
    assert eff(ScalingStrategy.of("default"), *args)[0] == expected


def test_custom_scaling_strategy():
    """TestCustomScalingStrategy."""
    s = ScalingStrategy.of("custom", 1, "0.5")
    assert eff(s, 3, 2, 0, 5)[0] == 1
    assert eff(s, 10, 0, 0, 10)[0] == 9
    s = ScalingStrategy.of("custom")  # neither parameter: the default strategy
    assert s.strategy == "default"
    assert eff(s, 3, 2, 0, 5)[0] == 1
    assert eff(s, 2, 0, 0, 5)[0] == 2
    assert ScalingStrategy.of("custom", 1, "").strategy == "default"  # an empty string does not parse
    assert eff(ScalingStrategy.of("custom", 2, "0"), 3, 2, 0, 5)[0] == 1
    assert eff(ScalingStrategy.of("custom", -2, "0"), 3, 2, 0, 4)[0] == 4


def test_custom_scaling_strategy_nil_queue_length_deduction():
    """TestCustomScalingStrategyNilQueueLengthDeduction (kedacore/keda#7798)."""
    s = ScalingStrategy("custom", None, 0.5)
    assert eff(s, 10, 2, 0, 100)[0] == 9
    assert eff(s, 10, 0, 0, 100)[0] == 10
    s = ScalingStrategy.of("custom", None, "0.5")
    assert s.strategy == "custom"
    assert eff(s, 10, 2, 0, 100)[0] == 9


@pytest.mark.parametrize("args, expected", [
    ((3, 2, 0, 5), 3), ((5, 2, 0, 5), 3),  # maxScale + running > maxReplicaCount: maxReplicaCount − running
    ((3, 4, 2, 10), 1), ((5, 4, 2, 5), 1),  # pending jobs are deducted
    ((3, 3, 3, 5), 0),
    ((15, 15, 15, 20), 0),
    ((10, 10, 10, 15), 0),
    ((20, 15, 10, 20), 5),
])  # fmt: skip
def test_accurate_scaling_strategy(args, expected):
    """TestAccurateScalingStrategy."""
    assert eff(ScalingStrategy.of("accurate"), *args)[0] == expected


@pytest.mark.parametrize("args, expected", [
    ((4, 3, 0, 10), 4), ((4, 0, 3, 10), 4),
    ((4, 7, 0, 10), 3), ((4, 1, 6, 10), 3),
    ((15, 0, 0, 10), 10),
])  # fmt: skip
def test_eager_scaling_strategy(args, expected):
    """TestEagerScalingStrategy: min(maxReplicaCount − running − pending, maxScale), and scaleTo
    becomes maxReplicaCount."""
    assert eff(ScalingStrategy.of("eager"), *args) == (expected, 10)


def test_running_job_count_smaller_min_replica_count():
    """TestRunningJobCountSmallerMinReplicaCount."""
    assert scaling_decision(ScalingStrategy(), 0, 0, 0, 0, 2, 100) == (2, 2)


def test_running_job_count_is_deducted_from_min_replica_count():
    """TestRunningJobCountIsDeductedFromMinReplicaCount."""
    assert scaling_decision(ScalingStrategy(), 1, 0, 0, 0, 2, 100) == (1, 1)


def test_running_job_count_greater_or_equal_min_replica_count_executes_scaling_strategy():
    """TestRunningJobCountGreaterOrEqualMinReplicaCountExecutesScalingStrategy."""
    assert scaling_decision(ScalingStrategy(), 1, 2, 2, 0, 1, 100) == (2, 2)


def test_is_scaled_job_active():
    """metrics.go: scaleTo = ceil(queueLength), maxScale = ceil(min(maxValue, maxReplicaCount));
    under ``max`` a trigger counts only with a queue above 0; minReplicaCount > 0 is active."""
    q, v = queue_length_and_max_value(35, 10, 100)
    assert (q, v) == (35.0, 3.5)
    assert is_scaled_job_active([ScalerMetrics(q, v, True)], "max", 0, 100) == (True, 35, 4, 3.5)
    assert is_scaled_job_active([ScalerMetrics(0.0, 0.0, True)], "max", 0, 100)[0] is False
    assert is_scaled_job_active([ScalerMetrics(0.0, 0.0, True)], "sum", 0, 100)[0] is True
    assert is_scaled_job_active([], "max", 2, 100) == (True, 0, 0, 0.0)
    assert queue_length_and_max_value(500, 1, 100) == (500.0, 100.0)
    metrics = [ScalerMetrics(4.0, 2.0, True), ScalerMetrics(9.0, 3.0, True), ScalerMetrics(20.0, 5.0, False)]
    assert is_scaled_job_active(metrics, "max", 0, 100)[1:3] == (9, 3)
    assert is_scaled_job_active(metrics, "min", 0, 100)[1:3] == (4, 2)
    assert is_scaled_job_active(metrics, "avg", 0, 100)[1:3] == (7, 3)  # 6.5 → 7, 2.5 → 3
    assert is_scaled_job_active(metrics, "sum", 0, 100)[1:3] == (13, 5)


# -- the policy on the jobs model -------------------------------------------------------------


def observe(t: float, running: int, starting: int, latest: list[int], committed: list[int]) -> Observation:
    parts = tuple(PartitionOffsets(i, lo, c) for i, (lo, c) in enumerate(zip(latest, committed, strict=True)))
    lag = sum(p.lag for p in parts)
    pods = tuple(PodSample(f"r{i}", "starting" if i < starting else "ready", 0.0, None if i < starting else 1.0,
                           1.0, 1.0, 512.0, 512.0, None, None) for i in range(running))
    return Observation(t_s=t, context=Context(running - starting, 100.0, 0.0, 0.1, 0.1, 0.1, 0.1),
                       desired_replicas=running, pods=pods,
                       queue=QueueSignals(partitions=parts, lag=lag, waiting=lag, runners=running))


def decide(policy, t, running, starting, latest, committed):
    obs = observe(t, running, starting, latest, committed)
    return policy.decide(obs.context, {"t_s": t, "current_replicas": running, "observation": obs})


@pytest.mark.parametrize("strategy, expected", [("default", 4 - 2), ("accurate", 4 - 1), ("eager", 4)])
def test_the_policy_adds_runners_from_the_lag(strategy, expected):
    """Lag 35 on 3 partitions, lagThreshold 10 (the partition cap lets 35 through): scaleTo
    35, maxScale 4; 2 runners exist, 1 of them starting. default: 4 − 2; accurate: 4 − 1
    pending; eager: min(100 − 2 − 1, 4)."""
    p = KedaScaledJob(lag_threshold=10, scaling_strategy=strategy, max_replicas=20)
    d = decide(p, 0.0, 2, 1, [12, 12, 11], [0, 0, 0])
    assert d.info["jobs_created"] == expected
    assert d.action == 2 + expected


def test_the_policy_polls_every_polling_interval():
    """pollingInterval 30 s: between polls nothing is created (the running count is ordered)."""
    p = KedaScaledJob(lag_threshold=1, max_replicas=20)
    assert decide(p, 0.0, 0, 0, [3, 0, 0], [0, 0, 0]).action == 3
    assert decide(p, 5.0, 3, 3, [9, 0, 0], [0, 0, 0]).action == 3
    # lag 9 capped at 3 partitions x 1: maxScale 3, 3 running: none created
    assert decide(p, 30.0, 3, 0, [9, 0, 0], [0, 0, 0]).info["jobs_created"] == 0
    assert decide(p, 35.0, 2, 0, [9, 0, 0], [1, 0, 0]).action == 2  # one runner done; no poll
    assert decide(p, 60.0, 2, 0, [9, 0, 0], [1, 0, 0]).action == 3  # polled: 3 − 2 running


def test_inactive_below_the_activation_threshold():
    p = KedaScaledJob(lag_threshold=1, activation_lag_threshold=2)
    assert decide(p, 0.0, 0, 0, [2, 0, 0], [0, 0, 0]).action == 0
    p = KedaScaledJob(lag_threshold=1, activation_lag_threshold=2, min_replica_count=1)
    assert decide(p, 0.0, 0, 0, [0, 0, 0], [0, 0, 0]).action == 1  # below minReplicaCount: the missing one


def test_bad_parameters_are_named():
    with pytest.raises(PolicyError, match="scaling_strategy='greedy'"):
        KedaScaledJob(scaling_strategy="greedy")
    with pytest.raises(PolicyError, match="multiple_scalers_calculation='median'"):
        KedaScaledJob(multiple_scalers_calculation="median")
    with pytest.raises(PolicyError, match="lag_threshold=0"):
        KedaScaledJob(lag_threshold=0)
    with pytest.raises(PolicyError, match=r"custom_scaling_queue_length_deduction=1\.5"):
        KedaScaledJob(scaling_strategy="custom", custom_scaling_queue_length_deduction=1.5)
    with pytest.raises(PolicyError, match=r"needs the jobs model \(architecture: jobs\)"):
        obs = observe(0.0, 1, 0, [0], [0])
        KedaScaledJob().decide(obs.context, {"observation": Observation(0.0, obs.context, 1)})


@given(st.sampled_from(["default", "custom", "accurate", "eager"]), st.integers(-5, 5), st.floats(0, 2),
       st.integers(0, 150), st.integers(0, 150), st.integers(0, 150), st.integers(1, 120), st.integers(0, 300),
       st.integers(0, 5), st.booleans())
def test_never_a_negative_number_of_jobs(strategy, deduction, percentage, max_scale, running, pending, max_rc,
                                         scale_to, min_rc, active):
    """Whatever the counts, no strategy creates a negative number of Jobs, and the policy
    never orders fewer runners than exist."""
    pending = min(pending, running)
    s = ScalingStrategy.of(strategy, deduction, percentage)
    e, to = scaling_decision(s, running, scale_to, max_scale, pending, min_rc, max_rc)
    assert jobs_to_create(active, to, e) >= 0


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 12), st.integers(0, 12)),
                min_size=1, max_size=10),
       st.sampled_from(["default", "custom", "accurate", "eager"]))
def test_the_policy_only_adds_runners(polls, strategy):
    p = KedaScaledJob(lag_threshold=3, scaling_strategy=strategy, custom_scaling_running_job_percentage=0.5,
                      custom_scaling_queue_length_deduction=1, polling_interval_s=5.0, max_replicas=1000)
    for k, (a, b, running, starting) in enumerate(polls):
        d = decide(p, 5.0 * k, running, min(starting, running), [max(a, b), 3], [min(a, b), 3])
        assert d.action >= running and d.info["jobs_created"] >= 0
