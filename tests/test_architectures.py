"""``scalelab architectures``: the evaluation week on the service and on runners, one
report; the exam slots and the rest add up to each policy's whole week."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scalelab.experiments.architectures import (
    ARCHITECTURES,
    architecture_config,
    by_phase,
    exam_steps,
    run_architectures,
)
from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.runfolder import read_steps

#: 09:00-09:40 on Tuesday: the first exam's start, on each architecture's own config
TINY = {"start_day": 1, "start_hour": 8.8, "days": 0.6 / 24}


def _tiny(arch, policies):
    cfg = yaml.safe_load(config_path(arch.config).read_text())
    cfg["workload"] = {**cfg["workload"], **TINY}
    cfg["oracle"] = False
    cfg["policies"] = policies
    return cfg


def test_every_architecture_runs_its_shipped_config_with_the_policies_it_keeps():
    names = {a.name: a for a in ARCHITECTURES}
    service = architecture_config(names["service"], runs=5)
    assert [p.get("label", p["name"]) for p in service["policies"]] == ["hslinucb", "hpa-default", "kpa", "oracle"]
    assert "calendar" not in service and service["runs"] == 5
    for name in ("runners", "scaledjob"):
        cfg = load_config(architecture_config(names[name], runs=5))
        assert cfg.architecture == "jobs" and cfg.runs == 5
    assert load_config(architecture_config(names["scaledjob"])).jobs.runner_mode == "job"
    # the same students, programs, seed and SLO on all three
    cfgs = [load_config(architecture_config(a)) for a in ARCHITECTURES]
    assert len({(c.seed, c.slo_ms, c.step_seconds, repr(c.workload), c.app.profile) for c in cfgs}) == 1
    short = load_config(architecture_config(names["runners"], hours=8))
    assert (short.workload["start_day"], short.workload["start_hour"]) == (1, 8.0) and short.name.endswith("-8h")
    assert short.workload["days"] == pytest.approx(1 / 3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_one_command_one_report_with_each_front_and_the_phases(tmp_path):
    bases = {"service": _tiny(ARCHITECTURES[0], [{"name": "hpa", "label": "hpa-default", "behavior": "default"},
                                                  {"name": "kpa", "target": 1.0}]),
             "runners": _tiny(ARCHITECTURES[1], [{"name": "keda-kafka"}, {"name": "prairielearn-grader"}]),
             "scaledjob": _tiny(ARCHITECTURES[2], [{"name": "keda-scaledjob", "lag_threshold": 1}])}
    folder = run_architectures(out=tmp_path, runs=2, progress=False, workers=1, bases=bases)
    md = (folder / "architectures.md").read_text()
    for arch in ARCHITECTURES:
        assert f"## {arch.name}: {arch.what}" in md
    assert "## Where each architecture wins" in md and "## Across both architectures" in md
    table = pd.read_csv(folder / "comparison.csv")
    assert sorted(table.policy) == sorted(["hpa-default", "kpa", "keda-kafka", "prairielearn-grader",
                                           "keda-scaledjob"])
    # the phases split each policy's week: exam + rest = the whole run's violations and replica-hours
    folders = json.loads((folder / "folders.json").read_text())
    assert sorted(folders) == sorted(a.name for a in ARCHITECTURES)
    runners = Path(folders["runners"])
    steps = read_steps(runners)
    phases = by_phase(runners).set_index("policy")
    for policy, frame in steps.groupby("policy"):
        runs = frame["run"].nunique()
        assert phases.loc[policy, "exams_violations"] + phases.loc[policy, "rest_violations"] == pytest.approx(
            frame["violation"].sum() / runs)
        assert phases.loc[policy, "exams_replica_hours"] + phases.loc[policy, "rest_replica_hours"] == pytest.approx(
            frame["replicas"].sum() * 5 / 3600 / runs)
        assert f"| runners · {policy} |" in md
    # the workload starts 08:48; the exam at 09:00 (start within 3 min): step 144 is its first
    inside = exam_steps(runners)
    assert not inside[:144].any() and inside[144:].all()
    for policy, frame in steps.groupby("policy"):  # the exam phase is exactly those steps
        runs = frame["run"].nunique()
        assert phases.loc[policy, "exams_violations"] == pytest.approx(
            frame.loc[frame.step >= 144, "violation"].sum() / runs)
        assert phases.loc[policy, "rest_replica_hours"] == pytest.approx(
            frame.loc[frame.step < 144, "replicas"].sum() * 5 / 3600 / runs)
    assert np.isfinite(phases.to_numpy(dtype=float)).all()


def test_the_short_form_on_the_live_stack_runs_both_live_configs_into_the_same_report(tmp_path, monkeypatch):
    """``--live``: the service's and the runners' live configs (same seed, SLO, students), each
    through ``run_live``; here ``run_live`` is the simulator on the same config (the live stack
    itself: tests/test_jobs_live.py and tests/test_live_run.py)."""
    from dataclasses import replace

    from scalelab.experiments import experiment
    from scalelab.experiments.architectures import LIVE_ARCHITECTURES

    cfgs = [load_config(architecture_config(a)) for a in LIVE_ARCHITECTURES]
    assert [c.backend for c in cfgs] == ["live", "live"]
    assert [c.architecture for c in cfgs] == ["service", "jobs"]
    assert len({(c.seed, c.slo_ms, c.step_seconds, repr(c.workload), c.app.cpu_limit) for c in cfgs}) == 1
    ran = []

    def on_the_simulator(cfg, out):
        ran.append(cfg.name)
        return experiment.run_experiment(replace(cfg, backend="sim", runs=1, oracle=False,
                                                 policies=cfg.policies[1:2]), out=out, progress=False)

    monkeypatch.setattr(experiment, "run_live", on_the_simulator)
    folder = run_architectures(out=tmp_path, live=True, progress=False)
    assert ran == ["live-evaluation-week", "live-evaluation-week-jobs"]
    md = (folder / "architectures.md").read_text()
    assert "## service: the sealed sandbox service" in md and "## runners: runner processes" in md
    assert sorted(json.loads((folder / "folders.json").read_text())) == ["runners", "service"]
