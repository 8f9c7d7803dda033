"""Requests per second one Locust injector process sustains against `/compute?cpu=0`
on the local stack (4 replicas, 1 core each, so the injector is the bottleneck).

    python benchmarks/bench_injector.py [--users 50] [--seconds 15] [--workers 0]

``--workers N`` runs a Locust master with N worker processes instead of one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalelab.orchestrator.scalers.local import ReplicaSpec
from scalelab.orchestrator.stack import LocalStack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        stack = LocalStack(Path(d))
        stack.up(replicas=4, spec=ReplicaSpec(cpu_request=1.0, cpu_limit=1.0))
        try:
            addr = stack.state["kafka"]["bootstrap"]
            env = {"INJECTOR_CPU": "0", "INJECTOR_WAIT_MIN": "0", "INJECTOR_WAIT_MAX": "0"}
            import os

            proc = subprocess.Popen([sys.executable, "-m", "scalelab.injector", "--host", stack.service_url, "--bootstrap", addr,
                                     "--workers", str(args.workers)],
                                    stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
            assert proc.stdout.readline().strip() == "injector ready"
            from kafka import KafkaConsumer, KafkaProducer

            stats = KafkaConsumer("locust", bootstrap_servers=addr, api_version=(2, 3), group_id="bench",
                                  auto_offset_reset="latest", metadata_max_age_ms=5000)
            prod = KafkaProducer(bootstrap_servers=addr, api_version=(2, 3))
            prod.send("locust_order", json.dumps({"order": "set_user_level", "level": args.users,
                                                  "spawn_rate": 1000}).encode())
            prod.flush()
            time.sleep(3)
            first = last = None
            end = time.time() + args.seconds + 10
            while time.time() < end:
                for records in stats.poll(timeout_ms=500).values():
                    for rec in records:
                        s = json.loads(rec.value)
                        if s["user_count"] == args.users:
                            first = first or s
                            last = s
                if first and last and last["t"] - first["t"] >= args.seconds:
                    break
            rps = (last["num_requests"] - first["num_requests"]) / (last["t"] - first["t"])
            who = f"a Locust master + {args.workers} workers" if args.workers else "one Locust injector process"
            print(f"{who}, {args.users} users, wait 0, /compute?cpu=0: {rps:,.0f} req/s "
                  f"({last['num_failures']} failures)")
            proc.terminate()
            proc.wait(timeout=30)
            stats.close()
            prod.close()
        finally:
            stack.down()


if __name__ == "__main__":
    main()
