"""Order round trip over Kafka on loopback: getState → state, p50 and p99, against the
orchestrator service on the embedded broker (a static scaler, no replicas needed).

    python benchmarks/bench_orders.py [--orders 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scalelab.orchestrator.client import OrchestratorClient
from scalelab.orchestrator.kafka_embedded import EmbeddedKafka
from scalelab.orchestrator.service import OrchestratorService
from scalelab.orchestrator.stack import TOPICS, create_topics


class Fixed:
    desired_replicas = ready_replicas = 2

    def scale_to(self, n: int) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--orders", type=int, default=300)
    args = ap.parse_args()
    kafka = EmbeddedKafka()
    addr = kafka.start()
    create_topics(addr, TOPICS)
    svc = OrchestratorService(Fixed(), bootstrap=addr)
    svc.start()
    svc.ready.wait(30)
    client = OrchestratorClient(addr)
    for _ in range(20):
        client.get_state()
    lat = []
    for _ in range(args.orders):
        t = time.perf_counter()
        client.get_state()
        lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat)
    print(f"getState -> state over the embedded Kafka, {args.orders} orders: "
          f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms")
    client.close()
    svc.stop()
    kafka.stop()


if __name__ == "__main__":
    main()
