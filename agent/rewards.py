"""Rewards as named, versioned definitions.

A reward maps (context before, action's order, context after) to a number. ``slo`` is
the latency objective in ms.

``slo-binary-v1`` (the paper's)
    1 if the p95 measured after the action is at most the SLO, else 0.
``slo-cost-v1``
    the binary SLO reward minus ``cost`` times the replicas after the action over the
    deployment maximum: meeting the SLO with fewer replicas pays more.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from orchestrator import plugins
from orchestrator.context import Context


@dataclass(frozen=True)
class SloBinaryV1:
    slo_ms: float = 600.0
    name: str = "slo-binary-v1"

    def __call__(self, before: Context, action: int, after: Context) -> float:
        return 1.0 if after.p95_ms <= self.slo_ms else 0.0


@dataclass(frozen=True)
class SloCostV1:
    slo_ms: float = 600.0
    cost: float = 0.5
    max_replicas: int = 10
    name: str = "slo-cost-v1"

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"reward.cost must be >= 0, got {self.cost}")

    def __call__(self, before: Context, action: int, after: Context) -> float:
        met = 1.0 if after.p95_ms <= self.slo_ms else 0.0
        return met - self.cost * after.replicas / self.max_replicas


REWARDS = {"slo-binary-v1": SloBinaryV1, "slo-cost-v1": SloCostV1}


def reward_names() -> list[str]:
    """Shipped rewards and installed plug-ins (``scalelab.rewards``), sorted."""
    return sorted({*REWARDS, *plugins.entry_points("reward")})


def make_reward(name: str, **params):
    """The reward ``name`` (shipped, ``package.module:Class`` or an installed entry
    point) built with ``params``: a callable ``(before, action, after) -> float``."""
    if name in REWARDS:
        factory = REWARDS[name]
    elif plugins.is_import_path(name):
        factory = plugins.load_object(name, "reward")
    else:
        factory = plugins.load_entry_point(name, "reward")
        if factory is None:
            close = difflib.get_close_matches(name, reward_names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {reward_names()}"
            raise ValueError(f"reward.name={name!r} is not a reward{hint} (or name your own as 'package.module:Class')")
    try:
        reward = factory(**params)
    except TypeError as exc:
        raise ValueError(f"reward {name!r}: {exc}") from None
    if not callable(reward):
        raise ValueError(f"reward {name!r} built a {type(reward).__name__}, not a callable (before, action, after)")
    return reward
