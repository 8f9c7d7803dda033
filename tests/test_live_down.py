"""Issue 30, finding 14 (second half): `scalelab live down` finds and stops every local
stack this user started -- the default folder's, one `scalelab live run` brought up in a
run folder, one whose owner was SIGKILLed, one whose folder was removed -- through the
registry of stacks (orchestrator/stack_registry.py); and the embedded broker ends at once
on SIGTERM, however much it served."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scalelab.orchestrator import stack_registry
from scalelab.orchestrator.local_processes import alive, session_members, spawn, start_time
from scalelab.orchestrator.stack import LocalStack, down_all
from tests.tools import requires
from tests.waiting import wait_for


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """A registry of this test's own: `live down` must not stop the stacks of other tests
    (or of the user) running meanwhile."""
    d = tmp_path / "stacks"
    monkeypatch.setenv("SCALELAB_STACKS_DIR", str(d))
    monkeypatch.setenv("SCALELAB_LIVE_DIR", str(tmp_path / "default-live"))
    return d


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalelab.cli", "live", *args], capture_output=True, text=True,
                          timeout=timeout)


def _service(tmp_path: Path, name: str) -> int:
    """A stand-in for a stack's process: the leader of its own session, with a child that
    keeps the session (as gunicorn's workers do)."""
    return spawn(["sh", "-c", "sleep 300 & wait"], tmp_path / f"{name}.log")


# -- the registry, with stand-in processes (fast)

def test_down_stops_what_the_registry_recorded_for_a_folder_that_is_gone(tmp_path, registry):
    stack_dir = tmp_path / "runs" / "some-run" / "stack"  # never created: a removed folder
    stack_registry.add(stack_dir, owner=stack_registry.this_process(stops_on_sigterm=False))
    leaders = [_service(tmp_path, "kafka"), _service(tmp_path, "sandbox-1")]
    for name, pid in zip(("kafka", "sandbox-1"), leaders, strict=True):
        stack_registry.add(stack_dir, {name: pid})
    wait_for(lambda: all(len(session_members(p)) == 2 for p in leaders), 30, "each stand-in to fork its child")
    members = [m for p in leaders for m in session_members(p)]
    (rec,) = stack_registry.records()
    assert rec["dir"] == str(stack_dir.resolve()) and sorted(stack_registry.alive_pids(rec)) == sorted(members)

    (report,) = down_all()
    assert report["dir"] == str(stack_dir.resolve()) and report["left"] == []
    assert sorted(report["stopped"]) == sorted(members)
    assert [p for p in members if alive(p)] == []
    assert stack_registry.records() == []  # the record went with its stack


def test_a_reused_pid_is_not_taken_for_a_stack_process(tmp_path, registry):
    bystander = _service(tmp_path, "bystander")  # not the stack's: its pid is recorded with another start
    stack_dir = tmp_path / "stack"
    stack_registry.add(stack_dir, {"kafka": bystander})
    f = next(registry.glob("*.json"))
    rec = json.loads(f.read_text())
    rec["processes"][0]["start"] = start_time(bystander) - 1  # the recorded process started earlier
    f.write_text(json.dumps(rec))
    try:
        assert stack_registry.alive_pids(rec) == []
        assert LocalStack(stack_dir).down() == []
        assert alive(bystander)
        assert stack_registry.records() == []
    finally:
        os.killpg(bystander, signal.SIGKILL)


OWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    from pathlib import Path
    from scalelab.orchestrator import stack_registry
    from scalelab.orchestrator.local_processes import spawn, stop

    stack_dir = Path(sys.argv[1])
    stack_registry.add(stack_dir, owner=stack_registry.this_process(stops_on_sigterm=True))
    service = spawn(["sleep", "300"], stack_dir.parent / "service.log")
    stack_registry.add(stack_dir, {"kafka": service})

    def down(*_):  # what a live run does on SIGTERM: stop its stack, then exit
        stop(service)
        stack_registry.remove(stack_dir)
        (stack_dir.parent / "owner-stopped-it").write_text("yes")
        sys.exit(3)

    signal.signal(signal.SIGTERM, down)
    print(service, flush=True)
    while True:
        time.sleep(1)
""")


def test_down_asks_a_live_owner_that_stops_on_sigterm_to_stop_first(tmp_path, registry):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "stack")], stdout=subprocess.PIPE,
                             text=True, env=os.environ)
    try:
        service = int(owner.stdout.readline())
        (rec,) = stack_registry.records()
        assert stack_registry.owner_alive(rec) and rec["owner"]["pid"] == owner.pid
        assert LocalStack(tmp_path / "stack").down() == []
        assert owner.wait(timeout=60) == 3  # it stopped on its own, as asked
        assert (tmp_path / "owner-stopped-it").exists() and not alive(service)
        assert stack_registry.records() == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()


def test_the_cli_reports_and_removes_a_stale_record(tmp_path, registry):
    stack_registry.add(tmp_path / "stack", owner=stack_registry.this_process(stops_on_sigterm=False))
    status = _cli("status")
    assert status.returncode == 0, status.stderr
    (entry,) = json.loads(status.stdout)["stacks"]
    assert entry["dir"] == str((tmp_path / "stack").resolve()) and entry["alive_pids"] == []
    down = _cli("down")
    assert down.returncode == 0, down.stderr
    (report,) = json.loads(down.stdout)["stopped"]
    assert report["stopped"] == [] and report["left"] == []
    assert json.loads(_cli("status").stdout) == {"stacks": []}


# -- real stacks

@pytest.mark.live
@requires("locust", "prometheus", "haproxy")
def test_live_down_stops_the_stack_of_a_live_run_killed_with_sigkill(tmp_path, registry):
    """The stack `scalelab live run` brought up in its run folder outlives the run killed
    with SIGKILL (no handler runs); `scalelab live down`, with no folder named, finds it
    through the registry and stops every process of it. The run's own children (agent,
    orchestrator, injector) die with it (PR_SET_PDEATHSIG)."""
    out = tmp_path / "runs"
    run = subprocess.Popen([sys.executable, "-m", "scalelab.cli", "live", "run", "experiments/configs/live-demo.yaml",
                            "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        def first_decision() -> bool:
            return any(f.stat().st_size > 0 for f in out.glob("*/parts/*/decisions.jsonl"))

        wait_for(first_decision, 300, "the live run's first decision")
        (state,) = out.glob("*/stack/stack.json")
        run.send_signal(signal.SIGKILL)  # the owner alone: what it started keeps running
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    (rec,) = stack_registry.records()
    assert rec["dir"] == str(state.parent.resolve()) and rec["owner"]["pid"] == run.pid
    pids = stack_registry.alive_pids(rec)  # Kafka, Prometheus, HAProxy, the replica and its workers
    stack = json.loads(state.read_text())
    assert {stack[k]["pid"] for k in ("kafka", "prometheus", "haproxy")} < set(pids)
    replicas = json.loads((state.parent / "replicas" / "replicas.json").read_text())["replicas"]
    assert replicas and {r["pid"] for r in replicas} < set(pids)

    status = _cli("status")
    (entry,) = json.loads(status.stdout)["stacks"]
    assert entry["dir"] == rec["dir"] and entry["owner"]["alive"] is False and entry["up"] is True

    down = _cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    (report,) = json.loads(down.stdout)["stopped"]
    assert report["dir"] == rec["dir"] and report["left"] == [] and set(pids) <= set(report["stopped"])
    assert [p for p in pids if alive(p)] == []
    assert stack_registry.records() == []

    def run_children_gone() -> bool:
        return not subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()

    wait_for(run_children_gone, 60, "the run's agent and orchestrator to die with it")  # a give-up guard


@pytest.mark.live
@requires("prometheus", "haproxy")
def test_live_down_stops_a_stack_whose_folder_was_removed(tmp_path, registry):
    d = tmp_path / "gone"
    up = _cli("up", "--dir", str(d), "--replicas", "1")
    assert up.returncode == 0, up.stderr
    (rec,) = stack_registry.records()
    pids = stack_registry.alive_pids(rec)
    state = json.loads(up.stdout)
    assert {state[k]["pid"] for k in ("kafka", "prometheus", "haproxy")} < set(pids)
    shutil.rmtree(d)  # its stack.json and replicas.json with it
    down = _cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [p for p in pids if alive(p)] == []
    assert stack_registry.records() == []


@pytest.mark.live
def test_the_broker_ends_at_once_on_sigterm_after_serving_many_requests(tmp_path):
    """10 000 produce requests, then SIGTERM: the broker ends within a few seconds (before
    the fix it logged every request it had served first: 9 s for these, longer than the
    stack's 10-s grace after a live run's minutes)."""
    pytest.importorskip("confluent_kafka")
    from confluent_kafka import Producer

    log = tmp_path / "kafka.log"
    broker = spawn([sys.executable, "-m", "scalelab.orchestrator.kafka_embedded"], log)
    try:
        wait_for(lambda: log.read_text().startswith("127.0.0.1:") or not alive(broker), 30, "the broker's address")
        producer = Producer({"bootstrap.servers": log.read_text().split()[0], "linger.ms": 0})
        for _ in range(10_000):  # one request each
            producer.produce("zipkin", b"{}")
            assert producer.flush(10) == 0
        os.killpg(broker, signal.SIGTERM)
        wait_for(lambda: not alive(broker), 5, "the broker to end after SIGTERM")
    finally:
        if alive(broker):
            os.killpg(broker, signal.SIGKILL)
