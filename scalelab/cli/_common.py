"""What the command modules share: a config by name or path, the command line as typed,
options parsed into values (a :class:`~scalelab.errors.UserError` naming
the option when they are malformed), and help texts that end with their default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalelab.errors import UserError


def config_path(name: str) -> Path:
    """A YAML file, or the name of a shipped config (did-you-mean when there is none)."""
    from scalelab.experiments.config import config_path

    return config_path(name)


def command() -> str:
    """The command line as typed, recorded in a run folder's ``command.txt``."""
    return "scalelab " + " ".join(sys.argv[1:])


def parse_params(items: list[str] | None) -> dict:
    """``KEY=VALUE`` items (the value read as YAML) as a dict."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param {item!r} must be KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def int_list(text: str, what: str) -> tuple[int, ...]:
    """``"1,2,3"`` as positive integers; ``what`` names the option in the error."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"{what} must be integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} must be integers >= 1, got {text!r}")
    return values


def with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option's help ends with its default (unless it says it already)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                with_defaults(sub)
        elif action.help and action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
            action.help += f" (default: {action.default})"
    return parser


def refuse_overwrite(paths, force: bool, option: str = "--out") -> None:
    """Refuse, before any work, to replace files that exist (a ``UserError`` naming
    them), unless ``force``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} exist{'s' if len(existing) == 1 else ''}: pass --force to replace "
                        f"{'it' if len(existing) == 1 else 'them'}, or another {option}")

