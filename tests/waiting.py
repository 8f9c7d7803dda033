"""Waiting on a condition with a deadline (the live tests wait on readiness, never on
sleeps)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def tail(bootstrap: str, topic: str, timeout_s: float = 60.0):
    """A consumer of every partition of ``topic`` from its current end, without a
    consumer group: nothing to join, so it reads what is sent once this returns."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, api_version=(2, 3), enable_auto_commit=False)
    wait_for(lambda: consumer.partitions_for_topic(topic), timeout_s, f"the partitions of topic {topic!r}")
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for tp in parts:  # resolve the end offsets now, before anything is sent
        consumer.position(tp)
    return consumer
