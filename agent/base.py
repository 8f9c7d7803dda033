"""The policy seam: what every scaling policy implements.

A policy sees a :class:`~scalelab.orchestrator.context.Context` each step and returns an action
index into its :class:`~scalelab.agent.actions.ActionSet` with the probability it had of choosing
it (1.0 for a deterministic choice). It then learns from the reward of that action.
Every random choice draws from the policy's own generator, seeded at construction.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.errors import UserError
from scalelab.orchestrator.backend import Observation, QueueSignals
from scalelab.orchestrator.context import Context


def read_state_file(path: str | Path) -> dict:
    """A saved policy state: JSON, gzip-compressed when its name ends in ``.gz`` (a run
    folder's ``policies/*.json.gz``)."""
    p = Path(path)
    data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return json.loads(data)


def write_state_file(path: str | Path, state: dict) -> None:
    """``state`` as :func:`read_state_file` reads it back (gzip when the name ends in
    ``.gz``; ``mtime=0``, so the same state gives the same bytes)."""
    p = Path(path)
    data = json.dumps(state).encode()
    p.write_bytes(gzip.compress(data, mtime=0) if p.suffix == ".gz" else data)


class PolicyError(UserError):
    """A policy built with a bad hyperparameter; the message names it and its value."""


class MissingDependency(PolicyError):
    """A policy whose optional package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Decision:
    """One decision: the action index, its propensity, and the full probability vector
    over the action set (shape ``(n_actions,)``) when the policy knows it. ``forced``:
    the action was imposed by a rule around the learner (the paper's +1 above the SLO),
    not chosen by it."""

    action: int
    probability: float = 1.0
    probabilities: tuple[float, ...] | None = None
    forced: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """The interface every policy implements (docs/architecture.md, "How to add a policy")."""

    name: str
    actions: ActionSet

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        """Choose an action for ``context``. ``info`` carries what only some backends
        know (``oracle_replicas`` in the simulator, ``t_s``, ``step``)."""

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        """Learn from the reward of ``action`` taken in ``context``."""

    def state_dict(self) -> dict:
        """Everything needed to resume: parameters, learned state, generator state."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


class BasePolicy:
    """Shared plumbing: a seeded generator, a name, an action set, state of the rng.

    ``architecture``: the model a policy needs -- ``"jobs"`` for one that reads the
    observation's queue signals (it raises a :class:`PolicyError` without them); None (the
    default) for one that runs on either."""

    name = "base"
    architecture: str | None = None

    def __init__(self, actions: ActionSet, seed: int | np.random.SeedSequence | None = None) -> None:
        self.actions = actions
        self.rng = np.random.default_rng(seed)

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        return None

    def state_dict(self) -> dict:
        return {"name": self.name, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise PolicyError(f"state is for policy {state.get('name')!r}, not {self.name!r}")
        self.rng.bit_generator.state = state["rng"]

    def hot_start(self, seed: int | np.random.SeedSequence | None) -> None:
        """After :meth:`load_state_dict` of another experiment's final state: go on
        learning from it in a new experiment, with a new generator (a resumed run
        does not call this)."""
        self.rng = np.random.default_rng(seed)


def needs_queue(who: str, info: Mapping[str, Any]) -> tuple[Observation, QueueSignals]:
    """The observation and its queue signals; a :class:`PolicyError` on the service model."""
    obs = info.get("observation")
    if obs is None or getattr(obs, "queue", None) is None:
        raise PolicyError(f"{who} needs the jobs model (architecture: jobs): the observation has no queue signals "
                          "(partitions, lag, runners); it cannot run on the service model")
    return obs, obs.queue
