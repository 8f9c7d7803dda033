"""Rewards as named, versioned definitions.

A reward maps (context before, action's order, context after) to a number. ``slo`` is
the latency objective in ms.

``slo-binary-v1`` (the paper's)
    1 if the p95 measured after the action is at most the SLO, else 0. Meaningful only
    inside HSLinUCB's rule (forced +1 above the SLO, the learner choosing between down
    and stay): a learner free to scale up earns its maximum by scaling up and staying.
``slo-cost-v1``
    the binary SLO reward minus ``cost`` times the replicas after the action over
    ``max_replicas`` (its own parameter, 10 unless given).
``slo-cost-v2`` (the Gymnasium env's default)
    ``slo_met − replica_cost · replicas / max_replicas − change_cost · |Δ replicas| /
    max_replicas``, with ``max_replicas`` the cluster's (the runner and the env pass it):
    meeting the SLO pays 1, holding the whole cluster costs ``replica_cost``, and every
    replica added or removed costs ``change_cost / max_replicas``. :meth:`SloCostV2.terms`
    gives each term.
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


@dataclass(frozen=True)
class SloCostV2:
    """The learning agents' default: 1 for a step within the SLO, minus ``replica_cost``
    x replicas / ``max_replicas`` (the cluster's), minus ``change_cost`` x replicas
    changed / ``max_replicas``; 0 turns the change cost off. ``change_cost`` is 0.3 by
    default, measured with PPO (100k steps, normalised observations) on the staircase:
    without it PPO flapped 1,200-9,000 times per 9,000-step episode; at 1 it stopped
    flapping (38-67 changes; the oracle: 72) but never scaled below about 3 replicas at
    low load, where the oracle holds 1; at 0.3, 57-361 changes in 5 of 6 training seeds
    and the oracle's levels at low load (``scripts/train_ppo_transfer.py``)."""

    slo_ms: float = 600.0
    max_replicas: int = 10
    replica_cost: float = 0.5
    change_cost: float = 0.3
    name: str = "slo-cost-v2"

    def __post_init__(self) -> None:
        if self.replica_cost < 0 or self.change_cost < 0:
            raise ValueError(f"reward: replica_cost and change_cost must be >= 0, got {self.replica_cost}, "
                             f"{self.change_cost}")
        if self.max_replicas < 1:
            raise ValueError(f"reward: max_replicas must be >= 1, got {self.max_replicas}")

    def terms(self, before: Context, action: int, after: Context) -> dict[str, float]:
        """``slo_met`` (0 or 1), ``replica_cost`` and ``change_cost`` (both >= 0); the
        reward is the first minus the other two."""
        return {"slo_met": 1.0 if after.p95_ms <= self.slo_ms else 0.0,
                "replica_cost": self.replica_cost * after.replicas / self.max_replicas,
                "change_cost": self.change_cost * abs(after.replicas - before.replicas) / self.max_replicas}

    def __call__(self, before: Context, action: int, after: Context) -> float:
        t = self.terms(before, action, after)
        return t["slo_met"] - t["replica_cost"] - t["change_cost"]


REWARDS = {"slo-binary-v1": SloBinaryV1, "slo-cost-v1": SloCostV1, "slo-cost-v2": SloCostV2}


def reward_names() -> list[str]:
    """Shipped rewards and installed plug-ins (``scalelab.rewards``), sorted."""
    return sorted({*REWARDS, *plugins.entry_points("reward")})


def make_reward(name: str, *, defaults: dict | None = None, **params):
    """The reward ``name`` (shipped, ``package.module:Class`` or an installed entry
    point) built with ``params``: a callable ``(before, action, after) -> float``.
    ``defaults`` (``max_replicas``, what the runner knows) are passed when the reward
    takes them and ``params`` does not set them."""
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
    import inspect

    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    for key, value in (defaults or {}).items():
        if key not in params and key in accepted:
            params[key] = value
    try:
        reward = factory(**params)
    except TypeError as exc:
        raise ValueError(f"reward {name!r}: {exc}") from None
    if not callable(reward):
        raise ValueError(f"reward {name!r} built a {type(reward).__name__}, not a callable (before, action, after)")
    return reward
