"""Evaluation-week students on the live stack: what it sustains and what it costs.

    python benchmarks/bench_students.py [--seconds 30] [--record]

Prints, each a median of ``--repeats`` measurements:

1. **submissions/s per replica and per core**: Locust students with no think time submit
   corpus programs (``POST /run``, sealed runs) to a local stack of 1 and of 2 one-core
   replicas (CFS quota); the replicas' CPU comes from their cgroups, so CPU per
   submission and submissions per core-second are the stack's own;
2. **students per injector process**: one Locust process of students with no think time
   against a stand-in that answers at once (the injector is the bottleneck): its
   submissions/s, and how many students that is at the live evaluation week's think time
   (5-20 s, mean 12.5 s);
3. with ``--record``, the wall time of ``scalelab dataset record --backend live`` on a 5 × 4
   grid (users 5..25 × replicas 1..4, 2 samples per cell, 1 warm-up step, 5 s steps).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from scalelab.orchestrator.scalers.local import CGROUP_ROOT, ReplicaSpec
from scalelab.orchestrator.stack import LocalStack

STUDENT_ENV = {"INJECTOR_TASK": "student", "INJECTOR_WAIT_MIN": "0", "INJECTOR_WAIT_MAX": "0"}


def _injector(url: str, users: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-m", "scalelab.injector", "--host", url, "--users", str(users), "--seconds",
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 120,
                         env={**os.environ, **STUDENT_ENV})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["stats"]


def _replica_cpu_s(stack: LocalStack) -> float:
    total = 0.0
    for r in stack.scaler.replicas:
        f = CGROUP_ROOT / "cpuacct" / "scalelab" / (r.cgroup or r.name) / "cpuacct.usage"
        total += int(f.read_text()) / 1e9 if f.exists() else float("nan")
    return total


def bench_stack(replicas: int, seconds: float, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        stack = LocalStack(Path(d))
        stack.up(replicas=replicas, spec=ReplicaSpec(cpu_request=1.0, cpu_limit=1.0, memory_request_mib=512,
                                                    memory_limit_mib=1024))
        try:
            rates, cpus, fails = [], [], []
            for _ in range(repeats):
                cpu0 = _replica_cpu_s(stack)
                s = _injector(stack.service_url, 8 * replicas, seconds)
                cpu = _replica_cpu_s(stack) - cpu0
                rates.append(s["num_requests"] / seconds)
                cpus.append(cpu / max(s["num_requests"], 1) * 1000)
                fails.append(s["num_failures"] / max(s["num_requests"], 1))
            return {"replicas": replicas, "quota": stack.scaler.cpu_limit_enforced,
                    "submissions_s": statistics.median(rates), "cpu_ms_per_submission": statistics.median(cpus),
                    "failed": statistics.median(fails)}
        finally:
            stack.down()


def bench_injector(seconds: float, repeats: int) -> float:
    from scalelab.injector.corpus import intended_answer, load_corpus

    corpus = load_corpus()
    by_code = {p.code: p for p in corpus.programs}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            p = by_code[json.loads(self.rfile.read(int(self.headers["Content-Length"])))["code"]]
            body = json.dumps(intended_answer(p)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None  # Locust drops its connections when it stops
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rates = [_injector(f"http://127.0.0.1:{server.server_port}", 50, seconds)["num_requests"] / seconds
                 for _ in range(repeats)]
    finally:
        server.shutdown()
    return statistics.median(rates)


def bench_record() -> float:
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-m", "scalelab.cli", "dataset", "record", "--backend", "live",
                              "--config", "live-evaluation-week", "--users", "5,10,15,20,25", "--replicas",
                              "1,2,3,4", "--samples", "2", "--warmup-steps", "1", "--out", f"{d}/grid.parquet"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="each measurement's length, s (default 30)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per figure (median; default 3)")
    ap.add_argument("--record", action="store_true", help="also time a 5 x 4 live dataset recording (~8 min)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; medians of {args.repeats} x {args.seconds:g} s")
    for n in (1, 2):
        r = bench_stack(n, args.seconds, args.repeats)
        print(f"stack, {n} one-core replica(s) (CPU quota: {r['quota']}): {r['submissions_s']:.2f} submissions/s "
              f"= {r['submissions_s'] / n:.2f} per replica; {r['cpu_ms_per_submission']:.0f} ms of replica CPU "
              f"per submission = {1000 / r['cpu_ms_per_submission']:.2f} submissions per core-second; "
              f"failed {r['failed']:.2%}")
    rate = bench_injector(args.seconds, args.repeats)
    print(f"one Locust process of students (no think time, instant answers): {rate:.0f} submissions/s "
          f"= {rate * 12.5:.0f} students at a mean think time of 12.5 s")
    if args.record:
        print(f"scalelab dataset record --backend live, 5 x 4 grid, 2 samples/cell: {bench_record():.0f} s wall")


if __name__ == "__main__":
    main()
