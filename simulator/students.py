"""Simulated students that draw what the live injector's students draw.

The live injector (:mod:`scalelab.injector.locustfile`) gives each Locust user its own
generator, :func:`scalelab.injector.corpus.student_rng` ``(seed, process, number)``:
``seed`` is the episode's task seed (the policy's seed, sent with ``set_task``),
``process`` the injector process (0 for a lone one) and ``number`` the user's rank among
all the users that process created, counted over its whole life -- so across the
episodes of a live run folder, which one injector plays in order (run by run, each run's
policies in the config's order). A student draws its first think time, then, per
submission, a program (:meth:`~scalelab.injector.corpus.Corpus.pick`) and the think time
that follows its answer. Live runs of the same config and seed therefore submit the same
programs after the same think times; only the execution differs.

:class:`InjectorStudents` draws the same, so that a simulated episode replays live's
students: the event core takes each user's stream (``u_think``, ``u_demand``), and a
submission of a program costs one of that program's runs as measured, costed by the
profile (:meth:`~scalelab.simulator.models.DemandModel.program_demands_s`), the run drawn
from the simulator's own demand generator. What the simulator cannot replay: which
students Locust stops when the level falls (the first its set of user greenlets yields,
an order set by memory addresses) -- the leaving students are drawn at random here -- and
the times, which follow the simulated service. The numbering assumes one injector process
played the folder's episodes in order, each once: an injector restarted by the
supervisor, a failed episode (its users run on into the next) or a resumed folder numbers
otherwise (:func:`scalelab.experiments.twin.injector_breaks` finds the first two).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalelab.errors import UserError
from scalelab.injector.corpus import load_corpus, student_rng

#: Where a simulated closed user's think times and demands come from (``cluster.students``).
STUDENT_DRAWS = ("simulator", "injector")


@dataclass(frozen=True)
class InjectorDraws:
    """Which injector students an episode replays: ``seed``, the task seed live sends
    (the policy's seed of that run); ``first_number``, the number of the episode's first
    student in the injector process (:func:`first_student_number`); ``process``, the
    injector process (0: a lone one, as the local stack runs)."""

    seed: int
    first_number: int = 0
    process: int = 0


def students_created(levels: Sequence[float]) -> int:
    """Users Locust creates for an episode that sets these user levels in turn from none
    (and stops at its end): every rise creates new users, numbered on; a fall stops some."""
    created, level = 0, 0
    for x in levels:
        x = max(int(x), 0)
        created += max(x - level, 0)
        level = x
    return created


def first_student_number(levels: Sequence[float], run_in_folder: int, policy_index: int, policies: int) -> int:
    """The number of an episode's first student in a live run folder whose every episode
    sets ``levels``: the episodes before it (``run_in_folder`` whole runs of ``policies``
    episodes, then ``policy_index``) created their students first, in one injector."""
    return (run_in_folder * policies + policy_index) * students_created(levels)


class InjectorStudents:
    """The students of one simulated episode, drawn as the injector's
    (:class:`InjectorDraws`): each new student takes the next number; its stream is
    ``width`` submissions long and grows on demand (:meth:`rows`).

    ``think_s``: (low, high) s, uniform; ``corpus``: the corpus the profile's demand
    names; ``demands``: per program, what its runs cost (s); ``rng_cost`` draws which
    measured run a submission costs as, ``rng_leave`` which students leave on a fall."""

    def __init__(self, draws: InjectorDraws, think_s: tuple[float, float], corpus: str,
                 demands: Sequence[np.ndarray], rng_cost: np.random.Generator,
                 rng_leave: np.random.Generator) -> None:
        self.draws = draws
        self.low, self.high = think_s
        self.corpus = load_corpus(corpus)
        self.demands = list(demands)
        if len(self.demands) != len(self.corpus.programs):
            raise UserError(f"injector students: {len(self.demands)} program demands for the "
                            f"{len(self.corpus.programs)} programs of corpus {corpus!r}")
        self.rng_cost, self.rng_leave = rng_cost, rng_leave
        self.created = 0
        self._rngs: dict[int, random.Random] = {}  # user index -> its generator, for longer rows

    def join(self, user: int) -> float:
        """A new student takes user index ``user``; returns its first think time, s."""
        rng = student_rng(self.draws.seed, self.draws.process, self.draws.first_number + self.created)
        self.created += 1
        self._rngs[user] = rng
        return rng.uniform(self.low, self.high)

    def rows(self, user: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` submissions of student ``user``: their demands (s of CPU)
        and the think times after them (s)."""
        rng = self._rngs[user]
        demand, think = np.empty(count), np.empty(count)
        for k in range(count):
            runs = self.demands[self.corpus.pick(rng)]
            demand[k] = runs[self.rng_cost.integers(len(runs))] if len(runs) > 1 else runs[0]
            think[k] = rng.uniform(self.low, self.high)
        return demand, think

    def leave(self, user: int) -> None:
        """Student ``user`` is stopped; its stream is not needed any more."""
        self._rngs.pop(user, None)

    def leaving(self, active: np.ndarray, count: int) -> np.ndarray:
        """Which ``count`` of the ``active`` user indices a fall of the level stops."""
        return np.sort(self.rng_leave.choice(active, size=count, replace=False))

    @property
    def active_users(self) -> list[int]:
        return sorted(self._rngs)
