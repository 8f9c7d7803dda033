"""The Zipkin collector: spans from Kafka topic ``zipkin`` into the context's span buffer.

Messages are Zipkin v2 JSON span lists (the Zipkin Kafka transport's format). Only
SERVER spans whose ``localEndpoint.serviceName`` is watched are kept; ``timestamp`` and
``duration`` (µs) become seconds and milliseconds. A malformed message or span is
counted and skipped, never fatal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from scalelab.orchestrator.context import ContextBuilder, Spans


@dataclass
class ZipkinStats:
    messages: int = 0
    spans: int = 0
    kept: int = 0
    malformed_messages: int = 0
    malformed_spans: int = 0


def parse_spans(payload: bytes, services: frozenset[str], stats: ZipkinStats) -> Spans:
    """The watched SERVER spans of one message, as :class:`Spans` (may be empty)."""
    stats.messages += 1
    try:
        items = json.loads(payload)
        if not isinstance(items, list):
            raise ValueError("not a list")
    except (ValueError, UnicodeDecodeError):
        stats.malformed_messages += 1
        return Spans.empty()
    start, dur = [], []
    for span in items:
        stats.spans += 1
        try:
            if "traceId" not in span or "id" not in span:  # required by Zipkin v2
                raise KeyError("id")
            if span.get("kind") != "SERVER":
                continue
            if services and span["localEndpoint"]["serviceName"] not in services:
                continue
            ts, d = float(span["timestamp"]), float(span["duration"])
            if not (ts > 0 and d >= 0):
                raise ValueError
        except (AttributeError, KeyError, TypeError, ValueError):
            stats.malformed_spans += 1
            continue
        start.append(ts / 1e6)
        dur.append(d / 1e3)
    stats.kept += len(start)
    return Spans(start_s=np.array(start), duration_ms=np.array(dur))


class ZipkinCollector:
    """Consumes ``topic`` on its own thread and feeds ``builder`` (under ``lock``)."""

    def __init__(self, bootstrap: str, builder: ContextBuilder, lock: threading.Lock,
                 services: Iterable[str] = ("sandbox",), topic: str = "zipkin", group: str = "scalelab-orchestrator-spans",
                 api_version: tuple[int, int] | None = (2, 3), offset_reset: str = "latest") -> None:
        self.bootstrap, self.builder, self.lock, self.topic, self.group = bootstrap, builder, lock, topic, group
        self.offset_reset = offset_reset
        self.services = frozenset(services)
        self.api_version = api_version
        self.stats = ZipkinStats()
        self.last_span_at: float | None = None  # wall-clock time of the last kept span
        self.latest_end_s: float | None = None  # the latest end (epoch s) of a kept span
        self.assigned = threading.Event()  # set once the consumer holds its partitions (readiness)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ingest(self, payload: bytes) -> int:
        spans = parse_spans(payload, self.services, self.stats)
        if len(spans):
            with self.lock:
                self.builder.add_spans(spans)
            self.last_span_at = time.time()
            end = float(spans.end_s.max())
            self.latest_end_s = end if self.latest_end_s is None else max(self.latest_end_s, end)
        return len(spans)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zipkin-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import KafkaConsumer

        kwargs = {"api_version": self.api_version} if self.api_version else {}
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                                             auto_offset_reset=self.offset_reset, enable_auto_commit=True,
                                             metadata_max_age_ms=5000, **kwargs)
                for records in consumer.poll(timeout_ms=200, max_records=1000).values():
                    for rec in records:
                        self.ingest(rec.value)
                if not self.assigned.is_set() and consumer.assignment():
                    self.assigned.set()
            except Exception:  # broker away: wait and reconnect, the buffer keeps what it has
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:
                        pass
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
