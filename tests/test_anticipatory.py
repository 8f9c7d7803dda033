"""The policies that see load coming: KEDA's cron scaler beside a CPU HPA, the
Predictive HPA's Holt-Winters model, and HSLinUCB with the timetable's floor; worked
examples from the upstream projects' own tests and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels  # noqa: F401  (a hard dependency: the Holt-Winters cases run, never skip)

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.anticipatory import (
    CalendarHSLinUCB,
    Capacity,
    CronTrigger,
    KedaCronHPA,
    PredictiveHPA,
    external_per_pod_proposal,
    holt_winters_prediction,
    triggers_from_timetable,
)
from scalelab.orchestrator.context import CalendarFeatures, Context


def ctx(replicas=1, p95=100.0, cpu=0.1) -> Context:
    return Context(replicas=replicas, p95_ms=p95, rps=1.0, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                   mem_request_ratio=0.1, mem_limit_ratio=0.1, cpu_request_now=cpu)


# -- Kubernetes replica_calculator_test.go, GetExternalPerPodMetricReplicas (milli-units)
@pytest.mark.parametrize("current, usage, target, expected", [
    (3, 8600, 2150, 4),  # "scale up"
    (5, 8600, 2867, 3),  # "scale down"
    (3, 8600, 2900, 3),  # "within default tolerance"
])
def test_external_per_pod_proposal_matches_the_controllers_cases(current, usage, target, expected):
    assert external_per_pod_proposal(current, usage, target, 0.1) == expected


def test_a_cron_trigger_reports_desired_replicas_inside_its_window_and_zero_outside():
    t = CronTrigger(start_s=60.0, end_s=300.0, desired_replicas=10)  # cron_scaler_test.go: 10 active, 0 not
    assert [t.value(x) for x in (59.9, 60.0, 299.9, 300.0)] == [0, 10, 10, 0]


def test_keda_cron_with_cpu_scales_for_the_window_then_the_hpa_stabilises_down():
    p = KedaCronHPA(triggers=[{"start_s": 60, "end_s": 300, "desired_replicas": 10}], max_replicas=12)
    current, seen = 1, {}
    for t in range(0, 615, 15):  # one sync per 15 s; every pod at 10 % CPU for a target of 80 %
        current = p.decide(ctx(current), {"t_s": float(t), "workload_t_s": float(t), "current_replicas": current}).action
        seen[t] = current
    assert seen[45] == 1
    assert seen[60] == 5  # scale-up policy: max(4 pods, 100 %) per 15 s from 1
    assert seen[75] == 10  # the trigger's 10, the largest proposal
    assert seen[300] == 10 and seen[570] == 10  # the window is over: the 300 s stabilization holds 10
    assert seen[585] == 2  # the last 10 recommended (at 285 s) left the window: CPU's ceil(0.125 * 10)


def test_keda_cron_sizes_one_trigger_per_announced_exam():
    from scalelab.injector.calendar import timetable, timetable_data
    from scalelab.injector.workloads import make_workload

    table = timetable_data(timetable(make_workload({"kind": "evaluation-week-v1"})))
    cap = Capacity.of([[100, 2], [200, 3], [400, 5]], 50, "t")
    triggers = triggers_from_timetable(table, 10.0, cap)
    assert [(tr.start_s, tr.end_s, tr.desired_replicas) for tr in triggers] == [
        (118800.0 - 600, 118800.0 + 3600, 3), (136800.0 - 600, 136800.0 + 5400, 5), (295200.0 - 600, 295200.0 + 7200, 6)]
    with pytest.raises(PolicyError, match="give triggers"):
        KedaCronHPA()


def test_capacity_reads_a_load_test_table_and_scales_beyond_it():
    cap = Capacity.of([[100, 2], [50, 1], [400, 5]], 50, "t")
    assert [cap.replicas(u) for u in (0, 10, 50, 51, 100, 400, 480)] == [0, 1, 1, 2, 2, 5, 6]
    assert Capacity.of(None, 40, "t").replicas(81) == 3
    with pytest.raises(PolicyError, match="capacity must be"):
        Capacity.of([[100]], 50, "t")


# -- predictive-horizontal-pod-autoscaler, algorithms/holt_winters/test_holt_winters.py
@pytest.mark.parametrize("series, params, expected", [
    ([1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1], (0.9, 0.9, 0.3, 3, "add", "add"), 3),
    ([1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1], (0.3, 0.3, 0.9, 3, "mul", "add"), 1),
    ([1, 1, 1, 1, 2, 1, 1, 3, 1, 1, 4, 1, 1, 5, 1, 1, 6, 1, 1], (0.005, 0.9, 0.4, 3, "add", "mul"), 6),
    ([1, 3, 1, 1, 3, 1, 1, 3, 1], (0.9, 0.9, 0.3, 3, "add", "add"), None),  # fewer than 10 + 2 * (3 // 2)
    ([1, 3], (0.9, 0.9, 0.3, 3, "add", "add"), None),  # fewer than 2 * seasonal_periods
])
def test_holt_winters_matches_the_phpa_algorithms_cases(series, params, expected):
    assert holt_winters_prediction(series, *params) == expected


def test_predictive_hpa_takes_the_maximum_of_calculated_and_predicted_and_prunes_whole_seasons():
    p = PredictiveHPA(alpha=0.9, beta=0.9, gamma=0.3, seasonal_periods=3, stored_seasons=5, per_sync_period=1)
    series = [1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1]
    out = [p.combine(15.0 * i, 1, c) for i, c in enumerate(series)]
    assert out[:11] == series[:11]  # statsmodels needs 10 + 2 * (3 // 2) = 12 values
    assert out[12] == 3  # calculated 1, predicted 3 (the upstream case): the maximum
    for _ in range(30):
        p.combine(0.0, 1, 1)
    assert 5 * 3 <= len(p.history) < 6 * 3  # stored_seasons whole seasons plus the one building up
    starved = PredictiveHPA(seasonal_periods=3, stored_seasons=2, per_sync_period=1)
    assert all(starved.combine(0.0, 1, c) == c for c in series * 3)  # 2 seasons of 3 never reach 12 values
    every = PredictiveHPA(seasonal_periods=3, per_sync_period=4)
    for i in range(8):
        every.combine(15.0 * i, 1, 2)
    assert every.history == [2, 2]  # one value per 4 syncs


def cal(now=0.0, in5=0.0, in15=0.0, peak=0.0, minutes=240.0) -> dict:
    return {"calendar": CalendarFeatures(now, in5, in15, peak, minutes)}


def test_hslinucb_calendar_never_orders_below_the_forecasts_floor_and_learns_only_free_choices():
    p = CalendarHSLinUCB(capacity=[[100, 2], [300, 4]], slo_ms=600.0, max_replicas=10, seed=0)
    info = {**cal(now=40.0, in5=300.0), "current_replicas": 1}
    assert p.floor(info) == 4
    d = p.decide(ctx(1), info)
    assert d.forced and p.actions.order(d.action).mode == "fixed" and p.actions.order(d.action).level == 4
    before = p.core.A.copy()
    p.update(ctx(1), d.action, 1.0, ctx(4))
    np.testing.assert_array_equal(p.core.A, before)  # a forced step teaches the bandit nothing
    at_floor = {**cal(now=300.0, in5=300.0), "current_replicas": 4}
    for _ in range(20):  # at the floor, a "down" becomes "stay at the floor"
        d = p.decide(ctx(4), at_floor)
        assert p.actions.order(d.action).level >= 0 if d.action >= p.FLOOR else d.action != p.DOWN
    above = {**cal(now=300.0, in5=300.0), "current_replicas": 6}
    d = p.decide(ctx(6), above)
    assert d.action in (p.DOWN, p.STAY) and not d.forced  # above the floor the bandit chooses
    p.update(ctx(6), d.action, 1.0, ctx(6 - (d.action == p.DOWN)))
    assert not np.array_equal(p.core.A[d.action], before[d.action])
    np.testing.assert_array_equal(p._x[-2:], [6 - 4, 4.0])  # margin over the floor, hours to the exam
    hot = p.decide(ctx(6, p95=900.0), above)
    assert hot.forced and hot.action == p.UP  # the paper's rule above the SLO


def test_hslinucb_calendar_without_calendar_features_has_no_floor():
    p = CalendarHSLinUCB(seed=0)
    assert p.floor({}) == 0
    d = p.decide(ctx(1), {"current_replicas": 1})
    assert d.action in (p.DOWN, p.STAY)


def test_the_anticipation_experiment_runs_every_calendar_and_checks_the_targets(tmp_path):
    """The whole pipeline on a short slice (Tuesday 08:30-15:00, fluid engine, 1 run):
    the default week, a held-out calendar and a noisy timetable; the comparison, the
    summary of targets and the exam-slot timeline are written and say what they measured."""
    import yaml

    from scalelab.experiments.anticipation import run_anticipation
    from scalelab.experiments.config import config_path

    base = yaml.safe_load(config_path("evaluation-week-5d").read_text())
    base.update(engine="fluid", runs=1)
    base["workload"] = {"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 8.5, "days": 0.27}
    base["policies"] = [p for p in base["policies"] if p["name"] in ("hslinucb", "hpa", "keda-cron",
                                                                     "hslinucb-calendar", "oracle")]
    variants = {"moved": ("one exam at 10:00", {"workload": {**base["workload"], "exams": [
                    {"day": 1, "hour": 10.0, "students": 250, "minutes": 60}]}}),
                "noisy": ("noisy", {"calendar": {"features": True, "size_noise": 0.3, "start_noise_min": 10.0}})}
    folder = run_anticipation(out=tmp_path, progress=False, base=base, variants=variants)
    md = (folder / "anticipation.md").read_text()
    for name in ("default", "moved", "noisy"):
        assert f"## {name}:" in md
    assert md.count("| keda-cron |") == 3 and md.count("| hslinucb-calendar |") == 3
    assert "phpa" not in md and "| hslinucb |" not in md  # only anticipatory rows are checked against it
    assert (folder / "comparison.html").is_file() and (folder / "comparison.png").is_file()
    exams = sorted(folder.glob("exams-*.png"))
    assert [p.name for p in exams] == ["exams-evaluation-week-5d-moved.png", "exams-evaluation-week-5d-noisy.png",
                                       "exams-evaluation-week-5d.png"]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("evaluation-week-5d"))
    assert len(runs) == 3
    noisy = yaml.safe_load((tmp_path / next(r for r in runs if "noisy" in r) / "config.yaml").read_text())
    assert noisy["calendar"]["size_noise"] == 0.3 and noisy["policies"] == base["policies"]  # the same policies


def test_anticipation_runs_only_the_policies_named(tmp_path):
    """``--policies``: the held-out comparison of two policies without the others' cost;
    the oracle only when named; a label the config lacks is named in the error."""
    import yaml

    from scalelab.experiments.anticipation import run_anticipation
    from scalelab.experiments.config import ConfigError, config_path

    base = yaml.safe_load(config_path("evaluation-week-5d").read_text())
    base.update(engine="fluid", runs=1)
    base["workload"] = {"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 8.5, "days": 0.1}
    with pytest.raises(ConfigError, match="hslinucb-calender: not in evaluation-week-5d"):
        run_anticipation(out=tmp_path, progress=False, base=base, variants={}, policies=["hslinucb-calender"])
    folder = run_anticipation(out=tmp_path, progress=False, base=base, variants={}, only=["default"],
                              policies=["hslinucb", "hslinucb-calendar"])
    run = next(p for p in tmp_path.iterdir() if p.name.startswith("evaluation-week-5d-"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert [p.get("label", p["name"]) for p in cfg["policies"]] == ["hslinucb", "hslinucb-calendar"]
    assert cfg["oracle"] is False
    md = (folder / "anticipation.md").read_text()
    assert "| hslinucb-calendar |" in md and "keda-cron" not in md


def test_targets_are_judged_against_hslinucb_and_the_reactive_front():
    from scalelab.experiments.anticipation import targets

    def row(p, v, c):
        return {"policy": p, "violations_per_run": {"mean": v, "ci95": 0.0}, "replica_hours": {"mean": c, "ci95": 0.0}}

    summary = pd.DataFrame([row("hslinucb", 100, 20), row("hpa", 120, 15), row("cal", 60, 19), row("keda", 69, 30),
                            row("oracle", 1, 40)])
    names = {"cal": "hslinucb-calendar", "keda": "keda-cron", "hpa": "hpa"}
    got = {r["policy"]: r for r in targets(summary, names)}
    assert set(got) == {"cal", "keda"}
    assert got["cal"]["meets"] and got["cal"]["fewer_violations"] == pytest.approx(0.40)
    assert got["keda"]["front_vs_reactive"] and not got["keda"]["meets"]  # 31 % fewer, but costs more


def test_hslinucb_calendar_leaves_quiet_hours_to_the_bandit():
    p = CalendarHSLinUCB(capacity=[[20, 1], [30, 2], [100, 3]], quiet_students=30, seed=0)
    assert p.floor(cal(now=30.0, in5=30.0)) == 0  # 30 expected students: no floor
    assert p.floor(cal(now=30.0, in5=31.0)) == 3  # above: the load test's replicas for 31 students
    assert CalendarHSLinUCB(capacity=[[20, 1], [30, 2], [100, 3]]).floor(cal(now=25.0)) == 2
