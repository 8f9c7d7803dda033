"""The orchestrator's order handling: every order answered, never out of [min, max]."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.orchestrator.context import Spans
from scalelab.orchestrator.protocol import OrderError, parse_order
from scalelab.orchestrator.service import OrchestratorService


class CountingScaler:
    """A deployment that is always ready at the count it was told (for order logic)."""

    def __init__(self, n=1):
        self.n = n
        self.calls = []

    @property
    def desired_replicas(self):
        return self.n

    @property
    def ready_replicas(self):
        return self.n

    def scale_to(self, n):
        self.calls.append(n)
        self.n = n


def reply(svc, msg):
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    return svc.handle(raw)


def test_scale_orders_are_clamped_and_answered():
    sc = CountingScaler(2)
    svc = OrchestratorService(sc, min_replicas=1, max_replicas=5)
    out = reply(svc, {"transactionId": 7, "order": "scaleSUT", "mode": "fixed", "level": 9})
    assert out == [("action_result", {"transactionId": 7, "order": "scaleSUT", "result": "OK",
                                      "reason": "clamped from 9 to [1, 5]: 5", "replicas": 5})]
    reply(svc, {"transactionId": 8, "order": "scaleSUT", "mode": "incremental", "level": -2})
    assert sc.n == 3
    reply(svc, {"transactionId": 9, "order": "setDeploymentLimit", "min": 2, "max": 3})
    reply(svc, {"transactionId": 10, "order": "scaleSUT", "mode": "incremental", "level": -5})
    assert sc.n == 2


@given(st.one_of(st.binary(max_size=50), st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=5),
                                                          max_size=5)))
def test_any_input_gets_an_answer_and_never_a_scale_outside_the_limits(junk):
    sc = CountingScaler(3)
    svc = OrchestratorService(sc, min_replicas=2, max_replicas=4)
    out = reply(svc, junk if isinstance(junk, bytes) else {**junk, "transactionId": "t"})
    assert out and out[-1][0] == "action_result" and out[-1][1]["result"] in ("OK", "ERROR")
    assert all(2 <= n <= 4 for n in sc.calls)


def test_errors_name_what_was_wrong():
    svc = OrchestratorService(CountingScaler())
    cases = {
        b"{not json": "not JSON",
        json.dumps({"transactionId": 1, "order": "scaleSUP"}).encode(): "did you mean 'scaleSUT'",
        json.dumps({"transactionId": 2, "order": "scaleSUT", "mode": "relative", "level": 1}).encode(): "mode",
        json.dumps({"transactionId": 3, "order": "scaleSUT", "mode": "fixed", "level": 2.5}).encode(): "level",
        json.dumps({"transactionId": 4, "order": "setDeploymentLimit", "min": 5, "max": 2}).encode(): "min",
        json.dumps({"transactionId": 5, "order": "LocustMgmt", "payload": {"order": "dance"}}).encode(): "payload",
        json.dumps({"order": "scaleSUT", "mode": "fixed", "level": 2}).encode(): "no transactionId",
    }
    for raw, words in cases.items():
        (topic, msg), = svc.handle(raw)
        assert topic == "action_result" and msg["result"] == "ERROR" and words in msg["reason"]
        assert msg["transactionId"] == (json.loads(raw).get("transactionId") if raw.startswith(b"{\"") else None)
    assert svc.scaler.desired_replicas == 1  # the order without a transactionId was not carried out


def test_get_state_forwarding_and_config():
    svc = OrchestratorService(CountingScaler(2), clock=lambda: 100.0)
    out = reply(svc, {"transactionId": "a", "order": "getState"})
    assert [t for t, _ in out] == ["state", "action_result"]
    state = out[0][1]
    assert state["transactionId"] == "a" and state["context"]["replicas"] == 2
    assert state["gaps"]["prometheus_s"] is None  # never collected: said so, not hidden
    out = reply(svc, {"transactionId": "b", "order": "LocustMgmt",
                      "payload": {"order": "set_user_level", "level": 20, "spawn_rate": 5}})
    assert out[0] == ("locust_order", {"order": "set_user_level", "level": 20, "spawn_rate": 5})
    reply(svc, {"transactionId": "c", "order": "ChangeConfig", "component": "zipkin", "trace_number": 4000})
    reply(svc, {"transactionId": "d", "order": "setZipkinLookback", "lookback": 12})
    cfg = reply(svc, {"transactionId": "e", "order": "getConfig"})[0][1]["config"]
    assert cfg["context"]["span_buffer"] == 4000 and cfg["context"]["window_s"] == 12.0


def test_reset_stats_drops_the_spans_and_samples_of_the_previous_episode():
    svc = OrchestratorService(CountingScaler(2), clock=lambda: 100.0)
    svc.builder.add_spans(Spans(start_s=np.array([95.0, 96.0]), duration_ms=np.array([900.0, 800.0]),
                                replica=np.zeros(2, dtype=np.int64), error=np.zeros(2, dtype=bool)))
    assert reply(svc, {"transactionId": "a", "order": "getState"})[0][1]["context"]["spans"] == 2
    out = reply(svc, {"transactionId": "b", "order": "resetZipkinPrometheusStats"})
    assert out[-1][1]["result"] == "OK"
    ctx = reply(svc, {"transactionId": "c", "order": "getState"})[0][1]["context"]
    assert ctx["spans"] == 0 and ctx["p95_ms"] == 0.0


def test_parse_order_keeps_the_transaction_id_on_errors():
    with pytest.raises(OrderError) as e:
        parse_order(json.dumps({"transactionId": 42, "order": "scaleSUT", "mode": "fixed", "level": -1}))
    assert e.value.transaction_id == 42 and e.value.order == "scaleSUT"


def test_pools_are_scaled_separately_and_reported():
    cpu, gpu = CountingScaler(), CountingScaler(1)
    svc = OrchestratorService(cpu, max_replicas=4, pools={"sandbox": cpu, "sandbox-gpu": gpu})
    reply(svc, {"transactionId": 1, "order": "scaleSUT", "mode": "fixed", "level": 3, "deployment": "sandbox-gpu"})
    reply(svc, {"transactionId": 2, "order": "scaleSUT", "mode": "incremental", "level": 1})
    assert (cpu.n, gpu.n) == (2, 3)  # no deployment: the default pool
    (_topic, msg), = svc.handle(json.dumps({"transactionId": 3, "order": "scaleSUT", "mode": "fixed", "level": 9,
                                           "deployment": "sandbox-arm"}).encode())
    assert msg["result"] == "ERROR" and "'sandbox-arm' is not one of ['sandbox', 'sandbox-gpu']" in msg["reason"]
    assert (cpu.n, gpu.n) == (2, 3)
    state = svc.state_message("s")
    assert state["pools"] == {"sandbox": {"desired": 2, "ready": 2}, "sandbox-gpu": {"desired": 3, "ready": 3}}


@pytest.mark.parametrize("raw, words", [
    (b'{"transactionId": 1, "order": "setZipkinLookback", "lookback": NaN}', "lookback must be a number in (0, 3600]"),
    (b'{"transactionId": 2, "order": "setZipkinLookback", "lookback": Infinity}', "lookback must be a number"),
    (b'{"transactionId": 3, "order": "setDeploymentLimit", "min": 1, "max": 1000000}', "max <= 1000"),
    (b'{"transactionId": 4, "order": "ChangeConfig", "component": "zipkin", "trace_number": 100000000}',
     "trace_number <= 1000000"),
    (b'{"transactionId": 5, "order": "scaleSUT", "mode": "fixed", "level": 2, "timeout_s": 1e9}',
     "timeout_s must be a number in (0, 300]"),
])  # fmt: skip
def test_config_orders_must_be_finite_and_within_their_ceilings(raw, words):
    svc = OrchestratorService(CountingScaler(2), clock=lambda: 100.0)
    (_, msg), = svc.handle(raw)
    assert msg["result"] == "ERROR" and words in msg["reason"] and msg["transactionId"] == json.loads(raw)["transactionId"]
    assert svc.scaler.calls == [] and svc.settings.window_s > 0 and svc.max == 10  # nothing changed


def test_a_repeated_transaction_id_is_carried_out_once():
    svc = OrchestratorService(CountingScaler(2), max_replicas=9)
    first = reply(svc, {"transactionId": "x", "order": "scaleSUT", "mode": "incremental", "level": 1})
    again = reply(svc, {"transactionId": "x", "order": "scaleSUT", "mode": "incremental", "level": 1})
    assert svc.scaler.n == 3 and svc.scaler.calls == [3]
    assert again[0][1]["duplicate"] is True and again[0][1]["replicas"] == first[0][1]["replicas"] == 3


def test_a_new_limit_moves_the_deployment_into_it_at_once():
    svc = OrchestratorService(CountingScaler(6), max_replicas=10)
    (_, msg), = reply(svc, {"transactionId": 1, "order": "setDeploymentLimit", "min": 1, "max": 4})
    assert svc.scaler.n == 4 and "default 6 -> 4" in msg["reason"]


def test_an_oversized_order_is_answered_with_an_error_naming_its_size():
    svc = OrchestratorService(CountingScaler(2))
    raw = json.dumps({"transactionId": 9, "order": "scaleSUT", "mode": "fixed", "level": 3, "pad": "x" * 70_000})
    (_, msg), = svc.handle(raw.encode())
    assert msg["result"] == "ERROR" and msg["transactionId"] == 9 and "bytes is larger than 65536" in msg["reason"]
    assert svc.scaler.calls == []


def test_stale_orders_are_refused_and_a_burst_applies_only_its_newest_scale():
    svc = OrchestratorService(CountingScaler(2), max_replicas=9)
    now = svc.started_wall_s

    def order(tid, level):
        return json.dumps({"transactionId": tid, "order": "scaleSUT", "mode": "fixed", "level": level}).encode()

    out = svc.handle_batch([(order("old", 8), now - 600), (order("a", 3), now + 1), (order("b", 5), now + 2),
                            (order("c", 4), now + 3)])
    results = {m["transactionId"]: m for _, m in out}
    assert "stale" in results["old"]["reason"] and results["old"]["result"] == "ERROR"
    assert "superseded" in results["a"]["reason"] and "superseded" in results["b"]["reason"]
    assert results["c"]["result"] == "OK" and svc.scaler.calls == [4]  # one start, not three


def test_a_scale_order_waits_off_the_order_loop():
    """A scale-up that waits for readiness holds no other order: getState is answered
    while it waits, and the scale's own answer comes when it is done."""
    import threading

    release = threading.Event()

    class SlowScaler(CountingScaler):
        def scale_to(self, n):
            release.wait(10)  # a replica that takes its time to become ready
            super().scale_to(n)

    svc = OrchestratorService(SlowScaler(1), max_replicas=5, clock=lambda: 100.0)
    now = svc.started_wall_s
    scale = json.dumps({"transactionId": "s", "order": "scaleSUT", "mode": "fixed", "level": 3}).encode()
    state = json.dumps({"transactionId": "g", "order": "getState"}).encode()
    out = svc.handle_batch([(scale, now + 1), (state, now + 1)], defer=svc._defer_scale)
    assert [m["transactionId"] for _, m in out] == ["g", "g"]  # answered at once; the scale still waits
    assert svc._outbox.empty()
    release.set()
    _, msg = svc._outbox.get(timeout=10)
    assert msg["transactionId"] == "s" and msg["result"] == "OK" and svc.scaler.n == 3
    svc.stop()


def test_the_users_p95_is_taken_over_the_spans_window_at_the_same_instant():
    """The injector's statistics carry each request's [start_s, end_s, ms]; the state's
    ``client.p95_ms`` is their p95 over the context's window at the state's instant, as
    the spans' p95 is (hand-computed: the requests that ended in (100 - 10, 100])."""
    from scalelab.orchestrator.context import ContextSettings, percentile

    now = [100.0]
    svc = OrchestratorService(CountingScaler(2), clock=lambda: now[0],
                              context=ContextSettings(window_s=10.0, rps_mode="window"))
    ms = np.arange(1.0, 41.0) * 10.0  # 10 .. 400 ms
    ends = np.linspace(80.5, 99.5, 40)  # half of them before the window
    samples = [[e - m / 1000.0, e, m] for e, m in zip(ends, ms, strict=True)]
    svc._locust_stats(json.dumps({"user_count": 5, "samples": samples}).encode())
    state = svc.state_message("s")
    inside = ms[(ends > 90.0) & (ends <= 100.0)]
    assert state["client"] == {"p95_ms": pytest.approx(percentile(inside, 95.0)), "requests": len(inside)}
    assert "samples" not in state["locust"] and state["locust"]["user_count"] == 5
    now[0] = 200.0  # nothing ended in the window: no p95, not 0 ms
    assert svc.state_message("s")["client"] == {"p95_ms": None, "requests": 0}
    for bad in (b"[1, 2]", json.dumps({"samples": [[1, 2]]}).encode(), b'{"samples": [[1, 2, NaN]]}'):
        errors = svc.errors
        svc._locust_stats(bad)
        assert svc.errors == errors + 1  # counted and dropped, the last good statistics kept
    assert svc.last_locust["user_count"] == 5


def test_client_latencies_use_the_contexts_key_start_in_paper_mode():
    from scalelab.orchestrator.context import ClientLatencies, ContextSettings

    c = ClientLatencies()
    c.add(np.array([[89.0, 91.0, 2000.0], [95.0, 95.1, 100.0]]))  # started before the window, ended inside
    assert c.p95(100.0, ContextSettings(window_s=10.0, rps_mode="window")) == (pytest.approx(1905.0), 2)
    assert c.p95(100.0, ContextSettings(window_s=10.0, rps_mode="paper", span_buffer=4000)) == (pytest.approx(100.0), 1)
