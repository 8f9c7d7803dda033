"""The paper reproduced on its own measurements: the paper-D1 dataset, the paper's
replay semantics, its learners, and the cold-start figures pinned within issue 13's
targets (10 runs on the replay: about 20 s)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.agent.policies.paper_learners import DQN, QLearning
from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.paper import TARGETS, checks, comparison, markdown_table
from scalelab.orchestrator.backend import VirtualClock
from scalelab.orchestrator.context import Context
from scalelab.simulator.backends import ReplayBackend
from scalelab.simulator.datasets import resolve_dataset
from scalelab.simulator.recordings import read_p95_recording
from scalelab.simulator.replay import DatasetError, Replay


def test_paper_d1_serves_the_papers_samples_and_says_where_each_came_from():
    rec = read_p95_recording()
    data = resolve_dataset("paper-D1")
    assert rec.name == "D1" and len(rec.cells) == 39 and rec.known == 726
    assert len(data) == 10 * 10 * 20 and (data.source == "D1").sum() == 726
    cell = data[(data.users == 25) & (data.replicas == 2)].sort_values("sample")
    assert cell.p95_ms.tolist() == list(rec.cells[(25, 2)])  # every position known, in the replay's order
    assert (cell.p95_ms > 600).mean() == pytest.approx(0.40)  # paper.md 8.11
    hole = data[(data.users == 20) & (data.replicas == 1)]  # 18 of 20 positions unknown
    assert (hole.source == "simulator:paper").sum() == 18 and (hole.source == "D1").sum() == 2
    unseen = data[(data.users == 50) & (data.replicas == 1)]  # never visited by the paper's agents
    assert set(unseen.source) == {"simulator:paper"}


def test_paper_d2_is_filled_by_a_profile_fitted_to_its_own_samples():
    rec = read_p95_recording(shipped="D2")
    data = resolve_dataset("paper-D2")
    assert rec.name == "D2" and len(rec.cells) == 32 and rec.samples_per_cell == 40
    assert len(data) == 10 * 10 * 40 and (data.source == "D2").sum() == rec.known
    assert set(data.source) == {"D2", "simulator:paper-D2"}
    # the paper (section 5): D2 needs more replicas than D1 -- 10 users: 2, 35: 4, 45: 5
    cells = data.groupby(["users", "replicas"]).p95_ms
    meets = ((cells.mean() <= 600) & (cells.max() <= 600)).rename("meets").reset_index()
    fewest = meets[meets.meets].groupby("users").replicas.min()
    assert (fewest[10], fewest[35], fewest[45]) == (2, 4, 5)


def test_a_file_with_a_shipped_recordings_samples_uses_its_profile_and_another_gets_its_own_fit(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCALELAB_FITS", str(tmp_path / "fits"))
    copy = tmp_path / "copy.json"
    copy.write_text((Path(__file__).resolve().parents[1] / "simulator" / "data" / "paper-D2-p95.json").read_text())
    assert resolve_dataset(str(copy)).equals(resolve_dataset("paper-D2"))  # the same samples: D2's own profile
    one = {"dataset": "X", "samples_per_cell": 12,
           "cells": [{"users": 20, "replicas": 2, "samples_ms": [900.0 + 10 * k for k in range(12)]}]}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(one))
    data = resolve_dataset(str(path))
    (fitted,) = {s for s in data.source if s.startswith("simulator:")}
    assert fitted.startswith("simulator:fitted-") and "fitting a profile" in capsys.readouterr().err
    assert resolve_dataset(str(path)).equals(data) and capsys.readouterr().err == ""  # read from the cache


def test_a_p95_file_in_the_same_format_is_a_dataset_and_bad_ones_are_named(tmp_path):
    good = {"dataset": "D2", "samples_per_cell": 2, "cells": [{"users": 5, "replicas": 1, "samples_ms": [111.0, None]}]}
    path = tmp_path / "d2.json"
    path.write_text(json.dumps(good))
    data = resolve_dataset(str(path))
    cell = data[(data.users == 5) & (data.replicas == 1)].sort_values("sample")
    assert cell.p95_ms.iloc[0] == 111.0 and cell.source.tolist() == ["D2", "simulator:paper"]  # too few to fit
    bad = {**good, "cells": [{"users": 5, "replicas": 1, "samples_ms": [111.0, "fast"]}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"cells\[0\] \(5 users, 1 replicas\): samples_ms\[1\]='fast'"):
        resolve_dataset(str(path))
    path.write_text(json.dumps({**good, "samples_per_cell": 3}))
    with pytest.raises(DatasetError, match="a list of 3 numbers"):
        resolve_dataset(str(path))
    with pytest.raises(DatasetError, match="neither a file nor one of"):
        resolve_dataset("D1")


def test_replay_positions_carry_over_between_runs_and_the_first_step_draws_twice():
    data = resolve_dataset("paper-D1")
    cell = list(read_p95_recording().cells[(25, 2)])
    replay = Replay(data, 1, 10, 2)
    first = ReplayBackend(replay, VirtualClock(), first_draws=2)
    first.set_load(25)
    assert first.observe().context.p95_ms == cell[1]  # positions 0 and 1 drawn, 1 observed
    assert first.observe().context.p95_ms == cell[2]
    replay.restart(keep_index=True)  # the next run of the same notebook
    second = ReplayBackend(replay, VirtualClock(), first_draws=2)
    second.set_load(25)
    assert second.observe().context.p95_ms == cell[4]
    replay.restart(keep_index=False)
    assert replay.context(25).p95_ms == cell[0]


def test_paper_q_learning_keys_and_its_near_zero_bootstrap_by_hand():
    q = QLearning(paper=True, seed=0)
    s = Context(2, 249.0, 21.0, 0.44, 0.44, 0.36, 0.36)
    assert q.state_key(s) == (2, 200, 20, 4, 4)  # replicas, p95 to 100, rps to 10, ratios to 0.1 (x10)
    nxt = Context(1, 312.4, 23.4, 0.7, 0.7, 0.3, 0.3)
    assert q.state_key(nxt) == (1, 300, 20, 7, 3)
    assert q.next_state_key(nxt) == (1, 312, 23, 7, 3)  # unrounded p95 and rps (to units)
    q.q[q.state_key(nxt)] = [5.0, 5.0]  # the rounded key of nxt: never looked up
    q.update(s, QLearning.DOWN, reward=0.0, next_context=nxt)  # down removed a replica, 300 ms: r = 1
    assert q.q[q.state_key(s)][0] == pytest.approx(0.1 * 1.0)
    q.q[(1, 312, 23, 7, 3)] = [0.0, 2.0]  # a visited state whose key happens to match
    q.update(s, QLearning.DOWN, reward=0.0, next_context=nxt)
    assert q.q[q.state_key(s)][0] == pytest.approx(0.1 + 0.1 * (1.0 + 0.9 * 2.0 - 0.1))
    # both values 0: a random action even when greedy; otherwise the first maximum
    fresh = QLearning(paper=True, greedy_start=1.0, seed=1)
    picks = {fresh.decide(Context(3, 100.0, 5.0, 0.1, 0.1, 0.2, 0.2)).action for _ in range(40)}
    assert picks == {0, 1}
    fresh.q[fresh.state_key(Context(3, 100.0, 5.0, 0.1, 0.1, 0.2, 0.2))] = [1.0, 1.0]
    assert {fresh.decide(Context(3, 100.0, 5.0, 0.1, 0.1, 0.2, 0.2)).action for _ in range(20)} == {0}


def test_paper_dqn_never_refreshes_its_target_trains_on_4_of_5_and_cleans_every_500():
    dqn = DQN(paper=True, seed=3)
    target = [w.copy() for w in dqn.target.W]
    rng = np.random.default_rng(0)
    for k in range(620):
        c = Context(int(rng.integers(1, 5)), float(rng.uniform(100, 500)), 10.0, 0.5, 0.1, 0.3, 0.1)
        dqn.update(c, int(k % 2), 0.0, c)  # stay: next = this context, as the notebook stored it
    # observe k trains when k % 5 != 0 and the memory holds a batch (from k = 49): 4 of 5
    assert dqn.trained == sum(1 for k in range(49, 620) if k % 5)
    assert all(np.array_equal(a, b) for a, b in zip(target, dqn.target.W, strict=True))
    assert len(dqn.paper_memory) == len(set(dqn.paper_memory[:-120])) + 120  # de-duplicated at 500, not since
    x = dqn.features(Context(10, 20000.0, 100.0, 0.5, 0.1, 0.3, 0.1))
    np.testing.assert_allclose(x, [1.0, 1.0, 1.0, 0.5, 0.1, 0.3, 0.1])  # replicas/10, p95/20000, rps/100


def test_the_checks_hold_ours_to_the_papers_figures_by_hand():
    """Issue 13's targets against the paper's figures (docs/hslinucb.md): known answers,
    each target on both sides of its bound."""
    rows = [("paper-coldstart", "hslinucb", 8.0, 3.12), ("paper-coldstart", "dqn", 476.0, 3.0),
            ("paper-coldstart", "q-learning", 1285.9, 2.7), ("paper-hotstart-seen", "hslinucb", 2.0, 3.0),
            ("paper-hotstart-seen", "dqn", 2.1, 3.1), ("paper-real-week", "hslinucb", 3.0, 2.83),
            ("paper-real-week", "threshold-cpu", 2.0, 2.6), ("paper-hotstart-unseen", "hslinucb", 4.1, 3.40),
            ("paper-hotstart-unseen", "dqn", 2.0, 3.2), ("paper-hotstart-unseen", "q-learning", 150.0, 2.9)]
    table = pd.DataFrame(rows, columns=["experiment", "policy", "violations_per_run_ours", "replicas_ours"])
    got = [(c.what, c.rule, c.ours, c.ok) for c in checks(table)]
    assert got == [
        ("cold start HSLinUCB violations/run", "<= 8", "8.0", True),
        ("cold start HSLinUCB replicas", "2.98 ± 5 %", "3.12", True),  # 2.98 * 1.05 = 3.129
        ("cold start dqn violations/run", "560.5 ± 15 %", "476.0", False),  # 560.5 * 0.85 = 476.4
        ("cold start q-learning violations/run", "1118.2 ± 15 %", "1285.9", True),  # 1118.2 * 1.15 = 1285.93
        ("hot start (seen) hslinucb violations/run", "<= 2", "2.0", True),
        ("hot start (seen) dqn violations/run", "<= 2", "2.1", False),
        ("real week HSLinUCB violations/run", "<= 8", "3.0", True),
        ("real week HSLinUCB replicas", "2.56 ± 10 %", "2.83", False),  # 2.56 * 1.1 = 2.816
        ("real week HSLinUCB below threshold-cpu", "fewer violations", "3.0 < 2.0", False),
        ("hot start (unseen) HSLinUCB violations/run", "<= 4", "4.1", False),
        ("hot start (unseen) HSLinUCB replicas", "3.24 ± 5 %", "3.40", True),  # 3.24 * 1.05 = 3.402
        ("hot start (unseen) dqn violations/run", "<= 2", "2.0", True),
        ("hot start (unseen) q-learning violations/run", "150 to 300", "150.0", True),
    ]  # no q-learning seen hot start in the table: no check


def test_cold_start_on_paper_d1_meets_the_targets(tmp_path):
    """The reproduction targets: HSLinUCB <= 8 violations/run at the paper's replicas ± 5 %; DQN and
    Q-learning within 15 % of the paper's violations (10 runs, the paper's loop and
    learners): the report's checks (experiments.paper.TARGETS, the paper's figures from
    PAPER_RESULTS)."""
    cfg = load_config(config_path("paper-coldstart"))
    cfg = replace(cfg, policies=[p for p in cfg.policies if p.name != "oracle"])
    res = run_experiment(cfg, out=tmp_path, progress=False, report=False)
    table = comparison({"paper-coldstart": res})
    cold = checks(table)
    assert [c.what for c in cold] == [t.what for t in TARGETS if t.experiment == "paper-coldstart"]
    # the table docs/hslinucb.md shows (docs/data/paper-comparison.csv) is what the program prints
    shipped = pd.read_csv(Path(__file__).resolve().parents[1] / "docs" / "data" / "paper-comparison.csv")
    shipped = shipped[(shipped.experiment == "paper-coldstart") & (shipped.policy != "oracle")].reset_index(drop=True)
    assert markdown_table(table) == markdown_table(shipped)
    assert all(c.ok for c in cold), [c for c in cold if not c.ok]
    # the runs share the replay's positions: they are not copies of each other
    per_run = res.steps[res.steps.policy == "hslinucb"].groupby("run").violation.sum()
    assert per_run.nunique() > 1
    # every outcome is scored after the order: a forced up is judged on the new cell's draw
    h = res.steps[res.steps.policy == "hslinucb"]
    assert (h[h.forced].replicas == h[h.forced].pre_replicas + 1).all()


def test_calibration_against_the_samples_reports_quantiles_fractions_and_the_old_error():
    from scalelab.simulator.calibration import calibrate_samples

    res = calibrate_samples(steps=40)
    t = res.table.set_index(["users", "replicas"])
    assert len(t) == 36  # the cells with all 20 samples known
    assert t.loc[(25, 2), "data_above"] == pytest.approx(0.40) and t.loc[(10, 1), "data_above"] == 0.05
    assert (t.sim_q10 <= t.sim_q50).all() and (t.sim_q50 <= t.sim_q90).all()
    # the calibrated profile: within 15 % on the quantiles' median, 0.05 on the fractions
    assert res.median_q_error < 0.15 and res.mean_above_error < 0.05 and res.mean_error < 0.15
