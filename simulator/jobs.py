"""The jobs model ("scale out by runners"): submissions are jobs on a topic that runners pull.

A submission is a **job** produced to a topic of ``P`` partitions; its partition is drawn
at random (uniform, from a seeded generator), as Kafka's producer spreads records that
have no key. **Runners** are the scaled replicas. They form one consumer group: the
partitions are assigned to the ready runners (Kafka's ``range`` or ``round-robin``
assignor, members in the order they were created); a runner beyond ``P`` gets none and
idles. Each runner holds at most ``max_concurrent_jobs`` jobs, taken FIFO from its
partitions (the oldest submitted first), and runs them on **the service's CPU model**:
the same replica columns and the same functions of :mod:`scalelab.simulator.engine`
(``advance_replica``, ``schedule_replica``: CFS quota and period, processor sharing among
its jobs, contention, the wall limit counted from the job's start), and each job's CPU
demand drawn as the service draws a request's (the app profile's demand model, through
:meth:`SimCluster._refill`). Closed users and open arrivals are the service's too
(:class:`~scalelab.simulator.cluster.SimCluster`'s heap, think times and arrival instants).

The group:

* a runner starts ``startup_seconds`` after the order; when it becomes ready it joins the
  group. A runner removed on scale-down takes no new job and finishes the jobs it holds,
  keeping its partitions meanwhile (their waiting jobs wait: the runner has paused them),
  then leaves the group and exits. Either change (the join, the leave) is a
  **rebalance**, Kafka's eager protocol as the runners (:mod:`scalelab.sandbox.job_runner`)
  run it: every partition is revoked and no runner of the group takes a new job until
  the join window closes, ``rebalance_seconds`` later (a change meanwhile extends it);
  then the partitions are assigned anew to the ready runners. A member rejoins only once
  it has finished the jobs it held (the runners' revoke callback waits for them; a
  draining runner rejoins only by leaving): one that misses the window is waited for, and
  another window follows from its return. (librdkafka's mock broker, the live stack's,
  holds a join window of ``session.timeout.ms`` - 1 s, 5 s for the runners; a real
  broker closes it once every member is back, which a ``rebalance_seconds`` of the sync's
  round trips approximates.) A partition that moves keeps its
  position: its new owner takes the next job not yet taken (no job is delivered twice).
* ``assignor: shared`` is a share group (KIP-932; an SQS-like queue such as
  PrairieLearn's grader queue): no partition is owned, every ready runner with a free
  slot takes the oldest waiting job of any partition, the one holding the fewest jobs
  first; no pause (an assignment change does not stop the others' deliveries).
* ``runner_mode: job`` (KEDA's ScaledJob): each runner takes exactly one job (the
  oldest waiting one of any partition) as soon as it is ready, runs it, commits and
  exits; :meth:`JobsCluster.scale_to` only adds runners, never removes one.

**Offsets.** Per partition: ``latest`` (jobs produced), ``taken`` (the group's position:
jobs handed to a runner), ``committed`` (the first offset not yet finished: a consumer
that commits in order commits past a job only when every job before it has finished
too). Invariants, per partition: ``0 <= committed <= taken <= latest``; waiting jobs
are the offsets ``[taken, latest)``; lag ``= latest - committed`` = waiting + in
progress + finished but not yet committable, so ``waiting + in_progress <= lag``.

A job's **turnaround** is its finish minus its submission plus the app's
``overhead_ms`` (the result's way back, as a request's response carries it); the user
thinks from then on, as in the service model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from scalelab.errors import UserError
from scalelab.orchestrator.backend import INVALID_OFFSET, PartitionOffsets
from scalelab.simulator import engine as E
from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import AppProfile
from scalelab.simulator.students import InjectorStudents

RUNNER_MODES = ("deployment", "job")
ASSIGNORS = {"range": 0, "round-robin": 1, "shared": 2}
SHARED = 2

# job float columns
JF_FINISH = 0  # virtual-time finish threshold on its runner
JF_SUBMIT = 1  # submitted, s
JF_START = 2  # taken by a runner, s
JF_DEMAND = 3  # CPU demand, core-seconds (capped at the timeout)
N_JF = 4
# job int columns
JI_USER = 0  # user id, -1 for an open arrival
JI_TIMEOUT = 1
JI_PART = 2
JI_OFFSET = 3
N_JI = 4

# jobs meta cells
J_FREE_TOP = 0  # free job slots on the free stack
J_PBUF = 1  # next index in the partition buffer
J_PENDING = 2  # 1 while a rebalance is pending (the group takes no new job)
J_ASSIGNOR = 3
J_ONESHOT = 4  # runner_mode job
J_MAXC = 5  # max concurrent jobs per runner
J_SUBMITTED = 6  # jobs submitted since the last reset
J_SEQ = 7  # runners created (member ids)
J_REVOKING = 8  # 1 while a rebalance whose join window closed waits for a member's jobs
N_J = 9
# group floats
G_PAUSE_UNTIL = 0
G_REBALANCE = 1
G_FETCH_WAIT = 2  # the runners' fetch cycle, s (0: a job is seen as it is produced)
G_FETCH_NEXT = 3  # the next cycle's end at which produced jobs become visible (inf: none waits for one)
N_G = 4

# return codes beyond the service engine's
NEED_RING = E.NEED_STREAM + 1
NEED_PART = E.NEED_STREAM + 2


@dataclass(frozen=True)
class JobsSettings:
    """The topic and the runners.

    partitions: partitions of the jobs topic. max_concurrent_jobs: jobs a runner holds
    at once (PrairieLearn's grader: 5). runner_mode: ``deployment`` (long-lived runners,
    one consumer group) or ``job`` (one job per runner, KEDA's ScaledJob).
    rebalance_seconds: the join window, s: the group's pause when a runner joins or
    leaves, if every member is back by then (3 s: Kafka's ``heartbeat.interval.ms``
    default, the time a member needs to hear of a rebalance; on librdkafka's mock broker,
    whose window is ``session.timeout.ms`` - 1 s, the runners measured 5.3-6.4 s:
    ``scripts/measure_rebalance.py``). assignor: ``range`` (Kafka's default),
    ``round-robin``, or ``shared`` (a share group: any runner takes any partition's
    oldest job). fetch_wait_seconds: the runners' fetch cycle, s: a job produced is seen
    at the end of the cycle it was produced in (cycles of that length from t = 0), as
    librdkafka's mock broker answers a fetch only once ``fetch.wait.max.ms`` (500 ms by
    default) has passed; 0 (the default) for a real broker, which answers as soon as a
    job comes. The jobs waiting for a cycle's end count in the lag.
    """

    partitions: int = 12
    max_concurrent_jobs: int = 5
    runner_mode: str = "deployment"
    rebalance_seconds: float = 3.0
    assignor: str = "range"
    fetch_wait_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise UserError(f"jobs.partitions={self.partitions!r} must be >= 1")
        if self.max_concurrent_jobs < 1:
            raise UserError(f"jobs.max_concurrent_jobs={self.max_concurrent_jobs!r} must be >= 1")
        if self.runner_mode not in RUNNER_MODES:
            raise UserError(f"jobs.runner_mode={self.runner_mode!r} is not one of {list(RUNNER_MODES)}")
        if not self.rebalance_seconds >= 0:
            raise UserError(f"jobs.rebalance_seconds={self.rebalance_seconds!r} must be >= 0")
        if self.assignor not in ASSIGNORS:
            raise UserError(f"jobs.assignor={self.assignor!r} is not one of {list(ASSIGNORS)}")
        if not 0 <= self.fetch_wait_seconds <= 60:
            raise UserError(f"jobs.fetch_wait_seconds={self.fetch_wait_seconds!r} must be within [0, 60]")


# ---------------------------------------------------------------------- the event core
@njit(cache=True)
def assign(ri, rseq, owner, jm):
    """The consumer group's assignment of the partitions to the ready runners, members
    ordered by creation (``rseq``): range (contiguous blocks, the first ``P % n``
    members one more) or round robin; -1 where no runner is ready. Shared: no owner."""
    nparts = owner.shape[0]
    nrep = ri.shape[0]
    members = np.empty(nrep, dtype=np.int64)
    n = 0
    for r in range(nrep):
        if ri[r, E.RI_STATE] == E.READY:
            members[n] = r
            n += 1
    members = members[:n]
    if n > 1:
        members = members[np.argsort(rseq[members], kind="mergesort")]
    for p in range(nparts):
        owner[p] = -1
    if n == 0 or jm[J_ASSIGNOR] == SHARED:
        return
    if jm[J_ASSIGNOR] == 0:
        base = nparts // n
        extra = nparts % n
        p = 0
        for i in range(n):
            take = base + (1 if i < extra else 0)
            for _ in range(take):
                owner[p] = members[i]
                p += 1
    else:
        for p in range(nparts):
            owner[p] = members[p % n]


@E.uncounted
def group_changed(t, ri, jm, gf, owner):
    """A member joined or left at ``t`` (s): the eager protocol revokes every partition;
    the group takes no new job until the join window closes, ``rebalance_seconds`` on
    (a change under way is extended), and its members are back (:func:`members_back`)."""
    for p in range(owner.shape[0]):
        owner[p] = -1
    pause = t + gf[G_REBALANCE]
    if jm[J_PENDING] == 0 or pause > gf[G_PAUSE_UNTIL]:
        gf[G_PAUSE_UNTIL] = pause
    jm[J_PENDING] = 1


@E.uncounted
def members_back(ri):
    """Whether every member (a ready or draining runner) holds no job: the runners' revoke
    callback finishes the jobs a member holds before it rejoins, and a draining runner
    rejoins only by leaving."""
    for r in range(ri.shape[0]):
        state = ri[r, E.RI_STATE]
        if (state == E.READY or state == E.DRAINING) and ri[r, E.RI_N] > 0:
            return False
    return True


@E.uncounted
def cycle_end(t, w):
    """The end of the fetch cycle of ``w`` s that ``t`` (s) falls in: ``ceil(t / w) w``,
    one expression for the event's time and for the jobs it shows (``w > 0``)."""
    return np.ceil(t / w) * w


@E.uncounted
def fetch_due(t, gf):
    """A job produced at ``t`` (s): the end of its fetch cycle becomes due (the earliest
    of those pending)."""
    w = gf[G_FETCH_WAIT]
    if w > 0.0:
        due = cycle_end(t, w)
        if due > t and (not gf[G_FETCH_NEXT] > t or due < gf[G_FETCH_NEXT]):
            gf[G_FETCH_NEXT] = due


@E.uncounted
def _oldest_partition(r, owner, pq, latest, taken, jf, any_partition, t, w):
    """The partition whose next waiting job is the oldest among ``r``'s partitions (all
    partitions when ``any_partition``) of those the runners' fetches have brought by
    ``t`` (s; with a fetch cycle of ``w`` s, a job is seen at its cycle's end); -1 if none
    waits."""
    cap = pq.shape[1]
    best = -1
    best_t = np.inf
    for p in range(owner.shape[0]):
        if taken[p] < latest[p] and (any_partition or owner[p] == r):
            s = pq[p, taken[p] % cap]
            sub = jf[s, JF_SUBMIT]
            if sub < best_t and (w <= 0.0 or cycle_end(sub, w) <= t):
                best_t = sub
                best = p
    return best


@E.uncounted
def _start(r, p, t, rf, ri, act, jf, ji, pq, taken, params, ev, size):
    """Runner ``r`` takes the next job of partition ``p`` at ``t``."""
    cap = pq.shape[1]
    slot = pq[p, taken[p] % cap]
    taken[p] += 1
    E.advance_replica(rf, ri, r, t, params)
    n = ri[r, E.RI_N]
    finish = rf[r, E.RF_V] + jf[slot, JF_DEMAND]
    jf[slot, JF_FINISH] = finish
    jf[slot, JF_START] = t
    if n == 0 or finish < rf[r, E.RF_FMIN]:
        rf[r, E.RF_FMIN] = finish
    if n == 0:  # jobs start in time order on a runner: the first one present has the earliest deadline
        rf[r, E.RF_DMIN] = t + params[E.P_WALL]
    act[r, n] = slot
    ri[r, E.RI_N] = n + 1
    E.schedule_replica(rf, ri, act, jf, r, params)
    E.tree_set(ev, size, r, E.event_key(rf, ri, r))


@E.uncounted
def _fill(r, t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size):
    """Runner ``r`` (a member of the consumer group) takes jobs while it has a free slot
    and its partitions hold any."""
    if ri[r, E.RI_STATE] != E.READY or jm[J_PENDING] != 0:
        return
    while ri[r, E.RI_N] < jm[J_MAXC]:
        p = _oldest_partition(r, owner, pq, latest, taken, jf, False, t, gf[G_FETCH_WAIT])
        if p < 0:
            return
        _start(r, p, t, rf, ri, act, jf, ji, pq, taken, params, ev, size)


@E.uncounted
def _fill_shared(t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size):
    """Shared queue (share group, one-shot runners): while a job waits and a ready runner
    has a free slot, the runner holding the fewest jobs (the lowest first) takes the
    oldest waiting job."""
    maxc = 1 if jm[J_ONESHOT] != 0 else jm[J_MAXC]
    nrep = ri.shape[0]
    while True:
        best = -1
        for r in range(nrep):
            if ri[r, E.RI_STATE] == E.READY and ri[r, E.RI_N] < maxc:
                if best < 0 or ri[r, E.RI_N] < ri[best, E.RI_N]:
                    best = r
        if best < 0:
            return
        p = _oldest_partition(best, owner, pq, latest, taken, jf, True, t, gf[G_FETCH_WAIT])
        if p < 0:
            return
        _start(best, p, t, rf, ri, act, jf, ji, pq, taken, params, ev, size)


@njit(cache=True)  # allocates (the runners' order): numba's counting stays on
def _dispatch_all(t, rf, ri, rseq, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size):
    if jm[J_PENDING] != 0:
        return
    if jm[J_ASSIGNOR] == SHARED or jm[J_ONESHOT] != 0:
        _fill_shared(t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
        return
    nrep = ri.shape[0]
    order = np.argsort(rseq, kind="mergesort")
    for k in range(nrep):
        _fill(order[k], t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)


@E.uncounted
def run_jobs(t_end, rf, ri, rseq, act, jf, ji, jfree, jm, gf, owner, pq, pdone, latest, taken, committed, pbuf,
             ht, hs, hu, hg, u_gen, u_active, u_next, u_think, u_demand, think_buf, demand_buf, open_arrivals, out_f,
             out_i, meta, params, ev, now):
    """Process the jobs model's events up to and including ``t_end``; resumable as
    :func:`scalelab.simulator.engine.run_until` (same return codes, plus NEED_RING and
    NEED_PART); users draw from their own streams as there (``u_next``, ``u_think``,
    ``u_demand``). At equal times: the group's rebalance, then a fetch cycle's end, then
    runner events (the lowest runner first), then submissions. ``ev`` is the event tree's room
    (:func:`scalelab.simulator.engine.tree_arrays`), set afresh at every call."""
    nrep = ri.shape[0]
    cap = pq.shape[1]
    overhead = params[E.P_OVERHEAD]
    tcap = params[E.P_TIMEOUT_CPU]
    wall = params[E.P_WALL]
    oneshot = jm[J_ONESHOT] != 0
    shared = jm[J_ASSIGNOR] == SHARED or oneshot
    t = now
    size = E.fill_event_tree(rf, ri, ev)
    while True:
        trep = ev[1]
        rbest = E.tree_first(ev, size, 0, trep) if trep < E.INF else -1
        tuser = ht[0] if meta[E.M_HSIZE] > 0 else E.INF
        topen = open_arrivals[meta[E.M_OPEN]] if meta[E.M_OPEN] < open_arrivals.shape[0] else E.INF
        tarr = tuser if tuser < topen else topen
        tg = gf[G_PAUSE_UNTIL] if jm[J_PENDING] != 0 and jm[J_REVOKING] == 0 else E.INF
        tf = gf[G_FETCH_NEXT]
        if tg <= trep and tg <= tarr and tg <= tf:
            if tg > t_end:
                break
            # ---- the join window closes
            if tg > t:
                t = tg
            if not members_back(ri):  # a member missed it: another window once it is back
                jm[J_REVOKING] = 1
                meta[E.M_EVENTS] += 1
                continue
            # ---- the rebalance: new assignment, then the runners take what waits
            jm[J_PENDING] = 0
            assign(ri, rseq, owner, jm)
            _dispatch_all(t, rf, ri, rseq, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
            meta[E.M_EVENTS] += 1
            continue
        if tf <= trep and tf <= tarr:
            if tf > t_end:
                break
            # ---- a fetch cycle ends: the runners see what was produced during it
            if tf > t:
                t = tf
            gf[G_FETCH_NEXT] = E.INF
            _dispatch_all(t, rf, ri, rseq, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
            meta[E.M_EVENTS] += 1
            continue
        if trep <= tarr:
            if trep > t_end:
                break
            r = rbest
            t = trep
            if ri[r, E.RI_STATE] == E.STARTING:  # ---- a runner becomes ready and joins
                E.advance_replica(rf, ri, r, t, params)
                ri[r, E.RI_STATE] = E.READY
                E.schedule_replica(rf, ri, act, jf, r, params)
                E.tree_set(ev, size, r, E.event_key(rf, ri, r))
                if shared:
                    _fill_shared(t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
                else:
                    group_changed(t, ri, jm, gf, owner)
                meta[E.M_EVENTS] += 1
                continue
            n = ri[r, E.RI_N]
            if meta[E.M_OUT] + n > out_f.shape[0]:
                return E.OUT_FULL, t
            if not E.think_room(n, u_demand, think_buf, meta):
                return E.NEED_THINK, t
            E.advance_replica(rf, ri, r, t, params)
            v = rf[r, E.RF_V]
            share = E._share(min(float(n), params[E.P_BURST]), n, params) if n > 0 else 1.0
            k = 0
            fmin = E.INF
            dmin = E.INF
            first = rf[r, E.RF_FMIN] - v
            if n == 0 or (first > 1e-12 and t + first / share > t and t < rf[r, E.RF_DMIN]):
                k = n  # the budget or the period: the jobs all stay
                fmin = rf[r, E.RF_FMIN]
                dmin = rf[r, E.RF_DMIN]
            finished = 0
            while k < ri[r, E.RI_N]:
                slot = act[r, k]
                left = jf[slot, JF_FINISH] - v
                killed = jf[slot, JF_START] + wall <= t
                if left <= 1e-12 or t + left / share <= t or killed:
                    nn = ri[r, E.RI_N] - 1
                    act[r, k] = act[r, nn]
                    ri[r, E.RI_N] = nn
                    ri[r, E.RI_SERVED] += 1
                    finished += 1
                    o = meta[E.M_OUT]
                    sub = jf[slot, JF_SUBMIT]
                    out_f[o, 0] = sub
                    out_f[o, 1] = t - sub + overhead
                    out_f[o, 2] = jf[slot, JF_START] - sub
                    out_i[o, 0] = r
                    out_i[o, 1] = 1 if killed and left > 1e-12 else ji[slot, JI_TIMEOUT]
                    meta[E.M_OUT] = o + 1
                    u = ji[slot, JI_USER]
                    if u >= 0 and u_active[u] == 1:
                        th = E.think_after(u, u_next, u_think, u_demand, think_buf, meta)
                        E.heap_push(ht, hs, hu, hg, meta, t + overhead + th, u, u_gen[u])
                    # commit: the first offset of the partition not yet finished
                    p = ji[slot, JI_PART]
                    pdone[p, ji[slot, JI_OFFSET] % cap] = 1
                    while committed[p] < taken[p] and pdone[p, committed[p] % cap] == 1:
                        pdone[p, committed[p] % cap] = 0
                        committed[p] += 1
                    jfree[jm[J_FREE_TOP]] = slot
                    jm[J_FREE_TOP] += 1
                else:
                    if jf[slot, JF_FINISH] < fmin:
                        fmin = jf[slot, JF_FINISH]
                    if jf[slot, JF_START] + wall < dmin:
                        dmin = jf[slot, JF_START] + wall
                    k += 1
            rf[r, E.RF_FMIN] = fmin
            rf[r, E.RF_DMIN] = dmin
            state = ri[r, E.RI_STATE]
            if ri[r, E.RI_N] == 0 and (state == E.DRAINING or (oneshot and finished > 0)):
                ri[r, E.RI_STATE] = E.FREE  # drained, or a one-shot runner done: it exits
                if state == E.DRAINING and not shared:
                    group_changed(t, ri, jm, gf, owner)  # it leaves the group
            elif finished > 0 and state == E.READY and not oneshot:
                if shared:
                    _fill_shared(t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
                else:
                    _fill(r, t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
            if finished > 0 and jm[J_REVOKING] != 0 and members_back(ri):
                jm[J_REVOKING] = 0  # the last member is back: another join window
                gf[G_PAUSE_UNTIL] = t + gf[G_REBALANCE]
            E.schedule_replica(rf, ri, act, jf, r, params)
            E.tree_set(ev, size, r, E.event_key(rf, ri, r))
            meta[E.M_EVENTS] += 1
            continue
        if tarr > t_end:
            break
        # ---- a submission: a closed user's or an open arrival
        from_user = tuser <= topen
        if from_user:
            u = hu[0]
            if hg[0] != u_gen[u] or u_active[u] == 0:  # stale event of a retired user
                E.heap_pop(ht, hs, hu, hg, meta)
                continue
        missing = E.demand_missing(hu[0] if from_user else -1, u_next, u_demand, demand_buf, meta)
        if missing != E.DONE:
            return missing, t
        if jm[J_PBUF] >= pbuf.shape[0]:
            return NEED_PART, t
        if jm[J_FREE_TOP] == 0:
            return E.NEED_SLOTS, t
        p = pbuf[jm[J_PBUF]]
        if latest[p] - committed[p] >= cap:
            return NEED_RING, t
        t = tarr
        if from_user:
            u = hu[0]
            E.heap_pop(ht, hs, hu, hg, meta)
        else:
            u = -1
            meta[E.M_OPEN] += 1
        jm[J_PBUF] += 1
        d = E.take_demand(u, u_next, u_demand, demand_buf, meta)
        timeout = 0
        if d > tcap:
            d = tcap
            timeout = 1
        jm[J_FREE_TOP] -= 1
        slot = jfree[jm[J_FREE_TOP]]
        jf[slot, JF_SUBMIT] = t
        jf[slot, JF_START] = E.INF
        jf[slot, JF_DEMAND] = d
        ji[slot, JI_USER] = u
        ji[slot, JI_TIMEOUT] = timeout
        ji[slot, JI_PART] = p
        ji[slot, JI_OFFSET] = latest[p]
        pq[p, latest[p] % cap] = slot
        pdone[p, latest[p] % cap] = 0
        latest[p] += 1
        jm[J_SUBMITTED] += 1
        fetch_due(t, gf)
        if jm[J_PENDING] == 0:
            if shared:
                _fill_shared(t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
            else:
                r = owner[p]
                if r >= 0:
                    _fill(r, t, rf, ri, act, jf, ji, jm, gf, owner, pq, latest, taken, params, ev, size)
        meta[E.M_EVENTS] += 1
    for r in range(nrep):
        if ri[r, E.RI_STATE] != E.FREE:
            E.advance_replica(rf, ri, r, t_end, params)
            E.schedule_replica(rf, ri, act, jf, r, params)
    return E.DONE, t_end


@E.uncounted
def queue_state(ri, jf, pq, latest, taken, now):
    """``(waiting, in_progress, runners, runners_busy, oldest_wait_s)`` in one pass."""
    cap = pq.shape[1]
    waiting = 0
    oldest = np.inf
    for p in range(latest.shape[0]):
        if latest[p] > taken[p]:
            waiting += latest[p] - taken[p]
            sub = jf[pq[p, taken[p] % cap], JF_SUBMIT]
            if sub < oldest:
                oldest = sub
    in_progress = 0
    runners = 0
    busy = 0
    for r in range(ri.shape[0]):
        if ri[r, E.RI_STATE] != E.FREE:
            runners += 1
            in_progress += ri[r, E.RI_N]
            if ri[r, E.RI_N] > 0:
                busy += 1
    return waiting, in_progress, runners, busy, (now - oldest) if waiting > 0 else 0.0


# ---------------------------------------------------------------------- the cluster
@dataclass(frozen=True)
class JobsStepSignals:
    """What one step produced: the jobs finished in it (submit instant s, turnaround s,
    wait in queue s, runner, error), the jobs submitted, and one sample per runner."""

    submit_s: np.ndarray
    turnaround_s: np.ndarray
    wait_s: np.ndarray
    runner: np.ndarray
    error: np.ndarray
    submitted: int
    pods: object  # PodSamples


class JobsCluster(SimCluster):
    """The jobs model's state, advanced one step at a time through :meth:`run_to`.

    It is a :class:`SimCluster` for everything the two models share -- the replica
    (runner) columns and CPU model, closed users and their heap, open arrivals, think
    time and demand buffers drawn from the same generators, pod scrapes -- plus the
    topic (per-partition rings of job slots and offsets) and the group.
    ``rng_partition`` draws each job's partition.
    """

    def __init__(self, app: AppProfile, settings: ClusterSettings, jobs: JobsSettings,
                 rng_think: np.random.Generator, rng_demand: np.random.Generator,
                 rng_arrivals: np.random.Generator, rng_partition: np.random.Generator, max_users: int = 64,
                 students: InjectorStudents | None = None) -> None:
        self.jobs = jobs
        nrep = 2 * settings.max_replicas + 4
        self.rseq = np.zeros(nrep, dtype=np.int64)
        self.jm = np.zeros(N_J, dtype=np.int64)
        self.jm[J_ASSIGNOR] = ASSIGNORS[jobs.assignor]
        self.jm[J_ONESHOT] = 1 if jobs.runner_mode == "job" else 0
        self.jm[J_MAXC] = jobs.max_concurrent_jobs
        self.gf = np.zeros(N_G)
        self.gf[G_REBALANCE] = jobs.rebalance_seconds
        self.gf[G_FETCH_WAIT] = jobs.fetch_wait_seconds
        self.gf[G_FETCH_NEXT] = np.inf
        super().__init__(app, settings, rng_think, rng_demand, rng_arrivals, max_users=max_users, students=students)
        self._rng_part = rng_partition
        maxc = 1 if self.oneshot else jobs.max_concurrent_jobs
        self.act = np.zeros((nrep, maxc), dtype=np.int64)
        P = jobs.partitions
        self.owner = np.full(P, -1, dtype=np.int64)
        self.latest = np.zeros(P, dtype=np.int64)
        self.taken = np.zeros(P, dtype=np.int64)
        self.committed = np.zeros(P, dtype=np.int64)
        self.pq = np.zeros((P, 64), dtype=np.int64)
        self.pdone = np.zeros((P, 64), dtype=np.int8)
        self.pbuf = np.zeros(0, dtype=np.int64)
        self.jf = np.zeros((0, N_JF))
        self.ji = np.zeros((0, N_JI), dtype=np.int64)
        self.jfree = np.zeros(0, dtype=np.int64)
        self._grow_jobs(max(256, 2 * max_users))
        self.out_f = np.zeros((4096, 3))
        self.submitted = 0
        self._offsets: list | None = None
        assign(self.ri, self.rseq, self.owner, self.jm)  # the group formed before the episode

    @property
    def oneshot(self) -> bool:
        return bool(self.jm[J_ONESHOT])

    # ------------------------------------------------------------------ capacity
    def _grow_jobs(self, n: int) -> None:
        old = self.jf.shape[0]
        self.jf = np.concatenate([self.jf, np.zeros((n - old, N_JF))])
        self.ji = np.concatenate([self.ji, np.zeros((n - old, N_JI), dtype=np.int64)])
        top = self.jm[J_FREE_TOP]
        stack = np.zeros(n, dtype=np.int64)
        stack[:top] = self.jfree[:top]
        stack[top: top + n - old] = np.arange(n - 1, old - 1, -1)
        self.jm[J_FREE_TOP] = top + n - old
        self.jfree = stack

    def _grow_ring(self) -> None:
        """Double every partition's ring, keeping each offset's entry at ``offset % cap``."""
        P, cap = self.pq.shape
        new_cap = 2 * cap
        pq = np.zeros((P, new_cap), dtype=np.int64)
        done = np.zeros((P, new_cap), dtype=np.int8)
        for p in range(P):
            offs = np.arange(self.committed[p], self.latest[p])
            pq[p, offs % new_cap] = self.pq[p, offs % cap]
            done[p, offs % new_cap] = self.pdone[p, offs % cap]
        self.pq, self.pdone = pq, done

    # ------------------------------------------------------------------ runners
    def _start_replica(self, ready_at: float) -> None:
        r = int(np.flatnonzero(self.ri[:, E.RI_STATE] == E.FREE)[0])
        super()._start_replica(ready_at)
        self.pod_name[r] = f"runner-{self._pods_made - 1}"
        self.rseq[r] = self.jm[J_SEQ]
        self.jm[J_SEQ] += 1

    def _group_changed(self) -> None:
        """A member left (or joined): the group pauses and reassigns (deployment runners
        in a consumer group; a shared queue does not pause)."""
        if self.oneshot or self.jm[J_ASSIGNOR] == SHARED:
            return
        group_changed(self.now, self.ri, self.jm, self.gf, self.owner)

    def scale_to(self, n: int) -> None:
        """Deployment runners: start new runners, or drain the surplus (starting ones
        first, then the newest ready: a ReplicaSet's order); a ready runner removed
        leaves the group (a rebalance) once it has finished its jobs; a runner ready at
        once (no startup) joins at once. Job mode: add runners up to ``n`` (a one-shot
        runner is never removed). ``n`` is already clamped."""
        st = self.settings
        if not st.min_replicas <= n <= st.max_replicas:
            raise ValueError(f"scale_to({n}) is outside [{st.min_replicas}, {st.max_replicas}]")
        current = self.desired_replicas
        for _ in range(n - current):
            self._start_replica(ready_at=self.now + st.startup_seconds)
        if n > current and st.startup_seconds <= 0:
            self._group_changed()  # ready now: it joins now (run_jobs sees no start)
        if n >= current or self.oneshot:
            return
        self._replicas_changed()
        s = self.ri[:, E.RI_STATE]
        starting = np.flatnonzero(s == E.STARTING)[::-1]
        ready = np.flatnonzero(s == E.READY)
        ready = ready[np.argsort(-self.rseq[ready], kind="stable")]
        left = False
        for r in np.concatenate([starting, ready])[: current - n]:
            if self.ri[r, E.RI_STATE] == E.STARTING or self.ri[r, E.RI_N] == 0:
                left = left or self.ri[r, E.RI_STATE] == E.READY  # an idle member leaves now
                self.ri[r, E.RI_STATE] = E.FREE
                self.rf[r, E.RF_NEXT] = np.inf
            else:  # it leaves once drained (run_jobs)
                self.ri[r, E.RI_STATE] = E.DRAINING
        if left:
            self._group_changed()

    # ------------------------------------------------------------------ time
    def run_to(self, t_end: float) -> JobsStepSignals:
        """Advance to ``t_end``; the jobs finished and submitted in the step, and a scrape."""
        if t_end < self.now:
            raise ValueError(f"cannot run backwards: now={self.now}, t_end={t_end}")
        chunks_f, chunks_i = [], []
        self.meta[E.M_OUT] = 0
        self.jm[J_SUBMITTED] = 0
        self._replicas_changed()  # runners become ready; one-shot runners exit as they finish
        while True:
            code, t = run_jobs(
                t_end, self.rf, self.ri, self.rseq, self.act, self.jf, self.ji, self.jfree, self.jm, self.gf,
                self.owner, self.pq, self.pdone, self.latest, self.taken, self.committed, self.pbuf,
                self.ht, self.hs, self.hu, self.hg, self.u_gen, self.u_active, self.u_next, self.u_think,
                self.u_demand, self.think_buf, self.demand_buf, self.open_arrivals, self.out_f, self.out_i,
                self.meta, self.params, self.ev, self.now)  # fmt: skip
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
            elif code == NEED_PART:
                rest = self.pbuf[self.jm[J_PBUF]:]
                more = self._rng_part.integers(0, self.jobs.partitions, 4096)
                self.pbuf = np.concatenate([rest, more]).astype(np.int64)
                self.jm[J_PBUF] = 0
            elif code == E.NEED_SLOTS:
                self._grow_jobs(2 * self.jf.shape[0])
            elif code == NEED_RING:
                self._grow_ring()
            else:
                raise RuntimeError(f"jobs engine: unexpected code {code}")
        out_f, out_i = self._output(chunks_f, chunks_i)
        submitted = int(self.jm[J_SUBMITTED])
        self.submitted += submitted
        return JobsStepSignals(submit_s=out_f[:, 0], turnaround_s=out_f[:, 1], wait_s=out_f[:, 2],
                               runner=out_i[:, 0], error=out_i[:, 1].astype(bool), submitted=submitted,
                               pods=self._sample_pods())

    # ------------------------------------------------------------------ state
    @property
    def in_flight(self) -> int:
        """Jobs held by runners (in progress)."""
        return int(self.ri[self.ri[:, E.RI_STATE] != E.FREE, E.RI_N].sum())

    @property
    def waiting(self) -> int:
        """Jobs no runner has taken yet."""
        return int((self.latest - self.taken).sum())

    def partition_offsets(self) -> tuple[PartitionOffsets, ...]:
        """Per partition: latest, and committed (:data:`INVALID_OFFSET` before its first
        commit). A partition whose offsets did not move keeps its object from the last call."""
        latest, committed = self.latest.tolist(), self.committed.tolist()
        last = self._offsets
        if last is None or len(last) != len(latest):
            last = self._offsets = [None] * len(latest)
        for p, (a, c) in enumerate(zip(latest, committed, strict=True)):
            old = last[p]
            if old is None or old.latest != a or max(old.committed, 0) != c:
                last[p] = PartitionOffsets(p, a, c if c > 0 else INVALID_OFFSET)
        return tuple(last)

    def queue_state(self) -> tuple[int, int, int, int, float]:
        """``(waiting, in_progress, runners, runners_busy, oldest_wait_s)`` now."""
        w, i, r, b, age = queue_state(self.ri, self.jf, self.pq, self.latest, self.taken, self.now)
        return int(w), int(i), int(r), int(b), float(age)

    def waiting_submits(self) -> np.ndarray:
        """Submission instants of the waiting jobs, s."""
        cap = self.pq.shape[1]
        parts = [self.pq[p, np.arange(self.taken[p], self.latest[p]) % cap]
                 for p in range(self.latest.shape[0]) if self.latest[p] > self.taken[p]]
        return self.jf[np.concatenate(parts), JF_SUBMIT] if parts else np.zeros(0)

    def running_submits(self) -> np.ndarray:
        """Submission instants of the jobs in progress, s."""
        busy = np.flatnonzero((self.ri[:, E.RI_STATE] != E.FREE) & (self.ri[:, E.RI_N] > 0))
        if busy.shape[0] == 0:
            return np.zeros(0)
        slots = np.concatenate([self.act[r, : self.ri[r, E.RI_N]] for r in busy])
        return self.jf[slots, JF_SUBMIT]

    def in_flight_ages_ms(self) -> np.ndarray:
        """Ages (now minus submission) of the jobs waiting or in progress, ms."""
        return (self.now - np.concatenate([self.waiting_submits(), self.running_submits()])) * 1000.0

    def oldest_wait_s(self) -> float:
        """The age of the oldest waiting job, s (0 when none waits)."""
        cap = self.pq.shape[1]
        heads = [self.jf[self.pq[p, self.taken[p] % cap], JF_SUBMIT]
                 for p in range(self.latest.shape[0]) if self.latest[p] > self.taken[p]]
        return float(self.now - min(heads)) if heads else 0.0

    @property
    def runners(self) -> int:
        """Runners that exist (starting, ready or draining)."""
        return int((self.ri[:, E.RI_STATE] != E.FREE).sum())

    @property
    def runners_busy(self) -> int:
        """Runners holding at least one job."""
        return int(((self.ri[:, E.RI_STATE] != E.FREE) & (self.ri[:, E.RI_N] > 0)).sum())

    def held_partitions(self) -> dict[str, list[int]]:
        """The current assignment: pod name -> its partitions (ready runners; empty for
        a runner beyond the partitions; empty for all with a shared queue; a draining
        runner's partitions, kept until it leaves, are not listed)."""
        out = {self.pod_name[r]: [] for r in np.flatnonzero(self.ri[:, E.RI_STATE] == E.READY)}
        for p, r in enumerate(self.owner):
            if r >= 0 and self.pod_name[r] in out:
                out[self.pod_name[r]].append(p)
        return out
