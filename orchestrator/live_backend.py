"""The live backend: the step loop's :class:`~scalelab.orchestrator.backend.Backend` over the
orchestrator's order protocol (the paper's CogscalingLib side).

It speaks to anything with the :class:`Orchestrator` methods -- over Kafka,
``scalelab.orchestrator.client.OrchestratorClient``; in tests, an in-process stand-in -- and
imports no network client itself. A call that raises a
:class:`~scalelab.errors.TemporaryError` (no answer yet) is made again after the
error's ``retry_after_s`` (on the loop's clock), for up to ``retry_s`` seconds; then
:class:`OrchestratorGone`, a permanent error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from scalelab.errors import PermanentError, TemporaryError
from scalelab.orchestrator.backend import BaseBackend, Clock, Observation, QueueSignals, ScaleResult, clamp
from scalelab.orchestrator.context import Context


class OrchestratorGone(PermanentError):
    """The orchestrator did not answer for the whole retry budget (``retry_s``)."""


class Orchestrator(Protocol):
    """What the agent needs of the orchestrator. A call that gets no answer raises a
    :class:`~scalelab.errors.TemporaryError` saying when to try again."""

    def order(self, name: str, **fields: Any) -> dict: ...

    def get_state(self) -> dict: ...

    def scale(self, mode: str, level: int, **opts: Any) -> dict: ...


def observation_from_state(state: dict, t_s: float, load: float, metric_gap_s: float = 15.0) -> Observation:
    """An :class:`Observation` from a ``state`` message. A signal is missing when the
    orchestrator says so (``gaps``): no Prometheus sample for ``metric_gap_s`` or an
    error from it; no completed span while load is offered."""
    ctx = Context.from_dict(state["context"])
    gaps = state.get("gaps") or {}
    missing = []
    if load > 0 and ctx.spans == 0 and int(state.get("in_flight", 0)) == 0:
        missing.append("spans")
    prom = gaps.get("prometheus_s")
    if gaps.get("prometheus_error") or (prom is not None and prom > metric_gap_s):
        missing.append("metrics")
    client = (state.get("client") or {}).get("p95_ms")  # the users' p95 over the spans' window
    return Observation(t_s=t_s, context=ctx, desired_replicas=int(state.get("desired_replicas", ctx.replicas)),
                       in_flight=int(state.get("in_flight", 0)), censored=int(state.get("censored", 0)),
                       missing=tuple(missing),
                       client_p95_ms=float(client) if client is not None else None,
                       queue=QueueSignals.from_dict(state["queue"]) if state.get("queue") else None)


class OrchestratorBackend(BaseBackend):
    """Scale orders, the injector's level and ``getState`` through the orchestrator.
    ``injector_task``: a ``set_task`` order for the injector (what its users do), sent
    once before the first level. ``retries``: calls made again after no answer."""

    def __init__(self, orchestrator: Orchestrator, clock: Clock, min_replicas: int, max_replicas: int,
                 retry_s: float = 180.0, spawn_rate: float = 100.0, drive_load: bool = True,
                 injector_task: dict | None = None, log: Callable[[str], None] = lambda m: None) -> None:
        self.orch, self.clock, self.retry_s, self.log = orchestrator, clock, float(retry_s), log
        self.min_replicas, self.max_replicas = int(min_replicas), int(max_replicas)
        self.spawn_rate, self.drive_load = float(spawn_rate), drive_load
        self._desired: int | None = None
        self.level: float | None = None
        self.retries = 0
        self.injector_task = dict(injector_task or {})
        self._task_sent = not self.injector_task

    def _call(self, what: Callable[[], Any]) -> Any:
        """``what()``, made again after each temporary error's ``retry_after_s`` until
        ``retry_s`` have passed; then :class:`OrchestratorGone`."""
        end = self.clock.now() + self.retry_s
        while True:
            try:
                return what()
            except TemporaryError as exc:
                if self.clock.now() > end:
                    raise OrchestratorGone(f"the orchestrator did not answer for {self.retry_s:g} s: {exc}") from None
                self.retries += 1
                self.log(f"agent: no answer ({exc}); retrying in {exc.retry_after_s:g} s")
                self.clock.sleep_until(self.clock.now() + exc.retry_after_s)

    def setup(self, initial_replicas: int) -> None:
        """The deployment limits, the initial replica count, then empty span and sample
        buffers (``resetZipkinPrometheusStats``): an episode sees only its own traffic,
        not the end of the previous one."""
        self._call(lambda: self.orch.order("setDeploymentLimit", min=self.min_replicas, max=self.max_replicas))
        self._call(lambda: self.orch.scale("fixed", int(initial_replicas)))
        self._call(lambda: self.orch.order("resetZipkinPrometheusStats"))
        if self.drive_load:  # the injector's counts start with the episode
            self._call(lambda: self.orch.order("LocustMgmt", payload={"order": "reset"}))
        self._desired = int(initial_replicas)

    @property
    def desired_replicas(self) -> int:
        if self._desired is None:
            self._desired = int(self._call(self.orch.get_state).get("desired_replicas", self.min_replicas))
        return self._desired

    def set_load(self, level: float) -> None:
        if not self.drive_load or level == self.level:
            return
        if not self._task_sent:  # what users do, before the first level (also after a resume)
            task = {"order": "set_task", **self.injector_task}
            self._call(lambda: self.orch.order("LocustMgmt", payload=task))
            self._task_sent = True
        self.level = level
        payload = {"order": "set_user_level", "level": int(level), "spawn_rate": self.spawn_rate}
        self._call(lambda: self.orch.order("LocustMgmt", payload=payload))

    def stop_load(self) -> dict:
        """Stop the injector (the end of an episode), so the next one starts clean;
        returns its last statistics (requests, failures by reason)."""
        if not self.drive_load:
            return {}
        stats = self._call(self.orch.get_state).get("locust") or {}
        self._call(lambda: self.orch.order("LocustMgmt", payload={"order": "stop"}))
        self.level = None
        return stats

    def observe(self) -> Observation:
        state = self._call(self.orch.get_state)
        self._desired = int(state.get("desired_replicas", self._desired or self.min_replicas))
        return observation_from_state(state, self.clock.now(), self.level or 0.0)

    def scale_to(self, n: int) -> ScaleResult:
        result = clamp(self.desired_replicas, n, self.min_replicas, self.max_replicas)
        if result.changed:
            self._call(lambda: self.orch.scale("fixed", result.applied, waitKubernetes=False))
            self._desired = result.applied
        return result

    def settle(self) -> Observation:
        """Until the ordered replicas are ready and Prometheus has sampled them (the
        orchestrator's ``waitKubernetes``/``waitPrometheus``), then a fresh state."""
        target = self.desired_replicas
        self._call(lambda: self.orch.scale("fixed", target, waitKubernetes=True, waitPrometheus=True))
        return self.observe()
