"""The announced timetable and its features: known values, no leak of what is not
announced, the noise, and the loop handing them to policies (simulated and live)."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import yaml

from scalelab.injector.calendar import (
    EXAM_HORIZON_MIN,
    FEATURES,
    CalendarSettings,
    calendar_features,
    run_timetable,
    timetable,
)
from scalelab.injector.workloads import WorkloadError, make_workload

STEP = 5.0
DAY = 86400.0


def week(**params):
    return make_workload({"kind": "evaluation-week-v1", **params})


def baseline(w, t: float) -> float:
    """The diurnal part of ``evaluation-week-v1`` at ``t`` (its docstring's formula)."""
    h = ((t + w.offset_s) / 3600.0) % 24.0
    shape = 0.5 * (1.0 + math.cos(2.0 * math.pi * (h - w.diurnal_peak_hour) / 24.0))
    return w.diurnal_peak * (w.night_fraction + (1.0 - w.night_fraction) * shape)


def test_features_ten_minutes_before_an_exam_by_hand():
    w = week()
    start = (1 * 24 + 14.0) * 3600.0  # Tuesday 14:00, 300 students, a 3-minute start
    k = int((start - 600.0) / STEP)
    f = calendar_features(timetable(w), STEP, k + 1)[k]
    assert dict(zip(FEATURES, f, strict=True))["minutes_to_exam"] == pytest.approx(10.0)
    assert f[0] == round(baseline(w, k * STEP))  # nothing announced at 13:50
    assert f[1] == round(baseline(w, k * STEP + 300))  # 13:55: still nothing
    assert f[2] == round(baseline(w, k * STEP + 900) + 300)  # 14:05: every student has started
    assert f[3] == f[2]  # the most over the next 15 minutes


def test_minutes_to_exam_counts_down_and_caps():
    f = calendar_features(timetable(week()), STEP, int(2 * DAY / STEP))
    starts = week().exam_starts_s()
    k0 = int(starts[0] / STEP)
    assert f[k0, 4] == 0.0 and f[k0 - 12, 4] == pytest.approx(1.0)
    assert f[0, 4] == EXAM_HORIZON_MIN  # Monday 00:00: the first exam is a day away
    assert np.all((f[:, 4] >= 0) & (f[:, 4] <= EXAM_HORIZON_MIN))


def test_an_unannounced_burst_moves_no_feature_and_the_load_does_move():
    exams = [{"day": 1, "hour": 9.0, "students": 180, "minutes": 60},
             {"day": 1, "hour": 14.0, "students": 300, "minutes": 90}]
    burst = {"day": 1, "hour": 11.0, "students": 250, "minutes": 45, "announced": False}
    plain, surprised = week(days=2, exams=exams), week(days=2, exams=[*exams, burst])
    steps = int(2 * DAY / STEP)
    assert np.array_equal(calendar_features(timetable(plain), STEP, steps),
                          calendar_features(timetable(surprised), STEP, steps))
    loads = plain.series(STEP, steps), surprised.series(STEP, steps)
    first = int(np.flatnonzero(loads[0] != loads[1])[0])
    assert first * STEP >= (24 + 11.0) * 3600.0  # the load moves at the burst, not before


def test_an_announced_exam_moves_the_features_only_within_their_horizons():
    exams = [{"day": 1, "hour": 9.0, "students": 180, "minutes": 60}]
    extra = {"day": 1, "hour": 16.0, "students": 200, "minutes": 60}
    steps = int(2 * DAY / STEP)
    a = calendar_features(timetable(week(days=2, exams=exams)), STEP, steps)
    b = calendar_features(timetable(week(days=2, exams=[*exams, extra])), STEP, steps)
    start = (24 + 16.0) * 3600.0
    moved = np.flatnonzero(np.any(a[:, :4] != b[:, :4], axis=1))
    assert moved[0] * STEP >= start - 15 * 60.0  # students: 15 minutes ahead at most
    moved_eta = np.flatnonzero(a[:, 4] != b[:, 4])
    assert moved_eta[0] * STEP >= start - EXAM_HORIZON_MIN * 60.0  # the countdown: its horizon


def test_a_noisy_timetable_stays_within_its_bounds_and_follows_the_seed():
    w = week()
    settings = CalendarSettings(size_noise=0.3, start_noise_min=10.0)
    a, b, c = (run_timetable(w, settings, s) for s in (1, 1, 2))
    assert a == b and a != c
    for true, told in zip(w.exams, a.exams, strict=True):
        assert 0.7 * true.students - 0.5 <= told.students <= 1.3 * true.students + 0.5
        assert abs(told.start_s - true.start_s) <= 600.0 + 1e-6
    assert run_timetable(w, CalendarSettings(), 5) == w.announced()  # no noise: the timetable as it is


def test_a_workload_without_a_timetable_has_none_and_compression_carries_it():
    with pytest.raises(WorkloadError, match="publishes no timetable"):
        timetable(make_workload({"kind": "constant", "users": 5}))
    assert run_timetable(make_workload({"kind": "constant", "users": 5}), CalendarSettings(), 0) is None
    fast = make_workload({"kind": "evaluation-week-v1", "time_compression": 12, "user_scale": 0.5})
    slow = week()
    assert fast.exam_starts_s() == tuple(t / 12 for t in slow.exam_starts_s())
    t = slow.exam_starts_s()[1] + 600.0
    assert timetable(fast).users_at(t / 12) == round(0.5 * timetable(slow).users_at(t))


class Recorder:
    """A static policy that keeps what ``info`` said at each step."""

    def __init__(self):
        from scalelab.agent.policies.static import Static

        self.inner = Static(replicas=1)
        self.actions = self.inner.actions
        self.seen = []

    def decide(self, context, info=None):
        self.seen.append((info or {}).get("calendar"))
        return self.inner.decide(context, info)

    def update(self, *a):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _short_week(features: bool, noise: float = 0.0):
    from scalelab import load_config

    return load_config({"name": "cal", "seed": 3, "engine": "fluid", "steps": 200, "slo_ms": 3000,
                        "app": {"profile": "sandbox"},
                        "workload": {"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 13.9},
                        "calendar": {"features": features, "size_noise": noise},
                        "policies": [{"name": "static", "replicas": 1}]})


def test_the_loop_hands_the_features_of_the_moment_the_step_is_measured_at(monkeypatch):
    import scalelab.experiments.episode as ep
    from scalelab.experiments.episode import episode_seeds

    cfg = _short_week(True)
    r = ep.resolve(cfg)
    rec = Recorder()
    monkeypatch.setattr(ep, "build_policy", lambda *a, **k: rec)
    seeds = dict(episode_seeds(cfg.seed, 1, 1)[0], policy=1)
    records = list(ep.episode_records(cfg, r, 0, 0, seeds, r.workload.series(5.0, r.steps), None))
    table = calendar_features(timetable(r.workload), 5.0, r.steps)
    assert len(records) == r.steps == len(rec.seen)
    for k, cal in enumerate(rec.seen):  # period mode: step k is measured under step k + 1's load
        np.testing.assert_array_equal(cal.vector(), table[min(k + 1, r.steps - 1)])
    rec.seen.clear()
    list(ep.episode_records(_short_week(False), r, 0, 0, seeds, r.workload.series(5.0, r.steps), None))
    assert set(rec.seen) == {None}  # off by default: the paper's context only


def test_calendar_features_need_a_timetable():
    from scalelab import ConfigError, load_config, run_experiment

    cfg = load_config({"name": "x", "steps": 5, "workload": {"kind": "constant", "users": 3},
                       "calendar": {"features": True}, "policies": [{"name": "static"}]})
    with pytest.raises(ConfigError, match=r"calendar\.features needs a workload that publishes a timetable"):
        run_experiment(cfg, out=None, progress=False)
    with pytest.raises(ConfigError, match=r"calendar.size_noise=1.5 must be within \[0, 1\)"):
        load_config({"name": "x", "calendar": {"size_noise": 1.5}})


def test_a_live_agent_sees_the_same_timetable_and_features_as_the_simulated_run():
    from scalelab.agent.process import AgentSpec, agent_timetable
    from scalelab.experiments.episode import episode_seeds, resolve
    from scalelab.experiments.episode import run_timetable as sim_timetable
    from scalelab.experiments.live import agent_spec
    from scalelab.injector.calendar import timetable_data

    cfg = _short_week(True, noise=0.3)
    r = resolve(cfg)
    seeds = episode_seeds(cfg.seed, 2, 1)
    tables = []
    for run in (0, 1):
        spec = agent_spec(cfg, 0, run, seeds[run]["policy"][0], calendar_seed=seeds[run]["calendar"])
        spec = AgentSpec.from_dict(yaml.safe_load(yaml.safe_dump(asdict(spec))))  # as the agent process reads it
        sim = sim_timetable(cfg, r, seeds[run])
        assert agent_timetable(spec) == timetable_data(sim)
        np.testing.assert_array_equal(spec.calendar["features"], calendar_features(sim, cfg.step_seconds, r.steps))
        tables.append(agent_timetable(spec))
    assert tables[0] != tables[1]  # each run draws its own noisy timetable
