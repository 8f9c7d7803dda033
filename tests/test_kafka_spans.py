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
    durations_us: list[int] = []  # what the app exported, read as it is submitted
    submit = exporter.submit
    exporter.submit = lambda span: (durations_us.append(span["duration"]), submit(span))
    app = App(Settings(pod="p", service="sandbox"), exporter=exporter)
    for _ in range(200):
        assert call(app, "GET", "/compute", "cpu=1")[0] == 200
    exporter.flush()
    col = collector_for(broker, "zipkin-e2e", "g-e2e")
    try:
        assert wait_for(lambda: col.stats.kept >= 200), col.stats
        ctx = col.builder.build(time.time() + 1, replicas=1)
        assert ctx.spans == 200 and len(durations_us) == 200
        # the context's p95 is the p95 of the very durations the app exported (linear interpolation)
        assert ctx.p95_ms == pytest.approx(np.percentile(np.array(durations_us) / 1000.0, 95))
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
    """The request path never waits for Kafka: while the exporter's thread hangs on
    connecting (held until the requests are answered), 100 requests are all answered;
    then the broker is dead (nothing listens on port 1) and every span is dropped and
    counted. How fast requests go meanwhile is benchmarks/bench_spans.py's figure."""
    exporter = SpanExporter("127.0.0.1:1", topic="zipkin")
    hanging, release = threading.Event(), threading.Event()
    connect = exporter._connect

    def hang_then_connect():
        hanging.set()
        release.wait(120)
        return connect()

    exporter._connect = hang_then_connect
    app = App(Settings(pod="p"), exporter=exporter)
    answered: list[int] = []
    try:
        answered.append(call(app, "GET", "/compute", "cpu=0")[0])
        assert hanging.wait(60), "the exporter never tried to reach the broker"
        worker = threading.Thread(target=lambda: answered.extend(
            call(app, "GET", "/compute", "cpu=0")[0] for _ in range(100)))
        worker.start()
        worker.join(timeout=120)  # a give-up guard: a request path that waited on Kafka would hang here
        assert not worker.is_alive() and answered == [200] * 101  # all answered while Kafka hung
        assert not release.is_set() and exporter.sent == 0
    finally:
        release.set()
    assert wait_for(lambda: exporter.dropped >= 101, 120), (exporter.dropped, exporter.sent)
    assert exporter.sent == 0
    exporter.close()


def test_scalelab_kafka_prints_its_address_and_stops():
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.cli", "kafka", "--seconds", "3"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("127.0.0.1:")
    consumer = kafka.KafkaProducer(bootstrap_servers=line, api_version=(2, 3))
    consumer.send("t", b"x").get(timeout=10)
    consumer.close()
    assert proc.wait(timeout=20) == 0
