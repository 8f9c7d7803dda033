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

Topics with a set number of partitions (the jobs architecture's ``jobs`` and ``results``):
the mock cluster answers no CreateTopics request (an admin client's request times out) and
creates every topic it is asked about with 4 partitions. So a broker started with
``topics`` is made through librdkafka's own mock API, called with ctypes on the library
confluent-kafka loaded (``rd_kafka_mock_cluster_new``, ``rd_kafka_mock_topic_create``), which
creates them before the address is printed (``--topic jobs:12``).

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


def _librdkafka():
    """The librdkafka that confluent-kafka loaded, with the mock API's signatures."""
    import ctypes

    import confluent_kafka.cimpl  # noqa: F401  (loads the library)

    with open("/proc/self/maps") as maps:
        path = next((line.split()[-1] for line in maps if "librdkafka" in line), None)
    if path is None:
        raise KafkaError("cannot find the librdkafka confluent-kafka loaded (in /proc/self/maps)")
    lib = ctypes.CDLL(path)
    p, i = ctypes.c_void_p, ctypes.c_int
    for name, res, args in (("rd_kafka_conf_new", p, []), ("rd_kafka_conf_set", i, [p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
                            ("rd_kafka_new", p, [i, p, ctypes.c_char_p, ctypes.c_size_t]),
                            ("rd_kafka_mock_cluster_new", p, [p, i]),
                            ("rd_kafka_mock_cluster_bootstraps", ctypes.c_char_p, [p]),
                            ("rd_kafka_mock_topic_create", i, [p, ctypes.c_char_p, i, i]),
                            ("rd_kafka_mock_cluster_destroy", None, [p]), ("rd_kafka_destroy", None, [p])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


class EmbeddedKafka:
    """librdkafka's mock cluster with ``brokers`` brokers, in this process; ``topics``
    (name -> partitions) are created before :meth:`start` returns."""

    def __init__(self, brokers: int = 1, timeout_s: float = 10.0, topics: dict[str, int] | None = None) -> None:
        self.brokers, self.timeout_s = brokers, timeout_s
        self.topics = dict(topics or {})
        self._producer = None
        self._native = None  # (lib, rk, mock cluster) when made through the mock API
        self.bootstrap: str | None = None

    def _start_native(self) -> str:
        import ctypes

        lib = _librdkafka()
        conf, err = lib.rd_kafka_conf_new(), ctypes.create_string_buffer(512)
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", err, 512)  # no notice about bootstrap.servers
        rk = lib.rd_kafka_new(0, conf, err, 512)
        if not rk:
            raise KafkaError(f"librdkafka could not make a client for the mock cluster: {err.value.decode()}")
        cluster = lib.rd_kafka_mock_cluster_new(rk, self.brokers)
        if not cluster:
            lib.rd_kafka_destroy(rk)
            raise KafkaError("librdkafka's mock cluster did not start")
        self._native = (lib, rk, cluster)
        for name, partitions in self.topics.items():
            code = lib.rd_kafka_mock_topic_create(cluster, name.encode(), int(partitions), 1)
            if code != 0:
                self.stop()
                raise KafkaError(f"the mock cluster did not create topic {name!r} with {partitions} partitions "
                                 f"(error {code})")
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()
        return self.bootstrap

    def start(self) -> str:
        """Start the cluster; returns its bootstrap address (``127.0.0.1:PORT``)."""
        if self.topics:
            return self._start_native()
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
        if self._native is not None:
            lib, rk, cluster = self._native
            self._native = None
            lib.rd_kafka_mock_cluster_destroy(cluster)
            lib.rd_kafka_destroy(rk)


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


def serve(brokers: int = 1, seconds: float | None = None, topics: dict[str, int] | None = None) -> None:
    """Start the cluster (with ``topics``: name -> partitions), print its address, serve
    until SIGTERM/SIGINT or ``seconds``. Meanwhile the client's log queue is served (its
    lines are dropped), so it never grows."""
    kafka = EmbeddedKafka(brokers, topics=topics)
    print(kafka.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    end = math.inf if seconds is None else time.monotonic() + seconds
    while not stop.wait(min(0.5, max(end - time.monotonic(), 0.0))) and time.monotonic() < end:
        kafka.poll(0)
    kafka.stop()


def topic_args(topics: dict[str, int]) -> list[str]:
    """The command-line arguments that create ``topics`` (name -> partitions)."""
    return [a for name, n in topics.items() for a in ("--topic", f"{name}:{int(n)}")]


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m scalelab.orchestrator.kafka_embedded", description=__doc__.split("\n")[0])
    ap.add_argument("seconds", nargs="?", type=float, help="serve this long (default: until SIGTERM)")
    ap.add_argument("--topic", action="append", default=[], metavar="NAME:PARTITIONS",
                    help="create this topic with this many partitions before serving (repeatable)")
    args = ap.parse_args(argv)
    topics = {}
    for spec in args.topic:
        name, _, n = spec.rpartition(":")
        if not name or not n.isdigit() or int(n) < 1:
            ap.error(f"--topic {spec!r}: give NAME:PARTITIONS, PARTITIONS >= 1")
        topics[name] = int(n)
    serve(seconds=args.seconds, topics=topics)


if __name__ == "__main__":
    main()
