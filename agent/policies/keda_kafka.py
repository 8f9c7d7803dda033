"""KEDA's Kafka scaler driving a ScaledObject's HPA, on the jobs model's queue signals.

Followed: ``kedacore/keda`` (read at 8b4f083, 2026-08):

* ``pkg/scalers/kafka_scaler.go``: the trigger's metadata, defaults and ``Validate``
  (:class:`KafkaMetadata`), ``parsePartitionLimitation``, ``getLagForPartition``
  (:func:`lag_for_partition`), ``getTotalLag`` (:func:`total_lag`), ``FindFactors`` and
  ``getNextFactorThatBalancesConsumersToTopicPartitions`` (:func:`find_factors`,
  :func:`next_factor`), and ``GetMetricsAndActivity``: the metric is ``totalLag`` and the
  trigger is active when ``totalLagWithPersistent > activationLagThreshold``.
* ``pkg/scalers/scaler.go``: the metric's target is an ``AverageValue`` of ``lagThreshold``.
* ``pkg/scaling/executor/scale_scaledobjects.go`` (``RequestScale``): KEDA itself moves the
  target between 0 and 1 (``minReplicaCount`` when above 0) by the trigger's activity,
  and to ``minReplicaCount`` (0 by default) once inactive for ``cooldownPeriod`` (300 s,
  ``scale_executor.go``) after the last active poll; ``pollingInterval`` 30 s
  (``withtriggers_types.go``).
* ``apis/keda/v1alpha1/scaledobject_types.go``: the HPA's bounds, ``minReplicas`` =
  ``max(minReplicaCount, 1)``, ``maxReplicas`` = ``maxReplicaCount`` (100).

Between 1 and ``maxReplicaCount`` the HPA scales: Kubernetes' ``GetExternalPerPodMetricReplicas``
(``ceil(totalLag / lagThreshold)`` unless ``totalLag / (lagThreshold · statusReplicas)`` is
within the tolerance) then the controller's behavior -- the existing
:class:`~scalelab.agent.policies.thresholds.HPA` code, with its external metric in place of
CPU. The HPA reads the value KEDA read at its last poll (KEDA's ``useCachedMetrics: true``;
without it the HPA's 15-s sync would query the scaler afresh).

The jobs topic's partitions are the observation's ``queue.partitions``; each
:class:`~scalelab.orchestrator.backend.PartitionOffsets` is one partition's latest
(producer) and committed (consumer group) offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scalelab.agent.base import Decision, PolicyError, needs_queue
from scalelab.agent.policies.anticipatory import external_per_pod_proposal
from scalelab.agent.policies.thresholds import HPA
from scalelab.orchestrator.backend import INVALID_OFFSET, Observation, PartitionOffsets, QueueSignals
from scalelab.orchestrator.context import Context

OFFSET_RESET_POLICIES = ("latest", "earliest")
#: ``pollingInterval`` (``withtriggers_types.go``), s.
DEFAULT_POLLING_INTERVAL_S = 30.0
#: ``defaultCooldownPeriod`` (``scale_executor.go``), s.
DEFAULT_COOLDOWN_PERIOD_S = 300.0
#: ``defaultHPAMaxReplicas`` (``scaledobject_types.go``).
DEFAULT_MAX_REPLICA_COUNT = 100
_INT = re.compile(r"^[+-]?\d+$")
_INT32 = (-(2**31), 2**31 - 1)


def _go_int32(text: str, part: str) -> int:
    """``strconv.ParseInt(text, 10, 32)``: an optional sign and decimal digits, in int32."""
    if not _INT.match(text) or not _INT32[0] <= int(text) <= _INT32[1]:
        raise PolicyError(f"invalid partition limitation: {part}")
    return int(text)


def parse_partition_limitation(text: str) -> tuple[int, ...]:
    """``parsePartitionLimitation``: comma-separated ids and ``start-end`` ranges (both
    ends included), spaces around each allowed: ``"1-4,8,10-12"`` is 1, 2, 3, 4, 8, 10,
    11, 12. A reversed range is empty, as Go's loop makes it. An error names the part."""
    out: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if "-" in part:
            ends = part.split("-")
            if len(ends) != 2:
                raise PolicyError(f"invalid partition limitation range: {part}")
            start, end = (_go_int32(e.strip(), part) for e in ends)
            out.extend(range(start, end + 1))
        else:
            out.append(_go_int32(part, part))
    return tuple(out)


@dataclass(frozen=True)
class KafkaMetadata:
    """The Kafka trigger's scaling metadata (``kafkaMetadata``), KEDA's names in snake
    case, KEDA's defaults. ``topic``: the topic named (``""``: every topic the group
    consumes; then ``partition_limitation`` is ignored, and the two options that need a
    topic are refused). Build it with :meth:`validated`."""

    lag_threshold: int = 10
    activation_lag_threshold: int = 0
    offset_reset_policy: str = "latest"
    allow_idle_consumers: bool = False
    exclude_persistent_lag: bool = False
    scale_to_zero_on_invalid_offset: bool = False
    limit_to_partitions_with_lag: bool = False
    ensure_even_distribution_of_partitions: bool = False
    partition_limitation: str = ""
    topic: str = "jobs"

    def validate(self, who: str = "keda-kafka") -> tuple[int, ...] | None:
        """``Validate`` (and the struct tags' enum and integer rules), in its order: the
        partition limitation it computes (None: every partition), or a
        :class:`PolicyError` naming the parameter (and KEDA's name for it)."""
        def bad(message: str) -> PolicyError:
            return PolicyError(f"{who}: {message}")

        for key, keda in (("lag_threshold", "lagThreshold"), ("activation_lag_threshold", "activationLagThreshold")):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
                raise bad(f"{key}={v!r} must be an integer (KEDA's {keda})")
        if self.offset_reset_policy not in OFFSET_RESET_POLICIES:
            raise bad(f"offset_reset_policy={self.offset_reset_policy!r} must be one of {OFFSET_RESET_POLICIES} "
                      "(KEDA's offsetResetPolicy)")
        if self.lag_threshold <= 0:
            raise bad(f"lag_threshold={self.lag_threshold!r} must be a positive number (KEDA's \"lagThreshold\")")
        if self.activation_lag_threshold < 0:
            raise bad(f"activation_lag_threshold={self.activation_lag_threshold!r} must be a non-negative number "
                      "(KEDA's \"activationLagThreshold\")")
        limitation = None
        if self.partition_limitation.strip() != "":
            try:
                limitation = parse_partition_limitation(self.partition_limitation)
            except PolicyError as exc:
                raise bad(f"partition_limitation={self.partition_limitation!r}: {exc}") from None
        if self.topic == "":
            limitation = None
        if self.allow_idle_consumers and self.limit_to_partitions_with_lag:
            raise bad("allow_idle_consumers and limit_to_partitions_with_lag cannot be set simultaneously")
        if self.topic == "" and self.limit_to_partitions_with_lag:
            raise bad("topic must be specified when using limit_to_partitions_with_lag")
        if self.limit_to_partitions_with_lag and self.ensure_even_distribution_of_partitions:
            raise bad("limit_to_partitions_with_lag and ensure_even_distribution_of_partitions cannot be set "
                      "simultaneously")
        if self.topic == "" and self.ensure_even_distribution_of_partitions:
            raise bad("topic must be specified when using ensure_even_distribution_of_partitions")
        return limitation


def kafka_metadata(who: str, **options: Any) -> tuple[KafkaMetadata, tuple[int, ...] | None]:
    """The trigger's metadata from a policy's parameters, validated: (metadata, the
    partition limitation or None)."""
    meta = KafkaMetadata(**options)
    limitation = meta.validate(who)
    return replace(meta, lag_threshold=int(meta.lag_threshold),
                   activation_lag_threshold=int(meta.activation_lag_threshold)), limitation


def find_factors(n: int) -> list[int]:
    """``FindFactors``: the divisors of ``n`` in increasing order (none below 1)."""
    if n < 1:
        return []
    out: set[int] = set()
    for i in range(1, math.isqrt(n) + 1):
        if n % i == 0:
            out.update((i, n // i))
    return sorted(out)


def next_factor(total_lag: int, partitions: int, lag_threshold: int) -> int:
    """``getNextFactorThatBalancesConsumersToTopicPartitions``: the smallest divisor ``f``
    of ``partitions`` with ``f · lag_threshold >= total_lag``, else ``partitions``."""
    for f in find_factors(partitions):
        if f * lag_threshold >= total_lag:
            return f
    return partitions


def lag_for_partition(meta: KafkaMetadata, partition: int, committed: int, latest: int | None,
                      previous: dict[int, int]) -> tuple[int, int]:
    """``getLagForPartition``: ``(lag, lagWithPersistent)`` of one partition whose group
    committed ``committed`` (:data:`INVALID_OFFSET`: never) and whose latest offset is
    ``latest`` (None: missing from the latest-offset response, as Azure Event Hub does).
    ``previous``: the committed offsets seen at the previous poll, by partition, which
    ``exclude_persistent_lag`` reads and updates as KEDA's ``previousOffsets``."""
    if committed == INVALID_OFFSET:
        if meta.offset_reset_policy == "latest":
            v = 0 if meta.scale_to_zero_on_invalid_offset else 1
            return v, v
        if meta.scale_to_zero_on_invalid_offset:  # earliest
            return 0, 0
    if latest is None:
        return 0, 0
    if committed == INVALID_OFFSET:  # earliest, without scale_to_zero_on_invalid_offset: the whole log
        return latest, latest
    if meta.exclude_persistent_lag:
        seen = previous.get(partition)
        if seen is not None and seen == committed:  # stuck since the previous poll: not for scaling
            return 0, latest - committed
        previous[partition] = committed
    return latest - committed, latest - committed


def total_lag(meta: KafkaMetadata, partitions: Sequence[PartitionOffsets], previous: dict[int, int],
              limitation: Sequence[int] | None = None) -> tuple[int, int]:
    """``getTotalLag``: ``(totalLag, totalLagWithPersistent)`` over the partitions (only
    those in ``limitation`` when given: ``isActivePartition``), with the idle-consumer cap.
    Go's integer division floors, so the cap lets ``totalLag`` exceed ``upper ·
    lag_threshold`` by less than one threshold (kedacore/keda#4483). A
    :class:`PolicyError` when no partition is left (KEDA's error: the scaler fails)."""
    parts = [p for p in partitions if limitation is None or p.partition in limitation]
    if not parts:
        raise PolicyError("expected at least one active partition within the topic")
    lag = with_persistent = with_lag = 0
    for p in parts:
        a, b = lag_for_partition(meta, p.partition, p.committed, p.latest, previous)
        lag += a
        with_persistent += b
        with_lag += a > 0
    thr = meta.lag_threshold
    if not meta.allow_idle_consumers or meta.limit_to_partitions_with_lag or meta.ensure_even_distribution_of_partitions:
        upper = len(parts)
        if meta.ensure_even_distribution_of_partitions:
            lag = next_factor(lag, len(parts), thr) * thr
        if meta.limit_to_partitions_with_lag:
            upper = with_lag
        if lag // thr > upper:  # Go's int64 division: lag is never negative here
            lag = upper * thr
    return lag, with_persistent


def status_replicas(obs: Observation, current: int) -> int:
    """The scale's ``status.replicas``: the pods that are not terminating (starting or
    ready); ``current`` when the backend reports no pods."""
    if not obs.pods:
        return current
    return sum(p.phase != "draining" for p in obs.pods)


class KedaKafka(HPA):
    """A KEDA ScaledObject with one Kafka trigger (module docstring).

    The trigger's options (:class:`KafkaMetadata`, KEDA's defaults): ``lag_threshold`` 10
    (the **total** lag per replica: an ``AverageValue`` target), ``activation_lag_threshold``
    0, ``offset_reset_policy`` ``latest``, ``allow_idle_consumers``,
    ``exclude_persistent_lag``, ``scale_to_zero_on_invalid_offset``,
    ``limit_to_partitions_with_lag``, ``ensure_even_distribution_of_partitions`` (all
    false), ``partition_limitation`` ``""`` (every partition), ``topic`` ``"jobs"``.
    The ScaledObject's: ``polling_interval_s`` 30, ``cooldown_period_s`` 300,
    ``min_replica_count`` 0, ``max_replica_count`` 100. The HPA's: ``behavior``
    ``default`` (as ``keda-cron``; ``none`` is the legacy path a ScaledObject without
    ``advanced.horizontalPodAutoscalerConfig.behavior`` gets), ``tolerance`` 0.1,
    ``sync_seconds`` 15, and the behavior's rules as :class:`HPA` takes them.

    Every ``polling_interval_s`` of ``t_s`` KEDA polls: the total lag is re-read and the
    activity decided; then, at 0 replicas and active, it orders ``max(min_replica_count,
    1)``; inactive for longer than ``cooldown_period_s`` since the last active poll (or
    never active), with ``min_replica_count`` 0, it orders 0; below ``min_replica_count``
    and inactive, ``min_replica_count``. Otherwise, every ``sync_seconds``, the HPA (disabled
    at 0 replicas) orders its count from the last polled lag. In between: the current count.
    """

    name = "keda-kafka"
    architecture = "jobs"

    def __init__(self, lag_threshold: int = 10, activation_lag_threshold: int = 0, offset_reset_policy: str = "latest",
                 allow_idle_consumers: bool = False, exclude_persistent_lag: bool = False,
                 scale_to_zero_on_invalid_offset: bool = False, limit_to_partitions_with_lag: bool = False,
                 ensure_even_distribution_of_partitions: bool = False, partition_limitation: str = "",
                 topic: str = "jobs", polling_interval_s: float = DEFAULT_POLLING_INTERVAL_S,
                 cooldown_period_s: float = DEFAULT_COOLDOWN_PERIOD_S, min_replica_count: int = 0,
                 max_replica_count: int = DEFAULT_MAX_REPLICA_COUNT, behavior: str = "default",
                 tolerance: float = 0.1, sync_seconds: float = 15.0, downscale_window_s: float = 300.0,
                 scale_up_policies: str = "Pods 4/15s, Percent 100/15s", scale_up_select: str = "Max",
                 scale_up_window_s: float = 0.0, scale_down_policies: str = "Percent 100/15s",
                 scale_down_select: str = "Max", scale_down_window_s: float | None = None,
                 max_replicas: int = 10, seed=None) -> None:
        self.meta, self.limitation = kafka_metadata(
            self.name, lag_threshold=lag_threshold, activation_lag_threshold=activation_lag_threshold,
            offset_reset_policy=offset_reset_policy, allow_idle_consumers=allow_idle_consumers,
            exclude_persistent_lag=exclude_persistent_lag, scale_to_zero_on_invalid_offset=scale_to_zero_on_invalid_offset,
            limit_to_partitions_with_lag=limit_to_partitions_with_lag,
            ensure_even_distribution_of_partitions=ensure_even_distribution_of_partitions,
            partition_limitation=partition_limitation, topic=topic)
        scaled_object_limits(self.name, polling_interval_s, cooldown_period_s, min_replica_count, max_replica_count)
        try:
            super().__init__(behavior=behavior, tolerance=tolerance, sync_seconds=sync_seconds,
                             downscale_window_s=downscale_window_s, min_replicas=max(int(min_replica_count), 1),
                             max_replicas=max_replicas, scale_up_policies=scale_up_policies,
                             scale_up_select=scale_up_select, scale_up_window_s=scale_up_window_s,
                             scale_down_policies=scale_down_policies, scale_down_select=scale_down_select,
                             scale_down_window_s=scale_down_window_s, seed=seed)
        except PolicyError as exc:
            raise PolicyError(str(exc).replace("hpa:", f"{self.name}:", 1)) from None
        self.max_r = int(max_replica_count)  # the HPA's maxReplicas; max_replicas is the testbed's action set
        self.min_replica_count = int(min_replica_count)
        self.polling_s, self.cooldown_s = float(polling_interval_s), float(cooldown_period_s)
        self.previous_offsets: dict[int, int] = {}
        self.last_poll: float | None = None
        self.last_active: float | None = None
        self.metric = 0  # totalLag at the last poll
        self.active = False
        self.scaler_error = False
        self.status = 0  # the scale's status.replicas at the decision

    # -- KEDA's poll and executor -------------------------------------------------------
    def poll(self, queue: QueueSignals) -> None:
        """``GetMetricsAndActivity``: the total lag and the activity; a scaler that fails
        (no partition) is inactive, its metric unchanged."""
        try:
            lag, with_persistent = total_lag(self.meta, queue.partitions, self.previous_offsets, self.limitation)
        except PolicyError:
            self.scaler_error, self.active = True, False
            return
        self.scaler_error = False
        self.metric = lag
        self.active = with_persistent > self.meta.activation_lag_threshold

    def execute(self, t: float, current: int) -> int | None:
        """``RequestScale`` (no idle replica count, no fallback, no pause): the count KEDA
        sets on the target, or None when it leaves it to the HPA."""
        if self.active:
            self.last_active = t
            if current == 0:
                return max(self.min_replica_count, 1)
            return None
        if self.scaler_error:
            return None
        if current > 0 and self.min_replica_count == 0:
            # initialCooldownPeriod 0: never active counts as cooled down
            if self.last_active is None or self.last_active + self.cooldown_s < t:
                return self.min_replica_count
            return None
        if current < self.min_replica_count:
            return self.min_replica_count
        return None

    # -- the HPA's external metric --------------------------------------------------------
    def calculate(self, t: float, current: int, ready: int, cpu_over_request: float,
                  observation: Observation | None = None) -> int:
        """``GetExternalPerPodMetricReplicas`` on the last polled lag; a failing scaler
        keeps the scale."""
        if self.scaler_error:
            return current
        return external_per_pod_proposal(self.status, self.metric, self.meta.lag_threshold, self.tolerances)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        obs, queue = needs_queue(self.name, info)
        t = float(info.get("t_s", obs.t_s))
        current = int(info.get("current_replicas", context.replicas))
        self.status = status_replicas(obs, current)
        if self.last_poll is None or t - self.last_poll >= self.polling_s - 1e-9:
            self.last_poll = t
            self.poll(queue)
            order = self.execute(t, current)
            if order is not None:
                return Decision(action=min(order, len(self.actions) - 1), probability=1.0)
        desired = current
        if self.last_sync is None or t - self.last_sync >= self.sync_s - 1e-9:
            self.last_sync = t
            desired = self.reconcile(t, current, context.replicas, context.cpu_request_now, obs)
        return Decision(action=min(desired, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "previous_offsets": [[k, v] for k, v in sorted(self.previous_offsets.items())],
                "last_poll": self.last_poll, "last_active": self.last_active, "metric": self.metric,
                "active": self.active, "scaler_error": self.scaler_error}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.previous_offsets = {int(k): int(v) for k, v in state["previous_offsets"]}
        self.last_poll, self.last_active = state["last_poll"], state["last_active"]
        self.metric, self.active = int(state["metric"]), bool(state["active"])
        self.scaler_error = bool(state["scaler_error"])


def scaled_object_limits(who: str, polling_interval_s: float, cooldown_period_s: float, min_replica_count: int,
                         max_replica_count: int) -> None:
    """The ScaledObject's (or ScaledJob's) own fields: a :class:`PolicyError` naming the bad one."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise PolicyError(f"{who}: {message}")

    need(polling_interval_s > 0, f"polling_interval_s={polling_interval_s!r} must be > 0 (KEDA's pollingInterval)")
    need(cooldown_period_s >= 0, f"cooldown_period_s={cooldown_period_s!r} must be >= 0 (KEDA's cooldownPeriod)")
    need(min_replica_count >= 0, f"min_replica_count={min_replica_count!r} must be >= 0 (KEDA's minReplicaCount)")
    need(max_replica_count >= 1, f"max_replica_count={max_replica_count!r} must be >= 1 (KEDA's maxReplicaCount)")
    need(min_replica_count <= max_replica_count,
         f"min_replica_count={min_replica_count!r} must not exceed max_replica_count={max_replica_count!r} "
         "(KEDA: MinReplicaCount must be less than MaxReplicaCount)")
