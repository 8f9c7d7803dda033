"""Experiments on the simulator: ``run`` (and ``--resume``), ``capacity``,
``anticipation``, ``compare``, and ``report`` of finished run folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scalelab.cli._common import command, config_path


def cmd_run(args) -> int:
    from scalelab.experiments.config import load_config
    from scalelab.experiments.experiment import run_experiment

    if args.resume:
        overrides = {k: v for k, v in (("runs", args.runs), ("seed", args.seed)) if v is not None}
        if args.config or overrides:  # what was asked must be what the folder runs
            from scalelab.experiments.runfolder import resume_differences

            given = load_config(config_path(args.config), **overrides) if args.config else overrides
            differ = resume_differences(args.resume, given)
            if differ:
                from scalelab.errors import UserError

                raise UserError(f"--resume {args.resume}: the folder's run differs in {'; '.join(differ)}: resume "
                                "without a config (the folder's own), or start a new run")
        result = run_experiment(None, resume=args.resume, workers=args.workers, command=command())
    else:
        overrides = {k: v for k, v in (("runs", args.runs), ("seed", args.seed)) if v is not None}
        cfg = load_config(config_path(args.config), **overrides)
        result = run_experiment(cfg, out=args.out, workers=args.workers, command=command())
    print(result.table())
    print(f"\nrun folder: {result.path}  ({result.seconds:.1f} s)")
    print(f"report:     {result.path / 'report.html'}")
    return 0


def check_run(parser: argparse.ArgumentParser, args) -> None:
    if not args.config and not args.resume:
        parser.error("run needs a CONFIG or --resume DIR")


def cmd_compare(args) -> int:
    args.config, args.resume = "compare", None
    return cmd_run(args)


def cmd_capacity(args) -> int:
    from scalelab.experiments.capacity import load_test
    from scalelab.experiments.config import load_config

    overrides = {"seed": args.seed} if args.seed is not None else {}
    cfg = load_config(config_path(args.config), **overrides)
    table = load_test(cfg, args.students, args.steps)
    print(f"# load test of {cfg.name}: fewest replicas whose steady-state p95 <= {cfg.slo_ms:g} ms over "
          f"{args.steps} steps of {cfg.step_seconds:g} s ({cfg.engine})")
    for students, replicas in table:
        print(f"#   {students:5d} students -> {replicas} replicas")
    print("capacity: " + json.dumps(table))
    return 0


def cmd_anticipation(args) -> int:
    from scalelab.experiments.anticipation import run_anticipation

    folder = run_anticipation(out=args.out, runs=args.runs, variant_runs=args.variant_runs, only=args.only,
                              workers=args.workers, policies=args.policies)
    print((folder / "anticipation.md").read_text())
    print(f"comparison: {folder / 'comparison.html'}")
    return 0


def cmd_architectures(args) -> int:
    from scalelab.experiments.architectures import SHORT_HOURS, run_architectures

    folder = run_architectures(out=args.out, runs=args.runs, hours=SHORT_HOURS if args.short else None,
                               workers=args.workers, live=args.live)
    print((folder / "architectures.md").read_text())
    print(f"comparison: {folder / 'comparison.html'}")
    return 0


def cmd_report(args) -> int:
    """One folder: rewrite its figures and report. Several: also one report comparing them;
    two, one of them live (as its config snapshot records): also their twin report."""
    from scalelab.experiments.report import folder_summary, write_comparison, write_report

    folders = [Path(d) for d in args.dirs]
    configs = {d: folder_summary(d)[0] for d in folders}  # every folder checked before any work
    for d in folders:
        print(f"report:     {write_report(d)}")
    if len(folders) > 1:
        out = Path(args.out) if args.out else folders[0].parent / ("comparison-" + "-vs-".join(d.name for d in folders))[:120]
        print(f"comparison: {write_comparison(folders, out)}")
        if len(folders) == 2:  # a simulated and a live run of one experiment: also step by step
            from scalelab.experiments import twin

            live = [d for d in folders if configs[d].backend == "live"]
            why_not = (("both are live runs" if live else "neither is a live run") + ": a twin is one simulated "
                       "and one live run of one experiment") if len(live) != 1 else ""
            if not why_not:
                sim, measured = sorted(folders, key=lambda d: configs[d].backend == "live")
                why_not = twin.why_not_a_twin(sim, measured)
            if why_not:
                print(f"no twin report: {why_not}")
            else:
                md = twin.twin_report(sim, measured, out)
                print(md.read_text())
                print(f"twin:       {md}")
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, help="runs per policy (overrides the config)")
    p.add_argument("--seed", type=int, help="root seed (overrides the config)")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")


def add_parsers(sub) -> None:
    p = sub.add_parser("run", help="run an experiment config")
    p.add_argument("config", nargs="?", help="a YAML file, or the name of a shipped config")
    p.add_argument("--resume", help="finish the run in this folder without redoing finished episodes")
    _run_options(p)
    p.set_defaults(func=cmd_run, check=check_run)

    p = sub.add_parser("capacity", help="a load test on the simulator: replicas needed per number of students "
                                        "(the capacity table of the calendar policies)")
    p.add_argument("config", help="a YAML file, or the name of a shipped config")
    p.add_argument("--students", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300, 400, 500],
                   help="student counts to test")
    p.add_argument("--steps", type=int, default=60, help="steps measured per (students, replicas) cell")
    p.add_argument("--seed", type=int, help="root seed (overrides the config)")
    p.set_defaults(func=cmd_capacity)

    p = sub.add_parser("anticipation", help="anticipation against reaction: the 5-day evaluation week and three "
                                            "held-out calendars, with the comparison and the targets")
    p.add_argument("--runs", type=int, help="runs per policy on every calendar (default: the config's 10 on the "
                                           "default week, --variant-runs on the others)")
    p.add_argument("--variant-runs", type=int, default=5, help="runs per policy on the held-out calendars")
    p.add_argument("--only", nargs="+", choices=["default", "moved", "resized", "noisy"],
                   help="calendars to run (default: all four)")
    p.add_argument("--policies", nargs="+", metavar="LABEL",
                   help="only these of the config's policies (default: all; the oracle only when named)")
    p.add_argument("--out", default="runs", help="parent folder of the run folders")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.set_defaults(func=cmd_anticipation)

    p = sub.add_parser("architectures", help="the evaluation week on the service and on runners that pull jobs "
                                             "(KEDA, PrairieLearn, HSLinUCB), one report")
    p.add_argument("--runs", type=int, help="runs per policy on every architecture (default: 5; --live: the live "
                                           "configs' 2)")
    p.add_argument("--short", action="store_true", help="Tuesday 08:00-16:00 only (its two exams): a quick look")
    p.add_argument("--live", action="store_true", help="the short form on the live stack: Tuesday 13:00-15:00 "
                                                       "compressed 12 times, the service then the runners "
                                                       "(about 10 min per policy and run)")
    p.add_argument("--out", default="runs", help="parent folder of the run folders")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.set_defaults(func=cmd_architectures)

    p = sub.add_parser("compare", help="the quick start: evaluation week on the simulator, every policy")
    _run_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="(re)write the figures and report.html of run folders; with several, "
                                      "also one report comparing them")
    p.add_argument("dirs", nargs="+", metavar="RUN_FOLDER",
                   help="finished run folders; with two or more, also comparison.html (a simulated and a live "
                        "run: also their twin report)")
    p.add_argument("--out", help="with several folders: the comparison's folder (default: "
                                 "comparison-A-vs-B beside the first folder)")
    p.set_defaults(func=cmd_report)
