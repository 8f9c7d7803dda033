"""The local live stack's figures: time from `live up` to a ready stack, a
`/compute?cpu=0` request's p50/p99 through HAProxy, and the spans one replica ships
while loaded (with drops, if any).

    python benchmarks/bench_live.py [--requests 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
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
