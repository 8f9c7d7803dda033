"""The agent side of the protocol (the paper's CogscalingLib): send an order on
``action``, wait for the reply naming its ``transactionId`` on ``action_result`` (and on
``state`` for ``getState``)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid

from scalelab.errors import PermanentError, TemporaryError


class OrderFailed(PermanentError):
    """The orchestrator answered ERROR (it refused the order); the message is its
    reason. Sending the same order again would be refused again."""


class OrchestratorUnavailable(TemporaryError, TimeoutError):
    """No answer: the broker or the orchestrator is away; try again after
    ``retry_after_s`` (0 when the call already waited its whole timeout)."""


class OrchestratorClient:
    def __init__(self, bootstrap: str, timeout_s: float = 60.0, api_version: tuple[int, int] | None = (2, 3)) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        kw = {"api_version": api_version} if api_version else {}
        self.timeout = timeout_s
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0, max_block_ms=5000,
                                      reconnect_backoff_max_ms=1000, **kw)
        self.consumer = KafkaConsumer("action_result", "state", bootstrap_servers=bootstrap,
                                      group_id=f"scalelab-agent-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest",
                                      metadata_max_age_ms=5000, fetch_max_wait_ms=10,
                                      reconnect_backoff_max_ms=1000, **kw)
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._results: dict[str, dict] = {}
        self._states: dict[str, dict] = {}
        self._lock = threading.Lock()
        end = time.monotonic() + timeout_s
        while not self.consumer.assignment() and time.monotonic() < end:
            self.consumer.poll(timeout_ms=100)

    def _poll(self) -> None:
        from kafka.errors import KafkaError

        try:
            polled = self.consumer.poll(timeout_ms=50)
        except KafkaError as exc:
            raise OrchestratorUnavailable(f"reading replies failed: {exc}", retry_after_s=1.0) from None
        for tp, records in polled.items():
            for rec in records:
                try:
                    msg = json.loads(rec.value)
                except ValueError:
                    continue
                if isinstance(msg, dict) and "transactionId" in msg:
                    target = self._states if tp.topic == "state" else self._results
                    target[str(msg["transactionId"])] = msg

    def order(self, name: str, **fields) -> dict:
        """Send one order and return its ``action_result`` (raises :class:`OrderFailed`)."""
        from kafka.errors import KafkaError

        tid = f"{self._prefix}-{next(self._ids)}"
        try:
            self.producer.send("action", json.dumps({"transactionId": tid, "order": name, **fields}).encode())
            self.producer.flush(timeout=self.timeout)
        except KafkaError as exc:
            raise OrchestratorUnavailable(f"sending {name} failed: {exc}", retry_after_s=1.0) from None
        end = time.monotonic() + self.timeout
        while tid not in self._results:
            if time.monotonic() > end:
                raise OrchestratorUnavailable(f"no answer to {name} ({tid}) within {self.timeout:g} s", retry_after_s=0.0)
            self._poll()
        result = self._results.pop(tid)
        if result.get("result") != "OK":
            raise OrderFailed(f"{name}: {result.get('reason')}")
        result["_tid"] = tid
        return result

    def get_state(self) -> dict:
        """The orchestrator's ``state`` message (context, gaps, locust stats)."""
        tid = self.order("getState")["_tid"]
        end = time.monotonic() + self.timeout
        while tid not in self._states:
            if time.monotonic() > end:
                raise OrchestratorUnavailable(f"no state for {tid} within {self.timeout:g} s", retry_after_s=0.0)
            self._poll()
        return self._states.pop(tid)

    def scale(self, mode: str, level: int, **opts) -> dict:
        return self.order("scaleSUT", mode=mode, level=level, **opts)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
