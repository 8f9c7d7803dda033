"""The orchestrator service as its own process on the local stack, spoken to with kcat
(an independent Kafka client): orders, replies, malformed floods."""

import json
import subprocess
import sys

import pytest

from scalelab.orchestrator.stack import LocalStack
from tests.tools import requires

pytestmark = [
    pytest.mark.live,
    requires("kcat", "prometheus", "haproxy"),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("orch"))
    stack.up(replicas=1)
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.orchestrator", "--stack-dir", str(stack.dir), "--max", "3"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "orchestrator ready"
        yield stack, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        assert stack.down() == []


def send(stack, lines):
    data = "\n".join(lines) + "\n"
    subprocess.run(["kcat", "-P", "-b", stack.state["kafka"]["bootstrap"], "-t", "action"], input=data, text=True,
                   check=True, timeout=60)


def read(stack, topic, count, offset):
    out = subprocess.run(["kcat", "-C", "-b", stack.state["kafka"]["bootstrap"], "-t", topic, "-o", str(offset),
                          "-c", str(count), "-q"], capture_output=True, text=True, timeout=300, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_orders_over_kcat(running):
    stack, _proc = running
    # one order at a time, each after the previous reply, as the paper's agent works
    # (the mock broker's topics have several partitions: no order between messages)
    orders = [{"transactionId": "t1", "order": "scaleSUT", "mode": "fixed", "level": 2},
              {"transactionId": "t2", "order": "getState"},
              {"transactionId": "t3", "order": "scaleSUT", "mode": "incremental", "level": 5}]
    for k, order in enumerate(orders, start=1):
        send(stack, [json.dumps(order)])
        replies = read(stack, "action_result", k, "beginning")
    by_id = {r["transactionId"]: r for r in replies}
    assert by_id["t1"]["result"] == "OK" and by_id["t1"]["replicas"] == 2
    assert by_id["t3"]["result"] == "OK" and by_id["t3"]["replicas"] == 3 and "clamped" in by_id["t3"]["reason"]
    state = read(stack, "state", 1, "beginning")[0]
    assert state["transactionId"] == "t2" and state["context"]["replicas"] == 2
    assert LocalStack(stack.dir).scaler.ready_replicas == 3


def test_a_thousand_malformed_orders_each_get_an_error_and_the_service_lives(running):
    stack, proc = running
    before = 3  # the replies of test_orders_over_kcat
    junk = ["{not json", "[1,2,3]", '{"order": "scaleSUP"}', '{"transactionId": 1, "order": "scaleSUT"}'] * 250
    send(stack, [*junk, json.dumps({"transactionId": "alive", "order": "getDeploymentState"})])
    replies = read(stack, "action_result", before + 1001, "beginning")  # every reply so far, all partitions
    assert sum(r["result"] == "ERROR" for r in replies) == 1000  # the three earlier replies were OK
    assert any(r["transactionId"] == "alive" and r["result"] == "OK" for r in replies)
    assert proc.poll() is None
