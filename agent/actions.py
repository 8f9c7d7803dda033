"""Action sets: what an action index means as a scale order.

``incremental(-1, 0, 1)`` gives three actions: down one, stay, up one (the paper's
HSLinUCB has ``incremental(-1, 0)``); ``fixed(1, 10)`` gives one action per target count.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.errors import UserError
from scalelab.orchestrator.protocol import ScaleOrder


@dataclass(frozen=True)
class ActionSet:
    """A finite list of scale orders; action ``i`` is ``orders[i]``."""

    orders: tuple[ScaleOrder, ...]

    def __post_init__(self) -> None:
        if not self.orders:
            raise UserError("an action set needs at least one order")

    def __len__(self) -> int:
        return len(self.orders)

    def order(self, action: int) -> ScaleOrder:
        if not 0 <= action < len(self.orders):
            raise IndexError(f"action {action} is outside 0..{len(self.orders) - 1}")
        return self.orders[action]

    def index_of(self, order: ScaleOrder) -> int:
        return self.orders.index(order)

    @staticmethod
    def incremental(*steps: int) -> ActionSet:
        """One action per signed step, in the order given."""
        return ActionSet(tuple(ScaleOrder("incremental", int(s)) for s in steps))

    @staticmethod
    def fixed(low: int, high: int) -> ActionSet:
        """One action per target count ``low..high``."""
        if not 0 <= low <= high:
            raise UserError(f"fixed action range {low}..{high} is not a range")
        return ActionSet(tuple(ScaleOrder("fixed", n) for n in range(low, high + 1)))
