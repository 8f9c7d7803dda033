"""``paper``: the HSLinUCB paper's experiments, ours beside its tables."""

from __future__ import annotations

from pathlib import Path


def cmd_paper(args) -> int:
    from scalelab.cli._common import refuse_overwrite
    from scalelab.experiments.paper import EXPERIMENTS, reproduce_paper

    only = tuple(args.only) if args.only else EXPERIMENTS
    refuse_overwrite([Path(args.out) / "paper-report.md", Path(args.out) / "paper-comparison.csv"], args.force)
    reproduce_paper(args.out, runs=args.runs, only=only, d2=args.d2, real_week=args.real_week)
    report = Path(args.out) / "paper-report.md"
    print(report.read_text())
    print(f"report: {report}")
    return 0


def add_parsers(sub) -> None:
    from scalelab.experiments.paper import EXPERIMENTS

    p = sub.add_parser("paper", help="run the HSLinUCB paper's experiments and print ours beside its tables")
    p.add_argument("--out", default="runs/paper", help="folder of the experiments' run folders and paper-report.md")
    p.add_argument("--d2", help="a second recording for the unseen hot start, in paper-D1-p95.json's format "
                                "(default: paper-D2, the paper's own D2 samples)")
    p.add_argument("--real-week", help="another real-week pattern file (default: the paper's, shipped)")
    p.add_argument("--runs", type=int, help="runs per policy (default: the paper's 10)")
    p.add_argument("--force", action="store_true", help="replace the paper-report.md and paper-comparison.csv of --out")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="EXPERIMENT",
                   help=f"a subset of the experiments: {', '.join(EXPERIMENTS)} (default: all; a hot start brings "
                        "its cold start)")
    p.set_defaults(func=cmd_paper)
