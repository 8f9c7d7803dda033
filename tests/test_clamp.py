"""The one out-of-range rule, driven through everything that orders replicas: the three
simulated backends, the live backend over the orchestrator service, the service's own
``scaleSUT`` and ``setDeploymentLimit``, the loop's requested count and the env's masks.
The expected count is computed here, independently: the nearest count in ``[lo, hi]``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.agent.actions import ActionSet
from scalelab.errors import OrderError, UserError
from scalelab.experiments.config import load_config
from scalelab.experiments.episode import episode_seeds, make_backend, resolve
from scalelab.orchestrator.backend import ScaleResult, VirtualClock, clamp
from scalelab.orchestrator.live_backend import OrchestratorBackend
from scalelab.orchestrator.protocol import ScaleOrder
from scalelab.orchestrator.service import OrchestratorService
from scalelab.simulator.backends import ReplayBackend
from scalelab.simulator.replay import Replay


def nearest(requested: int, lo: int, hi: int) -> int:
    """The expected count, written out: below the range -> lo, above -> hi, else as asked."""
    if requested < lo:
        return lo
    if requested > hi:
        return hi
    return requested


class Deployment:
    """A scaler that is always ready at the count it was told; remembers every count."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, []

    @property
    def desired_replicas(self) -> int:
        return self.n

    @property
    def ready_replicas(self) -> int:
        return self.n

    def scale_to(self, n: int) -> None:
        self.calls.append(n)
        self.n = n


class InProcessOrchestrator:
    """The live backend's :class:`~scalelab.orchestrator.live_backend.Orchestrator`, answered by
    the real service's order handling (no Kafka)."""

    def __init__(self, service: OrchestratorService) -> None:
        self.service, self.tid = service, 0

    def order(self, name, **fields):
        self.tid += 1
        out = self.service.handle(json.dumps({"transactionId": self.tid, "order": name, **fields}).encode())
        result = next(m for topic, m in out if topic == "action_result")
        assert result["result"] == "OK", result
        return result

    def scale(self, mode, level, **opts):
        return self.order("scaleSUT", mode=mode, level=level, **opts)

    def get_state(self):
        return self.service.state_message(self.tid)


COUNTS = st.integers(-3, 14)


@settings(deadline=None)  # no timing in tests: a cold JIT or a loaded machine is not a failure
@given(current=st.integers(0, 12), requested=COUNTS, lo=st.integers(0, 6), span=st.integers(0, 6))
def test_clamp_is_the_nearest_count_in_range_and_says_so(current, requested, lo, span):
    hi = lo + span
    res = clamp(current, requested, lo, hi)
    assert res == ScaleResult(current, requested, nearest(requested, lo, hi))
    assert res.clamped == (requested != res.applied) and res.changed == (res.applied != current)


@pytest.mark.parametrize(("lo", "hi"), [(3, 2), (-1, 4)])
def test_limits_that_are_not_a_range_are_a_user_error(lo, hi):
    with pytest.raises(OrderError, match="not a range") as err:
        clamp(1, 2, lo, hi)
    assert isinstance(err.value, UserError)


@settings(deadline=None)  # no timing in tests: a cold JIT or a loaded machine is not a failure
@given(mode=st.sampled_from(["fixed", "incremental"]), level=st.integers(0, 12), current=st.integers(1, 8),
       lo=st.integers(1, 3), span=st.integers(0, 5))
def test_an_orders_count_is_the_clamp_of_what_it_asks(mode, level, current, lo, span):
    hi = lo + span
    order = ScaleOrder(mode, level if mode == "fixed" else level - 6)
    asked = order.level if mode == "fixed" else current + order.level
    assert order.requested(current) == asked
    assert order.target(current, lo, hi) == nearest(asked, lo, hi)


@settings(max_examples=40, deadline=None)
@given(start=st.integers(1, 5), orders=st.lists(st.tuples(st.sampled_from(["fixed", "incremental"]),
                                                         st.integers(-6, 12)), min_size=1, max_size=6),
       lo=st.integers(1, 3), span=st.integers(0, 4))
def test_the_service_never_scales_outside_its_limits_and_answers_the_count(start, orders, lo, span):
    hi = lo + span
    dep = Deployment(nearest(start, lo, hi))
    svc = OrchestratorService(dep, min_replicas=lo, max_replicas=hi)
    for tid, (mode, level) in enumerate(orders):
        if mode == "fixed" and level < 0:
            continue
        current = dep.n
        out = svc.handle(json.dumps({"transactionId": tid, "order": "scaleSUT", "mode": mode, "level": level}).encode())
        ((topic, msg),) = out
        assert topic == "action_result"
        asked = level if mode == "fixed" else current + level
        assert msg["result"] == "OK" and msg["replicas"] == nearest(asked, lo, hi) == dep.n
        assert ("clamped" in (msg.get("reason") or "")) == (asked != dep.n)
    # tighter limits: the deployment obeys at once, through the same rule
    new_lo, new_hi = lo + 1, lo + 1
    current = dep.n
    svc.handle(json.dumps({"transactionId": "limits", "order": "setDeploymentLimit", "min": new_lo, "max": new_hi}).encode())
    assert dep.n == nearest(current, new_lo, new_hi)
    assert all(lo <= n <= max(hi, new_hi) for n in dep.calls)


def tiny_replay() -> Replay:
    import pandas as pd

    rows = [{"users": 5, "replicas": n, "sample": 0, "p95_ms": 100.0, "rps": 1.0, "cpu_request_ratio": 0.5,
             "cpu_limit_ratio": 0.5, "mem_request_ratio": 0.1, "mem_limit_ratio": 0.1, "mean_ms": 50.0, "spans": 5,
             "cpu_request_now": 0.5}
            for n in (1, 2, 3)]
    return Replay(pd.DataFrame(rows), 1, 3, 1)


def simulated(engine: str, lo: int, hi: int):
    cfg = load_config({"name": "clamp", "seed": 2, "runs": 1, "steps": 3, "engine": engine,
                       "workload": {"kind": "constant", "users": 4},
                       "cluster": {"min_replicas": lo, "max_replicas": hi, "initial_replicas": lo}})
    r = resolve(cfg)
    return make_backend(cfg, r, dict(episode_seeds(2, 1, 1)[0], policy=0), np.full(3, 4.0), VirtualClock())


@settings(max_examples=15, deadline=None)
@given(requests=st.lists(COUNTS, min_size=1, max_size=5), lo=st.integers(1, 2), span=st.integers(0, 3))
def test_every_backend_carries_out_an_order_as_the_clamp_says(requests, lo, span):
    hi = lo + span
    service = OrchestratorService(Deployment(lo), min_replicas=lo, max_replicas=hi)
    live = OrchestratorBackend(InProcessOrchestrator(service), VirtualClock(), lo, hi, drive_load=False)
    live.setup(lo)
    backends = {"des": simulated("des", lo, hi), "fluid": simulated("fluid", lo, hi), "live": live}
    if (lo, hi) == (1, 3):
        backends["replay"] = ReplayBackend(tiny_replay(), VirtualClock())
    for name, backend in backends.items():
        for n in requests:
            current = backend.desired_replicas
            res = backend.scale_to(n)
            assert res == ScaleResult(current, n, nearest(n, lo, hi)), name
            assert backend.desired_replicas == res.applied, name
    assert service.scaler.n == live.desired_replicas


def test_the_envs_masks_are_the_actions_the_clamp_leaves_effective():
    from scalelab.experiments.env import SandboxScalingEnv

    cfg = load_config({"name": "mask", "seed": 1, "runs": 1, "steps": 4, "workload": {"kind": "constant", "users": 4},
                       "cluster": {"min_replicas": 1, "max_replicas": 2, "initial_replicas": 1},
                       "policies": [{"name": "static", "replicas": 1}]})
    env = SandboxScalingEnv(cfg, actions="incremental")
    env.reset(seed=0)
    assert env.actions == ActionSet.incremental(-1, 0, 1)
    assert env.action_masks().tolist() == [False, True, True]  # at the minimum: down is cancelled
    env.step(2)
    assert env.action_masks().tolist() == [True, True, False]  # at the maximum: up is cancelled
