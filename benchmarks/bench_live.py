"""The local live stack's figures: time from `live up` to a ready stack, a
`/compute?cpu=0` request's p50/p99 through HAProxy, and the spans one replica ships
while loaded (with drops, if any). First, the balancer's own timers against a stub
replica (no stack): how long a request whose body never comes waits for its 408
(``timeout http-request``), and how long a replica failing its health check stays in
the rotation (``inter`` x ``fall``) and takes to come back (``rise``).

    python benchmarks/bench_live.py [--requests 2000] [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from scalelab.orchestrator.haproxy import CONFIG, HAProxy
from scalelab.orchestrator.local_processes import free_port
from scalelab.orchestrator.stack import LocalStack


def sequential(url: str, n: int) -> np.ndarray:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=10).read()
        lat.append((time.perf_counter() - t) * 1000)
    return np.array(lat)


def _hammer(url: str, seconds: float, out) -> None:
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        urllib.request.urlopen(url, timeout=10).read()
        n += 1
    out.put(n)


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))


def _stub_replica():
    """An HTTP server on loopback answering every GET with ``server.health``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(self.server.health)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.health = 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _until(predicate, timeout_s: float = 60.0) -> float:
    """Seconds until ``predicate`` holds (polled every 10 ms)."""
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("the balancer never got there")
        time.sleep(0.01)
    return time.perf_counter() - t0


def balancer_timers(repeats: int) -> None:
    setting = {k: re.search(rf"{k} (\S+)", CONFIG).group(1) for k in ("timeout http-request", "inter", "fall", "rise")}
    replica = _stub_replica()
    with tempfile.TemporaryDirectory() as d:
        hap = HAProxy(Path(d) / "haproxy", free_port(), slots=2)
        hap.start()
        try:
            hap.enable(1, replica.server_address[1])
            status = lambda: hap.stats()["s1"]["status"]  # noqa: E731
            _until(lambda: status() == "UP")
            cut, down, back = [], [], []
            for _ in range(repeats):
                with socket.create_connection(("127.0.0.1", hap.port), timeout=120) as s:
                    s.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                    t0 = time.perf_counter()
                    answer = s.recv(4096)
                    cut.append(time.perf_counter() - t0)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
                replica.health = 500
                down.append(_until(lambda: status().startswith("DOWN")))
                replica.health = 200
                back.append(_until(lambda: status() == "UP"))
        finally:
            hap.stop()
            replica.shutdown()
    print(f"HAProxy, slow request body: 408 after {statistics.median(cut):.2f} s "
          f"(timeout http-request {setting['timeout http-request']}; median of {repeats})")
    print(f"HAProxy, failing health check: DOWN after {statistics.median(down):.2f} s "
          f"(inter {setting['inter']} x fall {setting['fall']}), UP again {statistics.median(back):.2f} s "
          f"after it recovers (rise {setting['rise']}; median of {repeats})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--balancer-only", action="store_true", help="only the balancer's timers (no stack)")
    args = ap.parse_args()
    balancer_timers(args.repeats)
    if args.balancer_only:
        return
    with tempfile.TemporaryDirectory() as d:
        stack = LocalStack(Path(d))
        t0 = time.perf_counter()
        stack.up(replicas=1)
        print(f"live up -> ready (Kafka, Prometheus, HAProxy, 1 replica): {time.perf_counter() - t0:.2f} s")
        try:
            url = stack.service_url + "/compute?cpu=0"
            sequential(url, 100)
            lat = sequential(url, args.requests)
            print(f"/compute?cpu=0 through HAProxy, {args.requests} sequential requests: "
                  f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms")
            replica = stack.scaler.replicas[0]
            murl = f"http://127.0.0.1:{replica.port}/metrics"
            before = urllib.request.urlopen(murl).read().decode()
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue()
            procs = [ctx.Process(target=_hammer, args=(url, args.seconds, q)) for _ in range(args.clients)]
            for p in procs:
                p.start()
            n = sum(q.get(timeout=args.seconds + 60) for _ in procs)
            for p in procs:
                p.join()
            time.sleep(1.0)
            after = urllib.request.urlopen(murl).read().decode()
            sent = metric(after, "sandbox_spans_sent_total") - metric(before, "sandbox_spans_sent_total")
            dropped = metric(after, "sandbox_spans_dropped_total") - metric(before, "sandbox_spans_dropped_total")
            print(f"one replica under {args.clients} clients for {args.seconds:g} s: {n / args.seconds:,.0f} req/s, "
                  f"spans shipped {sent / args.seconds:,.0f}/s, dropped {dropped:.0f} "
                  "(counters of the worker that answered /metrics; 2 workers share the load)")
        finally:
            stack.down()


if __name__ == "__main__":
    main()
