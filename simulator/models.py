"""Seeded random models that feed the event core, and the app profiles.

Every model draws from a ``numpy.random.Generator`` it is given; none keeps global state.
Units: demands in CPU seconds, times in seconds, memory in MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

DEMAND_KINDS = ("fixed-cpu", "exponential", "sandbox")


@dataclass(frozen=True)
class DemandModel:
    """CPU work of one request.

    kind:
        ``fixed-cpu``: the paper's ``/ConsumeFixedCpu``: ``cpu_ms`` of CPU with a gamma
        spread of coefficient of variation ``cv`` (0 gives a constant);
        ``exponential``: exponential with mean ``mean_ms``;
        ``sandbox``: a submitted program: lognormal with median ``median_ms`` and shape
        ``sigma`` (heavy tailed), cut at the sandbox's CPU-time limit ``timeout_ms``.
    """

    kind: str = "fixed-cpu"
    cpu_ms: float = 44.6
    cv: float = 0.355
    mean_ms: float = 45.0
    median_ms: float = 300.0
    sigma: float = 1.2
    timeout_ms: float = 30_000.0

    def __post_init__(self) -> None:
        if self.kind not in DEMAND_KINDS:
            raise ValueError(f"demand.kind={self.kind!r} is not one of {DEMAND_KINDS}")
        for name in ("cpu_ms", "mean_ms", "median_ms", "timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"demand.{name} must be > 0, got {getattr(self, name)}")
        if self.cv < 0 or self.sigma < 0:
            raise ValueError("demand.cv and demand.sigma must be >= 0")

    @property
    def timeout_s(self) -> float:
        """CPU-time cap of one request, s (infinite except for ``sandbox``)."""
        return self.timeout_ms / 1000.0 if self.kind == "sandbox" else np.inf

    @property
    def mean_s(self) -> float:
        """Mean CPU demand, s (before the timeout cap)."""
        if self.kind == "fixed-cpu":
            return self.cpu_ms / 1000.0
        if self.kind == "exponential":
            return self.mean_ms / 1000.0
        return self.median_ms / 1000.0 * float(np.exp(self.sigma**2 / 2))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` demands in CPU seconds, shape ``(n,)``."""
        if self.kind == "fixed-cpu":
            mean = self.cpu_ms / 1000.0
            if self.cv == 0:
                return np.full(n, mean)
            shape = 1.0 / self.cv**2
            return rng.gamma(shape, mean / shape, n)
        if self.kind == "exponential":
            return rng.exponential(self.mean_ms / 1000.0, n)
        return rng.lognormal(np.log(self.median_ms / 1000.0), self.sigma, n)


@dataclass(frozen=True)
class Sidecar:
    """A proxy container in every pod beside the app (Istio 1.6's ``istio-proxy``, as on
    the paper's platform). It adds no latency of its own in this model (the app's
    ``overhead_ms`` holds the network and proxy time); its requests and limits add to
    the pod's, and its usage to the pod's, which is what Prometheus' per-pod sums and
    metrics-server report.

    cpu_request, cpu_limit: cores (Istio 1.6's defaults: 0.1 and 2).
    memory_request_mib, memory_limit_mib: MiB (Istio 1.6's defaults: 128 and 1024).
    idle_cores: CPU when no request passes, cores.
    cpu_ms_per_request: CPU per request proxied, ms (Istio 1.6's performance page:
    0.6 vCPU per 1000 requests/s, 0.6 ms each).
    memory_mib: working set, MiB (the same page: about 50 MB).
    """

    cpu_request: float = 0.1
    cpu_limit: float = 2.0
    memory_request_mib: float = 128.0
    memory_limit_mib: float = 1024.0
    idle_cores: float = 0.004
    cpu_ms_per_request: float = 0.6
    memory_mib: float = 50.0

    def __post_init__(self) -> None:
        for name in ("cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib"):
            if getattr(self, name) <= 0:
                raise ValueError(f"app.sidecar.{name} must be > 0, got {getattr(self, name)}")
        for name in ("idle_cores", "cpu_ms_per_request", "memory_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"app.sidecar.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AppProfile:
    """The scaled service as the simulator sees it.

    cpu_request, cpu_limit: cores per replica (the paper: 0.5 and 0.5).
    memory_request_mib, memory_limit_mib: per replica (the paper: 512 and 512).
    overhead_ms: network + sidecar time added to every response, no CPU.
    cfs_period_ms: the CFS bandwidth period (Linux default 100 ms); the replica may use
        ``cpu_limit * cfs_period_ms`` of CPU per period, then waits for the next one.
    burst_cores: cores a replica can use at once while it has budget (1 = one
        interpreter); each request uses at most one core.
    contention: each other request in service makes a request's CPU work cost this
        fraction more (interpreter/GIL and cache contention in a threaded server), up to
        ``contention_cap`` other requests.
    mem_base_mib, mem_per_request_mib: working set = base + per_request * in-flight.
    sidecar: the proxy beside the app in every pod (:class:`Sidecar`), or none; the
    ``pod_*`` properties are the pod's totals.
    """

    name: str = "paper"
    demand: DemandModel = field(default_factory=DemandModel)
    cpu_request: float = 0.5
    cpu_limit: float = 0.5
    memory_request_mib: float = 512.0
    memory_limit_mib: float = 512.0
    overhead_ms: float = 23.5
    cfs_period_ms: float = 100.0
    burst_cores: float = 2.0
    contention: float = 0.051
    contention_cap: float = 1.0
    mem_base_mib: float = 110.0
    mem_per_request_mib: float = 3.0
    sidecar: Sidecar | None = None

    @property
    def pod_cpu_request(self) -> float:
        """The pod's CPU request, cores (app and sidecar)."""
        return self.cpu_request + (self.sidecar.cpu_request if self.sidecar else 0.0)

    @property
    def pod_cpu_limit(self) -> float:
        return self.cpu_limit + (self.sidecar.cpu_limit if self.sidecar else 0.0)

    @property
    def pod_memory_request_mib(self) -> float:
        return self.memory_request_mib + (self.sidecar.memory_request_mib if self.sidecar else 0.0)

    @property
    def pod_memory_limit_mib(self) -> float:
        return self.memory_limit_mib + (self.sidecar.memory_limit_mib if self.sidecar else 0.0)

    def __post_init__(self) -> None:
        for name in ("cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib",
                     "cfs_period_ms", "burst_cores"):
            if getattr(self, name) <= 0:
                raise ValueError(f"app.{name} must be > 0, got {getattr(self, name)}")
        if self.cpu_request > self.cpu_limit:
            raise ValueError(
                f"app.cpu_request={self.cpu_request} exceeds app.cpu_limit={self.cpu_limit}"
            )
        if self.overhead_ms < 0:
            raise ValueError(f"app.overhead_ms must be >= 0, got {self.overhead_ms}")

    def with_overrides(self, **changes) -> AppProfile:
        """A copy with some fields changed (``demand`` and ``sidecar`` may be dicts of
        their fields; ``sidecar: none`` removes it)."""
        sidecar = changes.pop("sidecar", ...)
        if sidecar == "none":
            changes["sidecar"] = None
        elif isinstance(sidecar, dict):
            changes["sidecar"] = Sidecar(**{**(self.sidecar or Sidecar()).__dict__, **sidecar})
        elif sidecar is not ...:
            changes["sidecar"] = sidecar
        demand = changes.pop("demand", None)
        if isinstance(demand, dict):
            merged = {**self.demand.__dict__, **demand}
            if demand.get("kind") and demand["kind"] != self.demand.kind:
                merged = {"kind": demand["kind"], **demand}
            changes["demand"] = DemandModel(**merged)
        elif demand is not None:
            changes["demand"] = demand
        return replace(self, **changes)


#: The paper's platform: 0.5-core app containers, /ConsumeFixedCpu?cpu=200, beside
#: Istio 1.6's sidecar (its CPU and memory are in the pod's, as the paper's logs show:
#: cpu_perc_request / cpu_perc_limit = 2.5 / 0.6).
#: Fitted to paper-calibration.csv by two random searches over (cpu_ms, cv, overhead_ms,
#: burst_cores, contention, contention_cap), the second weighting the cells at the SLO's
#: edge (10/1, 25/2, 35/3, 50/4 users/replicas); see simulator/calibration.py. The pods ran
#: Apache with several worker processes, hence two cores of burst within the quota.
PAPER = AppProfile(sidecar=Sidecar())

#: A sandbox service running student submissions: lognormal CPU time, median 500 ms,
#: p95 about 0.97 s, cut at a 10 s CPU limit; one-core replicas.
SANDBOX = AppProfile(
    name="sandbox",
    demand=DemandModel(kind="sandbox", median_ms=500.0, sigma=0.4, timeout_ms=10_000.0),
    cpu_request=1.0,
    cpu_limit=1.0,
    memory_request_mib=512.0,
    memory_limit_mib=1024.0,
    overhead_ms=20.0,
    burst_cores=1.0,
    contention=0.0,
    mem_base_mib=150.0,
    mem_per_request_mib=40.0,
)

PROFILES = {"paper": PAPER, "sandbox": SANDBOX}


def think_times(rng: np.random.Generator, n: int, low_s: float, high_s: float) -> np.ndarray:
    """Locust's ``wait_time = between(low, high)``: uniform think times, s."""
    return rng.uniform(low_s, high_s, n)
