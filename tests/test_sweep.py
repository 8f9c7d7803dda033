"""``scalelab sweep``: grid parsing, cells, skip on re-run, a failed cell does not stop the
others, the leaderboard's ranks by hand, and a Dask ``LocalCluster`` giving the local
executor's results element by element (3 policies x 3 seeds x 2 workloads)."""

from __future__ import annotations

import pandas as pd
import pytest

from scalelab.experiments.metrics import pareto_ranks as _pareto_ranks
from scalelab.experiments.sweep import SweepError, _banded_rank, cell_config, cells, parse_grid, run_sweep

BASE = {
    "name": "sweep-test", "backend": "sim", "engine": "fluid", "seed": 1, "runs": 2, "step_seconds": 5,
    "slo_ms": 2000, "workload": {"kind": "step", "before": 2, "after": 10, "at_s": 120, "duration_s": 360},
    "app": {"profile": "sandbox"}, "cluster": {"min_replicas": 1, "max_replicas": 8, "initial_replicas": 1},
    "policies": [{"name": "hslinucb"}, {"name": "hpa", "behavior": "default", "target_utilization": 80},
                 {"name": "threshold-cpu", "cpu_request": 1.0, "threshold_m": 940}],
}  # fmt: skip
GRID = ["policy=hslinucb,hpa,threshold-cpu", "seed=1,2,3", "workload.after=10,20"]


def test_grid_items_parse_and_multiply():
    grid = parse_grid(GRID)
    assert grid == {"policy": ["hslinucb", "hpa", "threshold-cpu"], "seed": [1, 2, 3], "workload.after": [10, 20]}
    all_cells = cells(grid)
    assert len(all_cells) == 18 and len({c.name for c in all_cells}) == 18
    data = cell_config(BASE, all_cells[-1])
    assert data["seed"] == 3 and data["workload"]["after"] == 20 and [p["name"] for p in data["policies"]] == [
        "threshold-cpu"]
    assert BASE["workload"]["after"] == 10  # the base is left alone
    for bad, words in ((["seed"], "is not KEY=V1,V2"), (["seed=1", "seed=2"], "given twice")):
        with pytest.raises(SweepError, match=words):
            parse_grid(bad)
    with pytest.raises(SweepError, match="policy='nope' is not one of"):
        cell_config(BASE, cells({"policy": ["nope"]})[0])


def test_pareto_and_banded_ranks_by_hand():
    v = [10.0, 5.0, 5.0, 20.0]
    c = [1.0, 2.0, 1.05, 0.5]
    # 1 is dominated by 2 (same violations, lower cost); 0, 2 and 3 are on the front
    assert list(_pareto_ranks(pd.Series(v).to_numpy(), pd.Series(c).to_numpy())) == [1, 2, 1, 1]
    # violations at equal cost (within 10 %): 0 and 2 compete (costs 1.0, 1.05), 2 wins
    assert list(_banded_rank(pd.Series(v).to_numpy(), pd.Series(c).to_numpy(), 0.1)) == [2, 1, 1, 1]


def test_a_failed_cell_is_reported_and_the_others_finish_and_a_rerun_skips_them(tmp_path):
    with pytest.raises(SweepError, match=r"unknown key 'cluster\.max_replica'"):
        run_sweep(BASE, {"cluster.max_replica": [3]}, tmp_path / "checked")  # configs checked before any run
    grid = {"policy": ["hslinucb"], "app.cpu_request": [0.5, -1]}  # -1: refused when the cell runs (the profile)
    res = run_sweep(BASE, grid, tmp_path / "s", workers=1)
    assert len(res.ran) == 1 and len(res.failed) == 1
    (name, reason), = res.failed.items()
    assert "cpu_request=-1" in name and "cpu_request" in reason
    assert "cpu_request" in (tmp_path / "s" / "cells" / f"{name}.error").read_text()
    assert len(res.table) == 2  # the finished cell's 2 runs are in the table
    again = run_sweep(BASE, grid, tmp_path / "s", workers=1)
    assert again.skipped == res.ran and list(again.failed) == [name]  # done cells are not run again


def test_dask_gives_the_local_executors_results_element_by_element(tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = parse_grid(GRID)
    local = run_sweep(BASE, grid, tmp_path / "local", executor="local", workers=2)
    assert not local.failed and len(local.ran) == 18
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        dask = run_sweep(BASE, grid, tmp_path / "dask", executor="dask", scheduler=lc.scheduler_address)
    assert not dask.failed and len(dask.ran) == 18
    key = ["cell", "policy", "run"]
    a = local.table.sort_values(key).reset_index(drop=True)
    b = dask.table.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(a) == 18 * 2  # 2 runs per cell
    pd.testing.assert_frame_equal(local.leaderboard, dask.leaderboard, check_exact=True)
    assert set(local.leaderboard.policy) == {"hslinucb", "hpa", "threshold-cpu"}
    assert (tmp_path / "dask" / "leaderboard.md").read_text().startswith("# Leaderboard")
