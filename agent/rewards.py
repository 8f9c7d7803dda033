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
    ``slo_met − 1 − replica_cost · replicas / max_replicas − change_cost · |Δ replicas| /
    max_replicas``, with ``max_replicas`` the cluster's (the runner and the env pass it):
    a step that breaks the SLO costs 1 (the loop's violation flag: p95 above the SLO, or
    its spans missing), holding the whole cluster costs ``replica_cost`` per step, and
    every replica added or removed costs ``change_cost / max_replicas``; 0 is the best a
    step can earn. :meth:`SloCostV2.terms` gives each term.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from scalelab.errors import UserError
from scalelab.orchestrator import plugins
from scalelab.orchestrator.context import Context


class RewardError(UserError):
    """A reward that cannot be built: an unknown name, a bad parameter; the message
    names it."""


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
            raise RewardError(f"reward.cost must be >= 0, got {self.cost}")

    def __call__(self, before: Context, action: int, after: Context) -> float:
        met = 1.0 if after.p95_ms <= self.slo_ms else 0.0
        return met - self.cost * after.replicas / self.max_replicas


@dataclass(frozen=True)
class SloCostV2:
    """The learning agents' default: ``slo_met − 1`` (0 within the SLO, −1 for a
    violation), minus ``replica_cost`` x replicas / ``max_replicas`` (the cluster's),
    minus ``change_cost`` x replicas changed / ``max_replicas``; 0 turns the change cost
    off. Given the loop's ``violation`` flag (the step loop passes it), a step whose
    spans were missing is a violation, not a step within the SLO.

    A replica is worth holding when it cuts the chance of a violation by more than
    ``replica_cost / max_replicas`` per step (0.03 with 10 replicas: the oracle holds the
    fewest replicas whose p95 samples all meet the SLO, a few per cent at most).

    Why ``− 1``: a constant per step does not change which policy is best over an
    episode of fixed length (the env truncates, nothing terminates), but paying 1 per
    step within the SLO puts the returns near ``1 / (1 − γ)`` (about 80 with PPO's
    γ = 0.99): the value network spends its first updates on that constant, its errors
    larger than the few hundredths per replica that tell the actions apart.

    Measured with PPO (SB3 defaults, 100k steps, normalised observations) trained on
    ``fluid-stochastic`` and run on the discrete-event staircase, 3 runs, 6 training
    seeds each (``scripts/train_ppo_transfer.py``; the oracle: 40.3 violations, 3.00
    replicas, 72 changes per run):

    =====================================  ===============  =============  ===========
    reward (replica_cost, change_cost)     violations       replicas       changes
    =====================================  ===============  =============  ===========
    ``slo_met`` (no − 1), 0.5, 0.3         9.0-228.0        3.32-4.50      57-1,110
    ``slo_met`` (no − 1), 0.5, 0.1         3.3-259.0        3.06-4.91      71-1,250
    ``− 1``, 0.5, 0.3                      35.3-160.3       3.14-3.25      74-85
    ``− 1``, 0.4, 0.3                      21.7-160.3       3.16-3.28      75-87
    ``− 1``, 0.3, 0.3 (the default)        22.0-50.0        3.19-3.28      75-90
    the default, seeds 6-11                28.0-97.0        3.13-3.37      78-90
    =====================================  ===============  =============  ===========
    """

    slo_ms: float = 600.0
    max_replicas: int = 10
    replica_cost: float = 0.3
    change_cost: float = 0.3
    name: str = "slo-cost-v2"

    def __post_init__(self) -> None:
        if self.replica_cost < 0 or self.change_cost < 0:
            raise RewardError(f"reward: replica_cost and change_cost must be >= 0, got {self.replica_cost}, "
                             f"{self.change_cost}")
        if self.max_replicas < 1:
            raise RewardError(f"reward: max_replicas must be >= 1, got {self.max_replicas}")

    def terms(self, before: Context, action: int, after: Context, violation: bool | None = None) -> dict[str, float]:
        """The reward's parts, which add up to it: ``slo`` (0 within the SLO, −1 for a
        violation: the loop's ``violation`` flag when given, else the p95 against the
        SLO), ``replicas`` and ``changes`` (their costs, <= 0)."""
        met = (after.p95_ms <= self.slo_ms) if violation is None else not violation
        return {"slo": 0.0 if met else -1.0,
                "replicas": -self.replica_cost * after.replicas / self.max_replicas,
                "changes": -self.change_cost * abs(after.replicas - before.replicas) / self.max_replicas}

    def __call__(self, before: Context, action: int, after: Context, violation: bool | None = None) -> float:
        t = self.terms(before, action, after, violation)
        return t["slo"] + t["replicas"] + t["changes"]


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
            raise RewardError(f"reward.name={name!r} is not a reward{hint} (or name your own as 'package.module:Class')")
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
        raise RewardError(f"reward {name!r}: {exc}") from None
    if not callable(reward):
        raise RewardError(f"reward {name!r} built a {type(reward).__name__}, not a callable (before, action, after)")
    return reward
