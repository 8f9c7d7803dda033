"""The jobs architecture's live parts without a broker: the runner's job parsing and
commit rule, the orchestrator's queue signals from the topics' messages, the config's
keys, the broker's topic options, the live backend passing the queue on."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from scalelab.experiments.config import ConfigError, load_config
from scalelab.orchestrator.backend import INVALID_OFFSET, PartitionOffsets
from scalelab.orchestrator.collectors.jobs import JobsCollector
from scalelab.orchestrator.context import ContextBuilder, ContextSettings
from scalelab.orchestrator.kafka_embedded import main as kafka_main
from scalelab.orchestrator.kafka_embedded import topic_args
from scalelab.orchestrator.live_backend import observation_from_state
from scalelab.sandbox.job_runner import Offsets, parse_job


def test_a_job_message_is_parsed_and_a_malformed_one_says_what_is_wrong():
    job = parse_job(b"k1", json.dumps({"id": "j1", "submitted": 10.5, "request": {"code": "print(1)"}}).encode(), 3, 7, 99.0)
    assert (job.id, job.partition, job.offset, job.submitted, job.error) == ("j1", 3, 7, 10.5, None)
    assert json.loads(job.request) == {"code": "print(1)"}
    cases = {b"{nope": "not JSON", b"[1]": "must be a JSON object", b"": "empty",
             json.dumps({"id": "x"}).encode(): "no 'request'",
             json.dumps({"id": "x", "request": "print(1)"}).encode(): "'request' must be a JSON object",
             json.dumps({"id": 5, "request": {}}).encode(): "'id' must be a non-empty string",
             json.dumps({"id": "x", "submitted": "now", "request": {}}).encode(): "'submitted' must be a number"}
    for value, why in cases.items():
        bad = parse_job(b"key", value, 0, 1, 42.0)
        assert bad.request is None and why in bad.error, (value, bad.error)
    assert parse_job(None, b"{nope", 2, 9, 1.0).id == "2/9"  # no key: its place names it
    assert parse_job(b"key", b"{nope", 2, 9, 1.0).id == "key" and parse_job(b"key", b"{nope", 2, 9, 1.0).submitted == 1.0


def test_offsets_are_committed_in_order_per_partition_and_again_until_acknowledged():
    o = Offsets()
    for off in (10, 11, 12):
        o.take(0, off)
    o.take(1, 5)
    o.finish(0, 11)  # finished early: waits for 10
    assert o.to_commit() == {} and o.in_progress() == 3
    o.finish(0, 10)
    assert o.to_commit() == {0: 12}
    o.finish(1, 5)
    assert o.to_commit() == {0: 12, 1: 6} and o.to_commit([1]) == {1: 6}
    o.acknowledge(0, 12)
    assert o.to_commit() == {1: 6}  # the one not acknowledged is committed again
    o.finish(0, 12)
    assert o.to_commit() == {0: 13, 1: 6} and o.in_progress() == 0
    o.forget(0)
    o.finish(0, 13)  # a partition let go: nothing to commit for it
    assert o.to_commit() == {1: 6}


def test_an_unanswered_asynchronous_commit_is_sent_again_and_a_synchronous_one_never_blocks_it():
    from scalelab.sandbox.job_runner import JobRunner

    class Silent:  # a consumer whose broker never answers asynchronous commits
        def __init__(self):
            self.sent = []

        def commit(self, offsets, asynchronous):
            self.sent.append(({tp.partition: tp.offset for tp in offsets}, asynchronous))
            if not asynchronous:  # a synchronous commit the broker refuses
                return [type("TP", (), {"error": "REBALANCE_IN_PROGRESS", "partition": tp.partition,
                                        "offset": tp.offset})() for tp in offsets]
            return None

    r = JobRunner("127.0.0.1:1")
    r.consumer = Silent()
    r.offsets.take(0, 4)
    r.offsets.finish(0, 4)
    r._commit()
    r._commit()  # awaiting its answer: not sent twice at once
    assert r.consumer.sent == [({0: 5}, True)]
    r._sent_at -= r.commit_answer_s  # the answer never came: sent again
    r._commit()
    assert r.consumer.sent == [({0: 5}, True)] * 2
    r._commit(asynchronous=False)  # refused: the offsets stay to commit
    assert r.offsets.to_commit() == {0: 5}
    r._sent_at -= r.commit_answer_s
    r._commit()
    assert r.consumer.sent[-1] == ({0: 5}, True) and len(r.consumer.sent) == 4
    r._committed(None, [type("TP", (), {"error": None, "topic": r.jobs_topic, "partition": 0, "offset": 5})()])
    r._commit()  # acknowledged: nothing left
    assert len(r.consumer.sent) == 4 and r.offsets.to_commit() == {}
    r._pool.shutdown()


class _Msg:
    """A Kafka message as confluent-kafka gives it."""

    def __init__(self, key, value, partition=0, offset=0, topic="jobs", at=None):
        self._k, self._v, self._p, self._o, self._t = key, value, partition, offset, topic
        self._at = time.time() if at is None else at  # when it was produced, epoch s

    def key(self):
        return self._k

    def value(self):
        return self._v

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def topic(self):
        return self._t

    def timestamp(self):
        return (1, int(self._at * 1000))

    def error(self):
        return None


def test_a_runner_does_not_run_again_a_job_whose_result_went_out():
    """A job delivered again after its finished result (a refused commit, a runner that
    died before committing) is done at once: its offset is committed, nothing is run or
    published; a job only started, never seen, or sent anew under a used id (another
    place), runs."""
    from scalelab.sandbox.job_runner import JobRunner

    class Answers:
        def __init__(self, msgs):
            self.msgs = msgs

        def consume(self, num_messages, timeout):
            out, self.msgs = self.msgs[:num_messages], self.msgs[num_messages:]
            return out

    def result(event, job, offset, at=None):
        msg = json.loads(_result(event, job, finished=102.0 if event == "finished" else None))
        return _Msg(job.encode(), json.dumps({**msg, "partition": 0, "offset": offset}).encode(), topic="results",
                    at=at)

    r = JobRunner("127.0.0.1:1")
    ran = []
    r._pool.submit = lambda fn, job: ran.append(job.id)
    r.answers = Answers([result("finished", "j1", 0), result("started", "j2", 1),
                         _Msg(b"junk", b"{nope", topic="results"),
                         result("finished", "j0", 7, at=1.0),  # too old to come again
                         result("finished", "j4", 2)])  # answered at offset 2: a job sent anew under its id
    assert r._read_answers() == 5 and set(r.answered) == {"j1", "j4"} and r.answered["j4"][:2] == (0, 2)
    for off, job in enumerate(("j1", "j2", "j3", "j4")):
        r._take(_Msg(job.encode(), json.dumps({"id": job, "request": {"code": "print(1)"}}).encode(), 0, off))
    assert ran == ["j2", "j3", "j4"] and r.app.jobs_skipped == 1  # j4 at offset 3 is another job: it runs
    r.offsets.finish(*r._delivered.get_nowait())  # what _serve does with it (no producer here)
    assert r.offsets.in_progress() == 3 and r.offsets.next == {0: 1}  # j1's offset is done, ahead of the others
    assert "scalelab_runner_jobs_skipped_total" in r.app.metrics() and r._delivered.empty()
    r._pool.shutdown()


def test_a_runner_reads_the_results_to_their_end_before_taking_jobs():
    """The catch-up: every partition's end asked in one request, read until each position
    reaches it; a partition emptied by retention counts as read; a broker that does not
    answer is logged, not raised (the rebalance goes on; answered jobs may then run again)."""
    from confluent_kafka import KafkaException, TopicPartition

    from scalelab.sandbox.job_runner import JobRunner

    class Answers:
        def __init__(self):
            self.pos = {0: -1001, 1: -1001, 2: -1001}  # nothing fetched yet
            self.ends = {0: 2, 1: 0, 2: 5}  # partition 1 empty, 2 emptied by retention
            self.asked = []
            self.fail = False

        def assignment(self):
            return [TopicPartition("results", p) for p in self.pos]

        def offsets_for_times(self, tps, timeout):
            self.asked.append([(tp.partition, tp.offset) for tp in tps])
            if self.fail:
                raise KafkaException("the broker did not answer")
            return [TopicPartition("results", tp.partition, self.ends[tp.partition]) for tp in tps]

        def consume(self, num_messages, timeout):
            if self.pos[0] < 2:  # partition 0's two results come in one by one
                self.pos[0] = max(self.pos[0], 0) + 1
                return [_Msg(f"j{self.pos[0]}".encode(), json.dumps(
                    {"id": f"j{self.pos[0]}", "event": "finished", "partition": 3, "offset": self.pos[0]}).encode(),
                    topic="results")]
            return []

        def position(self, tps):
            return [TopicPartition("results", tp.partition, self.pos[tp.partition]) for tp in tps]

        def get_watermark_offsets(self, tp, cached=False):
            return (5, 5) if tp.partition == 2 else (-1001, -1001)

    r = JobRunner("127.0.0.1:1")
    r.answers = Answers()
    r._catch_up()
    assert r.answers.asked == [[(0, -1), (1, -1), (2, -1)]]  # one request, -1: each partition's end
    assert set(r.answered) == {"j1", "j2"} and r.answers.pos[0] == 2 and not r.errors
    r.answers.fail = True
    r._catch_up()
    assert "did not answer" in r.errors[-1] and "may run again" in r.errors[-1]
    r._pool.shutdown()


def _collector():
    builder = ContextBuilder(ContextSettings(window_s=10.0))
    c = JobsCollector("127.0.0.1:1", builder, threading.Lock())
    c.offsets = lambda partitions=None, timeout_s=3.0: (PartitionOffsets(0, 6, 2), PartitionOffsets(1, 1))
    return c, builder


def _result(event, job, runner="r1", submitted=100.0, started=101.0, finished=None):
    msg = {"event": event, "id": job, "runner": runner, "submitted": submitted, "started": started}
    if finished is not None:
        msg["finished"] = finished
    return json.dumps(msg).encode()


def test_the_queue_signals_from_the_topics_and_the_offsets():
    c, builder = _collector()
    for i, t in enumerate((100.0, 101.0, 102.0, 103.0, 104.0)):
        c.ingest_job(f"j{i}".encode(), json.dumps({"id": f"j{i}", "submitted": t, "request": {}}).encode(), t)
    c.ingest_job(b"bad", b"{nope", 104.5)  # malformed: counted, and waiting until its error result
    c.ingest_result(_result("started", "j0", submitted=100.0))
    c.ingest_result(_result("finished", "j0", submitted=100.0, finished=102.0))
    c.ingest_result(_result("started", "j1", "r2", submitted=101.0, started=102.0))
    c.ingest_result(_result("finished", "j0", submitted=100.0, finished=102.0))  # read twice: counted once
    c.ingest_result(b"not json")
    q = c.signals(105.0, 10.0, runners=3)
    assert q.lag == 4 + 1 and [p.committed for p in q.partitions] == [2, INVALID_OFFSET]
    assert q.waiting == 4 and q.in_progress == 1 and q.runners == 3 and q.runners_busy == 1
    assert q.oldest_wait_s == pytest.approx(3.0)  # j2, submitted at 102
    assert q.arrival_rate == pytest.approx(0.6) and q.completion_rate == pytest.approx(0.1)
    assert q.turnaround_p95_ms == pytest.approx(2000.0) and q.censored == 0
    assert c.malformed == 2
    ctx = builder.build(105.0, 3, c.unfinished_ages_ms(105.0))  # the context's latency is the turnaround
    assert ctx.p95_ms == pytest.approx(2000.0) and ctx.rps == pytest.approx(0.1) and ctx.spans == 1
    # later, none finished in the window: the unfinished jobs' ages, censored
    q = c.signals(130.0, 10.0, runners=3)
    ages = 130.0 - np.array([101.0, 102.0, 103.0, 104.0, 104.5])
    assert q.censored == 5 and q.turnaround_p95_ms == pytest.approx(np.percentile(ages, 95) * 1000)
    assert q.completion_rate == 0 and q.arrival_rate == 0
    # the step's window, as the simulator's: since the previous call (130 s), not the context's 10 s
    c.ingest_job(b"j9", json.dumps({"id": "j9", "submitted": 131.0, "request": {}}).encode(), 131.0)
    c.ingest_result(_result("finished", "j2", submitted=102.0, started=131.0, finished=132.0))
    q = c.signals(150.0, 10.0, runners=3)
    assert q.arrival_rate == pytest.approx(1 / 20) and q.completion_rate == pytest.approx(1 / 20)
    assert q.turnaround_p95_ms == pytest.approx(30000.0) and q.censored == 0  # j2: 102 to 132


def test_a_finished_job_delivered_again_is_in_progress_until_its_second_run_ends():
    """After a rebalance whose commit was refused, a finished job runs again on its
    partition's next owner: the runner is busy and the offset lags, so the step says so;
    the student got the first result, so the turnaround and the spans keep that one."""
    c, builder = _collector()
    c.ingest_job(b"j0", json.dumps({"id": "j0", "submitted": 100.0, "request": {}}).encode(), 100.0)
    c.ingest_result(_result("started", "j0", "r1", started=100.5))
    c.ingest_result(_result("finished", "j0", "r1", started=100.5, finished=102.0))
    q = c.signals(103.0, 10.0, runners=2)
    assert (q.waiting, q.in_progress, q.runners_busy, q.completion_rate) == (0, 0, 0, pytest.approx(1 / 10))
    def again(runner, started, partition=1, offset=0):  # partition 1: nothing committed yet (_collector)
        return json.dumps({**json.loads(_result("started", "j0", runner, started=started)), "partition": partition,
                           "offset": offset}).encode()

    c.ingest_result(again("r2", 104.0))  # delivered again, to r2
    q = c.signals(105.0, 10.0, runners=2)
    assert (q.waiting, q.in_progress, q.runners_busy, q.completion_rate) == (0, 1, 1, 0)
    c.ingest_result(again("r1", 106.0))  # and again (r2 let it go): one run, r1's
    q = c.signals(107.0, 10.0, runners=2)
    assert (q.in_progress, q.runners_busy) == (1, 1)
    c.ingest_result(_result("finished", "j0", "r1", started=106.0, finished=108.0))
    q = c.signals(109.0, 10.0, runners=2)
    assert (q.in_progress, q.runners_busy, q.completion_rate, q.turnaround_p95_ms) == (0, 0, 0, 0)
    assert builder.build(109.0, 2).spans == 1  # the first finish only: 2 s, its student's
    # a second run whose runner died, skipped by the next owner (no result): over once the offset is committed
    c.ingest_result(again("r2", 110.0, partition=0, offset=1))  # partition 0 is committed up to offset 2
    q = c.signals(111.0, 10.0, runners=2)
    assert (q.in_progress, q.runners_busy) == (0, 0) and c.again == {}


def test_the_config_names_the_architecture_and_the_jobs_section():
    cfg = load_config("experiments/configs/live-evaluation-week-jobs.yaml")
    assert cfg.architecture == "jobs" and cfg.backend == "live"
    assert (cfg.jobs.partitions, cfg.jobs.max_concurrent_jobs, cfg.jobs.runner_mode, cfg.jobs.rebalance_seconds) == (
        12, 5, "deployment", 5.5)
    assert load_config({"name": "x"}).architecture == "service"
    with pytest.raises(ConfigError, match="architecture='queue' must be one of"):
        load_config({"name": "x", "architecture": "queue"})
    with pytest.raises(ConfigError, match=r"jobs\.max_concurrent_jobs=0 must be >= 1"):
        load_config({"name": "x", "architecture": "jobs", "jobs": {"max_concurrent_jobs": 0}})
    with pytest.raises(ConfigError, match=r"jobs\.runner_mode='pod'"):
        load_config({"name": "x", "architecture": "jobs", "jobs": {"runner_mode": "pod"}})
    with pytest.raises(ConfigError, match="is read only with architecture: jobs"):
        load_config({"name": "x", "jobs": {"partitions": 4}})


def test_the_live_settings_of_a_jobs_config():
    from scalelab.experiments.live import live_settings

    cfg = load_config("experiments/configs/live-evaluation-week-jobs.yaml")
    s = live_settings(cfg)
    assert s.jobs.partitions == 12 and s.jobs.max_concurrent_jobs == 5 and s.task["task"] == "job"
    with pytest.raises(ConfigError, match="runner_mode='job'"):
        live_settings(load_config({**cfg.to_dict(), "jobs": {"runner_mode": "job"}}))
    with pytest.raises(ConfigError, match="no jobs counterpart"):
        live_settings(load_config({**cfg.to_dict(), "app": {"profile": "paper"}}))


def test_the_broker_takes_topics_with_their_partitions(monkeypatch):
    assert topic_args({"jobs": 12, "results": 12}) == ["--topic", "jobs:12", "--topic", "results:12"]
    seen = {}
    monkeypatch.setattr("scalelab.orchestrator.kafka_embedded.serve", lambda seconds, topics: seen.update(topics))
    kafka_main(["--topic", "jobs:12", "--topic", "results:3"])
    assert seen == {"jobs": 12, "results": 3}
    with pytest.raises(SystemExit):
        kafka_main(["--topic", "jobs"])


def test_the_live_backend_passes_the_queue_on():
    ctx = {"replicas": 2, "p95_ms": 900.0, "rps": 1.0, "cpu_request_ratio": 0.1, "cpu_limit_ratio": 0.1,
           "mem_request_ratio": 0.1, "mem_limit_ratio": 0.1, "spans": 3}
    queue = {"lag": 4, "waiting": 1, "in_progress": 3, "partitions": [[0, 5, 1]], "runners": 2}
    obs = observation_from_state({"context": ctx, "queue": queue}, 5.0, 10.0)
    assert obs.queue.lag == 4 and obs.queue.partitions[0] == PartitionOffsets(0, 5, 1)
    assert observation_from_state({"context": ctx}, 5.0, 10.0).queue is None
