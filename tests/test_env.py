"""The Gymnasium environments: every registered id passes Gymnasium's checker; seeds
reproduce the runner's run 0; the default reward prices replicas by the cluster's own
maximum; observations stay in their box; masks, fixed actions, the end of an episode."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import scalelab.experiments.env  # noqa: F401  (registers the ids)
from scalelab.experiments.config import ConfigError, load_config
from scalelab.experiments.env import DEFAULT_CONFIG, ENV_ID, GENERIC_ID, SCENARIOS, SandboxScalingEnv
from scalelab.experiments.episode import resolve
from scalelab.experiments.experiment import run_experiment

SMALL = {"name": "e", "seed": 5, "steps": 40, "slo_ms": 600,
         "workload": {"kind": "step", "before": 5, "after": 30, "at_s": 60, "duration_s": 200},
         "cluster": {"min_replicas": 1, "max_replicas": 20, "initial_replicas": 1},
         "policies": [{"name": "static", "replicas": 1}]}  # fmt: skip


@pytest.mark.parametrize("env_id", [*SCENARIOS, GENERIC_ID])
def test_every_registered_id_passes_the_gymnasium_checker(env_id):
    env = gym.make(env_id, render_mode="ansi")
    if env_id in SCENARIOS:
        assert env.spec.max_episode_steps > 100
    check_env(env.unwrapped)


@pytest.mark.filterwarnings("ignore:.*is out of date.*:DeprecationWarning")  # v0 says so on every make
@pytest.mark.parametrize("env_id", [ENV_ID, GENERIC_ID])
def test_the_config_ids_register_their_config_length_as_max_episode_steps(env_id):
    assert gym.make(env_id).spec.max_episode_steps == resolve(load_config(DEFAULT_CONFIG)).steps
    env = gym.make(env_id, config=SMALL)
    steps = resolve(load_config(SMALL)).steps
    assert env.spec.max_episode_steps == steps
    env.reset(seed=0)
    ends = [env.step(1)[3] for _ in range(steps)]
    assert ends == [False] * (steps - 1) + [True]
    assert gym.make(env_id, config="paper-coldstart").spec.max_episode_steps == 9000  # a shipped config by name
    assert gym.make(env_id, config=SMALL, max_episode_steps=3).spec.max_episode_steps == 3


@pytest.mark.skipif(importlib.util.find_spec("stable_baselines3") is None,
                    reason="needs stable-baselines3: pip install -e '.[rl]'")
@pytest.mark.parametrize("env_id", [*SCENARIOS, GENERIC_ID])
def test_every_registered_id_passes_sb3s_checker(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check

    sb3_check(gym.make(env_id, observation="normalized").unwrapped)


def rollout(seed, n=60):
    env = gym.make(GENERIC_ID)
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


def test_reset_with_a_seed_is_the_runners_run_0_and_the_configs_seed_comes_first(tmp_path):
    runner = run_experiment(load_config(SMALL), out=tmp_path, progress=False, workers=1, report=False).steps
    env = SandboxScalingEnv(SMALL, reward="config")
    for seed_arg in (None, 5):  # the config's seed (5) first, then reset(seed=5) explicitly
        env.reset(seed=seed_arg)
        p95 = [env.step(1)[4]["record"].after.context.p95_ms for _ in range(40)]  # stay: static at 1 replica
        np.testing.assert_array_equal(p95, runner[runner.run == 0].p95_ms.to_numpy())
    env.reset(seed=6)
    other = [env.step(1)[4]["record"].after.context.p95_ms for _ in range(40)]
    assert other != p95


def test_stepping_after_the_end_is_refused():
    env = SandboxScalingEnv({**SMALL, "steps": 3})
    env.reset(seed=0)
    assert [env.step(1)[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(1)
    env.reset()
    env.step(1)  # a new episode goes on


def test_the_default_reward_prices_replicas_by_the_clusters_maximum_and_reports_its_terms():
    env = SandboxScalingEnv({**SMALL, "cluster": {"min_replicas": 1, "max_replicas": 20, "initial_replicas": 20}},
                            reward_params={"change_cost": 0.2})
    env.reset(seed=0)
    _, r, _, _, info = env.step(1)  # stay at 20 of 20
    t = info["reward_terms"]
    assert t["replicas"] == pytest.approx(-0.3 * 20 / 20) and t["changes"] == 0.0
    assert r == pytest.approx(sum(t.values())) and t["slo"] == 0.0
    _, r, _, _, info = env.step(0)  # one down: 19 ready after the drain
    t = info["reward_terms"]
    assert t["changes"] == pytest.approx(-0.2 * 1 / 20) and t["replicas"] == pytest.approx(-0.3 * 19 / 20)
    assert info["oracle_replicas"] >= 1 and info["regret"] == 19 - info["oracle_replicas"]
    assert info["ready_replicas"] == 19 and info["target_replicas"] == 19 and not info["clamped"]


def test_normalized_observations_never_leave_their_box():
    env = SandboxScalingEnv({**SMALL, "steps": 40, "workload": {"kind": "constant", "users": 400,
                                                                "duration_s": 200}}, observation="normalized")
    obs, _ = env.reset(seed=0)
    seen = [obs]
    for k in range(40):
        seen.append(env.step(2 if k < 3 else 1)[0])
    seen = np.array(seen)
    assert env.observation_space.contains(seen[-1].astype(np.float64))
    assert seen.min() >= 0.0 and seen.max() <= 1.0 and seen[:, 1].max() > 0.1  # overloaded: the p95 feature moves


def test_masks_fixed_actions_render_and_a_live_backend_refused():
    env = SandboxScalingEnv(SMALL, render_mode="ansi")
    env.reset(seed=0)
    assert env.action_masks().tolist() == [False, True, True]  # at the minimum, "down" would do nothing
    assert env.render() == "(no step yet)"
    env.step(2)
    assert "replicas  2" in env.render() and "users" in env.render()
    fixed = SandboxScalingEnv(SMALL, actions="fixed")
    assert fixed.action_space.n == 20
    fixed.reset(seed=0)
    assert fixed.step(6)[4]["target_replicas"] == 7  # index i orders min_replicas + i
    with pytest.raises(ConfigError, match=r"backend 'live' is not supported.*scalelab live run"):
        SandboxScalingEnv({**SMALL, "backend": "live"})
    with pytest.raises(ValueError, match="observation='scaled' is not"):
        SandboxScalingEnv(SMALL, observation="scaled")


def test_episode_truncates_at_the_experiments_length():
    env = SandboxScalingEnv({"workload": {"kind": "constant", "users": 5, "duration_s": 50}})
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, _, term, trunc, _info = env.step(1)
        done, steps = term or trunc, steps + 1
    assert steps == 10 and not term  # one step per decision, as the runner makes


def test_fluid_episodes_follow_their_seed_when_stochastic():
    def p95s(engine, seed):
        env = gym.make(GENERIC_ID, config=SMALL, engine=engine)
        env.reset(seed=seed)
        return [env.step(1)[4]["record"].after.context.p95_ms for _ in range(30)]

    assert p95s("fluid", 1) == p95s("fluid", 2)  # the deterministic engine: every episode alike
    assert p95s("fluid-stochastic", 1) == p95s("fluid-stochastic", 1)
    assert p95s("fluid-stochastic", 1) != p95s("fluid-stochastic", 2)


def test_rgb_array_render_draws_the_episode_and_passes_the_checker():
    check_env(gym.make(GENERIC_ID, config=SMALL, render_mode="rgb_array", engine="fluid").unwrapped)
    env = SandboxScalingEnv(SMALL, render_mode="rgb_array", engine="fluid")
    env.reset(seed=0)
    blank = env.render()
    for _ in range(20):
        env.step(2)
    img = env.render()
    assert img.shape == (480, 800, 3) and img.dtype == np.uint8
    assert (img != blank).any() and len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # something was drawn


def test_the_default_reward_charges_scale_changes():
    from scalelab.agent.rewards import SloCostV2, make_reward

    assert SloCostV2().change_cost == 0.3  # without it PPO flapped thousands of times per episode
    assert SloCostV2().replica_cost == 0.3  # 0.03 per replica and step with 10: the oracle's few per cent
    assert SandboxScalingEnv(SMALL).reward_fn.change_cost == 0.3  # the env's default reward
    assert make_reward("slo-cost-v2", change_cost=0.0).change_cost == 0.0  # and it can be turned off


@pytest.mark.parametrize("engine", ["fluid-stochastc", "dse", "FLUID"])
def test_a_misspelt_engine_is_refused_naming_the_key(engine):
    """The env checks ``engine=`` as the config's own key is checked: a misspelt name
    runs no other engine."""

    with pytest.raises(ConfigError, match=f"config: engine='?{engine}'? must be one of"):
        SandboxScalingEnv(engine=engine)


@settings(max_examples=200, deadline=None)
@given(before=st.integers(1, 40), after=st.integers(1, 40), p95=st.floats(0.0, 5000.0),
       violation=st.sampled_from([None, True, False]), replica_cost=st.floats(0.0, 2.0),
       change_cost=st.floats(0.0, 2.0), max_replicas=st.integers(1, 40))
def test_the_reward_terms_add_up_to_the_reward(before, after, p95, violation, replica_cost, change_cost, max_replicas):
    """Whatever the step, the terms ``info["reward_terms"]`` shows are the reward's parts,
    bit for bit: their sum is the reward, each cost is <= 0 and ``slo`` is 0 or -1."""
    from scalelab.agent.rewards import SloCostV2
    from scalelab.orchestrator.context import Context

    reward = SloCostV2(slo_ms=600.0, max_replicas=max_replicas, replica_cost=replica_cost, change_cost=change_cost)
    b, a = Context(before, 300.0, 1.0, 0.5, 0.5, 0.2, 0.2), Context(after, p95, 1.0, 0.5, 0.5, 0.2, 0.2)
    terms = reward.terms(b, 1, a, violation)
    assert reward(b, 1, a, violation) == terms["slo"] + terms["replicas"] + terms["changes"]
    assert terms["slo"] in (0.0, -1.0) and terms["replicas"] <= 0 and terms["changes"] <= 0
    assert terms["slo"] == (-1.0 if (violation if violation is not None else p95 > 600.0) else 0.0)
