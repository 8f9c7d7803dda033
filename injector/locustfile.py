"""Locust users that call the sandbox: the paper's clients and evaluation-week students.

What users do is the injector's **task** (:class:`Task`), set at start-up from the
environment (``INJECTOR_TASK``, ``INJECTOR_CPU``, ``INJECTOR_WAIT_MIN``/``MAX``,
``INJECTOR_CORPUS``, ``INJECTOR_SEED``) and by the ``set_task`` order over Kafka (the
experiment's own settings; :mod:`scalelab.injector.master` passes it on to its workers):

``compute``: :class:`SandboxUser`, as the paper's injector did: ``wait_time =
between(0, 2)``, one request ``GET /compute?cpu=200`` (the paper's
``/ConsumeFixedCpu?cpu=200``).

``student``: :class:`StudentUser`, a student of ``evaluation-week-v1``: the experiment
logs students in and out with the calendar (the user level per step); each one thinks
(the workload's think time, compressed with it), submits a program of the submission
corpus (:mod:`scalelab.injector.corpus`, drawn by its weights) to ``POST /run``, reads the
answer and thinks again. A submission fails in Locust's statistics only when the
answer is not what the program was meant to get (a correct program killed by the wall
clock of an overloaded replica, an HTTP error); an infinite loop stopped at the CPU
limit is a success.

``job``: :class:`JobStudentUser`, the same student on the jobs architecture: the
injector's host is ``kafka://BOOTSTRAP``; the program goes as a job to topic ``jobs``
(keyed by a fresh job id), the student waits for its ``finished`` result on topic
``results`` (:mod:`scalelab.sandbox.job_runner`), judges it as above and thinks again. Its
response time in Locust's statistics is the job's turnaround as the student sees it
(submit to result read). A result that does not come within ``JOB_TIMEOUT_S`` is a failure.

Use it with ``locust -f injector/locustfile.py`` (master + workers) or in library mode
through :mod:`scalelab.injector.master`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass, replace

from locust import HttpUser, User, task

from scalelab.errors import UserError
from scalelab.injector.corpus import Corpus, as_intended, load_corpus, outcome_of, student_rng

TASKS = ("compute", "student", "job")
#: How long a student waits for a job's result before counting it as failed, s.
JOB_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Task:
    """What the injector's users do. ``think_s``: (low, high) s, uniform;
    ``cpu``: the paper's ``/compute?cpu=`` parameter; ``corpus``: ``v1`` or a corpus
    file; ``seed``: the students' programs and think times draw from it."""

    kind: str = "compute"
    think_s: tuple[float, float] = (0.0, 2.0)
    cpu: int = 200
    corpus: str = "v1"
    seed: int = 0

    @classmethod
    def from_env(cls) -> Task:
        task = os.environ.get("INJECTOR_TASK", "compute")
        return cls(kind="student" if task in ("run", "student") else task,
                   think_s=(float(os.environ.get("INJECTOR_WAIT_MIN", "0")),
                            float(os.environ.get("INJECTOR_WAIT_MAX", "2"))),
                   cpu=int(os.environ.get("INJECTOR_CPU", "200")),
                   corpus=os.environ.get("INJECTOR_CORPUS", "v1"), seed=int(os.environ.get("INJECTOR_SEED", "0")))

    def updated(self, order: dict) -> Task:
        """This task with the fields of a ``set_task`` order; ``ValueError`` naming a bad one."""
        kind = order.get("task", self.kind)
        if kind not in TASKS:
            raise UserError(f"set_task: task={kind!r} is not one of {TASKS}")
        think = order.get("think_s", self.think_s)
        lo, hi = (float(x) for x in think)
        if not 0 <= lo <= hi:
            raise UserError(f"set_task: think_s={think!r} must be [low, high], 0 <= low <= high")
        new = replace(self, kind=kind, think_s=(lo, hi), cpu=int(order.get("cpu", self.cpu)),
                      corpus=str(order.get("corpus", self.corpus)), seed=int(order.get("seed", self.seed)))
        if new.kind in ("student", "job"):
            corpus_of(new.corpus)  # fails here, on the order, if the corpus cannot be read
        return new


#: The task of this process's users (the master sets it; workers take it from the master).
CURRENT = {"task": Task.from_env()}
#: This process's index among the injector's processes (0: the master or a lone process).
PROCESS_INDEX = int(os.environ.get("INJECTOR_PROCESS_INDEX", "0"))
_user_numbers = itertools.count()


def set_task(order: dict) -> Task:
    CURRENT["task"] = CURRENT["task"].updated(order)
    return CURRENT["task"]


@functools.lru_cache(maxsize=4)
def corpus_of(name: str) -> Corpus:
    return load_corpus(name)


class _SeededMixin:
    """A user's own generator (the task's seed, the process, the user's number) and think time."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.rng = student_rng(CURRENT["task"].seed, PROCESS_INDEX, next(_user_numbers))

    def wait_time(self) -> float:
        lo, hi = CURRENT["task"].think_s
        return self.rng.uniform(lo, hi)


class _Seeded(_SeededMixin, HttpUser):
    abstract = True


class SandboxUser(_Seeded):
    """The paper's client: ``GET /compute?cpu=N`` then think."""

    @task
    def call(self) -> None:
        self.client.get(f"/compute?cpu={CURRENT['task'].cpu}", name="/compute")


class StudentUser(_Seeded):
    """A student: thinks, submits a corpus program to ``POST /run``, reads the answer."""

    def on_start(self) -> None:  # a student logs in and reads the exam before submitting
        self._sleep_think()

    def _sleep_think(self) -> None:
        import gevent

        gevent.sleep(self.wait_time())

    @task
    def submit(self) -> None:
        corpus = corpus_of(CURRENT["task"].corpus)
        program = corpus.programs[corpus.pick(self.rng)]
        body = {"code": program.code, "language": "python", "limits": corpus.limits}
        with self.client.post("/run", json=body, name="/run", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                outcome = outcome_of(resp.json())
            except ValueError:
                resp.failure("the answer is not JSON")
                return
            if not as_intended(program, outcome):
                resp.failure(f"{program.kind} program got {outcome}, meant {program.intent}")
            else:
                resp.success()


class JobsClient:
    """This process's Kafka side of the jobs architecture (kafka-python, which gevent's
    patched sockets serve): one producer of jobs and one reader of every partition of the
    results topic from its end, which hands each ``finished`` result to the student
    waiting for it."""

    def __init__(self, bootstrap: str, jobs_topic: str = "jobs", results_topic: str = "results") -> None:
        import gevent
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.jobs_topic = jobs_topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 3), linger_ms=0, acks=1)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, api_version=(2, 3), enable_auto_commit=False)
        parts = self.consumer.partitions_for_topic(results_topic) or set()
        tps = [TopicPartition(results_topic, p) for p in sorted(parts)]
        if not tps:
            raise RuntimeError(f"topic {results_topic!r} has no partitions on {bootstrap}")
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:  # the end is resolved now, before any job is sent
            self.consumer.position(tp)
        self.waiting: dict[str, object] = {}  # job id -> gevent AsyncResult
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        import gevent

        while True:
            for records in self.consumer.poll(timeout_ms=100).values():
                for rec in records:
                    try:
                        msg = json.loads(rec.value)
                        if msg.get("event") != "finished":
                            continue
                        waiter = self.waiting.pop(str(msg["id"]), None)
                    except (ValueError, TypeError, KeyError, AttributeError):
                        continue
                    if waiter is not None:
                        waiter.set(msg)
            gevent.sleep(0)

    def submit(self, request: dict) -> tuple[str, object]:
        """Send a job (the ``POST /run`` body); its id and the result to wait on."""
        import gevent.event

        job_id = uuid.uuid4().hex
        waiter = gevent.event.AsyncResult()
        self.waiting[job_id] = waiter
        body = {"id": job_id, "submitted": time.time(), "request": request}
        self.producer.send(self.jobs_topic, key=job_id.encode(), value=json.dumps(body).encode())
        self.producer.flush()
        return job_id, waiter


@functools.lru_cache(maxsize=2)
def jobs_client(bootstrap: str) -> JobsClient:
    return JobsClient(bootstrap)


class JobStudentUser(_SeededMixin, User):
    """A student of the jobs architecture: thinks, submits a corpus program as a job,
    waits for its result on the results topic, judges it."""

    def on_start(self) -> None:
        self._sleep_think()

    def _sleep_think(self) -> None:
        import gevent

        gevent.sleep(self.wait_time())

    @task
    def submit(self) -> None:
        host = self.host or self.environment.host or ""
        if not host.startswith("kafka://"):
            raise UserError(f"the job task needs the injector's host to be kafka://BOOTSTRAP, got {host!r}")
        client = jobs_client(host.removeprefix("kafka://"))
        corpus = corpus_of(CURRENT["task"].corpus)
        program = corpus.programs[corpus.pick(self.rng)]
        t0, p0 = time.time(), time.perf_counter()
        exc: Exception | None = None
        job_id, waiter = client.submit({"code": program.code, "language": "python", "limits": corpus.limits})
        try:
            result = waiter.get(timeout=JOB_TIMEOUT_S)
        except Exception:  # gevent's Timeout
            client.waiting.pop(job_id, None)
            result, exc = None, RuntimeError(f"no result within {JOB_TIMEOUT_S:g} s")
        ms = (time.perf_counter() - p0) * 1000.0
        if result is not None:
            if result.get("status") != 200 or not isinstance(result.get("verdict"), dict):
                exc = RuntimeError(f"job status {result.get('status')}: {result.get('error')}")
            else:
                outcome = outcome_of(result["verdict"])
                if not as_intended(program, outcome):
                    exc = RuntimeError(f"{program.kind} program got {outcome}, meant {program.intent}")
        self.environment.events.request.fire(request_type="JOB", name="job", response_time=ms, response_length=0,
                                             exception=exc, context={}, start_time=t0)


USER_CLASSES = {"compute": SandboxUser, "student": StudentUser, "job": JobStudentUser}
