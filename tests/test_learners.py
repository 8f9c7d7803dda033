"""Every learner improves on a stationary synthetic problem; LinTS samples its posterior;
Q-learning and DQN updates by hand."""

import numpy as np
import pytest

from scalelab.agent.policies.bandits import LinTS
from scalelab.agent.policies.paper_learners import DQN, MLP, QLearning
from scalelab.agent.registry import make_policy
from scalelab.orchestrator.context import Context

THETA = np.array([  # true reward weights per arm over (x1, x2, 1)
    [0.8, -0.5, 0.2],
    [-0.3, 0.6, 0.4],
    [0.1, 0.1, 0.5],
])


def synthetic_context(rng):
    x1, x2 = rng.uniform(0, 1, 2)
    # encode the two features in the context; the rest constant
    return Context(replicas=1, p95_ms=x1, rps=x2, cpu_request_ratio=1.0, cpu_limit_ratio=0.0,
                   mem_request_ratio=0.0, mem_limit_ratio=0.0), np.array([x1, x2, 1.0])


@pytest.mark.parametrize("name,params", [
    ("linucb", {"alpha": 0.5}),
    ("lin-ts", {"v": 0.2, "propensity_samples": 20}),
    ("epsilon-greedy", {"epsilon": 0.05}),
])
def test_regret_falls_on_a_stationary_problem(name, params):
    rng = np.random.default_rng(0)
    pol = make_policy(name, seed=1, **params)
    regret = []
    for _ in range(1500):
        c, x = synthetic_context(rng)
        means = THETA @ x
        a = pol.decide(c).action
        pol.update(c, a, float(means[a] + rng.normal(0, 0.1)), c)
        regret.append(means.max() - means[a])
    early, late = np.mean(regret[:200]), np.mean(regret[-500:])
    assert late < 0.5 * early and late < 0.05


def test_ucb1_finds_the_best_arm_without_context():
    rng = np.random.default_rng(0)
    pol = make_policy("ucb1", seed=0)
    c, _ = synthetic_context(rng)
    picks = []
    for _ in range(2000):
        a = pol.decide(c).action
        pol.update(c, a, float(rng.random() < (0.3, 0.7, 0.4)[a]), c)
        picks.append(a)
    assert np.mean(np.array(picks[-1000:]) == 1) > 0.8


def test_lints_samples_match_its_posterior():
    pol = LinTS(v=0.7, seed=0, propensity_samples=0)
    rng = np.random.default_rng(1)
    for _ in range(30):
        c = Context(1, rng.uniform(), rng.uniform(), rng.uniform(), 0.0, 0.0, 0.0)
        pol.update(c, 0, rng.normal(), c)
    draws = pol.sample_theta(40_000)[:, 0, :]
    mean = pol.core.A_inv[0] @ pol.core.b[0]
    cov = 0.7**2 * pol.core.A_inv[0]
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.02 * np.abs(cov).max() + 1e-3)


def test_lints_reports_an_estimated_probability_vector():
    d = LinTS(seed=0, propensity_samples=500).decide(Context(1, 1.0, 1.0, 1.0, 0, 0, 0))
    assert d.probabilities is not None and sum(d.probabilities) == pytest.approx(1.0)
    assert d.probability == pytest.approx(d.probabilities[d.action])


def test_q_learning_update_by_hand():
    q = QLearning(alpha=0.1, gamma=0.9, seed=0)
    s = Context(2, 140.0, 21.0, 0.44, 0.44, 0.3, 0.3)
    assert q.state_key(s) == (2, 100.0, 20.0, 0.4, 0.4, 0.3, 0.3)
    nxt = Context(1, 260.0, 19.0, 0.7, 0.7, 0.3, 0.3)
    q.q[q.state_key(nxt)] = [0.5, 2.0]
    q.update(s, QLearning.DOWN, reward=0.0, next_context=nxt)  # paper reward: 260 <= 600 -> 1
    assert q.q[q.state_key(s)][0] == pytest.approx(0.1 * (1.0 + 0.9 * 2.0))
    forced = q.decide(Context(2, 900.0, 21.0, 0.4, 0.4, 0.3, 0.3))
    assert forced.action == QLearning.UP and forced.probability == 1.0


def test_greedy_probability_rises_over_the_configured_steps():
    q = QLearning(greedy_steps=100, seed=0)
    c = Context(2, 100.0, 21.0, 0.4, 0.4, 0.3, 0.3)
    first = q.decide(c)
    assert first.probability == pytest.approx(0.5)  # greedy 0: uniform over two arms
    for _ in range(99):
        q.decide(c)
    assert q.greedy == 1.0


def test_mlp_fits_a_fixed_target_with_huber_and_adam():
    rng = np.random.default_rng(0)
    net = MLP((7, 24, 12, 2), rng, lr=0.01)
    x = rng.uniform(0, 1, (50, 7))
    a = rng.integers(0, 2, 50)
    y = x[:, 0] * 2 - x[:, 1]
    first = net.train(x, a, y)
    for _ in range(300):
        last = net.train(x, a, y)
    assert last < 0.1 * first


def test_dqn_deduplicates_its_memory_and_copies_its_target():
    dqn = DQN(batch=2, target_every=2, seed=0)
    c, n = Context(2, 100.0, 21.0, 0.4, 0.4, 0.3, 0.3), Context(1, 200.0, 21.0, 0.6, 0.6, 0.3, 0.3)
    for _ in range(3):
        dqn.update(c, DQN.STAY, 1.0, n)
    assert len(dqn.memory) == 1
    dqn.update(c, DQN.DOWN, 1.0, n)
    dqn.update(n, DQN.STAY, 1.0, n)
    assert dqn.trained == 2
    for w, t in zip(dqn.net.W, dqn.target.W, strict=True):
        np.testing.assert_array_equal(w, t)


@pytest.mark.parametrize("name,params", [
    ("q-learning", {"greedy_steps": 300}),
    ("dqn", {"greedy_steps": 300, "batch": 20}),
])
def test_paper_learners_regret_falls(name, params):
    """Two kinds of state (low or high load, with noise so that the de-duplicated replay
    memory fills); down pays in the low one, stay in the high one."""
    rng = np.random.default_rng(3)
    pol = make_policy(name, seed=2, paper_reward=False, slo_ms=600, **params)
    regret = []
    for _ in range(1200):
        high = rng.random() < 0.5
        u = rng.uniform(-1, 1)
        c = Context(replicas=3, p95_ms=(400.0 if high else 100.0) + 20 * u, rps=(40.0 if high else 5.0) + u,
                    cpu_request_ratio=0.9 if high else 0.1, cpu_limit_ratio=0.9 if high else 0.1,
                    mem_request_ratio=0.3, mem_limit_ratio=0.3)
        a = pol.decide(c).action
        best = 1 if high else 0
        pol.update(c, a, float(a == best), c)
        regret.append(float(a != best))
    assert np.mean(regret[-300:]) < 0.5 * np.mean(regret[:100])
    assert np.mean(regret[-300:]) < 0.1


def _reference_adam_step(W, b, m, v, t, x, action, target, lr, over_outputs):
    """The MLP's training step written per parameter, as the notebook's Keras model
    takes it (Huber loss, Adam b1 0.9, b2 0.999, eps 1e-7): the known answer."""
    acts = [x]
    for k, (w, bias) in enumerate(zip(W, b, strict=True)):
        z = acts[-1] @ w + bias
        acts.append(np.maximum(z, 0.0) if k < len(W) - 1 else z)
    q = acts[-1]
    err = q[np.arange(len(x)), action] - target
    share = len(x) * (q.shape[1] if over_outputs else 1)
    grad = np.zeros_like(q)
    grad[np.arange(len(x)), action] = np.clip(err, -1, 1) / share
    gw, gb = [None] * len(W), [None] * len(W)
    for k in range(len(W) - 1, -1, -1):
        gw[k], gb[k] = acts[k].T @ grad, grad.sum(axis=0)
        if k:
            grad = (grad @ W[k].T) * (acts[k] > 0)
    t += 1
    for i, (p, g) in enumerate(zip(W + b, gw + gb, strict=True)):
        m[i] = 0.9 * m[i] + (1 - 0.9) * g
        v[i] = 0.999 * v[i] + (1 - 0.999) * g * g
        p -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-7)
    return t


@pytest.mark.parametrize("over_outputs", [False, True])
def test_the_flat_mlp_trains_bit_for_bit_as_the_step_written_per_parameter(over_outputs):
    import copy
    import pickle

    rng = np.random.default_rng(3)
    net = MLP((7, 24, 12, 2), rng, lr=0.01)
    W, b = [w.copy() for w in net.W], [x.copy() for x in net.b]
    m, v, t = [np.zeros_like(p) for p in W + b], [np.zeros_like(p) for p in W + b], 0
    data = np.random.default_rng(4)
    for _ in range(60):
        x, a, y = data.uniform(0, 1, (50, 7)), data.integers(0, 2, 50), data.uniform(-2, 2, 50)
        net.train(x, a, y, over_outputs)
        t = _reference_adam_step(W, b, m, v, t, x, a, y, 0.01, over_outputs)
    for ours, ref in zip(net.W + net.b, W + b, strict=True):
        np.testing.assert_array_equal(ours, ref)
    state = net.params()
    np.testing.assert_array_equal(np.array(state["m"][0]), m[0])  # Adam's moments saved per parameter
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):  # a copy trains on its own weights
        x, a, y = data.uniform(0, 1, (50, 7)), data.integers(0, 2, 50), data.uniform(-2, 2, 50)
        before = net.theta.copy()
        twin.train(x, a, y, over_outputs)
        np.testing.assert_array_equal(net.theta, before)
        assert np.shares_memory(twin.W[0], twin.theta) and not np.array_equal(twin.W[0], net.W[0])
