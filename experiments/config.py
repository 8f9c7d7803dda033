"""Typed experiment configs, loaded from YAML and checked key by key.

An unknown key, a wrong type or an out-of-range value raises :class:`ConfigError`
with the key's path, the value and, for a typo, the closest valid key::

    config: unknown key 'cluster.max_replica' (value 12); did you mean 'max_replicas'?

Example (``experiments/configs/compare.yaml`` is a complete one)::

    name: step-demo
    backend: sim
    seed: 1
    runs: 3
    workload: {kind: step, before: 5, after: 40, at_s: 300, duration_s: 900}
    policies:
      - {name: static, replicas: 3}
      - {name: oracle}
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalelab.agent.loop import LOOP_MODES
from scalelab.errors import UserError
from scalelab.orchestrator import plugins
from scalelab.simulator.students import STUDENT_DRAWS

BACKENDS = ("sim", "replay", "live")


class ConfigError(UserError):
    """A config that cannot be used; the message names the key, the value and the rule."""


#: Ceilings on a config's sizes: beyond them a run is refused before any work (one line
#: naming the key). ``MAX_ROWS`` bounds runs x policies x steps (about 400 bytes a row).
MAX_RUNS = 1000
MAX_STEPS = 10_000_000
MAX_REPLICAS = 1000
MAX_ROWS = 50_000_000
#: A YAML config expanding to more nodes than this (an alias bomb) is refused.
MAX_NODES = 100_000


def short(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 12] + f"... ({len(text)} chars)"


def _walk(data, path: str = "", budget: list | None = None):
    """Every (path, value) leaf of ``data``; refuses more than :data:`MAX_NODES` nodes."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"config: more than {MAX_NODES} values (a YAML alias bomb?); refused")
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k), budget)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _walk(v, f"{path}[{i}]", budget)
    else:
        yield path, data


def check_finite(data) -> None:
    """Every number in a config is finite (no key here documents infinity); the error
    names the first key that is not."""
    import math

    for path, value in _walk(data):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config: {path}={value!r} must be a finite number")


@dataclass
class AppConfig:
    """The scaled service. ``profile`` picks defaults (``paper``, ``sandbox``); every
    other key overrides one of them. Units: cores, MiB, ms."""

    profile: str = "paper"
    demand: dict[str, Any] | None = None
    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request_mib: float | None = None
    memory_limit_mib: float | None = None
    overhead_ms: float | None = None
    burst_cores: float | None = None
    sidecar: dict[str, Any] | str | None = None  # a dict of Sidecar fields, or "none"
    wall_limit_ms: float | str | None = None  # a run killed this long after it reached its replica, or "none"


@dataclass
class ClusterConfig:
    """Deployment bounds and behaviour (replicas, seconds)."""

    min_replicas: int = 1
    max_replicas: int = 10
    initial_replicas: int = 1
    startup_seconds: float = 5.0
    balancer: str = "round-robin"
    think_s: list[float] | None = None  # closed users' think time [low, high], s
    students: str = "simulator"  # closed users' draws: the simulator's, or the live injector's (scalelab.simulator.students)


@dataclass
class ContextConfig:
    """Span/metric buffers and window: a ``preset`` (``default``, ``paper``,
    ``paper-doc``) and optional overrides."""

    preset: str = "default"
    span_buffer: int | None = None
    metric_buffer: int | None = None
    window_s: float | None = None
    rps_mode: str | None = None


@dataclass
class ReplayConfig:
    """How a ``backend: replay`` serves its samples (defaults: each run on its own).

    index: ``run`` (every run starts each cell at its first sample) or ``experiment``
    (the paper's ``data_index``: one position per cell, carried from each run of a
    policy to the next, so the runs are not copies of each other).
    first_draws: samples drawn at a run's first step; the last is its observation (the
    paper's first ``getContext`` drew twice).
    """

    index: str = "run"
    first_draws: int = 1


@dataclass
class WarmupConfig:
    """Before step 0: the load held for ``seconds`` (s) on the initial replicas, so a
    run starts from a measured, loaded state (the paper's real runs: 45 users on 5
    replicas). ``load``: users (closed workloads) or req/s; none means no warm-up."""

    load: float | None = None
    seconds: float = 0.0


@dataclass
class CalendarConfig:
    """The timetable a workload publishes in advance (``evaluation-week-v1``'s announced
    exams and deadlines; :mod:`scalelab.injector.calendar`). ``features``: hand every policy the
    calendar's features at each step (``info["calendar"]``), off by default so the
    paper's context is all a policy sees. ``size_noise``: announced students = true x
    ``U(1 - size_noise, 1 + size_noise)``, per event and run; ``start_noise_min``:
    announced start = true + ``U(-start_noise_min, +start_noise_min)`` min."""

    features: bool = False
    size_noise: float = 0.0
    start_noise_min: float = 0.0


@dataclass
class JobsConfig:
    """The jobs model (``architecture: jobs``, :mod:`scalelab.simulator.jobs`): a topic of
    ``partitions`` partitions, runners (the scaled replicas) holding at most
    ``max_concurrent_jobs`` jobs each (PrairieLearn's grader: 5). ``runner_mode``:
    ``deployment`` (long-lived runners in one consumer group) or ``job`` (KEDA's
    ScaledJob: a runner takes one job and exits; scaling only adds runners).
    ``rebalance_seconds``: the join window when a runner joins or leaves, s (the group's
    pause if every member is back by then; a member finishes the jobs it holds first).
    ``assignor``: ``range`` (Kafka's default), ``round-robin``, or ``shared`` (a share
    group / a plain queue: any runner takes any partition's oldest job).
    ``fetch_wait_seconds``: the runners' fetch cycle, s (0: a real broker, which hands a
    job over as it comes; librdkafka's mock broker answers a fetch after 0.5 s)."""

    partitions: int = 12
    max_concurrent_jobs: int = 5
    runner_mode: str = "deployment"
    rebalance_seconds: float = 3.0
    assignor: str = "range"
    fetch_wait_seconds: float = 0.0


@dataclass
class PolicySpec:
    """One policy: its registry ``name``, an optional ``label`` for tables, and its
    parameters (any other key)."""

    name: str
    label: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class RewardConfig:
    name: str = "slo-binary-v1"
    params: dict[str, Any] = field(default_factory=dict)


#: des: every request; fluid: a queueing model per step (deterministic); fluid-stochastic:
#: the same model, each step's p95, request rate and usage drawn as a window of that many
#: spans would give them (seeded by the run's demand stream)
ENGINES = ("des", "fluid", "fluid-stochastic")
#: service: an HTTP service behind a balancer (requests); jobs: submissions are jobs on a
#: partitioned topic that runners pull (:mod:`scalelab.simulator.jobs`)
ARCHITECTURES = ("service", "jobs")
#: Ceiling on ``jobs.partitions``.
MAX_PARTITIONS = 10_000


@dataclass
class ExperimentConfig:
    """A whole experiment.

    name: used for the run folder. backend: ``sim`` or ``replay`` (``live`` comes later).
    dataset: what a ``replay`` backend serves: ``paper-D1`` (the paper's measured p95
    samples), ``sim-D1``/``sim-D2`` (simulator recordings), a ``.json`` file of p95
    samples or a ``.parquet`` recording (see ``scalelab.simulator.datasets``).
    replay: how the replay serves them (:class:`ReplayConfig`).
    warmup: a load held before step 0 (:class:`WarmupConfig`).
    calendar: the announced timetable and its features for policies (:class:`CalendarConfig`).
    oracle: compute the oracle's replicas per step (simulator and replay; the ``oracle``
    policy and the regret column need it). ``false`` skips it (its cost grows with the
    replicas and the load levels on the discrete-event engine) and the summary says so.
    seed: root of every generator. runs: independent repetitions per policy.
    seed_runs: run ``i`` takes the policy and calendar seeds of run ``i % seed_runs`` (and,
    with ``cluster.students: injector``, its students, numbered as in a live folder of
    ``seed_runs`` runs) and its own simulator noise, as live run folders of the same
    config and seed repeat each other's (``scalelab twin`` sets it); none: every run its own.
    step_seconds: control period, s. slo_ms: p95 objective, ms.
    steps: steps per run (default: the workload's duration / step_seconds).
    engine: the simulator's engine (``backend: sim``): ``des`` (every request, the
    default) or ``fluid`` (a queueing model per step, :mod:`scalelab.simulator.fluid`).
    loop: ``period`` (observe, decide, act every ``step_seconds``; the default) or
    ``settle`` (the paper's: after an order that changed the count, wait until it took
    effect and was measured; that observation is the step's outcome). See
    ``scalelab.agent.loop`` and ``docs/architecture.md``.
    architecture: ``service`` (the default: requests to replicas behind a balancer) or
    ``jobs`` (submissions are jobs on a topic that runners pull; ``backend: sim`` with
    ``engine: des``, or ``live``), shaped by ``jobs`` (:class:`JobsConfig`).
    """

    name: str = "experiment"
    backend: str = "sim"
    engine: str = "des"
    architecture: str = "service"
    jobs: JobsConfig = field(default_factory=JobsConfig)
    loop: str = "period"
    seed: int = 0
    runs: int = 1
    seed_runs: int | None = None
    step_seconds: float = 5.0
    slo_ms: float = 600.0
    steps: int | None = None
    dataset: str | None = None  # backend: replay
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    oracle: bool = True
    workload: dict[str, Any] = field(default_factory=lambda: {"kind": "paper-sim-v1"})
    app: AppConfig = field(default_factory=AppConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    policies: list[PolicySpec] = field(default_factory=lambda: [PolicySpec("static")])
    reward: RewardConfig = field(default_factory=RewardConfig)

    def to_dict(self) -> dict:
        """Plain data, as YAML would hold it (policy params inlined)."""
        d = dataclasses.asdict(self)
        d["policies"] = [
            {"name": p.name, **({"label": p.label} if p.label else {}), **p.params} for p in self.policies
        ]
        d["reward"] = {"name": self.reward.name, **self.reward.params}
        return d


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value, tp, path: str):
    """Check ``value`` against the annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config: {path}={short(value)} has the wrong type")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config: {path}={short(value)} must be a list")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config: {path}={short(value)} must be a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {path}={short(value)} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {path}={short(value)} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {path}={short(value)} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {path}={short(value)} must be a string")
        return value
    raise ConfigError(f"config: {path}: unsupported type {_type_name(tp)}")


def _unknown(path: str, key: str, value, valid) -> ConfigError:
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    where = f"{path}.{key}" if path else key
    return ConfigError(f"config: unknown key {short(where)} (value {short(value)}){hint}")


def _build(cls, data, path: str):
    if cls is PolicySpec or cls is RewardConfig:
        return _build_named(cls, data, path)
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path or 'the file'} must be a mapping of keys (name: ..., backend: ...), "
                          f"got {type(data).__name__} {short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown(path, key, value, names)
        kwargs[key] = _convert(value, hints[key], f"{path}.{key}" if path else key)
    return cls(**kwargs)


def _build_named(cls, data, path: str):
    """``{name: x, label: y, **params}`` or just ``"x"``."""
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ConfigError(f"config: {path}={short(data)} needs a 'name' (a string)")
    data = dict(data)
    name = data.pop("name")
    if cls is PolicySpec:
        label = data.pop("label", None)
        if label is not None and not isinstance(label, str):
            raise ConfigError(f"config: {path}.label={short(label)} must be a string")
        return PolicySpec(name=name, label=label, params=data)
    return RewardConfig(name=name, params=data)


def _check_ranges(cfg: ExperimentConfig) -> None:
    def need(cond, key, value, rule):
        if not cond:
            raise ConfigError(f"config: {key}={short(value)} {rule}")

    need(cfg.backend in BACKENDS, "backend", cfg.backend, f"must be one of {list(BACKENDS)}")
    need(cfg.engine in ENGINES, "engine", cfg.engine, f"must be one of {list(ENGINES)}")
    need(cfg.loop in LOOP_MODES, "loop", cfg.loop, f"must be one of {list(LOOP_MODES)}")
    need(cfg.architecture in ARCHITECTURES, "architecture", cfg.architecture, f"must be one of {list(ARCHITECTURES)}")
    j = cfg.jobs
    if cfg.architecture == "jobs":
        need(cfg.backend in ("sim", "live"), "backend", cfg.backend,
             "must be 'sim' or 'live' with architecture: jobs (no dataset of jobs is recorded to replay)")
        if cfg.backend == "sim":
            need(cfg.engine == "des", "engine", cfg.engine,
                 "must be 'des' with architecture: jobs (the fluid engines model the service only)")
    else:
        need(j == JobsConfig(), "jobs", dataclasses.asdict(j), "is read only with architecture: jobs")
    need(1 <= j.partitions <= MAX_PARTITIONS, "jobs.partitions", j.partitions, f"must be within [1, {MAX_PARTITIONS}]")
    need(j.max_concurrent_jobs >= 1, "jobs.max_concurrent_jobs", j.max_concurrent_jobs, "must be >= 1")
    need(j.runner_mode in ("deployment", "job"), "jobs.runner_mode", j.runner_mode,
         "must be one of ['deployment', 'job']")
    need(j.rebalance_seconds >= 0, "jobs.rebalance_seconds", j.rebalance_seconds, "must be >= 0")
    need(j.assignor in ("range", "round-robin", "shared"), "jobs.assignor", j.assignor,
         "must be one of ['range', 'round-robin', 'shared']")
    need(0 <= j.fetch_wait_seconds <= 60, "jobs.fetch_wait_seconds", j.fetch_wait_seconds, "must be within [0, 60]")
    need(1 <= cfg.runs <= MAX_RUNS, "runs", cfg.runs, f"must be within [1, {MAX_RUNS}]")
    need(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    need(cfg.step_seconds > 0, "step_seconds", cfg.step_seconds, "must be > 0")
    need(cfg.slo_ms > 0, "slo_ms", cfg.slo_ms, "must be > 0")
    need(cfg.steps is None or 1 <= cfg.steps <= MAX_STEPS, "steps", cfg.steps, f"must be within [1, {MAX_STEPS}]")
    need(isinstance(cfg.workload.get("kind"), str), "workload.kind", cfg.workload.get("kind"),
         "must name a workload")
    need(cfg.replay.index in ("run", "experiment"), "replay.index", cfg.replay.index,
         "must be one of ['run', 'experiment']")
    need(cfg.replay.first_draws >= 1, "replay.first_draws", cfg.replay.first_draws, "must be >= 1")
    w = cfg.warmup
    need(w.seconds >= 0, "warmup.seconds", w.seconds, "must be >= 0")
    need(w.load is None or w.load >= 0, "warmup.load", w.load, "must be >= 0")
    cal = cfg.calendar
    need(0 <= cal.size_noise < 1, "calendar.size_noise", cal.size_noise, "must be within [0, 1)")
    need(cal.start_noise_min >= 0, "calendar.start_noise_min", cal.start_noise_min, "must be >= 0")
    c = cfg.cluster
    need(c.min_replicas >= 1, "cluster.min_replicas", c.min_replicas, "must be >= 1")
    need(c.min_replicas <= c.max_replicas <= MAX_REPLICAS, "cluster.max_replicas", c.max_replicas,
         f"must be within [cluster.min_replicas ({c.min_replicas}), {MAX_REPLICAS}]")
    need(c.startup_seconds >= 0, "cluster.startup_seconds", c.startup_seconds, "must be >= 0")
    need(c.min_replicas <= c.initial_replicas <= c.max_replicas, "cluster.initial_replicas",
         c.initial_replicas, f"must be within [{c.min_replicas}, {c.max_replicas}]")
    need(c.think_s is None or (len(c.think_s) == 2 and 0 <= c.think_s[0] <= c.think_s[1]),
         "cluster.think_s", c.think_s, "must be [low, high] with 0 <= low <= high")
    need(c.students in STUDENT_DRAWS, "cluster.students", c.students, f"must be one of {list(STUDENT_DRAWS)}")
    need(c.students == "simulator" or (cfg.backend in ("sim", "live") and cfg.engine == "des"), "cluster.students",
         c.students, f"replays the injector's students on backend: sim, engine: des only (not {cfg.backend}, "
                     f"{cfg.engine})")
    need(cfg.seed_runs is None or 1 <= cfg.seed_runs, "seed_runs", cfg.seed_runs, "must be >= 1")
    need(len(cfg.policies) >= 1, "policies", cfg.policies, "must list at least one policy")
    need(cfg.oracle or all(p.name != "oracle" for p in cfg.policies), "oracle", cfg.oracle,
         "cannot be false while the oracle policy is listed")
    labels = [p.display for p in cfg.policies]
    dup = {x for x in labels if labels.count(x) > 1}
    need(not dup, "policies", sorted(dup), "are listed twice: give each a distinct 'label'")


def load_config(source: str | Path | dict, **overrides) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML path, a YAML string or a mapping;
    ``overrides`` (``runs=2``, ``seed=3``) replace top-level keys."""
    if isinstance(source, dict):
        data = source
    else:
        try:  # a path, or the YAML text itself (too long to be a file name, maybe)
            text = Path(source).read_text() if Path(str(source)).is_file() else None
        except OSError:
            text = None
        if text is not None:  # its policies, rewards, workloads may live beside it (module:Name)
            plugins.add_search_dir(Path(source).parent)
        if text is None:
            if isinstance(source, Path) or str(source).endswith((".yaml", ".yml")):
                raise ConfigError(f"config: file {str(source)!r} does not exist")
            text = str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: not valid YAML ({exc})".replace("\n", " ")) from None
        if data is None:
            what = short(str(source), 60) if text is not None and Path(str(source)).suffix in (".yaml", ".yml") \
                else "the YAML text"
            raise ConfigError(f"config: {what} is empty: an experiment needs at least 'policies' "
                              "(see experiments/configs/step-demo.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"config: the file must be a mapping of keys (name: ..., backend: ...), got "
                          f"{type(data).__name__} {short(data)}")
    check_finite(data)
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = _build(ExperimentConfig, data, "")
    _check_ranges(cfg)
    return cfg


def validate(cfg: ExperimentConfig) -> None:
    """The checks :func:`load_config` makes, for a config built in Python."""
    check_finite(cfg.to_dict())
    _check_ranges(cfg)


def config_path(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``compare``,
    ``paper-coldstart``)."""
    from importlib import resources

    p = Path(name)
    if p.is_file():
        return p
    shipped = resources.files("scalelab.experiments.configs").joinpath(f"{name}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    if p.suffix in (".yaml", ".yml") or "/" in str(name):
        raise ConfigError(f"config: file {str(name)!r} does not exist")
    names = shipped_configs()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"shipped: {', '.join(names)}"
    raise ConfigError(f"config: {str(name)!r} is neither a file nor a shipped config; {hint} "
                      "(`scalelab list configs` lists them)")


def shipped_configs() -> list[str]:
    """The names of the configs in ``experiments/configs``, sorted."""
    from importlib import resources

    return sorted(f.name[:-5] for f in resources.files("scalelab.experiments.configs").iterdir() if f.name.endswith(".yaml"))


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
