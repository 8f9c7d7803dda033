"""One episode: one policy, one run, on the simulator or a replay.

This module composes; it holds no step loop and no backend. It resolves a config into
settings (:func:`resolve`), builds the backend of ``scalelab.simulator.backends`` and the policy,
runs them through the one step loop (:class:`scalelab.agent.loop.StepLoop`) and turns its
:class:`~scalelab.agent.loop.StepRecord` s into rows of ``steps.parquet`` (:func:`records_frame`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.agent import build as agent_build
from scalelab.agent.base import PolicyError, read_state_file
from scalelab.agent.build import Deployment
from scalelab.agent.loop import ROW_COLUMNS, LoopSettings, StepLoop, StepRecord
from scalelab.agent.rewards import RewardError
from scalelab.experiments.config import ConfigError, ExperimentConfig, PolicySpec
from scalelab.injector.calendar import CalendarSettings, calendar_features, timetable_data
from scalelab.injector.calendar import run_timetable as announced_timetable
from scalelab.injector.workloads import Workload, WorkloadError, make_workload
from scalelab.orchestrator.backend import QUEUE_COLUMNS, Backend, Clock, VirtualClock
from scalelab.orchestrator.context import PRESETS, ContextSettings
from scalelab.simulator.backends import FluidBackend, JobsBackend, ReplayBackend, SimBackend
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.datasets import BUILTIN, resolve_dataset
from scalelab.simulator.jobs import JobsSettings
from scalelab.simulator.models import AppProfile, find_profile
from scalelab.simulator.oracle import OracleTable
from scalelab.simulator.replay import Replay
from scalelab.simulator.students import InjectorDraws, first_student_number


@dataclass(frozen=True)
class Resolved:
    """What a config means once its names are looked up."""

    app: AppProfile
    cluster: ClusterSettings
    context: ContextSettings
    workload: Workload
    steps: int
    loop: LoopSettings
    jobs: JobsSettings | None = None  # architecture: jobs


def resolve(cfg: ExperimentConfig) -> Resolved:
    """Look up the profile, workload and presets of ``cfg``; errors name the key."""
    try:
        base = find_profile(cfg.app.profile)
    except KeyError as exc:
        raise ConfigError(f"config: {exc.args[0]}") from None
    overrides = {k: v for k, v in vars(cfg.app).items() if k != "profile" and v is not None}
    if overrides.get("wall_limit_ms") == "none":  # the profile's wall limit removed
        overrides["wall_limit_ms"] = None
    try:
        app = base.with_overrides(**overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: app: {exc}") from None
    try:
        workload = make_workload(cfg.workload)
    except WorkloadError as exc:
        raise ConfigError(f"config: {exc}") from None
    think = cfg.cluster.think_s or workload.think_s or (0.0, 2.0)
    c = cfg.cluster
    try:
        cluster = ClusterSettings(
            min_replicas=c.min_replicas, max_replicas=c.max_replicas,
            initial_replicas=c.initial_replicas, startup_seconds=c.startup_seconds,
            balancer=c.balancer, think_low_s=float(think[0]), think_high_s=float(think[1]), students=c.students,
        )
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    if cfg.context.preset not in PRESETS:
        raise ConfigError(f"config: context.preset={cfg.context.preset!r} is not one of {sorted(PRESETS)}")
    base = PRESETS[cfg.context.preset]
    ctx_over = {k: v for k, v in vars(cfg.context).items() if k != "preset" and v is not None}
    try:
        context = ContextSettings(**{**vars(base), **ctx_over})
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    steps = cfg.steps or math.ceil(workload.duration_s / cfg.step_seconds)
    loop = LoopSettings(step_seconds=float(cfg.step_seconds), mode=cfg.loop, slo_ms=float(cfg.slo_ms),
                        warmup_load=cfg.warmup.load, warmup_seconds=float(cfg.warmup.seconds))
    jobs = None
    if cfg.architecture == "jobs":
        try:
            jobs = JobsSettings(**vars(cfg.jobs))
        except ValueError as exc:
            raise ConfigError(f"config: {exc}") from None
    return Resolved(app=app, cluster=cluster, context=context, workload=workload, steps=steps, loop=loop, jobs=jobs)

#: Columns of steps.parquet, in order: the episode, the step's record
#: (:meth:`scalelab.agent.loop.StepRecord.row`), the oracle.
COLUMNS = ("run", "policy", *ROW_COLUMNS, "oracle_replicas")


def saved_state_path(load: str, label: str, run: int, load_run: int | str = "same",
                     other_labels: tuple[str, ...] = ()) -> Path:
    """The state file a ``load: PATH`` means: PATH itself if it is a file; in a run folder,
    that policy's state of run ``load_run``: ``same`` (this run; run 0 if the folder has
    fewer runs), ``last`` (the folder's last run: the notebooks' hot starts all loaded
    the state their cold start saved at its end) or a run number. The policy is looked
    up by ``label``, then by ``other_labels`` (its policy name: a policy given a label
    of its own finds the state saved under the name); a folder without it names the
    labels it holds."""
    p = Path(load).expanduser()
    if p.is_file():
        return p
    for name in (label, *other_labels):
        found = _saved_state(p, name, run, load_run)
        if found is not None:
            return found
    saved = saved_states(p)
    held = sorted({stem for stem, _ in saved})
    for name in (label, *other_labels):
        runs = sorted(run for stem, run in saved if stem == episode_stem(name))
        if runs:  # the policy is there, not the run asked for
            asked = run if load_run == "same" else load_run
            raise ConfigError(f"config: policies: load={load!r}: no saved state of run {asked} for {label!r} "
                              f"there (it holds runs {', '.join(map(str, runs))} of {name!r})")
    raise ConfigError(f"config: policies: load={load!r}: no saved state for {label!r} there "
                      f"(expected a JSON file or a run folder with policies/{episode_name(label, run)}.json.gz; "
                      f"{'the folder holds ' + ', '.join(held) + ': set load_label' if held else 'it holds none'})")


def _saved_state(folder: Path, label: str, run: int, load_run: int | str) -> Path | None:
    """``label``'s state file in ``folder`` for :func:`saved_state_path`, or None."""
    if load_run == "last":
        runs = sorted(run for stem, run in saved_states(folder) if stem == episode_stem(label))
        names = [episode_name(label, runs[-1])] if runs else []
    elif load_run == "same":
        names = [episode_name(label, run), episode_name(label, 0)]
    else:
        names = [episode_name(label, int(load_run))]
    for name in names:
        for suffix in (".json.gz", ".json"):  # gzip since the folders got smaller; plain JSON before
            if (candidate := folder / "policies" / f"{name}{suffix}").is_file():
                return candidate
    return None


def episode_stem(policy_label: str) -> str:
    """The part of :func:`episode_name` that names the policy (a label made safe for a
    file name)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in policy_label)


def episode_name(policy_label: str, run: int) -> str:
    """Folder and file stem of one (policy, run) episode."""
    return f"{episode_stem(policy_label)}--run{run:03d}"


def saved_states(folder: Path) -> list[tuple[str, int]]:
    """The (policy stem, run) of every state file saved in a run folder's ``policies/``
    (``hpa-0.7--run003.json.gz``: ``("hpa-0.7", 3)``)."""
    found = (re.fullmatch(r"(.*)--run(\d+)\.json(?:\.gz)?", f.name) for f in (folder / "policies").glob("*--run*"))
    return [(m[1], int(m[2])) for m in found if m]


def run_timetable(cfg: ExperimentConfig, resolved: Resolved, seeds: dict) -> Workload | None:
    """The timetable announced for this run (:func:`scalelab.injector.calendar.timetable`: noisy
    per ``cfg.calendar``, drawn from the run's ``calendar`` seed); None when the workload
    publishes none (an error if the config asks for calendar features)."""
    settings = CalendarSettings(cfg.calendar.size_noise, cfg.calendar.start_noise_min)
    table = announced_timetable(resolved.workload, settings, int(seeds.get("calendar", 0)))
    if table is None and cfg.calendar.features:
        raise ConfigError(f"config: calendar.features needs a workload that publishes a timetable; "
                          f"{resolved.workload.name!r} does not (evaluation-week-v1 does)")
    return table


def saved_state_of(spec: PolicySpec, run: int) -> tuple[dict, Path | None]:
    """``spec``'s parameters without the hot-start keys (``load``, ``load_label``,
    ``load_run``), and the state file they name for ``run`` (None: a cold start)."""
    params = dict(spec.params)
    load = params.pop("load", None)
    label = params.pop("load_label", spec.display)
    load_run = params.pop("load_run", "same")
    others = (spec.name,) if "load_label" not in spec.params and spec.name != label else ()
    return params, (saved_state_path(str(load), label, run, load_run, others) if load is not None else None)


def deployment_of(cfg: ExperimentConfig) -> Deployment:
    """What the loop's caller knows of ``cfg``, offered to its policies and reward."""
    c = cfg.cluster
    return Deployment(c.min_replicas, c.max_replicas, float(cfg.slo_ms), float(cfg.step_seconds))


def build_policy(spec: PolicySpec, cfg: ExperimentConfig, seed: int, run: int = 0,
                 table: Workload | None = None):
    """The policy of ``spec`` (:func:`scalelab.agent.build.build_policy`) with the run's
    announced timetable ``table``; with ``load`` (and optionally ``load_label``,
    ``load_run``), its learned state is restored (hot start) and it keeps learning, with
    its own generator."""
    params, saved = saved_state_of(spec, run)
    state = read_state_file(saved) if saved is not None else None
    try:
        return agent_build.build_policy(spec.name, params, deployment_of(cfg), seed, state=state, label=spec.display,
                                        timetable=timetable_data(table) if table is not None else None)
    except PolicyError as exc:
        raise ConfigError(f"config: policies: {exc}") from None


def build_reward(cfg: ExperimentConfig):
    """The config's reward (:func:`scalelab.agent.build.build_reward`); errors name ``reward``."""
    try:
        return agent_build.build_reward(cfg.reward.name, cfg.reward.params, deployment_of(cfg))
    except RewardError as exc:
        raise ConfigError(f"config: reward: {exc}") from None


def load_replay(cfg: ExperimentConfig) -> Replay:
    """The dataset of a ``backend: replay`` config (:mod:`scalelab.simulator.datasets`), ready to
    serve."""
    if not cfg.dataset:
        raise ConfigError(f"config: backend='replay' needs dataset: one of {list(BUILTIN)} or a file "
                          "(scalelab dataset record --out PATH)")
    c = cfg.cluster
    return Replay(resolve_dataset(cfg.dataset), c.min_replicas, c.max_replicas, c.initial_replicas)


def injector_draws(cfg: ExperimentConfig, r: Resolved, seeds: dict, loads: np.ndarray,
                   episode: tuple[int, int]) -> InjectorDraws:
    """Which live injector students episode ``(run, policy index)`` replays
    (``cluster.students: injector``): the policy's seed, which the live agent sends as the
    injector's task seed, and the number of its first student in a live run folder of
    ``cfg`` (of ``seed_runs`` runs when set), whose one injector plays the episodes in
    order, each setting the warm-up load, if any, then the level of every step."""
    if cfg.backend != "sim" or cfg.engine != "des":
        raise ConfigError(f"config: cluster.students: injector runs on backend: sim, engine: des "
                          f"(got {cfg.backend}, {cfg.engine})")
    if r.app.demand.kind != "corpus" or r.workload.loop != "closed":
        raise ConfigError("config: cluster.students: injector needs closed users submitting a corpus "
                          f"(app.demand.kind: corpus; got {r.app.demand.kind!r}, a {r.workload.loop} workload)")
    run, k = episode
    levels = [*([cfg.warmup.load] if cfg.warmup.load is not None else []), *loads[: r.steps]]
    first = first_student_number(levels, run % (cfg.seed_runs or cfg.runs), k, len(cfg.policies))
    return InjectorDraws(seed=int(seeds["policy"]), first_number=first)


def make_backend(cfg: ExperimentConfig, r: Resolved, seeds: dict, loads: np.ndarray, clock: Clock,
                 replay: Replay | None = None, episode: tuple[int, int] = (0, 0)) -> Backend:
    """The backend ``cfg`` names, built from its resolved settings, on ``clock``. A
    replay serves from ``replay`` when given (its cells' positions carried over from
    the previous run, ``replay.index: experiment``), else from a fresh one. ``episode``:
    (run, policy index), which the injector's students need (``cluster.students``)."""
    students = injector_draws(cfg, r, seeds, loads, episode) if r.cluster.students == "injector" else None
    if cfg.backend == "replay":
        if replay is None:
            replay = load_replay(cfg)
        else:
            replay.restart(keep_index=cfg.replay.index == "experiment")
        return ReplayBackend(replay, clock, first_draws=cfg.replay.first_draws)
    closed = r.workload.loop == "closed"
    if cfg.architecture == "jobs":
        if cfg.backend != "sim" or cfg.engine != "des":
            raise ConfigError(f"config: architecture='jobs' runs on backend: sim, engine: des only "
                              f"(got backend={cfg.backend!r}, engine={cfg.engine!r})")
        return JobsBackend(r.app, r.cluster, r.jobs, r.context, clock, seeds, closed=closed,
                           max_users=int(max(np.max(loads), 1)) if closed else 64, students=students)
    if cfg.engine.startswith("fluid"):
        noise = np.random.default_rng(seeds["demand"]) if cfg.engine == "fluid-stochastic" else None
        return FluidBackend(r.app, r.cluster, r.context, clock, closed=closed, rng=noise)
    return SimBackend(r.app, r.cluster, r.context, clock, seeds, closed=closed,
                      max_users=int(max(np.max(loads), 1)) if closed else 64, students=students)


def records_frame(records: list[StepRecord], run: int, policy: str, oracle: np.ndarray | None) -> pd.DataFrame:
    """Rows of ``steps.parquet`` for ``records``: ``run``, ``policy``, then
    :meth:`StepRecord.row`, then ``oracle_replicas`` (-1 without an oracle), then, on
    the jobs model, the ``queue_*`` columns (:data:`QUEUE_COLUMNS`)."""
    rows = [r.row() for r in records]
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    frame.insert(0, "policy", [policy] * len(rows))
    frame.insert(0, "run", np.full(len(rows), run, dtype=np.int64))
    steps = frame["step"].to_numpy() if rows else np.zeros(0, dtype=np.int64)
    frame["oracle_replicas"] = (oracle[steps].astype(np.int64) if oracle is not None
                                else np.full(len(rows), -1, dtype=np.int64))
    if rows and "queue_lag" in rows[0]:  # the jobs model: its queue_* columns after the oracle's
        for k in QUEUE_COLUMNS:
            frame["queue_" + k] = [row["queue_" + k] for row in rows]
    return frame


def episode_records(cfg: ExperimentConfig, resolved: Resolved, policy_index: int, run: int, seeds: dict[str, int],
                    loads: np.ndarray, oracle: np.ndarray | None, replay: Replay | None = None):
    """The episode's steps as they happen: yields each :class:`StepRecord`; the policy
    is returned by the generator when it ends (``StopIteration.value``). ``replay``:
    see :func:`make_backend`."""
    spec = cfg.policies[policy_index]
    clock = VirtualClock()
    backend = make_backend(cfg, resolved, seeds, loads, clock, replay, episode=(run, policy_index))
    table = run_timetable(cfg, resolved, seeds)
    policy = build_policy(spec, cfg, seeds["policy"], run, table)
    reward_fn = build_reward(cfg)
    features = calendar_features(table, cfg.step_seconds, resolved.steps) if cfg.calendar.features else None
    loop = StepLoop(backend, clock, loads[: resolved.steps], resolved.loop, reward_fn, oracle, features)
    for record, _ in loop.run(policy):
        yield record
    return policy


def run_episode(
    cfg: ExperimentConfig,
    resolved: Resolved,
    policy_index: int,
    run: int,
    seeds: dict[str, int],
    loads: np.ndarray,
    oracle: np.ndarray | None,
    part=None,
    chunk_steps: int = 5000,
    replay: Replay | None = None,
) -> pd.DataFrame:
    """Run one episode through the step loop and return its rows; with ``part`` (the
    episode's folder, :class:`scalelab.experiments.runfolder.Part`), rows are also
    written there every ``chunk_steps`` steps so that a killed run keeps what it did,
    and the policy's state at the end. ``replay``: see :func:`make_backend`."""
    label = cfg.policies[policy_index].display
    records: list[StepRecord] = []
    frames: list[pd.DataFrame] = []  # one per chunk of rows, each built once
    written = 0

    def flush() -> None:
        nonlocal written
        if len(records) > written:
            frame = records_frame(records[written:], run, label, oracle)
            if part is not None:
                part.write_chunk(written, frame)
            frames.append(frame)
            written = len(records)

    steps = episode_records(cfg, resolved, policy_index, run, seeds, loads, oracle, replay)
    while True:
        try:
            records.append(next(steps))
        except StopIteration as end:
            policy = end.value
            break
        if len(records) - written >= chunk_steps:
            flush()
    flush()
    if part is not None:
        part.write_policy(policy.state_dict())
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def episode_seeds(seed: int, runs: int, n_policies: int, seed_runs: int | None = None) -> list[dict]:
    """Integer seeds per run: ``think``, ``demand``, ``arrivals``, ``policy`` (a list,
    one per policy) and ``calendar`` (the timetable's noise), all spawned from ``seed``.

    ``SeedSequence(seed)`` spawns one child per run; each run's child spawns the
    think-time, demand, arrival and policy streams; policies get one stream each. So
    every policy of run ``r`` faces the same users and the same demands (common random
    numbers). With ``seed_runs``, run ``i`` takes the ``policy`` and ``calendar`` seeds
    of run ``i % seed_runs`` (and so, with ``cluster.students: injector``, its students)
    and keeps its own simulator streams: live run folders of one config and seed
    repeat each other so."""
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
    if seed_runs:
        out = [{**run, "policy": out[i % seed_runs]["policy"], "calendar": out[i % seed_runs]["calendar"]}
               for i, run in enumerate(out)]
    return out


def oracle_levels(cfg: ExperimentConfig, resolved: Resolved, cache_dir: Path | None, progress=None):
    """Per-step load and oracle replicas (``None`` when no oracle is possible); the
    oracle's table is cached in ``cache_dir`` (``oracle.json``, ``oracle-fluid.json``, ``oracle-jobs.json``)
    when given."""
    wl = resolved.workload
    loads = wl.series(cfg.step_seconds, resolved.steps)
    if cfg.backend == "replay" and cfg.oracle:
        replay = load_replay(cfg)
        levels = {u: replay.oracle(int(u), cfg.slo_ms) for u in np.unique(loads)}
        return loads, np.array([levels[u] for u in loads])
    if cfg.backend != "sim" or not cfg.oracle:
        return loads, None
    engine = "fluid" if cfg.engine.startswith("fluid") else cfg.engine  # the oracle reads the expected p95
    suffix = "-fluid" if engine == "fluid" else "-jobs" if resolved.jobs is not None else ""
    cache_file = cache_dir / f"oracle{suffix}.json" if cache_dir is not None else None
    table = OracleTable(
        app=resolved.app, settings=resolved.cluster, context=resolved.context,
        slo_ms=cfg.slo_ms, open_loop=wl.loop == "open", step_s=cfg.step_seconds,
        seed=int(np.random.SeedSequence([cfg.seed, 7]).generate_state(1)[0]), engine=engine, jobs=resolved.jobs,
    )  # fmt: skip
    if cache_file is not None and cache_file.exists():
        table.cache = {float(k): int(v) for k, v in json.loads(cache_file.read_text()).items()}
    oracle = table.for_levels(loads, progress=progress)
    if cache_file is not None:
        cache_file.write_text(json.dumps({repr(k): v for k, v in sorted(table.cache.items())}))
    return loads, oracle
