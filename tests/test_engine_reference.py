"""The compiled event core against its plain-Python reference: given the same draws, the
same spans bit for bit, on every part of the model the reference covers (CFS quota and
burst, contention, the CPU cap, the wall limit), at several sizes -- and the reference
against a closed form, so that agreeing with it means something."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import PAPER, SANDBOX, AppProfile, DemandModel
from scalelab.simulator.reference import ReferenceCluster


def both(app: AppProfile, replicas: int, users: int, seed: int) -> tuple[SimCluster, ReferenceCluster]:
    """The engine's cluster and the reference, each with generators in the same state."""
    engine_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    cluster = SimCluster(app, ClusterSettings(initial_replicas=replicas, max_replicas=replicas), *engine_rngs,
                         max_users=users)
    cluster.set_users(users)
    ref_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    return cluster, ReferenceCluster(app, replicas, users, ref_rngs[0], ref_rngs[1])


def spans_of(cluster: SimCluster, reference: ReferenceCluster, seconds: float, step: float = 5.0):
    """Both sides' spans as ``(arrival s, response ms, replica, timed out)`` rows."""
    engine_rows, ref_rows = [], []
    t = 0.0
    while t < seconds:
        t += step
        s = cluster.run_to(t).spans
        engine_rows.append(np.column_stack([s.start_s, s.duration_ms, s.replica, s.error]))
        rows = np.array(reference.run_to(t), dtype=float).reshape(-1, 4)
        rows[:, 1] *= 1000.0
        ref_rows.append(rows)
    return np.concatenate(engine_rows), np.concatenate(ref_rows)


@pytest.mark.parametrize(("app", "replicas", "users", "seconds"), [
    (PAPER, 2, 10, 300.0),  # quota binding (0.5 core, burst 2), contention
    (PAPER, 40, 400, 120.0),  # the benchmark's size
    (PAPER, 3, 60, 120.0),  # overloaded: throttled periods back to back
    (SANDBOX, 4, 12, 300.0),  # heavy-tailed corpus demand, the 10-s wall limit, the CPU cap
])
def test_the_engine_gives_the_references_spans_bit_for_bit(app, replicas, users, seconds):
    engine, reference = spans_of(*both(app, replicas, users, seed=7), seconds)
    assert engine.shape[0] > 100
    assert np.array_equal(engine, reference)


def test_the_sandbox_case_reaches_the_wall_limit_and_the_cap():
    """The case above exercises what it claims: killed runs are answered at 10 s."""
    engine, reference = spans_of(*both(SANDBOX, 1, 12, seed=7), 300.0)
    assert np.array_equal(engine, reference)
    killed = engine[engine[:, 3] == 1]
    assert killed.shape[0] > 0
    assert np.all(killed[:, 1] <= 10_000.0 + SANDBOX.overhead_ms + 1e-6)


@settings(max_examples=15, deadline=None)
@given(replicas=st.integers(1, 6), per_replica=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_any_size_and_seed_agree(replicas, per_replica, seed):
    engine, reference = spans_of(*both(PAPER, replicas, replicas * per_replica, seed), 60.0)
    assert np.array_equal(engine, reference)


def test_the_reference_meets_processor_sharings_closed_form():
    """M/M/1-PS through closed users is not closed-form, but one replica with one user is
    M/M/1 with no queue: the mean response is the mean demand (here 50 ms), exactly in
    expectation, whatever the discipline."""
    app = AppProfile(name="one", demand=DemandModel(kind="exponential", mean_ms=50.0), cpu_request=1.0,
                     cpu_limit=1000.0, overhead_ms=0.0, burst_cores=1.0, contention=0.0,
                     memory_request_mib=512.0, memory_limit_mib=512.0)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(3).spawn(3)]
    reference = ReferenceCluster(app, 1, 1, rngs[0], rngs[1])
    rows = np.array(reference.run_to(20_000.0))
    assert rows.shape[0] > 15_000
    assert rows[:, 1].mean() * 1000.0 == pytest.approx(50.0, rel=0.03)
