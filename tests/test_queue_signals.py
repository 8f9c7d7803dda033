"""The jobs model's signals travel with the observation: through JSON (the agent's
decisions.jsonl, Kafka state messages) and into the step rows as ``queue_*`` columns."""

from scalelab.agent.base import Decision
from scalelab.agent.loop import StepRecord
from scalelab.orchestrator.backend import (
    INVALID_OFFSET,
    QUEUE_COLUMNS,
    Observation,
    PartitionOffsets,
    QueueSignals,
    ScaleResult,
)
from scalelab.orchestrator.context import Context


def _obs(queue):
    return Observation(t_s=5.0, context=Context(2, 900.0, 1.5, 0.4, 0.4, 0.1, 0.1), desired_replicas=2,
                       queue=queue)


def test_lag_counts_from_zero_before_the_first_commit():
    assert PartitionOffsets(0, latest=7).committed == INVALID_OFFSET
    assert PartitionOffsets(0, latest=7).lag == 7
    assert PartitionOffsets(0, latest=7, committed=3).lag == 4


def test_an_observation_with_queue_signals_round_trips_through_its_dict():
    q = QueueSignals(partitions=(PartitionOffsets(0, 10, 3), PartitionOffsets(1, 5)), lag=12, waiting=4,
                     oldest_wait_s=2.5, in_progress=8, arrival_rate=1.2, completion_rate=0.8,
                     turnaround_p95_ms=4200.0, censored=0, runners=2, runners_busy=2)
    again = Observation.from_dict(_obs(q).to_dict())
    assert again == _obs(q)
    assert isinstance(again.queue.lag, int) and isinstance(again.queue.oldest_wait_s, float)


def test_the_service_model_keeps_its_rows_and_the_jobs_model_adds_queue_columns():
    order = ScaleResult(current=2, requested=2, applied=2)
    service = StepRecord(0, 0.0, 10.0, _obs(None), Decision(0), order, _obs(None), 0.0, False).row()
    jobs = StepRecord(0, 0.0, 10.0, _obs(None), Decision(0), order, _obs(QueueSignals(lag=3)), 0.0, False).row()
    assert not any(k.startswith("queue_") for k in service)
    assert set(jobs) - set(service) == {"queue_" + k for k in QUEUE_COLUMNS}
    assert jobs["queue_lag"] == 3
