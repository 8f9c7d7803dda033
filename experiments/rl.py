"""Train an agent with stable-baselines3 on a scalelab env, export it to ONNX, and run it
in a comparison as the ``onnx`` policy (no deep-learning framework at run time).

Needs the ``rl`` extra (``pip install -e ".[rl]"``: stable-baselines3, torch, onnx);
nothing else in scalelab imports this module.

    from scalelab.experiments.rl import train_ppo, export_onnx
    model, env = train_ppo("scalelab/PaperStaircase-v1", timesteps=100_000, engine="fluid-stochastic")
    export_onnx(model, env, "ppo-staircase.onnx")   # and ppo-staircase.json, the pipeline
    # then, in a config: policies: [{name: onnx, label: ppo, model: ppo-staircase.onnx}]
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym

import scalelab.experiments.env  # noqa: F401  (registers the ids)


def train_ppo(env_id: str, timesteps: int, engine: str = "fluid-stochastic", observation: str = "normalized",
              seed: int = 0, reward_params: dict | None = None, ppo_params: dict | None = None, **env_kwargs):
    """PPO (stable-baselines3 defaults unless ``ppo_params``) on ``env_id`` for
    ``timesteps`` steps; returns ``(model, env)`` (the env, unwrapped, gives the
    observation pipeline to export)."""
    from stable_baselines3 import PPO

    env = gym.make(env_id, engine=engine, observation=observation, reward_params=reward_params or {},
                   oracle=False, **env_kwargs)
    model = PPO("MlpPolicy", env, seed=seed, verbose=0, **(ppo_params or {}))
    model.learn(total_timesteps=timesteps)
    return model, env.unwrapped


def export_onnx(model, env, path: str | Path, vecnormalize=None) -> Path:
    """Write the policy of an SB3 model with a discrete action space as ONNX (input
    ``obs`` float32 ``(batch, 7)``, output ``logits`` ``(batch, n_actions)``: the greedy
    action is their argmax) and its pipeline ``path.json`` beside it."""
    import torch

    path = Path(path)

    class Logits(torch.nn.Module):
        def __init__(self, policy) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, obs):
            features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
            return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))

    module = Logits(model.policy).eval().cpu()
    example = torch.zeros((1, env.observation_space.shape[0]), dtype=torch.float32)
    torch.onnx.export(module, (example,), str(path), input_names=["obs"], output_names=["logits"],
                      dynamic_axes={"obs": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    path.with_suffix(".json").write_text(json.dumps(env.observation_pipeline(vecnormalize), indent=1) + "\n")
    return path
