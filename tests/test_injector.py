"""The Locust injector: its shape follows the workload; the master obeys locust_order
from Kafka and reports on topic locust, against the real local stack."""

import importlib.util
import json
import subprocess
import sys
import time

import pytest

from scalelab.injector.shape import shape_tick
from scalelab.injector.workloads import make_workload
from tests.tools import requires
from tests.waiting import tail

# Locust is only ever imported in the injector's own process: its import patches the
# interpreter with gevent.
HAS_LOCUST = importlib.util.find_spec("locust") is not None


def test_shape_asks_only_the_workload():
    wl = make_workload({"kind": "step", "before": 2, "after": 7, "at_s": 60, "duration_s": 120})
    assert shape_tick(wl, 0.5, compression=60.0) == (2, 100.0)  # 0.5 s of wall time = 30 s of workload
    assert shape_tick(wl, 1.5, compression=60.0)[0] == 7
    assert shape_tick(wl, 2.5, compression=60.0) is None


@requires("locust")
def test_locust_shape_class_in_its_own_process():
    code = ("from scalelab.injector.shape import make_shape; from scalelab.injector.workloads import make_workload;"
            "S = make_shape(make_workload({'kind': 'constant', 'users': 3, 'duration_s': 10}), 2.0);"
            "s = S(); t = s.tick(); print(t[:2], [c.__name__ for c in t[2]]); s.start_time -= 6; print(s.tick())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["(3, 100.0) ['SandboxUser']", "None"], out.stderr


@pytest.mark.live
@requires("locust", "prometheus", "haproxy")
def test_master_obeys_orders_and_reports(tmp_path):
    from kafka import KafkaProducer

    from scalelab.orchestrator.stack import LocalStack

    stack = LocalStack(tmp_path / "stack")
    stack.up(replicas=1)
    addr = stack.state["kafka"]["bootstrap"]
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.injector", "--host", stack.service_url, "--bootstrap", addr],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "injector ready"
        # "injector ready" comes once its order consumer holds its partitions; ours reads the
        # statistics topic from its end, without a consumer group (nothing to join)
        stats = tail(addr, "locust")
        prod = KafkaProducer(bootstrap_servers=addr, api_version=(2, 3))
        for msg in (b"{not json", json.dumps({"order": "set_user_level", "level": 4, "spawn_rate": 20}).encode()):
            prod.send("locust_order", msg)
        prod.flush()
        seen = None
        end = time.time() + 60
        while time.time() < end:
            for records in stats.poll(timeout_ms=500).values():
                for rec in records:
                    s = json.loads(rec.value)
                    if s["user_count"] == 4 and s["num_requests"] > 20:
                        seen = s
            if seen:
                break
        assert seen is not None, "no statistics with 4 users"
        assert seen["num_failures"] == 0 and seen["bad_orders"] == 1
        assert all(len(row) == 3 and row[0] <= row[1] for row in seen["samples"])  # [start_s, end_s, ms]
        assert seen["client_requests"] >= seen["num_requests"] - 4 * 4  # every request's timing, in time
        served = sum(int(r["stot"] or 0) for r in stack.haproxy.stats().values())
        assert served >= seen["num_requests"]
        stats.close()
        prod.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        assert stack.down() == []


@pytest.mark.live
def test_master_with_two_worker_processes_spreads_the_users(tmp_path):
    import http.server
    import os
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append(self.path)
            body = b'{"cpu": 0, "ms": 0.1}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "INJECTOR_WAIT_MIN": "0.05", "INJECTOR_WAIT_MAX": "0.1", "INJECTOR_CPU": "0"}
        out = subprocess.run([sys.executable, "-m", "scalelab.injector", "--host", f"http://127.0.0.1:{server.server_port}",
                              "--workers", "2", "--users", "6", "--seconds", "8"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        final = json.loads(out.stdout.strip().splitlines()[-1])
        assert final["workers"] == 2
        n = final["stats"]["num_requests"]
        assert n > 100 and final["stats"]["num_failures"] == 0
        assert all(p.startswith("/compute?cpu=0") for p in seen)
        assert 0.9 * n <= len(seen) <= n + 20  # the master's aggregate is what the server saw
        # each request's timing reached the master (the workers send them every second)
        print("requests", n, "samples", final["stats"]["client_requests"], "served", len(seen))
        assert 0.85 * len(seen) <= final["stats"]["client_requests"] <= len(seen)
    finally:
        server.shutdown()
