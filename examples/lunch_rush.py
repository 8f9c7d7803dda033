"""A workload written outside the package: students who come back from lunch.

Named in a config as ``lunch_rush:LunchRush`` (this file beside the YAML); its parameters
are the config's keys beside ``kind``. A workload is a frozen dataclass subclassing
:class:`scalelab.injector.workloads.Workload` with a ``name``, a ``loop`` (``closed``:
``users_at`` gives concurrent users; ``open``: ``rate_at`` gives arrivals per second) and a
``duration_s``; ``series``, the figures, the simulator and the Locust injector all read it
through those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalelab.injector.workloads import Workload, WorkloadError


@dataclass(frozen=True)
class LunchRush(Workload):
    """``base`` students all along, and ``peak`` more who arrive over ``rise_s`` seconds from
    ``at_s`` and leave over ``fall_s`` seconds from ``at_s + stay_s``; closed loop, so each
    student submits, waits for the result and thinks between ``think_s`` seconds."""

    base: int = 5
    peak: int = 30
    at_s: float = 600.0
    rise_s: float = 120.0
    stay_s: float = 900.0
    fall_s: float = 300.0
    length_s: float = 2400.0
    think: tuple[float, float] = (3.0, 12.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "lunch-rush")
        object.__setattr__(self, "loop", "closed")
        if min(self.base, self.peak) < 0:
            raise WorkloadError(f"lunch-rush: base and peak must be >= 0, got {self.base} and {self.peak}")
        if min(self.rise_s, self.fall_s) <= 0 or self.length_s <= 0:
            raise WorkloadError("lunch-rush: rise_s, fall_s and length_s must be > 0 s")

    @property
    def duration_s(self) -> float:
        return float(self.length_s)

    @property
    def think_s(self) -> tuple[float, float]:
        return (float(self.think[0]), float(self.think[1]))

    def users_at(self, t: float) -> int:
        up = min(max((t - self.at_s) / self.rise_s, 0.0), 1.0)
        down = min(max((t - self.at_s - self.stay_s) / self.fall_s, 0.0), 1.0)
        return self.base + math.floor(self.peak * max(up - down, 0.0))
