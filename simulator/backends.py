"""The simulated backends of the step loop: both engines of the cluster twin and the
replay of recorded measurements, each a :class:`scalelab.orchestrator.backend.Backend`.

All three run on a :class:`~scalelab.orchestrator.backend.VirtualClock`: ``observe`` advances
the model to the clock's now. Scale orders outside ``[min, max]`` are clamped and
reported (:func:`scalelab.orchestrator.backend.clamp`), as the orchestrator does on a live stack.
"""

from __future__ import annotations

import math

import numpy as np

from scalelab.orchestrator.backend import BaseBackend, Clock, Observation, PodSample, QueueSignals, ScaleResult, clamp
from scalelab.orchestrator.context import ContextBuilder, ContextSettings, Spans, censored_p95
from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.fluid import FluidCluster
from scalelab.simulator.jobs import JobsCluster, JobsSettings
from scalelab.simulator.models import AppProfile
from scalelab.simulator.replay import Replay
from scalelab.simulator.students import InjectorDraws, InjectorStudents

#: Prometheus' scrape interval in the paper and on the live stack, s: a settled step
#: waits for one sample of the new replicas.
SCRAPE_SECONDS = 5.0


def settled_at(ready_s: float, grew: bool, scrape_s: float = SCRAPE_SECONDS, rate_scrapes: int = 2,
               samples_after: int = 1) -> float:
    """When the paper's orchestrator accepted an order (``waitKubernetes`` then
    ``waitPrometheus``, ``orchestrator.py`` 517-590), s: the ordered replicas are ready
    at ``ready_s``; Prometheus counts them at its next scrape (on the ``scrape_s``
    grid) -- after a scale-up (``grew``), ``rate_scrapes - 1`` scrapes later, since a
    new pod's CPU rate needs that many samples before its series exists; then
    ``samples_after`` more samples (``sample_number_before_accepting_scaling``)."""
    scrapes = samples_after + (rate_scrapes if grew else 1)
    return (math.floor(ready_s / scrape_s) + scrapes) * scrape_s


def stream_seeds(seed: int) -> dict:
    """The ``think``, ``demand`` and ``arrivals`` streams of a :class:`SimBackend` (or a
    :class:`JobsBackend`), spawned from ``seed`` (a recording or a steady-state probe
    that has no episode's seeds)."""
    return dict(zip(("think", "demand", "arrivals"), np.random.SeedSequence(seed).spawn(3), strict=True))


class _Deployment(BaseBackend):
    """What the three backends share: the model of the deployment that takes the orders
    (the cluster twin of either engine, or the replay), its limits, the one clamp rule,
    and the episode hooks' defaults (built fresh per episode: nothing to set up)."""

    deployment: SimCluster | JobsCluster | FluidCluster | Replay
    min_replicas: int
    max_replicas: int
    clock: Clock

    @property
    def desired_replicas(self) -> int:
        return self.deployment.desired_replicas

    def scale_to(self, n: int) -> ScaleResult:
        result = clamp(self.desired_replicas, n, self.min_replicas, self.max_replicas)
        if result.changed:
            self.deployment.scale_to(result.applied)
        return result


class SimBackend(_Deployment):
    """The discrete-event engine: every request simulated; spans and per-pod scrapes go
    through the same context code as on the live stack.

    seeds: integer seeds of the ``think``, ``demand`` and ``arrivals`` streams.
    closed: closed-loop users (load = users) or open arrivals (load = req/s).
    students: the live injector's students to replay (``cluster.students: injector``);
    the demand stream then draws which measured run each submission costs as, the think
    stream which students leave when the level falls.
    scrape_seconds, rate_scrapes, samples_after: how :meth:`settle` waits for
    Prometheus (the paper's: 5 s, 2 samples for a rate, 1 sample after).
    """

    def __init__(self, app: AppProfile, cluster: ClusterSettings, context: ContextSettings, clock: Clock,
                 seeds: dict, closed: bool = True, max_users: int = 64,
                 scrape_seconds: float = SCRAPE_SECONDS, rate_scrapes: int = 2, samples_after: int = 1,
                 students: InjectorDraws | None = None) -> None:
        self.app, self.clock, self.closed, self.scrape_s = app, clock, closed, scrape_seconds
        self.rate_scrapes, self.samples_after = int(rate_scrapes), int(samples_after)
        self.min_replicas, self.max_replicas = cluster.min_replicas, cluster.max_replicas
        rng_think, rng_demand = np.random.default_rng(seeds["think"]), np.random.default_rng(seeds["demand"])
        self.deployment = SimCluster(app, cluster, rng_think, rng_demand, np.random.default_rng(seeds["arrivals"]),
                                     max_users=max_users if closed else 64,
                                     students=injector_students(app, cluster, students, rng_think, rng_demand))
        self.builder = ContextBuilder(context)
        self.load = 0.0

    def set_load(self, level: float) -> None:
        self.load = float(level)
        if self.closed:
            self.deployment.set_users(int(level))

    def _advance(self) -> None:
        t = self.clock.now()
        if t <= self.deployment.now:
            return
        if not self.closed:
            self.deployment.add_open_arrivals(self.load, t)
        signals = self.deployment.run_to(t)
        self.builder.add_spans(signals.spans)
        self.builder.add_pod_samples(signals.pods)

    def observe(self) -> Observation:
        self._advance()
        c = self.deployment
        ctx = self.builder.build(c.now, c.ready_replicas)
        in_flight = c.in_flight
        censored = 0
        if ctx.spans == 0 and in_flight > 0:  # an empty window under load: censored latencies
            ctx = self.builder.build(c.now, c.ready_replicas, c.in_flight_ages_ms())
            censored = in_flight
        return Observation(t_s=c.now, context=ctx, desired_replicas=c.desired_replicas, pods=self._pods(),
                           in_flight=in_flight, censored=censored)

    def _pods(self) -> tuple[PodSample, ...]:
        """One sample per pod (runner) at the deployment's last scrape."""
        a = self.app
        return tuple(PodSample(name, phase, start, ready, a.pod_cpu_request, a.pod_cpu_limit, a.pod_memory_request_mib,
                               a.pod_memory_limit_mib, cpu, mem)
                     for name, phase, start, ready, cpu, mem in self.deployment.pod_view())

    def settle(self) -> Observation:
        """Wait as the paper's orchestrator did after an order (:func:`settled_at`),
        and observe."""
        grew = self.deployment.ready_by() > self.clock.now()
        self.clock.sleep_until(self.deployment.ready_by())
        self._advance()
        self.clock.sleep_until(settled_at(self.clock.now(), grew, self.scrape_s, self.rate_scrapes,
                                          self.samples_after))
        return self.observe()


def injector_students(app: AppProfile, cluster: ClusterSettings, draws: InjectorDraws | None,
                      rng_think: np.random.Generator, rng_demand: np.random.Generator) -> InjectorStudents | None:
    """The live injector's students ``draws`` names (None: the simulator's own users), on
    the episode's generators: the demand stream draws which measured run a submission
    costs as, the think stream which students leave when the level falls."""
    if draws is None:
        return None
    return InjectorStudents(draws, (cluster.think_low_s, cluster.think_high_s), app.demand.corpus,
                            app.demand.program_demands_s(), rng_cost=rng_demand, rng_leave=rng_think)


class JobsBackend(SimBackend):
    """The jobs model on the discrete-event engine (:mod:`scalelab.simulator.jobs`):
    submissions are jobs on a partitioned topic, runners (the replicas) pull them.

    The same users (closed: load = users; open: load = jobs/s) and the same CPU model as
    :class:`SimBackend`; ``seeds`` as there: the think times, demands and arrival instants
    come from the same streams, and each job's partition from a generator spawned from
    the ``arrivals`` seed (so the arrival instants are the service model's).

    The context keeps its fields with the jobs' meanings: ``p95_ms``/``mean_ms`` are the
    turnaround (submission to result) over the context's window, censored by the ages of
    the jobs waiting or running when none finished in it; ``rps`` is completions per
    second; the CPU and memory ratios are the runners'. ``queue`` carries the topic's
    signals over the step's window (since the previous observation). ``students`` as
    :class:`SimBackend`'s.
    """

    def __init__(self, app: AppProfile, cluster: ClusterSettings, jobs: JobsSettings, context: ContextSettings,
                 clock: Clock, seeds: dict, closed: bool = True, max_users: int = 64,
                 scrape_seconds: float = SCRAPE_SECONDS, rate_scrapes: int = 2, samples_after: int = 1,
                 students: InjectorDraws | None = None) -> None:
        self.app, self.clock, self.closed, self.scrape_s = app, clock, closed, scrape_seconds
        self.rate_scrapes, self.samples_after = int(rate_scrapes), int(samples_after)
        self.min_replicas, self.max_replicas = cluster.min_replicas, cluster.max_replicas
        rng_arrivals = np.random.default_rng(seeds["arrivals"])
        rng_think, rng_demand = np.random.default_rng(seeds["think"]), np.random.default_rng(seeds["demand"])
        self.deployment = JobsCluster(
            app, cluster, jobs, rng_think, rng_demand, rng_arrivals, rng_arrivals.spawn(1)[0],
            max_users=max_users if closed else 64,
            students=injector_students(app, cluster, students, rng_think, rng_demand))
        self.builder = ContextBuilder(context)
        self.load = 0.0
        self._window_start = self.deployment.now  # the step's window: since the previous observation
        self._submitted = 0
        self._turnaround: list[np.ndarray] = []
        self._last: Observation | None = None

    def _advance(self) -> None:
        t = self.clock.now()
        if t <= self.deployment.now:
            return
        if not self.closed:
            self.deployment.add_open_arrivals(self.load, t)
        s = self.deployment.run_to(t)
        self.builder.add_spans(Spans(s.submit_s, s.turnaround_s * 1000.0, s.runner, s.error))
        self.builder.add_pod_samples(s.pods)
        self._submitted += s.submitted
        self._turnaround.append(s.turnaround_s)

    def observe(self) -> Observation:
        self._advance()
        c = self.deployment
        if self._last is not None and self._last.t_s == c.now:  # nothing happened since: the same observation
            return self._last
        ctx = self.builder.build(c.now, c.ready_replicas)
        waiting, in_progress, runners, busy, oldest_wait = c.queue_state()
        ages = None
        censored = 0
        if ctx.spans == 0 and waiting + in_progress > 0:  # an empty window under load: censored turnarounds
            ages = c.in_flight_ages_ms()
            ctx = self.builder.build(c.now, c.ready_replicas, ages)
            censored = ages.shape[0]
        span = c.now - self._window_start
        done = np.concatenate(self._turnaround) if self._turnaround else np.zeros(0)
        if not done.shape[0] and waiting + in_progress > 0:
            ages = c.in_flight_ages_ms() if ages is None else ages
        p95, q_censored = censored_p95(done * 1000.0, ages if ages is not None else np.zeros(0))
        queue = QueueSignals(
            partitions=c.partition_offsets(), lag=int((c.latest - c.committed).sum()), waiting=waiting,
            oldest_wait_s=oldest_wait, in_progress=in_progress,
            arrival_rate=self._submitted / span if span > 0 else 0.0,
            completion_rate=done.shape[0] / span if span > 0 else 0.0, turnaround_p95_ms=p95,
            censored=q_censored, runners=runners, runners_busy=busy)
        self._window_start, self._submitted, self._turnaround = c.now, 0, []
        self._last = Observation(t_s=c.now, context=ctx, desired_replicas=c.desired_replicas, pods=self._pods(),
                                 in_flight=waiting + in_progress, censored=censored, queue=queue)
        return self._last

    def scale_to(self, n: int) -> ScaleResult:
        result = super().scale_to(n)
        self._last = None  # the state changed: the next observation is built again
        return result



class FluidBackend(_Deployment):
    """The fluid engine: each observation from a queueing model of the same cluster (no
    requests, no per-pod view)."""

    def __init__(self, app: AppProfile, cluster: ClusterSettings, context: ContextSettings, clock: Clock,
                 closed: bool = True, scrape_seconds: float = SCRAPE_SECONDS,
                 rng: np.random.Generator | None = None) -> None:
        self.clock, self.scrape_s = clock, scrape_seconds
        self.min_replicas, self.max_replicas = cluster.min_replicas, cluster.max_replicas
        self.deployment = FluidCluster(app, cluster, context, closed=closed, rng=rng)
        self.load = 0.0

    def set_load(self, level: float) -> None:
        self.load = level

    def observe(self) -> Observation:
        t = self.clock.now()
        ctx = self.deployment.step(self.load, t)
        return Observation(t, ctx, len(self.deployment.ready_at))

    def settle(self) -> Observation:
        """As :meth:`SimBackend.settle`."""
        ready = max(self.deployment.ready_at)
        grew = ready > self.clock.now()
        self.clock.sleep_until(max(ready, self.clock.now()))
        self.clock.sleep_until(settled_at(self.clock.now(), grew, self.scrape_s))
        return self.observe()


class ReplayBackend(_Deployment):
    """Recorded samples per (users, replicas), served in order (the paper's replay):
    every observation draws the next sample of the current cell; an order takes effect
    at once, so settling is one draw of the new cell.

    first_draws: samples drawn by the first observation, which returns the last (the
    paper's first ``getContext`` of a run drew twice). The cells' positions live in
    ``replay.index``; hand the same :class:`Replay` to the next run to carry them on."""

    def __init__(self, replay: Replay, clock: Clock, first_draws: int = 1) -> None:
        self.deployment, self.clock = replay, clock
        self.min_replicas, self.max_replicas = replay.min, replay.max
        self.load = 0
        self.pending_draws = int(first_draws)

    def set_load(self, level: float) -> None:
        self.load = int(level)

    def observe(self) -> Observation:
        for _ in range(self.pending_draws - 1):
            self.deployment.context(self.load)
        self.pending_draws = 1
        ctx = self.deployment.context(self.load)
        return Observation(self.clock.now(), ctx, self.deployment.replicas)

    def settle(self) -> Observation:
        return self.observe()
