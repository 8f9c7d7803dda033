"""The replay backend, the dataset recorder and `scalelab paper` (reduced)."""

import pytest
import yaml

from scalelab.experiments.config import load_config
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.paper import PAPER_RESULTS, format_comparison, reproduce_paper
from scalelab.orchestrator.context import Context
from scalelab.simulator.datasets import record_dataset
from scalelab.simulator.models import PAPER
from scalelab.simulator.replay import DatasetError, Replay


@pytest.fixture(scope="module")
def small_dataset():
    return record_dataset(PAPER, users=(5, 10, 15), replicas=(1, 2, 3), samples=4, seed=1, warmup_steps=3)


def test_recorder_grid_and_columns(small_dataset):
    d = small_dataset
    assert len(d) == 3 * 3 * 4
    assert set(d.users) == {5, 10, 15} and set(d.replicas) == {1, 2, 3}
    assert d.groupby(["users", "replicas"]).size().eq(4).all()
    # more replicas, lower p95 at 15 users
    m = d.groupby(["users", "replicas"]).p95_ms.mean()
    assert m[(15, 1)] > m[(15, 2)] > 0


def test_the_simulators_recording_is_the_collector_over_the_backend(small_dataset):
    """record_dataset is collect over a SimBackend: the loop's observations (its columns),
    each replica count scaled to and settled (its replicas started, 5 s, before the samples)."""
    from scalelab.orchestrator.backend import VirtualClock
    from scalelab.orchestrator.context import PAPER as PAPER_CONTEXT
    from scalelab.simulator.backends import SimBackend, stream_seeds
    from scalelab.simulator.cluster import ClusterSettings
    from scalelab.simulator.datasets import collect

    d = small_dataset
    assert {"ready_replicas", "missing", "client_p95_ms", "source"} <= set(d.columns)
    assert (d.ready_replicas == d.replicas).all() and (d.missing == "").all()
    clock = VirtualClock()
    backend = SimBackend(PAPER, ClusterSettings(max_replicas=3), PAPER_CONTEXT, clock, stream_seeds(1), max_users=15)
    by_hand = collect(backend, clock, (5, 10, 15), (1, 2, 3), 4, 5.0, 3)
    assert by_hand.equals(d)
    # the same seed, the same numbers
    assert record_dataset(PAPER, users=(5, 10, 15), replicas=(1, 2, 3), samples=4, seed=1, warmup_steps=3).equals(d)


def test_replay_cycles_samples_in_order_and_scales_at_once(small_dataset):
    rp = Replay(small_dataset, 1, 3, 1)
    cell = small_dataset[(small_dataset.users == 10) & (small_dataset.replicas == 1)].sort_values("sample")
    got = [rp.context(10).p95_ms for _ in range(6)]
    assert got == list(cell.p95_ms) + list(cell.p95_ms[:2])
    rp.scale_to(3)
    assert isinstance(rp.context(10), Context) and rp.context(10).replicas == 3
    with pytest.raises(DatasetError, match="no samples for 20 users"):
        rp.context(20)
    assert rp.oracle(5, 600) == 1 and rp.oracle(15, 600) >= 2


def test_replay_backend_runs_an_experiment(small_dataset, tmp_path):
    path = tmp_path / "D.parquet"
    small_dataset.to_parquet(path)
    cfg = load_config({"name": "rep", "backend": "replay", "dataset": str(path), "runs": 2,
                       "workload": {"kind": "step", "before": 5, "after": 15, "at_s": 100, "duration_s": 300},
                       "cluster": {"max_replicas": 3}, "policies": ["hslinucb", "oracle"]})
    res = run_experiment(cfg, out=tmp_path, progress=False, report=False)
    o = res.steps[res.steps.policy == "oracle"]
    assert (o.oracle_replicas.iloc[-1] >= 2) and o.violation.sum() == 0
    assert res.steps.probabilities.iloc[0].startswith("[")


@pytest.mark.slow
def test_scalelab_paper_reduced(tmp_path):
    table, results = reproduce_paper(tmp_path, runs=1, steps=600, only=("paper-hotstart-seen",), progress=False)
    assert set(results) == {"paper-coldstart", "paper-hotstart-seen"}  # the cold start first: its states
    assert set(table.policy) == {"hslinucb", "dqn", "q-learning", "oracle"}
    row = table[(table.experiment == "paper-coldstart") & (table.policy == "hslinucb")].iloc[0]
    assert row.violations_per_run_paper == PAPER_RESULTS[("paper-coldstart", "hslinucb")][0].mean
    assert row.violations_per_run_diff == pytest.approx(row.violations_per_run_ours - 6.1)
    assert "ours | paper | diff" in format_comparison(table)
    md = (tmp_path / "paper-report.md").read_text()
    assert "## Checks" in md and "## Gaps that remain" in md and "726 from D1" in md
    # the hot start loaded the cold start's last run's states
    loaded = [p["load"] for p in yaml.safe_load((results["paper-hotstart-seen"].path / "config.yaml").read_text())
              ["policies"] if "load" in p]
    assert loaded and all(x == str(results["paper-coldstart"].path) for x in loaded)
