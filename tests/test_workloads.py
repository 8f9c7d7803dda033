"""Workloads: the paper's patterns, the evaluation week, CSV import, the registry."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.injector.workloads import (
    Deadline,
    EvaluationWeek,
    ExamSlot,
    WorkloadError,
    make_workload,
    paper_sim_levels,
)


def test_paper_sim_v1_equals_the_papers_file(shared_data):
    expected = json.loads((shared_data / "simulation-pattern.json").read_text())
    assert list(paper_sim_levels()) == expected
    wl = make_workload("paper-sim-v1")
    assert [wl.users_at(5.0 * k) for k in range(9000)] == expected
    assert wl.duration_s == 45_000


def test_paper_real_week_v1_reads_the_given_file(tmp_path):
    from importlib import resources

    path = tmp_path / "pattern.json"
    path.write_text(resources.files("scalelab.injector.data").joinpath("real-week-pattern.json").read_text())
    wl = make_workload({"kind": "paper-real-week-v1", "path": str(path)})
    s = wl.series(5.0)
    assert s.shape == (913,) and s.min() == 2 and s.max() == 49
    assert s.mean() == pytest.approx(22.35, abs=0.01)
    assert list(wl.levels) == list(make_workload("paper-real-week-v1").levels)  # the shipped one, read by path


def test_paper_real_week_v1_is_shipped_and_a_bad_path_is_named():
    week = make_workload("paper-real-week-v1")
    assert len(week.levels) == 913 and min(week.levels) == 2 and max(week.levels) == 49
    with pytest.raises(WorkloadError, match=r"nowhere\.json"):
        make_workload({"kind": "paper-real-week-v1", "path": "/nowhere.json"})


def test_exam_slot_students_arrive_within_the_spread_and_leave_at_the_end():
    exam = ExamSlot(day=0, hour=10.0, students=300, minutes=60, start_spread_min=3, leave_spread_min=10)
    t0 = 10 * 3600.0
    assert exam.users_at(t0 - 1) == 0
    assert exam.users_at(t0 + 90) == pytest.approx(150)  # half-way through the 3 min start
    assert exam.users_at(t0 + 180) == 300
    assert exam.users_at(t0 + 50 * 60) == 300
    assert exam.users_at(t0 + 55 * 60) == pytest.approx(150)
    assert exam.users_at(t0 + 3600) == 0


def test_deadline_rush_grows_toward_the_deadline():
    d = Deadline(day=0, hour=24.0, students=200, tau_h=4.0, window_h=48)
    ts = np.linspace(0, 24 * 3600 - 1, 50)
    values = [d.users_at(t) for t in ts]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert d.users_at(24 * 3600.0 - 4 * 3600.0) == pytest.approx(200 * np.exp(-1))
    assert d.users_at(24 * 3600.0 + 1) == 0


def test_evaluation_week_has_its_exams_and_night_troughs():
    wl = make_workload({"kind": "evaluation-week-v1"})
    assert wl.duration_s == 5 * 86400
    tue_14h05 = (24 + 14) * 3600 + 300
    assert wl.users_at(tue_14h05) >= 300  # the 300-student exam is on
    assert wl.users_at(3 * 3600) < 10  # Monday 03:00, night
    assert wl.think_s == (60.0, 240.0)
    shifted = make_workload({"kind": "evaluation-week-v1", "start_day": 1, "days": 1})
    assert shifted.users_at(14 * 3600 + 300) == wl.users_at(tue_14h05)


@given(st.floats(min_value=0, max_value=5 * 86400, allow_nan=False))
def test_workloads_are_pure_functions_of_time(t):
    a = EvaluationWeek()
    assert a.users_at(t) == EvaluationWeek().users_at(t) >= 0


def test_simple_shapes():
    assert make_workload({"kind": "constant", "users": 7}).users_at(123) == 7
    step = make_workload({"kind": "step", "before": 5, "after": 40, "at_s": 300})
    assert (step.users_at(299.9), step.users_at(300)) == (5, 40)
    ramp = make_workload({"kind": "ramp", "start": 0, "end": 100, "duration_s": 100})
    assert ramp.users_at(50) == 50 and ramp.users_at(1000) == 100
    op = make_workload({"kind": "open-constant", "rate_rps": 12.5})
    assert op.loop == "open" and op.rate_at(3) == 12.5
    with pytest.raises(WorkloadError, match="open-loop"):
        op.users_at(0)


def test_csv_import_closed_and_open(tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("t_s,users\n0,5\n60,20\n120,10\n")
    wl = make_workload({"kind": "csv", "path": str(users)})
    assert (wl.users_at(0), wl.users_at(59), wl.users_at(60), wl.users_at(500)) == (5, 5, 20, 10)
    assert wl.duration_s == 180
    rps = tmp_path / "rps.csv"
    rps.write_text("t_s,rps\n0,1.5\n10,3\n")
    tr = make_workload({"kind": "csv", "path": str(rps)})
    assert tr.loop == "open" and tr.rate_at(11) == 3.0
    bad = tmp_path / "bad.csv"
    bad.write_text("time,users\n0,1\n")
    with pytest.raises(WorkloadError, match="header"):
        make_workload({"kind": "csv", "path": str(bad)})


def test_unknown_workload_suggests_the_closest_name():
    with pytest.raises(WorkloadError, match="did you mean 'evaluation-week-v1'"):
        make_workload({"kind": "evaluation-week"})
    with pytest.raises(WorkloadError, match="'constant' has no parameter 'userz'; did you mean 'users'"):
        make_workload({"kind": "constant", "userz": 3})
    with pytest.raises(WorkloadError, match="'step' has no parameter 'befor'; did you mean 'before'"):
        make_workload({"kind": "step", "befor": 3})
