"""The injector master: Locust in library mode, obeying ``locust_order`` from Kafka and
publishing aggregated statistics on ``locust`` every ``report_s`` seconds.

Orders (the paper's): ``set_user_level`` (``level``, ``spawn_rate``, ``reset_stats``),
``step_user_level`` (``level`` ± k), ``reset`` (statistics), ``stop`` (all users); and
``set_task`` (what users do: ``task`` ``compute``, ``student`` or ``job``, ``think_s``, ``cpu``,
``corpus``, ``seed``; :class:`scalelab.injector.locustfile.Task`), which the experiment sends
before its first step. Malformed orders are counted and ignored.

Each statistics message carries ``samples``: every request completed since the last one,
as ``[start_s, end_s, response_ms]`` (wall clock), so that the orchestrator computes the
users' p95 over the very window and instant it computes the spans' p95 (Locust's own
"current" percentile is a fixed ~10-s window, published late).

With ``workers=N`` it is a Locust master that starts N worker processes
(``python -m scalelab.injector --worker``) on loopback and spreads the users over them, for load
that one process (one core) cannot make; statistics are the master's aggregate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gevent
import gevent.event
from locust.env import Environment
from locust.runners import MasterRunner

from scalelab.injector import locustfile
from scalelab.injector.locustfile import USER_CLASSES


class InjectorMaster:
    def __init__(self, host: str, bootstrap: str | None, report_s: float = 5.0,
                 api_version: tuple[int, int] | None = (2, 3), workers: int = 0, master_port: int = 0,
                 expect_workers: int = 0, bind_host: str = "127.0.0.1", wait_workers_s: float = 120.0) -> None:
        self.env = Environment(user_classes=list(USER_CLASSES.values()), host=host)
        self.workers: list[subprocess.Popen] = []
        wanted = workers + expect_workers  # local worker processes + workers from elsewhere (pods)
        if wanted > 0:
            self.runner = self.env.create_master_runner(bind_host, master_port or _free_port())
            port = self.runner.master_bind_port
            self.workers = [subprocess.Popen([sys.executable, "-m", "scalelab.injector", "--worker", "--master-port", str(port),
                                              "--host", host], env={**os.environ, "INJECTOR_PROCESS_INDEX": str(i + 1)})
                            for i in range(workers)]
            end = time.monotonic() + wait_workers_s
            while self.runner.worker_count < wanted:
                if time.monotonic() > end:
                    self.close_workers()
                    raise RuntimeError(f"only {self.runner.worker_count} of {wanted} Locust workers connected")
                gevent.sleep(0.1)
        else:
            self.runner = self.env.create_local_runner()
        self.bootstrap, self.report_s, self.api_version = bootstrap, report_s, api_version
        self.bad_orders = 0
        self.level = 0
        self._producer = None
        self.done = gevent.event.Event()
        self.ready = gevent.event.Event()  # set once the order consumer has its partitions
        self._jobs: list = []
        self._samples: list[list[float]] = []  # [start_s, end_s, ms] since the last report
        self.client_requests = 0  # samples received, in all
        self.env.events.request.add_listener(self._request)
        if isinstance(self.runner, MasterRunner):  # the workers' requests reach the master in batches
            self.runner.register_message("client_samples", lambda environment, msg, **kw: self._add(msg.data))

    def _request(self, request_type, name, response_time, response_length, response=None, context=None,
                 exception=None, start_time=None, **kw) -> None:
        """Locust's request event: one completed request (failed ones too, as Locust counts them)."""
        self._add([_sample(start_time, response_time)])

    def _add(self, samples: list) -> None:
        self._samples.extend(samples)
        self.client_requests += len(samples)

    def apply(self, order: dict) -> None:
        name = order.get("order")
        if name == "set_user_level":
            level, rate = int(order["level"]), float(order.get("spawn_rate", 100))
            if str(order.get("reset_stats", "False")) == "True":
                self.env.stats.reset_all()
            self._set(level, rate)
        elif name == "step_user_level":
            self._set(self.level + int(order["level"]), float(order.get("spawn_rate", 100)))
        elif name == "reset":
            self.env.stats.reset_all()
        elif name == "stop":
            self.runner.stop()
            self.level = 0
        elif name == "set_task":
            before = locustfile.CURRENT["task"].kind
            locustfile.set_task(order)
            if isinstance(self.runner, MasterRunner):
                self.runner.send_message("set_task", order)  # to every worker
            if self.level and locustfile.CURRENT["task"].kind != before:
                self.runner.stop()  # users of the old kind leave; the level comes back as the new kind
                self._set(self.level, float(order.get("spawn_rate", 100)))
        else:
            raise ValueError(f"unknown locust order {name!r}")

    def _set(self, level: int, rate: float) -> None:
        level = max(0, level)
        self.level = level
        if level == 0:
            self.runner.stop()
        else:
            kind = USER_CLASSES[locustfile.CURRENT["task"].kind]
            self.runner.start(level, spawn_rate=max(rate, 0.1), user_classes=[kind])

    def stats(self) -> dict:
        total = self.env.stats.total
        return {
            "t": time.time(), "target_user_count": self.level, "user_count": self.runner.user_count,
            "num_requests": total.num_requests, "num_failures": total.num_failures,
            "current_rps": total.current_rps, "avg_response_time": total.avg_response_time,
            "p95_response_time": total.get_response_time_percentile(0.95) if total.num_requests else 0.0,
            "current_p95_response_time": self._current_p95(), "bad_orders": self.bad_orders,
            "task": locustfile.CURRENT["task"].kind, "failures": self._failures(),
            "client_requests": self.client_requests,
        }

    def _failures(self) -> dict[str, int]:
        """Failed requests by reason (Locust's error report), the 20 most frequent."""
        errors = sorted(self.env.stats.errors.values(), key=lambda e: -e.occurrences)[:20]
        return {f"{e.method} {e.name}: {e.error}"[:200]: e.occurrences for e in errors}

    def _current_p95(self) -> float | None:
        """Locust's p95 over about the last 10 s (ms), None before it has 10 s of data."""
        try:
            return self.env.stats.total.get_current_response_time_percentile(0.95)
        except ValueError:
            return None

    def _orders(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        kw = {"api_version": self.api_version} if self.api_version else {}
        while True:
            try:
                consumer = KafkaConsumer("locust_order", bootstrap_servers=self.bootstrap, group_id="scalelab-injector",
                                         auto_offset_reset="latest", metadata_max_age_ms=5000, fetch_max_wait_ms=50,
                                         **kw)
                self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **kw)
                while True:
                    batches = consumer.poll(timeout_ms=100)
                    if consumer.assignment():
                        self.ready.set()
                    for records in batches.values():
                        for rec in records:
                            try:
                                order = json.loads(rec.value)
                                if not isinstance(order, dict):
                                    raise ValueError("not an object")
                                self.apply(order)
                            except (ValueError, KeyError, TypeError):
                                self.bad_orders += 1
                    gevent.sleep(0)
            except Exception:
                gevent.sleep(1.0)

    def _report(self) -> None:
        while True:
            gevent.sleep(self.report_s)
            samples, self._samples = self._samples, []
            if self._producer is not None:
                try:
                    self._producer.send("locust", json.dumps({**self.stats(), "samples": samples}).encode())
                except Exception:
                    pass

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start listening for orders; True once the order consumer is ready."""
        if not self.bootstrap:
            self.ready.set()
            return True
        self._jobs = [gevent.spawn(self._orders), gevent.spawn(self._report)]
        return self.ready.wait(timeout_s)

    def serve(self, seconds: float | None = None) -> None:
        if not self._jobs:
            self.start()
        self.done.wait(seconds)
        self.runner.quit()
        gevent.killall(self._jobs, timeout=5)
        self.close_workers()

    def close_workers(self) -> None:
        for w in self.workers:
            try:
                w.wait(timeout=10)  # runner.quit() told them to stop
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(start_time: float | None, response_ms: float | None) -> list[float]:
    """``[start_s, end_s, response_ms]`` of one request (Locust's ``start_time`` is wall
    clock, s)."""
    ms = float(response_ms or 0.0)
    start = float(start_time) if start_time is not None else time.time() - ms / 1000.0
    return [round(start, 4), round(start + ms / 1000.0, 4), round(ms, 3)]


#: How often a worker sends its requests' samples to the master, s.
WORKER_SAMPLES_S = 1.0


def run_worker(host: str, master_port: int, master_host: str = "127.0.0.1") -> None:
    """A Locust worker process: takes its users from the master, and sends it the samples
    of its requests every :data:`WORKER_SAMPLES_S`."""
    env = Environment(user_classes=list(USER_CLASSES.values()), host=host)
    runner = env.create_worker_runner(master_host, master_port)
    runner.register_message("set_task", lambda environment, msg, **kw: locustfile.set_task(msg.data))
    pending: list[list[float]] = []
    env.events.request.add_listener(lambda response_time=None, start_time=None, **kw:
                                    pending.append(_sample(start_time, response_time)))

    def forward() -> None:
        nonlocal pending
        while True:
            gevent.sleep(WORKER_SAMPLES_S)
            if pending:
                batch, pending = pending, []
                runner.send_message("client_samples", batch)

    gevent.spawn(forward)
    runner.greenlet.join()
