"""Gymnasium environments over the scalelab simulator and replay backends.

Registered ids (``import scalelab.experiments.env`` registers them; ``scalelab/...``):

=============================  ===============================================================
``PaperStaircase-v1``          the paper's staircase (``paper-sim-v1``, 5..50 users) on the
                               ``paper`` profile, SLO 600 ms, 1..10 replicas
``PaperRealWeek-v1``           the paper's real-week pattern (``paper-real-week`` config)
``EvaluationWeek-v1``          a simulated evaluation-week day (the ``compare`` config)
``SandboxScaling-v1``          any config: ``gym.make(id, config="my.yaml")`` (or a shipped
                               config's name, ``config="paper-coldstart"``)
``SandboxScaling-v0``          as v1, with the config's own reward and raw observations (the
                               behaviour before v1, kept for old scripts)
=============================  ===============================================================

Every id is a complete experiment; ``max_episode_steps`` is its length in steps (for the two
``SandboxScaling`` ids, the length of the config given to ``gym.make``).
Keywords of ``gym.make`` (all ids):

- ``engine``: ``des``, ``fluid`` or ``fluid-stochastic`` (overrides the config's; the last
  draws each step's p95, rate and usage as a window of spans would, from the episode's seed);
- ``reward``: the reward's name (default ``slo-cost-v2``: SLO met − 1 (0 within the SLO,
  −1 for a violation or missing spans), minus a replica cost normalised by the cluster's
  ``max_replicas``, minus ``change_cost`` (0.3 by default) per replica changed; each term
  in ``info["reward_terms"]``), ``"config"`` for the config's own,
  and ``reward_params`` for its parameters. ``slo-binary-v1`` (the paper's) is meaningful
  only inside HSLinUCB's rule: a free learner earns its maximum by scaling up and staying;
- ``observation``: ``raw`` (the paper's 7 features in their units, clipped to
  :attr:`SandboxScalingEnv.RAW_HIGH`) or ``normalized`` (every feature in [0, 1]:
  replicas / max_replicas, p95 / (2 · SLO) (the SLO reads 0.5), RPS / the capacity at
  max_replicas (CPU limit / mean demand per replica), the usage ratios as they are;
  values beyond are clipped, so observations never leave the box. The scales spread the
  range where decisions are made over the box: with p95 / (10 · SLO), RPS / twice the
  capacity and usage / 2, PPO on the staircase never learned to scale down at low load);
- ``calendar``: also observe the announced timetable's 5 features
  (:data:`~scalelab.orchestrator.context.CALENDAR_FEATURES`, what ``calendar.features``
  hands policies in the runner, for the same moment); None (default): as the config's
  ``calendar.features`` says. Normalised: students / the workload's peak, minutes / 240.
  On the jobs architecture (``architecture: jobs``) the queue's signals follow
  (:data:`QUEUE_FEATURES`: lag, waiting, oldest wait, in progress, arrival and completion
  rates); normalised: jobs / (max_replicas x max_concurrent_jobs), the wait / (2 · SLO),
  rates / the capacity at max_replicas. :attr:`SandboxScalingEnv.features` names them all;
- ``actions``: ``incremental`` (``steps``, default ``(-1, 0, 1)``: index 0 removes a
  replica, 1 stays, 2 adds one) or ``fixed`` (index ``i`` orders ``min_replicas + i``);
- ``render_mode``: ``"ansi"`` (one text line per step) or ``"rgb_array"`` (a figure of the
  episode so far: replicas, the oracle's level, load, p95 against the SLO).

``info`` has ``step``, ``users``, ``ready_replicas``, ``desired_replicas``,
``requested_replicas``, ``target_replicas`` (after the clamp), ``clamped``, ``violation``,
``reward_terms`` (when the reward gives them), ``oracle_replicas`` and ``regret`` (ready −
oracle) on backends with an oracle, and ``record`` (the step's :class:`scalelab.agent.loop.StepRecord`).
:meth:`SandboxScalingEnv.action_masks` gives the actions that the clamp would not cancel
(what ``sb3_contrib``'s MaskablePPO reads).

Seeds: the config's ``seed`` is the first episode's; ``reset(seed=s)`` runs exactly the
runner's run 0 of the same config with ``seed: s`` (think times, demands, arrivals);
later ``reset()`` without a seed draw new episodes from the last seed. The episode is
``truncated`` at its end; stepping after that raises ``ResetNeeded``, as Gymnasium's
order-enforcing wrapper does. ``backend: live`` is refused (a live run's clock is the
wall's: use ``scalelab live run``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Decision
from scalelab.agent.build import build_reward
from scalelab.agent.loop import StepLoop, takes_violation
from scalelab.errors import UserError
from scalelab.experiments.config import ConfigError, ExperimentConfig, config_path, load_config, validate
from scalelab.experiments.episode import (
    deployment_of,
    episode_seeds,
    make_backend,
    oracle_levels,
    resolve,
    run_timetable,
)
from scalelab.injector.calendar import calendar_features
from scalelab.orchestrator.backend import Observation, VirtualClock, clamp
from scalelab.orchestrator.context import CALENDAR_FEATURES, FIELDS, Context

#: The jobs model's signals an env observes after the context (and the calendar), in order.
QUEUE_FEATURES = ("lag", "waiting", "oldest_wait_s", "in_progress", "arrival_rate", "completion_rate")

ENV_ID = "scalelab/SandboxScaling-v0"
GENERIC_ID = "scalelab/SandboxScaling-v1"

DEFAULT_CONFIG = {
    "name": "gym",
    "workload": {"kind": "step", "before": 5, "after": 30, "at_s": 300, "duration_s": 900},
    "cluster": {"min_replicas": 1, "max_replicas": 10, "initial_replicas": 1},
    "policies": [{"name": "static"}],
}

#: the scenarios: id -> a complete config (a shipped config's name, or a mapping)
SCENARIOS: dict[str, str | dict] = {
    "scalelab/PaperStaircase-v1": {
        "name": "paper-staircase", "backend": "sim", "seed": 1, "slo_ms": 600, "step_seconds": 5,
        "workload": {"kind": "paper-sim-v1"}, "app": {"profile": "paper"},
        "cluster": {"min_replicas": 1, "max_replicas": 10, "initial_replicas": 1},
        "policies": [{"name": "static"}],
    },
    "scalelab/PaperRealWeek-v1": "paper-real-week",
    "scalelab/EvaluationWeek-v1": "compare",
}  # fmt: skip


class SandboxScalingEnv(gym.Env):
    """Scale the sandbox deployment one step (``step_seconds``) at a time."""

    metadata: ClassVar[dict] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}
    #: bounds of the raw features: replicas, p95 ms, req/s, four usage ratios
    RAW_HIGH = (None, 1e7, 1e7, 1e3, 1e3, 1e3, 1e3)

    def __init__(self, config: ExperimentConfig | dict | str | Path | None = None,
                 steps: list[int] | tuple[int, ...] = (-1, 0, 1), *, engine: str | None = None,
                 reward: str = "slo-cost-v2", reward_params: dict | None = None, observation: str = "raw",
                 actions: str = "incremental", render_mode: str | None = None, oracle: bool = True,
                 calendar: bool | None = None) -> None:
        if isinstance(config, (str, Path)):
            config = config_path(config)  # a file, or a shipped config's name ("paper-sim-v1")
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config or DEFAULT_CONFIG)
        if cfg.backend == "live":
            raise ConfigError("env: backend 'live' is not supported: a live stack runs on the wall clock, one "
                              "episode at a time; use `scalelab live run CONFIG`, or set backend: sim or replay")
        if engine is not None:  # checked as the config's own key is (a misspelt engine runs no other one)
            cfg = replace(cfg, engine=engine)
            validate(cfg)
        if observation not in ("raw", "normalized"):
            raise UserError(f"env: observation={observation!r} is not 'raw' or 'normalized'")
        if actions not in ("incremental", "fixed"):
            raise UserError(f"env: actions={actions!r} is not 'incremental' or 'fixed'")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise UserError(f"env: render_mode={render_mode!r} is not None, 'ansi' or 'rgb_array'")
        self.cfg, self.render_mode, self.observation = cfg, render_mode, observation
        self.resolved = resolve(cfg)
        c = cfg.cluster
        self.actions = (ActionSet.incremental(*steps) if actions == "incremental"
                        else ActionSet.fixed(c.min_replicas, c.max_replicas))
        self.loads = self.resolved.workload.series(cfg.step_seconds, self.resolved.steps)
        name, params = (cfg.reward.name, cfg.reward.params) if reward == "config" else (reward, reward_params or {})
        self.reward_fn = build_reward(name, params, deployment_of(cfg))
        self._reward_terms = getattr(self.reward_fn, "terms", None)  # for info, when the reward gives them
        self._terms_take_violation = self._reward_terms is not None and takes_violation(self._reward_terms)
        self.calendar = cfg.calendar.features if calendar is None else bool(calendar)
        self.queue = cfg.architecture == "jobs"
        #: the observation's features, in order: the paper's 7, then the calendar's and the queue's when observed
        self.features = (*FIELDS, *(CALENDAR_FEATURES if self.calendar else ()), *(QUEUE_FEATURES if self.queue else ()))
        self._raw_high = np.array([c.max_replicas, *self.RAW_HIGH[1:], *self._extra_high()], dtype=np.float64)
        self._scale = self._normalisation()
        n = len(self.features)
        self.observation_space = (gym.spaces.Box(np.zeros(n), self._raw_high, dtype=np.float64) if observation == "raw"
                                  else gym.spaces.Box(np.zeros(n), np.ones(n), dtype=np.float64))
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self._want_oracle = oracle
        self._oracle: np.ndarray | None = None
        self._loop: StepLoop | None = None
        self._k = 0
        self._before: Observation | None = None
        self._done = False
        self._last: tuple | None = None  # (step, its record): the ansi render's line, formatted when asked for
        self._history: list[tuple[float, float, int, int, float]] = []  # rgb_array: (t h, load, ready, oracle, p95)
        self._decisions = [Decision(action=a) for a in range(len(self.actions))]
        self._seeded_once = False
        # the fluid engine hands out the same Context object for the same state, so its
        # observations are worth caching; other backends make a new one every step
        fluid = cfg.backend == "sim" and cfg.engine == "fluid"  # fluid-stochastic: a new Context each step
        self._obs_cache: dict[int, tuple[Context, np.ndarray]] | None = {} if fluid else None

    def _extra_high(self) -> list[float]:
        """Raw bounds of the calendar's and the queue's features (students, minutes; jobs,
        s, jobs/s)."""
        calendar = [1e7] * 4 + [240.0] if self.calendar else []
        return calendar + ([1e9, 1e9, 1e7, 1e9, 1e7, 1e7] if self.queue else [])

    def _normalisation(self) -> np.ndarray:
        """Divisors that bring each raw feature into [0, 1] (see the module docstring)."""
        c, app = self.cfg.cluster, self.resolved.app
        demand_s = max(float(app.demand.mean_s), 1e-6)
        per_replica = app.cpu_limit / demand_s  # req/s one replica serves at its CPU limit
        out = [c.max_replicas, 2.0 * self.cfg.slo_ms, per_replica * c.max_replicas, 1.0, 1.0, 1.0, 1.0]
        if self.calendar:
            out += [max(float(np.max(self.loads)), 1.0)] * 4 + [240.0]
        if self.queue:
            jobs = float(c.max_replicas * self.cfg.jobs.max_concurrent_jobs)
            rate = per_replica * c.max_replicas
            out += [jobs, jobs, 2.0 * self.cfg.slo_ms / 1000.0, jobs, rate, rate]
        return np.array(out)

    def _vector(self, c: Context, extra: np.ndarray | None = None) -> np.ndarray:
        raw = c.vector() if extra is None else np.concatenate((c.vector(), extra))
        v = np.clip(raw, 0.0, self._raw_high)
        return v if self.observation == "raw" else np.clip(v / self._scale, 0.0, 1.0)

    def _extra(self, before: Observation, k: int) -> np.ndarray | None:
        """The calendar's features as the loop hands them to policies at step ``k``, then
        the queue's signals; None when neither is observed."""
        if not (self.calendar or self.queue):
            return None
        parts = []
        if self.calendar:
            parts.append(self._loop.info(k, before)["calendar"].vector())
        if self.queue:
            q = before.queue
            parts.append(np.array([getattr(q, f) for f in QUEUE_FEATURES], dtype=float) if q is not None
                         else np.zeros(len(QUEUE_FEATURES)))
        return np.concatenate(parts)

    def _obs(self, before: Observation, k: int) -> np.ndarray:
        """The clipped (and, normalised, scaled) feature vector of the observation step
        ``k`` decides on (a fresh array)."""
        extra = self._extra(before, k)
        if extra is not None:
            return self._vector(before.context, extra)
        c = before.context
        if self._obs_cache is None:
            return self._vector(c)
        hit = self._obs_cache.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1].copy()
        obs = self._vector(c)
        if len(self._obs_cache) > 100_000:
            self._obs_cache.clear()
        self._obs_cache[id(c)] = (c, obs)
        return obs.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode. ``options={"episode_seeds": {...}}`` runs the backend on a
        runner episode's seeds (``think``, ``demand``, ``arrivals``; ``policy`` and
        ``calendar`` too, else those of ``seed``), to replay it."""
        given = dict((options or {}).get("episode_seeds") or {})
        unknown = sorted(set(given) - {"think", "demand", "arrivals", "policy", "calendar"})
        if unknown:
            raise UserError(f"options['episode_seeds'] has unknown keys {unknown}; it takes "
                            "['arrivals', 'calendar', 'demand', 'policy', 'think']")
        if seed is None and not self._seeded_once:
            seed = int(self.cfg.seed)  # the config's seed starts the first episode
        super().reset(seed=seed)
        self._seeded_once = True
        root = int(seed) if seed is not None else int(self.np_random.integers(0, 2**63 - 1))
        seeds = episode_seeds(root, 1, 1)[0]  # the runner's run 0 of a config with seed: root
        seeds["policy"] = seeds["policy"][0]
        seeds.update(given)  # what episode_seeds leaves out comes from the episode's own seed
        if self._want_oracle and self._oracle is None and self.cfg.backend in ("sim", "replay"):
            self._oracle = oracle_levels(self.cfg, self.resolved, None)[1]
        clock = VirtualClock()
        backend = make_backend(self.cfg, self.resolved, seeds, self.loads, clock)
        features = None
        if self.calendar:  # the run's timetable (noisy as the config says, from the episode's seeds)
            cfg = replace(self.cfg, calendar=replace(self.cfg.calendar, features=True))
            features = calendar_features(run_timetable(cfg, self.resolved, seeds), self.cfg.step_seconds,
                                         self.resolved.steps)
        self._loop = StepLoop(backend, clock, self.loads, self.resolved.loop, self.reward_fn, calendar=features)
        self._k = 0
        self._done = False
        self._history = []
        self._last = None
        self._before = self._loop.start(0)
        return self._obs(self._before, 0), {"step": 0, "users": float(self.loads[0]),
                                                  "ready_replicas": self._before.context.replicas}

    def action_masks(self) -> np.ndarray:
        """Which actions the clamp would leave effective, shape ``(n_actions,)``, bool:
        at the minimum "down" is masked, at the maximum "up" (stay is always allowed)."""
        if self._loop is None:
            return np.ones(len(self.actions), dtype=bool)
        current = int(self._loop.backend.desired_replicas)
        c = self.cfg.cluster
        out = np.zeros(len(self.actions), dtype=bool)
        for a in range(len(self.actions)):
            result = clamp(current, self._loop.requested(self._decisions[a], self.actions), c.min_replicas,
                           c.max_replicas)
            out[a] = result.requested == current or not result.clamped
        return out

    def step(self, action):
        if self._loop is None or self._before is None or self._done:
            raise gym.error.ResetNeeded("the episode is over (or never started): call reset() before step()")
        try:
            a = int(action)
        except (TypeError, ValueError):
            a = -1
        if a != action or not 0 <= a < len(self._decisions):
            raise UserError(f"action {action!r} is not in {self.action_space}")
        k = self._k
        record, following = self._loop.act(k, self._before, self._decisions[a], self.actions)
        self._k += 1
        nxt = following if following is not None else record.after
        self._before = following
        truncated = following is None
        self._done = truncated
        after = record.after
        info = {"step": self._k, "users": record.load, "ready_replicas": after.context.replicas,
                "desired_replicas": after.desired_replicas, "requested_replicas": record.order.requested,
                "target_replicas": record.order.applied, "clamped": record.order.requested != record.order.applied,
                "violation": record.violation, "record": record}
        if self._reward_terms is not None:
            flag = {"violation": record.violation} if self._terms_take_violation else {}
            info["reward_terms"] = self._reward_terms(record.before.context, a, after.context, **flag)
        if self._oracle is not None:
            info["oracle_replicas"] = int(self._oracle[k])
            info["regret"] = float(after.context.replicas - self._oracle[k])
        if self.render_mode == "rgb_array":
            self._history.append((record.t_s / 3600.0, record.load, after.context.replicas,
                                  int(self._oracle[k]) if self._oracle is not None else -1, after.context.p95_ms))
        self._last = (k, record)
        return self._obs(nxt, self._k), record.reward, False, truncated, info

    def observation_pipeline(self, vecnormalize=None) -> dict:
        """How this env's observations are made, for the ``onnx`` policy to make them the
        same way from a run's contexts: the observation kind, raw clip bounds, the
        normalised features' divisors, the action set, and (``vecnormalize``: an SB3
        ``VecNormalize`` or anything with ``obs_rms.mean``, ``obs_rms.var``, ``clip_obs``,
        ``epsilon``) its running statistics. Save it as JSON beside the exported model."""
        if len(self.features) != len(FIELDS):
            raise UserError(f"env: the onnx policy reads the paper's {len(FIELDS)} features; this env also observes "
                            f"{', '.join(self.features[len(FIELDS):])} (calendar=False, architecture: service)")
        acts = self.actions.orders
        if all(o.mode == "incremental" for o in acts):
            actions = {"kind": "incremental", "steps": [int(o.level) for o in acts]}
        else:
            actions = {"kind": "fixed", "low": int(acts[0].level), "high": int(acts[-1].level)}
        out = {"observation": self.observation, "slo_ms": self.cfg.slo_ms, "max_replicas": self.cfg.cluster.max_replicas,
               "clip_high": self._raw_high.tolist(), "scale": self._scale.tolist(), "actions": actions,
               "output": "logits", "env": self.spec.id if self.spec is not None else None}
        if vecnormalize is not None:
            out.update(obs_mean=np.asarray(vecnormalize.obs_rms.mean, float).tolist(),
                       obs_var=np.asarray(vecnormalize.obs_rms.var, float).tolist(),
                       clip_obs=float(vecnormalize.clip_obs), epsilon=float(vecnormalize.epsilon))
        return out

    def render(self) -> str | np.ndarray | None:
        """``ansi``: the last step as one line of text. ``rgb_array``: a figure of the
        episode so far (ready replicas against the oracle's level and the load; the p95
        against the SLO), ``uint8 (480, 800, 3)``."""
        if self.render_mode == "ansi":
            if self._last is None:
                return "(no step yet)"
            k, record = self._last
            after = record.after.context
            return (f"step {k:5d}  users {record.load:6.1f}  replicas {after.replicas:2d} "
                    f"(ordered {record.order.applied:2d})  p95 {after.p95_ms:8.1f} ms  "
                    f"reward {record.reward:+.3f}{'  VIOLATION' if record.violation else ''}")
        if self.render_mode != "rgb_array":
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.8), dpi=100, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        if self._history:
            t, load, ready, oracle, p95 = (np.array(c) for c in zip(*self._history, strict=True))
            if (oracle >= 0).all():
                top.fill_between(t, oracle, step="post", color="0.85", lw=0, label="oracle")
            top.step(t, ready, where="post", color="C0", label="ready replicas")
            twin = top.twinx()
            twin.plot(t, load, color="black", lw=0.7)
            twin.set_ylabel("load")
            bottom.plot(t, np.maximum(p95, 1.0), color="C1", lw=0.8)
            bottom.set_yscale("log")
            top.legend(loc="upper left", fontsize=8)
        bottom.axhline(self.cfg.slo_ms, color="red", ls="--", lw=0.9)
        top.set_ylabel("replicas")
        bottom.set_ylabel("p95 (ms)")
        bottom.set_xlabel("time (h)")
        top.set_title(f"{self.cfg.name}: step {self._k}", fontsize=10)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def scenario_config(env_id: str) -> ExperimentConfig:
    """The complete config of a registered scenario id, on the simulator."""
    spec = SCENARIOS[env_id]
    cfg = load_config(config_path(spec)) if isinstance(spec, str) else load_config(spec)
    return replace(cfg, backend="sim") if cfg.backend == "live" else cfg


def _make_scenario(env_id: str, **kwargs) -> SandboxScalingEnv:
    return SandboxScalingEnv(scenario_config(env_id), **kwargs)


def _limited(env: SandboxScalingEnv) -> gym.Wrapper:
    """``env`` under Gymnasium's ``TimeLimit`` at its config's length in steps: the ids whose
    config is a keyword learn ``max_episode_steps`` only when the env is made (the wrapper's
    ``spec`` carries it; ``gym.make(..., max_episode_steps=n)`` still shortens it)."""
    return gym.wrappers.TimeLimit(env, env.resolved.steps)


def _make_v0(config=None, steps=(-1, 0, 1), **kwargs) -> gym.Wrapper:
    return _limited(SandboxScalingEnv(config, steps, **{"reward": "config", "oracle": False, **kwargs}))


def _make_v1(config=None, steps=(-1, 0, 1), **kwargs) -> gym.Wrapper:
    return _limited(SandboxScalingEnv(config, steps, **kwargs))


def _register() -> None:
    from functools import partial

    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=_make_v0)
    if GENERIC_ID not in gym.registry:
        gym.register(id=GENERIC_ID, entry_point=_make_v1)
    for env_id in SCENARIOS:
        if env_id not in gym.registry:
            steps = resolve(scenario_config(env_id)).steps
            gym.register(id=env_id, entry_point=partial(_make_scenario, env_id), max_episode_steps=steps)


_register()
