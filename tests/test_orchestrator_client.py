"""The agent-side client against the orchestrator service over the embedded Kafka."""

import pytest

pytest.importorskip("kafka")

from scalelab.orchestrator.client import OrchestratorClient, OrderFailed
from scalelab.orchestrator.kafka_embedded import EmbeddedKafka
from scalelab.orchestrator.service import OrchestratorService
from scalelab.orchestrator.stack import TOPICS, create_topics
from tests.test_orchestrator_service import CountingScaler

pytestmark = pytest.mark.live


def test_client_orders_state_and_errors():
    kafka = EmbeddedKafka()
    addr = kafka.start()
    create_topics(addr, TOPICS)
    sc = CountingScaler(1)
    svc = OrchestratorService(sc, bootstrap=addr, max_replicas=4)
    svc.start()
    try:
        assert svc.ready.wait(60)
        client = OrchestratorClient(addr)
        assert client.scale("incremental", 2)["replicas"] == 3 and sc.n == 3
        state = client.get_state()
        assert state["context"]["replicas"] == 3 and "gaps" in state
        with pytest.raises(OrderFailed, match="mode"):
            client.scale("sideways", 1)
        client.close()
    finally:
        svc.stop()
        kafka.stop()
