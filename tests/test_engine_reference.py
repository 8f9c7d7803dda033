"""The compiled event core against its plain-Python reference: given the same draws, the
same spans bit for bit, on every part of the model the reference covers (CFS quota and
burst, contention, the CPU cap, the wall limit), at several sizes -- and the reference
against a closed form, so that agreeing with it means something."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import PAPER, SANDBOX, AppProfile
from scalelab.simulator.reference import ReferenceCluster
from tests.test_simulator import mva, plain_ps


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
    (SANDBOX, 4, 12, 300.0),  # heavy-tailed corpus demand, the 10-s wall limit
])
def test_the_engine_gives_the_references_spans_bit_for_bit(app, replicas, users, seconds):
    engine, reference = spans_of(*both(app, replicas, users, seed=7), seconds)
    assert engine.shape[0] > 100
    assert np.array_equal(engine, reference)


def test_the_sandbox_reaches_the_wall_limit_when_crowded_and_the_cap_when_not():
    """Both limits are exercised, and agree: 12 students on one replica push runs past
    the 10-s wall (answered then); 4 students on 4 replicas, with log-normal demands
    capped at 1 s of CPU (the corpus never reaches its cap), leave a run alone on its core,
    so one stopped at the cap ends well before the wall. Both are flagged."""
    crowded, reference = spans_of(*both(SANDBOX, 1, 12, seed=7), 300.0)
    assert np.array_equal(crowded, reference)
    wall_ms = 10_000.0 + SANDBOX.overhead_ms
    assert np.isclose(crowded[crowded[:, 3] == 1, 1], wall_ms).sum() > 0
    capped_app = SANDBOX.with_overrides(demand={"kind": "sandbox", "median_ms": 300.0, "sigma": 1.2,
                                                "timeout_ms": 1000.0})
    alone, reference = spans_of(*both(capped_app, 4, 4, seed=7), 600.0)
    assert np.array_equal(alone, reference)
    capped = alone[alone[:, 3] == 1, 1]
    assert capped.shape[0] > 0 and np.all(capped < wall_ms - 1000.0)


@settings(max_examples=15, deadline=None)
@given(replicas=st.integers(1, 6), per_replica=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_any_size_and_seed_agree(replicas, per_replica, seed):
    engine, reference = spans_of(*both(PAPER, replicas, replicas * per_replica, seed), 60.0)
    assert np.array_equal(engine, reference)


def test_the_reference_meets_processor_sharings_closed_form():
    """A closed network of users thinking (mean 1 s) and one processor-sharing core is
    product-form and insensitive to the distributions: exact mean-value analysis gives
    the mean response. 10 users, 100-ms exponential demands: about 0.62 s, where the
    demand alone is 0.1 s -- so only a loop that shares the core right meets it."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(3)]
    reference = ReferenceCluster(plain_ps(100.0), 1, 10, rngs[0], rngs[1])
    rows = np.array(reference.run_to(20_000.0))[2000:]
    assert rows[:, 1].mean() == pytest.approx(mva(10, 0.1, 1.0), rel=0.04)
