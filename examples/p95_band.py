"""A policy written outside scalelab: a p95 band with a cool-down.

Above ``high`` × SLO it adds a replica, below ``low`` × SLO it removes one, and after any
change it waits ``cooldown_steps`` steps (the new replica needs its startup delay before
the p95 can answer). Named in a config as ``name: p95_band:P95Band`` (this file beside
the YAML), see ``p95-band.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.orchestrator.context import Context


class P95Band(BasePolicy):
    """Incremental actions (index 0: -1, 1: stay, 2: +1); deterministic."""

    name = "p95-band"

    def __init__(self, slo_ms: float = 600.0, low: float = 0.3, high: float = 0.8, cooldown_steps: int = 3,
                 seed=None) -> None:
        if not 0 < low < high:
            raise PolicyError(f"p95-band: need 0 < low < high, got low={low}, high={high}")
        super().__init__(ActionSet.incremental(-1, 0, 1), seed)
        self.slo_ms, self.low, self.high, self.cooldown_steps = slo_ms, low, high, cooldown_steps
        self.wait = 0

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if self.wait > 0:
            self.wait -= 1
            action = 1
        elif context.p95_ms > self.high * self.slo_ms:
            action = 2
        elif context.p95_ms < self.low * self.slo_ms and context.replicas > 1:
            action = 0
        else:
            action = 1
        if action != 1:
            self.wait = self.cooldown_steps
        return Decision(action=action, probability=1.0, probabilities=tuple(float(a == action) for a in range(3)))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.wait = int(state["wait"])
