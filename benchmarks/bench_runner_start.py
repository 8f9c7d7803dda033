"""How long a new runner takes to answer its first jobs (no target: a check that following
the results topic, to skip jobs already answered, does not hold up an assignment).

Starts the embedded broker (``jobs`` and ``results``, 12 partitions each), puts ``--old``
results from earlier episodes on ``results``, starts one runner
(``python -m scalelab.sandbox.job_runner``), waits for its ready line, then sends 5 small
jobs and times their finished results from the moment they were sent: the group's first
join (the mock broker's 3 s), the runner's catch-up on the results topic, the runs.
Prints each repeat's times and the median of the first result.

    python benchmarks/bench_runner_start.py [--old 1100] [--repeats 3]

Measured on the project's 2-core VM, 2026-12-07 (1,100 old results, medians of 3 in one
session): 2.66 s before runners followed the results topic (2bd98e5), 6.66 s with the
topic's end asked one partition at a time (e1038a4), 2.62 s with one request for every
partition's end and a 50 ms fetch wait (8305ff0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one(old: int) -> list[float]:
    """Seconds from sending 5 jobs to each one's finished result, on a fresh broker and runner."""
    from confluent_kafka import Consumer, Producer

    kafka = subprocess.Popen([sys.executable, "-m", "scalelab.orchestrator.kafka_embedded", "--topic", "jobs:12",
                              "--topic", "results:12"], stdout=subprocess.PIPE, text=True)
    runner = None
    try:
        addr = kafka.stdout.readline().strip()
        producer = Producer({"bootstrap.servers": addr})
        for i in range(old):
            producer.produce("results", key=f"old{i}", value=json.dumps({
                "id": f"old{i}", "event": "finished", "partition": i % 12, "offset": i // 12, "submitted": 0.0,
                "started": 0.0, "finished": 1.0}))
        producer.flush(10)
        runner = subprocess.Popen([sys.executable, "-m", "scalelab.sandbox.job_runner", "--bootstrap", addr],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "SANDBOX_POD": "runner-bench"})
        assert "ready" in runner.stdout.readline()
        results = Consumer({"bootstrap.servers": addr, "group.id": "bench", "auto.offset.reset": "latest"})
        results.subscribe(["results"])
        results.poll(1.0)  # joined, at the topic's end
        sent = time.time()
        for i in range(5):
            producer.produce("jobs", key=f"job{i}", value=json.dumps({
                "id": f"job{i}", "submitted": time.time(), "request": {"code": "print(1)"}}))
        producer.flush(10)
        got: dict[str, float] = {}
        while len(got) < 5 and time.time() - sent < 120:
            m = results.poll(0.2)
            if m is not None and m.error() is None:
                msg = json.loads(m.value())
                if msg["event"] == "finished" and msg["id"].startswith("job"):
                    got[msg["id"]] = time.time() - sent
        results.close()
        return sorted(got.values())
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(timeout=60)
        kafka.terminate()
        kafka.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=int, default=1100, help="results already on the topic (earlier episodes)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    firsts = []
    for k in range(args.repeats):
        times = one(args.old)
        firsts.append(times[0] if times else float("nan"))
        print(f"repeat {k}: results after {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
    print(f"first result after a runner's start, median of {args.repeats}: {statistics.median(firsts):.2f} s "
          f"({args.old} old results on the topic)")


if __name__ == "__main__":
    main()
