"""``twin``: one config on the simulator and on the live stack, then the twin report."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli._common import command, config_path


def cmd_twin(args) -> int:
    from dataclasses import replace

    from scalelab.experiments.config import load_config
    from scalelab.experiments.experiment import run_experiment, run_live
    from scalelab.experiments.twin import twin_report

    cfg = load_config(config_path(args.config))
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    sim = run_experiment(replace(cfg, backend="sim"), out=args.out, command=command())
    print(f"simulated: {sim.path} ({sim.seconds:.1f} s)")
    if args.live:  # a live run made before (the simulator recalibrated since, say)
        live_path = Path(args.live)
    else:
        live = run_live(replace(cfg, backend="live"), out=args.out, command=command())
        print(f"live: {live.path} ({live.seconds:.1f} s)")
        live_path = live.path
    md = twin_report(sim.path, live_path)
    print(md.read_text())
    print(f"twin report: {md}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("twin", help="run a config on the simulator and on the live stack, then compare them")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. live-evaluation-week)")
    p.add_argument("--runs", type=int, help="runs per policy on each backend (default: the config's)")
    p.add_argument("--out", default="runs", help="parent folder of the two run folders (default: runs)")
    p.add_argument("--live", metavar="FOLDER", help="compare with this live run folder instead of running live")
    p.set_defaults(func=cmd_twin)
