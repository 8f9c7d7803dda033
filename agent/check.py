"""A checker for registered policies, as Gymnasium's ``check_env`` is for envs.

:func:`check_policy` drives a policy through the step loop (:class:`scalelab.agent.loop.StepLoop`)
on a small deterministic backend (users rise and fall; p95 grows with users per
replica; per-pod samples as the simulator reports them; queue signals too for a policy
that needs the jobs model) and raises :class:`PolicyCheckError` naming the first rule broken:

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

``python -m scalelab.agent.check`` runs it over every registered name.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scalelab.agent.base import Decision, MissingDependency, Policy, PolicyError
from scalelab.agent.build import Deployment, build_policy, build_reward
from scalelab.agent.loop import LoopSettings, StepLoop
from scalelab.agent.registry import policy_names
from scalelab.errors import UserError
from scalelab.orchestrator.backend import (
    INVALID_OFFSET,
    BaseBackend,
    Observation,
    PartitionOffsets,
    PodSample,
    QueueSignals,
    ScaleResult,
    VirtualClock,
    clamp,
)
from scalelab.orchestrator.context import Context, Timetable

STEP_S = 5.0
#: What the checker's loop knows, offered to every policy (replicas 1..10, SLO 600 ms, 5-s steps).
DEPLOYMENT = Deployment(min_replicas=1, max_replicas=10, slo_ms=600.0, step_seconds=STEP_S)
#: The announced exams handed to a policy that reads the timetable: one from 40 s to 120 s.
TIMETABLE = Timetable(((40.0, 120.0, 40.0),))

#: Parameters the registry-wide check uses, so that a learner's decisions come from its
#: learned state within the check's few steps (greedy from the start).
#: the tiny trained agent shipped for the onnx policy (scripts/make_onnx_fixture.py)
EXAMPLE_ONNX = str(Path(__file__).resolve().parent / "policies" / "data" / "p95-rule.onnx")
CHECK_PARAMS: dict[str, dict[str, Any]] = {"dqn": {"greedy_start": 1.0}, "q-learning": {"greedy_start": 1.0},
                                           "epsilon-greedy": {}, "onnx": {"model": EXAMPLE_ONNX},
                                           "keda-cron": {"triggers": [{"start_s": 40.0, "end_s": 120.0,
                                                                       "desired_replicas": 4}]}}


class PolicyCheckError(PolicyError, AssertionError):
    """A registered policy broke one of the checker's rules (the message says which)."""


def _users(k: int) -> int:
    """A load that climbs from idle to 48 users and back, with a plateau."""
    return [0, 0, 2, 6, 12, 20, 30, 40, 48, 48, 40, 30, 20, 12, 6, 2][(k // 4) % 16]


class SyntheticBackend(BaseBackend):
    """A deterministic closed loop for the checker: p95 grows with the users per replica
    (with a jitter so that no two steps are alike), CPU with it; orders take effect at
    once, so settling is observing again. Per-pod samples as the simulator gives them."""

    min_replicas, max_replicas = 1, 10

    def __init__(self, clock: VirtualClock) -> None:
        self.clock, self.replicas, self.users = clock, 1, 0

    @property
    def desired_replicas(self) -> int:
        return self.replicas

    def set_load(self, level: float) -> None:
        self.users = int(level)

    def observe(self) -> Observation:
        t, r = self.clock.now(), self.replicas
        per = self.users / r
        p95 = 80.0 + 45.0 * per * per / 4.0 + round(t * 37 / STEP_S) % 11
        cpu = min(1.0, 0.09 * per)
        ctx = Context(replicas=r, p95_ms=p95, rps=self.users * 1.5, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                      mem_request_ratio=0.2 + 0.01 * per, mem_limit_ratio=0.2 + 0.01 * per, mean_ms=p95 / 2,
                      spans=int(self.users * 15), cpu_request_now=cpu)
        pods = tuple(PodSample(f"pod-{i}", "ready", 0.0, 5.0, 0.5, 0.5, 512.0, 512.0, cpu * 0.5, 100.0 + 2 * per)
                     for i in range(r))
        return Observation(t_s=t, context=ctx, desired_replicas=r, pods=pods)

    def scale_to(self, n: int) -> ScaleResult:
        result = clamp(self.replicas, n, self.min_replicas, self.max_replicas)
        self.replicas = result.applied
        return result

    def settle(self) -> Observation:
        return self.observe()


class SyntheticJobsBackend(SyntheticBackend):
    """The same loop on the jobs model, for a policy that needs it (``architecture =
    "jobs"``): the users submit one job each per step, round-robin over 3 partitions, and
    each replica finishes up to 2 jobs a step, committing them; a partition's group has
    committed nothing until its first job is done (:data:`INVALID_OFFSET`)."""

    PARTITIONS, PER_REPLICA = 3, 2

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)
        self.latest = [0] * self.PARTITIONS
        self.done = [0] * self.PARTITIONS
        self.submitted, self.t_last = 0, 0.0

    def observe(self) -> Observation:
        obs = super().observe()
        steps = round((obs.t_s - self.t_last) / STEP_S)
        if steps > 0:
            self.t_last = obs.t_s
            for _ in range(steps):
                for _ in range(self.users):
                    self.latest[self.submitted % self.PARTITIONS] += 1
                    self.submitted += 1
                capacity = self.replicas * self.PER_REPLICA
                for i in range(self.PARTITIONS):
                    take = min(self.latest[i] - self.done[i], capacity)
                    self.done[i] += take
                    capacity -= take
        parts = tuple(PartitionOffsets(i, self.latest[i], self.done[i] if self.done[i] else INVALID_OFFSET)
                      for i in range(self.PARTITIONS))
        lag = sum(p.lag for p in parts)
        in_progress = min(lag, self.replicas * self.PER_REPLICA)
        queue = QueueSignals(partitions=parts, lag=lag, waiting=lag - in_progress, in_progress=in_progress,
                             runners=self.replicas, runners_busy=min(self.replicas, in_progress))
        return Observation(t_s=obs.t_s, context=obs.context, desired_replicas=obs.desired_replicas, pods=obs.pods,
                           queue=queue)


def _check_decision(name: str, k: int, d: Decision, n_actions: int) -> None:
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


def _drive(build: Callable[[int], Policy], steps: int, name: str,
           restore_at: int | None = None, backend: type[SyntheticBackend] = SyntheticBackend
           ) -> tuple[list[Decision], Policy]:
    """Run a policy built with seed 3 through the step loop (``settle`` mode) on the
    synthetic backend; at ``restore_at``, resume as the agent process does, with a
    policy built with another seed and restored from the JSON of the first one's state."""
    clock = VirtualClock()
    loads = [_users(k) for k in range(steps)]
    loop = StepLoop(backend(clock), clock, loads, LoopSettings(STEP_S, "settle", 600.0),
                    build_reward("slo-binary-v1", {}, DEPLOYMENT), oracle=[max(1, math.ceil(u / 10)) for u in loads])
    policy, start, before, decisions = build(3), 0, None, []
    n_actions = len(policy.actions)
    while True:
        try:
            for record, following in loop.run(policy, start, before,
                                              on_decided=lambda k, obs, d, req, cur: _check_decision(name, k, d,
                                                                                                    n_actions)):
                decisions.append(record.decision)
                if record.step + 1 == restore_at:
                    start, before = restore_at, following
                    break
            else:
                return decisions, policy
        except IndexError as exc:  # the action set's own check
            raise PolicyCheckError(f"{name}: step {len(decisions)}: {exc}") from None
        restored = build(12345)
        restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
        policy = restored


def check_policy(name: str, params: Mapping[str, Any] | None = None, steps: int = 120) -> None:
    """Check the registered policy ``name`` (with ``params``); raises
    :class:`PolicyCheckError` on the first rule broken."""
    params = dict(params or {})

    def build(seed: Any, extra: Mapping[str, Any] | None = None) -> Policy:
        return build_policy(name, {**params, **(extra or {})}, DEPLOYMENT, seed, timetable=TIMETABLE)

    backend = SyntheticJobsBackend if needs_jobs(name) else SyntheticBackend
    whole, final = _drive(build, steps, name, backend=backend)
    final_state = json.dumps(final.state_dict(), sort_keys=True)
    again, _ = _drive(build, steps, name, backend=backend)
    if whole != again:
        k = next(i for i, (a, b) in enumerate(zip(whole, again, strict=True)) if a != b)
        raise PolicyCheckError(f"{name}: the same seed gave different decisions from step {k}: {whole[k]} / {again[k]}")
    for cut in range(3, steps, 7):
        resumed, end = _drive(build, steps, name, restore_at=cut, backend=backend)
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
        build(0, {"no_such_parameter": 1})
    except PolicyError as exc:
        if "no_such_parameter" not in str(exc):
            raise PolicyCheckError(f"{name}: an unknown parameter was rejected without its name: {exc}") from None
    else:
        raise PolicyCheckError(f"{name}: an unknown parameter was accepted")
    for key in ("max_replicas", "seed"):
        try:
            build(0, {key: "not-a-number"})
        except PolicyError as exc:
            if key not in str(exc):
                raise PolicyCheckError(f"{name}: {key}='not-a-number' was rejected without naming it: {exc}") from None
        else:
            if key in _parameters(name):
                raise PolicyCheckError(f"{name}: {key}='not-a-number' was accepted")


def needs_jobs(name: str) -> bool:
    """Whether the policy registered as ``name`` needs the jobs model's queue signals."""
    from scalelab.agent.registry import factory_of

    return getattr(factory_of(name), "architecture", None) == "jobs"


def _parameters(name: str) -> set[str]:
    import inspect

    from scalelab.agent.registry import factory_of

    return set(inspect.signature(factory_of(name)).parameters)


def main(argv: list[str] | None = None) -> int:
    """Check the policies named on the command line (``package.module:Class`` of your own,
    from the current directory too), or every registered and installed one."""
    names = sys.argv[1:] if argv is None else argv
    failed = 0
    for name in names or policy_names():
        try:
            check_policy(name, CHECK_PARAMS.get(name))
            print(f"ok      {name}")
        except MissingDependency as exc:  # an optional package not installed: not this policy's fault
            print(f"skipped {name}: {exc}")
        except PolicyError as exc:  # a broken rule (PolicyCheckError) or a policy that cannot be built
            failed += 1
            print(f"FAILED  {exc}")
        except UserError as exc:  # a plug-in that cannot be found or loaded: one line, not a traceback
            failed += 1
            print(f"FAILED  {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
