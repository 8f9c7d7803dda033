"""Autothrottle's Tower over an HPA-style captain: the source's cost, aggregation and
exploration on hand values, the Tower's choices for a few periods worked by hand, the
captain's replica formula, the checker, and a short simulated run where it learns the
tightest target that meets the SLO."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.agent.base import PolicyError, read_state_file
from scalelab.agent.check import check_policy
from scalelab.agent.policies.autothrottle import (
    Autothrottle,
    aggregate,
    captain_replicas,
    explore_distribution,
    median,
    predicted_costs,
    rps_bucket,
    tower_costs,
)
from scalelab.agent.policies.thresholds import HPAPod
from scalelab.agent.registry import make_policy
from scalelab.orchestrator.context import Context


def ctx(rps=10.0, p95=50.0, replicas=4, cpu=0.5):
    return Context(replicas, p95, rps, cpu, cpu, 0.2, 0.2, cpu_request_now=cpu)


def test_the_cost_is_the_sources_normalised_allocation_or_two_plus_normalised_latency():
    # (rps, action, probability, latency ms, allocation); SLO 100 ms (a latency equal to it meets it)
    samples = [(10, 0, 1.0, 50, 4), (10, 1, 1.0, 80, 2), (30, 2, 1.0, 150, 1), (30, 3, 1.0, 250, 1),
               (50, 0, 0.9, 100, 3)]
    assert tower_costs(samples, 100.0) == [1.0, 0.0, 2.0, 3.0, 0.5]  # met: (a - 2) / (4 - 2); missed: 2 + ...
    assert tower_costs([(10, 0, 1.0, 50, 4)], 100.0) == [0.5]  # one value: the source's ZeroDivisionError case
    assert tower_costs([(10, 0, 1.0, 150, 4), (10, 1, 1.0, 150, 2)], 100.0) == [2.5, 2.5]


def test_samples_are_grouped_by_rounded_rps_and_keep_their_median():
    assert [rps_bucket(r, 20) for r in (9, 10, 11, 29, 30, 50)] == [0, 0, 20, 20, 40, 40]  # halves to even
    assert median([3, 1, 2]) == 2 and median([0.4, 1.0]) == 0.7
    samples = [(9, 0, 1.0, 0, 0), (11, 0, 1.0, 0, 0), (12, 0, 1.0, 0, 0), (45, 2, 1.0, 0, 0)]
    table = aggregate(samples, [0.2, 0.4, 1.0, 2.5], 20)
    assert table == {0: [(0, 0.2), (20, 0.7)], 2: [(40, 2.5)]}
    # interpolated between an action's buckets, constant beyond them; 0 for an untried action
    assert predicted_costs(table, 4, 5.0).tolist() == pytest.approx([0.2 + 0.25 * 0.5, 0.0, 2.5, 0.0])
    assert predicted_costs(table, 4, 100.0).tolist() == pytest.approx([0.7, 0.0, 2.5, 0.0])


def test_exploration_gives_the_neighbouring_levels_the_explore_share():
    assert explore_distribution(4, 9, 0.1).tolist() == pytest.approx([0, 0, 0, 0.05, 0.9, 0.05, 0, 0, 0])
    assert explore_distribution(0, 9, 0.1).tolist() == pytest.approx([0.9, 0.1, 0, 0, 0, 0, 0, 0, 0])
    assert explore_distribution(8, 9, 0.1).tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0, 0.1, 0.9])
    assert explore_distribution(0, 1, 0.1).tolist() == [1.0]


def test_the_captain_is_the_hpa_formula_clamped():
    def pods(n, used_m):
        return [HPAPod(f"p{i}", request_m=1000, metric_m=used_m) for i in range(n)]

    assert captain_replicas(4, 60, pods(4, 900), 1000.0, 0.1, 1, 10) == 6  # ceil(4 * 90 / 60)
    assert captain_replicas(4, 85, pods(4, 900), 1000.0, 0.1, 1, 10) == 4  # 90 / 85 = 1.06: within 10 %
    assert captain_replicas(4, 85, pods(4, 900), 1000.0, 0.0, 1, 10) == 5  # no tolerance: ceil(4 * 90 / 85)
    assert captain_replicas(4, 30, pods(4, 900), 1000.0, 0.1, 1, 10) == 10  # ceil(12) clamped to the maximum
    assert captain_replicas(4, 90, pods(4, 300), 1000.0, 0.1, 1, 10) == 2  # ceil(4 * 30 / 90)
    assert captain_replicas(4, 90, pods(4, 300), 1000.0, 0.1, 3, 10) == 3  # clamped to the minimum
    assert captain_replicas(4, 90, [HPAPod("p", 1000, None)], 1000.0, 0.1, 1, 10) == 4  # no metric: no change
    # without pods in the observation, the context's ready replicas at its newest CPU / request
    pol = Autothrottle(targets=[60], explore=0.0, max_replicas=10, seed=0)
    assert pol.decide(ctx(replicas=4, cpu=0.9), {"t_s": 0.0, "current_replicas": 4}).action == 6


def test_the_towers_first_periods_by_hand():
    """Targets 20/40/60 %, SLO 100 ms, no exploration, 30-s steps (two per 60-s period)."""
    pol = Autothrottle(targets=[20, 40, 60], explore=0.0, slo_ms=100.0, max_replicas=10, seed=0)
    steps = [  # (t, p95 ms, replicas ordered, rps)
        (0, 50, 4, 10), (30, 50, 3, 10), (60, 60, 5, 10),  # period 1 under 20 %: max p95 60, mean 4
        (90, 70, 2, 10), (120, 80, 2, 10),  # period 2 under 40 %
        (150, 150, 2, 10), (180, 120, 2, 10),  # period 3 under 40 %: missed (150 ms)
        (210, 200, 1, 10), (240, 190, 1, 50),  # period 4 under 60 %: missed (200 ms)
    ]
    targets = []
    for t, p95, current, rps in steps:
        d = pol.decide(ctx(rps=rps, p95=p95, replicas=current), {"t_s": float(t), "current_replicas": current})
        targets.append((d.info["target_pct"], d.info["tower"]))
    assert [x for x in targets if x[1]] == [
        (20, True),  # nothing learned: all predict 0, the first (most generous) wins the tie
        (40, True),  # 20 % met the SLO alone: cost 0.5 > 0 for the untried
        (40, True),  # allocations 4 and 2 met: 20 % costs 1, 40 % costs 0, ties with the untried 60 %: lower first
        (60, True),  # 40 %: median(0, 2.5) = 1.25 > 20 %'s 1 > 60 %'s 0
        (20, True),  # 60 % missed worse (3.0); 40 %: median(0, 2.0) = 1.0 ties 20 %'s 1.0: the lower
    ]
    assert pol.samples == [(10.0, 0, 1.0, 60.0, 4.0), (10.0, 1, 1.0, 80.0, 2.0), (10.0, 1, 1.0, 150.0, 2.0),
                           (10.0, 2, 1.0, 200.0, 1.0)]
    assert pol.predict(10.0).tolist() == pytest.approx([1.0, 1.0, 3.0])


def test_a_tower_step_reports_the_probability_of_each_replica_count():
    pol = Autothrottle(targets=[20, 40, 60], explore=0.1, max_replicas=10, seed=0)
    d = pol.decide(ctx(replicas=4, cpu=0.6), {"t_s": 0.0, "current_replicas": 4})
    # greedy 20 % (probability 0.9): ceil(4 * 60 / 20) = 12 -> 10; explored 40 % (0.1): ceil(4 * 60 / 40) = 6
    expected = [0.0] * 11
    expected[10], expected[6] = 0.9, 0.1
    assert d.probabilities == pytest.approx(tuple(expected))
    assert d.probability == pytest.approx(expected[d.action])
    d = pol.decide(ctx(replicas=4, cpu=0.6), {"t_s": 5.0, "current_replicas": 4})  # within the period
    assert d.probability == 1.0 and not d.info["tower"]


def test_the_state_survives_json_and_the_decisions_go_on_alike():
    def drive(pol, ks):
        out = []
        for k in ks:
            c = ctx(rps=5.0 + k % 7, p95=40.0 + 13 * (k % 5), replicas=2 + k % 3, cpu=0.3 + 0.05 * (k % 9))
            out.append(pol.decide(c, {"t_s": 20.0 * k, "current_replicas": c.replicas}))
        return out

    a = Autothrottle(seed=4, slo_ms=90.0)
    drive(a, range(40))
    b = Autothrottle(seed=99, slo_ms=90.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert drive(a, range(40, 80)) == drive(b, range(40, 80))
    assert a.state_dict() == b.state_dict()
    with pytest.raises(PolicyError, match="targets"):
        Autothrottle(targets=[50, 60]).load_state_dict(a.state_dict())


def test_the_policy_checker_passes():
    check_policy("autothrottle")


@pytest.mark.parametrize("params, name", [
    ({"targets": [50, 40]}, "targets"), ({"targets": []}, "targets"), ({"targets": [12.5]}, "targets"),
    ({"targets": [0, 50]}, "targets"), ({"explore": 1.5}, "explore"), ({"period_s": 0.0}, "period_s"),
    ({"aggregate_rps": 0.0}, "aggregate_rps"), ({"drop_samples": -1}, "drop_samples"), ({"slo_ms": 0.0}, "slo_ms"),
    ({"tolerance": -0.1}, "tolerance"), ({"explore": "some"}, "explore"), ({"max_replicas": 0}, "max_replicas"),
])  # fmt: skip
def test_bad_values_are_rejected_with_the_parameter_named(params, name):
    with pytest.raises(PolicyError, match=name):
        make_policy("autothrottle", **params)


def test_dropped_samples_are_the_first_ones():
    pol = Autothrottle(targets=[20, 40], explore=0.0, drop_samples=1, slo_ms=100.0, seed=0)
    for t in (0, 60, 120):
        pol.decide(ctx(p95=50.0), {"t_s": float(t), "current_replicas": 4})
    assert len(pol.samples) == 1 and pol.drop_left == 0


def test_on_a_steady_load_it_learns_the_tightest_target_that_meets_the_slo(tmp_path):
    """One simulated hour of 40 users: the Tower starts at the most generous target (10 %)
    and climbs; at the end its greedy target is 70 %, the tightest at which the captain
    alone meets the SLO (at 80 % it does not), with about half the replicas it began with."""
    from scalelab.experiments.config import load_config
    from scalelab.experiments.experiment import run_experiment

    cfg = {"name": "at", "seed": 7, "steps": 720, "step_seconds": 5, "slo_ms": 600,
           "workload": {"kind": "constant", "users": 40, "duration_s": 3600},
           "cluster": {"min_replicas": 1, "max_replicas": 12, "initial_replicas": 2},
           "policies": [{"name": "autothrottle"},
                        {"name": "autothrottle", "label": "only-70", "targets": [70], "explore": 0.0},
                        {"name": "autothrottle", "label": "only-80", "targets": [80], "explore": 0.0}]}  # fmt: skip
    result = run_experiment(load_config(cfg), out=tmp_path, progress=False, workers=1, report=False)
    steps = result.steps
    late = {p: g.iloc[-360:] for p, g in steps.groupby("policy")}
    assert late["only-70"].violation.sum() == 0 and late["only-80"].violation.mean() > 0.5
    at = steps[steps.policy == "autothrottle"]
    assert at.replicas.iloc[-180:].mean() < 0.5 * at.replicas.iloc[:180].mean()
    (state_file,) = (p for p in (result.path / "policies").iterdir() if p.name.startswith("autothrottle--"))
    pol = Autothrottle(seed=0, slo_ms=600.0, max_replicas=12)
    pol.load_state_dict(read_state_file(state_file))
    greedy = pol.targets[int(np.argmin(pol.predict(float(at.rps.iloc[-1]))))]
    assert greedy == 70
