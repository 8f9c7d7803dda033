"""A trained agent exported to ONNX runs from a YAML config with onnxruntime and no
deep-learning framework: its decisions are the shipped tiny model's rule, step by step;
its observation pipeline is the env's (with VecNormalize statistics); the run folder
records the model, so a resume from elsewhere finds it; another model is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e '.[dev]'")

from scalelab import read_steps
from scalelab.agent.check import EXAMPLE_ONNX
from scalelab.agent.registry import make_policy
from scalelab.experiments.env import SandboxScalingEnv

CONFIG = """
name: onnx-run
seed: 2
runs: 2
steps: 150
slo_ms: 600
workload: {kind: paper-sim-v1}
app: {profile: paper}
cluster: {min_replicas: 1, max_replicas: 10, initial_replicas: 1}
policies:
  - {name: onnx, label: p95-rule, model: p95-rule.onnx}
"""


def rule(p95_ms: float) -> int:
    """The shipped model by hand: f = p95 / 6000 (clipped to 1); up above 0.08, down below 0.03."""
    f = min(p95_ms / 6000.0, 1.0)
    down, up = 100 * (0.03 - f), 100 * (f - 0.08)
    return int(np.argmax([down, 0.0, up]))


def test_an_onnx_agent_runs_from_a_yaml_config_resumes_elsewhere_and_never_imports_torch(tmp_path):
    home = tmp_path / "study"
    home.mkdir()
    for f in ("p95-rule.onnx", "p95-rule.json"):
        shutil.copy(Path(EXAMPLE_ONNX).with_name(f), home / f)
    (home / "onnx.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys, runpy; sys.argv = ['scalelab', 'run', 'CFG', '--out', 'OUT'];"
            "from scalelab.cli import main; rc = main(sys.argv[1:]);"
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules; sys.exit(rc)")
    code = code.replace("CFG", str(home / "onnx.yaml")).replace("OUT", str(tmp_path / "runs"))
    first = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    folder = next((tmp_path / "runs").iterdir())
    steps = read_steps(folder)
    assert len(steps) == 2 * 150
    expected = [rule(p) for p in steps.pre_p95_ms]
    assert steps.action.tolist() == expected and len(set(expected)) == 3  # it went up, stayed and came down
    record = json.loads((folder / "plugins.json").read_text())
    assert record["p95-rule.onnx"]["file"] == str((home / "p95-rule.onnx").resolve())
    (folder / "complete.json").unlink()
    (folder / "steps.parquet").unlink()
    again = subprocess.run([sys.executable, "-m", "scalelab.cli", "run", "--resume", str(folder)], cwd=elsewhere,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(read_steps(folder), steps, check_exact=True)


def test_the_pipeline_is_the_envs_with_vecnormalize_statistics(tmp_path):
    env = SandboxScalingEnv({"name": "p", "seed": 1, "steps": 30, "slo_ms": 600,
                             "workload": {"kind": "constant", "users": 30, "duration_s": 150}}, observation="normalized")
    stats = SimpleNamespace(obs_rms=SimpleNamespace(mean=np.full(7, 0.2), var=np.full(7, 0.04)), clip_obs=5.0,
                            epsilon=1e-8)
    pipeline = env.observation_pipeline(vecnormalize=stats)
    shutil.copy(EXAMPLE_ONNX, tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text(json.dumps(pipeline))
    policy = make_policy("onnx", model=str(tmp_path / "m.onnx"))
    env.reset(seed=0)
    for _ in range(10):
        _, _, _, _, info = env.step(2)
        ctx = info["record"].after.context
        obs = env._vector(ctx)  # what the agent saw in training
        np.testing.assert_allclose(policy.observe(ctx)[0], np.clip((obs - 0.2) / np.sqrt(0.04 + 1e-8), -5, 5),
                                   rtol=1e-6)


def test_a_state_for_another_model_and_a_missing_pipeline_are_refused(tmp_path):
    a = make_policy("onnx", model=EXAMPLE_ONNX)
    state = {**a.state_dict(), "model_sha256": "0" * 64}
    with pytest.raises(ValueError, match="another model"):
        a.load_state_dict(state)
    shutil.copy(EXAMPLE_ONNX, tmp_path / "alone.onnx")
    with pytest.raises(ValueError, match="no pipeline file"):
        make_policy("onnx", model=str(tmp_path / "alone.onnx"))
    with pytest.raises(ValueError, match="no such file"):
        make_policy("onnx", model="missing.onnx")
