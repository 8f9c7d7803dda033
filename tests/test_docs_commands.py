"""The commands in README.md and docs/*.md, run as a newcomer would run them (as doctest
runs a docstring's examples).

Every command of a ``bash`` block is classified below, and a command the docs gain or lose
fails :func:`test_every_command_in_the_docs_is_classified` until it is classified here:

- :data:`RUN`: runs here in under two minutes, so it is executed word for word, in the
  order the docs give, in a fresh folder holding the project's ``experiments/``,
  ``examples/`` and ``k8s/`` (a run folder's placeholder name, such as
  ``runs/step-demo-20261123-101500``, becomes the folder the run before it made);
- :data:`COVERED`: longer than two minutes here, or it writes into the user's home: the
  named test runs the same code on a smaller experiment;
- :data:`NOT_HERE`: needs what this machine has not (Docker, a Kubernetes cluster, a
  live stack the other tests start themselves), with the reason.

Every ``scalelab`` command, run here or not, and every inline ``scalelab ...`` of the
prose must parse with the program's own command line (a misspelt option fails here).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Executed word for word, in this order (a later one may read what an earlier one wrote):
#: command -> the exit status the docs promise (0, or 2 for the command shown failing)
RUN = {
    "scalelab list": 0,
    "python -m scalelab.agent.check": 0,
    "scalelab workload show evaluation-week-v1 --param days=5 --out week.png": 0,
    "scalelab corpus show": 0,
    "scalelab calibrate --out calibration.png": 0,
    "scalelab dataset record --seed 1 --out D1.parquet": 0,
    "scalelab capacity evaluation-week-5d --steps 20": 0,
    "scalelab run experiments/configs/step-demo.yaml --runs 5 --seed 1 --out runs": 0,
    "scalelab run --resume runs/step-demo-20261123-101500": 0,
    "scalelab report runs/step-demo-20261123-101500": 0,
    "scalelab run experiments/configs/step-demo.yaml --out runs": 0,
    "scalelab run live-evaluation-week": 2,
    "scalelab twin live-evaluation-week --runs 1 --shipped-live": 0,
    "python -m scalelab.orchestrator --help": 0,
    "kubectl kustomize k8s/overlays/dev > /tmp/dev.yaml && kubernetes-validate --strict /tmp/dev.yaml": 0,
    "pip install -e . && scalelab compare": 0,
}

#: Longer than two minutes here (or writing outside the folder): the test that runs the
#: same code on a smaller experiment.
COVERED = {
    "scalelab compare": "the quick start, run word for word above",
    "scalelab calibrate --engine fluid --profile sandbox":
        "tests/test_fluid.py::test_the_fluid_engine_meets_its_target_on_the_measured_corpus and "
        "tests/test_calibration_report.py::test_fluid_against_des_runs_every_demand_kind_and_judges_the_cells "
        "(about 70 s here: 56 cells on both engines)",
    "scalelab paper": "tests/test_paper_reproduction.py::test_cold_start_on_paper_d1_meets_the_targets "
                      "(about 70 s here: its four experiments at full size)",
    "scalelab anticipation": "tests/test_anticipatory.py (about 30 min at full size)",
    "scalelab architectures": "tests/test_architectures.py (about 30 min at full size)",
    "scalelab report runs/A runs/B --out runs/A-vs-B":
        "tests/test_twin.py::test_scalelab_report_of_two_run_folders_puts_them_side_by_side",
    "scalelab twin live-evaluation-week": "tests/test_twin.py (a live campaign: about 90 min)",
    "scalelab twin live-evaluation-week --runs 2": "tests/test_twin.py (a live campaign: about 90 min)",
    "scalelab twin live-evaluation-week --runs 2 --live runs/A --live runs/B": "tests/test_twin.py (needs live runs)",
    "scalelab twin CONFIG --live-summary A.json --live-summary B.json":
        "tests/test_twin.py::test_the_simulator_against_the_live_runs_shipped_with_scalelab",
    "scalelab sweep experiments/configs/compare.yaml --grid policy=hslinucb,hpa-default,threshold-cpu "
    "--grid seed=1,2,3 --grid workload.days=0.5,1 --out runs/sweep": "tests/test_sweep.py (12 compare runs: ~10 min)",
    "scalelab tune compare --policy hpa-default --grid target_utilization=30,40,50,60,70,80 --out runs/tune-hpa":
        "tests/test_tune.py::test_tune_chooses_on_tuning_seeds_and_judges_on_held_out_seeds (about 3 min here)",
    "scalelab calibrate --dataset live-students.parquet --profile sandbox --fit 30 --save sandbox-here "
    "--steps 60 --out calibration-live.png": "tests/test_calibration_report.py (needs a live recording)",
    "bash scripts/install-system-deps.sh && pip install -e \".[dev,live]\" && scripts/test": ".ci/run runs it",
}

#: Needs what this machine has not, or what the live tests start themselves.
NOT_HERE = {
    "docker": "Docker: no engine here (the Dockerfiles are built by hand; docs/kubernetes.md)",
    "kubectl apply": "a Kubernetes cluster (the manifests are checked offline by tests/test_k8s.py)",
    "kubectl -n": "a Kubernetes cluster",
    "kubectl cluster-info": "a Kubernetes cluster",
    "kubectl delete": "a Kubernetes cluster",
    "kubectl kustomize k8s/overlays/dev | ": "a Kubernetes cluster (the rendering is checked by tests/test_k8s.py)",
    "kind ": "kind: no Docker engine here",
    "cd k8s/overlays/external": "edits the shipped overlay in place (tests/test_k8s.py renders it)",
    "cd - && kubectl apply": "a Kubernetes cluster",
    "sed -i": "edits the shipped overlay in place",
    "curl ": "a Kubernetes cluster",
    "REG=": "a registry",
    "cat >> k8s/overlays/paper": "edits the shipped overlay in place",
    "scalelab live ": "the live stack: tests/test_live_stack.py and tests/test_live_run.py start it themselves",
    "scalelab kafka": "the embedded broker: tests/test_kafka_spans.py starts it",
    "scalelab dataset record --backend live": "the live stack (hours of measurement)",
    "python -m scalelab.injector": "the live stack: tests/test_injector.py starts it",
    "python -m scalelab.agent --config": "the live stack: tests/test_agent_process.py starts it",
    "python -m scalelab.orchestrator --stack-dir": "the live stack: tests/test_orchestrator_live.py starts it",
    "pip install -e \".[live]\"": ".ci/run installs it",
    "pip install -e \".[notebooks,live]\" && jupyter lab": "an interactive server (tests/test_notebooks.py runs "
                                                           "the notebooks)",
    "pip install kubernetes-validate": "installed by the dev extra",
    "python benchmarks/": "benchmarks print figures on a quiet machine; never timed in tests",
    "kubectl kustomize k8s/overlays/dev | less": "an interactive pager (the rendering is the next command's)",
    "bash scripts/install-system-deps.sh": "as root: .ci/run runs it",
    "scalelab report runs-k8s/": "run folders copied from a cluster",
}

#: Placeholders of the docs that a run before them defines: pattern -> how to find it
PLACEHOLDER = re.compile(r"runs/step-demo-\d{8}-\d{6}")


def bash_commands(path: Path) -> list[str]:
    """The commands of ``path``'s bash blocks: continuations joined, comments and
    here-documents left out."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        text = block.replace("\\\n", " ")
        heredoc = None
        for line in text.splitlines():
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if m := re.search(r"<<\s*'?(\w+)'?", line):
                heredoc = m.group(1)
            command = re.sub(r"\s+#.*$", "", line).strip() if not line.lstrip().startswith("#") else ""
            if command:
                out.append(" ".join(command.split()))
    return out


def inline_commands(path: Path) -> list[str]:
    """``scalelab ...`` and ``python -m scalelab...`` commands quoted in the prose (one
    code span each)."""
    return [" ".join(c.split()) for c in re.findall(r"`((?:scalelab|python -m scalelab\S*) [^`]+)`", path.read_text())]


def all_commands() -> list[tuple[str, str]]:
    return [(p.name, c) for p in DOCS for c in bash_commands(p)]


def classification(command: str) -> str | None:
    if command in RUN:
        return "run"
    if command in COVERED:
        return "covered"
    if any(command.startswith(prefix) for prefix in NOT_HERE):
        return "not here"
    return None


def test_every_command_in_the_docs_is_classified():
    unknown = [f"{doc}: {c}" for doc, c in all_commands() if classification(c) is None]
    assert not unknown, "classify in tests/test_docs_commands.py:\n" + "\n".join(unknown)
    shown = {c for _, c in all_commands()} | {c for p in DOCS for c in inline_commands(p)}
    stale = [c for c in (*RUN, *COVERED) if c not in shown and c != "scalelab compare"]
    assert not stale, f"no longer in the docs: {stale}"


def test_every_covering_test_exists():
    for command, where in COVERED.items():
        m = re.match(r"(tests/\S+?\.py)(?:::(\w+))?", where)
        if m:
            text = (ROOT / m.group(1)).read_text()
            assert m.group(2) is None or f"def {m.group(2)}(" in text, (command, where)


def _argv(command: str) -> list[str] | None:
    """The ``scalelab`` argv of a command, or None."""
    words = shlex.split(command.split("&&")[-1].split("|")[0].split(">")[0])
    return words[1:] if words and words[0] == "scalelab" else None


def _subcommand(argv: list[str]):
    """The argparse parser of ``scalelab argv``'s (sub)command and the words after it."""
    import argparse

    from scalelab.cli import build_parser

    parser, rest = build_parser(), list(argv)
    while rest:
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not sub or rest[0] not in sub[0].choices:
            break
        parser, rest = sub[0].choices[rest[0]], rest[1:]
    return parser, rest


@pytest.mark.parametrize("command", sorted({c for _, c in all_commands() if c.split()[0] == "scalelab"
                                            or "&& scalelab" in c}))
def test_every_scalelab_command_of_the_docs_blocks_parses(command):
    """A whole command line: the program's own parser takes it (placeholders in capitals,
    such as CONFIG or FOLDER, are values like any other)."""
    from scalelab.cli import build_parser

    build_parser().parse_args(_argv(command))


@pytest.mark.parametrize("command", sorted({c for p in DOCS for c in inline_commands(p) if c.startswith("scalelab")}))
def test_every_scalelab_command_quoted_in_the_prose_names_real_commands_and_options(command):
    """A command quoted in a sentence may be a fragment (``scalelab run --resume``): its
    (sub)command exists and every option it names is one of that command's."""
    argv = _argv(command)
    if argv is None or "..." in argv:
        pytest.skip("not a scalelab command line")
    parser, rest = _subcommand(argv)
    assert parser.prog != "scalelab" or not rest or rest[0].startswith("-"), f"{command}: no such command"
    known = {o for a in parser._actions for o in a.option_strings}
    unknown = [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in known]
    assert not unknown, f"{command}: {parser.prog} has no {unknown}"


def test_the_docs_commands_that_run_here_run_as_written(tmp_path):
    """Each :data:`RUN` command, in order, in one fresh folder (its own ``runs/``): it ends
    with the status the docs promise; a command shown failing fails with the reason the
    docs give."""
    for name in ("experiments", "examples", "k8s"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    made: list[Path] = []
    for command, status in RUN.items():
        if command.startswith("pip install -e ."):  # the project is installed: the quick start's second half
            command = command.split("&&", 1)[1].strip()
        if made:
            command = PLACEHOLDER.sub(str(made[-1].relative_to(tmp_path)), command)
        res = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300, executable="/bin/bash")
        assert res.returncode == status, f"{command}: status {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        if command.startswith("scalelab run "):
            made = sorted((tmp_path / "runs").glob("step-demo-*"))
        if status == 2:
            assert "backend='live' runs with `scalelab live run CONFIG`" in res.stderr, res.stderr
    assert (tmp_path / "calibration.png").stat().st_size > 10_000
    assert (tmp_path / "week.png").is_file() and (tmp_path / "D1.parquet").is_file()
    assert (made[-1] / "complete.json").is_file() and (made[-1] / "report.html").is_file()
