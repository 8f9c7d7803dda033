"""The run folder: its layout and every file in it, for simulated and live runs alike.

The simulated runner (:mod:`scalelab.experiments.runner`) and the live run
(:mod:`scalelab.experiments.live`) make, resume and finish their folders with this module;
the report (:mod:`scalelab.experiments.report`) reads them with it. Writing the report is
the caller's step, not the folder's (:mod:`scalelab.experiments.experiment` runs, then
reports). A run folder holds::

    config.yaml      the config, as given (names of profiles and datasets, for reading)
    snapshot/        what those names resolved to when the run began: profile.json (the
                     app profile's contents), dataset.parquet (a replay's samples). The
                     run, and any resume of it, runs from these, so editing a saved
                     profile or a dataset file later does not change what a resume runs
    command.txt      the command line (or the API call) that made it
    versions.json    package versions, git commit, the seeds of every episode
    plugins.json     the plug-ins imported from outside scalelab (resume and report find them)
    oracle*.json     the oracle's replicas per load level, a cache (simulator)
    parts/           one folder per episode (:class:`Part`): its step chunks as they are
                     written, its policy state, its ``done`` marker; a live episode's
                     agent files and ``status.json`` too. Once the run is complete the
                     chunks and states are removed (steps.parquet and policies/ hold them)
    steps.parquet    one row per step per run per policy (scalelab.agent.loop.StepRecord.row)
    complete.json    the run finished: the row count and checksum of steps.parquet
    policies/        each episode's saved policy state (``load:`` reads them)
    summary.json     the paper-format summary, and summary.csv
    .lock            held by the one process working in the folder

and what its callers write beside: the report (``report.html``, ``*.png``) and, for a
live run, ``stack.json``, ``services.json`` and ``injector.json``.

One ``done`` format: ``{"rows": n, "sha256": ...}``, the checksum of the episode's chunks
in name order. Resume reads back an episode whose marker and chunks agree and redoes any
other; a complete run (``complete.json`` and ``steps.parquet`` agree) is read back whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.agent.base import read_state_file, write_state_file
from scalelab.agent.loop import ROW_COLUMNS
from scalelab.experiments.config import ConfigError, ExperimentConfig, load_config, save_config, validate
from scalelab.experiments.episode import episode_name, episode_seeds
from scalelab.experiments.metrics import flat_summary, format_table, steps_per_run, summarize
from scalelab.orchestrator import plugins

CONFIG = "config.yaml"
COMMAND = "command.txt"
VERSIONS = "versions.json"
PLUGINS = "plugins.json"
SNAPSHOT = "snapshot"
SNAPSHOT_PROFILE = "profile.json"
SNAPSHOT_DATASET = "dataset.parquet"
PARTS = "parts"
STEPS = "steps.parquet"
COMPLETE = "complete.json"
POLICIES = "policies"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
LOCK = ".lock"
#: in a part
DONE = "done"
CHUNKS = "chunk-*.parquet"
POLICY = "policy.json"
STATUS = "status.json"
REPLAY_INDEX = "replay-index.json"


@dataclass(frozen=True)
class RunResult:
    """What a finished run folder gives back."""

    path: Path
    steps: pd.DataFrame
    summary: pd.DataFrame
    seconds: float  # wall time from the config's check to the folder complete (with others run together: shared)
    config: ExperimentConfig | None = None

    @property
    def steps_per_run(self) -> int:
        """Steps of the longest run (one policy, one run)."""
        return steps_per_run(self.steps)

    def table(self) -> str:
        """The summary as the terminal prints it: the experiment, the ranked table, the
        Pareto front and the glossary (``scalelab.experiments.metrics.format_table``)."""
        return format_table(self.summary, self.config, steps_per_run=self.steps_per_run)


# -- making and opening a folder --------------------------------------------------------


def config_to_run(config: ExperimentConfig | str | Path | dict | None,
                  resume: str | Path | None) -> tuple[ExperimentConfig, Path | None]:
    """The checked config and, resuming, the run folder (its plug-ins put back on the
    search path, its ``config.yaml`` read). The config names its profile and dataset;
    :func:`from_snapshot` gives the one to run."""
    path = None
    if resume is not None:
        path = Path(resume)
        if not (path / CONFIG).is_file():
            raise ConfigError(f"--resume {str(path)!r}: no {CONFIG} there, not a run folder")
        cfg = read_config(path)
    else:
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    validate(cfg)  # a config built in Python gets the checks a file gets
    return cfg, path


def create(cfg: ExperimentConfig, out: str | Path | None, command: str | None) -> Path:
    """A new folder ``out/<name>-<UTC stamp>`` (``out`` defaults to ``runs``) with the
    config, its snapshot, the command line and the plug-ins it imported. The snapshot's
    contents are resolved before the folder is made, so a bad name leaves no folder."""
    contents = snapshot_contents(cfg)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(out) if out is not None else Path("runs")
    path = base / f"{cfg.name}-{stamp}"
    k = 1
    while path.exists():
        k += 1
        path = base / f"{cfg.name}-{stamp}-{k}"
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"--out {str(base)!r}: cannot make the run folder there ({exc.strerror})") from None
    save_config(cfg, path / CONFIG)
    write_snapshot(path, contents)
    (path / COMMAND).write_text((command or " ".join(sys.argv)) + "\n")
    record_plugins(path, cfg)
    return path


def read_config(path: Path) -> ExperimentConfig:
    """The config of the run folder ``path``, its plug-ins put back on the search path
    first (their names must resolve)."""
    restore_plugins(path)
    return load_config(path / CONFIG)


# -- the snapshot: what the config's names resolved to ----------------------------------


def snapshot_contents(cfg: ExperimentConfig) -> dict:
    """What the names of ``cfg`` resolve to now: ``profile`` (the app profile's fields,
    before the config's ``app:`` overrides) and, for a replay, ``dataset`` (its samples)."""
    from scalelab.simulator.datasets import resolve_dataset
    from scalelab.simulator.models import find_profile, profile_to_dict

    try:
        out: dict = {"profile": profile_to_dict(find_profile(cfg.app.profile))}
    except KeyError as exc:
        raise ConfigError(f"config: {exc.args[0]}") from None
    if cfg.backend == "replay" and cfg.dataset:
        out["dataset"] = resolve_dataset(cfg.dataset)
    return out


def write_snapshot(path: Path, contents: dict) -> None:
    """``snapshot/``: the contents :func:`snapshot_contents` gave."""
    snap = path / SNAPSHOT
    snap.mkdir(exist_ok=True)
    (snap / SNAPSHOT_PROFILE).write_text(json.dumps(contents["profile"], indent=1) + "\n")
    if "dataset" in contents:
        contents["dataset"].to_parquet(snap / SNAPSHOT_DATASET, index=False)


def from_snapshot(cfg: ExperimentConfig, path: Path) -> ExperimentConfig:
    """``cfg`` reading its profile and dataset from the snapshot of the run folder
    ``path`` instead of looking their names up again (a folder made before snapshots
    existed keeps the names)."""
    snap = (path / SNAPSHOT).resolve()
    if (snap / SNAPSHOT_PROFILE).is_file():
        cfg = replace(cfg, app=replace(cfg.app, profile=str(snap / SNAPSHOT_PROFILE)))
    if cfg.backend == "replay" and cfg.dataset and (snap / SNAPSHOT_DATASET).is_file():
        cfg = replace(cfg, dataset=str(snap / SNAPSHOT_DATASET))
    return cfg


# -- versions, seeds, plug-ins ----------------------------------------------------------


def versions() -> dict:
    """Python's and the packages' versions, and the git commit of the code."""
    pkgs = {}
    for name in ("scalelab", "numpy", "numba", "pandas", "pyarrow", "matplotlib", "pyyaml"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass
    return {"python": platform.python_version(), "packages": pkgs, "git_commit": commit}


def write_versions(path: Path, cfg: ExperimentConfig) -> list[dict]:
    """``versions.json`` (packages, commit, every episode's seeds); returns the seeds
    (:func:`scalelab.experiments.episode.episode_seeds`)."""
    seeds = episode_seeds(cfg.seed, cfg.runs, len(cfg.policies), cfg.seed_runs)
    (path / VERSIONS).write_text(json.dumps({**versions(), "seed": cfg.seed, "episodes": seeds}, indent=1))
    return seeds


def record_plugins(path: Path, cfg: ExperimentConfig) -> None:
    """``plugins.json``: the policies, reward and workload this run imported from outside
    scalelab (name -> module, file, folder, entry point), so that resume finds them."""
    used = {*(spec.name for spec in cfg.policies), cfg.reward.name, str(cfg.workload.get("kind"))}
    record = {k: v for k, v in plugins.imported().items() if k in used or v.get("source") == "file"}
    if record:
        (path / PLUGINS).write_text(json.dumps(record, indent=1))


def restore_plugins(path: Path) -> None:
    """Put back on the search path what a run folder imported (``plugins.json``)."""
    if (path / PLUGINS).is_file():
        plugins.restore(json.loads((path / PLUGINS).read_text()))


# -- the lock ---------------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """One process at a time in a run folder: a second run or resume of it is refused
    (``.lock``, an advisory lock the kernel drops when its holder dies)."""
    import fcntl

    handle = open(path / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"run folder {str(path)!r} is in use by {holder}; wait for it or stop it") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# -- episodes: parts/<episode>/ ---------------------------------------------------------


def _digest(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Part:
    """One episode's folder, ``parts/<policy>--run<NNN>/``: its rows in chunks
    (``chunk-<first step>.parquet``, written as the episode goes, so a killed run keeps
    what it did), its policy's state, and its ``done`` marker, written last."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    def start(self) -> None:
        """Make the folder; chunks of an earlier, unfinished attempt are removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob(CHUNKS):
            old.unlink()

    def write_chunk(self, first: int, frame: pd.DataFrame) -> None:
        """Rows from the episode's row ``first`` on."""
        frame.to_parquet(self.dir / f"chunk-{first:08d}.parquet", index=False)

    def write_policy(self, state: dict) -> None:
        """The policy's state at the episode's end (``policies/`` gets it once the run ends)."""
        (self.dir / POLICY).write_text(json.dumps(state))

    def _chunks(self) -> list[Path]:
        return sorted(self.dir.glob(CHUNKS))

    def mark_done(self, rows: int) -> None:
        """``done``: the episode finished; its row count and the checksum of its chunks."""
        (self.dir / DONE).write_text(json.dumps({"rows": int(rows), "sha256": _digest(self._chunks())}) + "\n")

    def marked_done(self) -> bool:
        """Whether it has a ``done`` marker (verified or not)."""
        return (self.dir / DONE).exists()

    def unmark(self) -> None:
        (self.dir / DONE).unlink(missing_ok=True)

    def verified(self) -> pd.DataFrame | None:
        """The finished episode's rows if its ``done`` marker and its chunks agree (count
        and checksum); None (redo it) if it is not finished, damaged or unverifiable."""
        try:
            done = json.loads((self.dir / DONE).read_text())
            chunks = self._chunks()
            if not isinstance(done, dict) or not chunks or _digest(chunks) != done.get("sha256"):
                return None
            frame = pd.concat([pd.read_parquet(f) for f in chunks], ignore_index=True)
        except (OSError, ValueError):  # no marker, an old one, a chunk that does not parse
            return None
        return frame if len(frame) == done.get("rows") else None

    def write_replay_index(self, state: dict) -> None:
        """A shared replay's cell positions after this episode (``replay.index: experiment``)."""
        (self.dir / REPLAY_INDEX).write_text(json.dumps(state))

    def replay_index(self) -> dict:
        return json.loads((self.dir / REPLAY_INDEX).read_text())

    def write_status(self, status: dict) -> None:
        """``status.json`` of a live episode: ``{"status": "done" | "failed", "rows": n, ...}``."""
        (self.dir / STATUS).write_text(json.dumps(status))

    def status(self) -> dict | None:
        try:
            return json.loads((self.dir / STATUS).read_text())
        except (OSError, ValueError):
            return None


def part(path: Path, policy_label: str, run: int) -> Part:
    """The episode (policy ``policy_label``, run ``run``) of the run folder ``path``."""
    return Part(path / PARTS / episode_name(policy_label, run))


def finished_rows(path: Path, cfg: ExperimentConfig) -> list[pd.DataFrame]:
    """Every episode's rows of the complete run ``path`` (``cfg``: its policies and runs),
    read back from its chunks, verified against their done markers; in config order."""
    frames = []
    for spec in cfg.policies:
        for run in range(cfg.runs):
            episode = part(path, spec.display, run)
            frame = episode.verified()
            if frame is None:
                raise RuntimeError(f"{episode.dir}: the episode's rows do not match its done marker "
                                   "(damaged while the run went on?); `scalelab run --resume` redoes it")
            frames.append(frame)
    return frames


def failed_parts(path: Path) -> list[str]:
    """The episodes of a live run whose ``status.json`` says they failed."""
    return [p.name for p in sorted((path / PARTS).glob("*")) if (Part(p).status() or {}).get("status") == "failed"]


# -- the end of a run -------------------------------------------------------------------


def _file_digest(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def compact_parts(path: Path, rows: int) -> None:
    """Mark the run complete (``complete.json``: rows and checksum of ``steps.parquet``)
    and remove what ``steps.parquet`` and ``policies/`` now hold: the episodes' step
    chunks and policy states. Their small status files stay."""
    (path / COMPLETE).write_text(json.dumps({"rows": int(rows), "sha256": _file_digest(path / STEPS)}))
    for f in [*path.glob(f"{PARTS}/*/{CHUNKS}"), *path.glob(f"{PARTS}/*/{POLICY}")]:
        f.unlink()


def completed_steps(path: Path) -> pd.DataFrame | None:
    """A complete run's steps, if ``complete.json`` and ``steps.parquet`` agree."""
    try:
        done = json.loads((path / COMPLETE).read_text())
        if _file_digest(path / STEPS) != done["sha256"]:
            return None
        steps = read_steps_file(path / STEPS)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if len(steps) == done["rows"] else None


# -- steps.parquet: types that fit the data ----------------------------------------------

#: Stored as float32: the measured ratios, rates and mean latencies (seven significant
#: digits, more than the measurements carry); every other column keeps its type.
FLOAT32_COLUMNS = tuple(c for c in ROW_COLUMNS if c.removeprefix("pre_").endswith("_ratio")
                        or c.removeprefix("pre_") in ("rps", "mean_ms", "cpu_request_now"))
#: The observation a decision was made on: in a period loop, the previous step's outcome.
PRE_COLUMNS = tuple(c for c in ROW_COLUMNS if c.startswith("pre_"))
#: In the file: the row's ``pre_`` columns are the previous row's outcome (same policy and
#: run), so they are stored as nulls and read back from it.
PRE_IS_PREVIOUS = "pre_is_previous"


def storable(steps: pd.DataFrame) -> pd.DataFrame:
    """``steps`` as ``steps.parquet`` holds them: :data:`FLOAT32_COLUMNS` rounded to
    float32 (and back to float64), so what a run reports and what reading its folder
    back reports are the same numbers."""
    out = steps.copy()
    for c in FLOAT32_COLUMNS:
        if c in out:
            out[c] = out[c].astype(np.float32).astype(np.float64)
    return out


def _previous_outcome(steps: pd.DataFrame) -> pd.DataFrame:
    """Each row's previous row's outcome columns (same policy and run) under the
    ``pre_`` names; NaN on each episode's first row."""
    sources = [c.removeprefix("pre_") for c in PRE_COLUMNS]
    prev = steps.groupby(["policy", "run"], sort=False)[sources].shift(1)
    prev.columns = list(PRE_COLUMNS)
    return prev


def write_steps(steps: pd.DataFrame, path: Path) -> None:
    """``steps`` (as :func:`storable` made them) into ``path``: float32 where
    :data:`FLOAT32_COLUMNS` says, the ``pre_`` columns as nulls where they repeat the
    previous row (:data:`PRE_IS_PREVIOUS`), strings dictionary-encoded, floats split by
    byte (their exponents compress apart from their mantissas), zstd at level 9. The
    default compare folder's steps go from 46 MB (every column float64 or int64, snappy)
    to 12 MB; :func:`read_steps` gives the frame back."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(steps, preserve_index=False)
    for c in FLOAT32_COLUMNS:
        if c in steps:
            i = table.schema.get_field_index(c)
            table = table.set_column(i, c, table.column(i).cast(pa.float32()))
    if set(PRE_COLUMNS) <= set(steps) and {"policy", "run"} <= set(steps):
        prev = _previous_outcome(steps)
        here = steps[list(PRE_COLUMNS)]
        first = steps.groupby(["policy", "run"], sort=False).cumcount().to_numpy() == 0
        same = ((here == prev) | (here.isna() & prev.isna())).all(axis=1).to_numpy() & ~first
        for c in PRE_COLUMNS:
            i = table.schema.get_field_index(c)
            col = table.column(i)
            table = table.set_column(i, c, pc.if_else(pa.array(same), pa.nulls(len(steps), col.type), col))
        table = table.append_column(PRE_IS_PREVIOUS, pa.array(same))
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(table, path, compression="zstd", compression_level=9, use_dictionary=strings,
                   use_byte_stream_split=floats)


def read_steps_file(path: Path) -> pd.DataFrame:
    """A ``steps.parquet`` as :func:`write_steps` wrote it (or as older runs did, every
    column as is): the ``pre_`` columns restored, float columns as float64."""
    steps = pd.read_parquet(path)
    if PRE_IS_PREVIOUS in steps:
        same = steps.pop(PRE_IS_PREVIOUS).to_numpy(dtype=bool)
        prev = _previous_outcome(steps)
        for c in PRE_COLUMNS:  # all numeric
            values = steps[c].to_numpy(dtype=float, copy=True)
            values[same] = prev[c].to_numpy(dtype=float)[same]
            steps[c] = pd.Series(values, index=steps.index).astype(steps[c.removeprefix("pre_")].dtype)
    for c in FLOAT32_COLUMNS:
        if c in steps and steps[c].dtype == np.float32:
            steps[c] = steps[c].astype(np.float64)
    return steps


def finish(path: Path, cfg: ExperimentConfig, frames: list[pd.DataFrame],
           compact: Callable[[Path, int], None] = compact_parts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather the episodes: their policy states into ``policies/``, their rows into
    ``steps.parquet`` in config order; then ``compact`` (:func:`compact_parts`: the run
    is complete) and the summary files. Returns ``(steps, summary)``."""
    saved = path / POLICIES
    saved.mkdir(exist_ok=True)
    for state in sorted(path.glob(f"{PARTS}/*/{POLICY}")):
        write_state_file(saved / f"{state.parent.name}.json.gz", read_state_file(state))
    order = {spec.display: k for k, spec in enumerate(cfg.policies)}
    steps = pd.concat(frames, ignore_index=True)
    steps = steps.sort_values(
        by=["policy", "run", "step"], key=lambda c: c.map(order) if c.name == "policy" else c
    ).reset_index(drop=True)
    steps = storable(steps)
    write_steps(steps, path / STEPS)
    compact(path, len(steps))
    return steps, write_summary(path, steps, cfg)


def write_summary(path: Path, steps: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """The summary of ``steps`` (:func:`scalelab.experiments.metrics.summarize`) into
    ``summary.json`` and ``summary.csv``; returns it."""
    summary = summarize(steps, cfg)
    summary_to_files(summary, path)
    return summary


def summary_to_files(summary: pd.DataFrame, path: Path) -> None:
    """``summary.json`` (``{"mean", "ci95"}`` per metric) and a flat ``summary.csv``."""
    records = summary.to_dict(orient="records")
    (path / SUMMARY_JSON).write_text(json.dumps(records, indent=1))
    flat_summary(summary, mean_suffix="_mean").to_csv(path / SUMMARY_CSV, index=False)


# -- reading a finished folder ----------------------------------------------------------


def read_steps(path: str | Path) -> pd.DataFrame:
    """The run folder ``path``'s ``steps.parquet`` as the run recorded it (one row per
    step per run per policy, every column of :meth:`scalelab.agent.loop.StepRecord.row`):
    :func:`read_steps_file`. ``pd.read_parquet`` reads the file too, but with the
    ``pre_`` columns null where they repeat the previous row."""
    return read_steps_file(Path(path) / STEPS)


def read_summary(path: Path) -> pd.DataFrame:
    return pd.DataFrame(json.loads((path / SUMMARY_JSON).read_text()))


def read_text(path: Path, name: str, default: str = "") -> str:
    """A small file of the folder (``config.yaml``, ``versions.json``, ...), ``default``
    when it is not there."""
    f = path / name
    return f.read_text() if f.exists() else default


def resume_differences(folder: str | Path, given: ExperimentConfig | dict) -> list[str]:
    """How ``given`` (a config, or overrides such as ``{"runs": 5}``) differs from the
    config the run in ``folder`` runs, as ``field: folder's -> given``: a resume runs the
    folder's own config, so any difference is refused rather than ignored."""
    theirs = load_config(Path(folder) / CONFIG)
    if isinstance(given, dict):
        return [f"{k}: {getattr(theirs, k)!r} -> {v!r}" for k, v in given.items() if getattr(theirs, k) != v]
    from dataclasses import fields

    return [f"{f.name}: {getattr(theirs, f.name)!r} -> {getattr(given, f.name)!r}" if f.name in ("runs", "seed", "name")
            else f.name for f in fields(ExperimentConfig) if getattr(theirs, f.name) != getattr(given, f.name)]

