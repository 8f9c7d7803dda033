"""``twin``: one config on the simulator and on the live stack, then the twin report with
its noise floor (two or more live runs of the same config and seed)."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli._common import command, config_path


def cmd_twin(args) -> int:
    from dataclasses import replace

    from scalelab.errors import UserError
    from scalelab.experiments.config import load_config
    from scalelab.experiments.experiment import run_experiment, run_live
    from scalelab.experiments.twin import (
        check_same_experiment,
        floor_report,
        read_summary,
        shipped_live_summaries,
        twin_report,
    )

    cfg = load_config(config_path(args.config))
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    if args.shipped_live:
        args.live_summary = [str(p) for p in shipped_live_summaries(cfg.name)]
    if args.live_summary:  # shipped summaries of live runs: checked before any work
        if len(args.live_summary) < 2:
            raise UserError("--live-summary needs at least two files (live runs of the same config and seed)")
        check_same_experiment(cfg.name, *(read_summary(p) for p in args.live_summary))
    # the simulator as many times as live in all; like the live folders, each group of
    # runs repeats the policy (and student) seeds of runs 0..runs-1, with its own noise
    sim_runs = cfg.runs * max(args.live_repeats, len(args.live or []), len(args.live_summary or []), 1)
    sim = run_experiment(replace(cfg, backend="sim", runs=sim_runs, seed_runs=cfg.runs), out=args.out,
                         command=command())
    print(f"simulated: {sim.path} ({sim.seconds:.1f} s)")
    if args.live_summary:  # the noise floor only (no live steps here)
        md = floor_report(sim.path, args.live_summary, out=sim.path / "twin")
        print(md.read_text())
        print(f"noise floor: {md}")
        return 0
    live_paths = [Path(p) for p in args.live or []]  # live runs made before (the simulator recalibrated since)
    while len(live_paths) < max(args.live_repeats, 1):  # the same config and seed each time
        live = run_live(replace(cfg, backend="live"), out=args.out, command=command())
        print(f"live: {live.path} ({live.seconds:.1f} s)")
        live_paths.append(live.path)
    md = twin_report(sim.path, live_paths[0], live_again=live_paths[1:])
    print(md.read_text())
    print(f"twin report: {md}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("twin", help="run a config on the simulator and on the live stack, then compare them")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. live-evaluation-week)")
    p.add_argument("--runs", type=int, help="runs per policy in each live run folder (default: the config's); "
                                            "the simulator runs as many as all live folders together")
    p.add_argument("--out", default="runs", help="parent folder of the run folders (default: runs)")
    p.add_argument("--live-repeats", type=int, default=2,
                   help="live run folders of the same config and seed (default 2: live against live is the noise "
                        "floor; more give it more runs)")
    p.add_argument("--live", metavar="FOLDER", action="append",
                   help="a live run folder made before (twice or more: the sides of the floor) instead of running live")
    p.add_argument("--live-summary", metavar="FILE", action="append",
                   help="a shipped summary of a live run (twice or more): compare the simulator with them, no live run")
    p.add_argument("--shipped-live", action="store_true",
                   help="compare the simulator with the live runs shipped with scalelab for this config "
                        "(experiments/data/twin/<config>/), no live run")
    p.set_defaults(func=cmd_twin)
