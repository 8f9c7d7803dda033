"""Seeded random models that feed the event core, and the app profiles.

Every model draws from a ``numpy.random.Generator`` it is given; none keeps global state.
Units: demands in CPU seconds, times in seconds, memory in MiB.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

DEMAND_KINDS = ("fixed-cpu", "exponential", "sandbox", "corpus")


@functools.lru_cache(maxsize=8)
def corpus_demand(corpus: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The measured CPU times of a submission corpus (s), their probabilities and the
    corpus's CPU-time limit (s): :func:`scalelab.injector.corpus.demand_samples`."""
    from scalelab.injector.corpus import demand_samples, load_corpus

    c = load_corpus(corpus)
    values, probs = demand_samples(c)
    return values, probs, float(c.limits["cpu_seconds"])


@dataclass(frozen=True)
class DemandModel:
    """CPU work of one request.

    kind:
        ``fixed-cpu``: the paper's ``/ConsumeFixedCpu``: ``cpu_ms`` of CPU with a gamma
        spread of coefficient of variation ``cv`` (0 gives a constant);
        ``exponential``: exponential with mean ``mean_ms``;
        ``sandbox``: a submitted program: lognormal with median ``median_ms`` and shape
        ``sigma`` (heavy tailed), cut at the sandbox's CPU-time limit ``timeout_ms``;
        ``corpus``: a submission of the corpus ``corpus`` (``v1``: the shipped one, or a
        file), drawn from its CPU times measured in the live sandbox (empirical, the
        programs killed at the CPU limit included), times ``scale``, plus ``add_ms`` of
        CPU (what calibration fits: the replica's own work around each run, and runs
        slowed by each other); the limit is the corpus's.
    """

    kind: str = "fixed-cpu"
    cpu_ms: float = 44.6
    cv: float = 0.355
    mean_ms: float = 45.0
    median_ms: float = 300.0
    sigma: float = 1.2
    timeout_ms: float = 30_000.0
    corpus: str = "v1"
    scale: float = 1.0
    add_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DEMAND_KINDS:
            raise ValueError(f"demand.kind={self.kind!r} is not one of {DEMAND_KINDS}")
        for name in ("cpu_ms", "mean_ms", "median_ms", "timeout_ms", "scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"demand.{name} must be > 0, got {getattr(self, name)}")
        if self.cv < 0 or self.sigma < 0 or self.add_ms < 0:
            raise ValueError("demand.cv, demand.sigma and demand.add_ms must be >= 0")

    @property
    def timeout_s(self) -> float:
        """CPU-time cap of one request, s (infinite except for ``sandbox`` and ``corpus``)."""
        if self.kind == "corpus":  # a run stopped at the limit, and the replica's work around it
            return corpus_demand(self.corpus)[2] * self.scale + self.add_ms / 1000.0
        return self.timeout_ms / 1000.0 if self.kind == "sandbox" else np.inf

    @property
    def mean_s(self) -> float:
        """Mean CPU demand, s (before the timeout cap)."""
        if self.kind == "fixed-cpu":
            return self.cpu_ms / 1000.0
        if self.kind == "exponential":
            return self.mean_ms / 1000.0
        if self.kind == "corpus":
            values, probs, _ = corpus_demand(self.corpus)
            return float((values * probs).sum()) * self.scale + self.add_ms / 1000.0
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
        if self.kind == "corpus":
            values, probs, _ = corpus_demand(self.corpus)
            return values[rng.choice(len(values), size=n, p=probs)] * self.scale + self.add_ms / 1000.0
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

#: A sandbox service running student submissions: the CPU times of the submission corpus
#: (``injector/data/corpus-v1.json``) measured in the live sandbox (median about 30 ms,
#: 3.5 % stopped at the 2 s CPU limit), on one-core replicas. ``demand.scale``,
#: ``demand.add_ms`` and ``overhead_ms`` were fitted (``scalelab calibrate --dataset ...
#: --profile sandbox --steps 300 --fit 40``) to a live recording of this project's sandbox
#: service with corpus students (users 8, 16, 24 x replicas 1, 2, 3 of half a core, 10
#: samples per cell, ``scalelab dataset record --backend live``): a submission costs its
#: replica about 0.37 s of CPU (the run's own 0.14 s, the sandbox's setup and the
#: server), as the replicas' cgroups measured (0.43 s, benchmarks/bench_students.py), and
#: this profile predicts the live evaluation week (docs/evaluation-week.md). A fit to the
#: shipped recording (``simulator/data/live-sandbox-students.parquet``) alone reads its
#: quantiles better (median error 19.5 % against this profile's 51 %) with 0.30 s of CPU, and predicts the
#: live week worse: 10 samples per cell do not pin the CPU down.
SANDBOX = AppProfile(
    name="sandbox",
    demand=DemandModel(kind="corpus", corpus="v1", scale=1.352, add_ms=178.1),
    cpu_request=1.0,
    cpu_limit=1.0,
    memory_request_mib=512.0,
    memory_limit_mib=1024.0,
    overhead_ms=13.8,
    burst_cores=1.0,
    contention=0.0,
    mem_base_mib=150.0,
    mem_per_request_mib=40.0,
)

PROFILES = {"paper": PAPER, "sandbox": SANDBOX}


def profiles_dir() -> Path:
    """Where fitted profiles are saved and looked up by name: ``$SCALELAB_PROFILES``, or
    ``~/.scalelab/profiles``."""
    return Path(os.environ.get("SCALELAB_PROFILES") or Path.home() / ".scalelab" / "profiles").expanduser()


def profile_to_dict(app: AppProfile) -> dict:
    return asdict(app)


def profile_from_dict(data: dict) -> AppProfile:
    """An :class:`AppProfile` from :func:`profile_to_dict`'s mapping (``ValueError``
    naming a bad field)."""
    data = dict(data)
    demand = DemandModel(**data.pop("demand", {}))
    sidecar = data.pop("sidecar", None)
    return AppProfile(demand=demand, sidecar=Sidecar(**sidecar) if sidecar else None, **data)


def save_profile(app: AppProfile, path: Path | None = None) -> Path:
    """Save ``app`` as JSON (default: ``profiles_dir() / (app.name + ".json")``)."""
    path = path or profiles_dir() / f"{app.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile_to_dict(app), indent=1) + "\n")
    return path


def find_profile(name: str) -> AppProfile:
    """A built-in profile, a saved one by name (in :func:`profiles_dir`) or a JSON file;
    ``KeyError`` saying where it looked."""
    if name in PROFILES:
        return PROFILES[name]
    path = Path(name).expanduser() if name.endswith(".json") else profiles_dir() / f"{name}.json"
    if not path.is_file():
        saved = sorted(p.stem for p in profiles_dir().glob("*.json")) if profiles_dir().is_dir() else []
        raise KeyError(f"app.profile={name!r} is not a built-in profile ({sorted(PROFILES)}), a saved one "
                       f"({saved} in {profiles_dir()}) or a .json file")
    try:
        return profile_from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise KeyError(f"app.profile={name!r}: {path} is not a saved profile ({exc})") from None


def think_times(rng: np.random.Generator, n: int, low_s: float, high_s: float) -> np.ndarray:
    """Locust's ``wait_time = between(low, high)``: uniform think times, s."""
    return rng.uniform(low_s, high_s, n)
