"""A checker for registered policies, as Gymnasium's ``check_env`` is for envs.

:func:`check_policy` drives a policy through a small deterministic closed loop (users
rise and fall; p95 grows with users per replica; per-pod samples as the simulator
reports them) and raises :class:`PolicyCheckError` naming the first rule broken:

1. every action is in the action set; its probability is in (0, 1];
2. a probability vector, when given, has one entry per action, sums to 1, and its
   entry for the chosen action equals the probability;
3. the same seed gives the same decisions;
4. ``state_dict`` survives a JSON round trip: a policy restored from it (built with
   another seed) decides exactly as the uninterrupted one from then on, and ends in
   the same state (a lost optimiser moment or timer shows there even when the
   decisions happen to agree);
5. an unknown parameter, and a parameter of the wrong type, are rejected with the
   parameter named.

``python -m agent.check`` runs it over every registered name.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from agent.base import Decision, Policy, PolicyError
from agent.registry import make_policy, policy_names
from orchestrator.backend import Observation, PodSample
from orchestrator.context import Context

DEFAULTS = {"seed": 0, "max_replicas": 10, "min_replicas": 1, "slo_ms": 600.0, "step_seconds": 5.0}

#: Parameters the registry-wide check uses, so that a learner's decisions come from its
#: learned state within the check's few steps (greedy from the start).
CHECK_PARAMS: dict[str, dict[str, Any]] = {"dqn": {"greedy_start": 1.0}, "q-learning": {"greedy_start": 1.0},
                                           "epsilon-greedy": {}}


class PolicyCheckError(AssertionError):
    """A registered policy broke one of the checker's rules (the message says which)."""


def _users(k: int) -> int:
    """A load that climbs from idle to 48 users and back, with a plateau."""
    return [0, 0, 2, 6, 12, 20, 30, 40, 48, 48, 40, 30, 20, 12, 6, 2][(k // 4) % 16]


def _observe(k: int, replicas: int, users: int) -> Observation:
    r = max(replicas, 1)
    per = users / r
    p95 = 80.0 + 45.0 * per * per / 4.0 + (k * 37) % 11  # a deterministic jitter: no two steps alike
    cpu = min(1.0, 0.09 * per)
    ctx = Context(replicas=r, p95_ms=p95, rps=users * 1.5, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                  mem_request_ratio=0.2 + 0.01 * per, mem_limit_ratio=0.2 + 0.01 * per, mean_ms=p95 / 2,
                  spans=int(users * 15), cpu_request_now=cpu)
    pods = tuple(PodSample(f"pod-{i}", "ready", 0.0, 5.0, 0.5, 0.5, 512.0, 512.0, cpu * 0.5, 100.0 + 2 * per)
                 for i in range(r))
    return Observation(t_s=(k + 1) * 5.0, context=ctx, desired_replicas=r, pods=pods)


def _drive(policy: Policy, steps: range, replicas: int, restore_at: int | None = None,
           params: Mapping[str, Any] | None = None, name: str = "") -> tuple[list[Decision], Policy]:
    """Run ``policy`` over ``steps`` of the synthetic loop; at ``restore_at``, swap it for
    a copy restored from its JSON state (built with another seed)."""
    decisions = []
    n_actions = len(policy.actions)
    for k in steps:
        if restore_at is not None and k == restore_at:
            state = json.loads(json.dumps(policy.state_dict()))
            restored = make_policy(name, defaults={**DEFAULTS, "seed": 12345}, **dict(params or {}))
            restored.load_state_dict(state)
            policy = restored
        users = _users(k)
        before = _observe(k, replicas, users)
        info = {"step": k, "t_s": before.t_s, "current_replicas": replicas, "observation": before,
                "oracle_replicas": max(1, math.ceil(users / 10))}
        d = policy.decide(before.context, info)
        decisions.append(d)
        if not (isinstance(d.action, int) and 0 <= d.action < n_actions):
            raise PolicyCheckError(f"{name}: step {k}: action {d.action!r} is outside 0..{n_actions - 1}")
        if not 0.0 < d.probability <= 1.0:
            raise PolicyCheckError(f"{name}: step {k}: probability {d.probability!r} is not in (0, 1]")
        if d.probabilities is not None:
            if len(d.probabilities) != n_actions:
                raise PolicyCheckError(f"{name}: step {k}: {len(d.probabilities)} probabilities for {n_actions} actions")
            if not math.isclose(sum(d.probabilities), 1.0, abs_tol=1e-6):
                raise PolicyCheckError(f"{name}: step {k}: probabilities sum to {sum(d.probabilities)!r}, not 1")
            if not math.isclose(d.probabilities[d.action], d.probability, abs_tol=1e-6):
                raise PolicyCheckError(f"{name}: step {k}: the chosen action's entry {d.probabilities[d.action]!r} "
                                       f"is not its probability {d.probability!r}")
        order = policy.actions.order(d.action)
        wanted = order.level if order.mode == "fixed" else replicas + order.level
        replicas = max(1, min(10, wanted))
        after = _observe(k, replicas, users)
        reward = 1.0 if after.context.p95_ms <= 600.0 else 0.0
        policy.update(before.context, d.action, reward, after.context)
    return decisions, policy


def check_policy(name: str, params: Mapping[str, Any] | None = None, steps: int = 120) -> None:
    """Check the registered policy ``name`` (with ``params``); raises
    :class:`PolicyCheckError` on the first rule broken."""
    params = dict(params or {})

    def build(seed: int) -> Policy:
        return make_policy(name, defaults={**DEFAULTS, "seed": seed}, **params)

    whole, final = _drive(build(3), range(steps), 1, name=name)
    final_state = json.dumps(final.state_dict(), sort_keys=True)
    again, _ = _drive(build(3), range(steps), 1, name=name)
    if whole != again:
        k = next(i for i, (a, b) in enumerate(zip(whole, again, strict=True)) if a != b)
        raise PolicyCheckError(f"{name}: the same seed gave different decisions from step {k}: {whole[k]} / {again[k]}")
    for cut in range(3, steps, 7):
        resumed, end = _drive(build(3), range(steps), 1, restore_at=cut, params=params, name=name)
        if resumed != whole:
            k = next(i for i, (a, b) in enumerate(zip(whole, resumed, strict=True)) if a != b)
            raise PolicyCheckError(f"{name}: restored from its state_dict at step {cut}, it decided differently "
                                   f"at step {k}: {resumed[k]} instead of {whole[k]}")
        if json.dumps(end.state_dict(), sort_keys=True) != final_state:
            a, b = final.state_dict(), end.state_dict()
            keys = sorted(k for k in a if json.dumps(a[k], sort_keys=True) != json.dumps(b.get(k), sort_keys=True))
            raise PolicyCheckError(f"{name}: restored from its state_dict at step {cut}, it ended in another state "
                                   f"(differs in {keys})")
    try:
        make_policy(name, defaults=DEFAULTS, **params, no_such_parameter=1)
    except PolicyError as exc:
        if "no_such_parameter" not in str(exc):
            raise PolicyCheckError(f"{name}: an unknown parameter was rejected without its name: {exc}") from None
    else:
        raise PolicyCheckError(f"{name}: an unknown parameter was accepted")
    for key in ("max_replicas", "seed"):
        try:
            make_policy(name, defaults=DEFAULTS, **{**params, key: "not-a-number"})
        except PolicyError as exc:
            if key not in str(exc):
                raise PolicyCheckError(f"{name}: {key}='not-a-number' was rejected without naming it: {exc}") from None
        else:
            if key in _parameters(name):
                raise PolicyCheckError(f"{name}: {key}='not-a-number' was accepted")


def _parameters(name: str) -> set[str]:
    import inspect

    from agent.registry import factory_of

    return set(inspect.signature(factory_of(name)).parameters)


def main() -> int:
    failed = 0
    for name in policy_names():
        try:
            check_policy(name, CHECK_PARAMS.get(name))
            print(f"ok      {name}")
        except PolicyCheckError as exc:
            failed += 1
            print(f"FAILED  {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
