"""The datasets a replay serves: by name, or from a file.

``dataset:`` in a config is one of

``paper-D1``, ``paper-D2``
    the HSLinUCB paper's replay datasets D1 and D2 as measured on its real platform:
    ``simulator/data/paper-D?-p95.json`` hold their p95 samples per (users, replicas)
    cell in the order its replay served them (reconstructed from the notebooks' logged
    arrays). The p95 of each known sample is the paper's; the other context features,
    the positions the logs never revealed and the cells the paper never visited come
    from a recording of a profile fitted to *that dataset's own* known samples (D1: the
    ``paper`` profile; D2: ``paper-D2``). Column ``source`` says which: the recording's
    name (``D1``, ``D2``) or ``simulator:<profile>``.
``sim-D1``, ``sim-D2``
    recordings of the simulator's ``paper`` profile with the paper's collector (seeds
    1 and 2; a second or two each, made on demand).
a ``.json`` file
    p95 samples in the same format, completed the same way: by the shipped recording's
    profile when the file holds the same samples, else by a profile fitted to the file's
    own known samples (:func:`filler_profile`: about a minute once, then cached);
a ``.parquet`` file
    a dataset recorded with ``scalelab dataset record``.

Every dataset has one row per sample: ``users, replicas, sample``, the context fields
and ``source``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from scalelab.orchestrator.backend import Backend, Clock, VirtualClock
from scalelab.orchestrator.context import PAPER as PAPER_CONTEXT
from scalelab.orchestrator.context import ContextSettings
from scalelab.simulator.backends import SimBackend, stream_seeds
from scalelab.simulator.calibration import fit_to_samples
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.models import PAPER, AppProfile, find_profile, profile_from_dict, save_profile
from scalelab.simulator.recordings import P95Recording, read_p95_recording
from scalelab.simulator.replay import DatasetError, load_dataset

#: The simulator's stand-in recordings: name -> seed of the collector.
SIMULATED = {"sim-D1": 1, "sim-D2": 2}

#: The paper's recordings by dataset name, with the profile (fitted to that recording's
#: own samples) and the collector's seed that fill what the recording does not know.
PAPER_DATASETS = {"paper-D1": ("D1", "paper", 1), "paper-D2": ("D2", "paper-D2", 2)}

BUILTIN = (*PAPER_DATASETS, *SIMULATED)


def collect(backend: Backend, clock: Clock, users: Sequence[int], replicas: Sequence[int], samples: int,
            step_s: float = 5.0, warmup_steps: int = 2, source: str = "", rows_file: Path | None = None,
            progress: Callable[[int], None] | None = None, meter: Callable[[], dict] | None = None,
            recorded: Mapping[tuple[int, int], int] | None = None) -> pd.DataFrame:
    """Measure ``backend`` as the paper's ``dataset_collector`` measured its cluster:
    for each replica count (scaled to, then settled), users ascending then descending,
    ``samples`` context samples per (users, replicas) cell split between the two
    passes, each after ``warmup_steps`` steps of ``step_s`` seconds at its level. It
    speaks only the :class:`~scalelab.orchestrator.backend.Backend` protocol, so the
    simulator (:func:`record_dataset`) and the live stack
    (:func:`scalelab.experiments.collector.record_live`) record the same way, with the
    loop's own observations (startup delays, censored latencies of empty windows under
    load). One row per sample: ``users, replicas, sample``, the context fields,
    ``ready_replicas`` (the context's count, which a dead replica lowers), ``missing``,
    ``client_p95_ms``, ``source``, and what ``meter`` (called at each level's start and
    then at every step) measured over the step; appended to ``rows_file`` (JSON lines) as
    measured. ``recorded`` (cell -> samples already taken, :func:`recorded_cells`)
    resumes an interrupted recording: each pass takes only what its cell still lacks,
    and a replica count whose cells are complete is not visited."""
    rows: list[dict] = []
    up = samples - samples // 2
    recorded = recorded or {}
    out = open(rows_file, "a") if rows_file is not None else None
    try:
        for n in replicas:
            have = {u: int(recorded.get((int(u), int(n)), 0)) for u in users}
            plan = ([(u, max(0, up - have[u])) for u in users]
                    + [(u, max(0, samples - max(have[u], up))) for u in reversed(users)])
            if not any(take for _, take in plan):
                if progress is not None:
                    progress(len(plan))
                continue
            backend.scale_to(int(n))
            backend.settle()
            counts = dict(have)
            for level, take in plan:
                if take == 0:
                    if progress is not None:
                        progress(1)
                    continue
                backend.set_load(level)
                if meter is not None:
                    meter()
                t = clock.now()
                for k in range(warmup_steps + take):
                    t += step_s
                    clock.sleep_until(t)
                    obs = backend.observe()
                    measured = meter() if meter is not None else {}
                    if k < warmup_steps:
                        continue
                    ctx = obs.context.to_dict()
                    row = {**ctx, "ready_replicas": ctx["replicas"], "users": int(level), "replicas": int(n),
                           "sample": counts[level], "missing": ",".join(obs.missing),
                           "client_p95_ms": obs.client_p95_ms, "source": source, **measured}
                    counts[level] += 1
                    rows.append(row)
                    if out is not None:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                if progress is not None:
                    progress(1)
    finally:
        if out is not None:
            out.close()
        backend.stop_load()
    return sorted_samples(rows)


def sorted_samples(rows: list[dict]) -> pd.DataFrame:
    """Rows of samples as a frame in cell order (users, replicas, sample)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["users", "replicas", "sample"], kind="stable").reset_index(drop=True)


def recorded_cells(rows_file: Path) -> tuple[list[dict], dict[tuple[int, int], int]]:
    """The rows an interrupted recording left in ``rows_file`` (JSON lines; a last line
    cut by the interruption is dropped) and the samples each (users, replicas) cell has."""
    rows: list[dict] = []
    if rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    counts: dict[tuple[int, int], int] = {}
    for r in rows:
        cell = (int(r["users"]), int(r["replicas"]))
        counts[cell] = counts.get(cell, 0) + 1
    return rows, counts


def record_dataset(
    app: AppProfile,
    users: Sequence[int] = tuple(range(5, 55, 5)),
    replicas: Sequence[int] = tuple(range(1, 11)),
    samples: int = 20,
    seed: int = 0,
    context: ContextSettings = PAPER_CONTEXT,
    settings: ClusterSettings | None = None,
    step_s: float = 5.0,
    warmup_steps: int = 12,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """The simulator measured with the paper's collector (:func:`collect`) over a
    :class:`~scalelab.simulator.backends.SimBackend` of ``app`` on ``settings`` (its
    startup delay and think time; replicas ``1..max(replicas)``), on a virtual clock;
    the ``think``, ``demand`` and ``arrivals`` streams are spawned from ``seed``."""
    settings = settings or ClusterSettings()
    shaped = replace(settings, min_replicas=1, max_replicas=max(replicas), initial_replicas=int(replicas[0]))
    clock = VirtualClock()
    backend = SimBackend(app, shaped, context, clock, stream_seeds(seed), max_users=max(users))
    backend.setup(int(replicas[0]))
    return collect(backend, clock, users, replicas, samples, step_s, warmup_steps, progress=progress)


def with_p95_samples(filler: pd.DataFrame, recording: P95Recording) -> pd.DataFrame:
    """``filler`` (a recorded dataset, its ``source`` naming what recorded it) with the
    p95 of every sample ``recording`` knows replaced by the measured one; ``source``
    names where each row's p95 came from."""
    out = filler.copy()
    index = {(int(u), int(r), int(s)): i for i, (u, r, s) in enumerate(
        zip(out["users"], out["replicas"], out["sample"], strict=True))}
    p95 = out["p95_ms"].to_numpy(copy=True)
    source = out["source"].to_numpy(copy=True)
    for (users, replicas), samples in recording.cells.items():
        for k, value in enumerate(samples):
            row = index.get((users, replicas, k))
            if row is None:
                raise DatasetError(f"dataset {recording.origin!r}: the simulator's filler has no sample {k} of "
                                   f"({users} users, {replicas} replicas); its grid is users "
                                   f"{sorted(set(out['users']))}, replicas {sorted(set(out['replicas']))}")
            if value is not None:
                p95[row], source[row] = value, recording.name
    out["p95_ms"], out["source"] = p95, source
    return out


@functools.lru_cache(maxsize=8)
def simulated(seed: int, samples: int = 20, profile: AppProfile = PAPER) -> pd.DataFrame:
    """``profile`` recorded with the paper's collector (users 5..50 by 5 × replicas
    1..10 × ``samples``); ``source`` is ``simulator:<profile name>``."""
    frame = record_dataset(profile, samples=samples, seed=seed)
    frame["source"] = f"simulator:{profile.name}"
    return frame


#: A cell needs this many known samples to count in a fit (calibration's ``min_known``).
MIN_KNOWN = 10


def fits_dir() -> Path:
    """Where profiles fitted to p95 recordings are cached: ``$SCALELAB_FITS``, or
    ``~/.scalelab/fits``."""
    return Path(os.environ.get("SCALELAB_FITS") or Path.home() / ".scalelab" / "fits").expanduser()


@functools.lru_cache(maxsize=4)
def shipped_recording(name: str) -> P95Recording:
    """A shipped recording (``D1``, ``D2``), read once per process (not to be changed)."""
    return read_p95_recording(shipped=name)


def filler_profile(recording: P95Recording) -> tuple[AppProfile, int]:
    """The profile, and the collector's seed, that complete ``recording``: a shipped
    recording's own (D1: ``paper``, D2: ``paper-D2``) when ``recording`` holds the same
    samples; else a profile fitted to its own known samples
    (:func:`scalelab.simulator.calibration.fit_to_samples` around ``paper``, 40
    candidates, the cells with :data:`MIN_KNOWN` known samples), cached in
    :func:`fits_dir` by the samples' checksum; the ``paper`` profile where no cell has
    enough samples to fit to."""
    for shipped_name, profile_name, seed in PAPER_DATASETS.values():
        if recording.cells == shipped_recording(shipped_name).cells:
            return find_profile(profile_name), seed
    if not any(sum(v is not None for v in samples) >= MIN_KNOWN for samples in recording.cells.values()):
        print(f"{recording.origin}: no cell has {MIN_KNOWN} known samples to fit a profile to; the paper profile "
              "fills it", file=sys.stderr)
        return PAPER, 2
    cells = sorted([list(cell), list(samples)] for cell, samples in recording.cells.items())
    key = hashlib.sha256(json.dumps(cells).encode()).hexdigest()[:16]
    path = fits_dir() / f"{key}.json"
    if path.is_file():
        return profile_from_dict(json.loads(path.read_text())), 3
    print(f"fitting a profile to the {recording.known} known samples of {recording.origin} "
          f"(once, about a minute; cached in {path})", file=sys.stderr)
    best, _, _ = fit_to_samples(PAPER, candidates=40, seed=0, recording=recording)
    best = replace(best, name=f"fitted-{key}")
    save_profile(best, path)
    return best, 3


def resolve_dataset(dataset: str) -> pd.DataFrame:
    """The dataset a config's ``dataset:`` names (see the module docstring); a fresh
    copy the caller may keep."""
    if dataset in SIMULATED:
        return simulated(SIMULATED[dataset]).copy()
    if dataset in PAPER_DATASETS:
        rec = shipped_recording(PAPER_DATASETS[dataset][0])
    elif Path(dataset).expanduser().suffix == ".json":
        rec = read_p95_recording(Path(dataset).expanduser())
    else:
        p = Path(dataset).expanduser()
        if p.suffix == ".parquet" or p.is_file():
            frame = load_dataset(p)
            if "source" not in frame.columns:
                frame["source"] = str(p)
            return frame
        raise DatasetError(f"dataset {dataset!r} is neither a file nor one of {list(BUILTIN)} "
                           "(record one: scalelab dataset record --out FILE)")
    profile, seed = filler_profile(rec)
    return with_p95_samples(simulated(seed, rec.samples_per_cell, profile), rec)


def describe(dataset: str) -> str:
    """One line on where a dataset's samples come from (for reports)."""
    frame = resolve_dataset(dataset)
    counts = frame["source"].value_counts()
    parts = ", ".join(f"{n} from {src}" for src, n in counts.items())
    return f"{dataset}: {len(frame)} samples ({parts})"


@dataclass(frozen=True)
class DatasetMeta:
    """How a recorded dataset was measured (``FILE.meta.json`` beside ``FILE``): the
    users' think time (s), the context settings, the step (s), the SLO (ms), where it
    was measured (``source``, e.g. ``live:student``, ``sim``) and the config it came from.
    Calibration simulates each cell under the same settings. A dataset without it was
    measured the paper's way (think 0-2 s, the paper's context, 5 s, 600 ms)."""

    think_s: tuple[float, float] = (0.0, 2.0)
    context: ContextSettings = PAPER_CONTEXT
    step_s: float = 5.0
    slo_ms: float = 600.0
    source: str = ""
    config: str = ""
    replica: dict | None = None  # the replicas' cpu_request, cpu_limit (cores), memory_*_mib as measured
    grid: dict | None = None  # users, replicas, samples, warmup_steps asked of the collector

    def cluster_settings(self) -> ClusterSettings:
        return ClusterSettings(think_low_s=self.think_s[0], think_high_s=self.think_s[1])

    def to_dict(self) -> dict:
        return {"think_s": list(self.think_s), "context": asdict(self.context), "step_s": self.step_s,
                "slo_ms": self.slo_ms, "source": self.source, "config": self.config, "replica": self.replica,
                "grid": self.grid}


def meta_path(path: str | Path) -> Path:
    return Path(str(path) + ".meta.json")


def write_dataset_meta(path: str | Path, meta: DatasetMeta) -> Path:
    out = meta_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta.to_dict(), indent=1) + "\n")
    return out


def read_dataset_meta(path: str | Path) -> DatasetMeta:
    """The meta of a recorded dataset (defaults when it has none); ``DatasetError``
    naming the file when it is malformed."""
    p = meta_path(path)
    if not p.is_file():
        return DatasetMeta()
    try:
        d = json.loads(p.read_text())
        return DatasetMeta(think_s=tuple(float(x) for x in d["think_s"]), context=ContextSettings(**d["context"]),
                           step_s=float(d["step_s"]), slo_ms=float(d["slo_ms"]), source=str(d.get("source", "")),
                           config=str(d.get("config", "")), replica=d.get("replica"), grid=d.get("grid"))
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"dataset meta {p}: malformed ({type(exc).__name__}: {exc})") from None
