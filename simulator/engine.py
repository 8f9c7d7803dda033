"""The deterministic discrete-event core of the cluster twin, compiled with numba.

Nothing in here draws a random number: think times, service demands and open-loop
arrival instants are drawn by :mod:`scalelab.simulator.cluster` from seeded generators and handed
in through buffers. Given the same buffers the core produces the same events, bit for bit.

Model (times in seconds, CPU in core-seconds):

* **Replicas** serve their requests by processor sharing. While a replica has CPU budget
  left in its CFS period, its ``n`` requests share ``min(n, burst_cores)`` cores, each
  request getting at most one core (one interpreter). Every CPU second consumed is taken
  from the budget (``quota = cpu_limit * period``); when the budget is spent, the replica
  is throttled until the period ends, as Linux's CFS bandwidth control does.
* A **request** is served on one replica; its response time is the time it spent there
  plus a fixed network/sidecar ``overhead``. Its CPU demand is capped at ``timeout_cpu``
  (the request is then flagged as timed out).
* **Closed users** send, wait for the response, think, and send again. User events live
  in one 4-ary heap keyed by ``(time, sequence)``, so ties run in insertion order. Their
  think times and demands come from the shared buffers in the order they are used, or,
  when the caller gives each user its own stream (``u_think``, ``u_demand``: one row per
  user), from the user's row: its ``k``-th request costs ``u_demand[u, k]`` and is
  followed by the think time ``u_think[u, k]`` (``u_next[u]`` is ``k``).
* A request still running ``wall`` seconds after it reached its replica is **killed** at
  that instant (the sandbox's wall limit): its response leaves then, flagged like a
  timed-out one, and the rest of its demand is never served. ``wall`` is infinite
  unless the profile states one.
* **Open arrivals** come from a sorted array of instants.
* Replica events (a completion, a budget exhausted, a period boundary while busy, a
  replica becoming ready) are found in a segment tree over the replicas' next event
  times, and the balancer's choice in another over their requests in service, so an
  event costs O(log R) in the replicas, not O(R). At equal times a replica event runs
  before a user event, the lowest replica first.

State lives in plain numpy arrays owned by :class:`scalelab.simulator.cluster.SimCluster`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: How the event loop and its helpers are compiled: cached, and without numba's reference
#: counting (``_nrt=False``). A function compiled so must allocate nothing (no array made,
#: sliced or sorted: the callers own every buffer); it may call a counted function that
#: does. With counting on, every call between them took and dropped an atomic reference on
#: each array it was passed, which was over half of an event's time (perf, 400 users x 40
#: replicas). The arithmetic is unchanged.
uncounted = njit(cache=True, _nrt=False)

# replica float columns
RF_V = 0  # attained service per request (virtual time), core-seconds
RF_TUPD = 1  # time of the last update, s
RF_BUDGET = 2  # CPU budget left in the current period, core-seconds
RF_PEND = 3  # end of the current CFS period, s
RF_CPU = 4  # CPU consumed since the last sample, core-seconds
RF_NINT = 5  # integral of in-flight requests since the last sample, request-seconds
RF_READY_AT = 6  # instant the replica becomes ready, s
RF_PHASE = 7  # CFS period phase, s
RF_NEXT = 8  # time of the next replica event, s (inf if none)
RF_ALIVE = 9  # seconds alive since the last sample
RF_FMIN = 10  # the smallest finish threshold of the requests in service (valid while any is)
RF_DMIN = 11  # the earliest wall deadline of the requests in service, s (valid while any is)
N_RF = 12

# replica int columns
RI_STATE = 0
RI_N = 1  # requests in service
RI_SERVED = 2  # requests completed since the last sample
N_RI = 3

# replica states
FREE = 0
STARTING = 1
READY = 2
DRAINING = 3

# slot columns (one slot per request in service)
SF_FINISH = 0  # virtual-time finish threshold
SF_ARRIVE = 1  # arrival instant, s
N_SF = 2
SI_USER = 0  # user id, -1 for an open-loop arrival
SI_TIMEOUT = 1  # 1 if the demand was capped at timeout_cpu
N_SI = 2

# meta int cells
M_HSIZE = 0
M_HSEQ = 1
M_THINK = 2  # next index in the think buffer
M_DEMAND = 3  # next index in the demand buffer
M_OPEN = 4  # next index in the open arrivals array
M_OUT = 5  # spans written to the output arrays
M_RR = 6  # round-robin pointer
M_BALANCER = 7  # 0 round robin, 1 least requests
M_FREE_TOP = 8  # number of free slots on the free stack
M_EVENTS = 9  # events processed (statistics)
M_STREAMED = 10  # demands taken from the users' own streams (never reset)
N_META = 11

# float parameters
P_OVERHEAD = 0
P_QUOTA = 1
P_PERIOD = 2
P_BURST = 3
P_TIMEOUT_CPU = 4
P_CONTENTION = 5  # extra CPU per unit of useful work for each other request in service
P_CONTENTION_CAP = 6  # other requests beyond this add no more contention
P_WALL = 7  # wall-clock limit of a request at its replica, s (inf: none); past it the run is killed
N_PARAMS = 8

# return codes of run_until
DONE = 0
NEED_THINK = 1
NEED_DEMAND = 2
OUT_FULL = 3
NEED_SLOTS = 4
NO_REPLICA = 5
NEED_STREAM = 6  # a user's own stream is used up: widen ``u_think`` and ``u_demand``

EPS = 1e-12
INF = np.inf


@uncounted
def _heap_less(ht, hs, i, j):
    return ht[i] < ht[j] or (ht[i] == ht[j] and hs[i] < hs[j])


#: Children per node of the users' heap. Four halve its depth against two, and a node's
#: children share a cache line: at 20,000 users the heap outgrows the core's cache. Keys
#: ``(time, sequence)`` are unique, so any arity pops the same order.
HEAP_ARITY = 4


@uncounted
def heap_push(ht, hs, hu, hg, meta, t, user, gen):
    """Push a user event; the caller guarantees capacity (one event per user at most)."""
    i = meta[M_HSIZE]
    meta[M_HSIZE] = i + 1
    ht[i] = t
    hs[i] = meta[M_HSEQ]
    meta[M_HSEQ] += 1
    hu[i] = user
    hg[i] = gen
    while i > 0:
        p = (i - 1) // HEAP_ARITY
        if _heap_less(ht, hs, i, p):
            ht[i], ht[p] = ht[p], ht[i]
            hs[i], hs[p] = hs[p], hs[i]
            hu[i], hu[p] = hu[p], hu[i]
            hg[i], hg[p] = hg[p], hg[i]
            i = p
        else:
            break


@uncounted
def heap_pop(ht, hs, hu, hg, meta):
    """Remove the top event (the caller has read it)."""
    n = meta[M_HSIZE] - 1
    meta[M_HSIZE] = n
    if n == 0:
        return
    ht[0] = ht[n]
    hs[0] = hs[n]
    hu[0] = hu[n]
    hg[0] = hg[n]
    i = 0
    while True:
        first = HEAP_ARITY * i + 1
        if first >= n:
            break
        c = first
        for k in range(first + 1, min(first + HEAP_ARITY, n)):
            if _heap_less(ht, hs, k, c):
                c = k
        if _heap_less(ht, hs, c, i):
            ht[i], ht[c] = ht[c], ht[i]
            hs[i], hs[c] = hs[c], hs[i]
            hu[i], hu[c] = hu[c], hu[i]
            hg[i], hg[c] = hg[c], hg[i]
            i = c
        else:
            break


@uncounted
def _share(c, n, params):
    """Useful work per second of each of ``n`` requests sharing ``c`` cores."""
    others = min(n - 1.0, params[P_CONTENTION_CAP])
    return c / (n * (1.0 + params[P_CONTENTION] * others))


@uncounted
def advance_replica(rf, ri, r, t, params):
    """Bring replica ``r`` from its last update to ``t`` (no event of it lies between)."""
    dt = t - rf[r, RF_TUPD]
    if dt < 0.0:
        dt = 0.0
    n = ri[r, RI_N]
    if n > 0 and rf[r, RF_BUDGET] > 0.0:
        c = min(float(n), params[P_BURST])
        used = c * dt
        if used > rf[r, RF_BUDGET]:  # rounding: never spend more than the budget
            used = rf[r, RF_BUDGET]
            dt_run = used / c
        else:
            dt_run = dt
        rf[r, RF_V] += _share(c, n, params) * dt_run
        rf[r, RF_BUDGET] -= used
        rf[r, RF_CPU] += used
    rf[r, RF_NINT] += n * dt
    rf[r, RF_ALIVE] += dt
    if t >= rf[r, RF_PEND]:
        period = params[P_PERIOD]
        k = np.floor((t - rf[r, RF_PHASE]) / period) + 1.0
        rf[r, RF_PEND] = rf[r, RF_PHASE] + k * period
        if rf[r, RF_PEND] <= t:  # guard against rounding
            rf[r, RF_PEND] += period
        rf[r, RF_BUDGET] = params[P_QUOTA]
    rf[r, RF_TUPD] = t


@uncounted
def schedule_replica(rf, ri, act, sf, r, params):
    """Compute the time of replica ``r``'s next event."""
    state = ri[r, RI_STATE]
    if state == STARTING:
        rf[r, RF_NEXT] = rf[r, RF_READY_AT]
        return
    n = ri[r, RI_N]
    if n == 0 or state == FREE:
        rf[r, RF_NEXT] = INF
        return
    t0 = rf[r, RF_TUPD]
    deadline = rf[r, RF_DMIN]  # the earliest wall limit: an event whatever the budget
    if rf[r, RF_BUDGET] <= EPS:
        rf[r, RF_NEXT] = min(rf[r, RF_PEND], deadline)
        return
    c = min(float(n), params[P_BURST])
    s = _share(c, n, params)
    fmin = rf[r, RF_FMIN]  # kept by arrivals and completions: no scan of the requests
    t_complete = t0 + max(fmin - rf[r, RF_V], 0.0) / s
    t_exhaust = t0 + rf[r, RF_BUDGET] / c
    if t_exhaust <= t0:  # the budget left is below the clock's resolution
        rf[r, RF_BUDGET] = 0.0
        rf[r, RF_NEXT] = min(rf[r, RF_PEND], deadline)
        return
    nxt = rf[r, RF_PEND]
    if t_complete < nxt:
        nxt = t_complete
    if t_exhaust < nxt:
        nxt = t_exhaust
    if deadline < nxt:
        nxt = deadline
    rf[r, RF_NEXT] = nxt


# -- segment trees over the replicas: the next event and the balancer's choice in O(log R)
@uncounted
def tree_size(n):
    """Leaves of a segment tree over ``n`` items (a power of two >= n, at least 1)."""
    size = 1
    while size < n:
        size *= 2
    return size


@uncounted
def tree_set(tree, size, i, value):
    """Set leaf ``i`` to ``value`` and every ancestor to the minimum of its children."""
    j = i + size
    tree[j] = value
    j >>= 1
    while j >= 1:
        a, b = tree[2 * j], tree[2 * j + 1]
        tree[j] = a if a <= b else b
        j >>= 1


@uncounted
def tree_first(tree, size, lo, m):
    """The first leaf ``i >= lo`` whose value is ``<= m``; -1 if none."""
    if lo >= size:
        return -1
    j = lo + size
    while True:
        if tree[j] <= m:
            while j < size:  # the leftmost leaf of this subtree with a value <= m
                j = 2 * j
                if tree[j] > m:
                    j += 1
            return j - size
        while j & 1:  # a right child: climb until a left child, then step to its sibling
            j >>= 1
        if j == 0:
            return -1
        j += 1


@uncounted
def event_key(rf, ri, r):
    """Replica ``r``'s leaf in the event tree: its next event time, inf when free."""
    return INF if ri[r, RI_STATE] == FREE else rf[r, RF_NEXT]


@uncounted
def balancer_key(ri, r, least):
    """Replica ``r``'s leaf in the balancer tree: 0 (round robin) or its requests (least
    requests) when ready, inf otherwise."""
    if ri[r, RI_STATE] != READY:
        return INF
    return float(ri[r, RI_N]) if least else 0.0


def tree_arrays(nrep: int) -> tuple[np.ndarray, np.ndarray]:
    """Room for the event and balancer trees over ``nrep`` replicas (:func:`fill_trees`)."""
    size = tree_size(nrep)
    return np.full(2 * size, INF), np.full(2 * size, INF)


@uncounted
def fill_minima(tree, size):
    """Set every internal node of a tree of ``size`` leaves (already set) to the minimum
    of its two children, from the bottom up."""
    for j in range(size - 1, 0, -1):
        tree[j] = min(tree[2 * j], tree[2 * j + 1])


@uncounted
def fill_event_tree(rf, ri, ev):
    """Set the event tree (from :func:`tree_arrays`) to the replicas' next events as they
    are now; returns its number of leaves."""
    nrep = ri.shape[0]
    size = ev.shape[0] // 2
    for r in range(size):
        ev[size + r] = event_key(rf, ri, r) if r < nrep else INF
    fill_minima(ev, size)
    return size


@uncounted
def fill_trees(rf, ri, meta, ev, bal):
    """Set the event and balancer trees (from :func:`tree_arrays`) to the replicas as they
    are now; returns their number of leaves."""
    nrep = ri.shape[0]
    size = fill_event_tree(rf, ri, ev)
    least = meta[M_BALANCER] != 0
    for r in range(size):
        bal[size + r] = balancer_key(ri, r, least) if r < nrep else INF
    fill_minima(bal, size)
    return size


@uncounted
def touch(rf, ri, meta, ev, bal, size, r):
    """Replica ``r`` changed (its next event, state or requests): update both trees
    (a leaf whose key did not change is left alone: round robin's rarely does)."""
    e = event_key(rf, ri, r)
    if ev[size + r] != e:
        tree_set(ev, size, r, e)
    b = balancer_key(ri, r, meta[M_BALANCER] != 0)
    if bal[size + r] != b:
        tree_set(bal, size, r, b)


@uncounted
def pick_replica(bal, size, nrep, meta):
    """Pick a ready replica for a new request; -1 if none is ready. Round robin: the
    first ready replica from the round-robin pointer on; least requests: the first, in
    that order, of those with the fewest requests. ``bal`` is the balancer tree."""
    m = bal[1]
    if m == INF:
        return -1
    start = meta[M_RR]
    best = tree_first(bal, size, start, m)
    if best < 0 or best >= nrep:
        best = tree_first(bal, size, 0, m)
    meta[M_RR] = (best + 1) % nrep
    return best


# -- the users' draws: their own streams, or the shared buffers (both event loops use these)
@uncounted
def think_room(n, u_demand, think_buf, meta):
    """Whether ``n`` completions can each take a think time: always with the users' own
    streams (a request's think time sits beside its demand), else if the shared buffer
    holds ``n`` more."""
    return u_demand.shape[1] > 0 or meta[M_THINK] + n <= think_buf.shape[0]


@uncounted
def think_after(u, u_next, u_think, u_demand, think_buf, meta):
    """The think time (s) of user ``u`` after its answer: the one after its current
    request in its own stream (which moves on), else the shared buffer's next."""
    if u_demand.shape[1] > 0:
        th = u_think[u, u_next[u]]
        u_next[u] += 1
        return th
    th = think_buf[meta[M_THINK]]
    meta[M_THINK] += 1
    return th


@uncounted
def demand_missing(u, u_next, u_demand, demand_buf, meta):
    """What a send by user ``u`` (``-1``: an open arrival) lacks: NEED_STREAM when its own
    stream is used up, NEED_DEMAND when the shared buffer is, else DONE."""
    if u >= 0 and u_demand.shape[1] > 0:
        return NEED_STREAM if u_next[u] >= u_demand.shape[1] else DONE
    return NEED_DEMAND if meta[M_DEMAND] >= demand_buf.shape[0] else DONE


@uncounted
def take_demand(u, u_next, u_demand, demand_buf, meta):
    """The CPU demand (core-seconds) of a send by user ``u`` (``-1``: an open arrival):
    its current request's in its own stream, else the shared buffer's next."""
    if u >= 0 and u_demand.shape[1] > 0:
        meta[M_STREAMED] += 1
        return u_demand[u, u_next[u]]
    d = demand_buf[meta[M_DEMAND]]
    meta[M_DEMAND] += 1
    return d


@uncounted
def run_until(
    t_end,
    rf,
    ri,
    act,
    sf,
    si,
    free_stack,
    ht,
    hs,
    hu,
    hg,
    u_gen,
    u_active,
    u_next,
    u_think,
    u_demand,
    think_buf,
    demand_buf,
    open_arrivals,
    out_f,
    out_i,
    meta,
    params,
    ev,
    bal,
    now,
):
    """Process events up to and including ``t_end``.

    Returns ``(code, t)``: ``code`` is DONE when every event up to ``t_end`` ran, or a
    request for more input (buffers, slots) or output space; ``t`` is the simulated time
    reached. The call is resumable: call again after refilling. ``ev`` and ``bal`` are the
    trees' room (:func:`tree_arrays`), set afresh at every call. Users draw from their own
    streams when ``u_demand`` has columns (``u_next``, ``u_think``, ``u_demand``: one row
    per user), else from ``think_buf`` and ``demand_buf``.
    """
    nrep = ri.shape[0]
    overhead = params[P_OVERHEAD]
    tcap = params[P_TIMEOUT_CPU]
    wall = params[P_WALL]
    t = now
    size = fill_trees(rf, ri, meta, ev, bal)  # the replicas may have changed since the last call
    while True:
        # earliest replica event (the lowest index among equal times)
        trep = ev[1]
        rbest = tree_first(ev, size, 0, trep) if trep < INF else -1
        tuser = ht[0] if meta[M_HSIZE] > 0 else INF
        topen = open_arrivals[meta[M_OPEN]] if meta[M_OPEN] < open_arrivals.shape[0] else INF
        tarr = tuser if tuser < topen else topen
        if trep <= tarr:
            if trep > t_end:
                break
            # ---- replica event
            r = rbest
            t = trep
            if ri[r, RI_STATE] == STARTING:
                advance_replica(rf, ri, r, t, params)
                ri[r, RI_STATE] = READY
                schedule_replica(rf, ri, act, sf, r, params)
                touch(rf, ri, meta, ev, bal, size, r)
                meta[M_EVENTS] += 1
                continue
            n = ri[r, RI_N]
            # completions may need output space and think draws
            if meta[M_OUT] + n > out_f.shape[0]:
                return OUT_FULL, t
            if not think_room(n, u_demand, think_buf, meta):
                return NEED_THINK, t
            advance_replica(rf, ri, r, t, params)
            v = rf[r, RF_V]
            share = _share(min(float(n), params[P_BURST]), n, params) if n > 0 else 1.0
            k = 0
            fmin = INF  # of the requests that stay
            dmin = INF
            first = rf[r, RF_FMIN] - v
            if n == 0 or (first > 1e-12 and t + first / share > t and t < rf[r, RF_DMIN]):
                k = n  # not a completion (the budget or the period): the requests all stay
                fmin = rf[r, RF_FMIN]
                dmin = rf[r, RF_DMIN]
            while k < ri[r, RI_N]:
                slot = act[r, k]
                left = sf[slot, SF_FINISH] - v
                killed = sf[slot, SF_ARRIVE] + wall <= t
                # done, or so close that the clock cannot represent the rest, or past its wall limit
                if left <= 1e-12 or t + left / share <= t or killed:
                    # complete this request
                    nn = ri[r, RI_N] - 1
                    act[r, k] = act[r, nn]
                    ri[r, RI_N] = nn
                    ri[r, RI_SERVED] += 1
                    o = meta[M_OUT]
                    out_f[o, 0] = sf[slot, SF_ARRIVE]
                    out_f[o, 1] = t - sf[slot, SF_ARRIVE] + overhead
                    out_i[o, 0] = r
                    out_i[o, 1] = 1 if killed and left > 1e-12 else si[slot, SI_TIMEOUT]
                    meta[M_OUT] = o + 1
                    u = si[slot, SI_USER]
                    if u >= 0 and u_active[u] == 1:
                        th = think_after(u, u_next, u_think, u_demand, think_buf, meta)
                        heap_push(ht, hs, hu, hg, meta, t + overhead + th, u, u_gen[u])
                    free_stack[meta[M_FREE_TOP]] = slot
                    meta[M_FREE_TOP] += 1
                else:
                    if sf[slot, SF_FINISH] < fmin:
                        fmin = sf[slot, SF_FINISH]
                    if sf[slot, SF_ARRIVE] + wall < dmin:
                        dmin = sf[slot, SF_ARRIVE] + wall
                    k += 1
            rf[r, RF_FMIN] = fmin
            rf[r, RF_DMIN] = dmin
            if ri[r, RI_STATE] == DRAINING and ri[r, RI_N] == 0:
                ri[r, RI_STATE] = FREE
            schedule_replica(rf, ri, act, sf, r, params)
            touch(rf, ri, meta, ev, bal, size, r)
            meta[M_EVENTS] += 1
            continue
        if tarr > t_end:
            break
        # ---- arrival: a closed user's send or an open arrival
        from_user = tuser <= topen
        if from_user:
            u = hu[0]
            if hg[0] != u_gen[u] or u_active[u] == 0:  # stale event of a retired user
                heap_pop(ht, hs, hu, hg, meta)
                continue
        missing = demand_missing(hu[0] if from_user else -1, u_next, u_demand, demand_buf, meta)
        if missing != DONE:
            return missing, t
        if meta[M_FREE_TOP] == 0:
            return NEED_SLOTS, t
        r = pick_replica(bal, size, nrep, meta)
        if r < 0:
            return NO_REPLICA, t
        if ri[r, RI_N] >= act.shape[1]:
            return NEED_SLOTS, t
        t = tarr
        if from_user:
            u = hu[0]
            heap_pop(ht, hs, hu, hg, meta)
        else:
            u = -1
            meta[M_OPEN] += 1
        advance_replica(rf, ri, r, t, params)
        d = take_demand(u, u_next, u_demand, demand_buf, meta)
        timeout = 0
        if d > tcap:
            d = tcap
            timeout = 1
        meta[M_FREE_TOP] -= 1
        slot = free_stack[meta[M_FREE_TOP]]
        sf[slot, SF_FINISH] = rf[r, RF_V] + d
        sf[slot, SF_ARRIVE] = t
        si[slot, SI_USER] = u
        si[slot, SI_TIMEOUT] = timeout
        if ri[r, RI_N] == 0 or sf[slot, SF_FINISH] < rf[r, RF_FMIN]:
            rf[r, RF_FMIN] = sf[slot, SF_FINISH]
        if ri[r, RI_N] == 0:  # arrivals come in time order: the first one present has the earliest deadline
            rf[r, RF_DMIN] = t + wall
        act[r, ri[r, RI_N]] = slot
        ri[r, RI_N] += 1
        schedule_replica(rf, ri, act, sf, r, params)
        touch(rf, ri, meta, ev, bal, size, r)
        meta[M_EVENTS] += 1
    # bring every live replica to t_end so that samples cover the whole step
    for r in range(nrep):
        if ri[r, RI_STATE] != FREE:
            advance_replica(rf, ri, r, t_end, params)
            schedule_replica(rf, ri, act, sf, r, params)
    return DONE, t_end


@njit(cache=True)
def sample_pods(rf, ri, mem_base, mem_per_request, side_idle, side_s_per_request, side_mem):
    """One scrape of every live pod since the last, in one pass: ``(live, state, cpu,
    mem, serving, in_flight)`` -- the live replicas' indices and states, their CPU rate
    (cores) and working set (MiB), the app's plus a sidecar's (``side_idle`` cores,
    ``side_s_per_request`` CPU-s per request completed, ``side_mem`` MiB), how many of
    them serve (not draining) and the requests in service on them. Resets the
    per-sample accumulators."""
    nrep = ri.shape[0]
    count = 0
    for r in range(nrep):
        if ri[r, RI_STATE] != FREE:
            count += 1
    live = np.empty(count, dtype=np.int64)
    state = np.empty(count, dtype=np.int64)
    cpu = np.empty(count)
    mem = np.empty(count)
    serving = 0
    in_flight = 0
    k = 0
    for r in range(nrep):
        if ri[r, RI_STATE] != FREE:
            alive = max(rf[r, RF_ALIVE], 1e-9)
            cpu[k] = (rf[r, RF_CPU] + side_s_per_request * ri[r, RI_SERVED]) / alive + side_idle
            mem[k] = mem_base + mem_per_request * rf[r, RF_NINT] / alive + side_mem
            rf[r, RF_CPU] = 0.0
            rf[r, RF_NINT] = 0.0
            rf[r, RF_ALIVE] = 0.0
            ri[r, RI_SERVED] = 0
            live[k] = r
            state[k] = ri[r, RI_STATE]
            if state[k] != DRAINING:
                serving += 1
            in_flight += ri[r, RI_N]
            k += 1
    return live, state, cpu, mem, serving, in_flight


@uncounted
def count_state(ri, state):
    n = 0
    for r in range(ri.shape[0]):
        if ri[r, RI_STATE] == state:
            n += 1
    return n
