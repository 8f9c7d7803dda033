"""The policy checker (agent/check.py) over every registered policy, and proof that it
catches the faults it is for."""

from __future__ import annotations

import pytest

from scalelab.agent.base import Decision, PolicyError
from scalelab.agent.check import CHECK_PARAMS, PolicyCheckError, check_policy
from scalelab.agent.policies.serverless import Invok
from scalelab.agent.registry import make_policy, policy_names, register


@pytest.mark.parametrize("name", policy_names())
def test_every_registered_policy_passes_the_checker(name):
    check_policy(name, CHECK_PARAMS.get(name))


class ForgetfulInvok(Invok):
    """Invok as it was: its idle timer is not in its state."""

    name = "forgetful-invok"

    def state_dict(self):
        state = super().state_dict()
        state.pop("idle_since")
        return state

    def load_state_dict(self, state):
        state = dict(state, idle_since=None)
        super().load_state_dict(state)


class BadPropensity(Invok):
    name = "bad-propensity"

    def decide(self, context, info=None):
        d = super().decide(context, info)
        return Decision(d.action, probability=0.5, probabilities=(0.2, 0.3, 0.5))


def test_the_checker_catches_lost_state_and_wrong_propensities():
    from scalelab.agent import registry

    register("forgetful-invok", ForgetfulInvok, replace=True)
    register("bad-propensity", BadPropensity, replace=True)
    try:
        with pytest.raises(PolicyCheckError, match="restored from its state_dict"):
            check_policy("forgetful-invok")
        with pytest.raises(PolicyCheckError, match="is not its probability"):
            check_policy("bad-propensity")
    finally:
        registry._REGISTRY.pop("forgetful-invok")
        registry._REGISTRY.pop("bad-propensity")


@pytest.mark.parametrize("params, message", [
    ({"no_such": 1}, "has no parameter 'no_such'"),
    ({"target_utilization": "eighty"}, "target_utilization='eighty' must be an integer"),
    ({"behavior": 3}, "behavior=3 must be a string"),
    ({"tolerance": [0.1]}, "tolerance=\\[0.1\\] must be a number"),
])  # fmt: skip
def test_bad_parameters_are_rejected_with_their_name(params, message):
    with pytest.raises(PolicyError, match=message):
        make_policy("hpa", **params)


def test_the_command_skips_a_policy_whose_optional_package_is_missing_and_goes_on(monkeypatch, capsys):
    """python -m scalelab.agent.check over every policy: a policy that cannot be built for a
    missing optional package is skipped with the way to install it, the others are checked."""
    from scalelab.agent import check
    from scalelab.agent.base import MissingDependency

    real = check.check_policy

    def without_onnxruntime(name, params=None, steps=120):
        if name == "onnx":
            raise MissingDependency("onnx: needs onnxruntime: pip install onnxruntime (or the onnx extra)")
        return real(name, params, steps=12)

    monkeypatch.setattr(check, "check_policy", without_onnxruntime)
    assert check.main(["static", "onnx", "hslinucb"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ok      static", "skipped onnx: onnx: needs onnxruntime: pip install onnxruntime (or the onnx extra)",
                   "ok      hslinucb"]
