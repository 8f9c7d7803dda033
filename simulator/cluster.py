"""The cluster twin: replicas behind a balancer, closed users or open arrivals.

:class:`SimCluster` owns the event core's state and advances it one step at a time. It
emits the raw signals the live stack emits: spans (start instant, duration) and one
resource sample per pod per step, which go through :mod:`scalelab.orchestrator.context`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from scalelab.errors import UserError
from scalelab.orchestrator.context import PodSamples, Spans
from scalelab.simulator import engine as E
from scalelab.simulator.models import AppProfile, think_times
from scalelab.simulator.students import STUDENT_DRAWS, InjectorStudents

BALANCERS = {"round-robin": 0, "least-requests": 1}


@dataclass(frozen=True)
class ClusterSettings:
    """Deployment shape.

    min_replicas, max_replicas: bounds of every scale order.
    initial_replicas: replicas ready at t = 0.
    startup_seconds: from a scale-up order to the new replica being ready.
    balancer: ``round-robin`` or ``least-requests``.
    think_low_s, think_high_s: closed users' think time, uniform (Locust's ``between``).
    students: where closed users' think times and demands come from: ``simulator`` (its
    own generators, shared by all users) or ``injector`` (each user draws what the live
    injector's student of the same number draws: :mod:`scalelab.simulator.students`).
    """

    min_replicas: int = 1
    max_replicas: int = 10
    initial_replicas: int = 1
    startup_seconds: float = 5.0
    balancer: str = "round-robin"
    think_low_s: float = 0.0
    think_high_s: float = 2.0
    students: str = "simulator"

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise UserError(
                f"cluster: need 1 <= min_replicas <= max_replicas, got "
                f"{self.min_replicas}..{self.max_replicas}"
            )
        if not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise UserError(
                f"cluster.initial_replicas={self.initial_replicas} is outside "
                f"[{self.min_replicas}, {self.max_replicas}]"
            )
        if self.balancer not in BALANCERS:
            raise UserError(f"cluster.balancer={self.balancer!r} is not one of {list(BALANCERS)}")
        if self.startup_seconds < 0:
            raise UserError(f"cluster.startup_seconds must be >= 0, got {self.startup_seconds}")
        if not 0 <= self.think_low_s <= self.think_high_s:
            raise UserError("cluster: need 0 <= think_low_s <= think_high_s")
        if self.students not in STUDENT_DRAWS:
            raise UserError(f"cluster.students={self.students!r} is not one of {list(STUDENT_DRAWS)}")

    def held_at(self, replicas: int) -> ClusterSettings:
        """The same cluster started at, and able to hold, ``replicas`` (steady-state
        measurements: the oracle, calibration, validation)."""
        return replace(self, min_replicas=1, max_replicas=max(replicas, 1), initial_replicas=replicas)


@dataclass(frozen=True)
class StepSignals:
    """What one step produced: the spans completed in it and one sample per pod."""

    spans: Spans
    pods: PodSamples
    ready_replicas: int
    requests_started: int


class SimCluster:
    """A simulated deployment; time advances only through :meth:`run_to`.

    ``rng_think``, ``rng_demand`` and ``rng_arrivals`` are the generators of the three
    random models; the core itself is deterministic. With ``students``, closed users are
    the injector's students (:mod:`scalelab.simulator.students`): each draws its own
    stream, every new one takes a new user index, and a fall of the level stops students
    drawn at random.
    """

    def __init__(
        self,
        app: AppProfile,
        settings: ClusterSettings,
        rng_think: np.random.Generator,
        rng_demand: np.random.Generator,
        rng_arrivals: np.random.Generator,
        max_users: int = 64,
        students: InjectorStudents | None = None,
    ) -> None:
        self.app = app
        self.students = students
        self.settings = settings
        self._rng_think = rng_think
        self._rng_demand = rng_demand
        self._rng_arr = rng_arrivals
        self.now = 0.0
        nrep = 2 * settings.max_replicas + 4
        self.rf = np.zeros((nrep, E.N_RF))
        self.ri = np.zeros((nrep, E.N_RI), dtype=np.int64)
        self.rf[:, E.RF_NEXT] = np.inf
        self.ev, self.bal = E.tree_arrays(nrep)
        self.act = np.zeros((nrep, 64), dtype=np.int64)
        self.sf = np.zeros((0, E.N_SF))
        self.si = np.zeros((0, E.N_SI), dtype=np.int64)
        self.free_stack = np.zeros(0, dtype=np.int64)
        self.meta = np.zeros(E.N_META, dtype=np.int64)
        self.meta[E.M_BALANCER] = BALANCERS[settings.balancer]
        self.params = np.zeros(E.N_PARAMS)
        period = app.cfs_period_ms / 1000.0
        self.params[E.P_OVERHEAD] = app.overhead_ms / 1000.0
        self.params[E.P_QUOTA] = app.cpu_limit * period
        self.params[E.P_PERIOD] = period
        self.params[E.P_BURST] = app.burst_cores
        self.params[E.P_TIMEOUT_CPU] = app.demand.timeout_s
        self.params[E.P_CONTENTION] = app.contention
        self.params[E.P_CONTENTION_CAP] = app.contention_cap
        self.params[E.P_WALL] = app.wall_limit_ms / 1000.0 if app.wall_limit_ms is not None else np.inf
        self.u_gen = np.zeros(0, dtype=np.int64)
        self.u_active = np.zeros(0, dtype=np.int64)
        self.u_next = np.zeros(0, dtype=np.int64)  # the users' own streams (students only)
        width = 16 if students is not None else 0
        self.u_think = np.zeros((0, width))
        self.u_demand = np.zeros((0, width))
        self._joined = 0  # user indices taken so far (students only: never reused)
        self.ht = np.zeros(0)
        self.hs = np.zeros(0, dtype=np.int64)
        self.hu = np.zeros(0, dtype=np.int64)
        self.hg = np.zeros(0, dtype=np.int64)
        self._grow_users(max_users)
        self._grow_slots(256)
        self.think_buf = np.zeros(0)
        self.demand_buf = np.zeros(0)
        self.open_arrivals = np.zeros(0)
        self.out_f = np.zeros((4096, 2))
        self.out_i = np.zeros((4096, 2), dtype=np.int64)
        self.users = 0
        self._ready: int | None = None  # cached counts: the engine's events and orders change them
        self._desired: int | None = None
        self._demands_used = 0  # demands consumed before the last buffer refill
        self.pod_name = [""] * nrep  # per replica slot: the pod in it, its creation instant
        self.pod_start = np.zeros(nrep)
        self._pods_made = 0
        self._resource_arrays: dict[int, tuple[np.ndarray, ...]] = {}
        self.last_scrape: tuple = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        side = app.sidecar  # what a scrape adds to the app's own CPU and memory
        self._scrape_args = (app.mem_base_mib, app.mem_per_request_mib, side.idle_cores if side else 0.0,
                             side.cpu_ms_per_request / 1000.0 if side else 0.0, side.memory_mib if side else 0.0)
        self._in_flight: int | None = 0  # requests in service at the last scrape (None: changed since)
        for _ in range(settings.initial_replicas):
            self._start_replica(ready_at=0.0)

    # ------------------------------------------------------------------ capacity
    def _grow_users(self, n: int) -> None:
        old = self.u_gen.shape[0]
        if n <= old:
            return
        self.u_gen = np.concatenate([self.u_gen, np.zeros(n - old, dtype=np.int64)])
        self.u_active = np.concatenate([self.u_active, np.zeros(n - old, dtype=np.int64)])
        self.u_next = np.concatenate([self.u_next, np.zeros(n - old, dtype=np.int64)])
        width = self.u_think.shape[1]
        self.u_think = np.concatenate([self.u_think, np.zeros((n - old, width))])
        self.u_demand = np.concatenate([self.u_demand, np.zeros((n - old, width))])
        size = self.meta[E.M_HSIZE]
        # the heap holds at most one live event per user plus stale ones of retired users
        cap = 2 * n + 16
        for name, dtype in (("ht", float), ("hs", np.int64), ("hu", np.int64), ("hg", np.int64)):
            arr = np.zeros(cap, dtype=dtype)
            arr[:size] = getattr(self, name)[:size]
            setattr(self, name, arr)

    def _grow_slots(self, n: int) -> None:
        old = self.sf.shape[0]
        self.sf = np.concatenate([self.sf, np.zeros((n - old, E.N_SF))])
        self.si = np.concatenate([self.si, np.zeros((n - old, E.N_SI), dtype=np.int64)])
        top = self.meta[E.M_FREE_TOP]
        stack = np.zeros(n, dtype=np.int64)
        stack[:top] = self.free_stack[:top]
        stack[top : top + n - old] = np.arange(n - 1, old - 1, -1)
        self.meta[E.M_FREE_TOP] = top + n - old
        self.free_stack = stack

    def _compact_heap(self) -> None:
        """Drop stale events of retired users when the heap grows too large."""
        size = self.meta[E.M_HSIZE]
        u = self.hu[:size]
        live = (self.u_active[u] == 1) & (self.hg[:size] == self.u_gen[u])
        keep = np.flatnonzero(live)
        order = np.lexsort((self.hs[keep], self.ht[keep]))  # a sorted array is a heap
        idx = keep[order]
        n = idx.shape[0]
        for name in ("ht", "hs", "hu", "hg"):
            arr = getattr(self, name)
            arr[:n] = arr[idx]
        self.meta[E.M_HSIZE] = n

    # ------------------------------------------------------------------ replicas
    def _replicas_changed(self) -> None:
        """Forget the cached replica counts (an order, a replica started)."""
        self._ready = self._desired = None

    def _start_replica(self, ready_at: float) -> None:
        self._replicas_changed()
        free = np.flatnonzero(self.ri[:, E.RI_STATE] == E.FREE)
        r = int(free[0])
        self.rf[r, :] = 0.0
        self.ri[r, :] = 0
        self.rf[r, E.RF_TUPD] = self.now
        self.rf[r, E.RF_PHASE] = self.now % (self.app.cfs_period_ms / 1000.0)
        self.rf[r, E.RF_PEND] = self.now + self.app.cfs_period_ms / 1000.0
        self.rf[r, E.RF_BUDGET] = self.params[E.P_QUOTA]
        self.rf[r, E.RF_READY_AT] = ready_at
        self.rf[r, E.RF_DMIN] = np.inf
        self.pod_name[r] = f"sandbox-{self._pods_made}"
        self.pod_start[r] = self.now
        self._pods_made += 1
        self.ri[r, E.RI_STATE] = E.READY if ready_at <= self.now else E.STARTING
        self.rf[r, E.RF_NEXT] = ready_at if ready_at > self.now else np.inf

    @property
    def requests_started(self) -> int:
        """Requests sent to a replica since t = 0."""
        return self._demands_used + int(self.meta[E.M_DEMAND]) + int(self.meta[E.M_STREAMED])

    @property
    def ready_replicas(self) -> int:
        """Replicas that take traffic."""
        if self._ready is None:
            self._ready = int(E.count_state(self.ri, E.READY))
        return self._ready

    @property
    def desired_replicas(self) -> int:
        """Replicas that are starting or ready (the Deployment's ``spec.replicas``); on the
        service model only orders change it (a replica that becomes ready was starting);
        the jobs model's one-shot runners also leave it as they finish (its ``run_to``
        forgets the count)."""
        if self._desired is None:
            self._desired = int(E.count_state(self.ri, E.READY) + E.count_state(self.ri, E.STARTING))
        return self._desired

    def scale_to(self, n: int) -> None:
        """Set the replica count now: start new replicas, or drain the surplus.

        Removal order as a ReplicaSet picks: starting replicas first, then the newest.
        ``n`` must already be clamped to ``[min, max]`` (the orchestrator does it).
        """
        st = self.settings
        if not st.min_replicas <= n <= st.max_replicas:
            raise ValueError(f"scale_to({n}) is outside [{st.min_replicas}, {st.max_replicas}]")
        current = self.desired_replicas
        self._replicas_changed()
        for _ in range(n - current):
            self._start_replica(ready_at=self.now + st.startup_seconds)
        if n < current:
            s = self.ri[:, E.RI_STATE]
            starting = np.flatnonzero(s == E.STARTING)[::-1]
            ready = np.flatnonzero(s == E.READY)
            ready = ready[np.argsort(-self.rf[ready, E.RF_READY_AT], kind="stable")]
            victims = np.concatenate([starting, ready])[: current - n]
            for r in victims:
                if self.ri[r, E.RI_STATE] == E.STARTING or self.ri[r, E.RI_N] == 0:
                    self.ri[r, E.RI_STATE] = E.FREE
                    self.rf[r, E.RF_NEXT] = np.inf
                else:
                    self.ri[r, E.RI_STATE] = E.DRAINING

    # ------------------------------------------------------------------ load
    def set_users(self, n: int) -> None:
        """Closed-loop population now: new users send after a think time; removed users
        stop (their in-flight requests still finish on the server)."""
        n = int(n)
        if n == self.users:
            return
        if n < 0:
            raise UserError(f"users must be >= 0, got {n}")
        if self.students is not None:
            self._set_students(n)
            return
        if n > self.u_gen.shape[0]:
            self._grow_users(max(n, 2 * self.u_gen.shape[0]))
        if n > self.users:
            new = np.arange(self.users, n)
            starts = self.now + think_times(
                self._rng_think, new.shape[0], self.settings.think_low_s, self.settings.think_high_s
            )
            for u, t0 in zip(new, starts, strict=True):
                self._join(u, t0)
        elif n < self.users:
            self.u_active[n : self.users] = 0
            if self.meta[E.M_HSIZE] > self.ht.shape[0] // 2:
                self._compact_heap()
        self.users = n

    def _join(self, u: int, t0: float) -> None:
        """User ``u`` starts working: a new generation of it sends first at ``t0`` (s)."""
        self.u_active[u] = 1
        self.u_gen[u] += 1
        if self.meta[E.M_HSIZE] >= self.ht.shape[0]:
            self._compact_heap()
        E.heap_push(self.ht, self.hs, self.hu, self.hg, self.meta, t0, u, self.u_gen[u])

    def _set_students(self, n: int) -> None:
        """:meth:`set_users` for injector students: new ones take fresh user indices and
        their own streams; leaving ones are drawn among those working."""
        st = self.students
        if n > self.users:
            need = self._joined + n - self.users
            if need > self.u_gen.shape[0]:
                self._grow_users(max(need, 2 * self.u_gen.shape[0]))
            width = self.u_think.shape[1]
            for u in range(self._joined, need):
                t0 = self.now + st.join(u)
                self.u_demand[u], self.u_think[u] = st.rows(u, width)
                self.u_next[u] = 0
                self._join(u, t0)
            self._joined = need
        else:
            for u in st.leaving(np.flatnonzero(self.u_active[: self._joined] == 1), self.users - n):
                self.u_active[u] = 0
                st.leave(int(u))
            if self.meta[E.M_HSIZE] > self.ht.shape[0] // 2:
                self._compact_heap()
        self.users = n

    def _widen_streams(self) -> None:
        """The engine's ``NEED_STREAM``: every working student's stream twice as long."""
        width = self.u_think.shape[1]
        grow = max(width, 16)
        users = self.u_gen.shape[0]
        self.u_think = np.concatenate([self.u_think, np.zeros((users, grow))], axis=1)
        self.u_demand = np.concatenate([self.u_demand, np.zeros((users, grow))], axis=1)
        for u in self.students.active_users:
            self.u_demand[u, width:], self.u_think[u, width:] = self.students.rows(u, grow)

    def add_open_arrivals(self, rate_rps: float, t_end: float) -> None:
        """Poisson arrivals at ``rate_rps`` from now to ``t_end``."""
        if rate_rps < 0:
            raise UserError(f"rate_rps must be >= 0, got {rate_rps}")
        span = t_end - self.now
        count = self._rng_arr.poisson(rate_rps * span) if rate_rps > 0 else 0
        times = np.sort(self.now + self._rng_arr.uniform(0.0, span, count))
        pending = self.open_arrivals[self.meta[E.M_OPEN] :]
        self.open_arrivals = np.concatenate([pending, times])
        self.meta[E.M_OPEN] = 0

    # ------------------------------------------------------------------ time
    def _refill(self, which: str) -> None:
        if which == "think":
            rest = self.think_buf[self.meta[E.M_THINK] :]
            more = think_times(
                self._rng_think, 4096, self.settings.think_low_s, self.settings.think_high_s
            )
            self.think_buf = np.concatenate([rest, more])
            self.meta[E.M_THINK] = 0
        else:
            self._demands_used += int(self.meta[E.M_DEMAND])
            rest = self.demand_buf[self.meta[E.M_DEMAND] :]
            more = self.app.demand.draw(self._rng_demand, 4096)
            self.demand_buf = np.concatenate([rest, more])
            self.meta[E.M_DEMAND] = 0

    def _take_output(self, chunks_f: list, chunks_i: list) -> None:
        """The engine's ``OUT_FULL``: keep the rows it wrote and start its buffers again
        (twice as long when a single event filled them)."""
        o = self.meta[E.M_OUT]
        chunks_f.append(self.out_f[:o].copy())
        chunks_i.append(self.out_i[:o].copy())
        self.meta[E.M_OUT] = 0
        if o == 0:
            self.out_f = np.zeros((2 * self.out_f.shape[0], self.out_f.shape[1]))
            self.out_i = np.zeros((2 * self.out_i.shape[0], self.out_i.shape[1]), dtype=np.int64)

    def _output(self, chunks_f: list, chunks_i: list) -> tuple[np.ndarray, np.ndarray]:
        """The step's rows (float and int columns) once the engine is done, and the open
        arrivals it consumed dropped."""
        o = self.meta[E.M_OUT]
        chunks_f.append(self.out_f[:o])
        chunks_i.append(self.out_i[:o])
        out_f = np.concatenate(chunks_f) if len(chunks_f) > 1 else chunks_f[0].copy()
        out_i = np.concatenate(chunks_i) if len(chunks_i) > 1 else chunks_i[0].copy()
        self.meta[E.M_OUT] = 0
        if self.meta[E.M_OPEN] > 0:
            self.open_arrivals = self.open_arrivals[self.meta[E.M_OPEN] :]
            self.meta[E.M_OPEN] = 0
        return out_f, out_i

    def run_to(self, t_end: float) -> StepSignals:
        """Advance to ``t_end`` and return the spans completed and the pod samples."""
        if t_end < self.now:
            raise ValueError(f"cannot run backwards: now={self.now}, t_end={t_end}")
        chunks_f, chunks_i = [], []
        self.meta[E.M_OUT] = 0
        self._ready = self._in_flight = None  # replicas become ready, drained ones leave, requests move
        started_before = self.requests_started
        while True:
            code, t = E.run_until(
                t_end, self.rf, self.ri, self.act, self.sf, self.si, self.free_stack,
                self.ht, self.hs, self.hu, self.hg, self.u_gen, self.u_active,
                self.u_next, self.u_think, self.u_demand,
                self.think_buf, self.demand_buf, self.open_arrivals,
                self.out_f, self.out_i, self.meta, self.params, self.ev, self.bal, self.now,
            )  # fmt: skip
            self.now = t
            if code == E.DONE:
                break
            if code == E.OUT_FULL:
                self._take_output(chunks_f, chunks_i)
            elif code == E.NEED_THINK:
                self._refill("think")
            elif code == E.NEED_DEMAND:
                self._refill("demand")
            elif code == E.NEED_STREAM:
                self._widen_streams()
            elif code == E.NEED_SLOTS:
                self._grow_slots(2 * self.sf.shape[0])
                if np.any(self.ri[:, E.RI_N] >= self.act.shape[1]):
                    grown = np.zeros((self.act.shape[0], 2 * self.act.shape[1]), dtype=np.int64)
                    grown[:, : self.act.shape[1]] = self.act
                    self.act = grown
            else:  # NO_REPLICA
                raise RuntimeError("no ready replica to take a request (min_replicas >= 1?)")
        started = self.requests_started - started_before
        out_f, out_i = self._output(chunks_f, chunks_i)
        spans = Spans(
            start_s=out_f[:, 0],
            duration_ms=out_f[:, 1] * 1000.0,
            replica=out_i[:, 0],
            error=out_i[:, 1].astype(bool),
        )
        return StepSignals(spans=spans, pods=self._sample_pods(), ready_replicas=self.ready_replicas,
                           requests_started=started)

    def _sample_pods(self) -> PodSamples:
        """One scrape: CPU rate and working set of every live pod over the time it
        lived since the last scrape. Draining pods are left out of the means (the
        metrics API and the controllers skip terminating pods) but kept in ``pods``."""
        live, state, cpu, mem, serving, self._in_flight = E.sample_pods(self.rf, self.ri, *self._scrape_args)
        self.last_scrape = (live, state, cpu, mem)
        if serving < live.shape[0]:  # draining pods: out of the means
            keep = state != E.DRAINING
            cpu, mem = cpu[keep], mem[keep]
        req, lim, mreq, mlim = self._resources(serving)
        return PodSamples(cpu_cores=cpu, memory_mib=mem, cpu_request=req, cpu_limit=lim,
                          memory_request_mib=mreq, memory_limit_mib=mlim)

    def _resources(self, n: int) -> tuple[np.ndarray, ...]:
        """The requests and limits of ``n`` pods (read-only arrays, made once per count)."""
        cached = self._resource_arrays.get(n)
        if cached is None:
            a = self.app
            cached = tuple(np.full(n, v) for v in (a.pod_cpu_request, a.pod_cpu_limit, a.pod_memory_request_mib,
                                                   a.pod_memory_limit_mib))
            for arr in cached:
                arr.flags.writeable = False
            self._resource_arrays[n] = cached
        return cached

    def pod_view(self) -> list[tuple[str, str, float, float | None, float, float]]:
        """The pods of the last scrape: (name, phase, created at s, ready at s or None,
        CPU cores, working set MiB)."""
        live, state, cpu, mem = self.last_scrape
        phases = {E.STARTING: "starting", E.READY: "ready", E.DRAINING: "draining"}
        out = []
        for k, r in enumerate(live):
            ready_at = float(self.rf[r, E.RF_READY_AT])
            out.append((self.pod_name[r], phases[int(state[k])], float(self.pod_start[r]),
                        ready_at if state[k] != E.STARTING else None, float(cpu[k]), float(mem[k])))
        return out

    @property
    def in_flight(self) -> int:
        """Requests being served now."""
        if self._in_flight is None:
            self._in_flight = int(self.ri[self.ri[:, E.RI_STATE] != E.FREE, E.RI_N].sum())
        return self._in_flight

    def in_flight_ages_ms(self) -> np.ndarray:
        """Ages (now minus arrival) of the requests being served now, ms."""
        busy = np.flatnonzero((self.ri[:, E.RI_STATE] != E.FREE) & (self.ri[:, E.RI_N] > 0))
        if busy.shape[0] == 0:
            return np.zeros(0)
        slots = np.concatenate([self.act[r, : self.ri[r, E.RI_N]] for r in busy])
        return (self.now - self.sf[slots, E.SF_ARRIVE]) * 1000.0

    def ready_by(self) -> float:
        """When every replica ordered so far is ready, s (now if all are)."""
        starting = self.ri[:, E.RI_STATE] == E.STARTING
        return float(self.rf[starting, E.RF_READY_AT].max()) if starting.any() else self.now
