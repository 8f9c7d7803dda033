"""The Gymnasium environment passes Gymnasium's checker and is deterministic."""

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import experiments.env  # noqa: F401  (registers the id)
from experiments.env import ENV_ID, SandboxScalingEnv


def test_passes_the_gymnasium_checker():
    check_env(SandboxScalingEnv(), skip_render_check=True)


def rollout(seed, n=60):
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for k in range(n):
        obs, r, _term, _trunc, _info = env.step(k % 3)
        out.append(np.append(obs, r))
    return out


def test_same_seed_same_trajectory_other_seed_different():
    a, b, c = rollout(1), rollout(1), rollout(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_episode_truncates_at_the_experiments_length():
    env = SandboxScalingEnv({"workload": {"kind": "constant", "users": 5, "duration_s": 50}})
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, _, term, trunc, _info = env.step(1)
        done, steps = term or trunc, steps + 1
    assert steps == 10 and not term  # one step per decision, as the runner makes
