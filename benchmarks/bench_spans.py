"""Span path speed: the Zipkin collector's ingest rate (target >= 20,000 spans/s on one
core), spans shipped through the embedded Kafka from one exporter, and the request path
of the sandbox app (``/compute?cpu=0`` through its WSGI callable) with no broker and with
a dead one (nothing listens on its port): the request path never waits for Kafka
(target: 100 requests in < 2 s with the broker dead, about the same as without one).

    python benchmarks/bench_spans.py [--spans 200000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from scalelab.orchestrator.collectors.zipkin import ZipkinCollector
from scalelab.orchestrator.context import ContextBuilder
from scalelab.orchestrator.kafka_embedded import EmbeddedKafka
from scalelab.sandbox.spans import SpanExporter, make_span


def payloads(n_spans: int, per_message: int = 100) -> list[bytes]:
    now = int(time.time() * 1e6)
    spans = [make_span("sandbox", "get /compute", now + i, 1000 + i % 5000, "/compute", 200) for i in range(n_spans)]
    return [json.dumps(spans[k : k + per_message]).encode() for k in range(0, n_spans, per_message)]


def ingest_rate(msgs: list[bytes], n: int) -> float:
    col = ZipkinCollector("unused:0", ContextBuilder(), threading.Lock(), services=["sandbox"])
    t0 = time.perf_counter()
    for m in msgs:
        col.ingest(m)
    return n / (time.perf_counter() - t0)


def through_kafka(n: int) -> tuple[float, float]:
    kafka = EmbeddedKafka()
    addr = kafka.start()
    topic = f"bench-{time.time_ns()}"
    col = ZipkinCollector(addr, ContextBuilder(), threading.Lock(), services=["sandbox"], topic=topic,
                          group=topic, offset_reset="earliest")
    col.start()
    exp = SpanExporter(addr, topic=topic, batch=500, capacity=n + 1)
    now = int(time.time() * 1e6)
    t0 = time.perf_counter()
    for i in range(n):
        exp.submit(make_span("sandbox", "get /compute", now + i, 1000, "/compute", 200))
    submit_s = time.perf_counter() - t0
    exp.flush(60)
    while col.stats.kept < n and time.perf_counter() - t0 < 120:
        time.sleep(0.01)
    total = time.perf_counter() - t0
    col.stop()
    exp.close()
    kafka.stop()
    return n / submit_s, col.stats.kept / total


def request_path(bootstrap: str | None, n: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``/compute?cpu=0`` through the app's WSGI callable."""
    import io
    from wsgiref.util import setup_testing_defaults

    import numpy as np

    from scalelab.sandbox.app import App, Settings

    exporter = SpanExporter(bootstrap, topic="zipkin")
    app = App(Settings(pod="bench"), exporter=exporter)

    def one() -> None:
        env: dict = {}
        setup_testing_defaults(env)
        env.update(REQUEST_METHOD="GET", PATH_INFO="/compute", QUERY_STRING="cpu=0", CONTENT_LENGTH="0")
        env["wsgi.input"] = io.BytesIO(b"")
        out = app(env, lambda status, headers: None)
        b"".join(out)
        if hasattr(out, "close"):
            out.close()

    for _ in range(50):
        one()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        one()
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
    exporter.close()
    return n / total, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    for label, bootstrap in (("no broker", None), ("a dead broker (127.0.0.1:1)", "127.0.0.1:1")):
        rate, p50, p99 = request_path(bootstrap, args.requests)
        print(f"/compute?cpu=0 through the app, {label}: {rate:,.0f} req/s, p50 {p50:.3f} ms, p99 {p99:.3f} ms "
              f"({args.requests} requests; 100 take {100 / rate:.3f} s, target < 2 s)")
    msgs = payloads(args.spans)
    rate = statistics.median(ingest_rate(msgs, args.spans) for _ in range(args.repeats))
    print(f"zipkin collector ingest (parse + filter + buffer): {rate:,.0f} spans/s (median of {args.repeats}), "
          f"target >= 20,000")
    submit, e2e = through_kafka(min(args.spans, 50_000))
    print(f"exporter submit (request-path cost): {submit:,.0f} spans/s; "
          f"sandbox exporter -> embedded Kafka -> collector: {e2e:,.0f} spans/s")


if __name__ == "__main__":
    main()
