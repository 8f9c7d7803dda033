"""Orchestrator CPU per step at a given span rate (default 1,000 spans/s).

The orchestrator service (span collector, order loop, a fixed scaler, no Prometheus)
runs in its own process on the embedded broker; this process sends Zipkin span lists on
``zipkin`` at the rate (batches of 50, as replicas' exporters do) and a ``getState``
every step, and reads the service's CPU time (user + system, /proc) over the run. The
same is measured with no spans, so the span path's share shows. Prints the median over
repeats of CPU seconds per 5-s step and of the share of one core.

    python benchmarks/bench_orchestrator_cpu.py [--rate 1000] [--steps 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

from scalelab.orchestrator.client import OrchestratorClient
from scalelab.orchestrator.kafka_embedded import EmbeddedKafka
from scalelab.orchestrator.stack import TOPICS, create_topics
from scalelab.sandbox.spans import make_span

STEP_S = 5.0


class Fixed:
    desired_replicas = ready_replicas = 2

    def scale_to(self, n: int) -> None:
        pass


def serve(addr: str, ready, stop) -> None:
    from scalelab.orchestrator.service import OrchestratorService

    svc = OrchestratorService(Fixed(), bootstrap=addr)
    svc.start()
    svc.ready.wait(30)
    ready.set()
    stop.wait()
    svc.stop()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(addr: str, rate: float, steps: int) -> tuple[float, int]:
    from kafka import KafkaProducer

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=serve, args=(addr, ready, stop))
    proc.start()
    ready.wait(60)
    client = OrchestratorClient(addr)
    producer = KafkaProducer(bootstrap_servers=addr, api_version=(2, 3), linger_ms=5)
    client.get_state()
    time.sleep(1.0)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    sent, batch = 0, 50
    next_state = t0 + STEP_S
    end = t0 + steps * STEP_S
    while (now := time.monotonic()) < end:
        due = int((now - t0) * rate)
        while sent + batch <= due:
            us = int(time.time() * 1e6)
            spans = [make_span("sandbox", "get /compute", us - 20_000 + i, 20_000, "/compute", 200)
                     for i in range(batch)]
            producer.send("zipkin", json.dumps(spans).encode())
            sent += batch
        if now >= next_state:
            state = client.get_state()
            next_state += STEP_S
        time.sleep(0.01)
    cpu = cpu_seconds(proc.pid) - c0
    seen = state["context"]["spans"] if rate else 0
    stop.set()
    proc.join(30)
    client.close()
    producer.close()
    return cpu / steps, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=1000.0, help="spans per second")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    kafka = EmbeddedKafka()
    addr = kafka.start()
    create_topics(addr, TOPICS)
    for rate in (0.0, args.rate):
        runs = [one_run(addr, rate, args.steps) for _ in range(args.repeats)]
        per_step = statistics.median(r[0] for r in runs)
        print(f"{rate:,.0f} spans/s: orchestrator CPU {per_step * 1000:,.0f} ms per {STEP_S:g}-s step "
              f"(median of {args.repeats}; {per_step / STEP_S:.1%} of one core); "
              f"spans in the last context window: {runs[-1][1]}")
    kafka.stop()


if __name__ == "__main__":
    main()
