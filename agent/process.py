"""The agent process: one policy against a backend, step by step, resumable.

It runs the one step loop (:class:`scalelab.agent.loop.StepLoop`) on a wall clock against the
live backend (``scalelab.orchestrator.live_backend.OrchestratorBackend``: the injector's level,
``getState`` and ``scaleSUT`` through the orchestrator), or against any other
:class:`~scalelab.orchestrator.backend.Backend` (tests use an in-process simulator). Everything
it learns is on disk as it goes, in its folder:

- ``decisions.jsonl``: one :class:`~scalelab.agent.loop.StepRecord` per line
  (:meth:`~scalelab.agent.loop.StepRecord.to_dict` plus ``run`` and ``policy``), appended and
  fsynced when the step ends;
- ``injector.json``: the load generator's statistics when the episode ends (live:
  Locust's requests, failures and their reasons);
- ``agent-state.json``: the policy's state, the next step, the observation it decides
  on and the decision already taken there (if any), written atomically twice a step:
  after the decision and after the record.

A restarted agent (same folder) loads the state and carries on: a decision already
taken is carried out (its replica count is absolute, so sending it again is harmless),
not taken again. So an interrupted run gives the same records as an uninterrupted one
against the same answers. This module imports no network client; ``python -m scalelab.agent``
plugs in the Kafka one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from scalelab.agent.base import Decision, Policy, PolicyError, read_state_file
from scalelab.agent.build import Deployment, build_policy, build_reward, reads_timetable
from scalelab.agent.loop import LOOP_MODES, LoopSettings, StepLoop, StepRecord, decision_from_dict, decision_to_dict
from scalelab.agent.rewards import RewardError
from scalelab.errors import UserError
from scalelab.orchestrator.backend import Backend, Clock, Observation, WallClock
from scalelab.orchestrator.context import Timetable

RECORDS = "decisions.jsonl"
STATE = "agent-state.json"
INJECTOR = "injector.json"  # the load generator's statistics at the episode's end (live)


class AgentConfigError(UserError):
    """A malformed agent config; the message names the key and the value."""


@dataclass
class AgentSpec:
    """One agent run. Times in seconds, latencies in milliseconds.

    ``users`` is the injector's user level per step (the agent drives the load, as the
    paper's loop does); empty means the agent leaves the injector alone.
    ``injector_task`` is what the injector's users do (a ``set_task`` order: the paper's
    ``/compute`` clients or evaluation-week students), sent before the first level. ``hot_start``
    is a policy state file (``agent-state.json`` or a run's ``policy.json``) to start
    from; the policy keeps learning with its own generator (``seed``).
    """

    policy: str
    steps: int
    params: dict = field(default_factory=dict)
    display: str = ""
    seed: int = 0
    run: int = 0
    step_seconds: float = 5.0
    slo_ms: float = 600.0
    loop: str = "period"
    reward: str = "slo-binary-v1"
    reward_params: dict = field(default_factory=dict)
    min_replicas: int = 1
    max_replicas: int = 10
    initial_replicas: int = 1
    users: list[int] = field(default_factory=list)
    spawn_rate: float = 100.0
    hot_start: str | None = None
    retry_s: float = 180.0
    warmup_load: float | None = None  # users held for warmup_seconds before step 0 (config warmup:)
    warmup_seconds: float = 0.0
    injector_task: dict = field(default_factory=dict)  # the injector's set_task order (empty: leave it)
    # the run's announced timetable, computed by the launcher as the simulated runner does:
    # {"exams": [[start_s, end_s, students], ...], "features": [[5 numbers] per step] or absent}; empty: none
    calendar: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loop not in LOOP_MODES:
            raise AgentConfigError(f"agent config: loop={self.loop!r} must be one of {list(LOOP_MODES)}")
        if not isinstance(self.policy, str) or not self.policy:
            raise AgentConfigError(f"agent config: policy={self.policy!r} must name a registered policy")
        self.display = self.display or self.policy
        for key in ("steps", "seed", "run", "min_replicas", "max_replicas", "initial_replicas"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AgentConfigError(f"agent config: {key}={value!r} must be a whole number >= 0")
        for key in ("step_seconds", "slo_ms", "spawn_rate", "retry_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise AgentConfigError(f"agent config: {key}={value!r} must be a number > 0")
        if not 1 <= self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise AgentConfigError(
                f"agent config: replicas min={self.min_replicas} initial={self.initial_replicas} "
                f"max={self.max_replicas} must satisfy 1 <= min <= initial <= max")
        if self.users and (len(self.users) != self.steps
                           or any(isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in self.users)):
            raise AgentConfigError(f"agent config: users must be {self.steps} whole numbers >= 0 (one per step)")
        if self.warmup_load is not None and (isinstance(self.warmup_load, bool) or not isinstance(
                self.warmup_load, int | float) or self.warmup_load < 0):
            raise AgentConfigError(f"agent config: warmup_load={self.warmup_load!r} must be a number >= 0")
        if isinstance(self.warmup_seconds, bool) or not isinstance(self.warmup_seconds, int | float) \
                or self.warmup_seconds < 0:
            raise AgentConfigError(f"agent config: warmup_seconds={self.warmup_seconds!r} must be a number >= 0")
        if not isinstance(self.params, dict) or not isinstance(self.reward_params, dict) \
                or not isinstance(self.injector_task, dict) or not isinstance(self.calendar, dict):
            raise AgentConfigError("agent config: params, reward_params, injector_task and calendar must be mappings")

    @classmethod
    def from_dict(cls, data: Any) -> AgentSpec:
        if not isinstance(data, dict):
            raise AgentConfigError(f"agent config: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgentConfigError(f"agent config: unknown key {unknown[0]!r}; known: {sorted(known)}")
        missing = [k for k in ("policy", "steps") if k not in data]
        if missing:
            raise AgentConfigError(f"agent config: missing {missing[0]!r}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> AgentSpec:
        """Read a YAML (or JSON) agent config."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise AgentConfigError(f"agent config: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise AgentConfigError(f"agent config: {path} is not YAML: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))


def agent_timetable(spec: AgentSpec) -> Timetable | None:
    """The run's announced exams (``calendar.exams``), or None without a calendar."""
    if not spec.calendar:
        return None
    try:
        return Timetable.from_dict(spec.calendar)
    except (TypeError, ValueError) as exc:
        raise AgentConfigError(f"agent config: calendar.exams must be [[start_s, end_s, students], ...]: {exc}") \
            from None


def agent_deployment(spec: AgentSpec) -> Deployment:
    """What the agent knows of its experiment, offered to its policy and reward."""
    return Deployment(spec.min_replicas, spec.max_replicas, spec.slo_ms, spec.step_seconds)


def build_agent_policy(spec: AgentSpec) -> Policy:
    """The agent's policy (:func:`scalelab.agent.build.build_policy`) with its announced
    timetable; a ``hot_start`` state is loaded, then the generator is reseeded."""
    try:
        state = None
        if spec.hot_start:
            saved = read_state_file(spec.hot_start)
            state = saved.get("policy", saved)
        table = agent_timetable(spec) if reads_timetable(spec.policy) else None
        return build_policy(spec.policy, spec.params, agent_deployment(spec), spec.seed, timetable=table,
                            state=state, label=spec.policy)
    except PolicyError as exc:
        raise AgentConfigError(f"agent config: {exc}") from None


class AgentFolder:
    """The agent's records and state on disk (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records_file = self.dir / RECORDS
        self.state_file = self.dir / STATE

    def append(self, record: dict) -> None:
        with open(self.records_file, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        """Completed decisions by step; a step written twice (a crash between the record
        and the state) keeps its last line; a torn last line is dropped."""
        if not self.records_file.exists():
            return []
        by_step: dict[int, dict] = {}
        for line in self.records_file.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            by_step[int(rec["step"])] = rec
        return [by_step[k] for k in sorted(by_step)]

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def load_state(self) -> dict | None:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None


@dataclass
class AgentResult:
    steps_done: int
    resumed_at: int
    retries: int


def run_agent(spec: AgentSpec, backend: Backend, folder: str | Path, clock: Clock | None = None,
              log: Callable[[str], None] = lambda m: None) -> AgentResult:
    """Run (or resume) ``spec`` against ``backend``, recording in ``folder``.

    ``clock``: the loop's clock (default: the backend's; a wall clock is rebased to
    the step resumed from). The backend's episode hooks: ``setup(initial_replicas)``
    at a fresh start (the live one sets the deployment limits and the initial count),
    ``stop_load()`` at the end (its statistics go to ``injector.json``)."""
    store = AgentFolder(folder)
    policy = build_agent_policy(spec)
    try:
        reward_fn = build_reward(spec.reward, spec.reward_params, agent_deployment(spec))
    except RewardError as exc:
        raise AgentConfigError(f"agent config: {exc}") from None
    settings = LoopSettings(step_seconds=spec.step_seconds, mode=spec.loop, slo_ms=spec.slo_ms,
                            warmup_load=spec.warmup_load, warmup_seconds=spec.warmup_seconds)
    saved = store.load_state()
    start, before, pending = 0, None, None
    if saved is not None:
        if saved.get("policy_name") != spec.policy:
            raise AgentConfigError(f"agent folder {store.dir} holds a {saved.get('policy_name')!r} run, "
                                   f"not {spec.policy!r}")
        policy.load_state_dict(saved["policy"])
        start = int(saved["next_step"])
        before = Observation.from_dict(saved["before"]) if saved.get("before") else None
        if saved.get("pending"):
            p = saved["pending"]
            pending = (decision_from_dict(p["decision"]), int(p["requested"]), int(p["current"]))
        log(f"agent: resuming at step {start}")
    else:
        backend.setup(spec.initial_replicas)
    clock = clock or backend.clock
    if isinstance(clock, WallClock):
        clock.rebase(start * spec.step_seconds)
    loads = spec.users or [0] * spec.steps
    features = spec.calendar.get("features") or None
    loop = StepLoop(backend, clock, loads, settings, reward_fn, calendar=features)
    backend.drive_load = bool(spec.users)

    def checkpoint(next_step: int, obs: Observation | None, decided: tuple[Decision, int, int] | None) -> None:
        state = {"policy_name": spec.policy, "next_step": next_step, "before": obs.to_dict() if obs else None,
                 "pending": None, "policy": policy.state_dict()}
        if decided is not None:
            d, requested, current = decided
            state["pending"] = {"requested": requested, "current": current, "decision": decision_to_dict(d)}
        store.save_state(state)

    if start < spec.steps:
        for record, following in loop.run(policy, start, before, pending,
                                           on_decided=lambda k, obs, d, req, cur: checkpoint(k, obs, (d, req, cur))):
            store.append({"run": spec.run, "policy": spec.display, **record.to_dict()})
            checkpoint(record.step + 1, following, None)
        stats = backend.stop_load()
        if stats:
            (store.dir / INJECTOR).write_text(json.dumps(stats, indent=1))
    return AgentResult(steps_done=spec.steps, resumed_at=start, retries=backend.retries)


def records_of(folder: str | Path) -> list[StepRecord]:
    """The :class:`StepRecord` s an agent folder holds, by step."""
    return [StepRecord.from_dict(r) for r in AgentFolder(folder).records()]
