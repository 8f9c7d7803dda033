"""The seams of the one step loop: what a backend, a clock and an observation are.

Types only (and two tiny clocks), so that ``agent/`` -- which owns the loop -- may
import them without importing any backend. The simulator engines and the replay
(``simulator/backends.py``) and the live backend (``orchestrator/live_backend.py``, the
agent's client to the orchestrator) implement :class:`Backend`. See
``docs/architecture.md``.

Units: times in seconds on the backend's clock, CPU in cores, memory in MiB,
latencies in ms.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Protocol, runtime_checkable

from scalelab.errors import OrderError
from scalelab.orchestrator.context import Context

#: A pod's phase as the loop sees it: ``starting`` (created, not ready yet), ``ready``
#: (takes traffic), ``draining`` (removed from the balancer, finishing its requests).
PHASES = ("starting", "ready", "draining")


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod at one scrape, as the metrics API and the pod's status show it.

    start_s: when the pod was created, s. ready_s: when it became ready, s (None: not
    yet). The requests and limits are the pod's (cores, MiB). ``cpu_cores`` and
    ``memory_mib`` are the usage over the last scrape window; None when the metrics
    API has no sample of the pod (a missing pod, for the HPA).
    """

    pod: str
    phase: str
    start_s: float
    ready_s: float | None
    cpu_request: float
    cpu_limit: float
    memory_request_mib: float
    memory_limit_mib: float
    cpu_cores: float | None
    memory_mib: float | None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"pod {self.pod!r}: phase={self.phase!r} is not one of {PHASES}")


#: The committed offset of a partition its consumer group has never committed (Kafka's
#: ``OFFSET_INVALID``; KEDA's ``invalidOffset``).
INVALID_OFFSET = -1


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition of the jobs topic at one instant. latest: the producer's log-end
    offset (jobs ever submitted to it). committed: the consumer group's committed offset
    (jobs finished and committed), :data:`INVALID_OFFSET` before the group's first
    commit. Lag is ``latest - committed``: waiting jobs plus jobs in progress."""

    partition: int
    latest: int
    committed: int = INVALID_OFFSET

    @property
    def lag(self) -> int:
        return self.latest - max(self.committed, 0)


#: QueueSignals' scalar fields, as ``queue_``-prefixed columns of ``steps.parquet``.
QUEUE_COLUMNS = ("lag", "waiting", "oldest_wait_s", "in_progress", "arrival_rate", "completion_rate",
                 "turnaround_p95_ms", "censored", "runners", "runners_busy")


@dataclass(frozen=True)
class QueueSignals:
    """The jobs model's signals at one instant (the runners' architecture: submissions
    are jobs on a topic that runners pull). Absent (None) on the service model.

    partitions: per-partition offsets, in partition order. lag: total over partitions
    (jobs submitted and not committed). waiting: jobs no runner has taken yet.
    oldest_wait_s: the age of the oldest waiting job, s (0 when none waits).
    in_progress: jobs held by runners. arrival_rate / completion_rate: jobs per second
    submitted / finished over the step's window. turnaround_p95_ms: the p95 of
    (finish - submit) over the jobs finished in the window, ms; when none finished but
    some wait or run, the p95 of their ages (a censored lower bound, as the service's
    empty windows are); ``censored`` counts those ages. runners: the runners that exist
    (starting, ready or draining); runners_busy: those holding at least one job.
    """

    partitions: tuple[PartitionOffsets, ...] = ()
    lag: int = 0
    waiting: int = 0
    oldest_wait_s: float = 0.0
    in_progress: int = 0
    arrival_rate: float = 0.0
    completion_rate: float = 0.0
    turnaround_p95_ms: float = 0.0
    censored: int = 0
    runners: int = 0
    runners_busy: int = 0

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in QUEUE_COLUMNS}
        d["partitions"] = [[p.partition, p.latest, p.committed] for p in self.partitions]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> QueueSignals:
        """The inverse of :meth:`to_dict`."""
        parts = tuple(PartitionOffsets(int(a), int(b), int(c)) for a, b, c in data.get("partitions") or ())
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(partitions=parts, **{k: (int if kinds[k] == "int" else float)(data[k])
                                        for k in QUEUE_COLUMNS if k in data})


@dataclass(frozen=True, slots=True)
class Observation:
    """What the loop observed at ``t_s``: the 7-field context plus what it was built
    from and what the baselines need.

    pods: one :class:`PodSample` per pod of the deployment (empty where the backend has
    no per-pod view: the fluid engine and replayed datasets). in_flight: requests sent
    and not yet answered at ``t_s``. censored: in-flight requests whose ages were taken
    as (censored) latencies because no request completed in the window. missing: the
    signals that did not arrive (``"spans"``, ``"metrics"``); such a step is marked,
    never scored as fine. desired_replicas: the deployment's ``spec.replicas``.
    client_p95_ms: the load generator's own p95 (Locust's, live), ms, when known.
    queue: the jobs model's signals (lag, waits, turnaround), None on the service model;
    there the context's latencies are the jobs' turnaround.
    """

    t_s: float
    context: Context
    desired_replicas: int
    pods: tuple[PodSample, ...] = ()
    in_flight: int = 0
    censored: int = 0
    missing: tuple[str, ...] = ()
    client_p95_ms: float | None = None
    queue: QueueSignals | None = None

    def to_dict(self) -> dict:
        d = {"t_s": self.t_s, "context": self.context.to_dict(), "desired_replicas": self.desired_replicas,
             "pods": [asdict(p) for p in self.pods], "in_flight": self.in_flight, "censored": self.censored,
             "missing": list(self.missing), "client_p95_ms": self.client_p95_ms}
        if self.queue is not None:
            d["queue"] = self.queue.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Observation:
        """The inverse of :meth:`to_dict`; raises ``KeyError`` naming a missing field."""
        ctx = Context.from_dict(data["context"])
        pod_names = {f.name for f in fields(PodSample)}
        pods = tuple(PodSample(**{k: v for k, v in p.items() if k in pod_names}) for p in data.get("pods") or ())
        return cls(t_s=float(data["t_s"]), context=ctx,
                   desired_replicas=int(data.get("desired_replicas", ctx.replicas)), pods=pods,
                   in_flight=int(data.get("in_flight", 0)), censored=int(data.get("censored", 0)),
                   missing=tuple(data.get("missing") or ()), client_p95_ms=data.get("client_p95_ms"),
                   queue=QueueSignals.from_dict(data["queue"]) if data.get("queue") is not None else None)


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """A scale order as carried out: the count before, the count asked for, the count
    applied (``requested`` clamped to ``[min, max]``)."""

    current: int
    requested: int
    applied: int

    @property
    def clamped(self) -> bool:
        return self.applied != self.requested

    @property
    def changed(self) -> bool:
        return self.applied != self.current


def clamp(current: int, requested: int, minimum: int, maximum: int) -> ScaleResult:
    """The one out-of-range rule: an order for ``requested`` replicas from ``current``
    is carried out as the nearest count in ``[minimum, maximum]``, and reported. Every
    backend, the orchestrator service (``scaleSUT``, ``setDeploymentLimit``), the loop
    and the env's action masks call it; none raises on an out-of-range order, none
    clamps silently. Limits that are not a range (``0 <= minimum <= maximum``) raise
    :class:`~scalelab.errors.OrderError`.

    >>> clamp(3, 12, 1, 10)
    ScaleResult(current=3, requested=12, applied=10)
    >>> clamp(3, 12, 1, 10).clamped
    True
    >>> clamp(3, -2, 1, 10).applied
    1
    """
    lo, hi = int(minimum), int(maximum)
    if not 0 <= lo <= hi:
        raise OrderError(f"deployment limits [{minimum}, {maximum}] are not a range: need 0 <= min <= max")
    return ScaleResult(int(current), int(requested), max(lo, min(hi, int(requested))))


@runtime_checkable
class Backend(Protocol):
    """Where the loop's signals come from and its orders go.

    The step:
    ``set_load`` sets the offered load (users, or req/s for open arrivals) from now on.
    ``observe`` returns the signals up to the clock's now. ``scale_to`` orders ``n``
    replicas, clamped (:func:`clamp`) and reported, never raised. ``settle`` waits until
    the last order took effect and was measured (the paper's ``waitKubernetes`` and
    ``waitPrometheus``; in replay, a draw of the new cell) and then observes.

    The episode: ``setup(initial_replicas)`` starts a fresh one (the live backend sets
    the deployment's limits and count and empties the orchestrator's buffers; a
    simulated backend is built fresh and has nothing to do); ``stop_load()`` ends it
    and returns the load generator's last statistics (``{}`` where there is none).
    ``drive_load``: whether ``set_load`` drives the load (False: someone else does,
    and the live backend leaves the injector alone).

    Time and retries: ``clock`` is the clock the backend's signals are on (virtual for
    the simulator and the replay, wall for the live stack); ``retries`` counts the
    requests sent again after a :class:`~scalelab.errors.TemporaryError`
    (0 where nothing is retried).

    :class:`BaseBackend` gives the episode and retry hooks their do-nothing defaults.
    """

    min_replicas: int
    max_replicas: int
    clock: Clock
    drive_load: bool
    retries: int

    @property
    def desired_replicas(self) -> int: ...

    def setup(self, initial_replicas: int) -> None: ...

    def set_load(self, level: float) -> None: ...

    def observe(self) -> Observation: ...

    def scale_to(self, n: int) -> ScaleResult: ...

    def settle(self) -> Observation: ...

    def stop_load(self) -> dict: ...


class BaseBackend:
    """The defaults of a :class:`Backend`'s episode and retry hooks: nothing to set up,
    nothing to stop, no statistics, no retries; ``set_load`` always drives the load."""

    drive_load: bool = True
    retries: int = 0

    def setup(self, initial_replicas: int) -> None:
        """A fresh episode: nothing to do (a simulated backend is built fresh)."""

    def stop_load(self) -> dict:
        """The episode's end: no load generator, no statistics."""
        return {}


@runtime_checkable
class Clock(Protocol):
    """Time as the loop sees it, in seconds since the episode began."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class VirtualClock:
    """Simulated time: ``sleep_until`` jumps (never backwards); the simulator backends
    advance their model to ``now()`` when observed."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        if t > self.t:
            self.t = float(t)


class WallClock:
    """Real time from the clock's creation (``time.monotonic``); ``sleep_until`` sleeps.
    The one place of the loop's logic that reads or waits on the wall clock."""

    def __init__(self, origin_s: float = 0.0) -> None:
        self._zero = time.monotonic() - origin_s

    def now(self) -> float:
        return time.monotonic() - self._zero

    def sleep_until(self, t: float) -> None:
        wait = t - self.now()
        if wait > 0:
            time.sleep(wait)

    def rebase(self, t: float) -> None:
        """Make ``now()`` read ``t`` (a resumed run continues its step grid)."""
        self._zero = time.monotonic() - t

