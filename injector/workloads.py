"""Workloads: pure functions of time, with versioned names.

A workload is either **closed** (``users_at(t)``: concurrent users, each sending, waiting
for the answer and thinking, as Locust users do) or **open** (``rate_at(t)``: arrivals per
second, Poisson). Time ``t`` is in seconds from the start of the experiment. Nothing
here sleeps or draws a random number: the same ``t`` always gives the same value.

Build one with :func:`make_workload` from a config mapping (``{"kind": ..., **params}``).

==================== ======= ===============================================================
kind                 loop    what
==================== ======= ===============================================================
paper-sim-v1         closed  the paper's 9000-step staircase: 5..50 users by 5, 50 steps a
                             level, up then down, nine times
paper-real-week-v1   closed  the paper's 913-step real-cluster pattern (shipped; or ``path``)
evaluation-week-v1   closed  a university evaluation week (see :class:`EvaluationWeek`)
constant             closed  ``users`` for ``duration_s``
step                 closed  ``before`` users, then ``after`` from ``at_s``
ramp                 closed  from ``start`` to ``end`` users over ``duration_s``
csv                  either  columns ``t_s`` and ``users`` (closed) or ``t_s`` and ``rps``
                             (open), step-wise between rows
open-constant        open    ``rate_rps`` arrivals per second for ``duration_s``
==================== ======= ===============================================================

Every kind also takes ``time_compression`` and ``user_scale`` (:class:`Compressed`): the
same calendar faster and with fewer users, for a live run on one machine.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from scalelab.errors import UserError
from scalelab.orchestrator import plugins


class WorkloadError(UserError):
    """A workload spec that cannot be built; the message names the key and the value."""


@dataclass(frozen=True)
class Workload:
    """Base class. ``loop`` is ``closed`` or ``open``; ``duration_s`` the natural length.

    ``think_s`` is the closed users' think time ``(low, high)``, s, uniform; None means
    the experiment's default (Locust's ``between(0, 2)`` as in the paper).
    """

    name: str = field(default="", init=False)
    loop: str = field(default="closed", init=False)

    @property
    def duration_s(self) -> float:
        raise NotImplementedError

    @property
    def think_s(self) -> tuple[float, float] | None:
        return None

    def users_at(self, t: float) -> int:
        """Concurrent users at ``t`` s (closed workloads)."""
        raise WorkloadError(f"workload {self.name!r} is open-loop: use rate_at")

    def rate_at(self, t: float) -> float:
        """Arrivals per second at ``t`` s (open workloads)."""
        raise WorkloadError(f"workload {self.name!r} is closed-loop: use users_at")

    def value_at(self, t: float) -> float:
        """Users (closed) or arrivals per second (open) at ``t``."""
        return float(self.users_at(t) if self.loop == "closed" else self.rate_at(t))

    def announced(self, size_noise: float = 0.0, start_noise_min: float = 0.0,
                  rng: np.random.Generator | None = None) -> Workload | None:
        """The timetable published in advance, as a workload of expected users (see
        :mod:`scalelab.injector.calendar`); None: this workload publishes none."""
        return None

    def exam_windows(self) -> tuple[tuple[float, float, float], ...]:
        """Its exams as ``(start_s, end_s, students)`` on this workload's clock (s from
        t = 0, users), sorted by start; none by default."""
        return ()

    def exam_starts_s(self) -> tuple[float, ...]:
        """Its exams' starts, s on this workload's clock, sorted."""
        return tuple(w[0] for w in self.exam_windows())

    def series(self, step_s: float, steps: int | None = None) -> np.ndarray:
        """Values at ``0, step_s, 2 step_s, ...``, shape ``(steps,)``."""
        n = steps if steps is not None else math.ceil(self.duration_s / step_s)
        return np.array([self.value_at(k * step_s) for k in range(n)], dtype=float)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise WorkloadError(message)


@dataclass(frozen=True)
class Pattern(Workload):
    """Users per step from a list: ``levels[floor(t / step_s)]`` (the last level after)."""

    levels: tuple[int, ...] = ()
    step_s: float = 5.0
    label: str = "pattern"

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.label)
        _check(len(self.levels) > 0, f"{self.label}: the pattern is empty")
        _check(self.step_s > 0, f"{self.label}: step_s must be > 0, got {self.step_s}")
        _check(min(self.levels) >= 0, f"{self.label}: a level is negative")

    @property
    def duration_s(self) -> float:
        return len(self.levels) * self.step_s

    def users_at(self, t: float) -> int:
        k = min(max(int(t // self.step_s), 0), len(self.levels) - 1)
        return int(self.levels[k])


def paper_sim_levels() -> tuple[int, ...]:
    """The paper's simulation pattern, 9000 steps: levels 5, 10, ..., 50, 50, 45, ..., 5,
    50 steps each, the 20-level cycle repeated nine times."""
    out = []
    for i in range(9000):
        k = (i // 50) % 20
        out.append(5 * (k + 1) if k < 10 else 5 * (20 - k))
    return tuple(out)


def paper_sim_v1(step_s: float = 5.0) -> Pattern:
    return Pattern(levels=paper_sim_levels(), step_s=step_s, label="paper-sim-v1")


def paper_real_week_v1(path: str | None = None, step_s: float = 5.0) -> Pattern:
    """The paper's real-cluster pattern (913 steps, 2..49 users): the HSLinUCB
    repository's ``roles/HSLinUCB/files/real/pattern.json`` (GPL-2.0,
    github.com/Orange-OpenSource/HSLinUCB), shipped as ``injector/data/real-week-pattern.json``
    (see ``injector/data/README.md``); ``path`` reads another file of that format."""
    if path is None:
        from importlib import resources

        text = resources.files("scalelab.injector.data").joinpath("real-week-pattern.json").read_text()
        return Pattern(levels=tuple(json.loads(text)), step_s=step_s, label="paper-real-week-v1")
    p = Path(path).expanduser()
    _check(p.is_file(), f"paper-real-week-v1: workload.path={str(p)!r} does not exist")
    try:
        levels = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"paper-real-week-v1: {p} is not JSON ({exc})") from None
    _check(isinstance(levels, list) and all(isinstance(x, int) for x in levels),
           f"paper-real-week-v1: {p} must hold a JSON list of integers")
    return Pattern(levels=tuple(levels), step_s=step_s, label="paper-real-week-v1")


@dataclass(frozen=True)
class Constant(Workload):
    users: int = 10
    duration: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "constant")
        _check(self.users >= 0, f"constant: users must be >= 0, got {self.users}")
        _check(self.duration > 0, f"constant: duration_s must be > 0, got {self.duration}")

    @property
    def duration_s(self) -> float:
        return self.duration

    def users_at(self, t: float) -> int:
        return int(self.users)


@dataclass(frozen=True)
class Step(Workload):
    before: int = 5
    after: int = 30
    at_s: float = 300.0
    duration: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "step")
        _check(min(self.before, self.after) >= 0, "step: before and after must be >= 0")
        _check(self.duration > 0, f"step: duration_s must be > 0, got {self.duration}")

    @property
    def duration_s(self) -> float:
        return self.duration

    def users_at(self, t: float) -> int:
        return int(self.before if t < self.at_s else self.after)


@dataclass(frozen=True)
class Ramp(Workload):
    start: int = 1
    end: int = 50
    duration: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "ramp")
        _check(min(self.start, self.end) >= 0, "ramp: start and end must be >= 0")
        _check(self.duration > 0, f"ramp: duration_s must be > 0, got {self.duration}")

    @property
    def duration_s(self) -> float:
        return self.duration

    def users_at(self, t: float) -> int:
        f = min(max(t / self.duration, 0.0), 1.0)
        return round(self.start + f * (self.end - self.start))


@dataclass(frozen=True)
class OpenConstant(Workload):
    rate_rps: float = 10.0
    duration: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "open-constant")
        object.__setattr__(self, "loop", "open")
        _check(self.rate_rps >= 0, f"open-constant: rate_rps must be >= 0, got {self.rate_rps}")
        _check(self.duration > 0, f"open-constant: duration_s must be > 0, got {self.duration}")

    @property
    def duration_s(self) -> float:
        return self.duration

    def rate_at(self, t: float) -> float:
        return float(self.rate_rps)


@dataclass(frozen=True)
class Trace(Workload):
    """Step-wise values from a CSV: ``t_s`` with ``users`` (closed) or ``rps`` (open)."""

    t_s: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    open_loop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "csv")
        object.__setattr__(self, "loop", "open" if self.open_loop else "closed")
        _check(len(self.t_s) > 0, "csv: the file has no rows")
        _check(all(b > a for a, b in zip(self.t_s, self.t_s[1:], strict=False)), "csv: t_s must increase")
        _check(min(self.values) >= 0, "csv: values must be >= 0")

    @property
    def duration_s(self) -> float:
        dt = self.t_s[-1] - self.t_s[-2] if len(self.t_s) > 1 else 1.0
        return self.t_s[-1] + dt

    def _at(self, t: float) -> float:
        k = int(np.searchsorted(self.t_s, t, side="right")) - 1
        return float(self.values[max(k, 0)])

    def users_at(self, t: float) -> int:
        if self.open_loop:
            return super().users_at(t)
        return round(self._at(t))

    def rate_at(self, t: float) -> float:
        if not self.open_loop:
            return super().rate_at(t)
        return self._at(t)


def read_csv_trace(path: str) -> Trace:
    """A :class:`Trace` from a CSV with a header ``t_s,users`` or ``t_s,rps``."""
    p = Path(path).expanduser()
    _check(p.is_file(), f"csv: workload.path={str(p)!r} does not exist")
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split(",")]
    _check(len(header) == 2 and header[0] == "t_s" and header[1] in ("users", "rps"),
           f"csv: {p} header must be 't_s,users' or 't_s,rps', got {lines[0]!r}")
    ts, vs = [], []
    for i, ln in enumerate(lines[1:], start=2):
        try:
            a, b = (float(x) for x in ln.split(","))
        except ValueError:
            raise WorkloadError(f"csv: {p} line {i} is not two numbers: {ln!r}") from None
        ts.append(a)
        vs.append(b)
    return Trace(t_s=tuple(ts), values=tuple(vs), open_loop=header[1] == "rps")


@dataclass(frozen=True)
class ExamSlot:
    """An exam: ``students`` start within ``start_spread_min`` minutes of ``day`` (0 =
    Monday) at ``hour``, work for ``minutes``, and leave over the last ``leave_spread_min``.
    ``announced``: whether the timetable publishes it (an unannounced one is load the
    calendar features never see)."""

    day: int
    hour: float
    students: int
    minutes: float = 90.0
    start_spread_min: float = 3.0
    leave_spread_min: float = 15.0
    announced: bool = True

    @property
    def start_s(self) -> float:
        """When it starts, s from Monday 00:00."""
        return (self.day * 24 + self.hour) * 3600.0

    def users_array(self, t: np.ndarray) -> np.ndarray:
        """:meth:`users_at` at every instant of ``t`` (s from Monday 00:00)."""
        t0 = self.start_s
        t1 = t0 + self.minutes * 60.0
        up = np.minimum((t - t0) / max(self.start_spread_min * 60.0, 1e-9), 1.0)
        down = np.minimum((t1 - t) / max(self.leave_spread_min * 60.0, 1e-9), 1.0)
        return np.where((t < t0) | (t >= t1), 0.0, self.students * np.minimum(up, down))

    def users_at(self, t: float) -> float:
        return float(self.users_array(np.array([t], dtype=float))[0])


@dataclass(frozen=True)
class Deadline:
    """A homework deadline at ``day`` (0 = Monday) ``hour``: working students grow as
    ``students * exp(-(deadline - t) / tau_h)`` over the last ``window_h`` hours.
    ``announced``: as for :class:`ExamSlot`."""

    day: int
    hour: float
    students: int
    tau_h: float = 4.0
    window_h: float = 48.0
    announced: bool = True

    def users_array(self, t: np.ndarray) -> np.ndarray:
        """:meth:`users_at` at every instant of ``t`` (s from Monday 00:00)."""
        dt = (self.day * 24 + self.hour) * 3600.0 - t
        inside = (dt >= 0) & (dt <= self.window_h * 3600.0)
        return np.where(inside, self.students * np.exp(-np.where(inside, dt, 0.0) / (self.tau_h * 3600.0)), 0.0)

    def users_at(self, t: float) -> float:
        return float(self.users_array(np.array([t], dtype=float))[0])


def _default_exams() -> tuple[ExamSlot, ...]:
    return (
        ExamSlot(day=1, hour=9.0, students=180, minutes=60),
        ExamSlot(day=1, hour=14.0, students=300, minutes=90),
        ExamSlot(day=3, hour=10.0, students=450, minutes=120),
    )


def _default_deadlines() -> tuple[Deadline, ...]:
    return (
        Deadline(day=2, hour=23.99, students=250, tau_h=4.0),
        Deadline(day=4, hour=17.0, students=150, tau_h=3.0),
    )


@dataclass(frozen=True)
class EvaluationWeek(Workload):
    """A university evaluation week, students as closed-loop users.

    users(t) = diurnal(t) + sum of exam slots + sum of deadline rushes, rounded.

    days: length of the run, days.
    start_day, start_hour: when t = 0 falls (day 0 = Monday, hour 0..24).
    diurnal_peak: students working at the daily peak, users.
    diurnal_peak_hour: hour of that peak (the trough is 12 h away), h.
    night_fraction: trough / peak of the diurnal baseline, ratio.
    exams: :class:`ExamSlot` s (default: Tue 09:00 180 students 60 min, Tue 14:00 300
        students 90 min, Thu 10:00 450 students 120 min; start within 3 min).
    deadlines: :class:`Deadline` s (default: Wed 23:59 250 students, tau 4 h; Fri 17:00
        150 students, tau 3 h).
    submit_every_s: ``(low, high)`` seconds between a student's answer and the next
        submission, uniform (default 60..240 s: "every few minutes").
    """

    days: float = 5.0
    start_day: int = 0
    start_hour: float = 0.0
    diurnal_peak: int = 40
    diurnal_peak_hour: float = 15.0
    night_fraction: float = 0.15
    exams: tuple[ExamSlot, ...] = field(default_factory=_default_exams)
    deadlines: tuple[Deadline, ...] = field(default_factory=_default_deadlines)
    submit_every_s: tuple[float, float] = (60.0, 240.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "evaluation-week-v1")
        _check(self.days > 0, f"evaluation-week-v1: days must be > 0, got {self.days}")
        _check(self.start_day >= 0, f"evaluation-week-v1: start_day must be >= 0, got {self.start_day}")
        _check(self.diurnal_peak >= 0, "evaluation-week-v1: diurnal_peak must be >= 0")
        _check(0 <= self.night_fraction <= 1, "evaluation-week-v1: night_fraction must be in [0, 1]")
        lo, hi = self.submit_every_s
        _check(0 <= lo <= hi, "evaluation-week-v1: submit_every_s must be (low, high), 0 <= low <= high")

    @property
    def duration_s(self) -> float:
        return self.days * 86400.0

    @property
    def think_s(self) -> tuple[float, float]:
        return (float(self.submit_every_s[0]), float(self.submit_every_s[1]))

    @property
    def offset_s(self) -> float:
        """Where t = 0 falls, s from Monday 00:00."""
        return self.start_day * 86400.0 + self.start_hour * 3600.0

    def exam_windows(self) -> tuple[tuple[float, float, float], ...]:
        return tuple(sorted((e.start_s - self.offset_s, e.start_s - self.offset_s + e.minutes * 60.0,
                             float(e.students)) for e in self.exams))

    def announced(self, size_noise: float = 0.0, start_noise_min: float = 0.0,
                  rng: np.random.Generator | None = None) -> EvaluationWeek:
        """The timetable the institution publishes: the same week with only the
        announced exams and deadlines, each one's size multiplied by ``U(1 - size_noise,
        1 + size_noise)`` and its start moved by ``U(-start_noise_min, +start_noise_min)``
        minutes (draws from ``rng``, needed when a noise is set)."""
        if (size_noise or start_noise_min) and rng is None:
            raise ValueError("a noisy timetable needs a generator")

        def noisy(event):
            if not (size_noise or start_noise_min):
                return event
            size = event.students * rng.uniform(1.0 - size_noise, 1.0 + size_noise)
            hour = event.hour + rng.uniform(-start_noise_min, start_noise_min) / 60.0
            return replace(event, students=max(0, round(size)), hour=hour)

        return replace(self, exams=tuple(noisy(e) for e in self.exams if e.announced),
                       deadlines=tuple(noisy(d) for d in self.deadlines if d.announced))

    def series(self, step_s: float, steps: int | None = None) -> np.ndarray:
        """:meth:`users_at` every ``step_s`` (as the base class), on arrays."""
        n = steps if steps is not None else math.ceil(self.duration_s / step_s)
        return self._users(np.arange(n) * float(step_s) + self.offset_s)

    def _users(self, t: np.ndarray) -> np.ndarray:
        """Students at the instants ``t`` (s from Monday 00:00), rounded."""
        h = (t / 3600.0) % 24.0
        shape = 0.5 * (1.0 + np.cos(2.0 * math.pi * (h - self.diurnal_peak_hour) / 24.0))
        base = self.diurnal_peak * (self.night_fraction + (1.0 - self.night_fraction) * shape)
        exams, deadlines = np.zeros(t.shape), np.zeros(t.shape)
        for e in self.exams:
            exams = exams + e.users_array(t)
        for d in self.deadlines:
            deadlines = deadlines + d.users_array(t)
        return np.round(base + exams + deadlines)

    def users_at(self, t: float) -> int:
        return int(self._users(np.array([t + self.offset_s], dtype=float))[0])


@dataclass(frozen=True)
class Compressed(Workload):
    """``inner`` with time sped up ``time_compression`` times and users scaled by
    ``user_scale``, so a week fits a live run on one machine:
    ``users_at(t) = round(user_scale * inner.users_at(t * time_compression))``, think
    times divided by ``time_compression`` (a student thinks 12 times faster in a week
    run 12 times faster), length divided by it. Any workload takes these two keys; the
    simulator and the live injector read the same wrapped workload."""

    inner: Workload = field(default_factory=lambda: Constant())
    time_compression: float = 1.0
    user_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.inner.name)
        object.__setattr__(self, "loop", self.inner.loop)
        _check(math.isfinite(self.time_compression) and self.time_compression > 0,
               f"{self.inner.name}: time_compression must be > 0, got {self.time_compression}")
        _check(math.isfinite(self.user_scale) and self.user_scale > 0,
               f"{self.inner.name}: user_scale must be > 0, got {self.user_scale}")

    @property
    def duration_s(self) -> float:
        return self.inner.duration_s / self.time_compression

    @property
    def think_s(self) -> tuple[float, float] | None:
        t = self.inner.think_s
        return None if t is None else (t[0] / self.time_compression, t[1] / self.time_compression)

    def users_at(self, t: float) -> int:
        return round(self.user_scale * self.inner.users_at(t * self.time_compression))

    def series(self, step_s: float, steps: int | None = None) -> np.ndarray:
        if self.loop != "closed" or self.time_compression != 1.0:
            return super().series(step_s, steps)
        n = steps if steps is not None else math.ceil(self.duration_s / step_s)
        return np.round(self.user_scale * self.inner.series(step_s, n))  # users_at, on arrays

    def rate_at(self, t: float) -> float:
        return self.user_scale * self.time_compression * self.inner.rate_at(t * self.time_compression)

    def exam_windows(self) -> tuple[tuple[float, float, float], ...]:
        c = self.time_compression
        return tuple((a / c, b / c, n * self.user_scale) for a, b, n in self.inner.exam_windows())

    def announced(self, size_noise: float = 0.0, start_noise_min: float = 0.0,
                  rng: np.random.Generator | None = None) -> Compressed | None:
        """The inner workload's timetable, compressed and scaled the same way."""
        inner = self.inner.announced(size_noise, start_noise_min, rng)
        return None if inner is None else replace(self, inner=inner)


def _evaluation_week(**params) -> EvaluationWeek:
    params = dict(params)
    if "exams" in params:
        params["exams"] = tuple(ExamSlot(**e) for e in params["exams"])
    if "deadlines" in params:
        params["deadlines"] = tuple(Deadline(**d) for d in params["deadlines"])
    if "submit_every_s" in params:
        params["submit_every_s"] = tuple(params["submit_every_s"])
    return EvaluationWeek(**params)


_evaluation_week.__wrapped__ = EvaluationWeek


def _with_duration(cls):
    def build(duration_s: float = 600.0, **params):
        return cls(duration=duration_s, **params)

    build.__wrapped__ = cls
    build.takes_duration = True
    return build


REGISTRY: dict[str, Callable[..., Workload]] = {
    "paper-sim-v1": paper_sim_v1,
    "paper-real-week-v1": paper_real_week_v1,
    "evaluation-week-v1": _evaluation_week,
    "constant": _with_duration(Constant),
    "step": _with_duration(Step),
    "ramp": _with_duration(Ramp),
    "open-constant": _with_duration(OpenConstant),
    "csv": lambda path=None: read_csv_trace(path) if path else _check(False, "csv needs workload.path"),
}


def make_workload(spec: Mapping | str) -> Workload:
    """Build a workload from ``{"kind": NAME, **params}`` (or just a name)."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    spec = dict(spec)
    kind = spec.pop("kind", None)
    factory = workload_factory(kind)
    compression, scale = spec.pop("time_compression", None), spec.pop("user_scale", None)
    known = workload_params(kind)
    for key in spec:
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(known)}"
            raise WorkloadError(f"workload {kind!r} has no parameter {key!r}; {hint} (and time_compression, "
                                f"user_scale for any workload)")
    try:
        workload = factory(**spec)
    except TypeError as exc:
        raise WorkloadError(f"workload {kind!r}: {exc}") from None
    except ValueError as exc:
        raise WorkloadError(f"workload {kind!r}: {exc}") from None
    if not all(hasattr(workload, a) for a in ("series", "duration_s", "loop")):
        raise WorkloadError(f"workload {kind!r} built a {type(workload).__name__}, not a Workload "
                            "(it needs series, duration_s and loop: see scalelab.injector.workloads.Workload)")
    if compression is None and scale is None:
        return workload
    try:
        return Compressed(inner=workload, time_compression=float(1.0 if compression is None else compression),
                          user_scale=float(1.0 if scale is None else scale))
    except (TypeError, ValueError):
        raise WorkloadError(f"workload {kind!r}: time_compression and user_scale must be numbers, got "
                            f"{compression!r} and {scale!r}") from None


def workload_names() -> list[str]:
    """Shipped workload kinds and installed plug-ins (``scalelab.workloads``), sorted."""
    return sorted({*REGISTRY, *plugins.entry_points("workload")})


def workload_factory(kind) -> Callable:
    """What builds the workload ``kind``: shipped, ``package.module:Name`` or an
    installed entry point of ``scalelab.workloads``."""
    if kind in REGISTRY:
        return REGISTRY[kind]
    if plugins.is_import_path(kind):
        return plugins.load_object(kind, "workload")
    factory = plugins.load_entry_point(str(kind), "workload") if isinstance(kind, str) else None
    if factory is None:
        close = difflib.get_close_matches(str(kind), workload_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {workload_names()}"
        raise WorkloadError(f"workload.kind={kind!r} is not a workload{hint} (or name your own as "
                            "'package.module:Name')")
    return factory


def workload_params(kind: str) -> list[str] | None:
    """The parameter names a workload kind accepts (for error messages and docs); None
    when its factory takes anything."""
    import inspect

    fn = workload_factory(kind)
    target = getattr(fn, "__wrapped__", None)
    if target is not None:
        names = [f.name for f in fields(target) if f.init and f.name not in ("name", "duration")]
        return [*names, "duration_s"] if getattr(fn, "takes_duration", False) else names
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]
