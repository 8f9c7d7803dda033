"""Off-policy estimators on a synthetic problem whose target value is known."""

import numpy as np
import pytest

from scalelab.experiments.ope import estimate

THETA = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


def logged(n=6000, seed=0, explore=True):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 2))
    if explore:
        actions = rng.integers(0, 3, n)
        prop = np.full(n, 1 / 3)
    else:
        actions = np.zeros(n, dtype=int)
        prop = np.ones(n)
    rewards = (THETA[actions] * x).sum(axis=1) + rng.normal(0, 0.1, n)
    return x, actions, rewards, prop


def test_estimators_recover_the_target_value():
    x, a, r, p = logged()
    best = np.argmax(x @ THETA.T, axis=1)  # the target plays the best arm
    target = np.eye(3)[best]
    true_value = np.mean((THETA[best] * x).sum(axis=1))  # = E[max(x1, x2)] = 2/3 in the limit
    assert true_value == pytest.approx(2 / 3, abs=0.01)
    res = estimate(x, a, r, p, target, n_boot=100)
    for e in (res.ips, res.snips, res.dm, res.dr):
        assert e.low <= true_value <= e.high or abs(e.value - true_value) < 0.02
        assert abs(e.value - true_value) < 0.03
    assert res.logging_explored


def test_no_exploration_is_flagged():
    x, a, r, p = logged(explore=False)
    res = estimate(x, a, r, p, np.eye(3)[np.ones(len(a), dtype=int)], n_boot=20)
    assert not res.logging_explored
    assert res.ips.value == 0.0  # the target's action was never logged


def test_zero_propensity_is_an_error():
    x, a, r, p = logged(n=10)
    p[0] = 0.0
    with pytest.raises(ValueError, match="propensities"):
        estimate(x, a, r, p, np.full((10, 3), 1 / 3))
