"""``oracle``: the fewest replicas that meet the SLO at each step (simulator only).

The simulator knows the load of the coming step and, from steady-state runs of the same
cluster, the fewest replicas whose p95 stays under the SLO at that load
(:mod:`scalelab.simulator.oracle`). The runner passes that number in ``info["oracle_replicas"]``;
the oracle orders it. The paper's oracle was the same idea over its recorded datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.orchestrator.context import Context


class Oracle(BasePolicy):
    """The fewest replicas that meet the SLO at the coming step's load (a reference; simulator and replay)."""

    name = "oracle"

    def __init__(self, seed=None, max_replicas: int = 10) -> None:
        super().__init__(ActionSet.fixed(0, max_replicas), seed)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if not info or info.get("oracle_replicas") is None:
            raise PolicyError(
                "oracle: this backend does not know the fewest replicas that meet the SLO "
                "(only the simulator does); remove the oracle from the policies"
            )
        target = int(min(info["oracle_replicas"], len(self.actions) - 1))
        return Decision(action=target, probability=1.0)
