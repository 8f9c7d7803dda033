"""Zipkin v2 spans for every request, shipped to Kafka topic ``zipkin`` off the request path.

Spans are queued (bounded, never blocking the request) and a background thread sends
them in batches, one JSON list of spans per Kafka message, as Zipkin's Kafka transport
does. When the broker is down or the queue is full, spans are dropped and counted;
requests never wait for Kafka.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time

TOPIC = "zipkin"


def make_span(service: str, name: str, start_us: int, duration_us: int, route: str, status: int,
              ip: str = "127.0.0.1", port: int = 0) -> dict:
    """A Zipkin v2 SERVER span (timestamps and durations in microseconds)."""
    trace = os.urandom(8).hex()
    return {
        "traceId": trace,
        "id": trace,
        "kind": "SERVER",
        "name": name,
        "timestamp": int(start_us),
        "duration": max(int(duration_us), 1),
        "localEndpoint": {"serviceName": service, "ipv4": ip, "port": port},
        "tags": {"http.route": route, "http.status_code": str(status), "error": "true"} if status >= 500
        else {"http.route": route, "http.status_code": str(status)},
    }


class SpanExporter:
    """Batches spans to Kafka with kafka-python; ``bootstrap=None`` keeps them local
    (``sent`` stays 0, they are counted as dropped)."""

    def __init__(self, bootstrap: str | None, topic: str = TOPIC, batch: int = 100, linger_s: float = 0.2,
                 capacity: int = 100_000, api_version: tuple[int, int] | None = (2, 3)) -> None:
        self.bootstrap, self.topic, self.batch, self.linger = bootstrap, topic, batch, linger_s
        self.api_version = api_version
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.sent = 0
        self.dropped = 0
        self.send_errors = 0
        self._producer = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="span-exporter", daemon=True)
        self._thread.start()

    def submit(self, span: dict) -> None:
        """Queue a span; never blocks (a full queue drops it)."""
        try:
            self.queue.put_nowait(span)
        except queue.Full:
            self.dropped += 1

    def _connect(self):
        if self._producer is None and self.bootstrap:
            from kafka import KafkaProducer

            kwargs = {"api_version": self.api_version} if self.api_version else {}
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks=1,
                                           request_timeout_ms=5000, max_block_ms=2000, **kwargs)
        return self._producer

    def _loop(self) -> None:
        while not self._stop.is_set():
            spans = []
            deadline = time.monotonic() + self.linger
            while len(spans) < self.batch:
                try:
                    spans.append(self.queue.get(timeout=max(deadline - time.monotonic(), 0.001)))
                except queue.Empty:
                    break
            if spans:
                self._send(spans)

    def _send(self, spans: list[dict]) -> None:
        try:
            producer = self._connect()
        except Exception:  # broker unreachable: drop, count, retry connecting later
            producer = None
        if producer is None:
            self.dropped += len(spans)
            if self.bootstrap:
                time.sleep(0.5)
            return
        try:
            producer.send(self.topic, json.dumps(spans).encode()).add_errback(self._failed, len(spans))
            self.sent += len(spans)
        except Exception:
            self.send_errors += 1
            self.dropped += len(spans)

    def _failed(self, n: int, _exc) -> None:
        self.sent -= n
        self.dropped += n

    def flush(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < end:
            time.sleep(0.01)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=max(end - time.monotonic(), 0.1))
            except Exception:
                pass

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._thread.join(timeout=2)
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                pass
