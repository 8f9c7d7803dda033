"""The live data plane: ``live up | status | scale | down`` of the local stack,
``live run`` of a ``backend: live`` experiment, and ``kafka``, an embedded broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scalelab.cli._common import command, config_path
from scalelab.errors import UserError


def cmd_live_run(args) -> int:
    from scalelab.experiments.experiment import run_live

    if not args.config and not args.resume:
        raise UserError("scalelab live run: give a CONFIG or --resume FOLDER")
    res = run_live(config_path(args.config) if args.config else None, out=args.out, command=command(),
                   bootstrap=args.bootstrap, resume=args.resume)
    print(res.table())
    print(f"\nrun folder: {res.path}  ({res.seconds:.1f} s)")
    return 0


def cmd_live(args) -> int:
    from scalelab.orchestrator.scalers.local import ReplicaSpec
    from scalelab.orchestrator.stack import LocalStack, down_all, stacks

    if args.live_command in ("status", "down") and not args.dir:  # every stack this user started
        if args.live_command == "status":
            print(json.dumps({"stacks": stacks()}, indent=1))
            return 0
        reports = down_all()
        print(json.dumps({"stopped": reports}, indent=1))
        left = {r["dir"]: r["left"] for r in reports if r["left"]}
        if left:
            print(f"scalelab: error: processes still alive after down (folder: pids): {left}", file=sys.stderr)
            return 1
        return 0
    stack = LocalStack(Path(args.dir) if args.dir else None)
    if args.live_command == "up":
        spec = ReplicaSpec(cpu_request=args.cpu_request, cpu_limit=args.cpu_limit,
                           memory_request_mib=args.memory_mib, memory_limit_mib=args.memory_mib)
        print(json.dumps(stack.up(replicas=args.replicas, spec=spec), indent=1))
    elif args.live_command == "status":
        print(json.dumps(stack.status(), indent=1))
    elif args.live_command == "scale":
        if not stack.state:
            raise UserError(f"no stack is up in {stack.dir}; run `scalelab live up` first")
        stack.scaler.scale_to(args.replicas)
        print(json.dumps(stack.status(), indent=1))
    else:
        left = stack.down()
        if left:
            print(f"scalelab: error: processes of the stack in {stack.dir} still alive after down: {left}",
                  file=sys.stderr)
            return 1
        print(json.dumps({"up": False, "dir": str(stack.dir)}))
    return 0


def cmd_kafka(args) -> int:
    from scalelab.orchestrator.kafka_embedded import serve

    serve(brokers=args.brokers, seconds=args.seconds)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("live", help="the local live data plane: Kafka, Prometheus, HAProxy, sandbox replicas")
    lsub = p.add_subparsers(dest="live_command", required=True)
    every = ("every stack this user started (the registry $SCALELAB_STACKS_DIR or ~/.scalelab/stacks: "
             "`live up`'s, `live run`'s in run folders, those whose owner died)")
    for name, text in (("up", "bring the stack up"),
                       ("status", f"print one JSON document about the stack in --dir, or about {every}"),
                       ("scale", "set the replica count"),
                       ("down", f"stop the stack in --dir, or {every}; leave no process")):
        lp = lsub.add_parser(name, help=text)
        lp.add_argument("--dir", help="state folder (default $SCALELAB_LIVE_DIR or ~/.scalelab/live)" if name in
                        ("up", "scale") else "a stack's state folder (without it: every stack this user started)")
        if name in ("up", "scale"):
            lp.add_argument("--replicas", type=int, default=1, help="sandbox replicas")
        if name == "up":
            lp.add_argument("--cpu-request", type=float, default=0.5, help="cores (the paper: 0.5)")
            lp.add_argument("--cpu-limit", type=float, default=0.5, help="cores, enforced by a CFS quota")
            lp.add_argument("--memory-mib", type=int, default=512, help="memory request and limit per replica, MiB")
        lp.set_defaults(func=cmd_live)
    lp = lsub.add_parser("run", help="run a backend: live experiment on a local stack brought up for it, "
                                     "or on a cluster whose orchestrator and injector listen on --bootstrap")
    lp.add_argument("config", nargs="?", help="a YAML file (backend: live), or the name of a shipped config "
                                              "(e.g. live-evaluation-week)")
    lp.add_argument("--out", default="runs", help="parent folder of the run folder")
    lp.add_argument("--resume", help="a live run folder to finish: done episodes are kept, the others continue")
    lp.add_argument("--bootstrap", help="Kafka of a running testbed (e.g. kafka:9092 in k8s/): no local stack")
    lp.set_defaults(func=cmd_live_run)

    p = sub.add_parser("kafka", help="start an embedded Kafka-protocol broker (librdkafka mock) and print its address")
    p.add_argument("--brokers", type=int, default=1, help="brokers of the mock cluster")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C / SIGTERM)")
    p.set_defaults(func=cmd_kafka)
