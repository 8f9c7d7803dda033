"""``python -m scalelab.orchestrator``: the orchestrator service on the local stack
(``--stack-dir``) or on a Kubernetes cluster (``--kubernetes``: in-cluster credentials or
the kubeconfig; ``--deployment`` repeatable, one per pool, the first is the default
target of ``scaleSUT``). Runs until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from scalelab.orchestrator.context import PRESETS, ContextSettings
from scalelab.orchestrator.service import OrchestratorService


def context_settings(args) -> ContextSettings:
    """``--context-json`` if given (every field of :class:`ContextSettings`), else the preset."""
    if args.context_json:
        return ContextSettings(**json.loads(args.context_json))
    return PRESETS[args.context]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scalelab.orchestrator", description=__doc__)
    ap.add_argument("--stack-dir", help="a local stack's folder (scalelab live up): its Kafka, Prometheus, replicas")
    ap.add_argument("--bootstrap", help="Kafka bootstrap address (default: the stack's)")
    ap.add_argument("--prometheus", help="Prometheus URL (default: the stack's)")
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--max", type=int, default=10)
    ap.add_argument("--context", default="default", choices=sorted(PRESETS))
    ap.add_argument("--context-json", help="the full context settings as JSON (overrides --context), "
                                           "as a resolved experiment config has them")
    ap.add_argument("--service", action="append", help="watched span service name (repeatable; default sandbox)")
    ap.add_argument("--kubernetes", action="store_true", help="scale Deployments through the Kubernetes API")
    ap.add_argument("--deployment", action="append", help="Deployment to scale (repeatable: one per pool)")
    ap.add_argument("--namespace", default="default", help="the Deployments' and pods' namespace")
    ap.add_argument("--api-host", help="Kubernetes API URL (default: in-cluster, then kubeconfig)")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for ready replicas")
    ap.add_argument("--jobs", action="store_true", help="the jobs architecture: the queue of topics jobs and "
                    "results and group runners (a local stack up for it says so itself)")
    args = ap.parse_args(argv)
    jobs = {"jobs_topic": "jobs", "results_topic": "results", "group": "runners"} if args.jobs else None
    if args.kubernetes == bool(args.stack_dir):
        ap.error("give exactly one of --stack-dir (local stack) and --kubernetes")
    if args.kubernetes:
        if not (args.bootstrap and args.prometheus):
            ap.error("--kubernetes needs --bootstrap (Kafka) and --prometheus (URL)")
        from scalelab.orchestrator.scalers.kubernetes import KubernetesScaler

        names = args.deployment or ["sandbox"]
        pools = {n: KubernetesScaler(n, args.namespace, host=args.api_host, ready_timeout_s=args.ready_timeout)
                 for n in names}
        scaler, bootstrap, prometheus = pools[names[0]], args.bootstrap, args.prometheus
    else:
        from scalelab.orchestrator.stack import LocalStack

        stack = LocalStack(Path(args.stack_dir))
        if not stack.state:
            print(f"orchestrator: error: no stack is up in {args.stack_dir}", file=sys.stderr)
            return 2
        scaler, pools = stack.scaler, None
        if stack.jobs is not None and not args.jobs:
            j = stack.jobs
            jobs = {"jobs_topic": j.jobs_topic, "results_topic": j.results_topic, "group": j.group}
        bootstrap = args.bootstrap or stack.state["kafka"]["bootstrap"]
        prometheus = args.prometheus or stack.state["prometheus"]["url"]
    svc = OrchestratorService(
        scaler, bootstrap=bootstrap, prometheus_url=prometheus, context=context_settings(args),
        services=tuple(args.service or ["sandbox"]), min_replicas=args.min, max_replicas=args.max,
        namespace=args.namespace, pools=pools, jobs=jobs,
    )  # fmt: skip
    svc.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not svc.ready.wait(120):  # its order consumer has not joined: say so, and go on (it may yet)
        print(f"orchestrator: no assignment on topic 'action' after 120 s ({svc.kafka_error or 'no error'})",
              file=sys.stderr, flush=True)
    print("orchestrator ready", flush=True)
    stop.wait()
    svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
