"""HSLinUCB over the jobs model's context: the paper's 7 features plus the lag per
runner and the oldest wait, the paper's rule on the turnaround."""

import json

import numpy as np
import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.linucb import QueueHSLinUCB
from scalelab.orchestrator.backend import Observation, QueueSignals
from scalelab.orchestrator.context import Context


def _info(ctx, queue):
    return {"observation": Observation(t_s=5.0, context=ctx, desired_replicas=ctx.replicas, queue=queue),
            "current_replicas": ctx.replicas}


CTX = Context(4, 1200.0, 2.0, 0.5, 0.5, 0.1, 0.1)


def test_the_features_are_the_papers_seven_then_lag_per_runner_and_oldest_wait():
    p = QueueHSLinUCB(slo_ms=3000.0, seed=1)
    x = p.features(CTX, _info(CTX, QueueSignals(lag=18, runners=4, oldest_wait_s=7.5)))
    np.testing.assert_array_equal(x, [4, 1200.0, 2.0, 0.5, 0.5, 0.1, 0.1, 4.5, 7.5])


def test_a_turnaround_above_the_slo_forces_one_up_and_teaches_nothing():
    p = QueueHSLinUCB(slo_ms=1000.0, seed=1)
    d = p.decide(CTX, _info(CTX, QueueSignals(lag=2, runners=4)))
    assert (d.action, d.forced) == (QueueHSLinUCB.UP, True)
    before = p.core.state()
    p.update(CTX, d.action, 1.0, CTX)
    assert p.core.state() == before


def test_the_bandit_learns_on_the_nine_features_with_the_papers_reward():
    p = QueueHSLinUCB(slo_ms=3000.0, seed=1)
    p.decide(CTX, _info(CTX, QueueSignals(lag=8, runners=4, oldest_wait_s=1.0)))
    p.update(CTX, QueueHSLinUCB.STAY, 0.0, CTX)  # 1200 ms <= 3000 ms: the paper's stay pays 1 (not the 0 given)
    x = np.array([4, 1200.0, 2.0, 0.5, 0.5, 0.1, 0.1, 2.0, 1.0])
    np.testing.assert_allclose(p.core.A[QueueHSLinUCB.STAY], np.eye(9) + np.outer(x, x))
    np.testing.assert_allclose(p.core.b[QueueHSLinUCB.STAY], x)
    np.testing.assert_allclose(p.core.A[QueueHSLinUCB.DOWN], np.eye(9))  # the other arm is untouched


def test_on_the_service_model_it_says_it_needs_the_jobs_model():
    with pytest.raises(PolicyError, match="architecture: jobs"):
        QueueHSLinUCB(seed=1).decide(CTX, _info(CTX, None))


@pytest.mark.parametrize("make", ["queue", "calendar"])
def test_a_run_resumed_between_decision_and_update_learns_as_an_uninterrupted_one(make):
    """The agent process checkpoints after a decision; the variants that decide on more
    than the context learn on the features they decided on, so those travel in the state."""
    from scalelab.agent.policies.anticipatory import CalendarHSLinUCB
    from scalelab.orchestrator.context import CalendarFeatures

    def build():
        if make == "queue":
            return QueueHSLinUCB(slo_ms=3000.0, seed=3)
        return CalendarHSLinUCB(capacity=[[20, 1], [100, 3]], slo_ms=3000.0, seed=3)

    info = _info(CTX, QueueSignals(lag=8, runners=4, oldest_wait_s=1.0))
    info["calendar"] = CalendarFeatures(50.0, 60.0, 80.0, 80.0, 30.0)
    straight, resumed = build(), build()
    d = straight.decide(CTX, info)
    straight.update(CTX, d.action, 1.0, CTX)
    assert not d.forced and not np.array_equal(straight.core.A, build().core.A)  # it learned from the step
    first = build()
    assert first.decide(CTX, info) == d
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # the checkpoint, through JSON
    resumed.update(CTX, d.action, 1.0, CTX)
    np.testing.assert_array_equal(resumed.core.A, straight.core.A)
    np.testing.assert_array_equal(resumed.core.b, straight.core.b)
