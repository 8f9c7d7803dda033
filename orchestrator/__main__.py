"""``python -m orchestrator``: the orchestrator service on the local stack (or any
Kafka + Prometheus + scaler). Runs until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from orchestrator.context import PRESETS
from orchestrator.service import OrchestratorService


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__)
    ap.add_argument("--stack-dir", help="a local stack's folder (scalelab live up): its Kafka, Prometheus, replicas")
    ap.add_argument("--bootstrap", help="Kafka bootstrap address (default: the stack's)")
    ap.add_argument("--prometheus", help="Prometheus URL (default: the stack's)")
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--max", type=int, default=10)
    ap.add_argument("--context", default="default", choices=sorted(PRESETS))
    ap.add_argument("--service", action="append", help="watched span service name (repeatable; default sandbox)")
    args = ap.parse_args(argv)
    if not args.stack_dir:
        ap.error("--stack-dir is required for now (the Kubernetes scaler is configured in k8s/)")
    from orchestrator.stack import LocalStack

    stack = LocalStack(Path(args.stack_dir))
    if not stack.state:
        print(f"orchestrator: error: no stack is up in {args.stack_dir}", file=sys.stderr)
        return 2
    svc = OrchestratorService(
        stack.scaler, bootstrap=args.bootstrap or stack.state["kafka"]["bootstrap"],
        prometheus_url=args.prometheus or stack.state["prometheus"]["url"], context=PRESETS[args.context],
        services=tuple(args.service or ["sandbox"]), min_replicas=args.min, max_replicas=args.max,
    )  # fmt: skip
    svc.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    svc.ready.wait(30)
    print("orchestrator ready", flush=True)
    stop.wait()
    svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
