"""KEDA's ScaledJob with a Kafka trigger, on the jobs model: one-shot runners created
from the lag, never removed by the scaler.

Followed: ``kedacore/keda`` (read at 8b4f083, 2026-08):

* ``pkg/scaling/scaledjob/metrics.go``: ``CalculateQueueLengthAndMaxValue`` (one metric:
  ``queueLength`` its value, ``maxValue = min(queueLength / targetAverageValue,
  maxReplicaCount)``) and ``IsScaledJobActive`` (``multipleScalersCalculation``
  ``max``/``min``/``avg``/``sum`` over the active scalers; ``scaleTo = ceil(queueLength)``,
  ``maxScale = ceil(min(maxValue, maxReplicaCount))``; active when ``minReplicaCount > 0``).
  Under ``max`` a scaler counts only when its queue length is above 0, so an active
  trigger whose lag is all persistent creates nothing.
* ``pkg/scaling/scale_handler.go`` (``getScaledJobMetrics``): a Kafka trigger's metric is
  the scaler's ``totalLag`` (:func:`~scalelab.agent.policies.keda_kafka.total_lag`, the
  same capped total the ScaledObject's HPA gets) and its target ``lagThreshold``.
* ``pkg/scaling/executor/scale_jobs.go``: ``getScalingDecision``, the four strategies'
  ``GetEffectiveMaxScale`` (``NewScalingStrategy``: ``custom`` whose running-job
  percentage does not parse, or is unset, is ``default``), ``RequestJobScale`` (a
  negative effective maximum is 0) and ``createJobs`` (``min(scaleTo, effectiveMaxScale)``
  jobs when active and the maximum is above 0).
* ``apis/keda/v1alpha1/scaledjob_types.go``: ``maxReplicaCount`` 100, ``minReplicaCount`` 0;
  ``pollingInterval`` 30 s.

In scalelab a Job is a one-shot runner: it takes one job from the topic and exits.
``running`` (Jobs not finished) is the runners that exist (``queue.runners``); ``pending``
(unfinished Jobs whose pod is neither Running nor Succeeded) is the runners still
starting (the observation's pods in phase ``starting``; without pods, the runners that
are not ready). The policy orders the absolute runner count ``running + jobs to create``;
between polls it orders ``running`` (nothing created). It never asks for fewer runners
than exist: the jobs model does not kill a running one-shot runner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError, needs_queue
from scalelab.agent.policies.keda_kafka import (
    DEFAULT_POLLING_INTERVAL_S,
    kafka_metadata,
    scaled_object_limits,
    total_lag,
)
from scalelab.orchestrator.backend import Observation, QueueSignals
from scalelab.orchestrator.context import Context

STRATEGIES = ("default", "custom", "accurate", "eager")
CALCULATIONS = ("max", "min", "avg", "sum")
#: ``defaultScaledJobMaxReplicaCount``, ``defaultScaledJobMinReplicaCount``.
DEFAULT_MAX_REPLICA_COUNT, DEFAULT_MIN_REPLICA_COUNT = 100, 0


def queue_length_and_max_value(value: float, target_average_value: float,
                               max_replica_count: int) -> tuple[float, float]:
    """``CalculateQueueLengthAndMaxValue`` for one metric: (queueLength, maxValue); maxValue
    is 0 when the target is 0."""
    if target_average_value == 0:
        return float(value), 0.0
    return float(value), min(value / target_average_value, float(max_replica_count))


@dataclass(frozen=True)
class ScalerMetrics:
    """``ScalerMetrics``: one trigger's queue length, its replicas wanted, its activity."""

    queue_length: float
    max_value: float
    is_active: bool


def is_scaled_job_active(scalers: Sequence[ScalerMetrics], calculation: str, min_replica_count: int,
                         max_replica_count: int) -> tuple[bool, int, int, float]:
    """``IsScaledJobActive``: (active, scaleTo = ceil(queueLength), maxScale =
    ceil(maxValue), maxValue) over the triggers, combined by ``calculation``."""
    queue_length = max_value = 0.0
    active = False
    if calculation == "min":
        for m in scalers:
            if (queue_length == 0 or m.queue_length < queue_length) and m.is_active:
                queue_length, max_value, active = m.queue_length, m.max_value, m.is_active
    elif calculation in ("avg", "sum"):
        q_sum = v_sum = 0.0
        n = 0
        for m in scalers:
            if m.is_active:
                q_sum += m.queue_length
                v_sum += m.max_value
                active = True
                n += 1
        if calculation == "sum":
            queue_length, max_value = q_sum, v_sum
        elif n:
            queue_length, max_value = q_sum / n, v_sum / n
    else:  # max, the default
        for m in scalers:
            if m.queue_length > queue_length and m.is_active:
                queue_length, max_value, active = m.queue_length, m.max_value, m.is_active
    if min_replica_count > 0:
        active = True
    max_value = min(max_value, float(max_replica_count))
    return active, math.ceil(queue_length), math.ceil(max_value), max_value


def parse_percentage(value: Any) -> float | None:
    """``strconv.ParseFloat`` of ``customScalingRunningJobPercentage``: a number, or a
    string that is one; None when it does not parse (KEDA then uses ``default``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip()) if str(value).strip() == str(value) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class ScalingStrategy:
    """``NewScalingStrategy``'s choice. ``deduction``: ``customScalingQueueLengthDeduction``
    (None: unset, 0); ``percentage``: the parsed ``customScalingRunningJobPercentage``."""

    strategy: str = "default"
    deduction: int | None = None
    percentage: float | None = None

    @classmethod
    def of(cls, strategy: str, deduction: int | None = None, percentage: Any = None) -> ScalingStrategy:
        """As ``NewScalingStrategy`` selects: ``custom`` with a percentage that does not
        parse is ``default``; an unknown name is ``default``."""
        if strategy == "custom":
            p = parse_percentage(percentage)
            return cls("custom", deduction, p) if p is not None else cls("default")
        if strategy in ("accurate", "eager"):
            return cls(strategy)
        return cls("default")

    def effective_max_scale(self, max_scale: int, running: int, pending: int, max_replica_count: int,
                            scale_to: int) -> tuple[int, int]:
        """``GetEffectiveMaxScale``: (effective max scale, scaleTo)."""
        if self.strategy == "custom":
            deduction = int(self.deduction or 0)
            result = max_scale - deduction - int(float(running) * (self.percentage or 0.0))  # Go: truncation
            return min(result, max_replica_count), scale_to
        if self.strategy == "accurate":
            if max_scale + running - pending > max_replica_count:
                return max_replica_count - running, scale_to
            return max_scale - pending, scale_to
        if self.strategy == "eager":
            return min(max_replica_count - running - pending, max_scale), max_replica_count
        return max_scale - running, scale_to


def scaling_decision(strategy: ScalingStrategy, running: int, scale_to: int, max_scale: int, pending: int,
                     min_replica_count: int, max_replica_count: int) -> tuple[int, int]:
    """``getScalingDecision``: (effective max scale, scaleTo). Below ``minReplicaCount``
    running Jobs, the missing ones; otherwise the strategy over the Jobs beyond it."""
    if running < min_replica_count:
        missing = min_replica_count - running
        return missing, missing
    return strategy.effective_max_scale(max_scale, running - min_replica_count, pending, max_replica_count, scale_to)


def jobs_to_create(active: bool, scale_to: int, effective_max_scale: int) -> int:
    """``RequestJobScale`` and ``createJobs``: the Jobs created (never negative)."""
    effective_max_scale = max(effective_max_scale, 0)
    if not active or effective_max_scale <= 0:
        return 0
    return min(scale_to, effective_max_scale)


def pending_runners(obs: Observation, queue: QueueSignals, context: Context) -> int:
    """Runners not running yet: the pods still starting; without pods, the runners that
    exist less the ready ones (the context's replicas)."""
    if obs.pods:
        return sum(p.phase == "starting" for p in obs.pods)
    return max(queue.runners - context.replicas, 0)


class KedaScaledJob(BasePolicy):
    """A KEDA ScaledJob with one Kafka trigger (module docstring).

    The trigger's options are ``keda-kafka``'s (:class:`~scalelab.agent.policies.keda_kafka.KafkaMetadata`;
    ``lag_threshold`` is the trigger's ``AverageValue`` target). The ScaledJob's, with
    KEDA's defaults: ``polling_interval_s`` 30, ``min_replica_count`` 0,
    ``max_replica_count`` 100, ``scaling_strategy`` ``default`` (``custom``, ``accurate``,
    ``eager``), ``custom_scaling_queue_length_deduction`` None (0),
    ``custom_scaling_running_job_percentage`` None (with ``custom``: a number, or a string
    that parses as one; otherwise, as KEDA, the ``default`` strategy),
    ``multiple_scalers_calculation`` ``max`` (one trigger: the same for all four but
    ``max``'s "queue length above 0" rule).
    """

    name = "keda-scaledjob"
    architecture = "jobs"

    def __init__(self, lag_threshold: int = 10, activation_lag_threshold: int = 0, offset_reset_policy: str = "latest",
                 allow_idle_consumers: bool = False, exclude_persistent_lag: bool = False,
                 scale_to_zero_on_invalid_offset: bool = False, limit_to_partitions_with_lag: bool = False,
                 ensure_even_distribution_of_partitions: bool = False, partition_limitation: str = "",
                 topic: str = "jobs", polling_interval_s: float = DEFAULT_POLLING_INTERVAL_S,
                 min_replica_count: int = DEFAULT_MIN_REPLICA_COUNT,
                 max_replica_count: int = DEFAULT_MAX_REPLICA_COUNT, scaling_strategy: str = "default",
                 custom_scaling_queue_length_deduction: int | None = None,
                 custom_scaling_running_job_percentage: float | str | None = None,
                 multiple_scalers_calculation: str = "max", max_replicas: int = 10, seed=None) -> None:
        self.meta, self.limitation = kafka_metadata(
            self.name, lag_threshold=lag_threshold, activation_lag_threshold=activation_lag_threshold,
            offset_reset_policy=offset_reset_policy, allow_idle_consumers=allow_idle_consumers,
            exclude_persistent_lag=exclude_persistent_lag, scale_to_zero_on_invalid_offset=scale_to_zero_on_invalid_offset,
            limit_to_partitions_with_lag=limit_to_partitions_with_lag,
            ensure_even_distribution_of_partitions=ensure_even_distribution_of_partitions,
            partition_limitation=partition_limitation, topic=topic)
        scaled_object_limits(self.name, polling_interval_s, 0.0, min_replica_count, max_replica_count)
        if scaling_strategy not in STRATEGIES:
            raise PolicyError(f"{self.name}: scaling_strategy={scaling_strategy!r} must be one of {STRATEGIES} "
                              "(KEDA's scalingStrategy.strategy)")
        if multiple_scalers_calculation not in CALCULATIONS:
            raise PolicyError(f"{self.name}: multiple_scalers_calculation={multiple_scalers_calculation!r} must be "
                              f"one of {CALCULATIONS} (KEDA's scalingStrategy.multipleScalersCalculation)")
        d = custom_scaling_queue_length_deduction
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | float) or not float(d).is_integer()):
            raise PolicyError(f"{self.name}: custom_scaling_queue_length_deduction={d!r} must be an integer "
                              "(KEDA's customScalingQueueLengthDeduction)")
        p = custom_scaling_running_job_percentage
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float | str)):
            raise PolicyError(f"{self.name}: custom_scaling_running_job_percentage={p!r} must be a number "
                              "(KEDA's customScalingRunningJobPercentage)")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.strategy = ScalingStrategy.of(scaling_strategy, None if d is None else int(d), p)
        self.calculation = multiple_scalers_calculation
        self.polling_s = float(polling_interval_s)
        self.min_rc, self.max_rc = int(min_replica_count), int(max_replica_count)
        self.previous_offsets: dict[int, int] = {}
        self.last_poll: float | None = None

    def create(self, queue: QueueSignals, running: int, pending: int) -> int:
        """One poll: the Jobs to create."""
        try:
            lag, with_persistent = total_lag(self.meta, queue.partitions, self.previous_offsets, self.limitation)
            trigger = [ScalerMetrics(*queue_length_and_max_value(lag, self.meta.lag_threshold, self.max_rc),
                                     with_persistent > self.meta.activation_lag_threshold)]
        except PolicyError:  # the scaler fails: no metrics from it
            trigger = []
        active, scale_to, max_scale, _ = is_scaled_job_active(trigger, self.calculation, self.min_rc, self.max_rc)
        eff, scale_to = scaling_decision(self.strategy, running, scale_to, max_scale, pending, self.min_rc,
                                         self.max_rc)
        return jobs_to_create(active, scale_to, eff)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        obs, queue = needs_queue(self.name, info)
        t = float(info.get("t_s", obs.t_s))
        running = int(queue.runners)
        created = 0
        if self.last_poll is None or t - self.last_poll >= self.polling_s - 1e-9:
            self.last_poll = t
            created = self.create(queue, running, pending_runners(obs, queue, context))
        return Decision(action=min(running + created, len(self.actions) - 1), probability=1.0,
                        info={"jobs_created": created})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "previous_offsets": [[k, v] for k, v in sorted(self.previous_offsets.items())],
                "last_poll": self.last_poll}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.previous_offsets = {int(k): int(v) for k, v in state["previous_offsets"]}
        self.last_poll = state["last_poll"]
