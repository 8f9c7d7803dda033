"""The runner under bad input and bad luck (issue 14, part 5): configs refused with one
line naming the key before any folder is made, damaged episodes redone on resume and
finished ones read back (not redone), one process per run folder, pool workers that
die with their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from scalelab.experiments.config import ConfigError, load_config
from scalelab.experiments.episode import episode_name
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.runfolder import folder_lock
from tests.counting import count_episodes
from tests.waiting import wait_for

SMALL = {
    "name": "robust", "seed": 3, "runs": 2, "steps": 30,
    "workload": {"kind": "step", "before": 4, "after": 20, "at_s": 60, "duration_s": 150},
    "policies": [{"name": "static", "replicas": 2}, {"name": "hslinucb"}],
}  # fmt: skip

BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdef", "bcdefg", strict=True)]) + "\n"


@pytest.mark.parametrize("text, words", [
    ("- a\n- b\n", "must be a mapping of keys"),
    ("", "is empty"),
    ("policies: [static]\ncluster: {startup_seconds: .nan}\n", "cluster.startup_seconds=nan must be a finite number"),
    ("policies: [static]\nstep_seconds: .inf\n", "step_seconds=inf must be a finite number"),
    ("policies: [static]\nworkload: {kind: constant, users: .nan, duration_s: 60}\n", "workload.users=nan"),
    ("policies: [static]\nruns: 1000000\n", "runs=1000000 must be within [1, 1000]"),
    ("policies: [static]\ncluster: {max_replicas: 100000}\n", "cluster.max_replicas=100000 must be within"),
    ("policies: [static]\ncluster: {startup_seconds: -1}\n", "startup_seconds=-1.0 must be >= 0"),
    (BOMB, "alias bomb"),
])  # fmt: skip
def test_bad_configs_are_refused_with_one_line_naming_the_key(text, words):
    with pytest.raises(ConfigError) as err:
        load_config(text)
    message = str(err.value)
    assert words in message and "\n" not in message and len(message) < 400


def test_long_values_are_cut_in_messages():
    with pytest.raises(ConfigError) as err:
        load_config({"backend": "y" * 5000, "policies": ["static"]})
    assert "(5002 chars)" in str(err.value) and len(str(err.value)) < 300


def test_absurd_sizes_are_refused_before_a_folder_is_made(tmp_path):
    cfg = {**SMALL, "runs": 1000, "steps": 1_000_000}
    with pytest.raises(ConfigError, match=r"runs=1000 x 2 policies x 1000000 steps = 2,000,000,000 rows"):
        run_experiment(cfg, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"--out .*: cannot make the run folder there \(Not a directory\)"):
        (tmp_path / "file").write_text("x")
        run_experiment(SMALL, out=tmp_path / "file" / "runs", progress=False)


def _stamps(folder) -> dict:
    """Every file under ``folder``: (inode, mtime in ns, contents): a file rewritten, even
    with the same bytes, gets a new stamp."""
    return {f: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_damaged_or_missing_chunk_is_redone_on_resume_and_only_it(tmp_path, monkeypatch):
    """Resume reads the finished episodes back (their files untouched, their episodes
    not run) and redoes only the one whose chunk was damaged, then lost: a resume that
    recomputed everything would give the same steps but fail here."""
    import scalelab.experiments.runner as runner

    monkeypatch.setattr(runner, "compact_parts", lambda path, rows: None)  # as a run killed before its end
    ran = count_episodes(monkeypatch)
    first = run_experiment(SMALL, out=tmp_path, progress=False, report=False, workers=1)
    assert sorted(ran) == [("hslinucb", 0), ("hslinucb", 1), ("static", 0), ("static", 1)]
    parts = sorted((first.path / "parts").iterdir())
    victim = 1
    part = first.path / "parts" / episode_name("hslinucb", victim)
    assert part in parts
    done = json.loads((part / "done").read_text())
    assert done["rows"] == 30 and len(done["sha256"]) == 64
    chunk = next(part.glob("chunk-*.parquet"))
    original = chunk.read_bytes()
    kept = {f: s for p in parts if p != part for f, s in _stamps(p).items()}
    assert len(kept) >= 3 * 2  # three other episodes, each a chunk and its done marker at least

    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF  # a flipped byte
    chunk.write_bytes(bytes(data))
    ran.clear()
    again = run_experiment(None, resume=first.path, progress=False, report=False, workers=1)
    assert ran == [("hslinucb", victim)]  # only the damaged episode ran
    assert again.steps.equals(first.steps)  # and gave what it gave the first time (deterministic)
    assert chunk.read_bytes() == original and json.loads((part / "done").read_text()) == done
    assert {f: s for p in parts if p != part for f, s in _stamps(p).items()} == kept  # the others read, not rewritten

    chunk.unlink()  # a lost chunk
    ran.clear()
    third = run_experiment(None, resume=first.path, progress=False, report=False, workers=1)
    assert ran == [("hslinucb", victim)]
    assert third.steps.equals(first.steps) and chunk.read_bytes() == original
    assert {f: s for p in parts if p != part for f, s in _stamps(p).items()} == kept


def test_one_process_at_a_time_in_a_run_folder(tmp_path, monkeypatch):
    first = run_experiment(SMALL, out=tmp_path, progress=False, report=False, workers=1)
    ran = count_episodes(monkeypatch)
    steps = first.path / "steps.parquet"
    stamp = (steps.stat().st_ino, steps.stat().st_mtime_ns)
    with folder_lock(first.path):
        with pytest.raises(ConfigError, match=r"is in use by pid \d+"):
            run_experiment(None, resume=first.path, progress=False, report=False, workers=1)
    assert ran == [] and (steps.stat().st_ino, steps.stat().st_mtime_ns) == stamp  # refused before any work
    again = run_experiment(None, resume=first.path, progress=False, report=False, workers=1)  # free again
    assert ran == [] and again.steps.equals(first.steps)  # a complete run: read back, nothing run


def test_pool_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from scalelab.experiments.runner import die_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=die_with_parent)\n"
        "futures = [pool.submit(time.sleep, 600) for _ in range(2)]\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    # a give-up guard only: the workers sleep 600 s, so any that did not die with the parent is caught
    wait_for(lambda: not any(_alive(p) for p in workers), 60, "the pool workers to die with their parent")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_commands_one_bar_counts_every_episode_once_run_or_read_back(tmp_path):
    """Commands that run several experiments (paper, anticipation, architectures) pass one
    bar: each run advances it by its episodes; a resumed run's finished episodes count at once."""
    from scalelab.experiments.runner import command_bar, episodes, run_simulated

    a, b = load_config(SMALL), load_config(dict(SMALL, name="robust-b", runs=1))
    with command_bar(True, "two", episodes(a) + episodes(b)) as bar:
        first = run_simulated(a, out=tmp_path, progress=bar, workers=1)
        assert bar.n == 4 and bar.desc.startswith("two")  # the command's name stays
        run_simulated(b, out=tmp_path, progress=bar, workers=1)
        assert (bar.n, bar.total) == (6, 6)
    with command_bar(True, "again") as bar:  # no total given: each run adds its own
        run_simulated(None, resume=first.path, progress=bar)
        assert (bar.n, bar.total) == (4, 4)
    with command_bar(False, "quiet", 4) as bar:
        run_simulated(a, out=tmp_path, progress=bar, workers=1)  # disabled: draws nothing, fails nothing


def test_configs_run_together_in_one_pool_give_the_numbers_they_give_alone(tmp_path):
    """``run_together`` (paper, anticipation, architectures): the runs' episodes share one
    pool; each run is yielded with its folder complete, and its steps are those it has alone."""
    import pandas as pd

    from scalelab.experiments.runfolder import completed_steps
    from scalelab.experiments.runner import run_simulated, run_together

    other = dict(SMALL, name="robust-b", seed=4, runs=1, steps=40,
                 workload={"kind": "constant", "users": 12, "duration_s": 200},
                 policies=[{"name": "hpa"}, {"name": "static", "replicas": 3}])
    configs = [load_config(SMALL), load_config(other)]
    together = {}
    for i, res in run_together(configs, out=tmp_path / "together", workers=2, progress=False):
        assert completed_steps(res.path) is not None  # complete when handed over
        together[i] = res
    assert sorted(together) == [0, 1]
    for i, cfg in enumerate(configs):
        alone = run_simulated(cfg, out=tmp_path / "alone", workers=1, progress=False)
        pd.testing.assert_frame_equal(alone.steps.drop(columns="wall_s", errors="ignore"),
                                      together[i].steps.drop(columns="wall_s", errors="ignore"))


def test_runs_together_stopped_by_an_error_or_ctrl_c_name_every_folder_left_to_finish(tmp_path, monkeypatch):
    """An episode's error stops the runs run together (the chains not started are not run)
    with a note naming each unfinished folder; Ctrl-C, in the runs or in the caller's
    report of a finished one, names every folder to resume, that one included."""
    import scalelab.experiments.experiment as experiment
    import scalelab.experiments.runner as runner
    from scalelab.errors import RunInterrupted
    from scalelab.experiments.runner import run_together

    configs = [load_config(dict(SMALL, name=f"together-{k}", runs=1)) for k in range(3)]
    real = runner._run_chain

    def broken(job):
        if job[0].name == "together-1":
            raise RuntimeError("a bug in an episode")
        return real(job)

    monkeypatch.setattr(runner, "_run_chain", broken)
    with pytest.raises(RuntimeError, match="a bug") as err:
        list(run_together(configs, out=tmp_path / "error", workers=1, progress=False))
    note = " ".join(err.value.__notes__)
    folders = sorted((tmp_path / "error").iterdir())
    assert len(folders) == 3 and "unfinished run folders" in note
    assert all(str(f) in note for f in folders if not (f / "steps.parquet").exists())
    assert str(folders[1]) in note

    monkeypatch.setattr(runner, "_run_chain", real)
    reported = []

    def report_interrupted(result):
        reported.append(result.path)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "with_report", report_interrupted)
    with pytest.raises(RunInterrupted) as stop:
        list(experiment.run_experiments(configs, out=tmp_path / "ctrl-c", workers=1, progress=False))
    assert len(reported) == 1 and reported[0] in stop.value.folders  # its report was not written
    assert len(stop.value.folders) == 3 and "`scalelab run --resume" in str(stop.value)
