"""One way to build a policy and a reward (scalelab.agent.build), used by every caller."""

import ast
from pathlib import Path

import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.build import Deployment, build_policy, build_reward
from scalelab.agent.rewards import RewardError
from scalelab.orchestrator.context import Context, Timetable

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = Deployment(min_replicas=2, max_replicas=7, slo_ms=450.0, step_seconds=10.0)


def test_what_the_deployment_knows_reaches_the_policies_that_take_it():
    hpa = build_policy("hpa", {"target_utilization": 60}, DEPLOYMENT, seed=4)
    assert (hpa.min_r, hpa.max_r, hpa.target) == (2, 7, 60)
    # a parameter the config sets wins over what the deployment offers
    assert build_policy("hpa", {"max_replicas": 5}, DEPLOYMENT, seed=4).max_r == 5
    # a policy that does not take a name is not handed it (static takes no slo_ms: no TypeError)
    assert build_policy("static", {"replicas": 3}, DEPLOYMENT, seed=4).replicas == 3


def test_a_policy_that_reads_the_timetable_needs_one():
    with pytest.raises(PolicyError, match="keda-cron reads the announced timetable"):
        build_policy("keda-cron", {}, DEPLOYMENT, seed=0)
    table = Timetable(((100.0, 400.0, 120.0),))
    cron = build_policy("keda-cron", {"lead_min": 1.0}, DEPLOYMENT, seed=0, timetable=table)
    (trigger,) = cron.triggers
    assert (trigger.start_s, trigger.end_s) == (40.0, 400.0)  # one minute before the exam, to its end


def test_a_saved_state_is_continued_with_the_new_seed():
    first = build_policy("hslinucb", {}, DEPLOYMENT, seed=1)
    ctx = Context(p95_ms=100.0, rps=5.0, replicas=3, cpu_request_ratio=0.4, cpu_limit_ratio=0.4,
                  mem_request_ratio=0.1, mem_limit_ratio=0.1)
    for _ in range(5):
        d = first.decide(ctx, {"current_replicas": 3})
        first.update(ctx, d.action, 1.0, ctx)
    state = first.state_dict()
    again = build_policy("hslinucb", {}, DEPLOYMENT, seed=9, state=state)
    kept = {k: v for k, v in again.state_dict().items() if k != "rng"}
    assert kept == {k: v for k, v in state.items() if k != "rng"}  # learned what the first learned
    with pytest.raises(PolicyError, match="hslinucb: cannot load its saved state"):
        build_policy("hslinucb", {}, DEPLOYMENT, seed=9, state={"nonsense": 1})


def test_the_reward_gets_the_slo_and_the_maximum():
    reward = build_reward("slo-cost-v2", {}, DEPLOYMENT)
    assert reward.max_replicas == 7 and reward.slo_ms == 450.0
    with pytest.raises(RewardError, match="slo-cost-v3"):
        build_reward("slo-cost-v3", {}, DEPLOYMENT)


def test_only_the_builder_calls_the_registries():
    """The runner, the env, the agent process and the checker build through
    scalelab.agent.build: nothing else calls make_policy or make_reward."""
    callers = set()
    for folder in ("agent", "experiments", "orchestrator", "simulator", "injector", "scalelab"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "scalelab") and path.parent != ROOT / "scalelab" / "cli":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name in ("make_policy", "make_reward"):
                        callers.add(str(path.relative_to(ROOT)))
    assert callers == {"agent/build.py"}, callers
