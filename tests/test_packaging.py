"""One import name: scalelab installs ``scalelab`` and nothing else at the top level, and a
researcher's own ``experiments/``, ``agent.py`` or ``simulator.py`` cannot shadow it."""

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from scalelab import read_steps

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_only_scalelab_at_the_top_level(tmp_path):
    # built from a copy of the tree (links kept as links), so that the build leaves nothing in it
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                          "--wheel-dir", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("scalelab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"scalelab", next(t for t in top if t.endswith(".dist-info"))}, sorted(top)
    # the linked folders arrive as files (the links are followed), with their data
    for path in ("scalelab/agent/loop.py", "scalelab/orchestrator/native/fixed_port.c",
                 "scalelab/experiments/configs/compare.yaml", "scalelab/simulator/data/paper-D1-p95.json",
                 "scalelab/agent/policies/data/p95-rule.onnx", "scalelab/cli/__init__.py",
                 "scalelab/experiments/data/twin/live-evaluation-week/summary-live-a.json"):
        assert path in names, path
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "scalelab = scalelab.cli:main" in entry


def test_the_installed_distribution_names_only_scalelab():
    from importlib.metadata import distribution

    dist = distribution("scalelab")
    assert dist.entry_points.select(group="console_scripts")["scalelab"].value == "scalelab.cli:main"
    for generic in ("agent", "experiments", "orchestrator", "injector", "simulator", "sandbox"):
        # run from a neutral folder: nothing of scalelab answers to the generic names
        res = subprocess.run([sys.executable, "-c", f"import importlib.util as u; print(u.find_spec({generic!r}))"],
                             cwd="/", capture_output=True, text=True, timeout=60)
        assert res.stdout.strip() == "None", (generic, res.stdout, res.stderr)


def test_a_researchers_own_experiments_agent_and_simulator_do_not_shadow_scalelab(tmp_path):
    # a folder of a researcher's: its own experiments/ package, agent.py and simulator.py, each of
    # which would break scalelab if imported in its place, and a plug-in policy beside the config
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("raise ImportError('the researcher own experiments')\n")
    (tmp_path / "agent.py").write_text("raise ImportError('the researcher own agent.py')\n")
    (tmp_path / "simulator.py").write_text("raise ImportError('the researcher own simulator.py')\n")
    (tmp_path / "hold_two.py").write_text(textwrap.dedent('''
        from scalelab.agent.actions import ActionSet
        from scalelab.agent.base import BasePolicy, Decision


        class HoldTwo(BasePolicy):
            """Always asks for two replicas (the fixed action 2)."""

            def __init__(self, seed=None):
                super().__init__(ActionSet.fixed(2, 2), seed=seed)

            def decide(self, context, info=None):
                return Decision(action=0, probability=1.0, probabilities=(1.0,))

            def update(self, context, action, reward, next_context=None):
                pass
        '''))
    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""
        name: mine
        seed: 3
        runs: 1
        steps: 12
        workload: {kind: constant, users: 4}
        app: {profile: paper}
        cluster: {min_replicas: 1, max_replicas: 4, initial_replicas: 1}
        policies:
          - {name: "hold_two:HoldTwo", label: hold-two}
          - {name: static, replicas: 3}
        """))
    res = subprocess.run(["scalelab", "run", "mine.yaml", "--out", "out"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (folder,) = (tmp_path / "out").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert {r["policy"] for r in summary} == {"hold-two", "static"}

    steps = read_steps(folder)
    mine = steps[steps.policy == "hold-two"]
    assert len(mine) == 12
    # ordered 2 at every step: two replicas from the first order on, started from one
    assert set(mine.target_replicas) == {2}
    assert (steps[steps.policy == "static"].target_replicas == 3).all()
