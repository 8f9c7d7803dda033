"""A Gymnasium environment over any scalelab backend: ``scalelab/SandboxScaling-v0``.

Observation: the paper's context, ``float64`` of shape ``(7,)`` (``orchestrator.context
.FIELDS``). Action: an index into an action set (default: down one, stay, up one).
Reward: the experiment's configured reward. An episode is the experiment's steps;
``truncated`` at its end, never ``terminated``. ``reset(seed=...)`` seeds the workload's
random streams and the backend exactly as the runner seeds run 0.

The env runs the one step loop (:class:`agent.loop.StepLoop`) with the agent's action
as the decision: ``info["record"]`` is that step's :class:`~agent.loop.StepRecord`, and
the other ``info`` keys are read from it. With ``loop: settle`` the observation returned
is the next step's, and the reward is the settled outcome's.

    import gymnasium as gym
    import experiments.env  # registers the id
    env = gym.make("scalelab/SandboxScaling-v0", config="experiments/configs/step-demo.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agent.actions import ActionSet
from agent.base import Decision
from agent.loop import StepLoop
from agent.rewards import make_reward
from experiments.config import ExperimentConfig, load_config
from experiments.episode import make_backend, resolve
from experiments.runner import episode_seeds
from orchestrator.backend import Observation, VirtualClock
from orchestrator.context import FIELDS, Context

ENV_ID = "scalelab/SandboxScaling-v0"

DEFAULT_CONFIG = {
    "name": "gym",
    "workload": {"kind": "step", "before": 5, "after": 30, "at_s": 300, "duration_s": 900},
    "cluster": {"min_replicas": 1, "max_replicas": 10, "initial_replicas": 1},
    "policies": [{"name": "static"}],
}


class SandboxScalingEnv(gym.Env):
    """Scale the sandbox deployment one step (``step_seconds``) at a time."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, config: ExperimentConfig | dict | str | Path | None = None,
                 steps: list[int] | tuple[int, ...] = (-1, 0, 1)) -> None:
        self.cfg = config if isinstance(config, ExperimentConfig) else load_config(config or DEFAULT_CONFIG)
        self.resolved = resolve(self.cfg)
        self.actions = ActionSet.incremental(*steps)
        self.loads = self.resolved.workload.series(self.cfg.step_seconds, self.resolved.steps)
        self.reward_fn = make_reward(self.cfg.reward.name, **{"slo_ms": self.cfg.slo_ms, **self.cfg.reward.params})
        # replicas, p95 ms, req/s, four usage ratios; values beyond are clipped
        self._high = np.array([self.cfg.cluster.max_replicas, 1e7, 1e7, 1e3, 1e3, 1e3, 1e3], dtype=np.float64)
        self.observation_space = gym.spaces.Box(np.zeros(len(FIELDS)), self._high, dtype=np.float64)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self._loop: StepLoop | None = None
        self._k = 0
        self._before: Observation | None = None
        self._decisions = [Decision(action=a) for a in range(len(self.actions))]
        # the fluid engine hands out the same Context object for the same state, so its
        # observations are worth caching; other backends make a new one every step
        fluid = self.cfg.backend == "sim" and self.cfg.engine == "fluid"
        self._obs_cache: dict[int, tuple[Context, np.ndarray]] | None = {} if fluid else None

    def _obs(self, c: Context) -> np.ndarray:
        """The clipped feature vector (a fresh array)."""
        if self._obs_cache is None:
            return np.clip(c.vector(), 0.0, self._high)
        hit = self._obs_cache.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1].copy()
        obs = np.clip(c.vector(), 0.0, self._high)
        if len(self._obs_cache) > 100_000:
            self._obs_cache.clear()
        self._obs_cache[id(c)] = (c, obs)
        return obs.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode. ``options={"episode_seeds": {...}}`` runs the backend on a
        runner episode's seeds (``think``, ``demand``, ``arrivals``), to replay it."""
        super().reset(seed=seed)
        root = int(self.np_random.integers(0, 2**63 - 1))
        seeds = episode_seeds(root, 1, 1)[0]
        seeds["policy"] = seeds["policy"][0]
        if options and "episode_seeds" in options:
            seeds = dict(options["episode_seeds"])
        clock = VirtualClock()
        backend = make_backend(self.cfg, self.resolved, seeds, self.loads, clock)
        self._loop = StepLoop(backend, clock, self.loads, self.resolved.loop, self.reward_fn)
        self._k = 0
        self._before = self._loop.start(0)
        return self._obs(self._before.context), {"step": 0, "users": float(self.loads[0])}

    def step(self, action):
        if self._loop is None or self._before is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        try:
            a = int(action)
        except (TypeError, ValueError):
            a = -1
        if a != action or not 0 <= a < len(self._decisions):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        record, following = self._loop.act(self._k, self._before, self._decisions[a], self.actions)
        self._k += 1
        nxt = following if following is not None else record.after
        self._before = following
        truncated = following is None
        info = {"step": self._k, "users": record.load, "target_replicas": record.order.applied,
                "violation": record.violation, "record": record}
        return self._obs(nxt.context), record.reward, False, truncated, info


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="experiments.env:SandboxScalingEnv")
