"""``python -m scalelab.injector --host URL --bootstrap ADDR``: the Locust injector master
(library mode, headless) obeying ``locust_order``. With ``--workload NAME`` it follows a
workload's ``users_at(t)`` instead (``--compression`` speeds time up)."""

from __future__ import annotations

import argparse
import json
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scalelab.injector", description=__doc__)
    ap.add_argument("--host", required=True, help="the sandbox service URL")
    ap.add_argument("--workers", type=int, default=0, help="Locust worker processes (0: one process)")
    ap.add_argument("--worker", action="store_true", help="be a worker of the master at --master-port")
    ap.add_argument("--master-port", type=int, default=0, help="the master's port for workers (0: any free one)")
    ap.add_argument("--master-host", default="127.0.0.1", help="where a --worker finds its master")
    ap.add_argument("--master-bind", default="127.0.0.1", help="the master's interface for workers (0.0.0.0 in a pod)")
    ap.add_argument("--expect-workers", type=int, default=0, help="workers started elsewhere (pods) to wait for")
    ap.add_argument("--users", type=int, help="start this many users now (no Kafka needed)")
    ap.add_argument("--bootstrap", help="Kafka bootstrap (orders on locust_order, stats on locust)")
    ap.add_argument("--workload", help="follow this workload's users_at(t) (no Kafka orders then)")
    ap.add_argument("--compression", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, help="stop after this long")
    ap.add_argument("--report-s", type=float, default=1.0, help="seconds between statistics on topic locust")
    args = ap.parse_args(argv)
    import gevent

    from scalelab.injector.master import InjectorMaster, run_worker

    if args.worker:
        run_worker(args.host, args.master_port, args.master_host)
        return 0
    master = InjectorMaster(args.host, None if args.workload else args.bootstrap, report_s=args.report_s,
                            workers=args.workers, master_port=args.master_port, expect_workers=args.expect_workers,
                            bind_host=args.master_bind)
    gevent.signal_handler(signal.SIGTERM, master.done.set)
    gevent.signal_handler(signal.SIGINT, master.done.set)
    if args.workload:
        from scalelab.injector.shape import make_shape
        from scalelab.injector.workloads import make_workload

        master.env.shape_class = make_shape(make_workload(args.workload), args.compression)()
        master.env.shape_class.runner = master.runner
        master.runner.start_shape()
    if not master.start():
        print("injector: error: no partitions of locust_order assigned within 60 s", file=sys.stderr)
        return 1
    if args.users:
        master.apply({"order": "set_user_level", "level": args.users, "spawn_rate": args.users})
    print("injector ready", flush=True)
    master.serve(args.seconds)
    print(json.dumps({"stats": master.stats(), "workers": len(master.workers)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
