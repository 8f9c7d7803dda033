"""Profiles say what was fitted: a new profile states its values (nothing is inherited
from the paper's calibration), and the built-in ones say where each value came from."""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.simulator.calibration import (
    FIT_FIELDS,
    Candidate,
    SampleCalibration,
    fit_profile,
    fit_spread,
    measured_cpu,
    pass_distance,
)
from scalelab.simulator.models import (
    DEMAND_KINDS,
    DEMAND_PARAMETERS,
    EXAMPLE_SOURCES,
    PAPER,
    PROFILES,
    SANDBOX,
    STATED_FIELDS,
    UNSTATED,
    AppProfile,
    DemandModel,
    find_profile,
    profile_from_dict,
    provenance_table,
    save_profile,
)

REPO = Path(__file__).resolve().parents[1]

#: The defaults a profile may leave: each one the absence of its term or the platform's own.
NEUTRAL = {"name": "unnamed", "cfs_period_ms": 100.0, "contention_cap": math.inf, "mem_base_mib": 0.0,
           "mem_per_request_mib": 0.0, "sidecar": None, "wall_limit_ms": None, "provenance": {}}


def _default(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def test_a_profile_must_state_its_demand_replica_and_fitted_terms_and_the_error_names_what_is_missing():
    with pytest.raises(TypeError) as err:
        AppProfile(name="mine", demand=DemandModel(kind="exponential", mean_ms=80.0), cpu_request=1.0, cpu_limit=1.0)
    message = str(err.value)
    missing = message.split(" does not state ", 1)[1].split(":", 1)[0].split(", ")
    assert missing == ["memory_request_mib", "memory_limit_mib", "overhead_ms", "burst_cores", "contention"]
    assert "'mine'" in message
    with pytest.raises(TypeError, match="does not state demand, cpu_request, cpu_limit, memory_request_mib"):
        AppProfile()
    # from a dict (a saved profile, a config snapshot): the same rule
    with pytest.raises(TypeError, match="does not state overhead_ms"):
        profile_from_dict({k: v for k, v in asdict(PAPER).items() if k != "overhead_ms"})


def test_every_default_of_a_profile_is_neutral_and_none_is_the_papers_fit():
    for f in fields(AppProfile):
        default = _default(f)
        if default is UNSTATED:
            assert f.name in STATED_FIELDS
            continue
        assert f.name in NEUTRAL and default == NEUTRAL[f.name], (f.name, default)
    assert set(STATED_FIELDS) == {f.name for f in fields(AppProfile) if _default(f) is UNSTATED}
    # a profile stating the paper's demand, replica and fitted terms, nothing else: it
    # takes none of the paper's other values (contention cap, memory, sidecar)
    minimal = AppProfile(**{name: getattr(PAPER, name) for name in STATED_FIELDS})
    for name in ("contention_cap", "mem_base_mib", "mem_per_request_mib", "sidecar"):
        assert getattr(minimal, name) != getattr(PAPER, name), name
    assert minimal.provenance == {} and minimal.name == "unnamed"


@pytest.mark.parametrize("kind", DEMAND_KINDS)
def test_a_demand_states_the_parameters_of_its_kind(kind):
    needed = [p for p in DEMAND_PARAMETERS[kind] if getattr(DemandModel, p, None) is None]
    if not needed:  # the corpus kind: the shipped corpus as measured, unscaled
        d = DemandModel(kind=kind)
        assert (d.corpus, d.scale, d.add_ms) == ("v1", 1.0, 0.0)
        return
    with pytest.raises(ValueError) as err:
        DemandModel(kind=kind)
    assert f"needs {', '.join(f'demand.{p}' for p in needed)}:" in str(err.value)


def test_fixed_cpu_without_its_parameters_is_refused_not_given_the_papers():
    with pytest.raises(TypeError, match=r"demand\.kind is not stated"):
        DemandModel()
    with pytest.raises(ValueError, match=r"needs demand.cv"):
        DemandModel(kind="fixed-cpu", cpu_ms=PAPER.demand.cpu_ms)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_built_in_profiles_say_where_every_value_came_from(name):
    app = PROFILES[name]
    rows = provenance_table(app)
    assert rows, name
    unsourced = [(field, value) for field, value, source in rows if not source.strip()]
    assert unsourced == [], f"{name}: values without a source: {unsourced}"
    # every data file a source names is shipped
    for _, _, source in rows:
        for path in re.findall(r"simulator/data/[\w.-]+", source):
            assert (REPO / path).is_file(), (name, path)


def test_the_fitted_values_cite_their_fit_and_data():
    paper = dict((f, s) for f, _, s in provenance_table(PAPER))
    for field in ("demand.cpu_ms", "demand.cv", "overhead_ms", "burst_cores", "contention", "contention_cap"):
        assert paper[field].startswith("fitted") and "simulator/data/paper-calibration.csv" in paper[field], field
        assert "paper-D1-p95.json" in paper[field], field
    for field in ("cpu_request", "mem_base_mib", "sidecar.cpu_ms_per_request"):
        assert not paper[field].startswith("fitted"), field  # a platform's setting, set by hand, published
    sandbox = dict((f, s) for f, _, s in provenance_table(SANDBOX))
    for field in ("demand.scale", "demand.add_ms", "overhead_ms"):
        assert sandbox[field].startswith("fitted") and "simulator/data/live-sandbox-students.parquet" in sandbox[field]
    assert "corpus-v1.json" in sandbox["demand.corpus"]
    assert "contention_cap" not in sandbox  # no contention: the cap is not read


def test_provenance_is_not_part_of_equality_or_the_hash():
    bare = replace(PAPER, provenance={})
    assert bare == PAPER and hash(bare) == hash(PAPER)
    assert PAPER.with_overrides(cpu_limit=0.6) != PAPER


def test_overrides_say_what_they_changed_and_keep_the_rest():
    # as live-evaluation-week.yaml: the sandbox profile on half-core replicas
    app = SANDBOX.with_overrides(cpu_request=0.5, cpu_limit=0.5, overhead_ms=SANDBOX.overhead_ms, source="config")
    assert app.provenance["cpu_request"] == app.provenance["cpu_limit"] == "config"
    assert app.provenance["overhead_ms"] == SANDBOX.provenance["overhead_ms"]  # unchanged value: its fit
    assert app.provenance["demand.scale"] == SANDBOX.provenance["demand.scale"]
    assert PAPER.with_overrides(demand={"cpu_ms": 50.0}).provenance["demand.cpu_ms"] == "overridden"
    # a sidecar removed, added (Istio's, with the change)
    none = PAPER.with_overrides(sidecar="none")
    assert none.sidecar is None and not [k for k in none.provenance if k.startswith("sidecar.")]
    added = SANDBOX.with_overrides(sidecar={"cpu_ms_per_request": 3.0})
    assert added.provenance["sidecar.cpu_ms_per_request"] == "overridden"
    assert "Istio 1.6" in added.provenance["sidecar.cpu_limit"] and "sidecar" not in added.provenance
    assert all(source for _, _, source in provenance_table(added))


def test_a_demand_of_another_kind_takes_nothing_from_the_profiles_own_and_says_where_it_came_from():
    app = SANDBOX.with_overrides(demand={"kind": "fixed-cpu"})
    assert (app.demand.cpu_ms, app.demand.cv) == (PAPER.demand.cpu_ms, PAPER.demand.cv)
    assert app.provenance["demand.cpu_ms"] == EXAMPLE_SOURCES["fixed-cpu"] and "paper" in EXAMPLE_SOURCES["fixed-cpu"]
    assert app.provenance["demand.kind"] == "overridden"
    assert not any(k in app.provenance for k in ("demand.scale", "demand.add_ms", "demand.corpus"))
    stated = SANDBOX.with_overrides(demand={"kind": "exponential", "mean_ms": 100.0})
    assert stated.demand.mean_ms == 100.0 and stated.provenance["demand.mean_ms"] == "overridden"
    with pytest.raises(ValueError, match="is not one of"):
        SANDBOX.with_overrides(demand={"kind": "uniform"})


def test_saved_profiles_keep_their_provenance_and_old_ones_still_load(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALELAB_PROFILES", str(tmp_path))
    mine = replace(PAPER.with_overrides(overhead_ms=30.0, source="my cluster's recording"), name="mine")
    path = save_profile(mine)
    back = find_profile("mine")
    assert back == mine and back.provenance == mine.provenance
    assert back.provenance["overhead_ms"] == "my cluster's recording"
    # a profile saved before provenance, with every demand parameter written out
    old = {**asdict(PAPER), "name": "old"}
    old.pop("provenance")
    old["demand"].update(mean_ms=45.0, median_ms=300.0, sigma=1.2, timeout_ms=30_000.0)
    path.with_name("old.json").write_text(json.dumps(old))
    loaded = find_profile("old")
    assert loaded == replace(PAPER, name="old", demand=loaded.demand) and loaded.demand.cpu_ms == 44.6
    assert loaded.provenance == {}


def test_a_fit_marks_the_fields_it_searched():
    def score(app):  # a made-up target: 50 ms of CPU per request
        return SampleCalibration(table=None, median_q_error=abs(app.demand.cpu_ms - 50.0) / 50.0,
                                 mean_above_error=0.0, mean_error=0.0)

    best, _, _ = fit_profile(PAPER, score, candidates=8, seed=1, against="my recording")
    assert best is not PAPER and abs(best.demand.cpu_ms - 50.0) < abs(PAPER.demand.cpu_ms - 50.0)
    for key in FIT_FIELDS["fixed-cpu"]:
        assert best.provenance[key].startswith("fitted") and "fit_profile" in best.provenance[key], key
        assert "my recording" in best.provenance[key], key
    assert best.provenance["burst_cores"] == PAPER.provenance["burst_cores"]  # not searched
    unchanged, _, _ = fit_profile(PAPER, lambda a: score(PAPER) if a is PAPER else replace(
        score(a), median_q_error=1.0), candidates=2, seed=1)
    assert unchanged is PAPER


def test_a_fit_held_to_the_measured_cpu_keeps_no_candidate_outside_it_and_reports_its_spread():
    scored = []

    def score(app):  # a made-up target that prefers cheap requests: 30 ms, outside the measured range
        scored.append(app.demand.capped_mean_s)
        return SampleCalibration(table=None, median_q_error=abs(app.demand.cpu_ms - 30.0) / 30.0,
                                 mean_above_error=0.0, mean_error=0.0)

    held = (0.040, 0.050)
    best, _, tried = fit_profile(PAPER, score, candidates=30, seed=3, cpu_range=held)
    assert scored[0] == PAPER.demand.capped_mean_s and len(scored) == 31  # every candidate scored
    assert held[0] <= best.demand.capped_mean_s <= held[1]
    assert "within 40-50 ms as measured" in best.provenance["demand.cpu_ms"]
    outside = [c for c in tried if c.loss == float("inf")]
    assert outside and all(not held[0] <= c.cpu_per_request_s <= held[1] for c in outside)
    assert all(held[0] <= c.cpu_per_request_s <= held[1] for c in tried if c.loss < float("inf"))
    # what the simulated replicas spent decides, not what the demand states: here twice as much
    spent, _, tried = fit_profile(PAPER, lambda a: replace(score(a), cpu_per_request_s=2 * a.demand.capped_mean_s),
                                  candidates=10, seed=3, cpu_range=held)
    assert spent is PAPER and all(c.loss == float("inf") for c in tried)
    free, _, _ = fit_profile(PAPER, score, candidates=30, seed=3)
    assert free.demand.cpu_ms < best.demand.cpu_ms  # unheld, it buys the latency with less CPU
    # a start outside the range is not kept, however well it scores
    above, _, _ = fit_profile(PAPER, score, candidates=30, seed=3, cpu_range=(0.047, 0.060))
    assert above is not PAPER and 0.047 <= above.demand.capped_mean_s <= 0.060

    # the spread: the candidates whose loss is within the tolerance of the best
    lo, mid, hi = (PAPER.with_overrides(demand={"cpu_ms": v}) for v in (40.0, 45.0, 60.0))
    spread = fit_spread([Candidate(0.10, mid, 0.047), Candidate(0.12, lo, 0.041), Candidate(0.30, hi, 0.06),
                         Candidate(float("inf"), PAPER, 0.1)], tolerance=0.05)
    assert spread["demand.cpu_ms"] == (40.0, 45.0) and spread["cpu_per_request_s"] == (0.041, 0.047)
    # losses that are not finite are never "near the best", and an unknown tolerance is none
    assert fit_spread([Candidate(float("nan"), lo, 0.04), Candidate(0.10, mid, 0.045)],
                      tolerance=float("nan"))["demand.cpu_ms"] == (45.0, 45.0)
    assert fit_spread([Candidate(float("inf"), lo, 0.04), Candidate(float("nan"), mid, 0.045)], tolerance=0.05) == {}


def test_the_cpu_per_request_is_read_from_the_replicas_cgroups_beside_the_rate():
    rng = np.random.default_rng(0)
    rows = []
    for users in (5, 10, 20):
        for replicas in (1, 2, 3):
            for k in range(40):
                rps = users / 12.5 * rng.uniform(0.8, 1.2)
                cpu = 0.02 * replicas + 0.37 * rps + rng.normal(0, 0.05)
                rows.append({"users": users, "replicas": replicas, "sample": k, "rps": rps, "replicas_cpu_cores": cpu,
                             "host_cpu_cores": cpu + 0.2 + 0.1 * (k % 2), "others_cpu_cores": 0.2 + 0.1 * (k % 2),
                             "steal_cores": 0.01})
    m = measured_cpu(pd.DataFrame(rows))
    assert m.cells.others_cpu.round(6).eq(0.25).all() and m.cells.steal.round(6).eq(0.01).all()
    assert (m.cells.host_cpu_q95 > m.cells.host_cpu).all()
    assert m.cpu_per_request_s == pytest.approx(0.37, abs=0.01) and m.idle_cores == pytest.approx(0.02, abs=0.01)
    assert m.low_s < 0.37 < m.high_s and m.high_s - m.low_s < 0.03 and len(m.cells) == 9
    assert measured_cpu(pd.DataFrame(rows).drop(columns="replicas_cpu_cores")) is None


def test_a_wall_limit_is_stated_in_ms_or_removed_with_none():
    """The sandbox kills a run at 10 s; a config may remove the limit (``none``) and a
    malformed one is refused naming the key."""
    from scalelab import load_config
    from scalelab.experiments.config import ConfigError
    from scalelab.experiments.episode import resolve

    base = {"name": "w", "workload": {"kind": "constant", "users": 1, "duration_s": 10},
            "policies": [{"name": "static"}]}
    assert resolve(load_config({**base, "app": {"profile": "sandbox"}})).app.wall_limit_ms == 10_000.0
    assert resolve(load_config({**base, "app": {"profile": "sandbox", "wall_limit_ms": "none"}})).app.wall_limit_ms is None
    assert resolve(load_config({**base, "app": {"profile": "sandbox", "wall_limit_ms": 5000}})).app.wall_limit_ms == 5000
    with pytest.raises(ConfigError, match=r"app.wall_limit_ms must be a number of ms > 0, or none .* got 'nope'"):
        resolve(load_config({**base, "app": {"profile": "sandbox", "wall_limit_ms": "nope"}}))


def test_the_shipped_live_recording_and_the_profile_fitted_to_it_are_what_the_docs_say():
    """The live recording (40 samples per cell, the replicas' CPU beside each) and
    ``sandbox-live``: its CPU per request inside the measured interval, and the fit's
    headline errors and the recording's distance to itself as docs/evaluation-week.md
    quotes them."""
    from scalelab.experiments.calibration_report import dataset_samples
    from scalelab.simulator.models import SANDBOX_LIVE

    shipped = Path(__file__).parents[1] / "simulator" / "data" / "live-sandbox-students.parquet"
    frame = pd.read_parquet(shipped)
    assert set(frame.groupby(["users", "replicas"]).size()) == {40} and len(frame) == 600
    assert (frame.missing.fillna("") == "").all() and frame.replicas_cpu_cores.notna().all()
    target = dataset_samples(find_profile("sandbox-live"), shipped, steps=150, seed=0)
    assert not target.cpu.low_s <= SANDBOX.demand.capped_mean_s <= target.cpu.high_s  # 35 % high
    res = target.score(target.app)
    # what its simulated replicas spend, through the measurement's estimator, lies in the measured range
    assert target.cpu.low_s <= res.cpu_per_request_s <= target.cpu.high_s
    assert res.cpu_per_request_s < SANDBOX_LIVE.demand.capped_mean_s  # less than its demand states
    doc = " ".join((Path(__file__).parents[1] / "docs" / "evaluation-week.md").read_text().split())
    assert f"median quantile error 47.2 % -> {res.median_q_error * 100:.1f} %" in doc.replace("Median", "median")
    assert f"worst 152 % -> {res.worst_q_error * 100:.0f} %" in doc
    assert f"({res.cpu_per_request_s * 1000:.0f} ms spent, {SANDBOX_LIVE.demand.capped_mean_s * 1000:.0f} ms as its " \
           "demand states it)" in doc
    assert f"differ from each other by a median {target.passes[0] * 100:.1f} %" in doc
    assert f"over the cells {target.cpu.cpu_per_request_s * 1000:.0f} ms, 95 % [{target.cpu.low_s * 1000:.0f}, " \
           f"{target.cpu.high_s * 1000:.0f}]" in doc


def test_a_recording_is_as_far_from_itself_as_its_two_passes_are():
    rows = [{"users": 5, "replicas": 1, "sample": k, "p95_ms": 100.0 if k < 10 else 150.0} for k in range(20)]
    rows += [{"users": 9, "replicas": 1, "sample": k, "p95_ms": 200.0} for k in range(20)]
    rows += [{"users": 9, "replicas": 2, "sample": k, "p95_ms": 300.0} for k in range(6)]  # passes too short
    assert pass_distance(pd.DataFrame(rows)) == (pytest.approx(0.25), pytest.approx(0.5))
    assert pass_distance(pd.DataFrame(rows[-6:])) is None
