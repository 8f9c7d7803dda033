"""The jobs collector: the jobs architecture's queue, read from the broker.

Two sources, both Kafka (so the same code runs on the local stack and on a cluster):

* **offsets**, asked when a state is built: per partition of the jobs topic the log-end
  offset (``get_watermark_offsets``, uncached) and the runners' group's committed offset
  (``Consumer.committed`` with ``group.id`` = the runners' group; the consumer never
  subscribes, so it never joins the group). On librdkafka's mock cluster both answer; the
  admin client's ``list_consumer_group_offsets`` answers empty and
  ``describe_consumer_groups`` is not supported, so neither is used;
* **the topics themselves**, read on a thread of its own from their beginning with no
  group (nothing committed, nothing joined): each job's id and submission instant from
  the jobs topic, each ``started`` and ``finished`` event from the results topic
  (:mod:`scalelab.sandbox.job_runner`). From them: the jobs waiting (submitted, not
  started), in progress (started, not finished; a finished job delivered again, as after
  a rebalance whose commit was refused, counts while its second run lasts: its runner is
  busy and its offset still lags), and each finished job's turnaround (finish - submit,
  the first finish: the one its student got).

Each finished job goes into the context's span buffer as a span that starts at its
submission and lasts its turnaround, so the context's p95, mean and rate are the jobs'
turnaround and completions per second over the same window, censored by the ages of the
unfinished jobs when none finished (:meth:`ContextBuilder.build`). A malformed message
is counted and skipped.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import numpy as np

from scalelab.orchestrator.backend import INVALID_OFFSET, PartitionOffsets, QueueSignals
from scalelab.orchestrator.context import ContextBuilder, Spans, censored_p95


class JobsCollector:
    """Follows the jobs and results topics on its own thread; :meth:`signals` builds the
    :class:`QueueSignals` at an instant (wall clock, epoch s)."""

    def __init__(self, bootstrap: str, builder: ContextBuilder, lock: threading.Lock, jobs_topic: str = "jobs",
                 results_topic: str = "results", group: str = "runners", keep_s: float = 900.0) -> None:
        self.bootstrap, self.builder, self.lock = bootstrap, builder, lock
        self.jobs_topic, self.results_topic, self.group, self.keep_s = jobs_topic, results_topic, group, keep_s
        self.submitted: dict[str, float] = {}  # unfinished jobs: id -> submitted_s
        self.started: dict[str, tuple[str, float]] = {}  # unfinished jobs taken: id -> (runner, started_s)
        #: finished jobs running again (delivered a second time after a rebalance whose commit
        #: was refused): id -> (runner, partition, offset) of that run; over once it finishes or
        #: the runners' committed offset passes it (its runner died and the next one skipped it)
        self.again: dict[str, tuple[str, int, int]] = {}
        self.finished_ids: set[str] = set()
        self.seen_ids: set[str] = set()
        self.arrivals: deque[float] = deque()  # submission instants
        self.finished: deque[tuple[float, float]] = deque()  # (finished_s, turnaround_ms)
        self.malformed = 0
        self.jobs_seen = 0
        self.results_seen = 0
        self.last_result_at: float | None = None
        self._last_signals_s: float | None = None  # the previous :meth:`signals` instant: the step's window starts there
        self.assigned = threading.Event()
        self._state = threading.Lock()
        self._offsets_lock = threading.Lock()
        self._offsets = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what arrives
    def ingest_job(self, key: bytes | None, value: bytes | None, timestamp_s: float) -> None:
        """One message of the jobs topic: its id and submission instant."""
        try:
            msg = json.loads(value) if value else None
            job_id = msg.get("id") if isinstance(msg, dict) else None
            submitted = msg.get("submitted", timestamp_s) if isinstance(msg, dict) else timestamp_s
            submitted = float(submitted)
        except (ValueError, TypeError, UnicodeDecodeError):
            job_id, submitted = None, timestamp_s
        if not isinstance(job_id, str):  # a malformed job: the runner answers it by its key
            job_id = key.decode("utf-8", "replace") if key else None
            self.malformed += 1
        with self._state:
            if job_id is not None and job_id in self.seen_ids:  # read again after a reconnection
                return
            if job_id is not None:
                self.seen_ids.add(job_id)
            self.jobs_seen += 1
            self.arrivals.append(submitted)
            if job_id is not None and job_id not in self.finished_ids:
                self.submitted[job_id] = submitted

    def ingest_result(self, value: bytes | None) -> None:
        """One message of the results topic: a job started or finished."""
        try:
            msg = json.loads(value)
            job_id, event = str(msg["id"]), msg["event"]
            submitted = float(msg["submitted"])
            if event == "started":
                started = float(msg["started"])
            elif event == "finished":
                finished = float(msg["finished"])
            else:
                raise ValueError(event)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            self.malformed += 1
            return
        with self._state:
            self.results_seen += 1
            if event == "started":  # a job is held by one runner at a time: a new run replaces the last
                runner = str(msg.get("runner", ""))
                if job_id not in self.finished_ids:
                    self.started[job_id] = (runner, started)
                elif isinstance(msg.get("partition"), int) and isinstance(msg.get("offset"), int):
                    self.again[job_id] = (runner, msg["partition"], msg["offset"])
                return
            if job_id in self.finished_ids:  # a second run ended, or read again after a reconnection
                self.again.pop(job_id, None)
                return
            self.finished_ids.add(job_id)
            self.submitted.pop(job_id, None)
            self.started.pop(job_id, None)
            turnaround = max(finished - submitted, 0.0) * 1000.0
            self.finished.append((finished, turnaround))
            self.last_result_at = time.time()
        with self.lock:
            self.builder.add_spans(Spans(np.array([submitted]), np.array([turnaround])))

    # -- what is asked
    def unfinished_ages_ms(self, now_s: float) -> np.ndarray:
        """The ages of the jobs submitted and not finished at ``now_s``, ms."""
        with self._state:
            return np.maximum(now_s - np.fromiter(self.submitted.values(), float, len(self.submitted)), 0.0) * 1000.0

    def offsets(self, partitions: int | None = None, timeout_s: float = 3.0) -> tuple[PartitionOffsets, ...]:
        """Per partition of the jobs topic: the log-end offset and the runners' committed one."""
        from confluent_kafka import Consumer, TopicPartition

        with self._offsets_lock:
            if self._offsets is None:
                self._offsets = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                                          "enable.auto.commit": False})
            c = self._offsets
            if partitions is None:
                md = c.list_topics(self.jobs_topic, timeout=timeout_s)
                partitions = len(md.topics[self.jobs_topic].partitions)
            tps = [TopicPartition(self.jobs_topic, p) for p in range(partitions)]
            committed = {t.partition: t.offset for t in c.committed(tps, timeout=timeout_s)}
            out = []
            for tp in tps:
                _, high = c.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
                done = committed.get(tp.partition, INVALID_OFFSET)
                out.append(PartitionOffsets(tp.partition, int(high), int(done) if done >= 0 else INVALID_OFFSET))
        return tuple(out)

    def signals(self, now_s: float, window_s: float, runners: int) -> QueueSignals:
        """The queue at ``now_s``: offsets and lag from the broker; the rates and the
        turnaround p95 over the step, since the previous call (the first call: the last
        ``window_s`` seconds), as the simulator's ``JobsBackend`` takes them."""
        parts = self.offsets()
        with self._state:
            last = self._last_signals_s
            lo = last if last is not None and last < now_s else now_s - window_s
            self._last_signals_s = now_s
            span = now_s - lo
            while self.arrivals and self.arrivals[0] < now_s - self.keep_s:
                self.arrivals.popleft()
            while self.finished and self.finished[0][0] < now_s - self.keep_s:
                self.finished.popleft()
            waiting = [s for j, s in self.submitted.items() if j not in self.started]
            committed = {p.partition: p.committed for p in parts}
            self.again = {j: a for j, a in self.again.items() if a[2] >= committed.get(a[1], INVALID_OFFSET)}
            busy = {runner for runner, _ in self.started.values()} | {a[0] for a in self.again.values()}
            arrived = sum(lo < a <= now_s for a in self.arrivals)
            done = np.array([ms for t, ms in self.finished if lo < t <= now_s])
            ages = np.maximum(now_s - np.fromiter(self.submitted.values(), float, len(self.submitted)), 0.0) * 1000.0
            in_progress = len(self.started) + len(self.again)
        p95, censored = censored_p95(done, ages)
        return QueueSignals(partitions=parts, lag=sum(p.lag for p in parts), waiting=len(waiting),
                            oldest_wait_s=max(now_s - min(waiting), 0.0) if waiting else 0.0,
                            in_progress=in_progress, arrival_rate=arrived / span,
                            completion_rate=done.shape[0] / span, turnaround_p95_ms=float(p95),
                            censored=censored, runners=int(runners), runners_busy=len(busy))

    # -- the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobs-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "scalelab-orchestrator-jobs",
                                         "enable.auto.commit": False})
                    tps = []
                    for topic in (self.jobs_topic, self.results_topic):
                        md = consumer.list_topics(topic, timeout=5)
                        tps += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
                    consumer.assign(tps)
                    self.assigned.set()
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    if msg.topic() == self.jobs_topic:
                        ts = msg.timestamp()[1] / 1000.0 if msg.timestamp()[1] > 0 else time.time()
                        self.ingest_job(msg.key(), msg.value(), ts)
                    else:
                        self.ingest_result(msg.value())
            except Exception:  # broker away: wait and read again (from the beginning: ids are kept)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:
                        pass
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._offsets_lock:
            if self._offsets is not None:
                self._offsets.close()
                self._offsets = None
