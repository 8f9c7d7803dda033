"""``sweep``: config variants x seeds (a grid), locally or on a Dask cluster."""

from __future__ import annotations

import sys

from scalelab.cli._common import config_path


def cmd_sweep(args) -> int:
    from scalelab.experiments.runner import command_bar
    from scalelab.experiments.sweep import parse_grid, run_sweep

    with command_bar(True, "sweep", unit="cell") as bar:
        res = run_sweep(config_path(args.config), parse_grid(args.grid), args.out, executor=args.executor,
                        scheduler=args.scheduler, workers=args.workers, band=args.band, progress=bar)
    print((res.path / "leaderboard.md").read_text())
    print(f"{len(res.ran)} cells ran, {len(res.skipped)} already done, {len(res.failed)} failed; "
          f"table {res.path / 'sweep.csv'}")
    for name, reason in res.failed.items():
        print(f"FAILED {name}: {reason} (see {res.path / 'cells' / (name + '.error')})", file=sys.stderr)
    return 1 if res.failed else 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="run config variants x seeds (a grid) locally or on a Dask cluster")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. compare)")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="a dotted config key (or seed, or policy) and its values; repeatable")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: processes on this machine; dask: a Dask cluster (--scheduler)")
    p.add_argument("--scheduler", help="the Dask scheduler's address (executor dask), e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, help="local processes (default: one per core)")
    p.add_argument("--out", default="runs/sweep", help="the sweep's folder: cells/, sweep.csv, leaderboard.md")
    p.add_argument("--band", type=float, default=0.1, help="relative band of 'equal' cost or violations (0.1: 10 %%)")
    p.set_defaults(func=cmd_sweep)
