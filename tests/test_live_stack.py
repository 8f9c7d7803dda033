"""The local live data plane, started for real on loopback: embedded Kafka, Debian's
Prometheus, HAProxy and gunicorn replicas; checked against the load a client sends."""

import json
import multiprocessing
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from scalelab.orchestrator.collectors.prometheus import PrometheusCollector, PrometheusUnavailable
from scalelab.orchestrator.collectors.zipkin import ZipkinCollector
from scalelab.orchestrator.context import ContextBuilder, ContextSettings
from scalelab.orchestrator.local_processes import alive
from scalelab.orchestrator.stack import LocalStack
from tests.tools import requires
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.live,
    requires("prometheus", "haproxy"),
]


def _client(url: str, think_s: float, stop, out) -> None:
    """A keep-alive HTTP client (as Locust's is): no connection set-up in the latency."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    records = []
    while not stop.is_set():
        t0 = time.time()
        p0 = time.perf_counter()
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        records.append((t0, (time.perf_counter() - p0) * 1000, ok))
        time.sleep(think_s)
    conn.close()
    out.put(records)


class Load:
    """``clients`` closed-loop client processes on ``url`` (their own interpreters, so
    nothing in the test process skews their clocks); records (start, latency ms, ok)."""

    def __init__(self, url: str, threads: int = 4, think_s: float = 0.02) -> None:
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._out = ctx.Queue()
        self._procs = [ctx.Process(target=_client, args=(url, think_s, self._stop, self._out), daemon=True)
                       for _ in range(threads)]
        self.records: list[tuple[float, float, bool]] = []

    def __enter__(self):
        for p in self._procs:
            p.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for _ in self._procs:
            self.records += self._out.get(timeout=60)
        for p in self._procs:
            p.join(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = LocalStack(tmp_path_factory.mktemp("live"))
    s.up(replicas=1)
    yield s
    left = s.down()
    assert left == []


def test_context_matches_the_load_sent(stack):
    builder = ContextBuilder(ContextSettings(window_s=10.0))
    lock = threading.Lock()
    col = ZipkinCollector(stack.state["kafka"]["bootstrap"], builder, lock, services=["sandbox"],
                          group="ctx-test", offset_reset="latest")
    col.start()
    wait_for(col.assigned.is_set, 60, "the span consumer to hold its partitions")
    # the paper's request (cpu=200, about 20 ms of CPU) from two clients: the replica does
    # not queue requests, so its spans and the client's clock measure the same thing
    with Load(stack.service_url + "/compute?cpu=200", threads=2, think_s=0.05) as load:
        wait_for(lambda: col.last_span_at is not None, 60, "the first span")
        first = col.last_span_at
        # a full 10 s window of spans, 2 s after the first (the clients have started)
        wait_for(lambda: (col.latest_end_s or 0) >= first + 12.0, 60, "12 s of spans")
        now = time.time() - 1.0
        wait_for(lambda: (col.latest_end_s or 0) > now + 0.5, 60, "the spans ending after the window")
    col.stop()
    with lock:
        ctx = builder.build(now, replicas=stack.scaler.ready_replicas)
    rec = np.array([(s, ms) for s, ms, ok in load.records if ok and now - 10 < s + ms / 1000 <= now])
    client_rps = len(rec) / 10.0
    client_p95 = float(np.percentile(rec[:, 1], 95))
    assert ctx.replicas == 1
    assert ctx.rps == pytest.approx(client_rps, rel=0.10)
    assert ctx.p95_ms == pytest.approx(client_p95, rel=0.10)


def test_prometheus_scrapes_every_replica_with_kubernetes_names(stack):
    prom = PrometheusCollector(stack.state["prometheus"]["url"])

    def every_target_up():
        up = prom.targets_up()
        return len(up) == stack.scaler.ready_replicas and all(up.values())

    wait_for(every_target_up, 30, "Prometheus to scrape every replica")
    # a rate needs two scrapes of every pod
    wait_for(lambda: len(prom.sample().cpu_cores) == stack.scaler.ready_replicas, 30, "a CPU rate of every pod")
    pods = prom.sample()
    np.testing.assert_allclose(pods.cpu_request, 0.5)
    np.testing.assert_allclose(pods.memory_limit_mib, 512)


def test_scaling_1_3_1_loses_no_request(stack):
    def served() -> dict[str, int]:
        return {name: int(r["stot"] or 0) for name, r in stack.haproxy.stats().items()}

    with Load(stack.service_url + "/compute?cpu=5", threads=4) as load:
        wait_for(lambda: sum(served().values()) >= 50, 60, "50 requests on one replica")
        stack.scaler.scale_to(3)
        assert stack.scaler.ready_replicas == 3
        # every replica serves: the balancer has them all
        wait_for(lambda: sum(1 for n in served().values() if n >= 20) >= 3, 60, "20 requests on each of 3 replicas")
        stack.scaler.scale_to(1)
        before = sum(served().values())
        wait_for(lambda: sum(served().values()) >= before + 50, 60, "50 more requests after draining to 1")
    assert stack.scaler.ready_replicas == 1
    assert len(load.records) > 100
    assert all(ok for _, _, ok in load.records), sum(not ok for _, _, ok in load.records)
    served = stack.haproxy.stats()
    assert sum(int(r["stot"] or 0) for r in served.values()) >= len(load.records)


def test_status_and_a_dead_prometheus(stack):
    st = stack.status()
    assert st["up"] and st["ready_replicas"] == 1 and st["kafka"]["alive"]
    assert st["cpu_limit_enforced"] in (True, False)
    bad = PrometheusCollector("http://127.0.0.1:1")
    with pytest.raises(PrometheusUnavailable, match="did not answer"):
        bad.sample()


def test_cli_live_up_status_down_leaves_nothing(tmp_path):
    d = str(tmp_path / "cli")
    run = lambda *a: subprocess.run([sys.executable, "-m", "scalelab.cli", "live", *a, "--dir", d],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    up = run("up", "--replicas", "2")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    assert state["ready_replicas"] == 2 and state["kafka"]["bootstrap"].startswith("127.0.0.1:")
    pids = [state["kafka"]["pid"], state["prometheus"]["pid"], state["haproxy"]["pid"]]
    pids += [r["pid"] for r in state["replicas"]]
    st = json.loads(run("status").stdout)
    assert st["up"] and len(st["replicas"]) == 2
    down = run("down")
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not [p for p in pids if alive(p)], 60, "every process of the stack to be reaped")  # a give-up guard


def test_prometheus_stopped_for_30s_is_reported_and_caught_up(stack):
    from scalelab.orchestrator.prometheus_local import LocalPrometheus
    from scalelab.orchestrator.service import OrchestratorService

    svc = OrchestratorService(stack.scaler, prometheus_url=stack.state["prometheus"]["url"], metric_interval_s=1.0)
    svc.start()
    try:
        wait_for(lambda: svc.last_prometheus_ok is not None, 60, "a first Prometheus sample")
        prom = stack.prometheus
        prom.stop()
        # the orchestrator sees the gap grow to 25 s and more (Prometheus stays stopped)
        wait_for(lambda: svc.state_message("gap")["gaps"]["prometheus_s"] >= 25, 90, "a 25 s Prometheus gap")
        state = svc.state_message("gap")
        assert state["gaps"]["prometheus_s"] >= 25 and "did not answer" in state["gaps"]["prometheus_error"]
        again = LocalPrometheus(prom.dir, prom.port)  # same port, same data: it catches up
        again.start()
        stack.state["prometheus"]["pid"] = again.pid
        stack._save()
        wait_for(lambda: svc.state_message("x")["gaps"]["prometheus_s"] <= 3, 60, "Prometheus to catch up")
        assert svc.state_message("back")["gaps"]["prometheus_s"] <= 3
        assert svc.state_message("back")["gaps"]["prometheus_error"] is None
    finally:
        svc.stop()
