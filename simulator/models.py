"""Seeded random models that feed the event core, and the app profiles.

Every model draws from a ``numpy.random.Generator`` it is given; none keeps global state.
Units: demands in CPU seconds, times in seconds, memory in MiB.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

#: The parameters each demand kind reads. A demand states those of its kind: the ones
#: without a default below have none, so no kind inherits another profile's fit.
DEMAND_PARAMETERS = {
    "fixed-cpu": ("cpu_ms", "cv"),
    "exponential": ("mean_ms",),
    "sandbox": ("median_ms", "sigma", "timeout_ms"),
    "corpus": ("corpus", "scale", "add_ms", "stopped"),
}
DEMAND_KINDS = tuple(DEMAND_PARAMETERS)
#: How a corpus demand costs a run the measurement saw stopped at the CPU limit.
STOPPED_COSTS = ("measured", "scaled")


class _Unstated:
    """The default of a field a profile must state: constructing without it raises."""

    def __repr__(self) -> str:
        return "<unstated>"


#: See :class:`_Unstated`.
UNSTATED: Any = _Unstated()


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
        programs killed at the CPU limit included), times ``scale`` and cut at the
        corpus's CPU limit, a run stopped at the limit when measured costing what it cost
        then (``stopped``: ``measured``, as the sandbox stops a program at the limit of
        its own CPU; or ``scaled``, like the others), plus ``add_ms`` of CPU (what calibration fits: the replica's own work around each
        run, and runs slowed by each other).

    ``kind`` and its parameters (:data:`DEMAND_PARAMETERS`) have no defaults, except the
    corpus kind's, which draw the shipped corpus as measured (``v1``, ``scale`` 1,
    ``add_ms`` 0); the parameters of the other kinds may stay ``None``.
    """

    kind: str = UNSTATED
    cpu_ms: float | None = None
    cv: float | None = None
    mean_ms: float | None = None
    median_ms: float | None = None
    sigma: float | None = None
    timeout_ms: float | None = None
    corpus: str = "v1"
    scale: float = 1.0
    add_ms: float = 0.0
    stopped: str = "measured"

    def __post_init__(self) -> None:
        if self.kind is UNSTATED:
            raise TypeError(f"demand.kind is not stated: one of {DEMAND_KINDS}")
        if self.kind not in DEMAND_KINDS:
            raise ValueError(f"demand.kind={self.kind!r} is not one of {DEMAND_KINDS}")
        missing = [f"demand.{n}" for n in DEMAND_PARAMETERS[self.kind] if getattr(self, n) is None]
        if missing:
            raise ValueError(f"demand.kind={self.kind!r} needs {', '.join(missing)}: a demand states the "
                             f"parameters of its kind (they have no defaults, so none is another profile's fit)")
        for name in ("cpu_ms", "mean_ms", "median_ms", "timeout_ms", "scale"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"demand.{name} must be > 0, got {getattr(self, name)}")
        if self.stopped not in STOPPED_COSTS:
            raise ValueError(f"demand.stopped={self.stopped!r} is not one of {STOPPED_COSTS}")
        if any(v is not None and v < 0 for v in (self.cv, self.sigma, self.add_ms)):
            raise ValueError("demand.cv, demand.sigma and demand.add_ms must be >= 0")

    @property
    def timeout_s(self) -> float:
        """CPU-time cap of one request, s (infinite except for ``sandbox`` and ``corpus``)."""
        if self.kind == "corpus":  # a run stopped at the limit, and the replica's work around it
            scale = self.scale if self.stopped == "scaled" else 1.0
            return corpus_demand(self.corpus)[2] * scale + self.add_ms / 1000.0
        return self.timeout_ms / 1000.0 if self.kind == "sandbox" else np.inf

    @property
    def mean_s(self) -> float:
        """Mean CPU demand, s (before the timeout cap)."""
        if self.kind == "fixed-cpu":
            return self.cpu_ms / 1000.0
        if self.kind == "exponential":
            return self.mean_ms / 1000.0
        if self.kind == "corpus":
            values, probs = self.corpus_cpu_s()
            return float((values * probs).sum()) + self.add_ms / 1000.0
        return self.median_ms / 1000.0 * float(np.exp(self.sigma**2 / 2))

    def corpus_cpu_s(self) -> tuple[np.ndarray, np.ndarray]:
        """The corpus's runs as this model costs them (s of CPU, before ``add_ms``) and
        their probabilities: each measured CPU time times ``scale``, cut at the corpus's
        CPU limit; a run that was stopped at the limit when measured (within 10 % of it:
        the never-ending programs) costs what it cost then, whatever the scale -- the
        sandbox stops a program at the limit of its own CPU time (``RLIMIT_CPU``),
        however fast or slowly it ran. ``stopped="scaled"`` scales every run, those at
        the limit too, as profiles fitted before this was modelled did."""
        values, probs, limit = corpus_demand(self.corpus)
        return self._costed(values, limit), probs

    def _costed(self, values: np.ndarray, limit: float) -> np.ndarray:
        """Measured CPU times (s) as this model costs them (:meth:`corpus_cpu_s`)."""
        if self.stopped == "scaled":
            return values * self.scale
        return np.where(values >= 0.9 * limit, values, np.minimum(values * self.scale, limit))

    def program_demands_s(self) -> list[np.ndarray]:
        """Per program of the corpus (in its order: :meth:`Corpus.pick`'s index), the
        demands its measured runs make as this model costs them, plus ``add_ms`` (s):
        what one submission of that program costs is one of them."""
        if self.kind != "corpus":
            raise ValueError(f"demand.kind={self.kind!r} has no programs (only 'corpus' has)")
        from scalelab.injector.corpus import load_corpus, program_cpu_s

        limit = corpus_demand(self.corpus)[2]
        return [self._costed(v, limit) + self.add_ms / 1000.0 for v in program_cpu_s(load_corpus(self.corpus))]

    @property
    def capped_mean_s(self) -> float:
        """Mean CPU a request costs, s: the demand cut at its CPU-time cap
        (:attr:`timeout_s`), what a replica's cgroup counts per request; exact for every
        kind (the lognormal's partial expectation for ``sandbox``).

        >>> DemandModel(kind="sandbox", median_ms=100.0, sigma=1e-9, timeout_ms=50.0).capped_mean_s
        0.05"""
        if self.kind != "sandbox":
            return self.mean_s  # uncapped, or (corpus) capped at its largest value
        from scipy.stats import norm

        mu, s, cap = np.log(self.median_ms / 1000.0), self.sigma, self.timeout_s
        below = np.exp(mu + s**2 / 2) * norm.cdf((np.log(cap) - mu - s**2) / s)
        return float(below + cap * norm.sf((np.log(cap) - mu) / s))

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
            values, probs = self.corpus_cpu_s()
            return values[rng.choice(len(values), size=n, p=probs)] + self.add_ms / 1000.0
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


#: The :class:`AppProfile` fields every profile states: they have no default, so a new
#: profile never inherits another one's fit (copy a built-in one with
#: ``find_profile("paper").with_overrides(...)`` to start from its values).
STATED_FIELDS = ("demand", "cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib",
                 "overhead_ms", "burst_cores", "contention")


@dataclass(frozen=True)
class AppProfile:
    """The scaled service as the simulator sees it.

    Stated (no default, :data:`STATED_FIELDS`): what every profile must say.

    demand: the CPU work of one request (:class:`DemandModel`).
    cpu_request, cpu_limit: cores per replica.
    memory_request_mib, memory_limit_mib: per replica.
    overhead_ms: network + sidecar time added to every response, no CPU (0: none).
    burst_cores: cores a replica can use at once while it has budget (1 = one
        interpreter); each request uses at most one core.
    contention: each other request in service makes a request's CPU work cost this
        fraction more (interpreter/GIL and cache contention in a threaded server), up to
        ``contention_cap`` other requests (0: none).

    Neutral defaults (the term is absent, or the platform's own value):

    name: ``unnamed``.
    cfs_period_ms: the CFS bandwidth period (Linux's default, 100 ms); the replica may
        use ``cpu_limit * cfs_period_ms`` of CPU per period, then waits for the next one.
    contention_cap: no cap (``inf``).
    mem_base_mib, mem_per_request_mib: working set = base + per_request * in-flight
        (0 and 0: memory not modelled).
    sidecar: the proxy beside the app in every pod (:class:`Sidecar`), or none (the
        default); the ``pod_*`` properties are the pod's totals.
    wall_limit_ms: a request still running this long after it reached its replica is
        killed and answered then (the sandbox's wall limit on a run), ms; None: no limit.
    provenance: where each value came from, field (``demand.cpu_ms``,
        ``sidecar.idle_cores``) -> source: a fit and its data (the source begins with
        ``fitted``), a platform's setting, or a value set by hand; :func:`provenance_table`
        lists them. Not part of ``==`` or the hash (two profiles that simulate alike are
        equal); :meth:`with_overrides` marks what it changes.
    """

    name: str = "unnamed"
    demand: DemandModel = UNSTATED
    cpu_request: float = UNSTATED
    cpu_limit: float = UNSTATED
    memory_request_mib: float = UNSTATED
    memory_limit_mib: float = UNSTATED
    overhead_ms: float = UNSTATED
    cfs_period_ms: float = 100.0
    burst_cores: float = UNSTATED
    contention: float = UNSTATED
    contention_cap: float = math.inf
    mem_base_mib: float = 0.0
    mem_per_request_mib: float = 0.0
    sidecar: Sidecar | None = None
    wall_limit_ms: float | None = None
    provenance: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

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
        missing = [f.name for f in fields(self) if getattr(self, f.name) is UNSTATED]
        if missing:
            raise TypeError(
                f"app profile {self.name!r} does not state {', '.join(missing)}: a profile states its "
                f"{', '.join(STATED_FIELDS)} (no defaults, so nothing is inherited from another profile's "
                f"fit); to start from a built-in one, find_profile('paper').with_overrides(...)")
        if not isinstance(self.demand, DemandModel):
            raise TypeError(f"app.demand must be a DemandModel, got {type(self.demand).__name__}")
        for name in ("cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib",
                     "cfs_period_ms", "burst_cores"):
            if getattr(self, name) <= 0:
                raise ValueError(f"app.{name} must be > 0, got {getattr(self, name)}")
        if self.cpu_request > self.cpu_limit:
            raise ValueError(
                f"app.cpu_request={self.cpu_request} exceeds app.cpu_limit={self.cpu_limit}"
            )
        for name in ("overhead_ms", "contention", "contention_cap", "mem_base_mib", "mem_per_request_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"app.{name} must be >= 0, got {getattr(self, name)}")
        w = self.wall_limit_ms
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | float) or not w > 0):
            raise ValueError(f"app.wall_limit_ms must be a number of ms > 0, or none (no limit), got {w!r}")

    def with_overrides(self, *, source: str = "overridden", **changes) -> AppProfile:
        """A copy with some fields changed (``demand`` and ``sidecar`` may be dicts of
        their fields; ``sidecar: none`` removes it). A demand dict of another kind starts
        from that kind's :data:`EXAMPLE_DEMANDS` (none of this profile's parameters carry
        over), and the provenance says so; a new sidecar starts from Istio 1.6's. The
        provenance of each value that changes becomes ``source``."""
        prov = dict(self.provenance)

        def mark(prefix: str, new: dict, old: dict | None) -> None:
            for key, value in new.items():
                if old is None or old.get(key, UNSTATED) != value:
                    prov[prefix + key] = source

        def drop(name: str) -> None:
            for key in [k for k in prov if k == name or k.startswith(name + ".")]:
                del prov[key]

        sidecar = changes.pop("sidecar", ...)
        if isinstance(sidecar, str) and sidecar == "none":
            sidecar = None
        if isinstance(sidecar, dict):
            if self.sidecar is None:  # a new sidecar: Istio 1.6's, with the changes
                drop("sidecar")
                prov.update({f"sidecar.{k}": ISTIO_SIDECAR for k in Sidecar.__dataclass_fields__})
            mark("sidecar.", sidecar, self.sidecar.__dict__ if self.sidecar else None)
            changes["sidecar"] = Sidecar(**{**(self.sidecar or Sidecar()).__dict__, **sidecar})
        elif sidecar is not ...:
            if sidecar != self.sidecar:
                drop("sidecar")
                if sidecar is None:
                    prov["sidecar"] = source
                else:
                    mark("sidecar.", sidecar.__dict__, None)
            changes["sidecar"] = sidecar
        demand = changes.pop("demand", None)
        if isinstance(demand, dict):
            if demand.get("kind") and demand["kind"] != self.demand.kind:  # from the new kind's example
                known = demand["kind"] in EXAMPLE_DEMANDS  # (an unknown one: DemandModel says so)
                example = _stated_demand(EXAMPLE_DEMANDS[demand["kind"]]) if known else {}
                merged = {**example, **demand}
                drop("demand")
                prov.update({f"demand.{k}": EXAMPLE_SOURCES[demand["kind"]] for k in example if k not in demand})
                mark("demand.", demand, None)
            else:
                merged = {**self.demand.__dict__, **demand}
                mark("demand.", demand, self.demand.__dict__)
            changes["demand"] = DemandModel(**merged)
        elif demand is not None:
            changes["demand"] = demand
            drop("demand")
            mark("demand.", _stated_demand(demand), None)
        mark("", {k: v for k, v in changes.items() if k not in ("name", "demand", "sidecar")}, self.__dict__)
        return replace(self, provenance=prov, **changes)


def _stated_demand(demand: DemandModel) -> dict:
    """The kind and the parameters ``demand`` reads."""
    return {"kind": demand.kind, **{k: getattr(demand, k) for k in DEMAND_PARAMETERS[demand.kind]}}


# -- The built-in profiles, every value stated with where it came from -----------------

#: Istio 1.6's sidecar as :class:`Sidecar`'s defaults describe it.
ISTIO_SIDECAR = "Istio 1.6's published defaults and performance page (scalelab.simulator.models.Sidecar)"

_PAPER_PLATFORM = "the paper's platform: its app container's request = limit (0.5 core, 512 MiB)"
_PAPER_FIT = ("fitted to simulator/data/paper-calibration.csv (the paper's logged mean p95 per users x replicas) by "
              "two random searches (simulator/calibration.py, commit 4cf0d13); checked on "
              "simulator/data/paper-D1-p95.json (docs/hslinucb.md, 'The data')")
_BY_HAND = "set by hand with the first simulator (commit 3248ace), not fitted: no measurement behind it"
_LINUX = "Linux's default CFS period"

#: The paper's platform: 0.5-core app containers, /ConsumeFixedCpu?cpu=200, beside
#: Istio 1.6's sidecar (its CPU and memory are in the pod's, as the paper's logs show:
#: cpu_perc_request / cpu_perc_limit = 2.5 / 0.6).
#: Fitted to paper-calibration.csv by two random searches over (cpu_ms, cv, overhead_ms,
#: burst_cores, contention, contention_cap), the second weighting the cells at the SLO's
#: edge (10/1, 25/2, 35/3, 50/4 users/replicas); see simulator/calibration.py. The pods ran
#: Apache with several worker processes, hence two cores of burst within the quota.
#: Checked against the paper's D1 samples (paper-D1-p95.json), where a search of its own
#: found nothing better (docs/hslinucb.md, "The data").
PAPER = AppProfile(
    name="paper",
    demand=DemandModel(kind="fixed-cpu", cpu_ms=44.6, cv=0.355),
    cpu_request=0.5,
    cpu_limit=0.5,
    memory_request_mib=512.0,
    memory_limit_mib=512.0,
    overhead_ms=23.5,
    cfs_period_ms=100.0,
    burst_cores=2.0,
    contention=0.051,
    contention_cap=1.0,
    mem_base_mib=110.0,
    mem_per_request_mib=3.0,
    sidecar=Sidecar(cpu_request=0.1, cpu_limit=2.0, memory_request_mib=128.0, memory_limit_mib=1024.0,
                    idle_cores=0.004, cpu_ms_per_request=0.6, memory_mib=50.0),
    provenance={
        "demand.kind": "the paper's load: Locust users GET /ConsumeFixedCpu?cpu=200, think time between(0, 2)",
        "demand.cpu_ms": _PAPER_FIT,
        "demand.cv": _PAPER_FIT,
        "cpu_request": _PAPER_PLATFORM,
        "cpu_limit": _PAPER_PLATFORM,
        "memory_request_mib": _PAPER_PLATFORM,
        "memory_limit_mib": _PAPER_PLATFORM,
        "overhead_ms": _PAPER_FIT,
        "cfs_period_ms": _LINUX,
        "burst_cores": _PAPER_FIT,
        "contention": _PAPER_FIT,
        "contention_cap": _PAPER_FIT,
        "mem_base_mib": _BY_HAND,
        "mem_per_request_mib": _BY_HAND,
        "sidecar.cpu_request": "Istio 1.6's default proxy request (0.1 core); the paper's platform ran Istio 1.6",
        "sidecar.cpu_limit": "Istio 1.6's default proxy limit (2 cores)",
        "sidecar.memory_request_mib": "Istio 1.6's default proxy request (128 MiB)",
        "sidecar.memory_limit_mib": "Istio 1.6's default proxy limit (1024 MiB)",
        "sidecar.idle_cores": "set by hand with the sidecar (commit a0ed64d), not measured",
        "sidecar.cpu_ms_per_request": "Istio 1.6's performance page: 0.6 vCPU per 1000 requests/s (scripts/"
                                      "paper_factorial.py --real-week: it decides threshold-cpu's violations)",
        "sidecar.memory_mib": "Istio 1.6's performance page: about 50 MB",
        "wall_limit_ms": "none: the paper's endpoint computes a fixed amount of CPU and kills no request",
    },
)

_SANDBOX_FIT = ("fitted by scalelab calibrate --profile sandbox --steps 300 --fit 40 (commit 4c040fc) to the live "
                "recording then shipped as simulator/data/live-sandbox-students.parquet (re-recorded in a98e56b, the "
                "values kept; replaced on 2026-12-07 by a recording of 40 samples per cell, which measured 273 ms "
                "of replica CPU per request where this profile spends 369: see sandbox-live)")
_SANDBOX_BY_HAND = "set by hand with the first sandbox profile (commit 3248ace), not fitted"
_SANDBOX_REPLICA = _SANDBOX_BY_HAND + "; the live stack's replicas are sized from it (experiments/live.py)"

#: A sandbox service running student submissions: the CPU times of the submission corpus
#: (``injector/data/corpus-v1.json``) measured in the live sandbox (median about 30 ms,
#: 3.5 % stopped at the 2 s CPU limit), on one-core replicas. ``demand.scale``,
#: ``demand.add_ms`` and ``overhead_ms`` were fitted (``scalelab calibrate --dataset ...
#: --profile sandbox --steps 300 --fit 40``) to a live recording of this project's sandbox
#: service with corpus students (users 8, 16, 24 x replicas 1, 2, 3 of half a core, 10
#: samples per cell, ``scalelab dataset record --backend live``): a submission costs its
#: replica about 0.37 s of CPU (the run's own 0.14 s, the sandbox's setup and the
#: server), as the replicas' cgroups measured at saturation (0.43 s, benchmarks/bench_students.py).
#: A fit to that recording alone read its quantiles better (median error 19.5 % against
#: this profile's 51 %) with 0.30 s of CPU and predicted the live week worse: 10 samples
#: per cell do not pin the CPU down. The recording that replaced it in
#: ``simulator/data/`` (40 samples per cell, the replicas' CPU beside each sample) measured
#: 273 ms of CPU per request (95 %: 258-294): this profile's 369 ms are 35 % high, which
#: made HPA hold 48 % more replica-hours in the twin than live; ``sandbox-live`` is the
#: fit held to the measured CPU, on which the live week's twin runs.
SANDBOX = AppProfile(
    name="sandbox",
    demand=DemandModel(kind="corpus", corpus="v1", scale=1.352, add_ms=178.1, stopped="scaled"),
    cpu_request=1.0,
    cpu_limit=1.0,
    memory_request_mib=512.0,
    memory_limit_mib=1024.0,
    overhead_ms=13.8,
    cfs_period_ms=100.0,
    burst_cores=1.0,
    contention=0.0,
    mem_base_mib=150.0,
    mem_per_request_mib=40.0,
    sidecar=None,
    wall_limit_ms=10_000.0,
    provenance={
        "demand.kind": "student submissions (commit 4c040fc; live: injector/locustfile.py StudentUser, POST /run)",
        "demand.corpus": "injector/data/corpus-v1.json: the corpus's CPU times measured in the live sandbox "
                         "(scalelab corpus measure; docs/evaluation-week.md)",
        "demand.scale": _SANDBOX_FIT,
        "demand.add_ms": _SANDBOX_FIT,
        "demand.stopped": "as fitted in 4c040fc: the runs stopped at the CPU limit scaled like the others "
                          "(2.9 s of CPU with this scale, where the sandbox stops a program at 2 s of its own)",
        "cpu_request": _SANDBOX_REPLICA,
        "cpu_limit": _SANDBOX_REPLICA,
        "memory_request_mib": _SANDBOX_REPLICA,
        "memory_limit_mib": _SANDBOX_REPLICA,
        "overhead_ms": _SANDBOX_FIT,
        "wall_limit_ms": "sandbox/app.py PROOF_LIMITS.wall_seconds: a run is killed 10 s after it starts",
        "cfs_period_ms": _LINUX,
        "burst_cores": _SANDBOX_BY_HAND + " (its CPU limit, one core)",
        "contention": _SANDBOX_BY_HAND + " (none)",
        "mem_base_mib": _SANDBOX_BY_HAND,
        "mem_per_request_mib": _SANDBOX_BY_HAND,
        "sidecar": "none: the local stack runs no proxy",
    },
)

_PAPER_D2_FIT = ("fitted to the paper's D2 samples (simulator/data/paper-D2-p95.json, 32 cells, the known positions) "
                 "by scalelab.simulator.calibration.fit_to_samples(PAPER, candidates=40, seed=0, recording=D2): "
                 "sample loss 0.069 -> 0.059 (median quantile error 11.2 % -> 8.7 %, fraction above 600 ms "
                 "1.3 -> 1.5 points)")

#: The paper's platform as its second recording (D2) measured it: the same pods, slower
#: requests (more replicas for the same users: 10 users -> 2, 35 -> 4, 45 -> 5, paper.md
#: section 5). The searched fields were fitted to D2's own known samples; the rest is the
#: paper profile's. It fills the positions of ``dataset: paper-D2`` the logs never revealed.
PAPER_D2 = PAPER.with_overrides(
    demand={"cpu_ms": 40.99, "cv": 0.4714}, overhead_ms=29.69, contention=0.07040,
    source=_PAPER_D2_FIT)
PAPER_D2 = replace(PAPER_D2, name="paper-D2")

_SANDBOX_LIVE_FIT = (
    "fitted by scalelab calibrate --dataset simulator/data/live-sandbox-students.parquet --profile START.json "
    "--fit 400 --steps 150 (seed 0; START.json: the sandbox profile with demand.stopped measured, "
    "save_profile(SANDBOX.with_overrides(demand={'stopped': 'measured'}))), the CPU per request its simulated "
    "replicas spent over the recording's cells held to the 258-294 ms the replicas' cgroups measured beside the "
    "samples, through one estimator (47 of 401 candidates inside; the best at 258 ms, its lower bound): median "
    "|quantile error| 47.2 % -> 16.7 % (the recording's two passes of each cell differ from each other by 25.0 %), "
    "worst 152 % -> 104 %; the fraction above 6 s within 0.028 on average")

#: The sandbox service as the live recording of 2026-12-07 measured it
#: (``simulator/data/live-sandbox-students.parquet``: users 5-25 x replicas 1-3 of half a
#: core, 40 samples per cell, the replicas' CPU from their cgroups beside each sample):
#: ``demand.scale``, ``demand.add_ms`` and ``overhead_ms`` fitted with the CPU per request
#: the simulated replicas spent held within the interval measured (273 ms, 95 % 258-294;
#: a profile stating 258 ms per request spent 240 over the recording's cells: runs killed
#: at the wall limit never finish their work, and the estimator reads below the stated
#: mean), a run stopped at the CPU
#: limit costing the 2 s it cost when measured (``stopped: measured``: the live sandbox
#: ends such a run after 4.1-4.5 s on an idle half-core replica, 5.7 s beside four
#: others). The live evaluation week's twin runs on it; the simulated weeks keep
#: ``sandbox`` until their shipped tables are re-run (it costs a request 35 % more CPU
#: than these replicas were measured to spend, docs/evaluation-week.md).
SANDBOX_LIVE = replace(
    SANDBOX.with_overrides(demand={"scale": 0.9236243, "add_ms": 143.05340, "stopped": "measured"}, overhead_ms=16.818108,
                           source=_SANDBOX_LIVE_FIT),
    name="sandbox-live")
SANDBOX_LIVE = replace(SANDBOX_LIVE, provenance={
    **SANDBOX_LIVE.provenance,
    "demand.stopped": "the live sandbox stops a run at 2 s of its own CPU (RLIMIT_CPU and its cgroup's accounting); "
                      "measured on a half-core replica: 1.99 s of CPU, 4.1-4.5 s alone (2026-12-07)"})

PROFILES = {"paper": PAPER, "paper-D2": PAPER_D2, "sandbox": SANDBOX, "sandbox-live": SANDBOX_LIVE}

#: One stated demand of each kind, where :meth:`AppProfile.with_overrides` switches a
#: profile to another kind (``demand: {kind: exponential}``; the fluid engine's validation
#: sweeps the kinds so): what the new kind's parameters start from. Not a default of
#: any profile; the provenance of a value taken from here says so (:data:`EXAMPLE_SOURCES`).
EXAMPLE_DEMANDS = {
    "fixed-cpu": PAPER.demand,
    "exponential": DemandModel(kind="exponential", mean_ms=45.0),
    "sandbox": DemandModel(kind="sandbox", median_ms=300.0, sigma=1.2, timeout_ms=30_000.0),
    "corpus": DemandModel(kind="corpus", corpus="v1"),
}
EXAMPLE_SOURCES = {
    "fixed-cpu": "EXAMPLE_DEMANDS['fixed-cpu']: the paper profile's fit",
    "exponential": "EXAMPLE_DEMANDS['exponential']: set by hand (commit 3248ace), not fitted",
    "sandbox": "EXAMPLE_DEMANDS['sandbox']: set by hand (commit 3248ace), not fitted",
    "corpus": "EXAMPLE_DEMANDS['corpus']: the v1 corpus as measured, unscaled",
}


def provenance_table(app: AppProfile) -> list[tuple[str, Any, str]]:
    """``(field, value, source)`` for every value of ``app`` that the simulator reads
    (the demand's kind and parameters, ``contention_cap`` when there is contention, the
    sidecar's fields when there is one), the source ``""`` where the profile does not say."""
    values: dict[str, Any] = {f"demand.{k}": v for k, v in _stated_demand(app.demand).items()}
    for f in fields(app):
        if f.name not in ("name", "demand", "sidecar", "provenance") and not (
                f.name == "contention_cap" and app.contention == 0):
            values[f.name] = getattr(app, f.name)
    if app.sidecar is None:
        values["sidecar"] = None
    else:
        values.update({f"sidecar.{k}": v for k, v in app.sidecar.__dict__.items()})
    return [(k, v, app.provenance.get(k, "")) for k, v in values.items()]


def profiles_dir() -> Path:
    """Where fitted profiles are saved and looked up by name: ``$SCALELAB_PROFILES``, or
    ``~/.scalelab/profiles``."""
    return Path(os.environ.get("SCALELAB_PROFILES") or Path.home() / ".scalelab" / "profiles").expanduser()


def profile_to_dict(app: AppProfile) -> dict:
    return asdict(app)


def profile_from_dict(data: dict) -> AppProfile:
    """An :class:`AppProfile` from :func:`profile_to_dict`'s mapping (``ValueError``
    naming a bad field). A corpus demand saved without ``stopped`` (before it was
    modelled: saved profiles, run folders' snapshots) is read as ``scaled``, as it was
    fitted and run; a demand written in a config states it or gets ``measured``."""
    data = dict(data)
    demand = dict(data.pop("demand", {}))
    if demand.get("kind") == "corpus" and "stopped" not in demand:
        demand["stopped"] = "scaled"  # saved before ``stopped`` was modelled: fitted so
    demand = DemandModel(**demand)
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
