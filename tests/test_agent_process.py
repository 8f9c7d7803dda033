"""The agent process (agent/process.py) through the live backend
(orchestrator/live_backend.py) against a deterministic in-process orchestrator:
records, rewards, clamping, retries, and resuming after a crash."""

from __future__ import annotations

import itertools
import json

import pytest

from scalelab.agent.process import AgentConfigError, AgentFolder, AgentSpec, run_agent
from scalelab.agent.rewards import make_reward
from scalelab.errors import PermanentError, TemporaryError
from scalelab.orchestrator.backend import VirtualClock
from scalelab.orchestrator.context import Context
from scalelab.orchestrator.live_backend import OrchestratorBackend, OrchestratorGone


class Crash(Exception):
    """Stands for the agent process being killed."""


class FakeOrchestrator:
    """Replicas follow scale orders at once; p95 = 40 ms x users / replicas."""

    def __init__(self) -> None:
        self.replicas, self.users, self.lo, self.hi = 1, 0, 1, 1
        self.orders: list[tuple] = []
        self.crash_on: dict[str, int] = {}  # call name -> crash on its n-th call (1-based)
        self.timeouts = 0
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.crash_on.get(name) == self.calls[name]:
            raise Crash(name)

    def order(self, name, **fields):
        self._count(name)
        self.orders.append((name, fields))
        if name == "setDeploymentLimit":
            self.lo, self.hi = fields["min"], fields["max"]
        if name == "LocustMgmt":
            self.users = fields["payload"].get("level", 0)
        return {"result": "OK"}

    def scale(self, mode, level, **opts):
        self._count("scale")
        assert mode == "fixed" and self.lo <= level <= self.hi, (mode, level)
        self.orders.append(("scaleSUT", {"level": level}))
        self.replicas = level
        return {"result": "OK"}

    def get_state(self):
        if self.timeouts:
            self.timeouts -= 1
            raise TemporaryError("no state", retry_after_s=2.5)
        self._count("getState")
        r, u = self.replicas, self.users
        ctx = Context(r, 40.0 * u / r, 2.0 * u, 0.3 * u / r, 0.3 * u / r, 0.2, 0.1)
        return {"context": ctx.to_dict(), "desired_replicas": r, "gaps": {"prometheus_s": 1.0}}


def spec(**kw) -> AgentSpec:
    base = dict(policy="hslinucb", steps=10, seed=7, step_seconds=5.0, slo_ms=100.0, min_replicas=1,
                max_replicas=4, initial_replicas=1, users=[1, 2, 3, 4, 5, 5, 4, 3, 2, 1])
    return AgentSpec(**{**base, **kw})


def run(s, orch, folder):
    clock = VirtualClock()
    backend = OrchestratorBackend(orch, clock, s.min_replicas, s.max_replicas, retry_s=s.retry_s)
    return run_agent(s, backend, folder, clock=clock)


def comparable(records):
    return [{k: r[k] for k in ("step", "decision", "reward", "load", "order")}
            | {"before": r["before"]["context"], "after": r["after"]["context"]} for r in records]


def test_every_step_is_recorded_with_its_reward_and_next_context(tmp_path):
    s, orch = spec(), FakeOrchestrator()
    result = run(s, orch, tmp_path)
    records = AgentFolder(tmp_path).records()
    assert [r["step"] for r in records] == list(range(10)) and result.resumed_at == 0
    reward = make_reward("slo-binary-v1", slo_ms=100.0)
    for a, b in itertools.pairwise(records):
        assert a["after"] == b["before"]  # period mode: the next decision saw what this one was rewarded on
    for r in records:
        before, after = Context.from_dict(r["before"]["context"]), Context.from_dict(r["after"]["context"])
        assert r["reward"] == reward(before, r["decision"]["action"], after)
        assert 1 <= r["order"]["applied"] <= 4 and 0 < r["decision"]["probability"] <= 1
    assert orch.orders[0] == ("setDeploymentLimit", {"min": 1, "max": 4})
    injector = [f["payload"] for n, f in orch.orders if n == "LocustMgmt"]
    assert injector[0] == {"order": "reset"}  # the episode's statistics start with it
    levels = [p.get("level") for p in injector[1:]]
    assert levels == [1, 2, 3, 4, 5, 4, 3, 2, 1, None]  # sent only when the level changes, then stop
    assert orch.orders[-1] == ("LocustMgmt", {"payload": {"order": "stop"}})
    state = json.loads((tmp_path / "agent-state.json").read_text())
    assert state["next_step"] == 10 and state["pending"] is None


@pytest.mark.parametrize("crash_on", [{"getState": 5}, {"scale": 2}, {"LocustMgmt": 4}])
def test_a_killed_agent_resumes_and_decides_as_if_never_stopped(tmp_path, crash_on):
    whole = FakeOrchestrator()
    run(spec(), whole, tmp_path / "whole")
    expected = comparable(AgentFolder(tmp_path / "whole").records())

    orch = FakeOrchestrator()
    orch.crash_on = crash_on
    with pytest.raises(Crash):
        run(spec(), orch, tmp_path / "cut")
    before = len(AgentFolder(tmp_path / "cut").records())
    assert 0 < before < 10
    orch.crash_on = {}
    result = run(spec(), orch, tmp_path / "cut")
    assert result.resumed_at > 0
    assert comparable(AgentFolder(tmp_path / "cut").records()) == expected


def test_an_orchestrator_that_does_not_answer_is_retried(tmp_path):
    orch = FakeOrchestrator()
    orch.timeouts = 3
    result = run(spec(steps=3, users=[1, 1, 1]), orch, tmp_path)
    assert result.retries == 3 and len(AgentFolder(tmp_path).records()) == 3
    # each retry waits the error's retry_after_s (2.5 s) on the loop's clock
    orch.timeouts = 2
    clock = VirtualClock(100.0)
    backend = OrchestratorBackend(orch, clock, 1, 4, retry_s=60.0)
    assert backend.observe().t_s == 105.0 and backend.retries == 2


def test_an_orchestrator_away_for_too_long_is_an_error(tmp_path):
    orch = FakeOrchestrator()
    orch.timeouts = 10**6
    with pytest.raises(OrchestratorGone, match="did not answer for 20 s") as err:
        run(spec(steps=3, users=[1, 1, 1], retry_s=20.0), orch, tmp_path)
    assert isinstance(err.value, PermanentError)  # retries that ran out: not to be retried again


def test_hot_start_loads_a_saved_policy_state(tmp_path):
    run(spec(), FakeOrchestrator(), tmp_path / "a")
    hot = spec(hot_start=str(tmp_path / "a" / "agent-state.json"), seed=8)
    run(hot, FakeOrchestrator(), tmp_path / "b")
    first = AgentFolder(tmp_path / "b").records()[0]
    cold = AgentFolder(tmp_path / "a").records()[0]
    assert first["before"] == cold["before"]
    state_a = json.loads((tmp_path / "a" / "agent-state.json").read_text())["policy"]
    state_b = json.loads((tmp_path / "b" / "agent-state.json").read_text())["policy"]
    assert state_b["core"]["A"] != state_a["core"]["A"]  # it kept learning from the loaded state


def test_a_folder_of_another_policy_is_refused(tmp_path):
    run(spec(steps=2, users=[1, 1]), FakeOrchestrator(), tmp_path)
    with pytest.raises(AgentConfigError, match="holds a 'hslinucb' run"):
        run(spec(policy="linucb", steps=2, users=[1, 1]), FakeOrchestrator(), tmp_path)


@pytest.mark.parametrize("bad, message", [
    ({"polcy": "x"}, "unknown key 'polcy'"),
    ({"steps": -1}, "steps=-1"),
    ({"users": [1, 2]}, "users must be 10 whole numbers"),
    ({"min_replicas": 5}, "min=5 initial=1 max=4"),
    ({"step_seconds": 0}, "step_seconds=0"),
    ({"policy": "hslincub"}, "did you mean 'hslinucb'"),
])  # fmt: skip
def test_a_malformed_agent_config_names_what_is_wrong(tmp_path, bad, message):
    data = {"policy": "hslinucb", "steps": 10, "max_replicas": 4, **bad}
    with pytest.raises(AgentConfigError, match=message):
        AgentSpec.from_dict(data)
        run(AgentSpec.from_dict(data), FakeOrchestrator(), tmp_path)


def test_an_agent_config_round_trips_through_yaml(tmp_path):
    s = spec(params={"alpha": 0.5})
    s.save(tmp_path / "agent.yaml")
    assert AgentSpec.load(tmp_path / "agent.yaml") == s
    (tmp_path / "bad.yaml").write_text("policy: [unclosed")
    with pytest.raises(AgentConfigError, match="is not YAML"):
        AgentSpec.load(tmp_path / "bad.yaml")
