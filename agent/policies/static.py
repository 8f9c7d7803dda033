"""``static``: always the same replica count (the capacity-planning baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.orchestrator.context import Context


class Static(BasePolicy):
    """Orders ``replicas`` every step (a fixed order, clamped by the orchestrator)."""

    name = "static"

    def __init__(self, replicas: int = 3, seed=None, max_replicas: int = 10) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise PolicyError(f"static: replicas must be an integer >= 1, got {replicas!r}")
        super().__init__(ActionSet.fixed(replicas, replicas), seed)
        self.replicas = replicas

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        return Decision(action=0, probability=1.0, probabilities=(1.0,))
