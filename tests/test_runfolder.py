"""The run folder (scalelab.experiments.runfolder): a resume runs from the config's
snapshot (the contents of its profile and dataset when the run began, not their names),
one ``done`` format for simulated and live episodes, and the report as the caller's step
(no import circle between the runner and the report)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scalelab.experiments import runfolder
from scalelab.experiments.episode import episode_name
from scalelab.experiments.runner import run_simulated
from tests.counting import count_episodes

SMALL = {
    "name": "snap", "seed": 5, "runs": 2, "steps": 30,
    "workload": {"kind": "step", "before": 4, "after": 24, "at_s": 60, "duration_s": 150},
    "policies": [{"name": "static", "replicas": 2}, {"name": "hslinucb"}],
}  # fmt: skip


def _interrupted(monkeypatch, cfg: dict, out, victim: tuple[str, int]):
    """A run killed before its end (never compacted) whose ``victim`` episode had not
    finished (no ``done`` marker): what a resume has to redo."""
    import scalelab.experiments.runner as runner

    with monkeypatch.context() as m:
        m.setattr(runner, "compact_parts", lambda path, rows: None)
        first = run_simulated(cfg, out=out, progress=False, workers=1)
    for f in (runfolder.STEPS, runfolder.COMPLETE, runfolder.SUMMARY_JSON, runfolder.SUMMARY_CSV):
        (first.path / f).unlink(missing_ok=True)
    (first.path / runfolder.PARTS / episode_name(*victim) / runfolder.DONE).unlink()
    return first


def test_a_resume_runs_the_saved_profile_it_started_with_not_the_edited_file(tmp_path, monkeypatch):
    from scalelab.simulator.models import find_profile, profile_to_dict, save_profile

    profiles = tmp_path / "profiles"
    monkeypatch.setenv("SCALELAB_PROFILES", str(profiles))
    mine = find_profile("paper").with_overrides(name="mine", demand={"cpu_ms": 60.0})
    save_profile(mine)  # profiles/mine.json, named in the config
    cfg = {**SMALL, "app": {"profile": "mine"}}
    first = _interrupted(monkeypatch, cfg, tmp_path / "a", victim=("hslinucb", 1))
    snapshot = json.loads((first.path / runfolder.SNAPSHOT / runfolder.SNAPSHOT_PROFILE).read_text())
    assert snapshot == json.loads(json.dumps(profile_to_dict(mine)))  # the contents, not the name
    assert "profile: mine" in (first.path / runfolder.CONFIG).read_text()  # the config keeps its name

    edited = mine.with_overrides(demand={"cpu_ms": 130.0}, cpu_limit=0.5)  # the saved profile changes
    save_profile(edited, profiles / "mine.json")
    ran = count_episodes(monkeypatch)
    resumed = run_simulated(None, resume=first.path, progress=False, workers=1)
    assert ran == [("hslinucb", 1)]  # the victim was redone (not read back) ...
    pd.testing.assert_frame_equal(resumed.steps, first.steps, check_exact=True)  # ... on the snapshot's profile

    ran.clear()  # the edited profile would have given other rows: the test can tell them apart
    other = run_simulated(cfg, out=tmp_path / "b", progress=False, workers=1)
    assert len(ran) == 4
    victim = other.steps[(other.steps.policy == "hslinucb") & (other.steps.run == 1)]
    assert not victim.p95_ms.equals(first.steps.loc[victim.index, "p95_ms"])


def test_a_resume_replays_the_dataset_it_started_with_not_the_edited_file(tmp_path, monkeypatch):
    from scalelab.simulator.datasets import resolve_dataset

    data = tmp_path / "d.parquet"
    samples = resolve_dataset("sim-D1")
    samples.to_parquet(data, index=False)
    cfg = {"name": "replayed", "seed": 2, "runs": 2, "steps": 40, "backend": "replay", "dataset": str(data),
           "workload": {"kind": "step", "before": 10, "after": 40, "at_s": 60, "duration_s": 200},
           "policies": [{"name": "static", "replicas": 2}, {"name": "hslinucb"}]}
    first = _interrupted(monkeypatch, cfg, tmp_path / "a", victim=("static", 0))
    kept = pd.read_parquet(first.path / runfolder.SNAPSHOT / runfolder.SNAPSHOT_DATASET)
    pd.testing.assert_frame_equal(kept, samples)

    samples.assign(p95_ms=samples.p95_ms * 3).to_parquet(data, index=False)  # the file is recorded again
    ran = count_episodes(monkeypatch)
    resumed = run_simulated(None, resume=first.path, progress=False, workers=1)
    assert ran == [("static", 0)]
    pd.testing.assert_frame_equal(resumed.steps, first.steps, check_exact=True)


def test_a_bad_profile_name_leaves_no_folder(tmp_path, monkeypatch):
    from scalelab.experiments.config import ConfigError

    monkeypatch.setenv("SCALELAB_PROFILES", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"app\.profile='missing'"):
        run_simulated({**SMALL, "app": {"profile": "missing"}}, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_one_done_format_checks_the_chunks(tmp_path):
    part = runfolder.Part(tmp_path / "parts" / "p--run000")
    part.start()
    frame = pd.DataFrame({"step": [0, 1, 2], "p95_ms": [1.0, 2.0, 3.0]})
    part.write_chunk(0, frame.iloc[:2])
    part.write_chunk(2, frame.iloc[2:].reset_index(drop=True))
    assert part.verified() is None  # not finished
    part.mark_done(3)
    done = json.loads((part.dir / runfolder.DONE).read_text())
    assert done["rows"] == 3 and len(done["sha256"]) == 64
    pd.testing.assert_frame_equal(part.verified(), frame)
    chunk = sorted(part.dir.glob(runfolder.CHUNKS))[-1]
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\0")  # damaged
    assert part.verified() is None
    (part.dir / runfolder.DONE).write_text("ok\n")  # the live marker of old: not a verified episode
    assert part.verified() is None


def test_a_live_episode_is_kept_by_the_same_marker_and_an_old_one_from_its_records(tmp_path, monkeypatch):
    import scalelab.experiments.live as live

    rows = pd.DataFrame({"run": [0, 0], "policy": ["p", "p"], "step": [0, 1]})
    monkeypatch.setattr(live, "records_to_steps", lambda folder, run, policy: rows)  # the agent's records
    part = runfolder.part(tmp_path, "p", 0)
    part.start()
    assert live.kept_episode(part, 0, "p") is None  # never finished: run it
    (part.dir / runfolder.DONE).write_text("ok\n")  # a live folder from before the one marker
    part.write_status({"status": "done", "rows": 2})
    pd.testing.assert_frame_equal(live.kept_episode(part, 0, "p"), rows)
    pd.testing.assert_frame_equal(part.verified(), rows)  # now in the one format, with its chunk
    part.unmark()
    part.write_status({"status": "failed", "rows": 1})
    assert live.kept_episode(part, 0, "p") is None  # a failed episode continues


def test_the_runner_writes_no_report_and_the_caller_does(tmp_path):
    from scalelab.experiments.experiment import run_experiment

    plain = run_simulated({**SMALL, "runs": 1}, out=tmp_path / "a", progress=False, workers=1)
    assert (plain.path / runfolder.SUMMARY_CSV).is_file() and not (plain.path / "report.html").exists()
    reported = run_experiment({**SMALL, "runs": 1}, out=tmp_path / "b", progress=False, workers=1)
    assert (reported.path / "report.html").is_file()
    pd.testing.assert_frame_equal(plain.steps, reported.steps, check_exact=True)


def test_the_folder_and_the_report_import_neither_runner():
    """(tests/test_layering.py checks the whole package has no import circle.)"""
    import grimp

    g = grimp.build_graph("scalelab")
    for importer, imported in [("scalelab.experiments.report", "scalelab.experiments.runner"),
                               ("scalelab.experiments.report", "scalelab.experiments.live"),
                               ("scalelab.experiments.runfolder", "scalelab.experiments.runner"),
                               ("scalelab.experiments.runfolder", "scalelab.experiments.live"),
                               ("scalelab.experiments.runfolder", "scalelab.experiments.report"),
                               ("scalelab.experiments.runner", "scalelab.experiments.report"),
                               ("scalelab.experiments.live", "scalelab.experiments.report"),
                               ("scalelab.experiments.env", "scalelab.experiments.runner")]:
        assert g.find_shortest_chain(importer=importer, imported=imported) is None, (importer, imported)


@pytest.mark.parametrize("loop", ["period", "settle"])
def test_steps_parquet_reads_back_what_the_run_reported(tmp_path, loop):
    """The file's types (float32 measurements, ``pre_`` nulls where a row repeats the
    previous outcome, zstd) lose nothing the run reported: ``read_steps`` gives the run's
    own frame, column for column and dtype for dtype, and its summary is the run's; in a
    settle loop the observation decided on is not always the previous outcome, and those
    rows keep their own."""
    import pyarrow.parquet as pq

    from scalelab.experiments.metrics import summarize

    cfg = runfolder.load_config({**SMALL, "loop": loop, "runs": 1})
    res = run_simulated(cfg, out=tmp_path, progress=False, workers=1)
    back = runfolder.read_steps(res.path)
    pd.testing.assert_frame_equal(back, res.steps, check_exact=True)
    pd.testing.assert_frame_equal(summarize(back, cfg), res.summary, check_exact=True)
    stored = pq.read_table(res.path / runfolder.STEPS)
    assert stored.schema.field("cpu_request_ratio").type == "float" and stored.schema.field("p95_ms").type == "double"
    repeated = stored.column(runfolder.PRE_IS_PREVIOUS).to_numpy()
    assert stored.column("pre_p95_ms").null_count == repeated.sum()
    if loop == "period":  # every row but each episode's first decided on the previous outcome
        assert (~repeated).sum() == cfg.runs * len(cfg.policies)
    else:  # settle: each decision observes afresh, so every row keeps its own
        assert not repeated.any()


def test_a_resume_with_another_config_is_refused_naming_the_difference(tmp_path, capsys):
    """``scalelab run CONFIG --resume FOLDER`` runs the folder's config: a CONFIG or a
    ``--runs``/``--seed`` that differ from it are refused with what differs, before any
    work; the folder's own config (or none) resumes."""
    import yaml

    from scalelab.cli import main

    res = run_simulated({**SMALL, "runs": 1}, out=tmp_path, progress=False, workers=1)
    same, other = tmp_path / "same.yaml", tmp_path / "other.yaml"
    same.write_text(yaml.safe_dump({**SMALL, "runs": 1}))
    other.write_text(yaml.safe_dump({**SMALL, "runs": 1, "seed": 6, "workload": {**SMALL["workload"], "after": 30}}))
    assert main(["run", str(other), "--resume", str(res.path)]) == 2
    err = capsys.readouterr().err
    assert "seed: 5 -> 6" in err and "workload" in err and "resume without a config" in err
    assert main(["run", "--resume", str(res.path), "--runs", "3"]) == 2
    assert "runs: 1 -> 3" in capsys.readouterr().err
    assert main(["run", str(same), "--resume", str(res.path)]) == 0


def test_ctrl_c_in_a_run_says_how_to_resume_it(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt during the episodes ends the command with status 130 and the
    resume command naming the folder, whose finished episodes a resume keeps."""
    import scalelab.experiments.runner as runner
    from scalelab.cli import main

    real = runner._run_chain
    calls = []

    def interrupted(job):
        if calls:
            raise KeyboardInterrupt
        calls.append(job)
        return real(job)

    cfg = tmp_path / "small.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(SMALL))
    monkeypatch.setattr(runner, "_run_chain", interrupted)
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--workers", "1"]) == 130
    (folder,) = (tmp_path / "runs").iterdir()
    assert f"interrupted: resume with `scalelab run --resume {folder}`" in capsys.readouterr().err
    monkeypatch.setattr(runner, "_run_chain", real)
    assert main(["run", "--resume", str(folder)]) == 0
