"""The calibration reports of ``scalelab calibrate`` (scalelab.experiments.calibration_report):
the acceptance bands, the printed lines and the dataset's setup, on hand-made numbers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from scalelab.experiments import calibration_report as cr
from scalelab.simulator.calibration import CalibrationResult, SampleCalibration
from scalelab.simulator.models import PAPER


def _engines(rows):
    return pd.DataFrame(rows, columns=["demand", "users", "replicas", "utilization", "des_p95_ms", "fluid_p95_ms",
                                       "des_rps", "fluid_rps"])


# (demand, users, replicas, utilisation, des p95, fluid p95, des RPS, fluid RPS)
CELLS = _engines([
    ("fixed-cpu", 10, 1, 0.50, 200.0, 220.0, 20.0, 20.4),   # p95 +10 %, RPS +2 %: within
    ("fixed-cpu", 20, 2, 0.60, 400.0, 320.0, 40.0, 40.0),   # p95 -20 %: outside
    ("fixed-cpu", 30, 4, 0.70, 100.0, 100.0, 10.0, 10.8),   # RPS +8 %: outside
    ("fixed-cpu", 50, 4, 0.95, 800.0, 400.0, 50.0, 50.0),   # -50 %, but at 0.95 utilisation: not checked
])  # fmt: skip


def test_the_bands_pass_a_cell_inside_both_and_fail_one_outside_either():
    t = cr.check_bands(CELLS)
    np.testing.assert_allclose(t.p95_error, [0.1, -0.2, 0.0, -0.5])
    np.testing.assert_allclose(t.rps_error, [0.02, 0.0, 0.08, 0.0])
    assert t.checked.tolist() == [True, True, True, False]
    assert t.within.tolist() == [True, False, False, False]
    assert list(CELLS.columns) == ["demand", "users", "replicas", "utilization", "des_p95_ms", "fluid_p95_ms",
                                   "des_rps", "fluid_rps"]  # the input is left as it was


def test_wider_bands_and_a_higher_utilisation_bound_are_honoured():
    t = cr.check_bands(CELLS, cr.Bands(p95=0.25, rps=0.1, max_utilization=1.0))
    assert t.within.tolist() == [True, True, True, False]
    assert t.checked.all()


def test_the_fluid_lines_flag_each_checked_cell_and_count_those_within():
    lines = cr.fluid_lines(cr.check_bands(CELLS))
    assert lines[0] == ("fixed-cpu    10 users  1 replicas  util 0.50  p95 des    200.0 fluid    220.0 (+10.0%)  "
                        "rps +2.0%  ok")
    assert lines[1].endswith("320.0 (-20.0%)  rps +0.0%  MISS")
    assert lines[2].endswith("100.0 ( +0.0%)  rps +8.0%  MISS")
    assert lines[3].endswith("400.0 (-50.0%)  rps +0.0%  ")  # not checked: no flag
    # the three checked cells' |p95 error|: 0.1, 0.2, 0 -> median 10 %
    assert lines[4] == ("1 of 3 cells below 0.9 utilisation within 15 % (p95) and 5 % (RPS); "
                        "median |p95 error| 10.0%")


def test_fluid_against_des_runs_every_demand_kind_and_judges_the_cells(monkeypatch):
    import scalelab.simulator.validation as validation

    seen = []

    def validate(app, cells, steps, seed):
        seen.append((app.demand.kind, cells, steps, seed))
        return [{"users": 10, "replicas": 1, "utilization": 0.5, "des_p95_ms": 100.0, "fluid_p95_ms": 130.0,
                 "des_rps": 10.0, "fluid_rps": 10.0}]

    monkeypatch.setattr(validation, "validate", validate)
    t = cr.fluid_against_des(PAPER, steps=7, seed=3, cells=[(10, 1)], kinds=["fixed-cpu", "exponential"])
    assert seen == [("fixed-cpu", [(10, 1)], 7, 3), ("exponential", [(10, 1)], 7, 3)]
    assert t.demand.tolist() == ["fixed-cpu", "exponential"]
    assert t.p95_error.round(6).tolist() == [0.3, 0.3] and not t.within.any()


def test_the_means_lines():
    table = pd.DataFrame({"users": [10, 50], "containers": [1, 4], "mean_p95_ms": [200.0, 500.0],
                          "sim_p95_ms": [210.0, 400.0]})
    table["error"] = (table.sim_p95_ms - table.mean_p95_ms) / table.mean_p95_ms
    res = CalibrationResult(table=table, median_abs_error=0.125, max_abs_error=0.2)
    assert cr.means_lines(res, min_steps=100) == [
        " 10 users  1 replicas  paper   200.0 ms  sim   210.0 ms   +5.0%",
        " 50 users  4 replicas  paper   500.0 ms  sim   400.0 ms  -20.0%",
        "median |error| 12.5%, max |error| 20.0% over 2 cells with >= 100 steps",
    ]


def _samples() -> SampleCalibration:
    t = pd.DataFrame({"users": [5, 40], "replicas": [1, 1], "data_q10": [90.0, 700.0], "sim_q10": [95.0, 650.0],
                      "data_q50": [100.0, 900.0], "sim_q50": [110.0, 800.0], "data_q90": [120.0, 1500.0],
                      "sim_q90": [126.0, 1200.0], "data_above": [0.0, 1.0], "sim_above": [0.05, 0.9],
                      "saturated": [False, True]})
    return SampleCalibration(table=t, median_q_error=0.075, mean_above_error=0.05, mean_error=0.1,
                             worst_q_error=0.1, worst_above_error=0.05)


def test_the_sample_lines_mark_saturated_cells_and_count_the_others():
    target = cr.SampleTarget(PAPER, score=None, label="dataset d.parquet (sim)", slo_ms=600.0)
    before = SampleCalibration(table=_samples().table, median_q_error=0.3, mean_above_error=0.2, mean_error=0.3,
                               worst_q_error=0.5, worst_above_error=0.4)
    lines = cr.sample_lines(_samples(), target, before)
    assert lines == [
        "  5 users  1 replicas  q50 data   100.0 sim   110.0  q90 data   120.0 sim   126.0  above 600 ms data 0.00 "
        "sim 0.05",
        " 40 users  1 replicas  q50 data   900.0 sim   800.0  q90 data  1500.0 sim  1200.0  above 600 ms data 1.00 "
        "sim 0.90  (saturated)",
        "before the fit: median |quantile error| 30.0%, worst 50.0%",
        "against dataset d.parquet (sim) (1 cells not saturated of 2): |quantile error| median 7.5%, worst 10.0%; "
        "|error of the fraction above 600 ms| mean 0.050, worst 0.050",
        "against the means (the old criterion, same cells): median |error| 10.0%",
    ]
    assert "before the fit" not in "\n".join(cr.sample_lines(_samples(), target))


def test_a_dataset_target_takes_the_replicas_slo_and_cells_the_dataset_recorded(tmp_path, monkeypatch):
    import scalelab.simulator.calibration as calibration
    from scalelab.simulator.datasets import DatasetMeta, write_dataset_meta
    from scalelab.simulator.replay import CONTEXT_COLUMNS

    frame = pd.DataFrame({**dict.fromkeys(CONTEXT_COLUMNS, 0.5), "users": [5, 5, 5, 10], "replicas": [1, 1, 1, 2],
                          "sample": [1, 0, 2, 0], "p95_ms": [300.0, 200.0, 999.0, 400.0],
                          "missing": ["", "", "rps", ""]})
    path = tmp_path / "d.parquet"
    frame.to_parquet(path, index=False)
    write_dataset_meta(path, DatasetMeta(think_s=(1.0, 3.0), slo_ms=900.0, source="live",
                                         replica={"cpu_limit": 0.5, "cpu_request": 0.5}))
    calls = []
    monkeypatch.setattr(calibration, "compare_cells", lambda app, cells, settings, context, **kw: calls.append(
        (app, cells, settings, kw)))
    target = cr.dataset_samples(PAPER, path, steps=11, seed=2)
    assert (target.label, target.slo_ms) == ("dataset d.parquet (live)", 900.0)
    assert (target.app.cpu_limit, target.app.cpu_request) == (0.5, 0.5)
    assert cr.dataset_samples(PAPER, path, steps=11, slo_ms=600.0).slo_ms == 600.0

    other = PAPER.with_overrides(overhead_ms=1.0)
    target.score(other)
    (app, cells, settings, kw) = calls[0]
    assert app is other and sorted(cells) == [(5, 1), (10, 2)]
    np.testing.assert_array_equal(cells[(5, 1)], [200.0, 300.0])  # in sample order, the missing-signal one left out
    assert (settings.think_low_s, settings.think_high_s) == (1.0, 3.0)
    assert kw["steps"] == 11 and kw["seed"] == 2 and kw["slo_ms"] == 900.0
    assert kw["utilization"] == {(5, 1): 0.5, (10, 2): 0.5}


@pytest.mark.parametrize("which", ["means", "samples", "fluid"])
def test_each_figure_is_written_with_its_table_beside_it(tmp_path, which):
    out = tmp_path / f"{which}.png"
    if which == "means":
        table = pd.DataFrame({"users": [10, 20], "containers": [1, 1], "mean_p95_ms": [200.0, 500.0],
                              "sim_p95_ms": [210.0, 400.0], "error": [0.05, -0.2]})
        png, csv = cr.write_means(CalibrationResult(table, 0.125, 0.2), "paper", out)
    elif which == "samples":
        table = _samples().table
        png, csv = cr.write_samples(_samples(), cr.SampleTarget(PAPER, None, "x", 600.0), "paper", out)
    else:
        table = cr.check_bands(CELLS)
        png, csv = cr.write_fluid(table, "paper", out)
    assert png == out and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5_000
    assert csv == out.with_suffix(".csv")
    pd.testing.assert_frame_equal(pd.read_csv(csv), table.reset_index(drop=True), check_dtype=False)


def test_the_samples_figures_legend_covers_no_bar():
    """The legend sits in headroom above the highest bar: drawn, its box overlaps no
    q10-q90 bar and no median dot of either side (read from the figure's own artists)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = 12  # the live recording's shape: the first cells' bars reach highest, where the legend goes
    q10, q90 = np.full(n, 400.0), np.r_[[10_000.0, 9_000.0, 8_000.0], np.full(n - 3, 3_000.0)]
    t = pd.DataFrame({"users": np.arange(n) + 1, "replicas": 1, "data_q10": q10, "sim_q10": q10 * 1.2,
                      "data_q50": q10 * 2, "sim_q50": q10 * 2.2, "data_q90": q90, "sim_q90": q90 * 0.9,
                      "data_above": 0.0, "sim_above": 0.0, "saturated": False})
    res = replace(_samples(), table=t)
    fig = cr.samples_figure(res, cr.SampleTarget(PAPER, None, "x", 600.0), "paper")
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    left = fig.axes[0]
    box = left.get_legend().get_window_extent()
    points = [seg for coll in left.collections for path in coll.get_segments() for seg in path]
    points += [xy for line in left.lines if line.get_marker() == "o" for xy in line.get_xydata()]
    assert len(points) >= 3 * len(res.table)
    shown = left.transData.transform(np.array(points, dtype=float))
    assert not any(box.contains(x, y) for x, y in shown)
    # and the bars are all inside the axes
    low, high = left.get_ylim()
    assert low <= res.table.data_q10.min() and res.table.sim_q90.max() * 2 < high


def test_the_fluid_figure_holds_every_cell_with_plain_log_ticks():
    """One kind's p95 is 100x the other's: each panel holds its own cells, and its log
    ticks are full numbers (``1,000``, not ``10³``)."""
    table = cr.check_bands(pd.DataFrame({"demand": ["a", "a", "b", "b"], "users": [1, 2, 1, 2],
                                         "replicas": [1, 1, 1, 1], "utilization": [0.2, 0.5, 0.2, 0.5],
                                         "des_p95_ms": [90.0, 120.0, 9000.0, 30000.0],
                                         "fluid_p95_ms": [100.0, 110.0, 7000.0, 33000.0],
                                         "des_rps": [1.0] * 4, "fluid_rps": [1.0] * 4}))
    fig = cr.fluid_figure(table, "sandbox")
    for ax, (_, g) in zip(fig.axes, table.groupby("demand", sort=False), strict=True):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert (x0 < g.des_p95_ms.min()) and (g.des_p95_ms.max() < x1)
        assert (y0 < g.fluid_p95_ms.min()) and (g.fluid_p95_ms.max() < y1)
        labels = [t.get_text() for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        assert labels and all(lab.replace(",", "").isdigit() for lab in labels), labels
        assert "log scale" in ax.get_xlabel()



def test_calibrate_never_replaces_its_files_without_force(tmp_path, capsys, monkeypatch):
    """``scalelab calibrate --out FILE`` refuses, before any work, a figure or table that
    exists, naming it; ``--force`` replaces them."""
    from scalelab.cli import main

    out = tmp_path / "fluid.png"
    args = ["calibrate", "--engine", "fluid", "--profile", "paper", "--steps", "3", "--out", str(out)]
    monkeypatch.setattr(cr, "fluid_against_des", lambda app, steps, seed: cr.check_bands(CELLS.assign(demand="x")))
    assert main(args) == 0 and out.is_file() and out.with_suffix(".csv").is_file()
    assert "plot " + str(out) in capsys.readouterr().out
    before = out.stat().st_mtime_ns
    assert main(args) == 2
    assert f"{out}, {out.with_suffix('.csv')} exist: pass --force" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before
    assert main([*args, "--force"]) == 0


def test_the_two_calibrations_keep_their_own_default_figures(tmp_path, capsys, monkeypatch):
    """The README runs ``scalelab calibrate`` then ``scalelab calibrate --engine fluid``
    in one folder: the second writes calibration-fluid.png, not refused by the first's."""
    from scalelab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "calibration.png").write_bytes(b"the DES calibration's figure")
    monkeypatch.setattr(cr, "fluid_against_des", lambda app, steps, seed: cr.check_bands(CELLS.assign(demand="x")))
    assert main(["calibrate", "--engine", "fluid", "--profile", "paper", "--steps", "3"]) == 0
    assert (tmp_path / "calibration-fluid.png").is_file() and (tmp_path / "calibration-fluid.csv").is_file()
    assert (tmp_path / "calibration.png").read_bytes() == b"the DES calibration's figure"
