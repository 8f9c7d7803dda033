"""A runner of the jobs architecture: submissions are jobs on a Kafka topic, runners pull them.

``python -m scalelab.sandbox.job_runner --bootstrap ADDR`` joins consumer group ``runners``
on topic ``jobs`` (confluent-kafka) and holds at most ``--max-concurrent-jobs`` jobs at
once (5, PrairieLearn's grader default). Each job runs in the sealed sandbox exactly as a
service replica runs a ``POST /run`` submission (:meth:`scalelab.sandbox.app.App.submission`:
the same request checks, limits ceiling, seal and answer caps). Its result goes to topic
``results``, keyed by the job's id.

Messages. A job (key: its id)::

    {"id": "...", "submitted": 1733500000.12, "request": {"code": "...", "language": "python", "limits": {...}}}

``request`` is the body of ``POST /run``; ``submitted`` is the student's wall clock, s.
On ``results`` the runner sends, keyed by the job's id, ``{"event": "started", ...}`` when
it takes a job and ``{"event": "finished", ...}`` when it is done; both carry ``id``,
``runner``, ``partition``, ``offset``, ``submitted`` and ``started``; the finished one also
``finished``, ``status`` (200, 400 for a malformed job or request, 503 when the sandbox
cannot run programs), ``verdict`` (the run's answer, as ``POST /run`` gives it; None when it
did not run) and ``error`` (what was wrong, else None). A malformed job message (not JSON,
not an object, no ``request``) gets a finished result naming what was wrong; its offset is
committed like any other: nothing is lost and nothing blocks its partition.

Offsets. A job's offset counts as done once its finished result is acknowledged by the
broker; per partition the runner commits the offset after the longest run of done jobs
from the last commit (in order: a job finished early waits for those before it), so a
runner that dies re-delivers its unfinished jobs (at least once), never loses one.

Answered jobs. A job can come again after its result went out: its runner died before
committing, or the broker refused the commit (librdkafka's mock cluster refuses every
commit while the group rebalances, so an eager rebalance sends the jobs a runner held
then to their partitions' next owners). Each runner follows the results topic (no group,
from its beginning) and keeps the ids (and places: partition, offset) of the jobs with a
finished result produced in the last hour; a job found there, at the same place, is not run
again: its offset is done at once, and it counts in
``scalelab_runner_jobs_skipped_total``. On each assignment the runner first reads the
results up to their end (the previous owner published its results before it let the
partitions go), so what it skips is what was answered before the partitions came to it.

Draining. On SIGTERM the runner stops taking jobs (its partitions paused), finishes those it
holds, commits, and closes its consumer, which leaves the group (the others rebalance).
On a rebalance that takes partitions away, it finishes their jobs and commits before it
lets them go (the eager protocol: every member gives its partitions back).

Like a service replica it answers ``/healthz`` (503 until it proved it can run a program,
and while it drains) and ``/metrics`` (its process tree's CPU and memory, by its cgroup
where the local scaler made one, plus ``scalelab_runner_jobs_*``) on
``$SANDBOX_CONTROL_PORT``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scalelab.errors import UserError
from scalelab.sandbox.app import PROVE_EVERY_S, App, Settings, _text, start_control_listener

JOBS_TOPIC, RESULTS_TOPIC, GROUP = "jobs", "results", "runners"
#: PrairieLearn's grader default: jobs a runner holds at once.
MAX_CONCURRENT_JOBS = 5


class MalformedJob(UserError):
    """A job message that cannot be run; the message names what is wrong."""


@dataclass(frozen=True)
class Job:
    """One job as taken from its partition."""

    id: str
    partition: int
    offset: int
    submitted: float
    request: bytes | None  # the POST /run body; None for a malformed job
    error: str | None = None


def parse_job(key: bytes | None, value: bytes | None, partition: int, offset: int, timestamp_s: float) -> Job:
    """The job of one message; a malformed one is a :class:`Job` with ``error`` (and the
    id its key gives, else ``partition/offset``), never an exception."""
    fallback = key.decode("utf-8", "replace") if key else f"{partition}/{offset}"
    try:
        if not value:
            raise MalformedJob("the job message is empty")
        try:
            msg = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedJob(f"the job message is not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise MalformedJob(f"the job message must be a JSON object, got {type(msg).__name__}")
        job_id = msg.get("id", fallback)
        if not isinstance(job_id, str) or not job_id:
            raise MalformedJob(f"'id' must be a non-empty string, got {job_id!r}")
        fallback = job_id
        submitted = msg.get("submitted", timestamp_s)
        if isinstance(submitted, bool) or not isinstance(submitted, int | float):
            raise MalformedJob(f"'submitted' must be a number (s), got {submitted!r}")
        if "request" not in msg:
            raise MalformedJob("the job has no 'request' (the POST /run body: code, language, stdin, limits)")
        if not isinstance(msg["request"], dict):
            raise MalformedJob(f"'request' must be a JSON object, got {type(msg['request']).__name__}")
        return Job(job_id, partition, offset, float(submitted), json.dumps(msg["request"]).encode())
    except MalformedJob as exc:
        return Job(fallback, partition, offset, float(timestamp_s), None, str(exc))


class Offsets:
    """The commit rule: per partition, jobs taken in offset order; the committable offset
    is one past the longest run of done jobs from the start. ``next`` keeps it until a
    commit of it is acknowledged (``acknowledge``), so a commit the broker refused is
    made again."""

    def __init__(self) -> None:
        self.taken: dict[int, deque[int]] = {}
        self.done: dict[int, set[int]] = {}
        self.next: dict[int, int] = {}  # partition -> the offset to commit
        self.acked: dict[int, int] = {}  # partition -> the last offset the broker acknowledged

    def take(self, partition: int, offset: int) -> None:
        self.taken.setdefault(partition, deque()).append(offset)
        self.done.setdefault(partition, set())

    def finish(self, partition: int, offset: int) -> None:
        if partition not in self.taken:  # the partition was let go meanwhile
            return
        self.done[partition].add(offset)
        q, d = self.taken[partition], self.done[partition]
        while q and q[0] in d:
            d.discard(q[0])
            self.next[partition] = q.popleft() + 1

    def in_progress(self, partitions=None) -> int:
        parts = self.taken if partitions is None else [p for p in partitions if p in self.taken]
        return sum(len(self.taken[p]) - len(self.done[p]) for p in parts)

    def to_commit(self, partitions=None) -> dict[int, int]:
        """The offsets to commit (of ``partitions``, default all): those not acknowledged yet."""
        return {p: o for p, o in self.next.items()
                if (partitions is None or p in partitions) and o > self.acked.get(p, -1)}

    def acknowledge(self, partition: int, offset: int) -> None:
        self.acked[partition] = max(self.acked.get(partition, -1), offset)

    def forget(self, partition: int) -> None:
        for d in (self.taken, self.done, self.next, self.acked):
            d.pop(partition, None)


class RunnerApp(App):
    """The sandbox app of a runner: its health says draining, its metrics add the jobs."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings, exporter=None)
        self.draining = False
        self.jobs_in_progress = 0
        self.jobs_finished = 0
        self.jobs_malformed = 0
        self.jobs_skipped = 0  # delivered again after their result went out: not run again

    def healthz(self):
        if self.draining:
            return _text("503 Service Unavailable", "draining\n")
        if self.proof is None:
            return _text("503 Service Unavailable", "not proved yet: the sandbox has not run its test program\n")
        return super().healthz()

    def metrics(self) -> str:
        lbl = f'namespace="{self.s.namespace}",pod="{self.s.pod}",container="{self.s.container}"'
        return super().metrics() + "\n".join([
            "# TYPE scalelab_runner_jobs_in_progress gauge",
            f"scalelab_runner_jobs_in_progress{{{lbl}}} {self.jobs_in_progress}",
            "# TYPE scalelab_runner_jobs_finished_total counter",
            f"scalelab_runner_jobs_finished_total{{{lbl}}} {self.jobs_finished}",
            "# TYPE scalelab_runner_jobs_malformed_total counter",
            f"scalelab_runner_jobs_malformed_total{{{lbl}}} {self.jobs_malformed}",
            "# TYPE scalelab_runner_jobs_skipped_total counter",
            f"scalelab_runner_jobs_skipped_total{{{lbl}}} {self.jobs_skipped}",
        ]) + "\n"


class JobRunner:
    """Pulls jobs, runs at most ``max_concurrent_jobs`` at once, publishes results,
    commits in order, drains on :meth:`stop`."""

    #: seconds an asynchronous commit may go unanswered before the same offsets are sent again
    commit_answer_s = 2.0
    #: seconds an answered job's id is kept (a job comes again within seconds of a rebalance)
    answered_keep_s = 3600.0
    #: seconds an assignment waits for the results topic to be read to its end
    catch_up_s = 10.0

    def __init__(self, bootstrap: str, jobs_topic: str = JOBS_TOPIC, results_topic: str = RESULTS_TOPIC,
                 group: str = GROUP, max_concurrent_jobs: int = MAX_CONCURRENT_JOBS, app: RunnerApp | None = None,
                 name: str | None = None, drain_timeout_s: float = 300.0) -> None:
        if max_concurrent_jobs < 1:
            raise ValueError(f"max_concurrent_jobs must be >= 1, got {max_concurrent_jobs}")
        self.bootstrap, self.jobs_topic, self.results_topic, self.group = bootstrap, jobs_topic, results_topic, group
        self.max = int(max_concurrent_jobs)
        self.app = app or RunnerApp()
        self.name = name or self.app.s.pod or socket.gethostname()
        self.drain_timeout_s = drain_timeout_s
        self.offsets = Offsets()
        self.stopping = threading.Event()
        self.assigned = threading.Event()  # set once the group gave it partitions (or none, but answered)
        self._delivered: queue.Queue = queue.Queue()  # (partition, offset) of results the broker acknowledged
        self._pool = ThreadPoolExecutor(max_workers=self.max, thread_name_prefix="job")
        self._paused: bool | None = None  # None: apply to the assignment whatever it was
        self._sent: dict[int, int] | None = None  # the asynchronous commit awaiting its answer
        self._sent_at = 0.0  # when it was sent (time.monotonic(), s)
        self.consumer = self.producer = self.answers = None
        #: job id -> (partition, offset, when its finished result was produced, epoch s)
        self.answered: dict[str, tuple[int, int, float]] = {}
        self._pruned_at = 0.0  # when ``answered`` was last pruned (time.time())
        self.errors: list[str] = []

    def _error(self, message: str) -> None:
        """Keep and log an error that does not stop the runner."""
        self.errors.append(message[:300])
        print(f"runner {self.name}: {message[:300]}", file=sys.stderr, flush=True)

    # -- Kafka
    def _connect(self) -> None:
        from confluent_kafka import Consumer, Producer

        self.producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all",
                                  "client.id": self.name})
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group, "client.id": self.name,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 600000,
            "topic.metadata.refresh.interval.ms": 5000, "on_commit": self._committed,
        })  # fmt: skip
        # fetch.wait.max.ms: a request for the topic's end waits behind the fetch in flight (librdkafka's
        # default, 500 ms, held each assignment up by as much)
        self.answers = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.group}-answers",
                                 "client.id": f"{self.name}-answers", "enable.auto.commit": False,
                                 "fetch.wait.max.ms": 50})
        self._follow_results()
        self.consumer.subscribe([self.jobs_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _follow_results(self) -> bool:
        """Assign the results topic's partitions, from their beginning, to the answers'
        consumer; False (logged) while the topic has none (not made yet, or the broker
        did not answer): :meth:`_catch_up` tries again."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            md = self.answers.list_topics(self.results_topic, timeout=5)
            parts = md.topics[self.results_topic].partitions if self.results_topic in md.topics else {}
        except KafkaException as exc:
            parts, why = {}, str(exc)
        else:
            why = "it has no partitions"
        if not parts:
            self._error(f"cannot follow topic {self.results_topic!r} ({why}): answered jobs may run again")
            return False
        self.answers.assign([TopicPartition(self.results_topic, p, OFFSET_BEGINNING) for p in parts])
        return True

    def _read_answers(self, timeout_s: float = 0.0) -> int:
        """Read what the results topic holds now (up to 1000 messages): the ids of finished
        jobs. Returns the messages read."""
        msgs = self.answers.consume(num_messages=1000, timeout=timeout_s)
        now = time.time()
        old = now - self.answered_keep_s
        for m in msgs:
            if m.error() is not None or not m.key():
                continue
            kind, ms = m.timestamp()
            at = ms / 1000.0 if kind and ms > 0 else now  # when the result was produced
            if at < old:
                continue  # too old to come again
            try:
                msg = json.loads(m.value())
                if msg.get("event") != "finished":
                    continue
                where = (int(msg["partition"]), int(msg["offset"]))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # not a result of ours: nothing to skip for it
            self.answered[m.key().decode("utf-8", "replace")] = (*where, at)
        if now - self._pruned_at > 60.0:  # a minute's results at most beyond the hour
            self._pruned_at = now
            self.answered = {j: a for j, a in self.answered.items() if a[2] >= old}
        return len(msgs)

    def _was_answered(self, job: Job) -> bool:
        """The job's finished result went out before: the same id at the same place (a
        job sent anew under a used id is another job)."""
        a = self.answered.get(job.id)
        return a is not None and (a[0], a[1]) == (job.partition, job.offset)

    def _emptied(self, partition: int, high: int) -> bool:
        """The partition holds nothing below ``high`` any more (retention removed it): its
        low watermark, as the last fetch reported it, has reached ``high``."""
        from confluent_kafka import TopicPartition

        marks = self.answers.get_watermark_offsets(TopicPartition(self.results_topic, partition), cached=True)
        return marks is not None and marks[0] >= high  # None, or (-1001, -1001): nothing fetched yet

    def _catch_up(self) -> None:
        """Read the results topic to its end as it is now (at most ``catch_up_s``)."""
        from confluent_kafka import KafkaException, TopicPartition

        end = time.monotonic() + self.catch_up_s
        try:
            parts = self.answers.assignment()
            if not parts and not self._follow_results():
                return
            parts = self.answers.assignment()
            # every partition's end in one request (a timestamp of -1: the latest offset); asked one
            # partition at a time (get_watermark_offsets), the mock broker took up to 0.5 s each
            ends = {tp.partition: tp.offset for tp in self.answers.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, -1) for tp in parts], timeout=5)}
            while time.monotonic() < end:
                self._read_answers(0.1)
                at = {tp.partition: tp.offset for tp in self.answers.position(parts)}
                # read: at the end, or nothing there to read (an empty partition; one emptied by
                # retention reads its low watermark from the next fetch, as the cached marks say)
                if all(high <= 0 or at.get(p, -1) >= high or self._emptied(p, high) for p, high in ends.items()):
                    return
        except KafkaException as exc:
            self._error(f"reading topic {self.results_topic!r} to its end: {exc}: a job answered meanwhile may run again")
            return
        self._error(f"the results topic was not read to its end in {self.catch_up_s:.0f} s: "
                    "a job answered meanwhile may run again")

    def _on_lost(self, consumer, partitions) -> None:
        """Partitions lost (the group went on without this runner): their jobs are
        someone else's now; the results still go out, their commits would fail."""
        self._error(f"lost partitions {[p.partition for p in partitions]}")
        for p in partitions:
            self.offsets.forget(p.partition)

    def _on_assign(self, consumer, partitions) -> None:
        print(f"runner {self.name}: assigned {[p.partition for p in partitions]}", file=sys.stderr, flush=True)
        self._catch_up()  # what the partitions' previous owner answered is known before their jobs are taken
        # a partition paused before a rebalance stays paused when it comes back: the next
        # round pauses or resumes the whole new assignment, whatever it was
        self._paused = None
        self.assigned.set()

    def _on_revoke(self, consumer, partitions) -> None:
        """Partitions taken away: finish their jobs and commit before letting them go."""
        ids = [p.partition for p in partitions]
        print(f"runner {self.name}: revoked {ids}, holding {self.offsets.in_progress(ids)} of their jobs",
              file=sys.stderr, flush=True)
        end = time.monotonic() + self.drain_timeout_s
        while self.offsets.in_progress(ids) and time.monotonic() < end:
            self._serve(0.05, commit=False)
        self._serve(0, commit=False)
        self._commit(asynchronous=False, partitions=ids)
        for p in ids:
            self.offsets.forget(p)

    def _serve(self, timeout_s: float, commit: bool = True) -> None:
        """Serve the producer's acknowledgements: each acknowledged finished result
        makes its offset done; then commit what became committable."""
        self.producer.poll(timeout_s)
        while True:
            try:
                partition, offset = self._delivered.get_nowait()
            except queue.Empty:
                break
            self.offsets.finish(partition, offset)
        self.app.jobs_in_progress = self.offsets.in_progress()
        if commit:
            self._commit()

    def _commit(self, asynchronous: bool = True, partitions=None) -> None:
        """Commit the offsets not acknowledged yet; an acknowledgement (here for a
        synchronous commit, in :meth:`_committed` for an asynchronous one) marks them."""
        from confluent_kafka import KafkaException, TopicPartition

        commits = self.offsets.to_commit(partitions)
        if not commits:
            return
        if asynchronous:  # the same offsets again only once the last sending was answered, or went unanswered
            if commits == self._sent and time.monotonic() - self._sent_at < self.commit_answer_s:
                return
            self._sent, self._sent_at = commits, time.monotonic()
        try:
            done = self.consumer.commit(offsets=[TopicPartition(self.jobs_topic, p, o) for p, o in commits.items()],
                                        asynchronous=asynchronous)
        except KafkaException as exc:  # e.g. no longer a member: the jobs come again to whoever holds them
            self._sent = None
            self._error(f"commit {commits}: {exc}")
            return
        if not asynchronous:
            for tp in done or ():
                if tp.error is None:
                    self.offsets.acknowledge(tp.partition, tp.offset)

    def _committed(self, err, partitions) -> None:
        """The broker's answer to an asynchronous commit (served by ``poll``)."""
        self._sent = None
        if err is not None:
            print(f"runner {self.name}: a commit was refused ({err}); it is made again", file=sys.stderr, flush=True)
            return
        for tp in partitions:
            if tp.error is None and tp.topic == self.jobs_topic:
                self.offsets.acknowledge(tp.partition, tp.offset)

    def _publish(self, job: Job, event: dict, done: bool) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                self._error(f"result of {job.id}: {err}")
            if done:  # a result the broker did not take still ends the job here; the error is logged
                self._delivered.put((job.partition, job.offset))

        body = {"id": job.id, "runner": self.name, "partition": job.partition, "offset": job.offset,
                "submitted": job.submitted, **event}
        while True:
            try:
                self.producer.produce(self.results_topic, key=job.id.encode(), value=json.dumps(body).encode(),
                                      on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: wait for room
                time.sleep(0.01)

    # -- jobs
    def _run(self, job: Job) -> None:
        started = time.time()
        self._publish(job, {"event": "started", "started": started}, done=False)
        if job.error is not None:
            status, verdict, error = 400, None, job.error
            self.app.jobs_malformed += 1
        else:
            line, answer = self.app.submission(job.request)
            status = int(line.split()[0])
            verdict, error = (answer, None) if status == 200 else (None, answer.get("error"))
        self.app.jobs_finished += 1
        self._publish(job, {"event": "finished", "started": started, "finished": time.time(), "status": status,
                            "verdict": verdict, "error": error}, done=True)

    def _run_safely(self, job: Job) -> None:
        try:
            self._run(job)
        except Exception as exc:  # a bug must not lose the job: it ends with the error
            self._error(f"job {job.id}: {type(exc).__name__}: {exc}")
            self._publish(job, {"event": "finished", "started": time.time(), "finished": time.time(), "status": 500,
                                "verdict": None, "error": f"{type(exc).__name__}: {exc}"[:500]}, done=True)

    def _take(self, msg) -> None:
        from confluent_kafka import TopicPartition

        if self.offsets.in_progress() >= self.max:  # fetched before the pause: read it again later
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
            return
        ts = msg.timestamp()[1] / 1000.0 if msg.timestamp()[1] > 0 else time.time()
        job = parse_job(msg.key(), msg.value(), msg.partition(), msg.offset(), ts)
        self.offsets.take(job.partition, job.offset)
        if self._was_answered(job):  # its result went out before: done, not run again
            self.app.jobs_skipped += 1
            print(f"runner {self.name}: job {job.id} (partition {job.partition}, offset {job.offset}) was answered "
                  "already: not run again", file=sys.stderr, flush=True)
            self._delivered.put((job.partition, job.offset))
            return
        self.app.jobs_in_progress = self.offsets.in_progress()
        self._pool.submit(self._run_safely, job)

    def _flow(self) -> None:
        """Pause the partitions while the runner is full, resume when a place is free."""
        full = self.offsets.in_progress() >= self.max
        if full is not self._paused:
            parts = self.consumer.assignment()
            if parts:
                (self.consumer.pause if full else self.consumer.resume)(parts)
            self._paused = full

    def run(self) -> None:
        """Take jobs until :meth:`stop`, then drain and close."""
        self._connect()
        try:
            while not self.stopping.is_set():
                self._flow()
                self._read_answers()
                msg = self.consumer.poll(0.1)
                if msg is not None:
                    if msg.error() is None:
                        self._take(msg)
                    elif not msg.error().retriable() and msg.error().fatal():
                        raise RuntimeError(f"the consumer failed: {msg.error()}")
                self._serve(0)
        finally:
            self._drain()

    def _drain(self) -> None:
        self.app.draining = True
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(parts)
        end = time.monotonic() + self.drain_timeout_s
        while self.offsets.in_progress() and time.monotonic() < end:
            self._serve(0.05, commit=False)
        self._serve(0, commit=False)
        self._commit(asynchronous=False)
        self.producer.flush(10)
        self.consumer.close()  # leaves the group: the others rebalance
        self.answers.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self.stopping.set()


def prove_until_able(app: App, stop: threading.Event) -> bool:
    """Prove the sandbox runs programs, again every ``PROVE_EVERY_S`` until it does (or
    ``stop``); True once it does."""
    while app.prove():
        if stop.wait(PROVE_EVERY_S):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scalelab.sandbox.job_runner", description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"), help="Kafka bootstrap address")
    ap.add_argument("--jobs-topic", default=JOBS_TOPIC)
    ap.add_argument("--results-topic", default=RESULTS_TOPIC)
    ap.add_argument("--group", default=GROUP, help="the runners' consumer group")
    ap.add_argument("--max-concurrent-jobs", type=int,
                    default=int(os.environ.get("RUNNER_MAX_CONCURRENT_JOBS", MAX_CONCURRENT_JOBS)))
    ap.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to finish held jobs on SIGTERM")
    args = ap.parse_args(argv)
    if not args.bootstrap:
        ap.error("give --bootstrap (or KAFKA_BOOTSTRAP)")
    if args.max_concurrent_jobs < 1:
        ap.error(f"--max-concurrent-jobs must be >= 1, got {args.max_concurrent_jobs}")
    app = RunnerApp()
    runner = JobRunner(args.bootstrap, args.jobs_topic, args.results_topic, args.group, args.max_concurrent_jobs,
                       app=app, drain_timeout_s=args.drain_timeout)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    port = os.environ.get("SANDBOX_CONTROL_PORT")
    if port:
        start_control_listener(app, int(port))  # /healthz: 503 until proved
    if not prove_until_able(app, runner.stopping):
        return 0
    print(f"runner {runner.name}: ready, up to {runner.max} jobs at once", flush=True)
    runner.run()
    print(f"runner {runner.name}: drained ({app.jobs_finished} jobs, {app.jobs_skipped} answered before and not run "
          f"again, {len(runner.errors)} errors)", flush=True)
    for e in runner.errors[-10:]:
        print(f"runner {runner.name}: {e}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
