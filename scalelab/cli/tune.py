"""``tune``: a baseline's parameters chosen on tuning seeds and judged on held-out seeds."""

from __future__ import annotations

from scalelab.cli._common import config_path, int_list


def cmd_tune(args) -> int:
    from scalelab.experiments.runner import command_bar
    from scalelab.experiments.sweep import parse_grid
    from scalelab.experiments.tune import tune

    with command_bar(True, "tune", unit="cell") as bar:
        res = tune(config_path(args.config), args.policy, parse_grid(args.grid), args.out, criterion=args.criterion,
                   budget=args.budget, tuning_seeds=int_list(args.tuning_seeds, "--tuning-seeds"),
                   held_out_seeds=int_list(args.held_out_seeds, "--held-out-seeds"), runs=args.runs,
                   executor=args.executor, scheduler=args.scheduler, workers=args.workers, progress=bar)
    print((res.path / "tune.md").read_text())
    print(f"report: {res.path / 'tune.md'} (and tune.json)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("tune", help="choose a baseline's parameters on tuning seeds, judge them on held-out seeds")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. compare)")
    p.add_argument("--policy", required=True, help="the policy to tune, by its label in the config (e.g. hpa-default)")
    p.add_argument("--grid", action="append", required=True, metavar="PARAM=V1,V2",
                   help="a parameter of the policy and its values; repeatable")
    p.add_argument("--criterion", choices=["knee", "budget"], default="knee",
                   help="knee: nearest the ideal corner of the sets' own front; budget: the fewest replica-hours "
                        "within --budget violations per run")
    p.add_argument("--budget", type=float, help="violations per run the budget criterion allows")
    p.add_argument("--tuning-seeds", default="101,102,103", help="seeds the choice is made on")
    p.add_argument("--held-out-seeds", default="201,202,203,204,205", help="seeds the default and the choice are "
                                                                           "judged on (never used to choose)")
    p.add_argument("--runs", type=int, default=1, help="runs per seed")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: processes on this machine; dask: a Dask cluster (--scheduler)")
    p.add_argument("--scheduler", help="the Dask scheduler's address (executor dask), e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, help="local processes (default: one per core)")
    p.add_argument("--out", default="runs/tune", help="the folder: tuning/, held-out/, tune.md, tune.json")
    p.set_defaults(func=cmd_tune)
