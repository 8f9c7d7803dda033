"""Spans over real Kafka: the embedded broker, the sandbox's exporter, the Zipkin
collector, malformed messages and a dead broker."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

kafka = pytest.importorskip("kafka")
pytest.importorskip("confluent_kafka")

from scalelab.orchestrator.collectors.zipkin import ZipkinCollector  # noqa: E402
from scalelab.orchestrator.context import ContextBuilder, ContextSettings  # noqa: E402
from scalelab.orchestrator.kafka_embedded import EmbeddedKafka  # noqa: E402
from scalelab.sandbox.app import App, Settings  # noqa: E402
from scalelab.sandbox.spans import SpanExporter, make_span  # noqa: E402
from tests.test_sandbox import call  # noqa: E402

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def broker():
    k = EmbeddedKafka()
    addr = k.start()
    assert addr.startswith("127.0.0.1:")
    yield addr
    k.stop()


def collector_for(broker, topic, group):
    builder = ContextBuilder(ContextSettings(window_s=3600.0))
    col = ZipkinCollector(broker, builder, threading.Lock(), services=["sandbox"], topic=topic, group=group,
                          offset_reset="earliest")
    col.start()
    return col


def wait_for(cond, seconds=60.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_spans_flow_from_the_sandbox_to_the_context(broker):
    exporter = SpanExporter(broker, topic="zipkin-e2e")
    app = App(Settings(pod="p", service="sandbox"), exporter=exporter)
    for _ in range(200):
        assert call(app, "GET", "/compute", "cpu=1")[0] == 200
    exporter.flush()
    col = collector_for(broker, "zipkin-e2e", "g-e2e")
    try:
        assert wait_for(lambda: col.stats.kept >= 200), col.stats
        ctx = col.builder.build(time.time() + 1, replicas=1)
        assert ctx.spans == 200
        assert 0 < ctx.p95_ms < 1000
        assert exporter.sent == 200 and exporter.dropped == 0
    finally:
        col.stop()
        exporter.close()


def test_malformed_messages_are_counted_and_skipped(broker):
    producer = kafka.KafkaProducer(bootstrap_servers=broker, api_version=(2, 3))
    for k in range(1000):
        producer.send("zipkin-bad", [b"{not json", b"[1, 2]", b'{"a": 1}', b"\xff\xfe", b"[{}]"][k % 5])
    now = int(time.time() * 1e6)
    good = [make_span("sandbox", "get /compute", now + i, 5000, "/compute", 200) for i in range(10)]
    other = [make_span("elsewhere", "get /x", now, 5000, "/x", 200)]
    producer.send("zipkin-bad", json.dumps(good + other).encode())
    producer.flush()
    col = collector_for(broker, "zipkin-bad", "g-bad")
    try:
        assert wait_for(lambda: col.stats.messages >= 1001), col.stats
        assert col.stats.kept == 10
        assert col.stats.malformed_messages == 2 * 200 + 200  # not JSON, not UTF-8, not a list
        assert col.stats.malformed_spans == 2 * 200 + 200  # ints in a list, an empty span
        np.testing.assert_allclose(col.builder.build(time.time() + 1, 1).p95_ms, 5.0)
    finally:
        col.stop()


def test_a_dead_broker_loses_spans_with_a_count_never_a_request():
    exporter = SpanExporter("127.0.0.1:1", topic="zipkin")  # nothing listens there
    app = App(Settings(pod="p"), exporter=exporter)
    t = time.perf_counter()
    for _ in range(100):
        assert call(app, "GET", "/compute", "cpu=0")[0] == 200
    assert time.perf_counter() - t < 2.0  # the request path never waits for Kafka
    assert wait_for(lambda: exporter.dropped >= 100, 30)
    exporter.close()


def test_scalelab_kafka_prints_its_address_and_stops():
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.experiments.cli", "kafka", "--seconds", "3"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("127.0.0.1:")
    consumer = kafka.KafkaProducer(bootstrap_servers=line, api_version=(2, 3))
    consumer.send("t", b"x").get(timeout=10)
    consumer.close()
    assert proc.wait(timeout=20) == 0
