"""The fluid engine: the context of each step from a queueing model's steady state, not from its requests.

Selected by ``engine: fluid`` in an experiment config. It models the same cluster as
the discrete-event engine (:mod:`scalelab.simulator.engine`), in steady state per step:

* **Closed users** (think time uniform ``[low, high]``, the response's network overhead
  added to it), **least-requests**: exact **mean-value analysis** of a load-dependent
  station and a delay station. The station is the ready replicas pooled: with ``j``
  requests in the system, the balancer spreads them as evenly as it can and each replica
  with ``n`` of them progresses at ``min(n, burst_cores) / (1 + contention * min(n - 1,
  contention_cap))`` demand-seconds per second, so the station completes ``sum(rate) /
  mean demand`` requests per second. **Round robin** (the default balancer), which does
  not look at the queues: one replica's chain, its births every R-th request (Erlang
  phases) from the users not in the system, the other replicas at their mean (a
  mean-field closed population, :meth:`FluidModel._closed_round_robin`); with regular
  demand (squared CV below ``REGULAR_DEMAND_SCV``) round robin balances as well as
  least-requests and the pooled station is used. **Open arrivals**: the pooled
  station's birth-death distribution (``p(j) ∝ λ^j / Π μ(i)``); above its capacity a
  backlog builds up across steps.
* **CFS quota**: when a replica's cores exceed its CPU limit, a request's wall time adds
  one stall of ``period - quota / cores`` per budget it exhausts (budget already used at
  its arrival from the replica's quota utilisation, a fixed point).
* **p95**: least-requests (the pooled station): a request that finds ``k`` others on
  its replica takes ``demand * n / rate(n)`` (processor sharing, ``n = k + 1``) plus the
  overhead, a mixture over what arrivals see and 256 quantiles of the demand (from a
  seeded sample; :meth:`FluidModel._distribution`). Round robin: one replica of its
  chain is simulated in steady state (:func:`_replica_sojourns`, 100,000 requests, a
  fixed seed, every R-th arrival: up to ``REPLICA_PHASES`` Erlang phases), each request followed through the queue's swings and the long runs that
  linger (:meth:`FluidModel._replica_distribution`). Either way a run is killed at the
  wall limit, and the station's rate counts the stay a killed run has. The context's
  p95 is the **expected sample p95** of the spans in the window (the exact
  means of its order statistics, :func:`expected_order_statistic`), so few spans read
  low, as they do in the discrete-event engine; in ``paper`` mode only the newest
  ``span_buffer`` spans count and RPS uses the paper's whole-second time base.
* **Replicas**: ready ``startup_seconds`` after a scale-up order; removed at once on a
  scale-down.

Deterministic: the same config gives the same numbers (the demand quantiles and the
simulated replica come from fixed seeds: they are part of the model, not of a run's
draws). **Stochastic** (``engine: fluid-stochastic``, a ``rng`` given): each step
draws what a window of spans would show around that steady state:

* the span count ``N``: open arrivals ``Poisson(rps · window)``; closed users a renewal
  count, normal with variance ``E[N] · cv²``, ``cv`` the users' cycle's coefficient of
  variation;
* the p95: the ``ceil(0.95 N)``-th order statistic of ``N`` draws of the latency
  distribution, ``F⁻¹(U)`` with ``U`` a Beta of mean ``k / (N + 1)`` and the spread of
  :func:`effective_spans` independent draws. Spans that see the same queue state share
  its part of their latency (the state's share of the latency's variance, from the same
  mixture), and the state renews once per relaxation time of the queue's birth-death
  chain (``1 / spectral gap``): Kish's design effect. Against the discrete-event engine
  this gives 0.9-1.5x its p95 spread at the SLO's edge (paper profile), where
  independent spans gave 0.25-0.6x;
* the request rate ``N / window`` and the CPU usage scaled by ``N / E[N]``;

so that a policy trained on it meets the noise of the discrete-event engine. Accuracy
against the discrete-event engine is measured by :func:`validate` (``scalelab calibrate
--engine fluid``).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.linalg import eigh_tridiagonal, solve_banded
from scipy.special import betainc

from scalelab.orchestrator.context import Context, ContextSettings
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.models import AppProfile

QUANTILES = 256


@njit(cache=True)
def _mva(mu: np.ndarray, think_s: float, n_users: int) -> tuple:
    """Exact MVA, one load-dependent station (``mu[j]``, requests/s with ``j`` present)
    and a delay station (``think_s``): throughput (req/s), station time (s) and the
    arrival-theorem marginal ``p(j | N - 1)``, shape ``(N,)``."""
    prev = np.zeros(n_users + 1)
    prev[0] = 1.0
    arrival = prev.copy()
    x = 0.0
    r = 0.0
    for n in range(1, n_users + 1):
        r = 0.0
        for j in range(1, n + 1):
            r += j / mu[j] * prev[j - 1]
        x = n / (think_s + r)
        new = np.zeros(n_users + 1)
        total = 0.0
        for j in range(1, n + 1):
            new[j] = x / mu[j] * prev[j - 1]
            total += new[j]
        new[0] = max(0.0, 1.0 - total)
        arrival = prev
        prev = new
    return x, r, arrival[:n_users]


@njit(cache=True)
def _repairman(mu: np.ndarray, think_s: float, n_users: int) -> np.ndarray:
    """The stationary distribution of the number at the station, ``j = 0..n_users``:
    the closed network of one load-dependent station and a delay station is a
    birth-death chain (births ``(N - j) / think_s``, deaths ``mu[j]``; the machine-
    repairman model), product form for any think and service distributions with
    processor sharing (insensitivity), so ``p(j) ∝ N! / (N - j)! / think_s^j / Π mu(i)``.
    Computed in log space, O(N)."""
    logw = np.zeros(n_users + 1)
    for j in range(1, n_users + 1):
        logw[j] = logw[j - 1] + np.log((n_users - j + 1) / think_s) - np.log(mu[j])
    top = logw.max()
    p = np.exp(logw - top)
    return p / p.sum()


@njit(cache=True)
def _steady_closed(mu: np.ndarray, think_s: float, n_users: int) -> tuple:
    """What :func:`_mva` returns, exactly, in O(N) rather than O(N²): throughput (req/s),
    station time (s) and the arrival-theorem marginal ``p(j | N - 1)`` (an arrival sees
    the network with one user fewer), shape ``(N,)``, from :func:`_repairman`."""
    p = _repairman(mu, think_s, n_users)
    x = 0.0
    for j in range(1, n_users + 1):
        x += p[j] * mu[j]
    r = n_users / x - think_s if x > 0 else 0.0
    arrival = _repairman(mu, think_s, n_users - 1) if n_users > 1 else np.ones(1)
    return x, max(r, 0.0), arrival


def _relaxation_s(births: np.ndarray, deaths: np.ndarray, p: np.ndarray) -> float:
    """The relaxation time, s, of the birth-death chain on ``j = 0..len(p) - 1``
    (``births[j]``: j -> j + 1, ``deaths[j]``: j -> j - 1, per s; ``p`` its stationary
    distribution): ``1 / gap``, the gap between the generator's zero eigenvalue and the
    next. The chain is cut to the states holding all but 1e-12 of ``p`` (reflecting
    there), and its generator symmetrised (reversible), so the gap comes from a
    tridiagonal eigenvalue solve, O(states)."""
    held = np.flatnonzero(p > 1e-12 * p.max())
    lo, hi = int(held[0]), int(held[-1])
    if hi == lo:
        return 0.0
    b = np.array(births[lo: hi + 1], dtype=float)
    d = np.array(deaths[lo: hi + 1], dtype=float)
    b[-1], d[0] = 0.0, 0.0  # reflecting at the cut
    eig = eigh_tridiagonal(-(b + d), np.sqrt(b[:-1] * d[1:]), select="i", select_range=(hi - lo - 1, hi - lo - 1),
                           eigvals_only=True)
    return 1.0 / -float(eig[0]) if eig[0] < -1e-12 else 0.0


#: Round robin hands a replica every R-th request: of a Poisson stream, an Erlang-R
#: interarrival (squared coefficient of variation 1 / R). A replica's chain carries that
#: many arrival phases, up to this many (measured against the discrete-event engine on
#: the acceptance grid, when the chain also gave the latency: 8 fitted the exponential
#: and the corpus demands better than 2, 4 or 32; it now gives the rate, within 3 %).
ROUND_ROBIN_PHASES = 8

#: The phases of the replica :func:`_replica_sojourns` simulates for the latency, up to
#: this many (``min(R, REPLICA_PHASES)``): its cost does not grow with them, and Erlang-R
#: arrivals closer to round robin's own took the acceptance grid's highest p95 errors from
#: +8.4 % to +3.4 % (exponential) and +11.7 % to +6.8 % (corpus); 1,000 gave the same.
REPLICA_PHASES = 64

#: Below this squared coefficient of variation of the demand, round robin spreads the
#: work about as evenly as least-requests (regular arrivals, regular service: little
#: queueing anywhere), and the pooled station models it better than one replica's chain,
#: whose exponential deaths queue too much (measured on the acceptance grid with
#: ``fixed-cpu`` demand of CV 0.5: pooled within 7 % on p95 but one cell at -21 %,
#: the chain +19 % to +110 %).
REGULAR_DEMAND_SCV = 0.5


def _erlang_levels(births: np.ndarray, deaths: np.ndarray, phases: int) -> np.ndarray:
    """The stationary distribution over (``j``, phase) of :func:`_erlang_birth_death`'s
    chain, shape ``(len(births), phases)``: ``π Q = 0`` as a banded linear system. With the
    states numbered ``j * phases + i``, every birth phase (and a birth, from the last phase
    to the first of the next level) moves one state up and every death ``phases`` states
    down, so ``Q``'s transpose has one band below the diagonal and ``phases`` above; one
    state of the level the plain chain holds most likely is pinned to 1 (its equation
    replaced: ``Q`` has rank one less than its size), so nothing overflows however steep
    the chain, and the system is solved by banded LU with partial pivoting, O(levels ·
    phases²). (A linear level reduction, ``π_{j+1} = π_j R_j`` from the top down, lost
    chains that pile up at the top: 36 in service read as 1.5.)"""
    n, k = births.shape[0], phases
    if n == 1:  # the phases run to the last and stay there
        out = np.zeros((1, k))
        out[0, k - 1] = 1.0
        return out
    size = n * k
    up = np.repeat(k * births, k)  # rate out of each state to the next one
    up[-1] = 0.0  # the top level's last phase: no birth
    down = np.repeat(deaths, k)  # rate out of each state to the same phase a level below
    down[:k] = 0.0
    band = np.zeros((k + 2, size))  # solve_banded's layout, (l, u) = (1, k): band[k + r - c, c] = A[r, c]
    band[k, :] = -(up + down)  # the diagonal
    band[k + 1, :-1] = up[:-1]  # A[s + 1, s]: into s + 1 from s
    band[0, k:] = down[k:]  # A[s - k, s]: into s - k from s
    logw = np.zeros(n)  # the plain chain's level weights, for the state to pin
    logw[1:] = np.cumsum(np.log(np.maximum(births[:-1], 1e-300)) - np.log(np.maximum(deaths[1:], 1e-300)))
    pin = int(np.argmax(logw)) * k
    for c in range(max(pin - 1, 0), min(pin + k + 1, size)):  # its equation becomes π[pin] = 1
        band[k + pin - c, c] = 0.0
    band[k, pin] = 1.0
    rhs = np.zeros(size)
    rhs[pin] = 1.0
    pi = solve_banded((1, k), band, rhs)
    pi = np.maximum(pi, 0.0)
    return (pi / pi.sum()).reshape(n, k)


def _erlang_birth_death(births: np.ndarray, deaths: np.ndarray, phases: int) -> tuple[np.ndarray, np.ndarray]:
    """A birth-death chain on ``j = 0..len(births) - 1`` whose births come after
    ``phases`` exponential phases of rate ``phases * births[j]`` each (an Erlang
    interarrival of mean ``1 / births[j]``; one phase: the plain chain), deaths at
    ``deaths[j]``: the stationary distribution of ``j`` and the one arrivals see
    (``j`` just before a birth), both shape ``(len(births),)``."""
    if phases == 1:
        logw = np.zeros(births.shape[0])
        logw[1:] = np.cumsum(np.log(np.maximum(births[:-1], 1e-300)) - np.log(deaths[1:]))
        p = np.exp(logw - logw.max())
        p /= p.sum()
        seen = p * births
        return p, seen / seen.sum()
    pi = _erlang_levels(np.asarray(births, dtype=float), np.asarray(deaths, dtype=float), phases)
    pi /= pi.sum()
    seen = pi[:, phases - 1] * births
    return pi.sum(axis=1), seen / seen.sum()


#: Requests :func:`_replica_sojourns` follows per steady state (after as many to warm
#: up). Against 400,000 on the acceptance grid (200 steps a cell), 100,000 moved the p95
#: errors by up to 4 points (a third of the cells by more than 2): the simulator's own
#: noise, which the grid's 15 % leaves room for.
REPLICA_ARRIVALS = 100_000


@njit(cache=True)
def _poisson_below(mean: float, below: int, u: float) -> int:
    """The ``u``-quantile (``u`` uniform on [0, 1)) of a Poisson count of ``mean``
    given that it is below ``below``: how many of the phases left ran before a request
    left, when they had not all run."""
    terms = np.empty(below)
    terms[0] = math.exp(-mean)
    for i in range(1, below):
        terms[i] = terms[i - 1] * mean / i
    target = u * terms.sum()
    acc = terms[0]
    ran = 0
    while acc < target and ran < below - 1:
        ran += 1
        acc += terms[ran]
    return ran


@njit(cache=True)
def _replica_sojourns(births: np.ndarray, progress: np.ndarray, phases: int, points: np.ndarray, limit_s: float,
                      arrivals: int, seed: int) -> tuple:
    """One replica in steady state, simulated: the sojourn time, s, of each of
    ``arrivals`` requests (after as many again to warm up) and the others each found,
    two arrays. Births come after ``phases`` phases of rate ``phases * births[n]`` (``n``
    on the replica; none at the top of ``births``), each with a demand drawn from
    ``points``; the requests on the replica share it (processor sharing, each gaining
    ``progress[n]`` CPU-seconds per second) and leave with their work done, or when
    killed at ``limit_s`` of stay. Every request gains the same, so each keeps the
    replica's cumulative progress at which it is done (``done_at``): the next to finish
    has the least, the next to be killed started first, and both are looked for only
    when a request leaves. The phases left before the next birth take a gamma time at
    the current rate; when a request leaves first, the phases run by then are Poisson,
    given fewer than were left (the rate changes with the count). Seeded: the same
    arguments give the same times."""
    np.random.seed(seed)
    top = births.shape[0] - 1
    npoints = points.shape[0]
    done_at = np.empty(top + 1)  # the replica's cumulative progress, CPU-s, at which each is done
    start = np.empty(top + 1)
    found = np.empty(top + 1, np.int64)
    index = np.empty(top + 1, np.int64)  # the arrival's number, -1 during the warm-up
    sojourn = np.empty(arrivals)
    seen = np.empty(arrivals, np.int64)
    m = 0
    left = phases  # phases still to run before the next birth
    t = 0.0
    gained = 0.0  # cumulative progress of a request present throughout, CPU-s
    born = 0
    kept = 0
    first_done = -1  # the request with the least done_at, and the one that started first
    first_start = -1
    while kept < arrivals:
        rate = phases * births[m] if m < top else 0.0  # of each phase
        g = progress[m] if m > 0 else 0.0
        birth = np.random.gamma(left, 1.0 / rate) if rate > 0 else math.inf  # the phases left, at this rate
        leave = math.inf
        event = -1
        if m > 0:
            finish = max(0.0, (done_at[first_done] - gained) / g)
            killed = max(0.0, start[first_start] + limit_s - t)
            leave, event = (finish, first_done) if finish <= killed else (killed, first_start)
        if birth == math.inf and leave == math.inf:
            raise ValueError("a replica with no births and no request that can leave")
        if leave < birth:  # a request leaves first: the phases run by then
            if rate > 0:
                left -= _poisson_below(rate * leave, left, np.random.random())
            t += leave
            gained += g * leave
            if index[event] >= 0:
                sojourn[index[event]] = t - start[event]
                seen[index[event]] = found[event]
                kept += 1
            m -= 1
            done_at[event], start[event], found[event], index[event] = done_at[m], start[m], found[m], index[m]
            first_done, first_start = -1, -1
            for j in range(m):
                if first_done < 0 or done_at[j] < done_at[first_done]:
                    first_done = j
                if first_start < 0 or start[j] < start[first_start]:
                    first_start = j
        else:
            t += birth
            gained += g * birth
            left = phases
            done_at[m] = gained + points[np.random.randint(npoints)]
            start[m] = t
            found[m] = m
            index[m] = born - arrivals if born >= arrivals and born < 2 * arrivals else -1
            if m == 0:
                first_done, first_start = 0, 0
            elif done_at[m] < done_at[first_done]:
                first_done = m
            born += 1
            m += 1
    return sojourn, seen


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` indices into ``n`` sorted values, at the middles of ``k`` equal shares: the
    values' ``k`` quantiles."""
    return ((np.arange(k) + 0.5) / k * n).astype(np.int64)


def _mixture(states: list[tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, float]:
    """The latency distribution of a mixture of states, each ``(weight, latencies)`` (equally
    likely latencies, s): its support, sorted, its CDF, and the share of its variance the
    state explains (between states over total: the intra-class correlation of spans that
    see the same queue)."""
    w = np.array([weight for weight, _ in states])
    w = w / w.sum()
    v = np.concatenate([lat for _, lat in states])
    wt = np.concatenate([np.full(lat.shape[0], weight / lat.shape[0]) for weight, (_, lat) in zip(w, states, strict=True)])
    order = np.argsort(v, kind="stable")
    cdf = np.cumsum(wt[order])
    mean = np.array([lat.mean() for _, lat in states])
    square = np.array([float(np.mean(lat * lat)) for _, lat in states])
    total = float(np.dot(w, mean))
    variance = float(np.dot(w, square)) - total**2
    between = float(np.dot(w, mean * mean)) - total**2
    share = min(1.0, max(0.0, between / variance)) if variance > 1e-15 else 0.0
    return v[order], cdf / cdf[-1], share


@dataclass(frozen=True)
class Steady:
    """The steady state at one load and replica count."""

    rps: float
    mean_s: float  # mean response time, s (with the overhead)
    values: np.ndarray  # latency distribution support, s, sorted
    cdf: np.ndarray  # cumulative weights, same shape, last = 1
    in_service: float  # mean requests in service per replica
    backlog_rate: float = 0.0  # open loop: arrivals above capacity, req/s
    state_share: float = 0.0  # share of the latency's variance the queue's state explains, 0..1
    relaxation_s: float = 0.0  # the queue's relaxation time (1 / the chain's spectral gap), s

    def quantile(self, p: float) -> float:
        """The latency, s, at cumulative weight ``p`` (the first support point whose
        weight reaches it; ``np.searchsorted`` on lists, cheaper one value at a time)."""
        cdf, values = self._lists
        return values[min(bisect.bisect_left(cdf, p), len(values) - 1)]

    @functools.cached_property
    def _lists(self) -> tuple[list[float], list[float]]:
        return self.cdf.tolist(), self.values.tolist()


@dataclass
class FluidModel:
    """Steady states of ``app`` on ``settings``' cluster, cached per (load, replicas)."""

    app: AppProfile
    settings: ClusterSettings
    cache: dict = field(default_factory=dict)
    #: context settings -> {(users, ready replicas): the closed loop's deterministic
    #: (Context, Steady)}: shared by every episode on this model, as the steady states are
    contexts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.app.demand
        sample = np.minimum(np.sort(d.draw(np.random.default_rng(20210823), 50_000)), d.timeout_s)
        self.points = sample[_spread(sample.shape[0], QUANTILES)]  # demand quantiles, CPU s, sorted
        self._cumulative = np.r_[0.0, np.cumsum(self.points)]  # sums of the smallest k quantiles, CPU s
        self.mean_demand = float(sample.mean())
        self.demand_scv = float(sample.var() / self.mean_demand**2) if self.mean_demand > 0 else 0.0
        self.overhead = self.app.overhead_ms / 1000.0
        self.wall_limit = self.app.wall_limit_ms / 1000.0 if self.app.wall_limit_ms is not None else math.inf
        self.think = 0.5 * (self.settings.think_low_s + self.settings.think_high_s)
        a = self.app
        self.period = a.cfs_period_ms / 1000.0
        self.budget = a.cpu_limit * self.period
        self.throttles = a.burst_cores > a.cpu_limit

    # -- one replica
    def rate(self, n):
        """Demand-seconds completed per second by a replica with ``n`` in service (a count,
        or an array of counts >= 1)."""
        a = self.app
        if np.ndim(n) == 0 and n <= 0:
            return 0.0
        return np.minimum(n, a.burst_cores) / (1.0 + a.contention * np.minimum(np.subtract(n, 1), a.contention_cap))

    def _stalled(self, t0, cores, u: float):
        """``t0`` (s of work on ``cores`` cores) plus the CFS stalls it meets once the
        replica's cores exceed its limit, the quota used at fraction ``u`` at arrival
        (arrays broadcast)."""
        stall = np.maximum(0.0, self.period - self.budget / cores)
        used = (np.arange(8) + 0.5) / 8 * self.budget * min(1.0, u)
        stalls = np.floor((used[None, :] + np.atleast_1d(t0 * cores)[:, None]) / self.budget).mean(axis=1)
        return np.where(cores > self.app.cpu_limit, t0 + stalls * stall, t0)

    def wall(self, demand: np.ndarray, n: int, u: float) -> np.ndarray:
        """Wall time, s, of requests of CPU ``demand`` on a replica with ``n`` in service,
        its quota used at fraction ``u``."""
        t0 = demand * n / self.rate(n)
        cores = min(n, self.app.burst_cores)
        return t0 if cores <= self.app.cpu_limit else self._stalled(t0, cores, u)

    def walls(self, demand: np.ndarray, n: np.ndarray, u: float) -> np.ndarray:
        """:meth:`wall` with a (possibly fractional) count in service per request, s."""
        n = np.asarray(n, dtype=float)
        return self._stalled(demand * n / self.rate(n), np.minimum(n, self.app.burst_cores), u)

    def mean_walls(self, n: np.ndarray, u: float) -> np.ndarray:
        """:meth:`wall` of the mean demand for each count in service ``n`` (>= 1), s."""
        return self.walls(self.mean_demand, n, u)

    def mean_stays(self, n: np.ndarray, u: float) -> np.ndarray:
        """The mean stay, s, of a request on a replica with ``n`` in service (each count
        >= 1), its run killed at the wall limit: :meth:`mean_walls` (the wall of the mean
        demand) less the mean of ``max(wall(D, n) - wall limit, 0)`` over the demand
        quantiles, the wall a killed run does not stay. So a killed run frees its share of
        the replica early, and the replicas complete more requests than their mean demand
        allows; with no run killed (or no wall limit) it is :meth:`mean_walls`."""
        n = np.asarray(n, dtype=float)
        stays = self.mean_walls(n, u)
        if math.isinf(self.wall_limit):
            return stays
        q = self.points.shape[0]
        if not self.throttles:  # wall(D, n) = D s(n): E[(D s - L)+] = s E[(D - L / s)+], from the sorted quantiles
            stretch = n / self.rate(n)
            cut = self.wall_limit / stretch
            below = np.searchsorted(self.points, cut)
            return stays - stretch * (self._cumulative[-1] - self._cumulative[below] - cut * (q - below)) / q
        walls = self.walls(np.tile(self.points, n.shape[0]), np.repeat(n, q), u).reshape(n.shape[0], q)
        return stays - np.maximum(walls - self.wall_limit, 0.0).mean(axis=1)

    def _station(self, jmax: int, replicas: int, u: float) -> np.ndarray:
        """``mu[j]``, requests/s the replicas complete with ``j`` in the system, spread as
        evenly as the balancer can (``j // R`` on each, one more on ``j % R``)."""
        per = np.zeros(jmax // replicas + 2)
        n = np.arange(1, per.shape[0])
        per[1:] = n / self.mean_stays(n, u)
        base, extra = np.divmod(np.arange(jmax + 1), replicas)
        mu = extra * per[base + 1] + (replicas - extra) * per[base]
        mu[0] = 0.0
        return mu

    def _distribution(self, arrival: np.ndarray, replicas: int, u: float) -> tuple[np.ndarray, np.ndarray, float]:
        """The latency distribution of the pooled station (support, s, and its CDF) over
        the arrival's state ``arrival`` and the demand quantiles, and the share of its
        variance explained by the state (:func:`_mixture`): a request shares its replica
        with the others it found (``j // replicas`` of ``j`` in the system, the balancer
        spreading them evenly) for its whole stay (quasi-static processor sharing)."""
        m = np.arange(arrival.shape[0]) // replicas  # others on the arrival's replica
        weights = np.bincount(m, weights=arrival)
        states = []
        for k, w in enumerate(weights):
            if w > 1e-12:
                v = self.wall(self.points, k + 1, u)
                states.append((w, np.minimum(v, self.wall_limit) + self.overhead))  # a run past the limit is killed then
        return _mixture(states)

    def _replica_distribution(self, births: np.ndarray, phases: int, u: float) -> tuple[np.ndarray, np.ndarray, float]:
        """What :meth:`_distribution` returns, for one replica of the round-robin chain
        (``births``, Erlang ``phases``), from :data:`REPLICA_ARRIVALS` requests
        :func:`_replica_sojourns` follows through it, grouped by the others each found.
        Simulated rather than mixed over the state found: the requests that make the p95
        are the long ones, and over their stay they meet the queue's swings and the long
        runs that linger (processor sharing's residual work is length-biased), which a
        request held to the queue it found, or relaxing to the replica's mean, missed
        (the p95 read up to 20 % low at 0.9 utilisation, the corpus's 10-15 % low
        below)."""
        n = np.arange(1, births.shape[0])
        progress = np.zeros(births.shape[0])
        progress[1:] = self.mean_demand / self.mean_walls(n, u)  # CPU-s per s, each of n in service
        t, k = _replica_sojourns(births, progress, phases, self.points, self.wall_limit, REPLICA_ARRIVALS, 20211205)
        order = np.lexsort((t, k))  # by the count found, then the time
        t, k = t[order] + self.overhead, k[order]
        _, first, count = np.unique(k, return_index=True, return_counts=True)
        states = []
        for a, c in zip(first, count, strict=True):  # each state's latencies, at most QUANTILES of them
            states.append((c / t.shape[0], t[a + _spread(c, min(c, QUANTILES))]))
        return _mixture(states)

    # -- the cluster
    def _settle(self, solve, replicas: int):
        """The fixed point of the quota utilisation ``u = f(u)``, ``f(u)`` the
        utilisation ``solve(u) -> (state, throughput)`` gives (once when the replicas
        cannot burst above their limit). ``f`` decreases in ``u`` (more of the quota used
        at arrival, more stalls, less throughput), so ``f(u) - u`` has one root in
        ``[0, 1]``: regula falsi (Illinois) from that bracket, to 1e-4."""

        def f(u):
            state, x = solve(u)
            return state, min(1.0, x * self.mean_demand / (replicas * self.app.cpu_limit))

        state, fu = f(0.0)
        if not self.throttles or fu <= 1e-4:
            return state, 0.0 if not self.throttles else fu
        lo, g_lo = 0.0, fu  # g = f(u) - u: > 0 at lo
        hi_state, f_hi = f(1.0)
        hi, g_hi = 1.0, f_hi - 1.0
        if g_hi >= 0.0:  # saturated: u = 1
            return hi_state, 1.0
        side = 0
        for _ in range(40):
            u = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
            state, fu = f(u)
            g = fu - u
            if abs(g) < 1e-4 or hi - lo < 1e-6:
                return state, u
            if g > 0.0:
                lo, g_lo = u, g
                if side == 1:
                    g_hi *= 0.5
                side = 1
            else:
                hi, g_hi = u, g
                if side == -1:
                    g_lo *= 0.5
                side = -1
        return state, u

    def _cached(self, key: tuple, make) -> Steady:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def closed(self, users: int, replicas: int) -> Steady:
        return self._cached(("closed", users, replicas), lambda: self._closed(users, replicas))

    def _closed(self, users: int, replicas: int) -> Steady:
        if users <= 0 or replicas <= 0:
            return Steady(0.0, 0.0, np.zeros(1), np.ones(1), 0.0)
        if self.settings.balancer == "round-robin" and replicas > 1 and self.demand_scv >= REGULAR_DEMAND_SCV:
            return self._closed_round_robin(users, replicas)

        think = self.think + self.overhead

        def solve(u):
            mu = self._station(users, replicas, u)
            x, r, arrival = _steady_closed(mu, think, users)
            return (x, r, arrival, mu), x

        (x, r, arrival, mu), u = self._settle(solve, replicas)
        values, cdf, share = self._distribution(arrival, replicas, u)
        births = (users - np.arange(users + 1)) / think  # users thinking, each back after think s
        relaxation = _relaxation_s(births, mu, _repairman(mu, think, users))
        return Steady(x, r + self.overhead, values, cdf, x * r / replicas, state_share=share,
                      relaxation_s=relaxation)

    def _closed_round_robin(self, users: int, replicas: int) -> Steady:
        """Round robin sends each request to the next replica whatever it holds, so the
        replicas queue apart (the pooled station of :meth:`_closed` is least-requests).
        One replica is a processor-sharing station whose arrivals come from the users
        not in the system: ``(N - j - (R - 1) m) / R`` of them think while it holds
        ``j`` and each other replica holds its mean ``m`` (a mean-field closed
        population: exact at one replica, an open queue of rate ``X / R`` as ``R``
        grows), each the next request after ``min(R, ROUND_ROBIN_PHASES)`` Erlang
        phases (:func:`_erlang_birth_death`). ``m`` is the chain's own mean, found by
        bisection (the mean falls as ``m`` rises)."""
        think = self.think + self.overhead
        top = min(users, 64 + 8 * -(-users // replicas))  # a replica's count, cut far above its share
        phases = min(replicas, ROUND_ROBIN_PHASES)
        held = np.arange(top + 1)

        def births(m: float) -> np.ndarray:
            return np.maximum(users - held - (replicas - 1) * m, 0.0) / (replicas * think)

        def solve(u: float):
            mu = self._station(top, 1, u)
            lo, hi = 0.0, users / replicas  # the chain's mean minus m: >= 0 at lo, <= 0 at hi
            for _ in range(60):
                m = 0.5 * (lo + hi)
                p, _ = _erlang_birth_death(births(m), mu, phases)
                mean = float(np.dot(held, p))
                lo, hi = (m, hi) if mean > m else (lo, m)
                if hi - lo < 1e-6 * max(1.0, m):
                    break
            return (p, mu, mean), replicas * float(np.dot(p, mu))

        (p, mu, mean), u = self._settle(solve, replicas)
        x = replicas * float(np.dot(p, mu))
        arrivals = births(mean)
        relaxation = _relaxation_s(arrivals, mu, p)
        values, cdf, share = self._replica_distribution(arrivals, min(replicas, REPLICA_PHASES), u)
        return Steady(x, replicas * mean / x + self.overhead if x > 0 else 0.0, values, cdf, mean,
                      state_share=share, relaxation_s=relaxation)

    def capacity(self, replicas: int) -> float:
        """Requests per second the ready replicas complete when saturated."""
        return self._cached(("capacity", replicas), lambda: float(self._station(8 * replicas, replicas, 1.0)[-1])
                            if replicas > 0 else 0.0)

    def open(self, rate_rps: float, replicas: int) -> Steady:
        return self._cached(("open", round(rate_rps, 6), replicas), lambda: self._open(rate_rps, replicas))

    def _open(self, lam: float, replicas: int) -> Steady:
        if lam <= 0 or replicas <= 0:
            return Steady(0.0, 0.0, np.zeros(1), np.ones(1), 0.0)
        jmax = 64 * replicas

        def solve(u):
            mu = self._station(jmax, replicas, u)
            served = min(lam, mu[-1] * 0.999)
            p = np.zeros(jmax)
            p[0] = 1.0
            for j in range(1, jmax):
                p[j] = p[j - 1] * served / mu[j]
                if p[j] < 1e-12 * p[: j + 1].sum():
                    break
            return (p / p.sum(), served, mu), served

        (p, served, mu), u = self._settle(solve, replicas)
        mean_n = float(np.dot(np.arange(jmax), p))
        values, cdf, share = self._distribution(p, replicas, u)  # Poisson arrivals see time averages
        relaxation = _relaxation_s(np.full(jmax, served), mu[:jmax], p)
        return Steady(served, mean_n / served + self.overhead, values, cdf, mean_n / replicas,
                      backlog_rate=max(0.0, lam - mu[-1]), state_share=share, relaxation_s=relaxation)


def _model_key(settings: ClusterSettings) -> ClusterSettings:
    """The model depends only on the think time and the balancer (not on replica counts
    or startup)."""
    return ClusterSettings(think_low_s=settings.think_low_s, think_high_s=settings.think_high_s,
                           balancer=settings.balancer)


def expected_order_statistic(steady: Steady, k: int, n: int) -> float:
    """``E[X_(k)]``, s: the mean of the ``k``-th smallest (1-based) of ``n`` independent
    draws of ``steady``'s latency distribution, exactly. ``X_(k) <= v`` when at least
    ``k`` of the ``n`` draws are, so ``P(X_(k) <= v) = I_F(v)(k, n - k + 1)``, the
    regularised incomplete beta at the CDF, and the mean weighs each support point by
    that CDF's step. (``F^-1(k / (n + 1))``, the quantile at the mean rank, is the median
    of ``X_(k)``, not its mean: with a heavy tail -- a few percent of runs stopped at
    the CPU limit -- the two differ by a factor of two and more.)"""
    below = betainc(k, n - k + 1, steady.cdf)
    return float(steady.values[0] * below[0] + np.dot(steady.values[1:], np.diff(below)))


def expected_sample_quantile(steady: Steady, n_samples: float, q: float = 95.0) -> float:
    """The expected ``np.percentile(sample, q)`` (linear interpolation) of ``n_samples``
    independent draws, s: the interpolation between the two order statistics around
    rank ``(n - 1) q / 100`` of their means (:func:`expected_order_statistic`)."""
    n = max(1, round(n_samples))
    if n == 1:
        return expected_order_statistic(steady, 1, 1)
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    frac = pos - lo
    low = expected_order_statistic(steady, lo + 1, n)
    return low if frac == 0 else low * (1 - frac) + expected_order_statistic(steady, min(lo + 2, n), n) * frac


def effective_spans(steady: Steady, spans: float, window_s: float) -> float:
    """How many independent draws ``spans`` spans of a ``window_s`` window are worth for
    the window's quantiles (Kish's design effect): spans that see the same queue state
    share its part of their latency, ``steady.state_share``, and the state renews about
    ``1 + window_s / steady.relaxation_s`` times in the window, so
    ``spans / (1 + (spans / epochs - 1) * state_share)``."""
    epochs = 1.0 + window_s / steady.relaxation_s if steady.relaxation_s > 0 else math.inf
    return spans / (1.0 + max(spans / epochs - 1.0, 0.0) * steady.state_share)


@functools.lru_cache(maxsize=32)
def shared_model(app: AppProfile, settings: ClusterSettings) -> FluidModel:
    """One model per (app, cluster) in this process, so that every episode, run and
    ``reset()`` reuses the steady states already solved (they do not depend on the seed)."""
    return FluidModel(app, settings)


class FluidCluster:
    """The fluid twin of :class:`scalelab.simulator.cluster.SimCluster`, one step at a time."""

    def __init__(self, app: AppProfile, settings: ClusterSettings, context: ContextSettings,
                 closed: bool = True, model: FluidModel | None = None, rng: np.random.Generator | None = None) -> None:
        self.app, self.settings, self.context, self.closed = app, settings, context, closed
        self.rng = rng  # None: deterministic; a generator: each step drawn around the steady state
        self.model = model or shared_model(app, _model_key(settings))
        self.ready_at = [0.0] * settings.initial_replicas
        self.now = 0.0
        self.backlog = 0.0  # open loop: requests waiting above capacity
        # closed loop: (users, replicas) -> (Context, Steady), shared with the model's other episodes
        self._contexts = self.model.contexts.setdefault(context, {}) if self.model.app == app else {}

    @property
    def desired_replicas(self) -> int:
        return len(self.ready_at)

    def ready_replicas(self, t: float) -> int:
        if self.ready_at[-1] <= t:  # kept sorted: all ready (the usual case)
            return len(self.ready_at)
        return sum(1 for r in self.ready_at if r <= t)

    def scale_to(self, n: int) -> None:
        """Set the replica count now; ``n`` must already be clamped to ``[min, max]``
        (:func:`scalelab.orchestrator.backend.clamp`, which the backend applies)."""
        st = self.settings
        if not st.min_replicas <= n <= st.max_replicas:
            raise ValueError(f"scale_to({n}) is outside [{st.min_replicas}, {st.max_replicas}]")
        n = int(n)
        if n > len(self.ready_at):
            self.ready_at = self.ready_at + [self.now + self.settings.startup_seconds] * (n - len(self.ready_at))
        else:
            self.ready_at = self.ready_at[:n]  # sorted: the newest (not yet ready) go first

    def step(self, load: float, t1: float) -> Context:
        """The context at ``t1`` with ``load`` users (closed) or req/s (open) since the
        last step."""
        dt = t1 - self.now
        self.now = t1
        replicas = self.ready_replicas(t1)
        wait = 0.0
        if self.closed:
            key = (int(load), replicas)
            hit = self._contexts.get(key)
            if hit is None:
                st = self.model.closed(int(load), replicas)
                hit = self._contexts[key] = (self._context(st, replicas, 0.0), st)
            return hit[0] if self.rng is None else self._noisy(hit[0], hit[1], 0.0)
        st = self.model.open(float(load), replicas)
        capacity = self.model.capacity(replicas)
        self.backlog = max(0.0, self.backlog + (float(load) - capacity) * dt)
        wait = self.backlog / capacity if capacity > 0 else 0.0
        ctx = self._context(st, replicas, wait)
        return ctx if self.rng is None else self._noisy(ctx, st, wait)

    def _noisy(self, ctx: Context, st: Steady, wait_s: float) -> Context:
        """One window's draw around the steady context ``ctx`` (see the module docstring)."""
        c = self.context
        expected = st.rps * c.window_s
        if expected <= 0:
            return ctx
        if self.closed:  # a renewal count: var N = E[N] cv², cv the users' cycle (think + response) CV
            lo, hi = self.settings.think_low_s, self.settings.think_high_s
            cv = math.sqrt((hi - lo) ** 2 / 12.0) / max((lo + hi) / 2.0 + st.mean_s, 1e-9)
            n = max(0, round(self.rng.normal(expected, math.sqrt(expected) * cv)))
        else:  # open arrivals: Poisson
            n = int(self.rng.poisson(expected))
        kept = min(n, c.span_buffer) if c.span_buffer else n
        if kept < 1:
            p95 = 0.0
        else:  # the k-th of `kept` at its mean rank, with the spread of `effective` independent spans:
            # requests sharing a replica see the same queue, so their latencies move together
            k = max(1, math.ceil(0.95 * kept))
            rank = k / (kept + 1.0)
            effective = effective_spans(st, kept, min(c.window_s, kept / max(st.rps, 1e-9)))
            p95 = (st.quantile(float(self.rng.beta(rank * (effective + 1.0), (1.0 - rank) * (effective + 1.0))))
                   + wait_s) * 1000.0
        f = n / expected
        return Context(
            replicas=ctx.replicas, p95_ms=p95, rps=ctx.rps * f, cpu_request_ratio=ctx.cpu_request_ratio * f,
            cpu_limit_ratio=ctx.cpu_limit_ratio * f, mem_request_ratio=ctx.mem_request_ratio,
            mem_limit_ratio=ctx.mem_limit_ratio, mean_ms=ctx.mean_ms if kept else 0.0, spans=kept,
            cpu_request_now=ctx.cpu_request_now * f,
        )  # fmt: skip

    def _context(self, st: Steady, replicas: int, wait_s: float) -> Context:
        c, a = self.context, self.app
        window = c.window_s
        spans = st.rps * window
        kept = min(spans, c.span_buffer) if c.span_buffer else spans
        if c.rps_mode == "paper" and kept > 1:
            base = window if kept >= spans or st.rps <= 0 else kept / st.rps  # (spans / rps: 11.999... s)
            rps = kept / max(1.0, math.floor(base) - 1.0) if base >= 2 else kept
        else:
            rps = st.rps
        p95 = (expected_sample_quantile(st, kept) + wait_s) * 1000.0 if kept >= 1 else 0.0
        per_replica = max(replicas, 1)
        n = st.in_service
        cpu = st.rps * self.model.mean_demand * (1 + a.contention * min(max(n - 1, 0.0), a.contention_cap))
        mem = a.mem_base_mib + a.mem_per_request_mib * n
        if a.sidecar is not None:  # the proxy's share of the pod (models.Sidecar)
            cpu += a.sidecar.idle_cores * per_replica + st.rps * a.sidecar.cpu_ms_per_request / 1000.0
            mem += a.sidecar.memory_mib
        cpu /= per_replica
        return Context(
            replicas=replicas, p95_ms=p95, rps=rps,
            cpu_request_ratio=cpu / a.pod_cpu_request if replicas else 0.0,
            cpu_limit_ratio=cpu / a.pod_cpu_limit if replicas else 0.0,
            mem_request_ratio=mem / a.pod_memory_request_mib if replicas else 0.0,
            mem_limit_ratio=mem / a.pod_memory_limit_mib if replicas else 0.0,
            mean_ms=(st.mean_s + wait_s) * 1000.0 if st.rps > 0 else 0.0, spans=round(kept),
            cpu_request_now=cpu / a.pod_cpu_request if replicas else 0.0,
        )  # fmt: skip
