"""What an institution knows in advance, as signals a policy may see.

An evaluation week is not a surprise: the exam timetable and the homework deadlines are
published weeks ahead. A workload that has a timetable (``evaluation-week-v1``, and any
workload wrapped by ``time_compression``/``user_scale``) gives it as
:meth:`~scalelab.injector.workloads.Workload.announced`: the same week with only the **announced**
events, each possibly off by the timetable's noise (sizes by a factor, starts by
minutes). The calendar's features are computed from that timetable alone, never from
the load that actually arrives, so an unannounced burst moves no feature, and an
announced one moves them only from ``horizon`` before it.

Features at step ``k`` (decision time ``t = k * step_s`` on the workload's clock), in
students (users) unless stated:

========================  ==================================================================
``expected_now``          the timetable's students at ``t``
``expected_5min``         ... at ``t + 5 min``
``expected_15min``        ... at ``t + 15 min``
``peak_15min``            the most over ``[t, t + 15 min]`` (on the step grid)
``minutes_to_exam``       minutes to the next announced exam start, capped at 240 (0 during
                          its first step)
========================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalelab.errors import UserError
from scalelab.injector.workloads import Workload, WorkloadError
from scalelab.orchestrator.context import CALENDAR_FEATURES, CalendarFeatures, Timetable  # noqa: F401 (re-exported)

#: Feature names, in the order of :meth:`CalendarFeatures.vector`.
FEATURES = CALENDAR_FEATURES
#: How far ahead ``minutes_to_exam`` looks, min (the cap).
EXAM_HORIZON_MIN = 240.0


@dataclass(frozen=True)
class CalendarSettings:
    """What is announced and how well. size_noise: announced students = true x
    ``U(1 - size_noise, 1 + size_noise)``, ratio in [0, 1); start_noise_min: announced
    start = true + ``U(-start_noise_min, +start_noise_min)``, min; drawn once per run."""

    size_noise: float = 0.0
    start_noise_min: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.size_noise < 1.0:
            raise UserError(f"calendar.size_noise={self.size_noise!r} must be in [0, 1)")
        if not self.start_noise_min >= 0.0:
            raise UserError(f"calendar.start_noise_min={self.start_noise_min!r} must be >= 0")


def timetable(workload: Workload, settings: CalendarSettings = CalendarSettings(),
              rng: np.random.Generator | None = None) -> Workload:
    """The announced timetable of ``workload`` (noisy per ``settings``, drawing from
    ``rng``); a :class:`WorkloadError` names a workload that publishes none."""
    noisy = settings.size_noise > 0 or settings.start_noise_min > 0
    table = workload.announced(settings.size_noise, settings.start_noise_min,
                               rng if rng is not None or not noisy else None)
    if table is None:
        raise WorkloadError(f"workload {workload.name!r} publishes no timetable: calendar features need one "
                            "(evaluation-week-v1 has exams and deadlines)")
    return table


def run_timetable(workload: Workload, settings: CalendarSettings, seed: int) -> Workload | None:
    """The timetable announced for one run: :func:`timetable` with a generator seeded by
    the run's ``calendar`` seed; None when ``workload`` publishes none. The simulated
    runner and the live agent both call this, so a live run sees the same timetable."""
    if workload.announced() is None:
        return None
    return timetable(workload, settings, np.random.default_rng(seed))


def calendar_features(table: Workload, step_s: float, steps: int) -> np.ndarray:
    """The features of :data:`FEATURES` at steps ``0..steps-1`` from the timetable
    ``table`` alone, shape ``(steps, 5)``, float64."""
    ahead = {m: round(m * 60.0 / step_s) for m in (5, 15)}
    grid = np.asarray(table.series(step_s, steps + ahead[15] + 1), dtype=float)  # users_at(k * step_s)
    k = np.arange(steps)
    windows = np.lib.stride_tricks.sliding_window_view(grid, ahead[15] + 1)[:steps]
    starts = np.asarray(table.exam_starts_s(), dtype=float)
    t = k * step_s
    if starts.size:
        nxt = np.searchsorted(starts, t - 1e-9)  # the first start at or after t
        gap = np.where(nxt < starts.size, starts[np.minimum(nxt, starts.size - 1)] - t, np.inf)
        minutes = np.minimum(gap / 60.0, EXAM_HORIZON_MIN)
    else:
        minutes = np.full(steps, EXAM_HORIZON_MIN)
    return np.column_stack((grid[k], grid[k + ahead[5]], grid[k + ahead[15]], windows.max(axis=1), minutes))


def timetable_data(table: Workload) -> Timetable:
    """The timetable's exams as plain data for policies (:class:`Timetable`)."""
    return Timetable(tuple(table.exam_windows()))
