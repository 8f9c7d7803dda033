"""A plain-Python processor-sharing loop of the engine's model: the yardstick of its speed
and a second implementation to check it against.

:mod:`scalelab.simulator.engine` is compiled, keeps its state in flat arrays and finds the
next event in segment trees. This module runs the same model the straightforward way --
one object per replica, a list of the requests it serves, Python's ``heapq`` for the
users' sends and for the replicas' next events (an entry is stale once its replica has
rescheduled) -- with the same arithmetic in the same order, so that, given the same
draws, it produces the same spans bit for bit. ``benchmarks/bench_simulator.py`` times both
on one workload; ``tests/test_engine_reference.py`` checks that they agree.

Its scope is the engine's steady-state core: a fixed set of ready replicas, closed users
(think, send, wait), round-robin balancing, CFS quota and burst, contention, the CPU cap
and the wall limit. Scaling, open arrivals and least-requests stay in the engine.
Times in seconds, CPU in core-seconds.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from scalelab.simulator.models import AppProfile, think_times

DRAW_BLOCK = 4096  # draws per refill, as :class:`scalelab.simulator.cluster.SimCluster` takes them


@dataclass
class _Replica:
    """One replica: its virtual time, CFS budget and the requests it serves, each
    ``[finish threshold in virtual time, arrival s, user, timed out]``."""

    budget: float
    period_end: float
    served: list = field(default_factory=list)
    v: float = 0.0
    updated: float = 0.0
    fmin: float = math.inf
    dmin: float = math.inf
    next_event: float = math.inf
    version: int = 0  # of its entry in the replicas' event heap


class _Draws:
    """A generator's draws taken in blocks of :data:`DRAW_BLOCK`, one value at a time."""

    def __init__(self, draw) -> None:
        self._draw = draw
        self._block: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i == len(self._block):
            self._block = self._draw(DRAW_BLOCK).tolist()
            self._i = 0
        self._i += 1
        return self._block[self._i - 1]


class ReferenceCluster:
    """``replicas`` ready replicas and ``users`` closed users from t = 0; :meth:`run_to`
    advances it like :meth:`scalelab.simulator.cluster.SimCluster.run_to` and returns the
    spans completed as ``(arrival s, response s, replica, timed out)``.

    ``rng_think`` and ``rng_demand`` play the roles they play in ``SimCluster``: given
    generators in the same state, both produce the same spans.
    """

    def __init__(self, app: AppProfile, replicas: int, users: int, rng_think: np.random.Generator,
                 rng_demand: np.random.Generator, think_low_s: float = 0.0, think_high_s: float = 2.0) -> None:
        period = app.cfs_period_ms / 1000.0
        self.overhead = app.overhead_ms / 1000.0
        self.quota = app.cpu_limit * period
        self.period = period
        self.burst = app.burst_cores
        self.timeout_cpu = app.demand.timeout_s
        self.contention = app.contention
        self.contention_cap = app.contention_cap
        self.wall = app.wall_limit_ms / 1000.0 if app.wall_limit_ms is not None else math.inf
        self.replicas = [_Replica(budget=self.quota, period_end=period) for _ in range(replicas)]
        self._rr = 0
        self._seq = 0
        self._sends: list[tuple[float, int, int]] = []  # (time, sequence, user)
        self._replica_events: list[tuple[float, int, int]] = []  # (time, replica, version); stale if it moved
        starts = think_times(rng_think, users, think_low_s, think_high_s)
        for u in range(users):
            self._send_at(float(starts[u]), u)
        self._think = _Draws(lambda n: think_times(rng_think, n, think_low_s, think_high_s))
        self._demand = _Draws(lambda n: app.demand.draw(rng_demand, n))
        self.now = 0.0

    def _send_at(self, t: float, user: int) -> None:
        heapq.heappush(self._sends, (t, self._seq, user))
        self._seq += 1

    def _share(self, c: float, n: int) -> float:
        others = min(n - 1.0, self.contention_cap)
        return c / (n * (1.0 + self.contention * others))

    def _advance(self, rep: _Replica, t: float) -> None:
        dt = max(t - rep.updated, 0.0)
        n = len(rep.served)
        if n > 0 and rep.budget > 0.0:
            c = min(float(n), self.burst)
            used = c * dt
            if used > rep.budget:
                used = rep.budget
                dt_run = used / c
            else:
                dt_run = dt
            rep.v += self._share(c, n) * dt_run
            rep.budget -= used
        if t >= rep.period_end:
            k = math.floor(t / self.period) + 1.0
            rep.period_end = k * self.period
            if rep.period_end <= t:
                rep.period_end += self.period
            rep.budget = self.quota
        rep.updated = t

    def _schedule(self, r: int) -> None:
        rep = self.replicas[r]
        n = len(rep.served)
        if n == 0:
            rep.next_event = math.inf
            return
        if rep.budget <= 1e-12:
            rep.next_event = min(rep.period_end, rep.dmin)
        else:
            c = min(float(n), self.burst)
            t0 = rep.updated
            t_complete = t0 + max(rep.fmin - rep.v, 0.0) / self._share(c, n)
            t_exhaust = t0 + rep.budget / c
            if t_exhaust <= t0:
                rep.budget = 0.0
                rep.next_event = min(rep.period_end, rep.dmin)
            else:
                rep.next_event = min(rep.period_end, t_complete, t_exhaust, rep.dmin)
        rep.version += 1
        if rep.next_event < math.inf:
            heapq.heappush(self._replica_events, (rep.next_event, r, rep.version))

    def _next_replica_event(self) -> tuple[float, int]:
        events = self._replica_events
        while events and events[0][2] != self.replicas[events[0][1]].version:
            heapq.heappop(events)  # the replica rescheduled since
        return events[0][:2] if events else (math.inf, -1)

    def _complete(self, r: int, t: float, spans: list) -> None:
        rep = self.replicas[r]
        self._advance(rep, t)
        n = len(rep.served)
        share = self._share(min(float(n), self.burst), n)
        first = rep.fmin - rep.v
        if first > 1e-12 and t + first / share > t and t < rep.dmin:
            self._schedule(r)  # the budget or the period: every request stays
            return
        fmin = dmin = math.inf
        served, k = rep.served, 0
        while k < len(served):
            finish, arrive, user, timed_out = served[k]
            left = finish - rep.v
            killed = arrive + self.wall <= t
            if left <= 1e-12 or t + left / share <= t or killed:
                served[k] = served[-1]
                served.pop()
                spans.append((arrive, t - arrive + self.overhead, r, 1 if killed and left > 1e-12 else timed_out))
                self._send_at(t + self.overhead + self._think.next(), user)
            else:
                fmin = min(fmin, finish)
                dmin = min(dmin, arrive + self.wall)
                k += 1
        rep.fmin, rep.dmin = fmin, dmin
        self._schedule(r)

    def _arrive(self, t: float) -> None:
        _, _, user = heapq.heappop(self._sends)
        r = self._rr
        self._rr = (r + 1) % len(self.replicas)
        rep = self.replicas[r]
        self._advance(rep, t)
        d = self._demand.next()
        timed_out = 0
        if d > self.timeout_cpu:
            d, timed_out = self.timeout_cpu, 1
        finish = rep.v + d
        if not rep.served or finish < rep.fmin:
            rep.fmin = finish
        if not rep.served:
            rep.dmin = t + self.wall
        rep.served.append([finish, t, user, timed_out])
        self._schedule(r)

    def run_to(self, t_end: float) -> list[tuple[float, float, int, int]]:
        """Every event up to and including ``t_end``; the spans completed in it."""
        spans: list[tuple[float, float, int, int]] = []
        while True:
            t_rep, r = self._next_replica_event()
            t_send = self._sends[0][0] if self._sends else math.inf
            if t_rep <= t_send:
                if t_rep > t_end:
                    break
                heapq.heappop(self._replica_events)
                self._complete(r, t_rep, spans)
            else:
                if t_send > t_end:
                    break
                self._arrive(t_send)
        for r, rep in enumerate(self.replicas):  # every replica at the step's end, as the engine
            self._advance(rep, t_end)
            self._schedule(r)
        self.now = t_end
        return spans
