"""``scalelab``: a thin shim over the library (every command is one library call).

One module per command group, each adding its subparsers (``add_parsers``) and holding
its commands (``cmd_*``): :mod:`~scalelab.cli.run` (run, capacity, anticipation,
compare, report), :mod:`~scalelab.cli.twin`, :mod:`~scalelab.cli.catalog` (workload,
list), :mod:`~scalelab.cli.paper`, :mod:`~scalelab.cli.live` (live, kafka),
:mod:`~scalelab.cli.sweep`, :mod:`~scalelab.cli.dataset` (dataset, corpus),
:mod:`~scalelab.cli.calibrate`. :func:`main` turns the project's errors into one line
(and a hint for an operational fault) and an exit status; a bug keeps its traceback.

Examples::

    scalelab compare                      # evaluation week on the simulator, every policy
    scalelab run experiments/configs/step-demo.yaml --runs 3 --seed 1
    scalelab run CONFIG --resume runs/step-demo-20261123-101500
    scalelab report runs/step-demo-20261123-101500
    scalelab workload show evaluation-week-v1 --out week.png
    scalelab calibrate --out calibration.png
"""

from __future__ import annotations

import argparse
import sys

from scalelab.cli import calibrate, catalog, dataset, live, paper, run, sweep, tune, twin
from scalelab.cli._common import with_defaults
from scalelab.errors import OperationalError, RunInterrupted, ScalelabError, TemporaryError

EPILOG = __doc__.split("Examples::", 1)[1]

#: The command groups, in the order ``scalelab --help`` lists their commands.
GROUPS = (run, twin, catalog, paper, live, sweep, tune, dataset, calibrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalelab", description="Horizontal autoscaling with contextual bandits: a testbed.",
        epilog="examples:" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return with_defaults(parser)


def hint(exc: OperationalError) -> str:
    """What to do about an operational fault: when to try again, or what to check."""
    if isinstance(exc, TemporaryError):
        return f"a temporary fault: it may go away; try again in {exc.retry_after_s:g} s"
    return ("retrying will not fix this; check the service, process or file the message names "
            "(a local live stack: `scalelab live status` and the logs in its state folder)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "check", None) is not None:  # a command's own check of its arguments
        args.check(parser, args)
    try:
        return args.func(args)
    except RunInterrupted as exc:  # Ctrl-C in a run: its finished episodes are kept
        print(f"\n{exc}", file=sys.stderr)
        return exc.exit_code
    except OperationalError as exc:  # outside the project's code: one line and what to do
        print(f"scalelab: {_first_line(exc)}\nhint: {hint(exc)}", file=sys.stderr)
        return exc.exit_code
    except ScalelabError as exc:  # UserError and the base: one line; a bug keeps its traceback
        print(f"scalelab: error: {_first_line(exc)}", file=sys.stderr)
        return exc.exit_code


__all__ = ["build_parser", "main"]
