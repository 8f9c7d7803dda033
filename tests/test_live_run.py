"""`scalelab live run` end to end on the real local stack: orchestrator, injector and
replicas as separate processes talking through Kafka."""

import json

import pandas as pd
import pytest

from scalelab.experiments.experiment import run_live
from scalelab.orchestrator.local_processes import alive
from tests.tools import requires

pytestmark = [
    pytest.mark.live,
    requires("locust", "prometheus", "haproxy"),
]


def test_live_run_writes_the_same_run_folder_as_a_simulated_run(tmp_path):
    res = run_live("experiments/configs/live-demo.yaml", out=tmp_path, command="test", kill_agent_after=4)
    p = res.path
    for f in ("config.yaml", "command.txt", "versions.json", "steps.parquet", "summary.json", "summary.csv",
              "report.html", "policies/threshold-cpu--run000.json", "policies/hslinucb--run000.json"):
        assert (p / f).is_file(), f
    steps = pd.read_parquet(p / "steps.parquet")
    assert len(steps) == 2 * 15
    for policy, g in steps.groupby("policy"):  # the orchestrator scaled the local replicas up
        print(g[["step", "users", "pre_replicas", "replicas", "target_replicas", "p95_ms", "client_p95_ms", "rps"]])
        # the first decision saw the initial replica; the outcomes show the scale-up
        assert g.pre_replicas.iloc[0] == 1 and g.replicas.max() >= 2, policy
    assert (steps.rps.iloc[5:] > 0).all() and (steps.p95_ms.iloc[5:] > 0).all()
    loaded = steps[steps.users == 10]
    assert loaded.rps.mean() > 2  # ten Locust users are seen in the spans
    for policy in ("threshold-cpu", "hslinucb"):  # each agent was killed after 4 decisions and resumed
        part = p / "parts" / f"{policy}--run000"
        assert "resuming at step" in (part / "agent.log").read_text()
        assert sorted(steps[steps.policy == policy].step) == list(range(15))
    # p95 from the spans agrees with what Locust measured (its last-10 s p95) within 15 %:
    # the median of the per-step ratios, on the steps where both measured something
    summary = json.loads((p / "summary.json").read_text())
    for row in summary:
        print(row["policy"], row["p95_ms"]["mean"], row["client_p95_ms"]["mean"], row["p95_vs_client"]["mean"])
        assert 0.85 <= row["p95_vs_client"]["mean"] <= 1.15, row
    stack_pids = []

    state_file = p / "stack" / "stack.json"
    if state_file.exists():
        stack_pids = [v["pid"] for v in json.loads(state_file.read_text()).values() if isinstance(v, dict)]
    assert not [pid for pid in stack_pids if alive(pid)]
