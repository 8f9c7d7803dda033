"""Calibration of an app profile against the paper's measured p95 table.

``paper-calibration.csv`` (shipped in ``simulator/data``) holds the mean p95 by users ×
replicas that the paper logged on its real platform. :func:`calibrate` runs the
simulator at each cell in steady state (closed users, ``between(0, 2)`` think time), builds
the context exactly as the paper's code did (4000-span buffer, 12 s window) every 5 s
step, and compares the mean p95 over the steps with the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from importlib import resources
from typing import NamedTuple

import numpy as np
import pandas as pd

from scalelab.orchestrator.context import PAPER as PAPER_CONTEXT
from scalelab.orchestrator.context import ContextSettings
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.models import PAPER, AppProfile
from scalelab.simulator.oracle import steady_state_p95s, steady_state_steps


def paper_table(min_steps: int = 0) -> pd.DataFrame:
    """The paper's table: ``users, containers, mean_p95_ms, median_p95_ms, max_p95_ms,
    n_steps``; cells measured on fewer than ``min_steps`` steps are dropped."""
    with resources.files("scalelab.simulator.data").joinpath("paper-calibration.csv").open() as f:
        table = pd.read_csv(f)
    return table[table.n_steps >= min_steps].reset_index(drop=True)


def steady_state_p95(app: AppProfile, users: int, replicas: int, steps: int = 150,
                     seed: int = 0) -> float:
    """Mean over steps of the paper-mode p95 (ms) at a fixed population and replica count."""
    p95 = steady_state_p95s(app, ClusterSettings(), PAPER_CONTEXT, replicas, users=users,
                            steps=steps - 6, warmup=6, seed=seed)
    return float(np.mean(p95))


@dataclass(frozen=True)
class CalibrationResult:
    """Per-cell comparison (``table``) and the two headline errors (fractions)."""

    table: pd.DataFrame
    median_abs_error: float
    max_abs_error: float


def calibrate(app: AppProfile = PAPER, min_steps: int = 100, steps: int = 150, seed: int = 0,
              progress=None) -> CalibrationResult:
    """Compare ``app`` with the paper's table on every cell with ``>= min_steps`` steps."""
    table = paper_table(min_steps).copy()
    sim = []
    for row in table.itertuples():
        sim.append(steady_state_p95(app, int(row.users), int(row.containers), steps=steps, seed=seed))
        if progress is not None:
            progress(1)
    table["sim_p95_ms"] = sim
    table["error"] = (table.sim_p95_ms - table.mean_p95_ms) / table.mean_p95_ms
    err = table.error.abs()
    return CalibrationResult(table=table, median_abs_error=float(err.median()), max_abs_error=float(err.max()))


#: The quantiles compared per cell.
QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class SampleCalibration:
    """The simulator against measured p95 samples, per (users, replicas) cell
    (``table``): the measured samples (columns ``data_*``) and the simulator's per-step
    p95 at the same cell (``sim_*``): quantiles ``q10, q50, q90`` (ms), the fraction
    above the SLO (``above``), the mean; ``saturated`` marks a cell whose replicas used
    0.9 or more of their CPU limit as measured (``utilization``: its p95 grows without
    bound, so no steady-state profile matches it step for step). Headlines over the cells not saturated:
    ``median_q_error`` and ``worst_q_error`` (relative error of the quantiles),
    ``mean_above_error`` and ``worst_above_error`` (absolute error of the fraction above
    the SLO), ``mean_error`` (the old criterion: median relative error of the mean).
    ``cpu_per_request_s``: the CPU a request cost the simulated replicas over the cells
    (columns ``sim_cpu_cores``, ``sim_rps``), fitted as :func:`measured_cpu` fits the
    measured one (nan when the cells cannot tell it from the idle CPU)."""

    table: pd.DataFrame
    median_q_error: float
    mean_above_error: float
    mean_error: float
    worst_q_error: float = float("nan")
    worst_above_error: float = float("nan")
    cpu_per_request_s: float = float("nan")


def dataset_cells(frame: pd.DataFrame) -> dict[tuple[int, int], np.ndarray]:
    """A recorded dataset's p95 samples (ms) per (users, replicas) cell, without the
    samples whose signals were missing."""
    ok = frame if "missing" not in frame else frame[frame.missing.fillna("") == ""]
    return {(int(u), int(r)): g.sort_values("sample").p95_ms.to_numpy(float)
            for (u, r), g in ok.groupby(["users", "replicas"])}


def pass_distance(frame: pd.DataFrame, min_half: int = 5) -> tuple[float, float] | None:
    """How far a recording is from itself: per cell, the relative error of the second
    pass's q10, q50, q90 against the first's (the collector's ascending and descending
    passes, the cell's samples split by ``sample`` index as :func:`~scalelab.simulator.
    datasets.collect` takes them); the median and the worst over cells whose passes both
    have ``min_half`` samples. A calibration cannot be read closer than this; None when no
    cell has two such passes."""
    errors = []
    for samples in dataset_cells(frame).values():
        up = len(samples) - len(samples) // 2
        first, second = samples[:up], samples[up:]
        if min(len(first), len(second)) < min_half:
            continue
        errors += [abs(np.quantile(second, q) / np.quantile(first, q) - 1) for q in QUANTILES]
    return (float(np.median(errors)), float(np.max(errors))) if errors else None


def dataset_utilization(frame: pd.DataFrame) -> dict[tuple[int, int], float]:
    """The replicas' measured CPU usage / limit per (users, replicas) cell (the mean of
    the context's ``cpu_limit_ratio``)."""
    return {(int(u), int(r)): float(g.cpu_limit_ratio.mean()) for (u, r), g in frame.groupby(["users", "replicas"])}


def compare_cells(app: AppProfile, cells: dict[tuple[int, int], np.ndarray], settings: ClusterSettings | None = None,
                  context: ContextSettings = PAPER_CONTEXT, steps: int = 80, seed: int = 0, slo_ms: float = 600.0,
                  utilization: dict[tuple[int, int], float] | None = None, progress=None) -> SampleCalibration:
    """Compare ``app`` with measured p95 samples ``cells``: ``steps`` steady-state steps
    of the simulator per cell (think time and context as measured: ``settings``,
    ``context``). ``utilization``: the measured CPU usage / limit of the replicas per
    cell (:func:`dataset_utilization`), for ``saturated``."""
    settings = settings or ClusterSettings()
    rows = []
    for (users, replicas), known in sorted(cells.items()):
        measured = steady_state_steps(app, settings, context, replicas, users=users, steps=steps, warmup=6, seed=seed)
        sim = measured.p95_ms
        row = {"users": users, "replicas": replicas, "known": len(known),
               "data_mean": known.mean(), "sim_mean": sim.mean(),
               "data_above": float((known > slo_ms).mean()), "sim_above": float((sim > slo_ms).mean()),
               "sim_cpu_cores": float(measured.cpu_cores.mean()), "sim_rps": float(measured.rps.mean())}
        for q in QUANTILES:
            row[f"data_q{round(q * 100)}"] = float(np.quantile(known, q))
            row[f"sim_q{round(q * 100)}"] = float(np.quantile(sim, q))
        row["utilization"] = (utilization or {}).get((users, replicas), np.nan)
        row["saturated"] = bool(row["utilization"] >= 0.9)
        rows.append(row)
        if progress is not None:
            progress(1)
    t = pd.DataFrame(rows)
    for q in QUANTILES:
        name = f"q{round(q * 100)}"
        t[f"{name}_error"] = (t[f"sim_{name}"] - t[f"data_{name}"]) / t[f"data_{name}"]
    t["above_error"] = t.sim_above - t.data_above
    ok = t[~t.saturated]
    q_err = np.concatenate([ok[f"q{round(q * 100)}_error"].abs().to_numpy() for q in QUANTILES])
    if len(q_err) == 0:
        q_err = np.array([np.nan])
    per_request = np.nan
    if len(t) >= 3 and t.replicas.nunique() >= 2:
        per_request = _cpu_fit(t.rename(columns={"sim_cpu_cores": "cpu_cores", "sim_rps": "rps"}))[0]
    return SampleCalibration(
        table=t, median_q_error=float(np.median(q_err)), worst_q_error=float(np.max(q_err)),
        mean_above_error=float(ok.above_error.abs().mean()), worst_above_error=float(ok.above_error.abs().max()),
        mean_error=float(((ok.sim_mean - ok.data_mean) / ok.data_mean).abs().median()), cpu_per_request_s=per_request)


def calibrate_samples(app: AppProfile = PAPER, steps: int = 80, seed: int = 0, min_known: int = 10,
                      slo_ms: float = 600.0, progress=None, recording=None) -> SampleCalibration:
    """Compare ``app`` with the p95 samples of ``recording`` (a
    :class:`~scalelab.simulator.datasets.P95Recording`; default the paper's D1) on every
    cell with at least ``min_known`` known samples: ``steps`` steady-state steps of the
    paper's context (4000 spans, 12 s window) per cell."""
    from scalelab.simulator.recordings import read_p95_recording

    rec = recording if recording is not None else read_p95_recording()
    cells = {cell: np.array([v for v in samples if v is not None]) for cell, samples in rec.cells.items()}
    cells = {cell: v for cell, v in cells.items() if len(v) >= min_known}
    return compare_cells(app, cells, ClusterSettings(), PAPER_CONTEXT, steps, seed, slo_ms, progress=progress)


@dataclass(frozen=True)
class MeasuredCpu:
    """The CPU a request cost the replicas, as measured beside the latency (a dataset
    recorded live: the replicas' cgroups, ``replicas_cpu_cores``, and the request rate
    ``rps`` of each sample): per cell, the mean CPU (cores) and rate (1/s); fitted over
    the cells as ``cpu = idle_cores x replicas + cpu_per_request_s x rps`` (what an idle
    replica burns -- its server, its health checks and scrapes -- and what each request
    adds), with a 95 % bootstrap interval (samples resampled within cells)."""

    cells: pd.DataFrame  # users, replicas, samples, cpu_cores, rps (+ others_cpu, host_cpu, host_cpu_q95, steal)
    cpu_per_request_s: float
    low_s: float
    high_s: float
    idle_cores: float


def _cpu_fit(cells: pd.DataFrame) -> tuple[float, float]:
    """(CPU s per request, idle cores per replica): least squares without intercept."""
    x = np.column_stack([cells.rps.to_numpy(float), cells.replicas.to_numpy(float)])
    (per_request, idle), *_ = np.linalg.lstsq(x, cells.cpu_cores.to_numpy(float), rcond=None)
    return float(per_request), float(idle)


def measured_cpu(frame: pd.DataFrame, reps: int = 400, seed: int = 0, block: int = 6) -> MeasuredCpu | None:
    """:class:`MeasuredCpu` of a recorded dataset; None when it has no CPU beside its
    latency (recorded before the recorder measured it, or where cgroups cannot be read)
    or too few cells to fit (fewer than 3, or one replica count). The bootstrap resamples
    each cell's samples in blocks of ``block`` consecutive ones (a 30-s rate window over
    5-s steps: neighbours share five sixths of it)."""
    if "replicas_cpu_cores" not in frame:
        return None
    ok = frame[np.isfinite(frame.replicas_cpu_cores.astype(float)) & np.isfinite(frame.rps.astype(float))]
    if "source" in ok:  # replicas without a CPU quota: their CPU is not the service's
        ok = ok[~ok.source.astype(str).str.endswith(":no-cpu-quota")]
    if ok.empty:
        return None
    groups = [(int(u), int(r), g.replicas_cpu_cores.to_numpy(float), g.rps.to_numpy(float))
              for (u, r), g in ok.sort_values("sample").groupby(["users", "replicas"])]
    if len({r for _, r, _, _ in groups}) < 2 or len(groups) < 3:
        return None  # the idle and the per-request terms cannot be told apart

    def table(pick) -> pd.DataFrame:
        return pd.DataFrame([{"users": u, "replicas": r, "samples": len(c), "cpu_cores": c[i].mean(),
                              "rps": q[i].mean()} for (u, r, c, q), i in zip(groups, pick(groups), strict=True)])

    def blocks(n: int, rng: np.random.Generator) -> np.ndarray:
        """Consecutive samples resampled in blocks of ``block`` (their rates share a window)."""
        starts = rng.integers(0, max(n - block, 0) + 1, -(-n // block))
        return np.concatenate([np.arange(s, min(s + block, n)) for s in starts])[:n]

    cells = table(lambda gs: [np.arange(len(c)) for _, _, c, _ in gs])
    for name in ("others_cpu_cores", "host_cpu_cores", "steal_cores"):
        if name in ok:
            by_cell = ok.groupby(["users", "replicas"])[name]
            cells[name.replace("_cores", "")] = by_cell.mean().to_numpy()
            if name == "host_cpu_cores":
                cells["host_cpu_q95"] = by_cell.quantile(0.95).to_numpy()
    per_request, idle = _cpu_fit(cells)
    rng = np.random.default_rng(seed)
    boot = [_cpu_fit(table(lambda gs: [blocks(len(c), rng) for _, _, c, _ in gs]))[0] for _ in range(reps)]
    low, high = np.quantile(boot, [0.025, 0.975])
    return MeasuredCpu(cells, per_request, float(low), float(high), idle)


#: The profile fields :func:`fit_profile` searches, per demand kind, with the relative
#: spread of the search around the starting profile.
FIT_FIELDS = {
    "fixed-cpu": {"demand.cpu_ms": 0.12, "demand.cv": 0.3, "overhead_ms": 0.3, "contention": 0.5},
    "corpus": {"demand.scale": 0.5, "demand.add_ms": 1.5, "overhead_ms": 0.8},
    "sandbox": {"demand.median_ms": 0.4, "demand.sigma": 0.3, "overhead_ms": 0.8},
    "exponential": {"demand.mean_ms": 0.4, "overhead_ms": 0.8},
}


def sample_loss(result: SampleCalibration) -> float:
    """What :func:`fit_profile` minimises: the error of the fraction above the SLO
    (what produces violations) plus half the quantiles' median relative error."""
    return result.mean_above_error + 0.5 * result.median_q_error


#: Where a field at 0 starts its search (a factor of 0 would keep it there).
FIT_FLOOR = {"demand.add_ms": 50.0, "overhead_ms": 10.0}


def _field(app: AppProfile, key: str) -> tuple[object, str]:
    """Where a :data:`FIT_FIELDS` key lives: ``(app.demand, "scale")`` for
    ``demand.scale``, ``(app, "overhead_ms")`` for ``overhead_ms``."""
    return (app.demand, key.split(".", 1)[1]) if key.startswith("demand.") else (app, key)


def _perturbed(app: AppProfile, rng: np.random.Generator) -> AppProfile:
    demand, top = {}, {}
    for key, spread in FIT_FIELDS[app.demand.kind].items():
        factor = float(np.exp(rng.uniform(-spread, spread)))
        owner, name = _field(app, key)
        value = getattr(owner, name) or FIT_FLOOR.get(key, 0.0)
        (demand if owner is app.demand else top)[name] = value * factor
    return app.with_overrides(demand=demand, **top)


class Candidate(NamedTuple):
    """A profile :func:`fit_profile` tried: its loss (``inf``: outside the CPU measured,
    or not finite) and the CPU a request cost its simulated replicas (s)."""

    loss: float
    app: AppProfile
    cpu_per_request_s: float


def simulated_cpu_s(app: AppProfile, result: SampleCalibration) -> float:
    """The CPU a request of ``app`` costs, s: as its simulated replicas spent it over the
    cells (:attr:`SampleCalibration.cpu_per_request_s`, the estimator the measured CPU
    goes through), else as its demand states it (the mean capped at the CPU limit)."""
    cpu = result.cpu_per_request_s
    return float(cpu) if np.isfinite(cpu) else app.demand.capped_mean_s


def fit_profile(app: AppProfile, score, candidates: int = 40, seed: int = 0, progress=None,
                against: str = "", cpu_range: tuple[float, float] | None = None,
                ) -> tuple[AppProfile, SampleCalibration, list[Candidate]]:
    """Random search around ``app`` over :data:`FIT_FIELDS` of its demand kind, scored by
    :func:`sample_loss` of ``score(profile)`` (a :class:`SampleCalibration`); returns the
    best profile, its calibration and every :class:`Candidate` (the starting one first).
    ``cpu_range`` (s, low and high): a candidate whose simulated replicas spend a CPU per
    request (:func:`simulated_cpu_s`) outside it loses (loss ``inf``; so does the
    starting profile, which any candidate inside the range then beats): the fit may not
    buy latency with CPU the replicas were not measured to spend. A candidate better than
    ``app`` says in its provenance that the searched fields were fitted, and ``against``
    what data."""
    def tried_one(a: AppProfile) -> tuple[Candidate, SampleCalibration]:
        res = score(a)
        cpu = simulated_cpu_s(a, res)
        held = cpu_range is None or cpu_range[0] <= cpu <= cpu_range[1]
        return Candidate(sample_loss(res) if held else math.inf, a, cpu), res

    rng = np.random.default_rng(seed)
    first, best = tried_one(app)
    best_app, best_loss = app, first.loss
    tried = [first]
    for _ in range(candidates):
        cand, res = tried_one(_perturbed(app, rng))
        tried.append(cand)
        if cand.loss < best_loss:
            best_app, best, best_loss = cand.app, res, cand.loss
        if progress is not None:
            progress(1)
    if best_app is not app:
        bound = (f", CPU per request held within {cpu_range[0] * 1000:.0f}-{cpu_range[1] * 1000:.0f} ms as measured"
                 if cpu_range is not None else "")
        source = (f"fitted: scalelab.simulator.calibration.fit_profile, {candidates} candidates around profile "
                  f"{app.name!r}, seed {seed}" + (f", against {against}" if against else "") + bound)
        best_app = replace(best_app, provenance={**best_app.provenance,
                                                 **dict.fromkeys(FIT_FIELDS[app.demand.kind], source)})
    return best_app, best, tried


def field_value(app: AppProfile, key: str) -> float:
    """The value of a :data:`FIT_FIELDS` key (``demand.scale``, ``overhead_ms``) in ``app``."""
    owner, name = _field(app, key)
    return float(getattr(owner, name))


def near_best(tried: list[Candidate], tolerance: float) -> list[Candidate]:
    """The candidates scored with a finite loss within ``tolerance`` of the best (none
    when no loss is finite; a tolerance that is not finite counts as 0)."""
    scored = [c for c in tried if np.isfinite(c.loss)]
    if not scored:
        return []
    best = min(c.loss for c in scored)
    return [c for c in scored if c.loss <= best + (tolerance if np.isfinite(tolerance) else 0.0)]


def fit_spread(tried: list[Candidate], tolerance: float) -> dict[str, tuple[float, float]]:
    """The uncertainty of a fit: per searched field, the lowest and highest value among
    the candidates whose loss is within ``tolerance`` of the best (the loss's own spread
    between simulator seeds: those candidates fit the data equally well), and the CPU
    per request their simulated replicas spent (``cpu_per_request_s``); ``{}`` when no
    candidate was scored (a loss that is not finite: outside the CPU range, or every
    cell saturated)."""
    near = near_best(tried, tolerance)
    if not near:
        return {}
    keys = list(FIT_FIELDS[near[0].app.demand.kind])
    spread = {k: (min(field_value(c.app, k) for c in near), max(field_value(c.app, k) for c in near)) for k in keys}
    cpu = [c.cpu_per_request_s for c in near]
    return {**spread, "cpu_per_request_s": (min(cpu), max(cpu))}


def fit_to_samples(app: AppProfile = PAPER, candidates: int = 40, seed: int = 0, steps: int = 80,
                   progress=None, recording=None) -> tuple[AppProfile, SampleCalibration, list[tuple[float, AppProfile]]]:
    """:func:`fit_profile` against the p95 samples of ``recording`` (default the paper's D1)."""
    from scalelab.simulator.recordings import read_p95_recording

    rec = recording if recording is not None else read_p95_recording()
    return fit_profile(app, lambda a: calibrate_samples(a, steps=steps, recording=rec), candidates, seed, progress,
                       against=f"the {rec.name} samples of {rec.origin}")
