"""Known answers for the context: p95, RPS in both modes, empty windows, metric buffer."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.orchestrator.context import (
    DEFAULT,
    FIELDS,
    PAPER,
    ContextBuilder,
    ContextSettings,
    PodSamples,
    Spans,
)


def spans_at_rate(rate: float, t0: float, t1: float, duration_ms: float = 10.0) -> Spans:
    """Evenly spaced spans of a fixed duration, starting in [t0, t1)."""
    n = round(rate * (t1 - t0))
    start = t0 + np.arange(n) / rate
    return Spans(start_s=start, duration_ms=np.full(n, duration_ms))


def test_p95_of_known_durations_is_exact():
    b = ContextBuilder(DEFAULT)
    durations = np.arange(1, 101, dtype=float)  # 1..100 ms
    b.add_spans(Spans(start_s=np.linspace(1.0, 2.0, 100), duration_ms=durations))
    ctx = b.build(now_s=5.0, replicas=3)
    assert ctx.p95_ms == pytest.approx(95.05)  # numpy's linear interpolation: 95 + 0.05
    assert ctx.mean_ms == pytest.approx(50.5)
    assert ctx.spans == 100
    assert ctx.replicas == 3


def test_default_mode_counts_1000_rps_exactly():
    b = ContextBuilder(DEFAULT)
    for k in range(12):  # one batch of spans per second, as a collector would add them
        b.add_spans(spans_at_rate(1000.0, k, k + 1))
    ctx = b.build(now_s=12.0, replicas=1)
    assert ctx.rps == pytest.approx(1000.0, rel=0.002)
    assert ctx.spans == pytest.approx(10_000, abs=20)


def test_paper_mode_cannot_see_1000_rps_in_its_window():
    b = ContextBuilder(PAPER)
    for k in range(12):
        b.add_spans(spans_at_rate(1000.0, k, k + 1))
    ctx = b.build(now_s=12.0, replicas=1)
    # the 4000-span buffer holds the last 4 s only, not the 12 s window ...
    assert ctx.spans == 4000
    # ... and the RPS formula count / (max ts - min ts) over whole seconds reads 4000 / 3
    assert ctx.rps == pytest.approx(4000 / 3)
    assert abs(ctx.rps - 1000.0) / 1000.0 > 0.25


def test_paper_mode_caps_at_the_buffer_when_spans_share_one_second():
    b = ContextBuilder(PAPER)
    b.add_spans(spans_at_rate(9000.0, 11.0, 11.99))
    ctx = b.build(now_s=12.0, replicas=1)
    assert ctx.spans == 4000 and ctx.rps == 4000.0  # the paper's "all aligned" fallback


def test_paper_mode_agrees_at_low_rates():
    b = ContextBuilder(PAPER)
    b.add_spans(spans_at_rate(20.0, 0.0, 60.0))
    ctx = b.build(now_s=60.0, replicas=1)
    assert ctx.spans == 12 * 20 - 1  # the window (48, 60] leaves out the span at 48.0
    assert ctx.rps == pytest.approx(239 / 11)  # 239 spans over whole seconds 48..59


def test_empty_window_gives_zeros_not_an_exception():
    for settings in (DEFAULT, PAPER):
        b = ContextBuilder(settings)
        ctx = b.build(now_s=100.0, replicas=2)
        assert (ctx.p95_ms, ctx.rps, ctx.spans, ctx.cpu_request_ratio) == (0.0, 0.0, 0, 0.0)
        b.add_spans(spans_at_rate(10.0, 0.0, 10.0))
        late = b.build(now_s=1000.0, replicas=2)  # everything is older than the window
        assert late.spans == 0 and late.p95_ms == 0.0


def test_metric_buffer_means_over_pods_then_samples():
    b = ContextBuilder(ContextSettings(metric_buffer=2))
    def pods(cpu):
        n = len(cpu)
        return PodSamples(np.array(cpu), np.full(n, 256.0), np.full(n, 0.5), np.full(n, 1.0),
                          np.full(n, 512.0), np.full(n, 1024.0))
    b.add_pod_samples(pods([0.1, 0.3]))  # mean 0.2 cores -> 0.4 of request
    b.add_pod_samples(pods([0.5]))  # 1.0 of request
    b.add_pod_samples(pods([0.25, 0.25]))  # 0.5; the buffer now holds the last two
    ctx = b.build(now_s=1.0, replicas=2)
    assert ctx.cpu_request_ratio == pytest.approx((1.0 + 0.5) / 2)
    assert ctx.cpu_limit_ratio == pytest.approx((0.5 + 0.25) / 2)
    assert ctx.mem_request_ratio == pytest.approx(0.5)
    assert ctx.mem_limit_ratio == pytest.approx(0.25)
    assert ctx.vector().shape == (len(FIELDS),)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="rps_mode"):
        ContextSettings(rps_mode="exact")
    with pytest.raises(ValueError, match="span_buffer"):
        ContextSettings(rps_mode="paper")


@given(st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=200), st.floats(0, 100))
def test_fast_percentile_matches_numpy(values, q):
    from scalelab.orchestrator.context import percentile

    arr = np.array(values)
    assert percentile(arr, q) == pytest.approx(float(np.percentile(arr, q)), rel=1e-12, abs=1e-9)
