"""An embedded Kafka-protocol broker for one machine: librdkafka's mock cluster.

``confluent-kafka`` starts it inside this process when a client is configured with
``test.mock.num.brokers``; librdkafka logs the mock cluster's bootstrap address, which
:class:`EmbeddedKafka` reads. kafka-python talks to it with ``api_version=(2, 3)``.
The broker lives as long as the process: ``python -m orchestrator.kafka_embedded``
(or ``scalelab kafka``) prints the address and serves until stopped.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
import time

ADDRESS = re.compile(r"bootstrap\.servers=(\S+)")


class KafkaError(RuntimeError):
    """The embedded broker could not start."""


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.address: str | None = None
        self.ready = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        m = ADDRESS.search(record.getMessage())
        if m and self.address is None:
            self.address = m.group(1)
            self.ready.set()


class EmbeddedKafka:
    """librdkafka's mock cluster with ``brokers`` brokers, in this process."""

    def __init__(self, brokers: int = 1, timeout_s: float = 10.0) -> None:
        self.brokers, self.timeout_s = brokers, timeout_s
        self._producer = None
        self.bootstrap: str | None = None

    def start(self) -> str:
        """Start the cluster; returns its bootstrap address (``127.0.0.1:PORT``)."""
        from confluent_kafka import Producer

        capture = _Capture()
        log = logging.getLogger(f"scalelab.kafka.{id(self)}")
        log.propagate = False
        log.addHandler(capture)
        log.setLevel(logging.DEBUG)
        self._producer = Producer({"test.mock.num.brokers": self.brokers, "logger": log, "debug": "mock",
                                   "log_level": 7})
        end = time.monotonic() + self.timeout_s
        while not capture.ready.is_set() and time.monotonic() < end:
            self._producer.poll(0.05)
        if capture.address is None:
            raise KafkaError("librdkafka's mock cluster did not report its address (confluent-kafka too old?)")
        self.bootstrap = capture.address
        return self.bootstrap

    def stop(self) -> None:
        if self._producer is not None:
            self._producer.flush(1)
            self._producer = None


def serve(brokers: int = 1, seconds: float | None = None) -> None:
    """Start the cluster, print its address, serve until SIGTERM/SIGINT or ``seconds``."""
    kafka = EmbeddedKafka(brokers)
    print(kafka.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(seconds)
    kafka.stop()


if __name__ == "__main__":
    serve(seconds=float(sys.argv[1]) if len(sys.argv) > 1 else None)
