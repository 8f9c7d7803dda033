"""Faults during a live run, with every part real and in its own process: 1000
malformed messages on ``action`` and on ``zipkin``, then the Kafka broker killed
(SIGKILL) and restarted at the same address. The orchestrator, the injector and the
agent keep running, the agent's records stay whole, and spans, orders and Locust
statistics flow again after the broker returns."""

import threading
from dataclasses import asdict

import pytest
from waiting import wait_for

from scalelab.agent.process import AgentFolder, AgentSpec
from scalelab.experiments.live import LiveSettings, run_agent_process, start_services, stop_services
from scalelab.orchestrator.context import DEFAULT
from scalelab.orchestrator.local_processes import alive
from scalelab.orchestrator.scalers.local import ReplicaSpec
from scalelab.orchestrator.stack import LocalStack
from tests.tools import requires

pytestmark = [
    pytest.mark.live,
    requires("locust", "prometheus", "haproxy"),
]

STEPS = 24



def test_malformed_floods_and_a_broker_restart_mid_run(tmp_path):
    from kafka import KafkaProducer

    stack = LocalStack(tmp_path / "stack")
    stack.up(replicas=1)
    procs = []
    try:
        addr = stack.state["kafka"]["bootstrap"]
        settings = LiveSettings(ReplicaSpec(), (0.0, 1.0), asdict(DEFAULT), 1, 3, 1)
        procs = start_services(stack, settings)
        spec = AgentSpec(policy="static", params={"replicas": 2}, steps=STEPS, step_seconds=1.0, max_replicas=3,
                         users=[4] * STEPS, retry_s=120.0)
        part = tmp_path / "agent"
        part.mkdir()
        folder = AgentFolder(part)
        outcome: dict = {}

        def agent() -> None:
            try:
                outcome["restarts"] = run_agent_process(spec, part, addr)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        runner = threading.Thread(target=agent)
        runner.start()
        wait_for(lambda: len(folder.records()) >= 3, 90, "three decisions")

        producer = KafkaProducer(bootstrap_servers=addr, api_version=(2, 3))
        for k in range(1000):
            producer.send("action", [b"not json", b'{"order": "scaleSUT", "mode": "fixed", "level": 99}',
                                     b"[1, 2]", b'{"transactionId": 1, "order": "nope"}'][k % 4])
            producer.send("zipkin", [b"\xff\xfe", b'[{"traceId": 1}]', b"{}", b'[{"duration": "x"}]'][k % 4])
        producer.flush()
        producer.close()

        wait_for(lambda: len(folder.records()) >= 8, 90, "eight decisions")
        stack.kill_kafka()
        # the broker stays away until the agent has seen the outage and is retrying
        wait_for(lambda: "retrying" in (part / "agent.log").read_text(), 120, "the agent to retry without a broker")
        stack.start_kafka()
        assert stack.state["kafka"]["bootstrap"] == addr  # the broker came back at its address

        runner.join(timeout=300)
        assert not runner.is_alive() and "error" not in outcome, outcome
        records = folder.records()
        assert [r["step"] for r in records] == list(range(STEPS))
        assert all(p.poll() is None for p in procs), "the orchestrator and the injector are still running"
        late = records[-4:]
        assert all(r["before"]["context"]["replicas"] == 2 for r in late)  # the 99 order was clamped, never applied
        assert all(r["before"]["context"]["rps"] > 0 for r in late), "spans flow again after the broker restart"
        assert all(r["after"]["client_p95_ms"] is not None for r in late), "Locust statistics flow again"
        log = (part / "agent.log").read_text()
        assert "retrying" in log and "agent done" in log  # the outage was seen and ridden out
    finally:
        stop_services(procs)
        pids = stack.pids()
        stack.down()
        assert not [p for p in pids if alive(p)]
