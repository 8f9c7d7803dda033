"""Issue 30, the slow-body finding: a client that drips its request cannot starve the others. Behind
the local stack's HAProxy it never reaches a replica (the balancer buffers each request
whole, and cuts one that takes more than 5 s); a replica exposed directly answers 408
once a request takes longer than SANDBOX_REQUEST_TIMEOUT from its first byte, and a
worker takes a connection only when it has a thread free for it
(sandbox/gunicorn_conf.py)."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from scalelab.orchestrator.haproxy import HAProxy
from scalelab.orchestrator.local_processes import free_port
from scalelab.orchestrator.scalers.local import LocalScaler, ReplicaSpec
from tests.tools import requires
from tests.waiting import wait_for

pytestmark = pytest.mark.live


class Dripper(threading.Thread):
    """A client that sends a request's headers at once and then its ``size``-byte body
    one byte every ``every_s`` (``slow_headers``: the headers a byte at a time too), until
    the server answers or closes; ``answer`` holds what it got, ``sent`` the body bytes
    sent, ``ended`` is set when the exchange ended either way."""

    def __init__(self, port: int, path: str = "/run", size: int = 60, every_s: float = 1.0,
                 slow_headers: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.size, self.every_s, self.slow_headers = port, path, size, every_s, slow_headers
        self.sent, self.answer, self.closed = 0, b"", False
        self.started_body, self.ended, self._quit = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        head = (f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {self.size}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=120) as s:
            try:
                if self.slow_headers:
                    s.sendall(head[:20])
                    self._drip(s, head[20:])
                else:
                    s.sendall(head)
                if not self.closed:
                    self.started_body.set()
                    self._drip(s, b"{" + b" " * (self.size - 2) + b"}")
                while not self._quit.is_set() and not self.closed:  # the whole body is out: wait for the answer
                    self._read(s, 1.0)
            except OSError:  # reset by the server
                self.closed = True
        self.ended.set()

    def _drip(self, s: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._quit.is_set() or self.closed:
                return
            s.sendall(data[i : i + 1])
            self.sent += 1 if self.started_body.is_set() else 0
            self._read(s, self.every_s)

    def _read(self, s: socket.socket, wait_s: float) -> None:
        """Wait up to ``wait_s`` for the server; read what it sent (EOF: it closed)."""
        if select.select([s], [], [], wait_s)[0]:
            data = s.recv(65536)
            self.answer += data
            self.closed = self.closed or not data

    def stop(self) -> None:
        self._quit.set()
        self.join(timeout=30)


def _run(port: int, code: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/run", data=json.dumps({"code": code}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:  # a give-up guard only
        return json.loads(r.read())


@pytest.fixture
def balanced_replica(tmp_path):
    """HAProxy in front of one sandbox replica, as the local stack starts them (2 workers
    of 4 threads), but waiting up to 120 s for a request (the stack's: 5 s), so that the
    dripping clients still drip however long the runs take on a busy machine."""
    hap = HAProxy(tmp_path / "haproxy", free_port(), slots=2, request_timeout_s=120)
    hap.start()
    scaler = LocalScaler(tmp_path / "replicas", hap, ReplicaSpec())
    try:
        scaler.scale_to(1)
        wait_for(lambda: hap.stats()["s1"]["status"] == "UP", 60, "the replica to be UP at the balancer")
        yield hap
    finally:
        scaler.stop_all()
        hap.stop()


@requires("haproxy", "bwrap")
def test_eight_dripping_clients_do_not_hold_up_a_run_behind_the_balancer(balanced_replica):
    hap = balanced_replica
    drippers = [Dripper(hap.port, size=200, every_s=1.0) for _ in range(8)]  # as many as the replica's threads
    for d in drippers:
        d.start()
    try:
        wait_for(lambda: all(d.sent >= 1 for d in drippers), 60, "every dripping client to be sending its body")
        for _ in range(3):
            assert _run(hap.port, "print(6 * 7)")["stdout"] == "42\n"
        # answered while every dripping client was still sending: none waited for them
        assert not any(d.ended.is_set() for d in drippers), [d.answer[:40] for d in drippers]
        # the replica saw the three runs only: the balancer holds the dripping requests (and
        # cuts them at its timeout http-request: tests/test_haproxy_policy.py)
        assert int(hap.stats()["s1"]["stot"]) == 3
    finally:
        for d in drippers:
            d.stop()


def _replica(tmp_path, workers: int, threads: int, request_timeout_s: float):
    """A sandbox replica served directly (no balancer) with the replicas' gunicorn config,
    serving /compute only (no proof run: no seal needed)."""
    port = free_port()
    env = {**os.environ, "SANDBOX_POD": "replica-direct", "SANDBOX_PROVE": "0",
           "SANDBOX_REQUEST_TIMEOUT": str(request_timeout_s)}
    log = open(tmp_path / "replica.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads),
                             "-b", f"127.0.0.1:{port}", "-c", "python:scalelab.sandbox.gunicorn_conf",
                             "scalelab.sandbox.app:application"], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        except OSError:
            return False

    wait_for(answers, 60, "the replica to answer /healthz")
    return proc, port


@pytest.fixture
def replica_factory(tmp_path):
    procs = []

    def make(**kw):
        proc, port = _replica(tmp_path, **kw)
        procs.append(proc)
        return port

    yield make
    for p in procs:
        p.terminate()
        p.wait(timeout=60)


def test_a_replica_cuts_a_dripping_request_at_its_request_timeout(replica_factory, tmp_path):
    port = replica_factory(workers=1, threads=2, request_timeout_s=1)
    body = Dripper(port, size=30, every_s=0.25)  # 7.5 s to send its body
    headers = Dripper(port, path="/compute", size=2, every_s=0.25, slow_headers=True)  # 20 s for its headers
    for d in (body, headers):
        d.start()
    try:
        for d in (body, headers):
            assert d.ended.wait(60), "a dripping client was never cut"  # a give-up guard
            assert d.answer.startswith(b"HTTP/1.1 408"), d.answer[:80]
            assert b"SANDBOX_REQUEST_TIMEOUT" in d.answer  # the answer says which setting cut it
        assert body.sent < body.size and not headers.started_body.is_set()  # cut before they were sent
        assert b"408 to" in (tmp_path / "replica.log").read_bytes()
        # and the replica serves again
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/compute?cpu=1", timeout=60).status == 200
    finally:
        for d in (body, headers):
            d.stop()


def test_connections_go_to_a_worker_with_a_free_thread(replica_factory):
    """Three dripping clients on a replica of 2 workers x 2 threads (a request timeout
    long enough to keep them dripping): requests keep being answered by the free thread,
    wherever the dripping ones were accepted (gunicorn's default let a worker with every
    thread held accept a connection and queue it)."""
    from scalelab.sandbox import gunicorn_conf

    if not gunicorn_conf.CAPS_CONNECTIONS:
        pytest.skip("needs gunicorn >= 24 (a worker that stops accepting keeps serving what it accepted)")
    port = replica_factory(workers=2, threads=2, request_timeout_s=300)
    drippers = [Dripper(port, size=200, every_s=0.5) for _ in range(3)]
    for d in drippers:
        d.start()
    try:
        wait_for(lambda: all(d.sent >= 1 for d in drippers), 60, "every dripping client to be sending its body")
        for _ in range(10):  # a new connection each (the answer closes it)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/compute?cpu=1", timeout=60) as r:  # a give-up guard
                assert r.status == 200
        assert not any(d.ended.is_set() for d in drippers)  # answered while they still dripped
    finally:
        for d in drippers:
            d.stop()
