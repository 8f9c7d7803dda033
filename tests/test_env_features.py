"""The Gymnasium env observes what the runner hands policies, on request: the announced
timetable's features (``calendar``) and, on the jobs architecture, the queue's signals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from scalelab.errors import UserError
from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.env import QUEUE_FEATURES, SandboxScalingEnv
from scalelab.injector.calendar import calendar_features, timetable
from scalelab.orchestrator.context import CALENDAR_FEATURES, FIELDS

#: Tuesday 08:40-09:20: the timetable's first exam starts at 09:00
SLICE = {"start_day": 1, "start_hour": 8.67, "days": 40 / 1440}


def _config(name: str, **extra) -> dict:
    cfg = yaml.safe_load(config_path(name).read_text())
    cfg["workload"] = {**cfg["workload"], **SLICE}
    cfg["oracle"] = False
    cfg["policies"] = [{"name": "static"}]
    cfg.update(extra)
    return cfg


def test_calendar_features_are_opt_in_as_the_runner_has_them():
    off = _config("evaluation-week-5d", calendar={"features": False})
    assert SandboxScalingEnv(off, oracle=False).features == FIELDS
    assert SandboxScalingEnv(off, oracle=False, calendar=True).features == (*FIELDS, *CALENDAR_FEATURES)
    on = _config("evaluation-week-5d")  # calendar.features: true in the shipped config
    assert SandboxScalingEnv(on, oracle=False).features == (*FIELDS, *CALENDAR_FEATURES)
    assert SandboxScalingEnv(on, oracle=False, calendar=False).features == FIELDS


def test_the_calendar_part_is_what_a_policy_sees_for_the_coming_step():
    cfg = _config("evaluation-week-5d")
    env = SandboxScalingEnv(cfg, oracle=False)
    obs, _ = env.reset(seed=5)
    expected = calendar_features(timetable(env.resolved.workload), cfg["step_seconds"], env.resolved.steps)
    seen = [obs[len(FIELDS):]]
    for _ in range(env.resolved.steps - 1):
        obs, *_ = env.step(1)
        seen.append(obs[len(FIELDS):])
    seen = np.array(seen)
    # period mode: step k decides for the load of step k + 1 (the loop's info; the last step faces itself)
    np.testing.assert_allclose(seen[:-1], expected[1:])
    minutes = seen[:, CALENDAR_FEATURES.index("minutes_to_exam")]
    assert minutes[0] == pytest.approx((9.0 - 8.67) * 60 - 5 / 60, abs=0.01)  # from 08:40:12 + one step to 09:00
    assert seen[:, CALENDAR_FEATURES.index("peak_15min")].max() >= 100  # the exam's students announced


def test_on_the_jobs_architecture_the_queue_signals_follow():
    env = SandboxScalingEnv(_config("evaluation-week-5d-jobs"), oracle=False)
    assert env.features == (*FIELDS, *QUEUE_FEATURES)
    obs, _ = env.reset(seed=2)
    busy = False
    for _ in range(120):
        obs, _, _, done, info = env.step(1)
        q = info["record"].after.queue
        np.testing.assert_allclose(obs[len(FIELDS):], [getattr(q, f) for f in QUEUE_FEATURES])
        busy |= q.lag > 0
        if done:
            break
    assert busy


def test_observations_stay_in_the_box_and_the_env_passes_gymnasiums_checker():
    for name, kwargs in (("evaluation-week-5d", {"observation": "normalized"}),
                         ("evaluation-week-5d-jobs", {"observation": "normalized"}),
                         ("evaluation-week-5d-jobs", {})):
        env = SandboxScalingEnv(load_config(_config(name)), oracle=False, **kwargs)
        check_env(env, skip_render_check=True)
        obs, _ = env.reset(seed=1)
        for _ in range(60):
            assert env.observation_space.contains(obs)
            obs, *_ = env.step(2)


def test_the_onnx_pipeline_refuses_features_it_cannot_make():
    env = SandboxScalingEnv(_config("evaluation-week-5d"), oracle=False)
    with pytest.raises(UserError, match="expected_now"):
        env.observation_pipeline()


def test_normalised_queue_signals_are_jobs_over_the_runners_slots_and_waits_over_twice_the_slo():
    env = SandboxScalingEnv(_config("evaluation-week-5d-jobs"), oracle=False, observation="normalized")
    slots = 12 * 5  # max_replicas x max_concurrent_jobs
    capacity = env.resolved.app.cpu_limit / env.resolved.app.demand.mean_s * 12  # jobs/s at max_replicas
    obs, _ = env.reset(seed=2)
    for _ in range(120):
        obs, _, _, done, info = env.step(1)
        q = info["record"].after.queue
        want = [q.lag / slots, q.waiting / slots, q.oldest_wait_s / 6.0, q.in_progress / slots,
                q.arrival_rate / capacity, q.completion_rate / capacity]
        np.testing.assert_allclose(obs[len(FIELDS):], np.clip(want, 0.0, 1.0))
        if done:
            break
