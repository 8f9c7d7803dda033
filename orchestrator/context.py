"""The paper's context vector, built from raw signals.

Two raw signals feed it (the same in the simulator and on the live stack):

* **spans**: one per request, with its start instant and duration (Zipkin's
  ``timestamp`` and ``duration``), kept in a span buffer;
* **pod samples**: one per pod per scrape, CPU usage (cores) and memory working set (MiB)
  with the pod's requests and limits, reduced to a mean over pods and kept in a metric
  buffer.

:class:`ContextBuilder` turns them into a :class:`Context` (paper, section 3):
``[replicas, p95_ms, rps, cpu_request_ratio, cpu_limit_ratio, mem_request_ratio,
mem_limit_ratio]``.

Two ways of counting, chosen by :attr:`ContextSettings.rps_mode`:

``window`` (the default, correct)
    every span that completed inside the last ``window_s`` seconds counts, however many;
    ``rps = count / window_s``; p95 over the same spans.
``paper`` (what the paper's code did)
    only the last ``span_buffer`` spans are kept; of those, the spans whose start lies in
    the last ``window_s`` seconds count; timestamps are truncated to whole seconds and
    ``rps = count / (max ts - min ts)`` (``count`` if they all fall in one second).
    Once the buffer covers less than the window (above ``span_buffer / window_s``
    requests/s) p95 only sees the newest spans and RPS carries a ±1 s truncation error
    over a short time base.

An empty window is not an error. With requests in flight (overload), their ages are
taken as censored latencies, so overload shows as latency; with none, p95, mean and
RPS are 0. ``spans`` is the count of completed requests either way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from scalelab.errors import UserError

FIELDS = (
    "replicas",
    "p95_ms",
    "rps",
    "cpu_request_ratio",
    "cpu_limit_ratio",
    "mem_request_ratio",
    "mem_limit_ratio",
)
RPS_MODES = ("window", "paper")


@dataclass(frozen=True)
class Spans:
    """A batch of server spans, arrays of shape ``(n,)``.

    start_s: span start (Zipkin ``timestamp``), s. duration_ms: span duration, ms.
    replica: index of the serving replica (-1 if unknown). error: failed or timed out.
    """

    start_s: np.ndarray
    duration_ms: np.ndarray
    replica: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if self.start_s.shape != self.duration_ms.shape:
            raise ValueError("Spans: start_s and duration_ms must have the same shape")

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    @property
    def end_s(self) -> np.ndarray:
        """Completion instants, s."""
        return self.start_s + self.duration_ms / 1000.0

    @staticmethod
    def empty() -> Spans:
        return Spans(np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class PodSamples:
    """One scrape: per-pod arrays of shape ``(pods,)``.

    cpu_cores: CPU usage rate, cores. memory_mib: working set, MiB. The request and limit
    arrays are the pod's resources (cores, MiB).
    """

    cpu_cores: np.ndarray
    memory_mib: np.ndarray
    cpu_request: np.ndarray
    cpu_limit: np.ndarray
    memory_request_mib: np.ndarray
    memory_limit_mib: np.ndarray

    def ratios(self) -> np.ndarray | None:
        """Mean over pods of usage / request and usage / limit, shape ``(4,)``: CPU over
        request, CPU over limit, memory over request, memory over limit; None if no pod."""
        n = self.cpu_cores.shape[0]
        if n == 0:
            return None
        return np.array(
            [
                (self.cpu_cores / self.cpu_request).sum(),
                (self.cpu_cores / self.cpu_limit).sum(),
                (self.memory_mib / self.memory_request_mib).sum(),
                (self.memory_mib / self.memory_limit_mib).sum(),
            ]
        ) / n


@dataclass(frozen=True)
class ContextSettings:
    """Buffers and window.

    span_buffer: spans kept (``paper`` mode; None = as many as the window holds).
    metric_buffer: pod-sample rows averaged, one row per scrape (5 s).
    window_s: time window of spans, s.
    rps_mode: ``window`` (correct) or ``paper`` (the paper's formula).
    """

    span_buffer: int | None = None
    metric_buffer: int = 10
    window_s: float = 10.0
    rps_mode: str = "window"

    def __post_init__(self) -> None:
        if self.rps_mode not in RPS_MODES:
            raise UserError(f"context.rps_mode={self.rps_mode!r} is not one of {RPS_MODES}")
        if self.span_buffer is not None and self.span_buffer < 1:
            raise UserError(f"context.span_buffer must be >= 1, got {self.span_buffer}")
        if self.metric_buffer < 1:
            raise UserError(f"context.metric_buffer must be >= 1, got {self.metric_buffer}")
        if self.window_s <= 0:
            raise UserError(f"context.window_s must be > 0, got {self.window_s}")
        if self.rps_mode == "paper" and self.span_buffer is None:
            raise UserError("context.rps_mode='paper' needs a span_buffer (the paper: 4000)")


#: The paper's code: 4000 spans, 12 samples, 12 s, RPS = count / (max ts - min ts).
PAPER = ContextSettings(span_buffer=4000, metric_buffer=12, window_s=12.0, rps_mode="paper")
#: The paper's text: 4000 spans, 10 samples, 10 s.
PAPER_DOC = ContextSettings(span_buffer=4000, metric_buffer=10, window_s=10.0, rps_mode="paper")
#: Correct counting with the documented sizes.
DEFAULT = ContextSettings()
PRESETS = {"default": DEFAULT, "paper": PAPER, "paper-doc": PAPER_DOC}


@dataclass(frozen=True)
class Context:
    """What the agent sees at one step (units in the field names)."""

    replicas: int
    p95_ms: float
    rps: float
    cpu_request_ratio: float
    cpu_limit_ratio: float
    mem_request_ratio: float
    mem_limit_ratio: float
    mean_ms: float = 0.0
    spans: int = 0
    cpu_request_now: float = 0.0  # the newest scrape's CPU / request (what metrics-server shows)

    def vector(self) -> np.ndarray:
        """The paper's 7 features in order, shape ``(7,)``, float64 (a fresh array)."""
        return np.array(
            (self.replicas, self.p95_ms, self.rps, self.cpu_request_ratio, self.cpu_limit_ratio,
             self.mem_request_ratio, self.mem_limit_ratio),
            dtype=float,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Context:
        """The context of a ``state`` message (or :meth:`to_dict`); extra keys are
        ignored, a missing feature raises ``KeyError`` naming it.

        >>> Context.from_dict({"replicas": 2, "p95_ms": 80.0, "rps": 10.0, "cpu_request_ratio": 0.5,
        ...                    "cpu_limit_ratio": 0.5, "mem_request_ratio": 0.1, "mem_limit_ratio": 0.1,
        ...                    "gap": True}).replicas
        2
        """
        missing = [k for k in FIELDS if k not in data]
        if missing:
            raise KeyError(f"context has no {', '.join(missing)}")
        optional = [f.name for f in fields(cls) if f.name not in FIELDS]  # those with defaults
        return cls(int(data["replicas"]), *(float(data[k]) for k in FIELDS[1:]),
                   **{k: type(getattr(cls, k))(data[k]) for k in optional if k in data})



#: The calendar's features, in the order of :meth:`CalendarFeatures.vector` (computed
#: from the announced timetable alone: :mod:`scalelab.injector.calendar`).
CALENDAR_FEATURES = ("expected_now", "expected_5min", "expected_15min", "peak_15min", "minutes_to_exam")


@dataclass(frozen=True)
class CalendarFeatures:
    """What the announced timetable says at one step (students = users; minutes):
    expected students now, in 5 and in 15 minutes, the most over the next 15 minutes,
    and the minutes to the next announced exam start (capped at 240)."""

    expected_now: float
    expected_5min: float
    expected_15min: float
    peak_15min: float
    minutes_to_exam: float

    def vector(self) -> np.ndarray:
        """The features in :data:`CALENDAR_FEATURES` order, shape ``(5,)``."""
        return np.array([getattr(self, f) for f in CALENDAR_FEATURES], dtype=float)

    @classmethod
    def from_vector(cls, row) -> CalendarFeatures:
        return cls(*(float(x) for x in row))


@dataclass(frozen=True)
class Timetable:
    """The announced exams as data a policy can read: ``exams`` is ``((start_s, end_s,
    students), ...)`` on the workload's clock (s from its start; users), sorted."""

    exams: tuple[tuple[float, float, float], ...] = ()

    def exam_windows(self) -> tuple[tuple[float, float, float], ...]:
        return self.exams

    def to_dict(self) -> dict:
        return {"exams": [list(e) for e in self.exams]}

    @classmethod
    def from_dict(cls, data: dict) -> Timetable:
        return cls(tuple(sorted((float(a), float(b), float(n)) for a, b, n in data.get("exams", ()))))


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) by partial sorting.

    >>> percentile(np.arange(1.0, 101.0), 95)
    95.05
    """
    n = values.shape[0]
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi)) if hi != lo else np.partition(values, lo)
    frac = pos - lo
    return float(part[lo] + (part[hi] - part[lo]) * frac)


def censored_p95(done_ms: np.ndarray, ages_ms: np.ndarray) -> tuple[float, int]:
    """The p95 of what completed in a window, ms; when nothing did, the p95 of the ages of
    what is still waiting or running (a censored lower bound: the empty-window rule), with
    how many ages it took; ``(0.0, 0)`` when there is neither.

    >>> censored_p95(np.array([100.0, 200.0]), np.array([9000.0]))
    (195.0, 0)
    >>> censored_p95(np.zeros(0), np.array([4000.0, 5000.0]))
    (4950.0, 2)
    """
    if done_ms.shape[0]:
        return percentile(done_ms, 95.0), 0
    if ages_ms.shape[0]:
        return percentile(ages_ms, 95.0), int(ages_ms.shape[0])
    return 0.0, 0


class ClientLatencies:
    """What the load generator measured, request by request: ``(start s, end s,
    response ms)``, kept for ``keep_s``. :meth:`p95` takes them over the window the
    context takes its spans over -- the same key (start in ``paper`` mode, end
    otherwise), the same bounds ``(now - window_s, now]`` -- so the spans' p95 and the
    users' are comparable step by step (the span buffer's count cap is not applied)."""

    def __init__(self, keep_s: float = 600.0) -> None:
        self.keep_s = float(keep_s)
        self._chunks: deque[np.ndarray] = deque()  # rows of (start_s, end_s, ms)

    def add(self, samples: np.ndarray) -> None:
        """Add rows of ``(start_s, end_s, response_ms)``; drops what is older than
        ``keep_s`` before the newest end."""
        rows = np.asarray(samples, float).reshape(-1, 3)
        if rows.shape[0] == 0:
            return
        self._chunks.append(rows)
        newest = max(float(c[:, 1].max()) for c in self._chunks)
        while self._chunks and float(self._chunks[0][:, 1].max()) < newest - self.keep_s:
            self._chunks.popleft()

    def p95(self, now_s: float, settings: ContextSettings) -> tuple[float | None, int]:
        """The p95 (ms, :func:`percentile`) of the requests inside the context's window at
        ``now_s`` and how many there were; None when there were none."""
        if not self._chunks:
            return None, 0
        rows = np.concatenate(list(self._chunks))
        key = rows[:, 0] if settings.rps_mode == "paper" else rows[:, 1]
        inside = rows[(key > now_s - settings.window_s) & (key <= now_s), 2]
        return (percentile(inside, 95.0) if inside.shape[0] else None), int(inside.shape[0])


class ContextBuilder:
    """Keeps the buffers and builds a :class:`Context` on demand."""

    def __init__(self, settings: ContextSettings = DEFAULT) -> None:
        self.settings = settings
        self._chunks: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (key_s, duration_ms)
        self._metrics: deque[np.ndarray] = deque()
        self._metric_sum = np.zeros(4)
        self._buffered = 0

    def add_spans(self, spans: Spans) -> None:
        """Add a batch of spans, oldest first."""
        if len(spans) == 0:
            return
        key = spans.start_s if self.settings.rps_mode == "paper" else spans.end_s
        self._chunks.append((np.asarray(key, float), np.asarray(spans.duration_ms, float)))
        self._buffered += len(spans)
        cap = self.settings.span_buffer
        if cap is not None:
            while self._buffered - len(self._chunks[0][0]) >= cap:
                self._buffered -= len(self._chunks.popleft()[0])

    def add_pod_samples(self, pods: PodSamples) -> None:
        """Add one scrape; a scrape with no pod adds nothing."""
        row = pods.ratios()
        if row is not None:
            self._metrics.append(row)
            self._metric_sum = self._metric_sum + row
            if len(self._metrics) > self.settings.metric_buffer:
                self._metric_sum = self._metric_sum - self._metrics.popleft()

    def _window(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        lo = now_s - s.window_s
        if s.rps_mode == "window":
            while self._chunks and (self._chunks[0][0].shape[0] == 0 or self._chunks[0][0].max() <= lo):
                self._buffered -= len(self._chunks.popleft()[0])
        if not self._chunks:
            return np.zeros(0), np.zeros(0)
        key = np.concatenate([c[0] for c in self._chunks])
        dur = np.concatenate([c[1] for c in self._chunks])
        if s.span_buffer is not None and key.shape[0] > s.span_buffer:
            key, dur = key[-s.span_buffer :], dur[-s.span_buffer :]
        inside = (key > lo) & (key <= now_s)
        return key[inside], dur[inside]

    def build(self, now_s: float, replicas: int, in_flight_ages_ms: np.ndarray | None = None) -> Context:
        """The context at ``now_s`` for ``replicas`` ready replicas.

        ``in_flight_ages_ms``: the ages of the requests in flight at ``now_s``. When no
        request completed in the window, an empty window is not a met SLO: p95 and mean
        are taken over these ages as censored latencies (``spans`` stays 0)."""
        key, dur = self._window(now_s)
        n = int(dur.shape[0])
        if n == 0 and in_flight_ages_ms is not None and in_flight_ages_ms.shape[0] > 0:
            p95 = percentile(np.asarray(in_flight_ages_ms, float), 95.0)
            mean = float(np.mean(in_flight_ages_ms))
            rps = 0.0
        elif n == 0:
            p95 = mean = rps = 0.0
        else:
            p95 = percentile(dur, 95.0)
            mean = float(dur.sum()) / n
            if self.settings.rps_mode == "window":
                rps = n / self.settings.window_s
            else:
                secs = np.floor(key)
                span = float(secs.max() - secs.min())
                rps = n / span if span > 0 else float(n)
        ratios = self._metric_sum / len(self._metrics) if self._metrics else np.zeros(4)
        return Context(
            replicas=int(replicas),
            p95_ms=p95,
            rps=rps,
            cpu_request_ratio=float(ratios[0]),
            cpu_limit_ratio=float(ratios[1]),
            mem_request_ratio=float(ratios[2]),
            mem_limit_ratio=float(ratios[3]),
            mean_ms=mean,
            spans=n,
            cpu_request_now=float(self._metrics[-1][0]) if self._metrics else 0.0,
        )
