"""The command line a newcomer meets: every option explained with its default, listings,
did-you-mean for names, arguments checked before any work."""

from __future__ import annotations

import argparse

import pytest

from scalelab.experiments.cli import build_parser, main


def _options(parser: argparse.ArgumentParser, prefix: str = "scalelab"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prefix} {name}")
        elif action.dest != "help":
            yield prefix, action


def test_every_option_has_help_and_its_default():
    seen = 0
    for where, action in _options(build_parser()):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{where} {name} has no help text"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{where} {name}: its help does not give its default {action.default!r}"
        seen += 1
    assert seen > 60


def test_listings(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for expected in ("compare", "live-evaluation-week", "evaluation-week-v1", "before, after, at_s, duration_s",
                     "hslinucb", "kpa", "slo-cost-v1", "paper-real-week", "package.module:Class"):
        assert expected in out, expected
    assert main(["workload", "show"]) == 0
    assert "evaluation-week-v1" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "step-dmo"], "did you mean 'step-demo'?"),
    (["run", "nothing/here.yaml"], "file 'nothing/here.yaml' does not exist"),
    (["workload", "show", "step", "--param", "befor=3"], "has no parameter 'befor'; did you mean 'before'?"),
    (["workload", "show", "stepp"], "did you mean 'step'?"),
    (["report", "/nonexistent/run"], "has no config.yaml; is it a finished run folder?"),
])  # fmt: skip
def test_one_line_errors_with_a_suggestion(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_paper_only_is_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["paper", "--only", "paper-coldstrat", "--out", str(tmp_path / "p")])
    assert exc.value.code == 2
    assert "invalid choice: 'paper-coldstrat'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # nothing recorded
