"""The command line a newcomer meets: every option explained with its default, listings,
did-you-mean for names, arguments checked before any work; the project's errors as one
line (and a hint for an operational fault), a bug with its traceback."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

import scalelab.cli.run
from scalelab.cli import build_parser, main
from scalelab.errors import PermanentError, ScalelabError, TemporaryError, UserError


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


def _compare_raises(monkeypatch, exc: BaseException) -> None:
    def cmd_compare(args):
        raise exc

    monkeypatch.setattr(scalelab.cli.run, "cmd_compare", cmd_compare)


def test_a_user_error_prints_its_first_line_and_exits_2(monkeypatch, capsys):
    _compare_raises(monkeypatch, UserError("config: runs=0 must be >= 1\n(the whole config follows)"))
    assert main(["compare"]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == ["scalelab: error: config: runs=0 must be >= 1"] and out.out == ""


def test_a_temporary_error_prints_one_line_and_when_to_try_again_and_exits_3(monkeypatch, capsys):
    _compare_raises(monkeypatch, TemporaryError("Prometheus at http://127.0.0.1:9090 does not answer",
                                                retry_after_s=2.5))
    assert main(["compare"]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "scalelab: Prometheus at http://127.0.0.1:9090 does not answer",
        "hint: a temporary fault: it may go away; try again in 2.5 s",
    ]


def test_a_permanent_error_prints_one_line_and_what_to_check_and_exits_3(monkeypatch, capsys):
    _compare_raises(monkeypatch, PermanentError("the agent of hslinucb run 0 died 4 times\nits last words: ..."))
    assert main(["compare"]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "scalelab: the agent of hslinucb run 0 died 4 times",
        "hint: retrying will not fix this; check the service, process or file the message names "
        "(a local live stack: `scalelab live status` and the logs in its state folder)",
    ]


def test_the_base_error_prints_one_line_and_exits_1(monkeypatch, capsys):
    _compare_raises(monkeypatch, ScalelabError(""))
    assert main(["compare"]) == 1
    assert capsys.readouterr().err.splitlines() == ["scalelab: error: ScalelabError"]


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), KeyError("a bug"), KeyboardInterrupt()])
def test_a_bug_and_ctrl_c_keep_their_traceback(monkeypatch, capsys, exc):
    _compare_raises(monkeypatch, exc)
    with pytest.raises(type(exc)) as raised:
        main(["compare"])
    assert raised.value is exc and capsys.readouterr().err == ""


def test_run_without_a_config_or_resume_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    assert "scalelab: error: run needs a CONFIG or --resume DIR" in capsys.readouterr().err


def test_report_of_two_folders_takes_the_live_one_from_its_config_snapshot(tmp_path, monkeypatch, capsys):
    """The live run is the folder whose recorded config says backend: live, whatever its
    name or its config's text (here the simulated one's name says live)."""
    import scalelab.experiments.report as report
    import scalelab.experiments.twin as twin

    live, sim = tmp_path / "measured", tmp_path / "backend: live"
    backends = {live: "live", sim: "sim"}
    for folder, backend in backends.items():  # one experiment, two backends
        folder.mkdir()
        (folder / "config.yaml").write_text(f"name: x\nseed: 1\nbackend: {backend}\n")
    monkeypatch.setattr(report, "folder_summary", lambda d: (SimpleNamespace(backend=backends[Path(d)]), None))
    monkeypatch.setattr(report, "write_report", lambda d: Path(d) / "report.html")
    monkeypatch.setattr(report, "write_comparison", lambda folders, out: Path(out) / "comparison.html")
    pairs = []

    def twin_report(sim_dir, live_dir, out):
        pairs.append((sim_dir, live_dir))
        (tmp_path / "twin.md").write_text("twin\n")
        return tmp_path / "twin.md"

    monkeypatch.setattr(twin, "twin_report", twin_report)
    for order in ([live, sim], [sim, live]):
        assert main(["report", *map(str, order), "--out", str(tmp_path / "side")]) == 0
    assert pairs == [(sim, live), (sim, live)]


def test_list_policies_shows_each_policys_parameters_with_their_defaults(capsys):
    from scalelab.cli import main

    assert main(["list", "policies"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["hslinucb"])
    params = lines[at + 1]
    assert "alpha=1.0" in params and "lam=1.0" in params and "slo_ms=600.0" in params and "seed" not in params
    kpa = next(i for i, line in enumerate(lines) if line.split()[:1] == ["kpa"])
    assert "stable_window_s=60.0" in " ".join(lines[kpa + 1: kpa + 4])
    assert "min_replicas, max_replicas, step_seconds" in out.replace("\n", " ")


@pytest.mark.parametrize("argv, files", [
    (["workload", "show", "step", "--out", "{d}/step.png"], ["step.png"]),
    (["dataset", "record", "--users", "5", "--replicas", "1", "--samples", "1", "--out", "{d}/D.parquet"],
     ["D.parquet.meta.json"]),
    (["corpus", "measure", "--out", "{d}/measured.json"], ["measured.json"]),
    (["paper", "--out", "{d}"], ["paper-comparison.csv"]),
    (["calibrate", "--out", "{d}/c.png"], ["c.csv"]),
])  # fmt: skip
def test_no_command_replaces_a_file_without_force(tmp_path, capsys, argv, files):
    """Every command that writes named files refuses, before any work, to replace one that
    exists (one line naming it and --force); nothing is written."""
    from scalelab.cli import main

    for name in files:
        (tmp_path / name).write_text("kept")
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / files[0]}" in err and "pass --force" in err
    assert all((tmp_path / name).read_text() == "kept" for name in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
