"""KEDA's Kafka scaler, ported from kedacore/keda (read at 8b4f083): the unit tests of
``pkg/scalers/kafka_scaler_test.go`` (each named after its Go test), the metadata
validation table (``parseKafkaMetadataTestDataset``: the rows about scaling options; the
broker, SASL, TLS and version rows have no counterpart here), the end-to-end expectations
of ``tests/scalers/kafka/kafka_test.go`` driven through the policy's ``decide`` on queue
signals, and kedacore/keda#4483 (one replica more than the partitions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.keda_kafka import (
    KafkaMetadata,
    KedaKafka,
    find_factors,
    lag_for_partition,
    next_factor,
    parse_partition_limitation,
    total_lag,
)
from scalelab.agent.registry import make_policy
from scalelab.orchestrator.backend import INVALID_OFFSET, Observation, PartitionOffsets, PodSample, QueueSignals
from scalelab.orchestrator.context import Context

#: The e2e ScaledObjects' HPA behavior: Percent 100/15s both ways, no stabilisation.
E2E_BEHAVIOR = dict(scale_up_policies="Percent 100/15s", scale_up_window_s=0.0,
                    scale_down_policies="Percent 100/15s", scale_down_window_s=0.0)


# -- pkg/scalers/kafka_scaler_test.go ---------------------------------------------------------


def test_find_factors():
    """TestFindFactors."""
    assert find_factors(10) == [1, 2, 5, 10]
    assert find_factors(13) == [1, 13]
    assert find_factors(17) == [1, 17]
    assert find_factors(25) == [1, 5, 25]
    assert find_factors(50) == [1, 2, 5, 10, 25, 50]
    assert find_factors(100) == [1, 2, 4, 5, 10, 20, 25, 50, 100]
    assert find_factors(0) == []


@pytest.mark.parametrize("lag, factor", [(10, 1), (20, 2), (40, 4), (50, 5), (99, 10), (100, 10), (101, 20)])
def test_get_next_factor(lag, factor):
    """TestGetNextFactor: 100 partitions, lagThreshold 10."""
    assert next_factor(lag, 100, 10) == factor


@pytest.mark.parametrize("committed, latest, policy, to_zero, expected", [
    (INVALID_OFFSET, None, "earliest", True, (0, 0)),  # Scenario 1: returns before needing the latest offset
    (INVALID_OFFSET, None, "earliest", False, (0, 0)),  # Scenario 2: a missing partition is 0 lag, not an error
    (100, None, "earliest", False, (0, 0)),  # Scenario 3: valid offset, missing partition
    (100, 150, "earliest", False, (50, 50)),  # Control: both offsets
    (INVALID_OFFSET, 150, "latest", True, (0, 0)),  # Control: latest policy, scale to zero on invalid offset
], ids=["scenario-1", "scenario-2", "scenario-3", "control-valid", "control-latest-invalid"])  # fmt: skip
def test_get_lag_for_partition_missing_partition(committed, latest, policy, to_zero, expected):
    """TestGetLagForPartition_MissingPartition (partition 0 of "test-topic")."""
    meta = KafkaMetadata(offset_reset_policy=policy, scale_to_zero_on_invalid_offset=to_zero)
    assert lag_for_partition(meta, 0, committed, latest, {}) == expected


def test_lag_for_partition_invalid_offset_rules():
    """getLagForPartition's other branches: latest policy → 1 (0 with scaleToZeroOnInvalidOffset);
    earliest → the whole log; excludePersistentLag against the previous poll's offset."""
    assert lag_for_partition(KafkaMetadata(), 0, INVALID_OFFSET, 150, {}) == (1, 1)
    assert lag_for_partition(KafkaMetadata(offset_reset_policy="earliest"), 0, INVALID_OFFSET, 150, {}) == (150, 150)
    meta, previous = KafkaMetadata(exclude_persistent_lag=True), {}
    assert lag_for_partition(meta, 0, 100, 150, previous) == (50, 50)  # not seen: stored, counted
    assert previous == {0: 100}
    assert lag_for_partition(meta, 0, 100, 160, previous) == (0, 60)  # stuck: only for activation
    assert lag_for_partition(meta, 0, 120, 160, previous) == (40, 40)  # moved: stored again
    assert previous == {0: 120}


@pytest.mark.parametrize("text, expected", [
    ("1", (1,)), ("1,2,3,4", (1, 2, 3, 4)), (" 1 , 2 , 3 ", (1, 2, 3)), ("1-4", (1, 2, 3, 4)), ("3-3", (3,)),
    (" 1 - 4 ", (1, 2, 3, 4)), ("1-4,8,10-12", (1, 2, 3, 4, 8, 10, 11, 12)),
    ("a,b,c", None), ("1-2-3", None), ("a-3", None), ("1-b", None),
], ids=["single value", "comma-separated list", "list with whitespace around values", "simple range",
        "single-element range", "range with whitespace", "mixed list and ranges", "non-numeric value",
        "invalid range: too many parts", "invalid range: non-numeric start",
        "invalid range: non-numeric end"])  # fmt: skip
def test_kafka_parse_partition_limitation(text, expected):
    """TestKafkaParsePartitionLimitation."""
    if expected is None:
        with pytest.raises(PolicyError, match="invalid partition limitation"):
            parse_partition_limitation(text)
    else:
        assert parse_partition_limitation(text) == expected


@pytest.mark.parametrize("params, error", [
    ({"lag_threshold": -1}, "lag_threshold=-1 must be a positive number"),  # failure, lagThreshold is negative
    ({"lag_threshold": 0}, "lag_threshold=0 must be a positive number"),  # failure, lagThreshold is 0
    ({"lag_threshold": 1000000, "activation_lag_threshold": 0}, None),  # success, lagThreshold is 1000000
    ({"lag_threshold": 10, "activation_lag_threshold": "AA"}, "activation_lag_threshold='AA' must be an integer"),
    ({"lag_threshold": 10, "activation_lag_threshold": 0}, None),  # success, activationLagThreshold is 0
    ({"activation_lag_threshold": -1}, "activation_lag_threshold=-1 must be a non-negative number"),
    ({}, None),  # success
    ({"partition_limitation": "1,2,3,4"}, None),
    ({"partition_limitation": "1-4"}, None),
    ({"partition_limitation": "1-4,8,10-12"}, None),
    ({"partition_limitation": "a,b,c,d"}, "partition_limitation='a,b,c,d': invalid partition limitation: a"),
    ({"offset_reset_policy": "latest"}, None),
    ({"offset_reset_policy": "foo"}, "offset_reset_policy='foo' must be one of"),
    ({"offset_reset_policy": "earliest"}, None),
    ({"allow_idle_consumers": "notvalid"}, "allow_idle_consumers='notvalid' must be true or false"),
    ({"allow_idle_consumers": True}, None),
    ({"exclude_persistent_lag": "notvalid"}, "exclude_persistent_lag='notvalid' must be true or false"),
    ({"exclude_persistent_lag": True}, None),
    ({"limit_to_partitions_with_lag": True}, None),
    ({"limit_to_partitions_with_lag": "notvalid"}, "limit_to_partitions_with_lag='notvalid' must be true or false"),
    ({"allow_idle_consumers": True, "limit_to_partitions_with_lag": True},
     "allow_idle_consumers and limit_to_partitions_with_lag cannot be set simultaneously"),
    ({"allow_idle_consumers": True, "limit_to_partitions_with_lag": False}, None),
    ({"topic": "", "limit_to_partitions_with_lag": True},
     "topic must be specified when using limit_to_partitions_with_lag"),
    ({"ensure_even_distribution_of_partitions": True}, None),
    ({"ensure_even_distribution_of_partitions": True, "limit_to_partitions_with_lag": True},
     "limit_to_partitions_with_lag and ensure_even_distribution_of_partitions cannot be set simultaneously"),
    ({"topic": "", "ensure_even_distribution_of_partitions": True},
     "topic must be specified when using ensure_even_distribution_of_partitions"),
])  # fmt: skip
def test_parse_kafka_metadata(params, error):
    """parseKafkaMetadataTestDataset, the rows about the scaling options (KEDA's strings
    become typed parameters: a malformed flag is a wrong type)."""
    if error is None:
        make_policy("keda-kafka", **params)
    else:
        with pytest.raises(PolicyError, match=error.replace("(", r"\(").replace("[", r"\[")):
            make_policy("keda-kafka", **params)


@pytest.mark.parametrize("params, limitation", [
    ({"topic": "", "partition_limitation": "1,2,3,4,5,6"}, None),  # success, ignore partitionLimitation if no topic
    ({"topic": "", "partition_limitation": "           "}, None),  # success, no limitation with whitespace
    ({"topic": "", "partition_limitation": ""}, None),  # success, no limitation
    ({"partition_limitation": "1,2,3,4"}, (1, 2, 3, 4)),
    ({"partition_limitation": "1-4"}, (1, 2, 3, 4)),
    ({"partition_limitation": "1-4,8,10-12"}, (1, 2, 3, 4, 8, 10, 11, 12)),
])  # fmt: skip
def test_parse_kafka_metadata_partition_limitation(params, limitation):
    """parseKafkaMetadataTestDataset: the partition limitation Validate computes."""
    assert KedaKafka(**params).limitation == limitation


def test_partition_limitation_filters_the_partitions():
    """isActivePartition: only the listed partitions count, for the lag and for the cap."""
    parts = [PartitionOffsets(i, 100, 0) for i in range(4)]
    meta = KafkaMetadata(lag_threshold=10)
    assert total_lag(meta, parts, {}, (1, 2)) == (20, 200)
    with pytest.raises(PolicyError, match="at least one active partition"):
        total_lag(meta, parts, {}, (7,))


# -- the jobs model: observations and a loop of decisions ------------------------------------


def observe(t: float, replicas: int, latest: list[int], committed: list[int]) -> Observation:
    parts = tuple(PartitionOffsets(i, lo, c) for i, (lo, c) in enumerate(zip(latest, committed, strict=True)))
    lag = sum(p.lag for p in parts)
    pods = tuple(PodSample(f"r{i}", "ready", 0.0, 1.0, 1.0, 1.0, 512.0, 512.0, 0.1, 100.0) for i in range(replicas))
    return Observation(t_s=t, context=Context(replicas, 100.0, 0.0, 0.1, 0.1, 0.1, 0.1), desired_replicas=replicas,
                       pods=pods, queue=QueueSignals(partitions=parts, lag=lag, waiting=lag, runners=replicas))


def run(policy, replicas: int, t0: float, seconds: float, latest: list[int], committed: list[int],
        step_s: float = 5.0) -> tuple[int, list[int]]:
    """Decide every ``step_s`` for ``seconds`` on fixed offsets; each order takes effect
    at once. Returns the last count and every count ordered."""
    counts = []
    t = t0
    while t < t0 + seconds - 1e-9:
        obs = observe(t, replicas, latest, committed)
        d = policy.decide(obs.context, {"t_s": t, "current_replicas": replicas, "observation": obs})
        replicas = d.action
        counts.append(replicas)
        t += step_s
    return replicas, counts


def e2e_policy(**params) -> KedaKafka:
    """The e2e ScaledObjects: pollingInterval 5, cooldownPeriod 0, lagThreshold 1."""
    return KedaKafka(lag_threshold=1, polling_interval_s=5.0, cooldown_period_s=0.0, max_replicas=20,
                     **E2E_BEHAVIOR, **params)


def test_earliest_policy():
    """testEarliestPolicy: 3 partitions, earliest, activation 1, the group never commits.
    No message: 0; 1 message: stays at 0 (activation); 2: 2 replicas; 7: capped at 3."""
    p = e2e_policy(offset_reset_policy="earliest", activation_lag_threshold=1)
    never = [INVALID_OFFSET] * 3
    n, counts = run(p, 0, 0.0, 30.0, [0, 0, 0], never)
    assert n == 0 and set(counts) == {0}
    n, counts = run(p, n, 30.0, 30.0, [1, 0, 0], never)
    assert n == 0 and set(counts) == {0}
    n, counts = run(p, n, 60.0, 60.0, [1, 1, 0], never)
    assert n == 2 and max(counts) == 2
    n, counts = run(p, n, 120.0, 60.0, [3, 2, 2], never)
    assert n == 3 and max(counts) == 3


def test_scaling_only_partitions_with_lag():
    """testScalingOnlyPartitionsWithLag: activation 1, the group committed 0 and stuck
    there. 1 message: 0; 6 on one partition: 1 and stays; 5 more on another: 2 and stays."""
    p = e2e_policy(offset_reset_policy="earliest", activation_lag_threshold=1, limit_to_partitions_with_lag=True)
    n, counts = run(p, 0, 0.0, 30.0, [1, 0, 0], [0, 0, 0])
    assert n == 0 and set(counts) == {0}
    n, counts = run(p, n, 30.0, 60.0, [6, 0, 0], [0, 0, 0])
    assert n == 1 and max(counts) == 1
    n, counts = run(p, n, 90.0, 60.0, [6, 5, 0], [0, 0, 0])
    assert n == 2 and max(counts) == 2


def test_scaling_ensure_even_distribution_of_partitions():
    """testScalingEnsureEvenDistributionOfPartitions: 10 partitions, activation 1. Lag 1:
    0; lag 5: 5 pods (5 divides 10); lag 8: 10 pods (8 does not)."""
    p = e2e_policy(offset_reset_policy="earliest", activation_lag_threshold=1,
                   ensure_even_distribution_of_partitions=True)
    zero = [0] * 10
    n, counts = run(p, 0, 0.0, 30.0, [1] + [0] * 9, zero)
    assert n == 0
    n, counts = run(p, n, 30.0, 60.0, [1] * 5 + [0] * 5, zero)
    assert n == 5 and max(counts) == 5
    n, counts = run(p, n, 90.0, 60.0, [1] * 8 + [0] * 2, zero)
    assert n == 10 and max(counts) == 10


def test_persistent_lag():
    """testPersistentLag: excludePersistentLag, latest. One message scales to 1; once the
    group is stuck (its offsets do not move) 5 more messages keep it at 1: the stuck lag
    counts for activation, not for scaling."""
    p = e2e_policy(exclude_persistent_lag=True)
    n, _ = run(p, 0, 0.0, 5.0, [1, 0, 0], [0, 0, 0])
    assert n == 1
    n, _ = run(p, n, 5.0, 10.0, [1, 0, 0], [1, 0, 0])  # consumed and committed; idle (cooldown 0: to 0)
    n, counts = run(p, n, 15.0, 90.0, [3, 2, 2], [1, 0, 0])  # never consumed again
    assert n == 1 and set(counts) == {1}


def test_off_by_one_above_the_partition_count():
    """kedacore/keda#4483: P=3, lagThreshold 10, lag 35: the cap tests floor(35/10) = 3 > 3,
    false, so the HPA gets 35 and asks ceil(35/10) = 4 replicas, one more than the partitions."""
    meta = KafkaMetadata(lag_threshold=10)
    parts = [PartitionOffsets(0, 12, 0), PartitionOffsets(1, 12, 0), PartitionOffsets(2, 11, 0)]
    assert total_lag(meta, parts, {}) == (35, 35)
    assert total_lag(meta, [*parts[:2], PartitionOffsets(2, 16, 0)], {}) == (30, 40)  # 40 // 10 > 3: capped
    p = KedaKafka(lag_threshold=10)
    n, _ = run(p, 3, 0.0, 5.0, [12, 12, 11], [0, 0, 0])
    assert n == 4


def test_hpa_tolerance_and_bounds():
    """The HPA's external metric: within 10 % of the target per replica it holds; the HPA
    never goes below max(minReplicaCount, 1) nor above maxReplicaCount."""
    p = KedaKafka(lag_threshold=10, max_replica_count=5, allow_idle_consumers=True)
    n, _ = run(p, 4, 0.0, 5.0, [15, 14, 14], [0, 0, 0])  # 43 / 40 = 1.075: within
    assert n == 4
    n, _ = run(KedaKafka(lag_threshold=10, max_replica_count=5, allow_idle_consumers=True), 4, 0.0, 5.0,
               [100, 0, 0], [0, 0, 0])
    assert n == 5


def test_cooldown_before_scaling_to_zero():
    """cooldownPeriod: inactive since the last active poll, it stays until the cooldown has
    passed (KEDA: lastActive + cooldown before now), then goes to minReplicaCount 0; an
    active poll at 0 replicas brings it back to 1."""
    p = KedaKafka(lag_threshold=10, polling_interval_s=30.0, cooldown_period_s=300.0)
    n, _ = run(p, 1, 0.0, 30.0, [5, 0, 0], [0, 0, 0])  # active at t=0
    assert n == 1
    n, counts = run(p, n, 30.0, 300.0, [5, 0, 0], [5, 0, 0])  # idle from t=30: at t=300, 300 is not before 300
    assert set(counts) == {1}
    n, _ = run(p, n, 330.0, 5.0, [5, 0, 0], [5, 0, 0])
    assert n == 0
    n, _ = run(p, n, 360.0, 5.0, [6, 0, 0], [5, 0, 0])
    assert n == 1


def test_polling_interval_holds_the_metric():
    """pollingInterval: the lag is read every 30 s; the HPA syncs on the last read value."""
    p = KedaKafka(lag_threshold=10, allow_idle_consumers=True)
    n, _ = run(p, 1, 0.0, 5.0, [10, 0, 0], [0, 0, 0])
    assert n == 1
    n, counts = run(p, n, 5.0, 25.0, [100, 0, 0], [0, 0, 0])  # not re-read before t=30
    assert set(counts) == {1}
    n, _ = run(p, n, 30.0, 5.0, [100, 0, 0], [0, 0, 0])
    assert n == 5  # the default behavior: at most max(+4 pods, +100 %) per 15 s


def test_the_service_model_is_refused():
    p = KedaKafka()
    obs = observe(0.0, 1, [0], [0])
    obs = Observation(t_s=0.0, context=obs.context, desired_replicas=1)
    with pytest.raises(PolicyError, match=r"needs the jobs model \(architecture: jobs\)"):
        p.decide(obs.context, {"t_s": 0.0, "current_replicas": 1, "observation": obs})


@given(st.lists(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6),
                min_size=1, max_size=12),
       st.integers(1, 7), st.booleans())
def test_never_more_than_one_above_the_partitions_without_idle_consumers(polls, threshold, persistent):
    """Without allowIdleConsumers the capped lag is below (P + 1) · lagThreshold, so the
    HPA never asks for more than P + 1 replicas (P the partitions)."""
    p = KedaKafka(lag_threshold=threshold, polling_interval_s=5.0, sync_seconds=5.0, exclude_persistent_lag=persistent,
                  max_replicas=100)
    n, t = 1, 0.0
    partitions = len(polls[0])
    for offsets in polls:
        offsets = (offsets * partitions)[:partitions]
        latest = [max(a, b) for a, b in offsets]
        committed = [min(a, b) for a, b in offsets]
        n, _ = run(p, n, t, 5.0, latest, committed)
        t += 5.0
        assert 0 <= n <= partitions + 1
