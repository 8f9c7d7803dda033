"""`scalelab live run` end to end on the real local stack: orchestrator, injector and
replicas as separate processes talking through Kafka."""

import importlib.util
import shutil

import pandas as pd
import pytest

from experiments.live import run_live
from orchestrator.local_processes import alive

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not (importlib.util.find_spec("locust") and shutil.which("prometheus") and shutil.which("haproxy")),
                       reason="needs locust, prometheus and haproxy"),
]


def test_live_run_writes_the_same_run_folder_as_a_simulated_run(tmp_path):
    res = run_live("experiments/configs/live-demo.yaml", out=tmp_path, command="test")
    p = res.path
    for f in ("config.yaml", "command.txt", "versions.json", "steps.parquet", "summary.json", "summary.csv",
              "report.html", "policies/static-2--run000.json", "policies/hslinucb--run000.json"):
        assert (p / f).is_file(), f
    steps = pd.read_parquet(p / "steps.parquet")
    assert len(steps) == 2 * 12
    static = steps[steps.policy == "static-2"]
    assert static.replicas.iloc[-1] == 2  # the orchestrator scaled the local replicas
    assert (steps.rps.iloc[5:] > 0).all() and (steps.p95_ms.iloc[5:] > 0).all()
    loaded = steps[steps.users == 10]
    assert loaded.rps.mean() > 2  # ten Locust users are seen in the spans
    stack_pids = []
    import json

    state_file = p / "stack" / "stack.json"
    if state_file.exists():
        stack_pids = [v["pid"] for v in json.loads(state_file.read_text()).values() if isinstance(v, dict)]
    assert not [pid for pid in stack_pids if alive(pid)]
