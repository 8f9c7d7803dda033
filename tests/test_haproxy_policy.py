"""The balancer's policy with a real HAProxy (issue 14): a POST a replica took is never
sent twice, even when the replica dies before answering; a replica failing its health
check is taken out of the rotation."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scalelab.orchestrator.haproxy import HAProxy
from scalelab.orchestrator.local_processes import free_port
from tests.tools import requires
from tests.waiting import wait_for

pytestmark = requires("haproxy")


class Replica(ThreadingHTTPServer):
    """A real HTTP server on loopback that drops every POST without an answer (a worker
    dying mid-run) and answers /healthz with ``health``."""

    def __init__(self) -> None:
        self.posts, self.health = 0, 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(server.health)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                server.posts += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.close_connection = True  # no answer: the connection just closes

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def balancer(tmp_path):
    replica = Replica()
    hap = HAProxy(tmp_path / "haproxy", free_port(), slots=2)
    hap.start()
    hap.enable(1, replica.server_address[1])
    yield hap, replica
    hap.stop()
    replica.shutdown()
    replica.server_close()


def _status(hap: HAProxy) -> str:
    return hap.stats()["s1"]["status"]


def test_a_post_the_replica_took_is_not_replayed(balancer):
    hap, replica = balancer
    req = urllib.request.Request(f"http://127.0.0.1:{hap.port}/run", data=b'{"code": "print(1)"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=20)
    assert err.value.code == 502 and replica.posts == 1  # answered as failed, executed once


def test_a_replica_failing_its_health_check_is_taken_out(balancer):
    hap, replica = balancer
    wait_for(lambda: _status(hap) == "UP", 60, "the replica to be UP")
    replica.health = 500
    # "UP 1/3", "UP 2/3": failures of three, then DOWN (how soon: benchmarks/bench_live.py)
    wait_for(lambda: _status(hap).startswith("DOWN"), 60, "the failing replica to be taken out")
    replica.health = 200
    wait_for(lambda: _status(hap) == "UP", 60, "the recovered replica to be back in")  # rise 1


def test_a_slow_request_body_is_cut_at_the_balancer(balancer):
    import socket

    hap, replica = balancer
    with socket.create_connection(("127.0.0.1", hap.port), timeout=120) as s:  # a give-up guard only
        s.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        answer = s.recv(4096)  # nothing more is sent: the balancer gives up on its own
    # 408: the balancer's own request timeout, not the client's (how soon: benchmarks/bench_live.py)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
    assert replica.posts == 0  # the replica never saw it
