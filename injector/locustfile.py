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

Use it with ``locust -f injector/locustfile.py`` (master + workers) or in library mode
through :mod:`scalelab.injector.master`.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
from dataclasses import dataclass, replace

from locust import HttpUser, task

from scalelab.errors import UserError
from scalelab.injector.corpus import Corpus, as_intended, load_corpus, outcome_of

TASKS = ("compute", "student")


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
        if new.kind == "student":
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


class _Seeded(HttpUser):
    abstract = True

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.rng = random.Random(f"{CURRENT['task'].seed}:{PROCESS_INDEX}:{next(_user_numbers)}")

    def wait_time(self) -> float:
        lo, hi = CURRENT["task"].think_s
        return self.rng.uniform(lo, hi)


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
        program = self.rng.choices(corpus.programs, weights=corpus.weights)[0]
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


USER_CLASSES = {"compute": SandboxUser, "student": StudentUser}
