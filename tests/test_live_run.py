"""`scalelab live run` end to end on the real local stack: orchestrator, injector and
replicas as separate processes talking through Kafka."""

import json

import pytest

from scalelab import read_steps
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
              "report.html", "policies/threshold-cpu--run000.json.gz", "policies/hslinucb--run000.json.gz"):
        assert (p / f).is_file(), f
    steps = read_steps(p)
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
    # p95 from the spans agrees with what the users measured (Locust's timings of the
    # requests in the same window, at the same instant) within 15 %: the median of the
    # per-step ratios, on the steps where both measured something
    summary = json.loads((p / "summary.json").read_text())
    for row in summary:
        print(row["policy"], row["p95_ms"]["mean"], row["client_p95_ms"]["mean"], row["p95_vs_client"]["mean"])
        assert 0.85 <= row["p95_vs_client"]["mean"] <= 1.15, row
    stack_pids = []

    state_file = p / "stack" / "stack.json"
    if state_file.exists():
        stack_pids = [v["pid"] for v in json.loads(state_file.read_text()).values() if isinstance(v, dict)]
    assert not [pid for pid in stack_pids if alive(pid)]


def test_a_terminated_live_run_stops_what_it_started(tmp_path):
    """Issue 30, finding 14: `scalelab live run` ended with SIGTERM (as `timeout` or a batch
    scheduler ends it) stops its agent, services and stack on the way out -- no broker,
    Prometheus, HAProxy or replica is left running -- and says so in one line."""
    import os
    import signal
    import subprocess
    import sys

    from tests.waiting import wait_for

    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.cli", "live", "run", "experiments/configs/live-demo.yaml",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def first_decision() -> bool:
            return any(f.stat().st_size > 0 for f in out.glob("*/parts/*/decisions.jsonl"))

        wait_for(first_decision, 300, "the live run's first decision")
        (state,) = out.glob("*/stack/stack.json")
        stack = json.loads(state.read_text())
        pids = [stack[k]["pid"] for k in ("kafka", "prometheus", "haproxy")]
        pids += [int(line) for line in _replica_pids(state.parent)]
        assert all(alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 3 and "stopped by signal 15" in err, err[-2000:]
    left = [p for p in pids if alive(p)]
    assert left == [], left
    orphans = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert orphans == [], orphans  # nothing started for the run (agent, orchestrator, injector) lives on


def _replica_pids(stack_dir) -> list[str]:
    """The pids of the stack's replicas, from the scaler's state file."""
    state = json.loads((stack_dir / "replicas" / "replicas.json").read_text())
    return [str(r["pid"]) for r in state["replicas"]]
