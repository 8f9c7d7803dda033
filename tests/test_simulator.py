"""The cluster twin against closed forms, the CFS quota by hand, lifecycle, determinism,
and the calibration to the paper's table."""

import numpy as np
import pytest

from scalelab.simulator.calibration import calibrate
from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import PAPER, AppProfile, DemandModel


def make(app, replicas=1, seed=0, think=(0.0, 2.0), max_replicas=10, startup=5.0, balancer="round-robin"):
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    settings = ClusterSettings(initial_replicas=replicas, max_replicas=max_replicas, startup_seconds=startup,
                               think_low_s=think[0], think_high_s=think[1], balancer=balancer)
    return SimCluster(app, settings, *rngs)


def plain_ps(mean_ms: float) -> AppProfile:
    """One core, no quota in the way, no overhead, no contention: a textbook PS server."""
    return AppProfile(name="ps", demand=DemandModel(kind="exponential", mean_ms=mean_ms), cpu_request=1.0,
                      cpu_limit=1000.0, overhead_ms=0.0, burst_cores=1.0, contention=0.0,
                      memory_request_mib=512.0, memory_limit_mib=512.0)


def run_for(cluster, seconds, step=5.0):
    out = []
    t = cluster.now
    while t < seconds:
        t += step
        out.append(cluster.run_to(t).spans)
    return np.concatenate([s.duration_ms for s in out])


def test_mm1_processor_sharing_mean_response_is_closed_form():
    # M/M/1-PS: E[T] = 1 / (mu - lambda) = 1 / (10 - 5) = 200 ms
    cluster = make(plain_ps(100.0), seed=3)
    t, durations = 0.0, []
    while t < 20_000:
        t += 5.0
        cluster.add_open_arrivals(5.0, t)
        durations.append(cluster.run_to(t).spans.duration_ms)
    d = np.concatenate(durations)
    assert d.size == pytest.approx(100_000, rel=0.02)
    assert d.mean() == pytest.approx(200.0, rel=0.04)


def mva(n_users: int, service_s: float, think_s: float) -> float:
    """Exact mean-value analysis: one PS station plus a think (delay) station."""
    q = 0.0
    r = 0.0
    for n in range(1, n_users + 1):
        r = service_s * (1 + q)
        x = n / (r + think_s)
        q = x * r
    return r


def test_closed_users_match_mean_value_analysis():
    cluster = make(plain_ps(100.0), seed=5)
    cluster.set_users(10)
    d = run_for(cluster, 20_000)[2000:]
    expected_ms = 1000 * mva(10, 0.1, 1.0)  # think uniform(0, 2): mean 1 s (MVA is insensitive)
    assert d.mean() == pytest.approx(expected_ms, rel=0.04)


def test_cfs_quota_by_hand():
    # 120 ms of CPU at a 0.5-core limit (50 ms per 100 ms period) from t = 0:
    # run 0-50, throttled 50-100, run 100-150, throttled 150-200, run 200-220 -> 220 ms
    app = AppProfile(name="cfs", demand=DemandModel(kind="fixed-cpu", cpu_ms=120.0, cv=0.0), cpu_limit=0.5,
                     cpu_request=0.5, overhead_ms=0.0, burst_cores=1.0, contention=0.0,
                     memory_request_mib=512.0, memory_limit_mib=512.0)
    cluster = make(app, think=(0.0, 0.0))
    cluster.set_users(1)
    spans = cluster.run_to(1.0).spans
    # the next starts at 0.22 with 30 ms of budget left: 0.22-0.25, 0.30-0.35, 0.40-0.44;
    # the third at 0.44 with 10 ms left: 0.44-0.45, 0.5-0.55, 0.6-0.65, 0.7-0.71 (270 ms)
    np.testing.assert_allclose(spans.start_s, [0.0, 0.22, 0.44, 0.71])
    np.testing.assert_allclose(spans.duration_ms, [220.0, 220.0, 270.0, 220.0])
    # the CPU sample shows the limit: 0.5 cores used over the step
    assert cluster.run_to(2.0).pods.cpu_cores[0] == pytest.approx(0.5)


def test_overhead_adds_to_every_response():
    base = dict(name="x", demand=DemandModel(kind="fixed-cpu", cpu_ms=10.0, cv=0.0), cpu_limit=1.0,
                cpu_request=1.0, burst_cores=1.0, contention=0.0, memory_request_mib=512.0, memory_limit_mib=512.0)
    with_oh = make(AppProfile(overhead_ms=30.0, **base), think=(0.5, 0.5))
    with_oh.set_users(1)
    np.testing.assert_allclose(with_oh.run_to(5.0).spans.duration_ms, 40.0)


def test_startup_delay_before_ready():
    cluster = make(PAPER, replicas=1, startup=5.0)
    cluster.set_users(5)
    cluster.run_to(1.0)
    cluster.scale_to(3)
    assert cluster.desired_replicas == 3
    assert cluster.run_to(5.9).ready_replicas == 1
    assert cluster.run_to(6.1).ready_replicas == 3


def test_scale_down_drains_and_loses_no_request():
    cluster = make(PAPER, replicas=3, seed=11)
    cluster.set_users(40)
    n_spans = sum(len(cluster.run_to(t).spans) for t in (5.0, 10.0))
    cluster.scale_to(1)
    n_spans += sum(len(cluster.run_to(t).spans) for t in (15.0, 20.0))
    cluster.set_users(0)
    n_spans += sum(len(cluster.run_to(t).spans) for t in (60.0, 120.0))
    assert n_spans == cluster.requests_started > 300
    assert cluster.ready_replicas == 1


@pytest.mark.parametrize("balancer", ["round-robin", "least-requests"])
def test_balancers_spread_load(balancer):
    cluster = make(PAPER, replicas=4, balancer=balancer, seed=2)
    cluster.set_users(20)
    spans = cluster.run_to(60.0).spans
    counts = np.bincount(spans.replica, minlength=4)
    assert counts.min() > 0.15 * counts.sum()  # every replica takes a fair part


def test_same_seed_same_events_other_seed_different():
    def trace(seed):
        c = make(PAPER, replicas=2, seed=seed)
        c.set_users(25)
        s = [c.run_to(t).spans for t in (5.0, 10.0, 15.0)]
        return np.concatenate([x.start_s for x in s]), np.concatenate([x.duration_ms for x in s])

    a, b, c = trace(1), trace(1), trace(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[1], c[1])


def test_sandbox_timeouts_are_flagged():
    app = AppProfile(name="sb", demand=DemandModel(kind="sandbox", median_ms=500, sigma=2.0, timeout_ms=1000),
                     cpu_limit=1.0, cpu_request=1.0, burst_cores=1.0, contention=0.0, overhead_ms=0.0,
                     memory_request_mib=512.0, memory_limit_mib=512.0)
    cluster = make(app, seed=4)
    cluster.set_users(5)
    spans = cluster.run_to(300.0).spans
    assert 0.2 < spans.error.mean() < 0.5  # P(lognormal(ln .5, 2) > 1) = 0.36
    assert spans.duration_ms[spans.error].min() >= 999.0


def test_a_run_past_its_wall_limit_is_killed_and_answered_then():
    """Two users, 6 s of CPU each, one core, a 10 s wall limit, 30 ms overhead, no think:
    both requests share the core from t = 0, each at half speed, so at t = 10 each has
    had 5 s of its 6 and both are killed then, answered at 10 s + 30 ms and flagged; the
    replica used 10 s of CPU, not 12. Without the limit both finish at t = 12."""
    base = dict(name="w", demand=DemandModel(kind="fixed-cpu", cpu_ms=6000.0, cv=0.0), cpu_limit=1.0,
                cpu_request=1.0, burst_cores=1.0, contention=0.0, overhead_ms=30.0, memory_request_mib=512.0,
                memory_limit_mib=512.0)
    killed = make(AppProfile(wall_limit_ms=10_000.0, **base), think=(0.0, 0.0))
    killed.set_users(2)
    step = killed.run_to(10.0)  # the deadline is the step's end: both answered at it
    np.testing.assert_allclose(step.spans.duration_ms, [10_030.0, 10_030.0])
    assert step.spans.error.all()
    assert step.pods.cpu_cores[0] == pytest.approx(1.0)  # 10 s of CPU in 10 s: the killed work is not served
    free = make(AppProfile(**base), think=(0.0, 0.0))
    free.set_users(2)
    assert len(free.run_to(11.9).spans) == 0
    spans = free.run_to(12.1).spans
    np.testing.assert_allclose(spans.duration_ms, [12_030.0, 12_030.0])
    assert not spans.error.any()
    # a request within the limit is untouched by it
    short = make(AppProfile(wall_limit_ms=10_000.0, **{**base, "demand": DemandModel(kind="fixed-cpu", cpu_ms=100.0,
                                                                                        cv=0.0)}), think=(0.5, 0.5))
    short.set_users(1)
    out = short.run_to(5.0).spans
    np.testing.assert_allclose(out.duration_ms, 130.0)
    assert not out.error.any()


def test_a_wall_limit_the_profile_does_not_state_changes_nothing():
    """The same seed with no wall limit and with one longer than any request gives the
    same events, bit for bit."""
    none = make(plain_ps(200.0), seed=3)
    far = make(plain_ps(200.0).with_overrides(wall_limit_ms=1e9), seed=3)
    for c in (none, far):
        c.set_users(8)
    a, b = none.run_to(120.0).spans, far.run_to(120.0).spans
    np.testing.assert_array_equal(a.duration_ms, b.duration_ms)
    np.testing.assert_array_equal(a.start_s, b.start_s)


@pytest.mark.slow
def test_paper_profile_is_calibrated_to_the_papers_table():
    res = calibrate(PAPER, min_steps=100, steps=150, seed=0)
    assert len(res.table) == 35
    assert res.median_abs_error <= 0.15, res.table
    assert res.max_abs_error <= 0.50, res.table
