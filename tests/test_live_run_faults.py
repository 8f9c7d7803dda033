"""A live run with its parts killed mid-run (issue 14): Prometheus, the orchestrator and
a replica, once each. The supervisor restarts the services, the orchestrator replaces
the replica, the run finishes, its steps show the gaps (a step without a fresh
Prometheus sample is marked ``metrics``, never scored as fine), and the finished run
resumes without running anything again."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from waiting import wait_for

from scalelab import read_steps
from scalelab.agent.process import AgentFolder
from scalelab.experiments.experiment import run_live
from scalelab.orchestrator.stack import LocalStack
from tests.tools import requires

pytestmark = [
    pytest.mark.live,
    requires("locust", "prometheus", "haproxy"),
]



def _orchestrator_pid(stack_dir: Path) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scalelab.orchestrator" in cmd and str(stack_dir).encode() in cmd and b"-m" in cmd:
                return int(entry.name)
    raise AssertionError("no orchestrator process found")


def test_prometheus_the_orchestrator_and_a_replica_killed_mid_run(tmp_path):
    done: dict = {}

    def faults(path: Path, stack: LocalStack) -> None:
        try:
            first = AgentFolder(path / "parts" / "threshold-cpu--run000")
            wait_for(lambda: len(first.records()) >= 2, 120, "two decisions")
            # hang Prometheus until a step goes without a fresh sample (a kill alone races the supervisor,
            # which may restart it before any step notices), then kill it for the supervisor to restart
            prometheus = stack.state["prometheus"]["pid"]
            os.kill(prometheus, signal.SIGSTOP)
            wait_for(lambda: any("metrics" in r["after"].get("missing", []) for r in first.records()), 120,
                     "a step without a fresh Prometheus sample")
            os.kill(prometheus, signal.SIGKILL)
            done["prometheus"] = time.time()
            wait_for(lambda: len(first.records()) >= 12, 240, "twelve decisions")
            os.kill(_orchestrator_pid(stack.dir), signal.SIGKILL)
            done["orchestrator"] = time.time()
            second = AgentFolder(path / "parts" / "hslinucb--run000")
            wait_for(lambda: len(second.records()) >= 3, 240, "the second episode")
            replica = LocalStack(stack.dir).scaler.replicas[0]
            os.kill(replica.pid, signal.SIGKILL)
            done["replica"] = replica.name
        except Exception as exc:  # reported by the assertions below
            done["error"] = repr(exc)

    res = run_live("experiments/configs/live-demo.yaml", out=tmp_path, command="test", during=faults,
                   supervise_s=20.0)
    assert "error" not in done and set(done) == {"prometheus", "orchestrator", "replica"}, done
    p = res.path
    services = json.loads((p / "services.json").read_text())
    assert services["restarts"]["prometheus"] >= 1 and services["restarts"]["orchestrator"] >= 1, services
    steps = read_steps(p)
    assert len(steps) == 2 * 15  # the run finished: every step of both episodes
    for part in sorted((p / "parts").iterdir()):
        assert json.loads((part / "status.json").read_text())["status"] == "done"
    # Prometheus was down for up to 20 s: the steps without a fresh sample say so
    first = steps[steps.policy == "threshold-cpu"]
    assert first.missing.str.contains("metrics").any(), first[["step", "missing"]]
    summary = json.loads((p / "summary.json").read_text())
    assert all(row["missing_per_run"]["mean"] >= 0 for row in summary)
    assert any(row["missing_per_run"]["mean"] > 0 for row in summary)
    report = (p / "report.html").read_text()
    assert "<h2>Gaps</h2>" in report and "Services restarted during the run" in report
    # the dead replica was replaced by the orchestrator
    replaced = [json.loads(line) for line in next(p.glob("stack/**/replaced.jsonl")).read_text().splitlines()]
    assert [r["replica"] for r in replaced] == [done["replica"]]
    # a finished run resumes at once: nothing runs again, the same steps
    again = run_live(None, resume=p)
    pd.testing.assert_frame_equal(again.steps, res.steps)
