"""An embedded Kafka-protocol broker for one machine: librdkafka's mock cluster.

``confluent-kafka`` starts it inside this process when a client is configured with
``test.mock.num.brokers``; librdkafka logs the mock cluster's bootstrap address (a notice,
"Mock cluster enabled: ... replaced with ADDRESS"), which :class:`EmbeddedKafka` reads.
kafka-python talks to it with ``api_version=(2, 3)``. The broker lives as long as the
process: ``python -m scalelab.orchestrator.kafka_embedded`` (or ``scalelab kafka``) prints
the address and serves until SIGTERM or SIGINT, which end it at once.

No debug logging: with ``debug: mock`` librdkafka logs every request the broker serves,
and those lines wait in the client's queue until it is polled. A broker that served a
live run for minutes then spent longer than the stack's 10-s grace period logging them
after SIGTERM (10 000 produce requests: 9 s), and slowed down as the queue grew.

librdkafka picks the mock broker's port itself. To give a restarted broker the same
address, as a real broker has, :func:`fixed_port_env` preloads a tiny shim
(``native/fixed_port.c``, compiled once with the system's C compiler) that turns the
broker's ``bind`` to port 0 into a bind to the port we chose.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from scalelab.errors import PermanentError

ADDRESS = re.compile(r"Mock cluster enabled: .* replaced with (\S+)")


class KafkaError(PermanentError, RuntimeError):
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
        self._producer = Producer({"test.mock.num.brokers": self.brokers, "logger": log})
        end = time.monotonic() + self.timeout_s
        while not capture.ready.is_set() and time.monotonic() < end:
            self._producer.poll(0.05)
        if capture.address is None:
            raise KafkaError("librdkafka's mock cluster did not report its address (confluent-kafka too old?)")
        self.bootstrap = capture.address
        return self.bootstrap

    def poll(self, timeout_s: float = 0) -> None:
        """Serve the client's queue (its log lines), waiting up to ``timeout_s``."""
        if self._producer is not None:
            self._producer.poll(timeout_s)

    def stop(self) -> None:
        if self._producer is not None:
            self._producer.flush(1)
            self._producer = None


SHIM_SOURCE = Path(__file__).parent / "native" / "fixed_port.c"


def _shim_library() -> Path:
    """Compile the fixed-port shim once per source version, into a user cache."""
    src = SHIM_SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scalelab"
    lib = cache / f"fixed_port-{hashlib.sha256(src).hexdigest()[:12]}.so"
    if lib.exists():
        return lib
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise KafkaError("a fixed Kafka port needs a C compiler (cc or gcc) to build native/fixed_port.c")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(SHIM_SOURCE), "-ldl"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise KafkaError(f"building the fixed-port shim failed: {done.stderr.strip()}")
    tmp.replace(lib)
    return lib


def fixed_port_env(port: int, env: dict | None = None) -> dict:
    """The environment that makes ``python -m scalelab.orchestrator.kafka_embedded`` listen on
    ``127.0.0.1:port``."""
    env = dict(os.environ if env is None else env)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{_shim_library()}{' ' + preload if preload else ''}"
    env["SCALELAB_FIXED_PORT"] = str(int(port))
    return env


def serve(brokers: int = 1, seconds: float | None = None) -> None:
    """Start the cluster, print its address, serve until SIGTERM/SIGINT or ``seconds``.
    Meanwhile the client's log queue is served (its lines are dropped), so it never grows."""
    kafka = EmbeddedKafka(brokers)
    print(kafka.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    end = math.inf if seconds is None else time.monotonic() + seconds
    while not stop.wait(min(0.5, max(end - time.monotonic(), 0.0))) and time.monotonic() < end:
        kafka.poll(0)
    kafka.stop()


if __name__ == "__main__":
    serve(seconds=float(sys.argv[1]) if len(sys.argv) > 1 else None)
