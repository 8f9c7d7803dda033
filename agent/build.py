"""What the loop runs, built from names and parameters: the one :func:`build_policy` and
the one :func:`build_reward` of every caller -- the runner (``experiments/episode.py``),
the Gymnasium env, the agent process and the policy checker.

A caller knows the deployment's limits, the SLO and the step length
(:class:`Deployment`); each is offered to a policy or a reward that takes it under that
name and whose parameters do not set it. Errors are :class:`~scalelab.agent.base.PolicyError`
(a policy) or :class:`~scalelab.agent.rewards.RewardError` (a reward); a caller that reads
a config adds the config's key in front.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scalelab.agent.base import Policy, PolicyError
from scalelab.agent.registry import factory_of, make_policy
from scalelab.agent.rewards import make_reward
from scalelab.orchestrator.context import Timetable


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the loop's caller knows of the experiment, offered to policies and rewards.

    min_replicas, max_replicas: the deployment's limits (replicas). slo_ms: the latency
    objective (ms). step_seconds: the loop's period (s).
    """

    min_replicas: int
    max_replicas: int
    slo_ms: float
    step_seconds: float

    def defaults(self, seed: Any) -> dict:
        """The keyword defaults of a policy built with ``seed``."""
        return {"seed": seed, "max_replicas": self.max_replicas, "min_replicas": self.min_replicas,
                "slo_ms": self.slo_ms, "step_seconds": self.step_seconds}


def reads_timetable(name: str) -> bool:
    """Whether the policy registered as ``name`` takes the announced timetable."""
    return "timetable" in inspect.signature(factory_of(name)).parameters


def build_policy(name: str, params: Mapping[str, Any], deployment: Deployment, seed: Any, *,
                 timetable: Timetable | None = None, state: dict | None = None,
                 label: str | None = None) -> Policy:
    """The policy ``name`` with ``params``, and what ``deployment`` knows as defaults.

    timetable: the run's announced exams, for a policy that reads them (one that does
    and gets None is an error). state: a saved :meth:`~scalelab.agent.base.Policy.state_dict`
    to continue from (hot start): it is loaded, then the policy's generator is reseeded
    with ``seed`` so that it keeps learning with its own draws. label: the name errors
    use (default ``name``).
    """
    label = label or name
    defaults = deployment.defaults(seed)
    if reads_timetable(name):
        if timetable is None:
            raise PolicyError(f"{label} reads the announced timetable, and the workload publishes none "
                              "(evaluation-week-v1 does)")
        defaults["timetable"] = timetable
    policy = make_policy(name, defaults=defaults, **dict(params))
    if state is not None:
        try:
            policy.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise PolicyError(f"{label}: cannot load its saved state: {exc}") from None
        policy.hot_start(seed)
    return policy


def build_reward(name: str, params: Mapping[str, Any], deployment: Deployment) -> Callable[..., float]:
    """The reward ``name`` with ``params``; the SLO (``slo_ms``) and the maximum replica
    count (``max_replicas``) are offered to a reward that takes them."""
    return make_reward(name, defaults={"max_replicas": deployment.max_replicas},
                       **{"slo_ms": deployment.slo_ms, **dict(params)})
