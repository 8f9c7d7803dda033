"""Policies, rewards and workloads from outside the package: ``module:Name`` in a config,
entry points of installed distributions, the run folder's record of what it imported,
and resume in a new process that finds them again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scalelab import read_steps
from scalelab.agent.registry import make_policy, policy_names
from scalelab.agent.rewards import make_reward
from scalelab.injector.workloads import WorkloadError, make_workload, workload_names
from scalelab.orchestrator.context import Context
from scalelab.orchestrator.plugins import PluginError, is_import_path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
name: plug
seed: 5
runs: 2
steps: 120
slo_ms: 600
workload: {kind: "flat_load:Flat", users: 12}
reward: {name: "cost_reward:Cost", weight: 0.5}
cluster: {max_replicas: 6}
policies:
  - {name: "p95_band:P95Band", label: band, cooldown_steps: 2}
  - {name: static, replicas: 2}
"""

WORKLOAD = '''
from scalelab.injector.workloads import Constant

def Flat(users: float = 10.0, duration_s: float = 600.0):
    """A researcher's workload: a constant load built from the shipped one."""
    return Constant(users=users, duration=duration_s)
'''

REWARD = '''
class Cost:
    """SLO met minus a weighted replica count."""
    def __init__(self, slo_ms: float, weight: float = 0.1):
        self.slo_ms, self.weight = slo_ms, weight
    def __call__(self, before, action, after):
        return float(after.p95_ms <= self.slo_ms) - self.weight * after.replicas / 10
'''


def _project(tmp_path: Path) -> Path:
    """A researcher's folder, outside the package: a config and three modules beside it."""
    home = tmp_path / "research"
    home.mkdir()
    shutil.copy(ROOT / "examples" / "p95_band.py", home / "p95_band.py")
    (home / "flat_load.py").write_text(WORKLOAD)
    (home / "cost_reward.py").write_text(REWARD)
    (home / "plug.yaml").write_text(CONFIG)
    return home


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalelab.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_import_paths_are_recognised():
    assert is_import_path("p95_band:P95Band") and is_import_path("a.b.c:D.e")
    assert not is_import_path("hslinucb") and not is_import_path("a:b:c") and not is_import_path("a-b:C")


def test_a_policy_reward_and_workload_from_files_beside_the_config_run_and_resume(tmp_path):
    home = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = _cli("run", str(home / "plug.yaml"), "--out", str(tmp_path / "runs"), cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    folder = next((tmp_path / "runs").iterdir())
    record = json.loads((folder / "plugins.json").read_text())
    assert set(record) == {"p95_band:P95Band", "flat_load:Flat", "cost_reward:Cost"}
    assert record["p95_band:P95Band"]["dir"] == str(home.resolve())
    steps = read_steps(folder)
    band = steps[steps.policy == "band"]
    assert len(band) == 2 * 120 and (band.users == 12).all()
    assert band.action.isin([0, 1, 2]).all() and band.target_replicas.nunique() > 1  # it scaled
    # the reward is the plug-in's: met - 0.5 * replicas / 10
    expected = (band.p95_ms <= 600).astype(float) - 0.5 * band.replicas / 10
    assert band.reward.to_numpy() == pytest.approx(expected.to_numpy())
    # a crash before the end: the steps and the marker are gone; a new process, in a folder
    # where none of the modules is, resumes from plugins.json alone
    (folder / "complete.json").unlink()
    (folder / "steps.parquet").unlink()
    again = _cli("run", "--resume", str(folder), cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(read_steps(folder), steps, check_exact=True)
    report = _cli("report", str(folder), cwd=elsewhere)
    assert report.returncode == 0, report.stderr
    assert "p95_band.py" in (folder / "report.html").read_text()  # what was imported is in the report


def test_installed_plugins_are_found_by_their_entry_point(tmp_path, monkeypatch):
    home = _project(tmp_path)
    dist = home / "scalelab_band-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scalelab-band\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[scalelab.policies]\nband = p95_band:P95Band\n\n"
                                           "[scalelab.workloads]\nflat = flat_load:Flat\n\n"
                                           "[scalelab.rewards]\ncost = cost_reward:Cost\n")
    monkeypatch.syspath_prepend(str(home))
    assert "band" in policy_names() and "flat" in workload_names()
    policy = make_policy("band", defaults={"seed": 1, "slo_ms": 600.0}, high=0.5)
    assert policy.name == "p95-band" and policy.high == 0.5
    ctx = Context(replicas=2, p95_ms=900.0, rps=10.0, cpu_request_ratio=0.5, cpu_limit_ratio=0.5,
                  mem_request_ratio=0.1, mem_limit_ratio=0.1)
    assert policy.decide(ctx).action == 2  # above 0.5 x 600 ms: up
    assert make_workload({"kind": "flat", "users": 7, "duration_s": 50}).series(5.0).tolist() == [7.0] * 10
    assert make_reward("cost", slo_ms=600.0, weight=1.0)(ctx, 1, ctx) == pytest.approx(0.0 - 0.2)


def test_plugin_errors_name_what_is_wrong(tmp_path, monkeypatch):
    home = _project(tmp_path)
    monkeypatch.syspath_prepend(str(home))
    with pytest.raises(PluginError, match=r"no module named 'nomodule'.*put the file beside the config"):
        make_policy("nomodule:Thing")
    with pytest.raises(PluginError, match=r"has no 'P95Bnd'; did you mean 'P95Band'\?"):
        make_policy("p95_band:P95Bnd")
    with pytest.raises(ValueError, match=r"has no decide, update, state_dict, load_state_dict"):
        make_policy("flat_load:Flat")  # a workload is not a policy
    with pytest.raises(ValueError, match=r"unknown policy 'p95-bnad'.*'package.module:Class'"):
        make_policy("p95-bnad")
    with pytest.raises(WorkloadError, match=r"built a dict, not a Workload"):
        (home / "bad_wl.py").write_text("def W(**k):\n    return {}\n")
        make_workload({"kind": "bad_wl:W"})
    (home / "broken.py").write_text("raise RuntimeError('half-written file')\n")
    with pytest.raises(PluginError, match=r"importing 'broken' raised RuntimeError: half-written file"):
        make_policy("broken:P")


def test_the_policy_checker_passes_the_example_policy():
    out = subprocess.run([sys.executable, "-m", "scalelab.agent.check", "p95_band:P95Band"], cwd=ROOT / "examples",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok      p95_band:P95Band" in out.stdout, out.stdout + out.stderr


def test_the_readmes_workload_plugin_is_the_example_file_and_runs(tmp_path):
    """The README shows examples/lunch_rush.py whole (the code after its module
    docstring, word for word), and examples/lunch-rush.yaml runs it: the steps' users are
    its series (users_at every 5 s), the rise and the return to the base both seen."""
    from scalelab.experiments.config import load_config
    from scalelab.experiments.experiment import run_experiment

    source = (ROOT / "examples" / "lunch_rush.py").read_text().split('"""', 2)[2].lstrip("\n")
    assert f"```python\n{source}```" in (ROOT / "README.md").read_text()
    cfg = load_config(ROOT / "examples" / "lunch-rush.yaml")
    res = run_experiment(cfg, out=tmp_path, progress=False, report=False)
    steps = res.steps[(res.steps.policy == "hpa") & (res.steps.run == 0)]
    wl = make_workload({k: v for k, v in cfg.workload.items()})
    assert wl.name == "lunch-rush" and wl.think_s == (3.0, 12.0)
    assert steps.users.max() == 45 and steps.users.iloc[0] == 5 and steps.users.iloc[-1] == 5
    assert (steps.users.to_numpy() == wl.series(cfg.step_seconds)[: len(steps)]).all()
    with pytest.raises(WorkloadError, match="base and peak must be >= 0"):
        make_workload({**cfg.workload, "peak": -1})
