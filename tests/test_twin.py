"""The twin: the paper's collector on any backend, calibration against any recorded
dataset, fitted profiles by name, and the side-by-side report of two run folders."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.experiments.collector import HOST_CPU_COLUMNS, HostCpuMeter
from scalelab.experiments.collector import TICKS as HOST_TICKS
from scalelab.experiments.twin import config_differences, twin_table
from scalelab.orchestrator.backend import VirtualClock
from scalelab.orchestrator.context import PAPER as PAPER_CONTEXT
from scalelab.simulator.backends import SimBackend
from scalelab.simulator.calibration import compare_cells, dataset_cells, dataset_utilization, fit_profile
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.datasets import DatasetMeta, collect, read_dataset_meta, recorded_cells, write_dataset_meta
from scalelab.simulator.models import PAPER, find_profile, save_profile


def _sim_backend(app=PAPER, seed=1):
    clock = VirtualClock()
    settings = ClusterSettings(min_replicas=1, max_replicas=4, initial_replicas=1, startup_seconds=0.0)
    seeds = dict(zip(("think", "demand", "arrivals"), np.random.SeedSequence(seed).generate_state(3), strict=True))
    return SimBackend(app, settings, PAPER_CONTEXT, clock, seeds, max_users=40), clock


def test_the_collector_measures_every_cell_up_then_down_and_writes_rows_as_it_goes(tmp_path):
    backend, clock = _sim_backend()
    rows = tmp_path / "rows.jsonl"
    levels = []
    frame = collect(backend, clock, users=(5, 15), replicas=(1, 2), samples=3, warmup_steps=1, source="sim",
                    rows_file=rows, progress=levels.append)
    assert len(frame) == 2 * 2 * 3 and len(levels) == 2 * 2 * 2
    assert sorted(frame.groupby(["users", "replicas"]).size().to_dict().items()) == [
        ((5, 1), 3), ((5, 2), 3), ((15, 1), 3), ((15, 2), 3)]
    assert (frame.ready_replicas == frame.replicas).all() and set(frame.source) == {"sim"}
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(written) == len(frame)
    # the order of measurement: replicas 1, users 5 (2 samples) 15 (2) then 15 (1) 5 (1); then replicas 2
    assert [(r["users"], r["replicas"], r["sample"]) for r in written[:6]] == [
        (5, 1, 0), (5, 1, 1), (15, 1, 0), (15, 1, 1), (15, 1, 2), (5, 1, 2)]
    assert backend.load == 5 and clock.now() > 0
    # more users on one replica means a higher p95
    p95 = frame.groupby(["users", "replicas"]).p95_ms.median()
    assert p95[(15, 1)] > p95[(5, 1)]


class _CountingScales:
    """A backend that counts its scale orders."""

    def __init__(self, backend):
        self.backend, self.scaled = backend, []

    def scale_to(self, n):
        self.scaled.append(n)
        return self.backend.scale_to(n)

    def __getattr__(self, name):
        return getattr(self.backend, name)


def test_a_resumed_recording_takes_only_what_each_cell_lacks_and_skips_complete_replica_counts(tmp_path):
    backend, clock = _sim_backend()
    counting = _CountingScales(backend)
    # interrupted: replicas 1 complete, (5, 2) has its first sample, (15, 2) nothing
    recorded = {(5, 1): 4, (15, 1): 4, (5, 2): 1}
    rows = tmp_path / "rows.jsonl"
    frame = collect(counting, clock, users=(5, 15), replicas=(1, 2), samples=4, warmup_steps=1,
                    rows_file=rows, recorded=recorded)
    assert counting.scaled == [2]  # replicas 1 is not visited
    written = [(r["users"], r["replicas"], r["sample"]) for r in map(json.loads, rows.read_text().splitlines())]
    # up: 5 lacks one of its two, 15 takes two; down: 15 and 5 take their last two each
    assert written == [(5, 2, 1), (15, 2, 0), (15, 2, 1), (15, 2, 2), (15, 2, 3), (5, 2, 2), (5, 2, 3)]
    assert len(frame) == 7
    complete = collect(counting, clock, users=(5, 15), replicas=(1, 2), samples=4, warmup_steps=1,
                       recorded={(5, 1): 4, (15, 1): 4, (5, 2): 4, (15, 2): 4})
    assert complete.empty and counting.scaled == [2]


def test_the_rows_of_an_interrupted_recording_are_read_back_without_the_cut_line(tmp_path):
    rows = tmp_path / "r.jsonl"
    rows.write_text(json.dumps({"users": 5, "replicas": 1, "sample": 0}) + "\n"
                    + json.dumps({"users": 5, "replicas": 1, "sample": 1}) + "\n" + '{"users": 5, "repl')
    kept, counts = recorded_cells(rows)
    assert len(kept) == 2 and counts == {(5, 1): 2}
    assert recorded_cells(tmp_path / "none.jsonl") == ([], {})


def test_the_host_meter_gives_the_replicas_cpu_the_rest_and_the_steal_over_each_step(tmp_path):
    clock = VirtualClock()
    groups = tmp_path / "cgroups"
    stat = tmp_path / "stat"
    ticks = HOST_TICKS

    def host(busy_s, idle_s, steal_s):  # user nice system idle iowait irq softirq steal
        stat.write_text(f"cpu  {int(busy_s * ticks)} 0 0 {int(idle_s * ticks)} 0 0 0 {int(steal_s * ticks)} 0 0\n"
                        "cpu0 1 2 3\n")

    def replica(name, cpu_s):
        (groups / name).mkdir(parents=True, exist_ok=True)
        (groups / name / "cpuacct.usage").write_text(str(int(cpu_s * 1e9)))

    replica("key-sandbox-1", 10.0)
    replica("other-sandbox-1", 99.0)  # another stack's replica: not counted
    host(100.0, 50.0, 1.0)
    meter = HostCpuMeter(clock, "key-", cgroups=groups, proc_stat=stat)
    first = meter()
    assert set(first) == set(HOST_CPU_COLUMNS) and all(np.isnan(v) for v in first.values())
    clock.sleep_until(5.0)
    replica("key-sandbox-1", 12.0)  # 2 s of CPU in 5 s
    replica("key-sandbox-2", 0.5)  # started during the step: all of its CPU was spent in it
    replica("other-sandbox-1", 200.0)
    host(105.0, 52.0, 1.5)  # 5 s busy in 5 s
    m = meter()
    assert m["replicas_cpu_cores"] == pytest.approx(0.5)
    assert m["host_cpu_cores"] == pytest.approx(1.0)
    assert m["others_cpu_cores"] == pytest.approx(0.5)
    assert m["steal_cores"] == pytest.approx(0.1)
    clock.sleep_until(10.0)
    replica("key-sandbox-2", 3.0)
    host(107.5, 55.0, 1.5)
    assert meter()["replicas_cpu_cores"] == pytest.approx(0.5)
    clock.sleep_until(15.0)
    (groups / "key-sandbox-2" / "cpuacct.usage").unlink()
    (groups / "key-sandbox-2").rmdir()  # removed: its last CPU is unknown
    host(110.0, 57.0, 1.5)
    m = meter()
    assert np.isnan(m["replicas_cpu_cores"]) and np.isnan(m["others_cpu_cores"]) and m["host_cpu_cores"] == 0.5
    # no cgroup of the stack to read (cgroup v2, no quota): unknown, never 0
    blind = HostCpuMeter(clock, "nobody-", cgroups=groups, proc_stat=stat)
    blind()
    clock.sleep_until(20.0)
    host(112.0, 59.0, 1.5)
    assert np.isnan(blind()["replicas_cpu_cores"])


def test_the_simulator_calibrated_against_its_own_recording_is_close_and_a_wrong_profile_is_not():
    backend, clock = _sim_backend(seed=4)
    frame = collect(backend, clock, users=(10, 25), replicas=(1, 2), samples=40, warmup_steps=4)
    cells = dataset_cells(frame)
    same = compare_cells(PAPER, cells, ClusterSettings(), PAPER_CONTEXT, steps=40, seed=9, slo_ms=600.0)
    slow = PAPER.with_overrides(demand={"cpu_ms": PAPER.demand.cpu_ms * 1.5})
    wrong = compare_cells(slow, cells, ClusterSettings(), PAPER_CONTEXT, steps=40, seed=9, slo_ms=600.0)
    assert same.median_q_error < 0.15
    assert wrong.median_q_error > 2 * same.median_q_error
    # a fit from the wrong profile moves its CPU demand back toward the truth
    fitted, res, tried = fit_profile(slow, lambda a: compare_cells(a, cells, ClusterSettings(), PAPER_CONTEXT,
                                                                   steps=30, seed=9), candidates=8, seed=0)
    assert len(tried) == 9 and res.median_q_error <= wrong.median_q_error
    assert abs(fitted.demand.cpu_ms - PAPER.demand.cpu_ms) < abs(slow.demand.cpu_ms - PAPER.demand.cpu_ms)


def test_saturated_cells_are_marked_and_left_out_of_the_headline():
    cells = {(5, 1): np.array([100.0, 110.0]), (50, 1): np.array([9000.0, 9500.0])}
    frame = pd.DataFrame({"users": [5, 5, 50, 50], "replicas": [1] * 4, "cpu_limit_ratio": [0.3, 0.4, 0.95, 0.97]})
    used = dataset_utilization(frame)
    assert used == {(5, 1): pytest.approx(0.35), (50, 1): pytest.approx(0.96)}
    res = compare_cells(PAPER, cells, steps=10, utilization=used)
    t = res.table.set_index(["users", "replicas"])
    assert not t.loc[(5, 1), "saturated"] and t.loc[(50, 1), "saturated"]
    assert res.worst_q_error == pytest.approx(t.loc[(5, 1), ["q10_error", "q50_error", "q90_error"]].abs().max())


def test_a_fitted_profile_is_saved_and_found_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALELAB_PROFILES", str(tmp_path))
    from dataclasses import replace

    fitted = replace(PAPER.with_overrides(overhead_ms=31.0, demand={"cpu_ms": 50.0}), name="my-cluster")
    path = save_profile(fitted)
    assert path == tmp_path / "my-cluster.json"
    assert find_profile("my-cluster") == fitted
    assert find_profile(str(path)) == fitted
    with pytest.raises(KeyError, match="my-cluster"):
        find_profile("my-clustr")
    from scalelab.experiments.config import load_config
    from scalelab.experiments.episode import resolve

    cfg = load_config({"name": "x", "app": {"profile": "my-cluster", "cpu_limit": 0.6, "cpu_request": 0.6},
                       "workload": {"kind": "constant", "users": 3, "duration_s": 20},
                       "policies": [{"name": "static"}]})
    assert resolve(cfg).app == fitted.with_overrides(cpu_limit=0.6, cpu_request=0.6)


def test_dataset_meta_round_trips_and_defaults_to_the_paper(tmp_path):
    f = tmp_path / "d.parquet"
    assert read_dataset_meta(f) == DatasetMeta()
    meta = DatasetMeta(think_s=(5.0, 20.0), step_s=5.0, slo_ms=3000.0, source="live", config="x.yaml",
                       grid={"users": [5, 10], "replicas": [1], "samples": 40, "warmup_steps": 6})
    write_dataset_meta(f, meta)
    assert read_dataset_meta(f) == meta  # a resumed recording compares them
    (tmp_path / "d.parquet.meta.json").write_text("{}")
    with pytest.raises(Exception, match="meta"):
        read_dataset_meta(f)


def _steps(policy, runs, p95, replicas, violation):
    rows = []
    for run in range(runs):
        for step, (p, r, v) in enumerate(zip(p95, replicas, violation[run], strict=True)):
            rows.append({"policy": policy, "run": run, "step": step, "t_s": 5.0 * (step + 1), "p95_ms": p,
                         "replicas": r, "rps": 1.0, "violation": v, "missing": "", "client_p95_ms": p * 1.1})
    return pd.DataFrame(rows)


def test_the_twin_table_by_hand():
    sim = pd.concat([_steps("a", 2, [100, 200, 400, 800], [1, 1, 2, 2], [[0, 0, 0, 1], [0, 0, 1, 1]]),
                     _steps("b", 2, [100, 100, 100, 100], [3, 3, 3, 3], [[0, 0, 0, 0], [0, 0, 0, 0]])])
    live = pd.concat([_steps("a", 2, [100, 100, 400, 400], [1, 2, 2, 2], [[0, 0, 1, 1], [0, 0, 1, 1]]),
                      _steps("b", 2, [200, 200, 200, 200], [3, 3, 3, 3], [[0, 0, 0, 0], [0, 0, 0, 1]])])
    t = twin_table(sim, live, step_s=5.0).set_index("policy")
    assert t.loc["a", "sim_violations"] == 1.5 and t.loc["a", "live_violations"] == 2.0
    assert t.loc["a", "live_violations_ci95"] == 0.0 and not t.loc["a", "violations_within"]
    assert t.loc["b", "live_violations"] == 0.5
    # t(0.975, 1) = 12.706205 (a t table)
    assert t.loc["b", "live_violations_ci95"] == pytest.approx(12.706205 * np.std([0, 1], ddof=1) / np.sqrt(2))
    assert t.loc["b", "violations_within"]  # 0 is inside 0.5 ± 6.4
    assert t.loc["a", "sim_replica_hours"] == pytest.approx(6 * 5 / 3600)
    # per-step p95 error of a: 0, 1, 0, 1 -> median 0.5; of b: 0.5 everywhere
    assert t.loc["a", "p95_error_median"] == pytest.approx(0.5) and t.loc["b", "p95_error_median"] == 0.5
    assert t.loc["a", "orchestrator_vs_locust_p95"] == pytest.approx(0.1 / 1.1)
    # ranking by violations then replica-hours: b first on both
    assert t.loc["b", "sim_rank"] == 1 and t.loc["b", "live_rank"] == 1 and t.loc["a", "live_rank"] == 2


def test_config_differences_leave_out_the_backend():
    a = {"name": "x", "backend": "sim", "runs": 10, "slo_ms": 600, "workload": {"kind": "step", "at_s": 5}}
    b = {"name": "x", "backend": "live", "runs": 2, "slo_ms": 600, "workload": {"kind": "step", "at_s": 6}}
    (d,) = config_differences(a, b)
    assert (d.key, d.a, d.b, d.section, str(d)) == ("workload.at_s", 5, 6, "workload", "workload.at_s: 5 -> 6")
    assert config_differences(a, {**a, "backend": "live"}) == []


def test_scalelab_report_of_two_run_folders_puts_them_side_by_side(tmp_path, capsys):
    from scalelab.cli import main
    from scalelab.experiments.experiment import run_experiment

    cfg = {"name": "tw", "seed": 3, "runs": 2, "steps": 12, "slo_ms": 3000, "app": {"profile": "sandbox"},
           "workload": {"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 13.9, "days": 0.02,
                        "time_compression": 12, "user_scale": 0.1},
           "cluster": {"max_replicas": 3}, "policies": [{"name": "hslinucb"}, {"name": "static", "replicas": 2}]}
    a = run_experiment(cfg, out=tmp_path, progress=False).path
    b = run_experiment({**cfg, "seed": 4}, out=tmp_path, progress=False).path
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "side")]) == 0
    html = (tmp_path / "side" / "comparison.html").read_text()
    assert a.name in html and b.name in html and "A hslinucb" in html and "B static" in html
    assert "seed: 3 -&gt; 4" in html
    comparison = pd.read_csv(tmp_path / "side" / "comparison.csv")
    assert len(comparison) == 4 and set(comparison.folder) == {a.name, b.name} and set(comparison.key) == {"A", "B"}
    # two simulated runs are a comparison, not a twin: no simulated run is labelled live
    assert "no twin report: neither is a live run" in capsys.readouterr().out
    assert not (tmp_path / "side" / "twin.md").exists()
    # one of them recorded as live, the other's seed different: not one experiment, not compared step by step
    import yaml

    live_cfg = yaml.safe_load((b / "config.yaml").read_text())
    (b / "config.yaml").write_text(yaml.safe_dump({**live_cfg, "backend": "live"}))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "side2")]) == 0
    out = capsys.readouterr().out
    assert f"no twin report: {a.name} and {b.name} are different experiments (seed: 3 -> 4)" in out
    # the same seed: a twin, written step by step
    (b / "config.yaml").write_text(yaml.safe_dump({**live_cfg, "backend": "live", "seed": 3}))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "side3")]) == 0
    md = (tmp_path / "side3" / "twin.md").read_text()
    assert "| hslinucb |" in md and "| static |" in md and "the same experiment" in md
    assert (tmp_path / "side3" / "twin.png").stat().st_size > 10_000
    t = pd.read_csv(tmp_path / "side3" / "twin.csv")
    assert set(t.policy) == {"hslinucb", "static"} and (t.steps_compared > 0).all()


# ----------------------------------------------------------------------------- the noise floor
def _summary(cells, minutes=(), runs=(), slo_ms=1e9):
    return {"step_s": 5.0, "slo_ms": slo_ms, "cells": {k: list(map(float, v)) for k, v in cells.items()},
            "minutes": [dict(zip(("policy", "run", "minute", "p95_ms", "rps"), m, strict=True)) for m in minutes],
            "runs": [dict(zip(("policy", "run", "violations", "replica_hours"), r, strict=True)) for r in runs]}


def test_tost_is_two_one_sided_welch_tests():
    from scipy import stats

    from scalelab.experiments.twin import tost

    x, y, margin = np.array([10.0, 12.0, 11.0, 13.0]), np.array([11.0, 14.0, 12.5]), 2.0
    low = stats.ttest_ind(x + margin, y, equal_var=False, alternative="greater").pvalue
    high = stats.ttest_ind(x - margin, y, equal_var=False, alternative="less").pvalue
    assert tost(x, y, margin) == pytest.approx(max(low, high))
    # by hand: x = y = [1, 2, 3], margin 1: se = sqrt(2/3), df = 4, p = P(T4 > 1 / se)
    assert tost(np.array([1.0, 2, 3]), np.array([1.0, 2, 3]), 1.0) == pytest.approx(
        stats.t.sf(1 / np.sqrt(2 / 3), 4))
    assert tost(np.arange(100.0), np.arange(100.0) + 0.1, 10.0) < 0.05  # equivalent (se 4.1: t = 2.4)
    assert tost(np.arange(100.0), np.arange(100.0) + 30, 10.0) > 0.99  # not
    assert np.isnan(tost(np.array([1.0]), np.array([1.0, 2.0]), 1.0))


def test_cell_distances_by_hand():
    from scalelab.experiments.twin import cell_floor

    live = np.linspace(100.0, 1000.0, 20)
    a = _summary({"4,1": live, "9,2": live, "1,1": live[:3]})  # the last cell has too few steps: left out
    sim = _summary({"4,1": 1.5 * live, "9,2": 1.5 * live, "1,1": live[:3]})
    out = cell_floor([sim], [a, a], np.random.default_rng(0), reps=50)
    assert out["cells"] == 2 and out["live_live"] == 0.0
    assert out["sim_live"] == pytest.approx(0.5)  # every quantile 50 % above live's
    assert out["sim_live_ci"][0] < 0.5 < out["sim_live_ci"][1]  # steps resampled on each side
    # the share above the SLO counts too: sim's 20 steps above 1000 ms against none
    slo = _summary({"4,1": live}, slo_ms=1000.0)
    above = cell_floor([_summary({"4,1": live + 1000}, slo_ms=1000.0)], [slo, slo], np.random.default_rng(0), reps=10)
    q = np.quantile(live, [0.1, 0.5, 0.9])
    assert above["sim_live"] == pytest.approx(np.mean(1000 / q) + 1.0)


def test_a_floor_of_three_live_runs_averages_its_pairs_by_hand():
    """Three live sides A, B = 2 A, C = 4 A: live-live is the mean over the pairs, each
    later side against an earlier one: B-A 1.0, C-A 3.0, C-B 1.0 (the other way round it
    would be 0.5, 0.75, 0.5); sim = A is 0, 0.5 and 0.75 from them. Per minute (the
    tolerance is relative to the reference: 111 against 100 is 11 % off, 100 against 111
    is 9.9 %): A 100 throughout, B 100 then 200, C 111. Per run, four sides, the live
    runs of B and D against those of A and C."""
    from scalelab.experiments.twin import cell_floor, live_pairs, minute_floor, run_floor, tost

    assert live_pairs(2) == [(1, 0)] and live_pairs(3) == [(1, 0), (2, 0), (2, 1)]
    live = np.linspace(100.0, 1000.0, 20)
    a, b, c = (_summary({"4,1": k * live}) for k in (1, 2, 4))
    out = cell_floor([a], [a, b, c], np.random.default_rng(0), reps=10)
    assert out["live_live"] == pytest.approx(5 / 3) and out["sim_live"] == pytest.approx(1.25 / 3)
    assert out["per_cell"]["4,1"]["steps"] == (20, 20, 20, 20)
    mins = [("p", 0, m, 100.0, 10.0) for m in range(4)]
    off = [("p", 0, m, 100.0 if m < 2 else 200.0, 10.0) for m in range(4)]  # half its minutes within
    high = [("p", 0, m, 111.0, 10.0) for m in range(4)]
    m = minute_floor([_summary({}, mins)], [_summary({}, mins), _summary({}, off), _summary({}, high)])
    assert m["p95_ms"]["live_live"] == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    assert m["p95_ms"]["sim_live"] == pytest.approx((1.0 + 0.5 + 1.0) / 3) and m["p95_ms"]["minutes"] == 4
    runs = [[("p", 0, v, 0.2 + v / 100)] for v in (1.0, 5.0, 3.0)] + [[("p", 0, 4.0, 0.24)]]
    t = run_floor(_summary({}, runs=[("p", r, 3.0, 0.23) for r in range(4)]),
                  [_summary({}, runs=r) for r in runs]).set_index("metric")
    assert [t.loc["violations", f"live_{x}"] for x in "abcd"] == [1.0, 5.0, 3.0, 4.0]
    assert t.loc["violations", "live_runs"] == 4 and t.loc["violations", "live"] == pytest.approx(3.25)
    margin = t.loc["violations", "margin"]
    assert t.loc["violations", "p_live_live"] == pytest.approx(tost(np.array([5.0, 4.0]), np.array([1.0, 3.0]), margin))


def test_the_draws_floor_by_hand():
    """Two simulated sides S and 2 S (every per-step p95 doubled, half the minutes off):
    0.5 apart per cell (S against 2 S's quantiles, |q - 2q| / 2q) and half their minutes
    within 10 %; with one side there is nothing to compare."""
    from scalelab.experiments.twin import draw_floor

    live = np.linspace(100.0, 1000.0, 20)
    mins = [("p", 0, m, 100.0, 10.0) for m in range(4)]
    off = [("p", 0, m, 100.0 if m < 2 else 200.0, 10.0) for m in range(4)]
    s1, s2 = _summary({"4,1": live}, mins), _summary({"4,1": 2 * live}, off)
    assert draw_floor([s1, s2]) == {"pairs": 1, "cells_sim_sim": pytest.approx(0.5), "minutes_sim_sim": 0.5}
    assert draw_floor([s1]) == {}


def test_minute_shares_and_the_ranking_by_hand():
    from scalelab.experiments.twin import minute_floor, noise_floor, run_floor

    mins_a = [("p", 0, m, 100.0, 10.0) for m in range(10)]
    mins_b = [("p", 0, m, 100.0 if m < 8 else 150.0, 10.0) for m in range(10)]  # live B: 8 of 10 within
    mins_s = [("p", 0, m, 105.0 if m < 5 else 200.0, 10.5) for m in range(10)]  # sim: 5 of 10
    m = minute_floor([_summary({}, mins_s)], [_summary({}, mins_a), _summary({}, mins_b)])
    assert m["p95_ms"]["live_live"] == 0.8 and m["p95_ms"]["minutes"] == 10
    # sim against A: 5 of 10 within; against B: minutes 0-4 (105 vs 100) and none after: 0.5; mean 0.5
    assert m["p95_ms"]["sim_live"] == 0.5 and m["rps"]["sim_live"] == 1.0 and m["rps"]["live_live"] == 1.0
    runs = [("good", r, 1.0 + r, 1.0) for r in range(3)] + [("bad", r, 20.0 + r, 0.5) for r in range(3)]
    sim_runs = [("good", r, 30.0 + r, 1.0) for r in range(3)] + [("bad", r, 20.0 + r, 0.5) for r in range(3)]
    t = run_floor(_summary({}, runs=sim_runs), [_summary({}, runs=runs), _summary({}, runs=runs)]).set_index(
        ["policy", "metric"])
    assert t.loc[("good", "violations"), "live_rank"] == 1 and t.loc[("good", "violations"), "sim_rank"] == 2
    assert t.loc[("good", "violations"), "margin"] == 2.0  # 20 % of 2 violations is below the floor of 2
    assert t.loc[("bad", "violations"), "p_sim_live"] < 0.05  # the same runs: equivalent
    assert t.loc[("good", "violations"), "p_sim_live"] > 0.5
    floor = noise_floor(_summary({}, mins_s, sim_runs), [_summary({}, mins_a, runs), _summary({}, mins_b, runs)])
    assert floor["verdicts"]["ranking"] is False and floor["verdicts"]["per-minute throughput within 10 %"]


def test_the_noise_floor_report_of_run_folders_and_of_shipped_summaries(tmp_path):
    """Three simulated run folders stand in for sim and two live runs; the floor report
    reads folders and summary files alike, and says one line per metric."""
    import json

    from scalelab.cli import main
    from scalelab.experiments.experiment import run_experiment
    from scalelab.experiments.twin import floor_report, run_groups

    cfg = {"name": "fl", "seed": 3, "runs": 2, "steps": 24, "slo_ms": 3000, "app": {"profile": "sandbox"},
           "workload": {"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 13.9, "days": 0.04,
                        "time_compression": 12, "user_scale": 0.1},
           "cluster": {"max_replicas": 3}, "policies": [{"name": "hslinucb"}, {"name": "static", "replicas": 2}]}
    sim = run_experiment({**cfg, "runs": 4}, out=tmp_path, progress=False).path
    a = run_experiment({**cfg, "seed": 4}, out=tmp_path, progress=False).path
    b = run_experiment({**cfg, "seed": 5}, out=tmp_path, progress=False).path
    md = floor_report(sim, [a, b], tmp_path / "floor").read_text()
    for line in ("per-cell p95 quantiles", "per-minute p95 within", "per-minute throughput within",
                 "per-run violations and replica-hours equivalent", "ranking of the policies",
                 "other draws of the same students"):
        assert sum(line in x for x in md.splitlines()) == 1, line
    assert "nan" not in md  # every figure was computed (the simulated sides' minutes line up with live's)
    # the simulated folder cut into sides of a live side's 2 runs, each renumbered from 0
    groups = run_groups(sim, 2)
    assert len(groups) == 2 and all({r["run"] for r in g["runs"]} == {0, 1} for g in groups)
    assert all({m["run"] for m in g["minutes"]} == {0, 1} for g in groups)
    summary = json.loads((tmp_path / "floor" / "summary-live-a.json").read_text())
    assert {r["policy"] for r in summary["runs"]} == {"hslinucb", "static"} and summary["cells"]
    again = floor_report(sim, [tmp_path / "floor" / "summary-live-a.json", tmp_path / "floor" / "summary-live-b.json"],
                         tmp_path / "again").read_text()
    assert again == md  # a shipped summary gives what its run folder gave
    # the CLI: the simulator against two shipped live summaries, no live run
    cfg_file = tmp_path / "fl.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    assert main(["twin", str(cfg_file), "--out", str(tmp_path / "cli"),
                 "--live-summary", str(tmp_path / "floor" / "summary-live-a.json"),
                 "--live-summary", str(tmp_path / "floor" / "summary-live-b.json")]) == 0
    (folder,) = [p for p in (tmp_path / "cli").iterdir() if p.is_dir()]
    cli = (folder / "twin" / "floor.md").read_text()
    assert all(line in cli for line in ("per-cell p95 quantiles", "ranking of the policies"))
    sim_runs = json.loads((folder / "twin" / "summary-sim.json").read_text())["runs"]
    assert len(sim_runs) == 2 * 2 * 2  # 2 policies x (2 runs x 2 live sides): as many as live in all



def test_the_simulator_against_the_live_runs_shipped_with_scalelab(tmp_path, capsys):
    """CI's short twin: ``live-evaluation-week`` simulated against the four live runs of
    it shipped in ``experiments/data/twin/`` (same config and seed): the floor report has
    its verdicts, the figures docs/evaluation-week.md quotes (on ``sandbox-live`` and on
    ``sandbox``); a summary of another experiment is refused, naming both."""
    import json

    import yaml

    from scalelab.cli import main
    from scalelab.experiments.config import config_path
    from scalelab.experiments.twin import shipped_live_summaries

    sides = shipped_live_summaries("live-evaluation-week")
    assert [p.name for p in sides] == [f"summary-live-{x}.json" for x in "abcd"]
    for side in sides:
        shipped = json.loads(side.read_text())
        assert shipped["config"]["name"] == "live-evaluation-week" and shipped["config"]["backend"] == "live"
        assert {r["policy"] for r in shipped["runs"]} == {"hslinucb", "hpa-default", "threshold-cpu"}
    assert main(["twin", "live-evaluation-week", "--runs", "1", "--shipped-live", "--out", str(tmp_path / "t")]) == 0
    (folder,) = [p for p in (tmp_path / "t").iterdir() if p.is_dir()]
    md = (folder / "twin" / "floor.md").read_text()
    for line in ("per-cell p95 quantiles", "per-minute p95 within", "per-minute throughput within",
                 "per-run violations and replica-hours equivalent", "ranking of the policies",
                 "the simulator against itself (it replays the live students"):
        assert sum(line in x for x in md.splitlines()) == 1, line
    sim_runs = json.loads((folder / "twin" / "summary-sim.json").read_text())["runs"]
    assert len(sim_runs) == 3 * 4  # three policies, as many runs as the four live folders together
    # the figures docs/evaluation-week.md quotes from this report are the ones it prints
    assert "sim-live 0.23 [0.07, 0.17], live-live 0.22 [0.00, 0.16]" in md
    assert "sim 22% of minutes, live against live 24%" in md and "sim 83% of minutes, live against live 85%" in md
    assert md.count("**as close as live to itself**") == 3 and "shown for 3 of 6 (policy, metric)" in md
    assert "**farther from live than from another run of itself** (a simulator less noisy than live" in md
    assert "per-cell distance 0.13, minutes whose p95 is within ±10%: 44%" in md
    assert "live against live (B / D against A / C) for 3" in md
    doc = (Path(__file__).parents[1] / "docs" / "evaluation-week.md").read_text()
    assert "| 0.23 [0.07, 0.17] | 0.44 [0.15, 0.40] | 0.22 [0.00, 0.16] |" in doc
    assert "| 22 % | 20 % | 24 % |" in doc and "| 83 % | 80 % | 85 % |" in doc
    assert "| 0.13 per cell, 44 % of minutes | 0.21, 45 % |" in doc
    assert "| 1.0 / 14.2 / 16.8 | 3.2 / 17.8 / 34.5 |" in doc and "| 0.253 / 0.241 / 0.203 |" in doc
    # where they differ, cell by cell (scripts/twin_cells.py): the figures the docs quote
    import runpy
    import sys
    argv, sys.argv = sys.argv, ["twin_cells.py", str(folder)]
    capsys.readouterr()
    try:
        runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "twin_cells.py"), run_name="__main__")
    finally:
        sys.argv = argv
    cells = capsys.readouterr().out
    flat = " ".join(doc.split())
    for band, ratio in (("0-8", "1.01"), ("9-19", "1.14"), ("20-99", "1.19")):
        assert f"students per replica {band}: median q50 live / sim {ratio}" in cells
    assert "the ratios are 1.01 x, 1.14 x and 1.19 x (27 students on one replica)" in flat
    assert "sim 0.600" in cells and "0.600 of the limit simulated" in flat
    # the same on the sandbox profile (the column beside it)
    cfg = yaml.safe_load(config_path("live-evaluation-week").read_text())
    cfg["app"]["profile"] = "sandbox"
    (tmp_path / "sandbox.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["twin", str(tmp_path / "sandbox.yaml"), "--runs", "1", "--out", str(tmp_path / "s"),
                 *[a for p in sides for a in ("--live-summary", str(p))]]) == 0
    (folder,) = [p for p in (tmp_path / "s").iterdir() if p.is_dir()]
    md = (folder / "twin" / "floor.md").read_text()
    assert "sim-live 0.44 [0.15, 0.40]" in md and "sim 20% of minutes" in md and "sim 80% of minutes" in md
    assert "per-cell distance 0.21, minutes whose p95 is within ±10%: 45%" in md
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(sides[0].read_text()), "config": {"name": "paper-coldstart"}}))
    capsys.readouterr()
    assert main(["twin", "live-evaluation-week", "--runs", "1", "--out", str(tmp_path / "u"),
                 "--live-summary", str(other), "--live-summary", str(sides[1])]) == 2
    assert "'paper-coldstart', not 'live-evaluation-week'" in capsys.readouterr().err
    assert main(["twin", "live-evaluation-week", "--runs", "1", "--out", str(tmp_path / "v"),
                 "--live-summary", str(sides[1])]) == 2
    assert "--live-summary needs at least two files" in capsys.readouterr().err


def test_the_runners_simulated_against_their_live_runs_shipped_with_scalelab(tmp_path):
    """The jobs architecture's short twin: ``live-evaluation-week-jobs`` simulated against
    its four shipped live runs (runner processes pulling jobs from the embedded broker); the
    floor's verdicts are the ones docs/evaluation-week.md quotes."""
    import json

    from scalelab.cli import main
    from scalelab.experiments.twin import shipped_live_summaries

    sides = shipped_live_summaries("live-evaluation-week-jobs")
    assert len(sides) == 4
    for side in sides:
        shipped = json.loads(side.read_text())
        assert shipped["config"]["name"] == "live-evaluation-week-jobs" and shipped["config"]["backend"] == "live"
        assert {r["policy"] for r in shipped["runs"]} == {"keda-kafka-5", "hslinucb"}
    assert main(["twin", "live-evaluation-week-jobs", "--runs", "1", "--shipped-live", "--out", str(tmp_path)]) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    md = (folder / "twin" / "floor.md").read_text()
    assert "sim-live 0.20 [0.00, 0.13], live-live 0.21 [0.00, 0.16]" in md
    assert "sim 25% of minutes, live against live 26%" in md and "sim 79% of minutes, live against live 75%" in md
    assert "the same on the simulator and live" in md and "it replays the live students" in md
    assert "per-cell distance 0.19, minutes whose p95 is within ±10%: 41%" in md
    doc = (Path(__file__).parents[1] / "docs" / "evaluation-week.md").read_text()
    assert "| 0.20 [0.00, 0.13] | 0.21 [0.00, 0.16] |" in doc and "| 25 % | 26 % |" in doc and "| 79 % | 75 % |" in doc
    assert "| 0.19 per cell, 41 % of minutes |" in doc


def test_dataset_record_resumes_only_a_live_recording_of_the_same_settings(tmp_path, capsys):
    from scalelab.cli import main

    out = tmp_path / "live.parquet"
    args = ["dataset", "record", "--backend", "live", "--config", "live-evaluation-week", "--users", "5",
            "--replicas", "1", "--out", str(out)]

    def refused(argv):
        code = main(argv)
        return code != 0 and capsys.readouterr().err

    assert "--resume continues a live recording" in refused([*args[:3], "sim", *args[4:], "--resume"])
    assert "no interrupted recording" in refused([*args, "--resume"])
    rows = tmp_path / "live.parquet.rows.jsonl"
    rows.write_text(json.dumps({"users": 5, "replicas": 1, "sample": 0}) + "\n")
    assert "live.parquet.rows.jsonl exists" in refused(args)  # an interrupted recording is not overwritten silently
    write_dataset_meta(out, DatasetMeta(think_s=(0.0, 2.0), source="live"))
    assert "does not record the settings asked for now" in refused([*args, "--resume"])
