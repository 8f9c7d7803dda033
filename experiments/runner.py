"""The simulated runner: runs × policies, in parallel processes, into a run folder
(:func:`run_simulated`), or several independent configs' episodes in one pool, each into
its own folder (:func:`run_together`: the commands that run several experiments).

The folder (its layout, snapshot, chunks, ``done`` markers, lock and resume) is
:mod:`scalelab.experiments.runfolder`'s; this module runs the episodes of a ``sim`` or
``replay`` config into it (:func:`run_simulated`). The report is the caller's step
(:func:`scalelab.experiments.experiment.run_experiment` runs, then reports).

Seeds: :func:`scalelab.experiments.episode.episode_seeds` (common random numbers: every
policy of run ``r`` faces the same users and the same demands).

``resume``: episodes whose ``done`` marker and chunks agree are read back, not rerun; the
others are rerun from their start (they are deterministic), from the folder's snapshot.
A complete run is read back from ``steps.parquet`` and only its summary is rewritten.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scalelab.errors import RunInterrupted
from scalelab.experiments import runfolder
from scalelab.experiments.config import ConfigError, ExperimentConfig, config_path, load_config
from scalelab.experiments.episode import (
    Resolved,
    build_policy,
    build_reward,
    load_replay,
    oracle_levels,
    resolve,
    run_episode,
    run_timetable,
)
from scalelab.experiments.runfolder import (
    RunResult,
    compact_parts,
    completed_steps,
    config_to_run,
    folder_lock,
)

__all__ = ["check_reward", "check_size", "command_bar", "count_on", "die_with_parent", "episodes", "run_simulated",
           "run_together", "with_saved_states"]


def _run_chain(args) -> list[str]:
    """Episodes of one policy run one after the other: one episode, or, with
    ``replay.index: experiment``, the runs of a policy sharing one replay whose cells'
    positions (saved after each run in its part) carry on from run to run. Returns the
    finished episodes' names; their rows are in their parts' chunks."""
    cfg, resolved, p, episodes, loads, oracle, index_state = args
    replay = None
    if index_state is not None:
        replay = load_replay(cfg)
        replay.load_index_state(index_state)
    out = []
    for run, seeds, part in episodes:
        part.start()
        frame = run_episode(cfg, resolved, p, run, seeds, loads, oracle, part=part, replay=replay)
        if replay is not None:
            part.write_replay_index(replay.index_state())
        part.mark_done(len(frame))
        out.append(part.name)  # the rows stay in the part's chunks: no copy through the pool
    return out


def _jobs(cfg: ExperimentConfig, resolved: Resolved, path: Path, seeds: list[dict], loads, oracle,
          read_back: set) -> list[tuple]:
    """The episodes still to run, grouped into chains (see :func:`_run_chain`); the
    finished ones (verified) are added to ``read_back``. A shared replay reruns every run after
    the first unfinished one (each depends on the positions the previous left)."""
    shared = cfg.backend == "replay" and cfg.replay.index == "experiment"
    jobs = []
    for p, spec in enumerate(cfg.policies):
        chain, state = [], []
        for run in range(cfg.runs):
            part = runfolder.part(path, spec.display, run)
            kept = part.verified() if part.marked_done() and not chain else None
            if kept is not None:
                read_back.add(part.name)
                if shared:
                    state = part.replay_index()
                continue
            if part.marked_done():
                print(f"{part.name}: its rows do not match its done marker (damaged or unverifiable); redoing it")
                part.unmark()
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


def run_simulated(
    config: ExperimentConfig | str | Path | dict | None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    workers: int | None = None,
    progress=True,
    command: str | None = None,
) -> RunResult:
    """Run ``config`` (``backend: sim`` or ``replay``) into a new folder under ``out``
    (default ``runs/``), or finish the run in ``resume``; no report (the caller's step).
    ``progress``: True (a bar per run), False, or a command's bar (:func:`command_bar`)
    its episodes advance. Returns the steps, the summary and the folder."""
    run = _make_folder(_check(config, resume, out, progress), out, command)
    [(_, result)] = _run_all([run], workers, progress)
    return result


def run_together(configs: list, out: str | Path | None = None, workers: int | None = None, progress=True,
                 command: str | None = None) -> Iterator[tuple[int, RunResult]]:
    """Run several independent configs (each into its own new folder under ``out``) with
    their episodes in one pool of processes, so that one config's long episodes overlap
    the others' instead of leaving a core idle; yields ``(index in configs, result)`` as
    each run finishes (its folder complete: the caller may report it while the others
    run). Every config is checked, and its folder made, before any episode runs.
    ``progress``: as :func:`run_simulated`'s (True: one bar for them all)."""
    checked = [_check(config, None, out, progress) for config in configs]  # every config before any folder
    runs = [_make_folder(c, out, command) for c in checked]
    if len(runs) > 1 and not is_bar(progress):
        with command_bar(bool(progress), "runs", sum(episodes(r.cfg) for r in runs)) as bar:
            yield from _run_all(runs, workers, bar)
    else:
        yield from _run_all(runs, workers, progress)


@dataclass
class _Run:
    """A run about to start: its config as given (``cfg``) and as run (``run_cfg``, from
    the folder's snapshot), the folder, and when it was asked for (``perf_counter``, s)."""

    cfg: ExperimentConfig
    run_cfg: ExperimentConfig
    resolved: Resolved
    path: Path
    t0: float


def _check(config, resume, out, progress) -> tuple:
    """Check ``config`` (or ``resume``'s) before any work: ``(cfg, run_cfg, resolved,
    folder or None, perf_counter at the start)``. A hot start whose states are not in
    ``out`` yet runs their experiment here (:func:`with_saved_states`)."""
    t0 = time.perf_counter()
    cfg, path = config_to_run(config, resume)
    if resume is None:
        cfg = with_saved_states(cfg, out, progress)
    run_cfg = cfg if path is None else runfolder.from_snapshot(cfg, path)
    resolved = resolve(run_cfg)
    for spec in cfg.policies:  # fail on a bad policy name or parameter before any work
        build_policy(spec, run_cfg, seed=0, table=run_timetable(run_cfg, resolved, {}))
    check_reward(cfg)
    if cfg.backend not in ("sim", "replay"):
        raise ConfigError(f"config: backend={cfg.backend!r} runs with `scalelab live run CONFIG`" if cfg.backend == "live" else f"config: backend={cfg.backend!r} is unknown")
    check_size(cfg, resolved)
    return cfg, run_cfg, resolved, path, t0


def _make_folder(checked: tuple, out, command) -> _Run:
    """The run of a checked config: its new folder under ``out`` (or the resumed one)."""
    cfg, run_cfg, resolved, path, t0 = checked
    if path is None:
        path = runfolder.create(cfg, out, command)
        run_cfg = runfolder.from_snapshot(cfg, path)  # a new run runs from its snapshot, as its resume will
        resolved = resolve(run_cfg)
    return _Run(cfg, run_cfg, resolved, path, t0)


def check_reward(cfg: ExperimentConfig) -> None:
    """Build the config's reward once, so that a bad name or parameter fails before any work."""
    build_reward(cfg)


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


def _plan(run: _Run, progress, read_back: set) -> list[tuple] | pd.DataFrame:
    """The chains of episodes ``run`` still has to run (see :func:`_jobs`; the finished
    ones added to ``read_back``), or, resuming a complete run, its steps."""
    from tqdm.auto import tqdm

    cfg, resolved, path = run.run_cfg, run.resolved, run.path
    complete = completed_steps(path)
    if complete is not None:  # resuming a finished run: nothing to redo
        return complete
    seeds = runfolder.write_versions(path, cfg)
    needs_oracle = cfg.backend in ("sim", "replay") and cfg.oracle
    shared = is_bar(progress)
    desc = getattr(progress, "desc", "").removesuffix(": ")  # a disabled bar has none
    if shared and needs_oracle:  # the command's bar says what it waits for, then its own name again
        progress.set_description(f"{desc} ({cfg.name}: oracle)")
    try:
        with tqdm(desc="oracle", unit="level", disable=shared or not progress or not needs_oracle,
                  leave=False) as bar:
            loads, oracle = oracle_levels(cfg, resolved, path, progress=bar.update)
    finally:
        if shared and needs_oracle:
            progress.set_description(desc)
    return _jobs(cfg, resolved, path, seeds, loads, oracle, read_back)


def _run_all(runs: list[_Run], workers, progress) -> Iterator[tuple[int, RunResult]]:
    """Run the chains of every run of ``runs`` (in one pool of ``workers`` processes, or
    here with one worker), yielding each run's result once its folder is complete. A run
    counts as unfinished until the caller is done with it (its report): a Ctrl-C, here or
    thrown in by the caller, names every unfinished folder (:class:`RunInterrupted`); an
    error keeps the finished episodes and adds a note naming the folders to resume."""
    unfinished = dict(enumerate(run.path for run in runs))
    with ExitStack() as stack:
        for run in runs:
            stack.enter_context(folder_lock(run.path))
        # the episodes a resume found finished (for the bars); every episode's rows are read
        # back from its chunks once its run is complete, so runs that go on together never
        # hold each other's rows
        read_back: list[set[str]] = [set() for _ in runs]
        jobs, left, bars, ready = [], [], [], []
        try:
            for i, run in enumerate(runs):
                plan = _plan(run, progress, read_back[i])
                if isinstance(plan, pd.DataFrame):  # complete already
                    if is_bar(progress):
                        episode_bar(progress, run.run_cfg, 0, read_back=episodes(run.run_cfg))
                    ready.append((i, _result(run, plan, runfolder.write_summary(run.path, plan, run.run_cfg))))
                    left.append(None)
                    bars.append(None)
                    continue
                jobs.append([(i, job) for job in plan])
                left.append(len(plan))
                bars.append(stack.enter_context(
                    episode_bar(progress, run.run_cfg, sum(len(job[3]) for job in plan), read_back=len(read_back[i]))))
                if not plan:  # every episode read back: nothing to run
                    ready.append((i, _finished(run)))
            for i, result in ready:
                yield i, result
                del unfinished[i]
            # the runs' chains taken in turn (each run's first, then each run's second, ...):
            # one run's long chains do not wait behind all of another's
            jobs = [job for turn in itertools.zip_longest(*jobs) for job in turn if job is not None]
            workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
            for i, chain in _chains(jobs, workers):
                bars[i].update(len(chain))
                left[i] -= 1
                if left[i] == 0:
                    yield i, _finished(runs[i])
                    del unfinished[i]
        except KeyboardInterrupt:
            raise RunInterrupted(*unfinished.values()) from None
        except Exception as exc:
            if unfinished:
                exc.add_note("unfinished run folders (their finished episodes are kept; `scalelab run --resume "
                             f"FOLDER` finishes each): {', '.join(map(str, unfinished.values()))}")
            raise


def _chains(jobs: list[tuple[int, tuple]], workers: int) -> Iterator[tuple[int, list]]:
    """``(run index, the chain's episodes)`` as chains finish: here one after the other
    with one worker, else in a pool of ``workers`` processes (in submission order)."""
    if workers <= 1 or len(jobs) <= 1:
        for i, job in jobs:
            yield i, _run_chain(job)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent)
    try:
        futures = {pool.submit(_run_chain, job): i for i, job in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:  # on an error, or the caller gone: the chains not started yet are not run
        pool.shutdown(wait=True, cancel_futures=True)


def _finished(run: _Run) -> RunResult:
    # compact_parts through this module's name: a test stands in for a run killed before its end by replacing it
    frames = runfolder.finished_rows(run.path, run.run_cfg)
    steps, summary = runfolder.finish(run.path, run.run_cfg, frames, compact=compact_parts)
    return _result(run, steps, summary)


def _result(run: _Run, steps: pd.DataFrame, summary: pd.DataFrame) -> RunResult:
    return RunResult(path=run.path, steps=steps, summary=summary, seconds=time.perf_counter() - run.t0,
                     config=run.cfg)


def is_bar(progress) -> bool:
    """Whether ``progress`` is a command's own bar (a ``tqdm``) rather than on/off."""
    return not isinstance(progress, bool) and hasattr(progress, "update")


def command_bar(enabled: bool, desc: str, total: int | None = None, unit: str = "episode"):
    """One progress bar for a command that runs several experiments (``scalelab paper``,
    ``anticipation``, ``architectures``): passed as their ``progress``, every run advances
    it by each of its episodes (run, or read back on a resume); ``total``: the command's
    episodes (the runs add theirs when it is None). Disabled, it draws nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def episodes(cfg: ExperimentConfig) -> int:
    """The episodes a run of ``cfg`` runs: runs × policies."""
    return cfg.runs * len(cfg.policies)


def episode_bar(progress, cfg: ExperimentConfig, todo: int, read_back: int = 0):
    """The bar the run's ``todo`` episodes advance: the command's (``progress`` a bar;
    the ``read_back`` episodes of a resume count as done, and a bar without a total grows
    by the run's episodes) or a new one of its own (``progress`` True), or none."""
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    if not is_bar(progress):
        return tqdm(total=todo, desc=cfg.name, unit="episode", disable=not progress)
    count_on(progress, todo, read_back)
    return nullcontext(progress)


def count_on(bar, todo: int, done: int = 0) -> None:
    """Count ``todo`` more items and ``done`` finished ones on a command's ``bar``: its
    total grows unless the command counted them already; the finished advance it at once."""
    if bar.total is None or bar.n + todo + done > bar.total:
        bar.total = (bar.total or 0) + todo + done
    bar.update(done)


def with_saved_states(cfg: ExperimentConfig, out: str | Path | None, progress=True) -> ExperimentConfig:
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
            finished = sorted((p for p in base.glob(f"{source_cfg.name}-*") if (p / runfolder.STEPS).is_file()
                               and load_config(p / runfolder.CONFIG).runs >= cfg.runs), key=lambda p: p.stat().st_mtime)
            if finished:
                done[load] = finished[-1]
            else:
                say = progress.write if is_bar(progress) else print
                say(f"{cfg.name}: {spec.display} starts from {source_cfg.name}'s states; running it first")
                if is_bar(progress) and progress.total is not None:  # the command did not count it
                    progress.total += episodes(source_cfg)
                done[load] = run_simulated(source_cfg, out=base, progress=progress,
                                           command=f"(for {cfg.name})").path
        policies.append(replace(spec, params={**spec.params, "load": str(done[load])}))
    return replace(cfg, policies=policies)
