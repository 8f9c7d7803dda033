"""The experiment runner: runs × policies, in parallel processes, into a run folder.

A run folder holds::

    config.yaml      the resolved config
    command.txt      the command line (or the API call) that made it
    versions.json    package versions, git commit, the seeds of every episode
    oracle.json      the oracle's replicas per load level (simulator)
    parts/           one folder per episode, written as the episode goes; once the run is
                     complete its step chunks are removed (steps.parquet holds them)
    steps.parquet    one row per step per run per policy (scalelab.agent.loop.StepRecord.row)
    complete.json    the run finished: the row count and checksum of steps.parquet
    policies/        each episode's saved policy state (``load:`` reads them)
    summary.json     the paper-format summary, and summary.csv
    *.png, report.html

Seeds: ``SeedSequence(seed)`` spawns one child per run; each run's child spawns the
think-time, demand, arrival and policy streams; policies get one stream each. So every
policy of run ``r`` faces the same users and the same demands (common random numbers).

``resume``: episodes whose ``parts/<episode>/done`` exists are read back, not rerun; the
others are rerun from their start (they are deterministic). A complete run is read back
from ``steps.parquet`` and only its summary and report are rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.experiments.config import ConfigError, ExperimentConfig, config_path, load_config, save_config, validate
from scalelab.experiments.episode import Resolved, build_policy, episode_name, resolve, run_episode, run_timetable
from scalelab.experiments.metrics import flat_summary, format_table, steps_per_run, summarize
from scalelab.orchestrator import plugins
from scalelab.simulator.oracle import OracleTable


@dataclass(frozen=True)
class RunResult:
    """What a finished experiment gives back."""

    path: Path
    steps: pd.DataFrame
    summary: pd.DataFrame
    seconds: float
    config: ExperimentConfig | None = None

    @property
    def steps_per_run(self) -> int:
        """Steps of the longest run (one policy, one run)."""
        return steps_per_run(self.steps)

    def table(self) -> str:
        """The summary as the terminal prints it: the experiment, the ranked table, the
        Pareto front and the glossary (``scalelab.experiments.metrics.format_table``)."""
        return format_table(self.summary, self.config, steps_per_run=self.steps_per_run)


def episode_seeds(seed: int, runs: int, n_policies: int) -> list[dict]:
    """Integer seeds per run: ``think``, ``demand``, ``arrivals``, ``policy`` (a list,
    one per policy) and ``calendar`` (the timetable's noise), all spawned from ``seed``."""
    out = []
    for run_ss in np.random.SeedSequence(seed).spawn(runs):
        think, demand, arrivals, pol, calendar = run_ss.spawn(5)  # the first four as before the calendar
        out.append({
            "think": int(think.generate_state(1)[0]),
            "demand": int(demand.generate_state(1)[0]),
            "arrivals": int(arrivals.generate_state(1)[0]),
            "policy": [int(p.generate_state(1)[0]) for p in pol.spawn(n_policies)],
            "calendar": int(calendar.generate_state(1)[0]),
        })  # fmt: skip
    return out


def versions() -> dict:
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


def oracle_levels(cfg: ExperimentConfig, resolved: Resolved, path: Path | None, progress=None):
    """Per-step load and oracle replicas (``None`` when no oracle is possible)."""
    wl = resolved.workload
    loads = wl.series(cfg.step_seconds, resolved.steps)
    if cfg.backend == "replay" and cfg.oracle:
        from scalelab.experiments.episode import load_replay

        replay = load_replay(cfg)
        levels = {u: replay.oracle(int(u), cfg.slo_ms) for u in np.unique(loads)}
        return loads, np.array([levels[u] for u in loads])
    if cfg.backend != "sim" or not cfg.oracle:
        return loads, None
    engine = "fluid" if cfg.engine.startswith("fluid") else cfg.engine  # the oracle reads the expected p95
    cache_file = path / f"oracle{'-fluid' if engine == 'fluid' else ''}.json" if path is not None else None
    table = OracleTable(
        app=resolved.app, settings=resolved.cluster, context=resolved.context,
        slo_ms=cfg.slo_ms, open_loop=wl.loop == "open", step_s=cfg.step_seconds,
        seed=int(np.random.SeedSequence([cfg.seed, 7]).generate_state(1)[0]), engine=engine,
    )  # fmt: skip
    if cache_file is not None and cache_file.exists():
        table.cache = {float(k): int(v) for k, v in json.loads(cache_file.read_text()).items()}
    oracle = table.for_levels(loads, progress=progress)
    if cache_file is not None:
        cache_file.write_text(json.dumps({repr(k): v for k, v in sorted(table.cache.items())}))
    return loads, oracle


def _run_chain(args) -> list[tuple[str, pd.DataFrame]]:
    """Episodes of one policy run one after the other: one episode, or, with
    ``replay.index: experiment``, the runs of a policy sharing one replay whose cells'
    positions (saved after each run as ``replay-index.json``) carry on from run to run."""
    cfg, resolved, p, episodes, loads, oracle, index_state = args
    replay = None
    if index_state is not None:
        from scalelab.experiments.episode import load_replay

        replay = load_replay(cfg)
        replay.load_index_state(index_state)
    out = []
    for run, seeds, part_dir in episodes:
        part_dir.mkdir(parents=True, exist_ok=True)
        for old in part_dir.glob("chunk-*.parquet"):
            old.unlink()
        frame = run_episode(cfg, resolved, p, run, seeds, loads, oracle, chunk_dir=part_dir, replay=replay)
        if replay is not None:
            (part_dir / "replay-index.json").write_text(json.dumps(replay.index_state()))
        mark_done(part_dir, len(frame))
        out.append((part_dir.name, frame))
    return out


def _jobs(cfg: ExperimentConfig, resolved: Resolved, path: Path, seeds: list[dict], loads, oracle,
          frames: dict) -> list[tuple]:
    """The episodes still to run, grouped into chains (see :func:`_run_chain`); the
    finished ones are read into ``frames``. A shared replay reruns every run after the
    first unfinished one (each depends on the positions the previous left)."""
    shared = cfg.backend == "replay" and cfg.replay.index == "experiment"
    jobs = []
    for p, spec in enumerate(cfg.policies):
        chain, state = [], []
        for run in range(cfg.runs):
            part = path / "parts" / episode_name(spec.display, run)
            kept = verified_part(part) if (part / "done").exists() and not chain else None
            if kept is not None:
                frames[part.name] = kept
                if shared:
                    state = json.loads((part / "replay-index.json").read_text())
                continue
            if (part / "done").exists():
                print(f"{part.name}: its rows do not match its done marker (damaged or unverifiable); redoing it")
                (part / "done").unlink()
            episode = (run, dict(seeds[run], policy=seeds[run]["policy"][p]), part)
            if shared:
                chain.append(episode)
            else:
                jobs.append((cfg, resolved, p, [episode], loads, oracle, None))
        if chain:
            jobs.append((cfg, resolved, p, chain, loads, oracle, state))
    return jobs


def die_with_parent() -> None:
    """A pool worker is killed when the process that made it dies (Linux
    ``PR_SET_PDEATHSIG``), so a SIGKILLed run leaves no worker writing into its folder."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the workers may outlive a killed parent
        return
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(1)


def _chunks_digest(part_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(part_dir.glob("chunk-*.parquet")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def mark_done(part_dir: Path, rows: int) -> None:
    """``done``: the episode finished; its row count and the checksum of its chunks."""
    (part_dir / "done").write_text(json.dumps({"rows": int(rows), "sha256": _chunks_digest(part_dir)}) + "\n")


def verified_part(part_dir: Path) -> pd.DataFrame | None:
    """A finished episode's rows if its ``done`` marker and its chunks agree (count and
    checksum); None (redo it) if it is not finished, damaged or unverifiable."""
    try:
        done = json.loads((part_dir / "done").read_text())
        if not isinstance(done, dict) or _chunks_digest(part_dir) != done.get("sha256"):
            return None
        frame = _read_part(part_dir)
    except (OSError, ValueError):  # no marker, an old one, a chunk that does not parse
        return None
    return frame if len(frame) == done.get("rows") else None


def _read_part(part_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in sorted(part_dir.glob("chunk-*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def run_experiment(
    config: ExperimentConfig | str | Path | dict,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    command: str | None = None,
    report: bool = True,
) -> RunResult:
    """Run ``config`` into a new folder under ``out`` (default ``runs/``), or finish the
    run in ``resume``. Returns the steps, the summary and the folder."""

    t0 = time.perf_counter()
    cfg, path = config_to_run(config, resume)
    if resume is None:
        cfg = with_saved_states(cfg, out, progress)
    resolved = resolve(cfg)
    for spec in cfg.policies:  # fail on a bad policy name or parameter before any work
        build_policy(spec, cfg, seed=0, table=run_timetable(cfg, resolved, {}))
    check_reward(cfg)
    if cfg.backend not in ("sim", "replay"):
        raise ConfigError(f"config: backend={cfg.backend!r} runs with `scalelab live run CONFIG`" if cfg.backend == "live" else f"config: backend={cfg.backend!r} is unknown")
    check_size(cfg, resolved)
    if resume is None:
        path = new_run_folder(cfg, out, command)
        record_plugins(path, cfg)
    with folder_lock(path):
        return _run_in(cfg, resolved, path, workers, progress, report, t0)


def config_to_run(config: ExperimentConfig | str | Path | dict | None,
                  resume: str | Path | None) -> tuple[ExperimentConfig, Path | None]:
    """The checked config to run and, resuming, the run folder (its ``config.yaml``)."""
    path = None
    if resume is not None:
        path = Path(resume)
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"--resume {str(path)!r}: no config.yaml there, not a run folder")
        restore_plugins(path)
        cfg = load_config(path / "config.yaml")
    else:
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    validate(cfg)  # a config built in Python gets the checks a file gets
    return cfg, path


def check_reward(cfg: ExperimentConfig) -> None:
    """Build the config's reward once, so that a bad name or parameter fails before any work."""
    from scalelab.experiments.episode import build_reward

    build_reward(cfg)


def restore_plugins(path: Path) -> None:
    """Put back on the search path what a run folder imported (``plugins.json``)."""
    if (path / "plugins.json").is_file():
        plugins.restore(json.loads((path / "plugins.json").read_text()))


def record_plugins(path: Path, cfg: ExperimentConfig) -> None:
    """``plugins.json``: the policies, reward and workload this run imported from outside
    scalelab (name -> module, file, folder, entry point), so that resume finds them."""
    used = {*(spec.name for spec in cfg.policies), cfg.reward.name, str(cfg.workload.get("kind"))}
    record = {k: v for k, v in plugins.imported().items() if k in used or v.get("source") == "file"}
    if record:
        (path / "plugins.json").write_text(json.dumps(record, indent=1))


def check_size(cfg: ExperimentConfig, resolved: Resolved) -> None:
    """Refuse, before any work, a run that would write more than ``MAX_ROWS`` rows
    (runs x policies x steps); the message gives the estimate."""
    from scalelab.experiments.config import MAX_ROWS, MAX_STEPS

    if resolved.steps > MAX_STEPS:
        raise ConfigError(f"config: the workload lasts {resolved.steps} steps of {cfg.step_seconds} s, more than "
                          f"{MAX_STEPS}: shorten it or set steps:")
    rows = cfg.runs * len(cfg.policies) * resolved.steps
    if rows > MAX_ROWS:
        raise ConfigError(f"config: runs={cfg.runs} x {len(cfg.policies)} policies x {resolved.steps} steps = "
                          f"{rows:,} rows (about {rows * 400 / 1e9:.0f} GB), more than {MAX_ROWS:,}: "
                          "fewer runs, policies or steps")


@contextlib.contextmanager
def folder_lock(path: Path):
    """One process at a time in a run folder: a second run or resume of it is refused
    (``.lock``, an advisory lock the kernel drops when its holder dies)."""
    import fcntl

    handle = open(path / ".lock", "a+")
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


def _run_in(cfg: ExperimentConfig, resolved: Resolved, path: Path, workers, progress: bool, report: bool,
            t0: float) -> RunResult:
    from tqdm.auto import tqdm

    complete = completed_steps(path)
    if complete is not None:  # resuming a finished run: nothing to redo
        steps, summary = finish_run(path, cfg, [complete], report=report)
        return RunResult(path=path, steps=steps, summary=summary, seconds=time.perf_counter() - t0, config=cfg)
    seeds = write_versions(path, cfg)

    needs_oracle = cfg.backend in ("sim", "replay") and cfg.oracle
    with tqdm(desc="oracle", unit="level", disable=not progress or not needs_oracle, leave=False) as bar:
        loads, oracle = oracle_levels(cfg, resolved, path, progress=bar.update)

    frames: dict[str, pd.DataFrame] = {}
    jobs = _jobs(cfg, resolved, path, seeds, loads, oracle, frames)
    workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
    with tqdm(total=sum(len(job[3]) for job in jobs), desc=cfg.name, unit="episode", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                for name, frame in _run_chain(job):
                    frames[name] = frame
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
                futures = [pool.submit(_run_chain, job) for job in jobs]
                for fut in as_completed(futures):
                    for name, frame in fut.result():
                        frames[name] = frame
                        bar.update(1)
    steps, summary = finish_run(path, cfg, list(frames.values()), report=report)
    return RunResult(path=path, steps=steps, summary=summary, seconds=time.perf_counter() - t0, config=cfg)


def with_saved_states(cfg: ExperimentConfig, out: str | Path | None, progress: bool = True) -> ExperimentConfig:
    """``cfg`` with every ``load: EXPERIMENT`` (a config's name or file, not a saved
    state) replaced by the newest finished run folder of that experiment under ``out``;
    when there is none, that experiment is run first (same ``runs``, and ``steps`` if
    set), so a hot start runs on its own."""
    from dataclasses import replace

    base = Path(out) if out is not None else Path("runs")
    policies, done = [], {}
    for spec in cfg.policies:
        load = spec.params.get("load")
        if not isinstance(load, str) or Path(load).expanduser().exists():
            policies.append(spec)
            continue
        source = config_path(load)
        if not source.is_file():
            raise ConfigError(f"config: policies: {spec.display}: load={load!r} is neither a saved state, a run "
                              "folder nor an experiment's config")
        if load not in done:
            source_cfg = load_config(source)
            source_cfg = replace(source_cfg, runs=cfg.runs, steps=cfg.steps or source_cfg.steps)
            finished = sorted((p for p in base.glob(f"{source_cfg.name}-*") if (p / "steps.parquet").is_file()
                               and load_config(p / "config.yaml").runs >= cfg.runs), key=lambda p: p.stat().st_mtime)
            if finished:
                done[load] = finished[-1]
            else:
                print(f"{cfg.name}: {spec.display} starts from {source_cfg.name}'s states; running it first")
                done[load] = run_experiment(source_cfg, out=base, progress=progress, report=False,
                                            command=f"(for {cfg.name})").path
        policies.append(replace(spec, params={**spec.params, "load": str(done[load])}))
    return replace(cfg, policies=policies)


def new_run_folder(cfg: ExperimentConfig, out: str | Path | None, command: str | None) -> Path:
    """``out/<name>-<UTC stamp>`` with the resolved config and the command line."""
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
    save_config(cfg, path / "config.yaml")
    (path / "command.txt").write_text((command or " ".join(sys.argv)) + "\n")
    return path


def write_versions(path: Path, cfg: ExperimentConfig) -> list[dict]:
    """``versions.json`` (packages, commit, every episode's seeds); returns the seeds."""
    seeds = episode_seeds(cfg.seed, cfg.runs, len(cfg.policies))
    (path / "versions.json").write_text(json.dumps({**versions(), "seed": cfg.seed, "episodes": seeds}, indent=1))
    return seeds


def finish_run(path: Path, cfg: ExperimentConfig, frames: list[pd.DataFrame],
               report: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather the episodes: saved policy states, ``steps.parquet`` in config order, the
    summary files and (optionally) the report. Returns ``(steps, summary)``."""
    saved = path / "policies"
    saved.mkdir(exist_ok=True)
    for part in sorted((path / "parts").glob("*/policy.json")):
        (saved / f"{part.parent.name}.json").write_text(part.read_text())
    order = {spec.display: k for k, spec in enumerate(cfg.policies)}
    steps = pd.concat(frames, ignore_index=True)
    steps = steps.sort_values(
        by=["policy", "run", "step"], key=lambda c: c.map(order) if c.name == "policy" else c
    ).reset_index(drop=True)
    steps.to_parquet(path / "steps.parquet", index=False)
    compact_parts(path, len(steps))
    summary = summarize(steps, cfg)
    summary_to_files(summary, path)
    if report:
        from scalelab.experiments.report import write_report

        write_report(path, steps=steps, summary=summary, cfg=cfg)
    return steps, summary


def _file_digest(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def compact_parts(path: Path, rows: int) -> None:
    """Mark the run complete (``complete.json``: rows and checksum of ``steps.parquet``)
    and remove what ``steps.parquet`` and ``policies/`` now hold: the episodes' step
    chunks and policy states. Their small status files stay."""
    (path / "complete.json").write_text(json.dumps({"rows": int(rows), "sha256": _file_digest(path / "steps.parquet")}))
    for f in [*path.glob("parts/*/chunk-*.parquet"), *path.glob("parts/*/policy.json")]:
        f.unlink()


def completed_steps(path: Path) -> pd.DataFrame | None:
    """A complete run's steps, if ``complete.json`` and ``steps.parquet`` agree."""
    try:
        done = json.loads((path / "complete.json").read_text())
        if _file_digest(path / "steps.parquet") != done["sha256"]:
            return None
        steps = pd.read_parquet(path / "steps.parquet")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if len(steps) == done["rows"] else None


def summary_to_files(summary: pd.DataFrame, path: Path) -> None:
    """``summary.json`` (``{"mean", "ci95"}`` per metric) and a flat ``summary.csv``."""
    records = summary.to_dict(orient="records")
    (path / "summary.json").write_text(json.dumps(records, indent=1))
    flat_summary(summary, mean_suffix="_mean").to_csv(path / "summary.csv", index=False)
