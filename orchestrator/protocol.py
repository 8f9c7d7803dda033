"""Scale orders and their clamping: the part of the message protocol the agent uses.

An order is ``fixed`` (``level`` is the target replica count) or ``incremental``
(``level`` is a signed step). Either way the result is clamped to ``[min, max]``, as the
paper's orchestrator did with its ``deployment_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDER_MODES = ("fixed", "incremental")


class OrderError(ValueError):
    """An order that cannot be applied; the message names the field and the value."""


@dataclass(frozen=True)
class ScaleOrder:
    """``scaleSUT``: ``mode`` is ``fixed`` or ``incremental``; ``level`` an integer."""

    mode: str
    level: int

    def __post_init__(self) -> None:
        if self.mode not in ORDER_MODES:
            raise OrderError(f"scaleSUT.mode={self.mode!r} is not one of {ORDER_MODES}")
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise OrderError(f"scaleSUT.level={self.level!r} must be an integer")
        if self.mode == "fixed" and self.level < 0:
            raise OrderError(f"scaleSUT.level={self.level} must be >= 0 in fixed mode")

    def target(self, current: int, minimum: int, maximum: int) -> int:
        """The replica count this order asks for, clamped to ``[minimum, maximum]``."""
        if not 0 <= minimum <= maximum:
            raise OrderError(f"deployment limit [{minimum}, {maximum}] is not a range")
        wanted = self.level if self.mode == "fixed" else current + self.level
        return max(minimum, min(maximum, wanted))


STAY = ScaleOrder("incremental", 0)
