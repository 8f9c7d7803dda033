"""Figures that do not mislead, checked from their own axes: every plotted value of every
policy lies inside the axes that draw it, also when one policy's values dwarf the others'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scalelab import read_steps
from scalelab.experiments.experiment import run_experiment


@pytest.fixture(scope="module")
def dwarfing_steps(tmp_path_factory) -> pd.DataFrame:
    """Three policies' steps, the last one's p95 multiplied by 40 (as linucb's 42,008 ms
    beside hslinucb's 13,000 in compare)."""
    cfg = {"name": "fig", "seed": 2, "runs": 2, "steps": 60, "slo_ms": 600,
           "workload": {"kind": "step", "before": 5, "after": 25, "at_s": 100, "duration_s": 300},
           "cluster": {"max_replicas": 6},
           "policies": [{"name": "hslinucb"}, {"name": "static", "replicas": 3}, {"name": "static", "replicas": 1,
                                                                                    "label": "starved"}]}
    res = run_experiment(cfg, out=tmp_path_factory.mktemp("fig"), progress=False)
    steps = read_steps(res.path)
    steps.loc[steps.policy == "starved", "p95_ms"] *= 40.0
    return steps


def _inside(ax, values: np.ndarray) -> np.ndarray:
    lo, hi = ax.get_ylim()
    v = values[np.isfinite(values) & (values > 0 if ax.get_yscale() == "log" else True)]
    return v[(v < lo) | (v > hi)]


def test_every_p95_panel_holds_every_value_it_draws(dwarfing_steps):
    from scalelab.experiments.report import p95_figure

    fig = p95_figure(dwarfing_steps, 600.0)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left").split(":")[0] for ax in panels] == ["hslinucb", "static", "starved"]
    for ax in panels:
        drawn = [line.get_ydata() for line in ax.get_lines()]
        drawn += [c.get_paths()[0].vertices[:, 1] for c in ax.collections if c.get_paths()]
        for values in drawn:
            outside = _inside(ax, np.asarray(values, float))
            assert outside.size == 0, (ax.get_title(loc="left"), ax.get_ylim(), outside[:5])
    starved = dwarfing_steps[dwarfing_steps.policy == "starved"].p95_ms.max()
    assert panels[0].get_ylim()[1] >= starved  # the shared range reaches the largest policy's values


def test_p95_ticks_are_full_numbers(dwarfing_steps):
    from scalelab.experiments.report import p95_figure

    fig = p95_figure(dwarfing_steps, 600.0)
    fig.canvas.draw()
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()}
    assert {"1,000", "10,000"} <= labels and not any("^" in t for t in labels), labels


def test_every_replicas_panel_and_the_load_hold_every_value_they_draw(dwarfing_steps):
    """replicas.png with one policy at ten times the others' replicas (shared panels):
    every step line and oracle band inside every panel; load.png holds the load."""
    from scalelab.experiments.report import load_figure, replicas_figure

    steps = dwarfing_steps.copy()
    steps.loc[steps.policy == "starved", "replicas"] *= 10
    fig = replicas_figure(steps)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels] == ["hslinucb", "static", "starved"]
    for ax in panels:
        drawn = [line.get_ydata() for line in ax.get_lines()]
        drawn += [c.get_paths()[0].vertices[:, 1] for c in ax.collections if c.get_paths()]
        assert drawn
        for values in drawn:
            assert _inside(ax, np.asarray(values, float)).size == 0, (ax.get_title(loc="left"), ax.get_ylim())
    assert panels[0].get_ylim()[1] >= steps.replicas.max() * 0.99  # bins average, so the max may be a little lower
    (ax,) = load_figure(steps).axes
    (line,) = ax.get_lines()
    users = np.asarray(line.get_ydata(), float)
    assert users.max() == 25 and _inside(ax, users).size == 0 and ax.get_ylabel().startswith("load")


def test_zoom_draws_the_load_on_its_own_axis(dwarfing_steps):
    """The load (25 users) is on an axis of its own, not on the replicas' (1 to 6)."""
    from scalelab.experiments.report import zoom_figure

    fig = zoom_figure(dwarfing_steps)
    replica_axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title(loc="left")]
    load_axes = [ax for ax in fig.axes if ax not in replica_axes and ax.get_lines()]
    assert len(load_axes) == len(replica_axes) == 3
    for ax in replica_axes:
        for line in ax.get_lines():
            values = np.asarray(line.get_ydata(), float)
            assert _inside(ax, values).size == 0
            assert values.size == 0 or np.nanmax(values) <= 6.5  # replicas, or the violation ticks below 0
    for ax in load_axes:
        (line,) = ax.get_lines()
        users = np.asarray(line.get_ydata(), float)
        assert users.max() == 25 and _inside(ax, users).size == 0


def _summary_rows(spec: dict) -> pd.DataFrame:
    """A summary frame: policy -> (replica-hours mean, ci, violations mean, ci)."""
    return pd.DataFrame([{"policy": p, "runs": 3, "replica_hours": {"mean": x, "ci95": cx},
                          "violations_per_run": {"mean": y, "ci95": cy}} for p, (x, cx, y, cy) in spec.items()])


def test_tradeoff_draws_no_interval_to_the_frame_and_hides_no_point():
    """On a log cost axis an interval whose lower end is <= 0 is not drawn to the frame's
    edge (it read as a reference line): a left triangle says it reaches 0; every
    interval end and every point is inside the axes; a point at 0 violations is drawn
    over the others' bars."""
    from scalelab.experiments.report import tradeoff_figure

    summary = _summary_rows({"cheap": (0.5, 0.2, 40.0, 10.0), "noisy": (2.0, 3.5, 5.0, 9.0),
                             "dear": (20.0, 4.0, 0.0, 0.0), "mid": (6.0, 1.0, 1.0, 2.5)})
    fig = tradeoff_figure(summary)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for coll in ax.collections:  # the error bars
        for seg in coll.get_segments():
            assert (seg[:, 0] > x0).all() and (seg[:, 0] < x1).all(), seg
            assert (seg[:, 1] >= y0).all() and (seg[:, 1] <= y1).all(), seg
    assert y0 < 0.0  # a point at 0 violations sits inside the frame, not on its edge
    triangles = [line for line in ax.get_lines() if line.get_marker() == "<" and len(line.get_xdata())]
    assert len(triangles) == 1 and triangles[0].get_ydata()[0] == 5.0  # noisy's interval reaches 0
    bar_z = max(c.get_zorder() for c in ax.collections)
    dear = [line for line in ax.get_lines() if line.get_label() == "dear"]
    assert dear and dear[0].get_zorder() > bar_z


def test_the_tradeoff_title_fits_in_the_figure():
    """The title (runs, what filled means) is inside the figure, not cut at its edges."""
    from scalelab.experiments.report import tradeoff_figure

    fig = tradeoff_figure(_summary_rows({"a": (1.0, 0.1, 3.0, 1.0), "b": (2.0, 0.2, 1.0, 0.5)}))
    fig.canvas.draw()
    title = fig.axes[0].title.get_window_extent()
    frame = fig.bbox
    assert frame.x0 <= title.x0 and title.x1 <= frame.x1 and title.y1 <= frame.y1, (title, frame)


def test_tradeoff_of_policies_that_never_violate_has_a_frame():
    """Every policy at 0 violations (an easy load): the violations axis still spans
    something (it was [0, 0], a singular transform matplotlib warns about)."""
    import warnings

    from scalelab.experiments.report import tradeoff_figure

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = tradeoff_figure(_summary_rows({"a": (1.0, 0.1, 0.0, 0.0), "b": (2.0, 0.0, 0.0, 0.0)}))
    lo, hi = fig.axes[0].get_ylim()
    assert lo < 0.0 < hi


def test_the_interactive_tradeoff_holds_every_interval_with_full_number_ticks_and_no_overlapping_names():
    """The interactive trade-off (report.html), from the same fixture as the PNG's test:
    a log cost axis whose ticks are full numbers (no bare "2" meaning 20); every mean and
    every bar's end inside the axes' ranges; the interval that reaches 0 stops at its mean
    with a triangle saying so; no text on the points (names overlapped), each policy named
    in the legend with its own marker."""
    import math

    from scalelab.experiments.report import interactive_tradeoff, policy_styles

    summary = _summary_rows({"cheap": (0.5, 0.2, 40.0, 10.0), "noisy": (2.0, 3.5, 5.0, 9.0),
                             "dear": (20.0, 4.0, 0.0, 0.0), "mid": (6.0, 1.0, 1.0, 2.5)})
    summary["p95_ms"] = [{"mean": 500.0, "ci95": 1.0}] * 4
    summary["scale_changes_per_run"] = [{"mean": 3.0, "ci95": 1.0}] * 4
    fig = interactive_tradeoff(summary, policy_styles(summary.policy))
    xaxis, yaxis = fig.layout.xaxis, fig.layout.yaxis
    assert xaxis.type == "log"
    assert list(xaxis.ticktext) == [f"{v:,.0f}" if v >= 1 else f"{v:g}" for v in xaxis.tickvals]
    assert "0.5" in xaxis.ticktext and "20" in xaxis.ticktext and "2" in xaxis.ticktext
    (x_lo, x_hi), (y_lo, y_hi) = (10 ** v for v in xaxis.range), yaxis.range
    points = [tr for tr in fig.data if tr.mode == "markers" and tr.name in set(summary.policy)]
    assert [tr.name for tr in points] == list(summary.policy)
    assert len({tr.marker.symbol.replace("-open", "") for tr in points}) == 4
    assert not any(tr.text for tr in fig.data) and all("text" not in (tr.mode or "") for tr in fig.data)
    for tr in points:
        x, y = tr.x[0], tr.y[0]
        left, right = x - tr.error_x.arrayminus[0], x + tr.error_x.array[0]
        low, high = y - tr.error_y.arrayminus[0], y + tr.error_y.array[0]
        assert x_lo < left <= x <= right < x_hi, tr.name
        assert y_lo < low <= y <= high < y_hi, tr.name
        assert low >= 0.0 and left > 0.0
    noisy = next(tr for tr in points if tr.name == "noisy")
    assert noisy.error_x.arrayminus[0] == 0.0  # 2.0 - 3.5 < 0: the bar stops at the mean
    (reach,) = [tr for tr in fig.data if tr.name.startswith("interval reaches 0")]
    assert list(reach.y) == [5.0] and math.isclose(reach.x[0], 2.0 / 1.18)


def test_the_interactive_timelines_show_one_policy_alone_and_keep_the_load_oracle_and_slo():
    """The menu of the interactive time series: "all policies", then one view per policy
    showing its two traces (replicas, p95) beside the load and the oracle's level; the
    SLO line stays (a shape, in every view); the p95 axis is log with full numbers."""
    from scalelab.experiments.report import interactive_timelines, policy_styles

    t = np.arange(0, 3600, 5.0)
    frames = []
    for k, pol in enumerate(("a", "b", "c")):
        frames.append(pd.DataFrame({"policy": pol, "run": 0, "t_s": t, "step": np.arange(t.size),
                                    "replicas": 1 + k, "oracle_replicas": 2, "users": 10.0,
                                    "p95_ms": 100.0 * (10 ** k), "violation": False}))
    steps = pd.concat(frames, ignore_index=True)
    fig = interactive_timelines(steps, policy_styles(["a", "b", "c"]), 600.0)
    (menu,) = fig.layout.updatemenus
    labels = [b.label for b in menu.buttons]
    assert labels == ["all policies", "a", "b", "c"]
    names = [tr.name for tr in fig.data]
    for button in menu.buttons[1:]:
        shown = {n for n, v in zip(names, button.args[0]["visible"], strict=True) if v}
        assert shown == {button.label, "load", "oracle level"}, (button.label, shown)
    assert all(menu.buttons[0].args[0]["visible"])
    assert any(s.y0 == 600.0 and s.line.color == "red" for s in fig.layout.shapes)
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis2.tickformat == ",.0f"


def test_the_comparison_of_run_folders_keeps_small_violations_readable_beside_huge_ones():
    """Run folders compared (``scalelab report A B``, ``scalelab architectures``): when one
    folder's violations are thousands of times another's, the axis is symmetric-log with
    plain ticks, so the tens are not drawn at 0; otherwise it stays linear from 0."""
    import pandas as pd

    from scalelab.experiments.metrics import with_pareto_ranks
    from scalelab.experiments.report import comparison_figure

    def row(folder, policy, v, c):
        return {"folder": folder, "policy": f"{folder} {policy}", "base_policy": policy, "runs": 5,
                "violations_per_run": {"mean": v, "ci95": 1.0}, "replica_hours": {"mean": c, "ci95": 1.0}}

    wide = with_pareto_ranks(pd.DataFrame([row("A", "hpa", 40.0, 130.0), row("A", "hslinucb", 25.0, 190.0),
                                           row("B", "keda-scaledjob", 70000.0, 120.0)]))
    ax = comparison_figure(wide, ["A", "B"]).axes[0]
    assert ax.get_yscale() == "symlog"
    lo, hi = ax.get_ylim()
    assert lo <= 25.0 / 2 and hi >= 70000.0
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "10,000" in labels and "10" in labels and not any("^" in t or "times" in t for t in labels)
    narrow = with_pareto_ranks(pd.DataFrame([row("A", "hpa", 40.0, 130.0), row("B", "hpa", 0.0, 190.0)]))
    ax = comparison_figure(narrow, ["A", "B"]).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
