"""The agent process: one policy against the orchestrator, step by step, resumable.

The loop is the paper's (section 2.3): each step set the injector's user level
(``LocustMgmt``), wait for the step's end, ``getState``, reward the previous decision,
learn, decide, ``scaleSUT``. Everything it learns is on disk as it goes, in its folder:

- ``decisions.jsonl``: one line per completed decision (step, context, action,
  probability, probabilities, target, reward, next context, the orchestrator's gaps and
  the injector's statistics as the state reported them), appended and flushed
  when the next context arrives;
- ``agent-state.json``: the policy's state, the next step and the decision still
  waiting for its reward, written atomically after every step.

A restarted agent (same folder) loads the state and carries on at the next step, so an
interrupted run gives the same decisions as an uninterrupted one against the same
answers. The orchestrator is reached through the :class:`Orchestrator` protocol, so this
module imports no network client; ``python -m agent`` plugs in the Kafka one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import yaml

from agent.base import Policy
from agent.registry import make_policy
from agent.rewards import make_reward
from orchestrator.context import Context

RECORDS = "decisions.jsonl"
STATE = "agent-state.json"


class AgentConfigError(ValueError):
    """A malformed agent config; the message names the key and the value."""


class Orchestrator(Protocol):
    """What the agent needs of the orchestrator (``orchestrator.client.OrchestratorClient``
    over Kafka). A call that gets no answer raises ``TimeoutError``."""

    def order(self, name: str, **fields: Any) -> dict: ...

    def get_state(self) -> dict: ...

    def scale(self, mode: str, level: int, **opts: Any) -> dict: ...


@dataclass
class AgentSpec:
    """One agent run. Times in seconds, latencies in milliseconds.

    ``users`` is the injector's user level per step (the agent drives the load, as the
    paper's loop does); empty means the agent leaves the injector alone. ``hot_start``
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
    slo_ms: float = 250.0
    reward: str = "slo-binary-v1"
    reward_params: dict = field(default_factory=dict)
    min_replicas: int = 1
    max_replicas: int = 10
    initial_replicas: int = 1
    users: list[int] = field(default_factory=list)
    spawn_rate: float = 100.0
    hot_start: str | None = None
    retry_s: float = 180.0

    def __post_init__(self) -> None:
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
        if not isinstance(self.params, dict) or not isinstance(self.reward_params, dict):
            raise AgentConfigError("agent config: params and reward_params must be mappings")

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


def build_agent_policy(spec: AgentSpec) -> Policy:
    """The registry's policy with what the agent knows offered as defaults; a
    ``hot_start`` state is loaded, then the generator is reseeded."""
    import numpy as np

    defaults = {"seed": spec.seed, "max_replicas": spec.max_replicas, "min_replicas": spec.min_replicas,
                "slo_ms": spec.slo_ms, "step_seconds": spec.step_seconds}
    try:
        policy = make_policy(spec.policy, defaults=defaults, **dict(spec.params))
    except ValueError as exc:
        raise AgentConfigError(f"agent config: {exc}") from None
    if spec.hot_start:
        state = json.loads(Path(spec.hot_start).read_text())
        policy.load_state_dict(state.get("policy", state))
        policy.rng = np.random.default_rng(spec.seed)
    return policy


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


def _call(what: Callable[[], Any], spec: AgentSpec, log: Callable[[str], None], sleep, clock) -> tuple[Any, int]:
    """``what()``, retried while the orchestrator does not answer (broker or
    orchestrator away), for at most ``spec.retry_s``; returns (answer, retries)."""
    end = clock() + spec.retry_s
    retries = 0
    while True:
        try:
            return what(), retries
        except TimeoutError as exc:
            if clock() > end:
                raise TimeoutError(f"the orchestrator did not answer for {spec.retry_s:g} s: {exc}") from None
            retries += 1
            log(f"agent: no answer ({exc}); retrying")
            sleep(1.0)


def run_agent(spec: AgentSpec, orchestrator: Orchestrator, folder: str | Path,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              log: Callable[[str], None] = lambda m: None) -> AgentResult:
    """Run (or resume) ``spec`` against ``orchestrator``, recording in ``folder``."""
    store = AgentFolder(folder)
    policy = build_agent_policy(spec)
    reward_fn = make_reward(spec.reward, **{"slo_ms": spec.slo_ms, **spec.reward_params})
    saved = store.load_state()
    retries = 0

    def call(what):
        nonlocal retries
        answer, n = _call(what, spec, log, sleep, clock)
        retries += n
        return answer

    if saved is None:
        start, pending = 0, None
        call(lambda: orchestrator.order("setDeploymentLimit", min=spec.min_replicas, max=spec.max_replicas))
        call(lambda: orchestrator.scale("fixed", spec.initial_replicas))
    else:
        if saved.get("policy_name") != spec.policy:
            raise AgentConfigError(f"agent folder {store.dir} holds a {saved.get('policy_name')!r} run, "
                                   f"not {spec.policy!r}")
        policy.load_state_dict(saved["policy"])
        start, pending = int(saved["next_step"]), saved["pending"]
        log(f"agent: resuming at step {start}")
    level = None
    deadline = clock()
    for k in range(start, spec.steps + 1):
        last = k == spec.steps  # one more observation gives the last decision its reward
        if spec.users and not last and spec.users[k] != level:
            level = spec.users[k]
            payload = {"order": "set_user_level", "level": level, "spawn_rate": spec.spawn_rate}
            call(lambda p=payload: orchestrator.order("LocustMgmt", payload=p))
        deadline += spec.step_seconds
        if clock() > deadline + spec.step_seconds:  # late by a step (an outage): observe now, re-anchor
            deadline = clock()
        if deadline > clock():
            sleep(deadline - clock())
        state = call(orchestrator.get_state)
        ctx = Context.from_dict(state["context"])
        if pending is not None:
            before = Context.from_dict(pending["context"])
            reward = float(reward_fn(before, pending["action"], ctx))
            store.append({**pending, "reward": reward, "next_context": ctx.to_dict(), "gaps": state.get("gaps")})
            policy.update(before, pending["action"], reward, ctx)
            pending = None
        if last:
            store.save_state({"policy_name": spec.policy, "next_step": k + 1, "pending": None,
                              "policy": policy.state_dict()})
            if spec.users:  # the load stops with the episode, so the next one starts clean
                call(lambda: orchestrator.order("LocustMgmt", payload={"order": "stop"}))
            break
        current = int(state.get("desired_replicas", ctx.replicas))
        t_s = (k + 1) * spec.step_seconds
        decision = policy.decide(ctx, {"step": k, "t_s": t_s, "current_replicas": current})
        target = policy.actions.order(decision.action).target(current, spec.min_replicas, spec.max_replicas)
        if target != current:
            call(lambda n=target: orchestrator.scale("fixed", n))
        pending = {
            "run": spec.run, "policy": spec.display, "step": k, "t_s": t_s,
            "users": spec.users[k] if spec.users else -1, "context": ctx.to_dict(), "current_replicas": current,
            "action": int(decision.action), "probability": float(decision.probability),
            "probabilities": list(decision.probabilities) if decision.probabilities else None,
            "target_replicas": int(target), "locust": state.get("locust"),
        }  # fmt: skip
        store.save_state({"policy_name": spec.policy, "next_step": k + 1, "pending": pending,
                          "policy": policy.state_dict()})
    return AgentResult(steps_done=spec.steps, resumed_at=start, retries=retries)
