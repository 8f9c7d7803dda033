"""Test-only cross-check: our numpy/numba LinUCB against MABWiser's LinUCB.

MABWiser is not used at run time (it is slower, see benchmarks/bench_policies.py); here
it confirms that, fed the same history, both give the same scores and the same
decisions."""

import numpy as np
import pytest

mabwiser = pytest.importorskip("mabwiser.mab")

from scalelab.agent.policies.linucb import LinUCBCore  # noqa: E402


def test_linucb_matches_mabwiser_decision_for_decision():
    rng = np.random.default_rng(0)
    arms = list(range(9))
    hist_x, hist_a, hist_r = [], [], []
    core = LinUCBCore(len(arms), 7, alpha=1.0, lam=1.0)
    for k in range(300):
        x = rng.uniform(0, 1, 7) * [10, 5, 5, 1, 1, 1, 1]
        ours = core.scores(x)
        if k >= 20:  # MABWiser needs a history; from then on compare every decision
            mab = mabwiser.MAB(arms=arms, learning_policy=mabwiser.LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0))
            mab.fit(decisions=np.array(hist_a), rewards=np.array(hist_r), contexts=np.array(hist_x))
            theirs = mab.predict_expectations(x[None, :])
            np.testing.assert_allclose(ours, [theirs[a] for a in arms], rtol=1e-9, atol=1e-12)
            assert int(np.argmax(ours)) == max(arms, key=lambda a: theirs[a])
        a = int(np.argmax(ours)) if k >= 20 else k % len(arms)
        r = float(rng.random() < 0.1 + 0.08 * a * x[3])
        core.update(a, x, r)
        hist_x.append(x)
        hist_a.append(a)
        hist_r.append(r)
