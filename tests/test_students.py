"""Simulated students that draw what the live injector's students draw
(``cluster.students: injector``): the same generator per student, the same programs and
think times, numbered across a live run folder's episodes as one injector numbers them."""

import random

import numpy as np
import pytest

from scalelab.experiments.config import ConfigError, config_path, load_config
from scalelab.experiments.episode import episode_seeds, injector_draws, resolve
from scalelab.injector.corpus import load_corpus, student_rng
from scalelab.simulator.cluster import ClusterSettings, SimCluster
from scalelab.simulator.models import SANDBOX_LIVE
from scalelab.simulator.students import InjectorDraws, InjectorStudents, first_student_number, students_created


def test_a_student_draws_as_the_injector_s_locust_user_drew_before_the_draws_had_one_home():
    """The generator and the program pick are the locustfile's own of before: a
    ``random.Random`` seeded ``"seed:process:number"``, a think time, then per submission
    ``choices(programs, weights)`` and a think time."""
    corpus = load_corpus("v1")
    for number in range(50):
        old, new = random.Random(f"7:0:{number}"), student_rng(7, 0, number)
        assert old.uniform(5, 20) == new.uniform(5, 20)
        for _ in range(30):
            assert old.choices(corpus.programs, weights=corpus.weights)[0] is corpus.programs[corpus.pick(new)]
            assert old.uniform(5, 20) == new.uniform(5, 20)


def test_students_are_numbered_across_a_live_folder_s_episodes_as_one_injector_numbers_them():
    # levels 3, 5, 2, 4 from none: Locust creates 3, then 2, then (a fall stops 3) 2 more
    assert students_created([3, 5, 5, 2, 4]) == 7
    assert students_created([0, 0]) == 0 and students_created([]) == 0
    # run 1, third policy of three: five episodes of 7 students before it
    assert first_student_number([3, 5, 5, 2, 4], run_in_folder=1, policy_index=2, policies=3) == 35


def _student_cluster(draws: InjectorDraws, think=(1.0, 3.0)):
    """One replica of a whole core, no overhead, no contention: a lone student's request
    takes exactly its demand."""
    app = SANDBOX_LIVE.with_overrides(overhead_ms=0.0, cpu_limit=1.0, cpu_request=1.0, burst_cores=1.0,
                                      wall_limit_ms=None)
    settings = ClusterSettings(min_replicas=1, max_replicas=1, initial_replicas=1, startup_seconds=0.0,
                               think_low_s=think[0], think_high_s=think[1], students="injector")
    rng_think, rng_demand = np.random.default_rng(1), np.random.default_rng(2)
    students = InjectorStudents(draws, think, "v1", app.demand.program_demands_s(), rng_demand, rng_think)
    return SimCluster(app, settings, rng_think, rng_demand, np.random.default_rng(3), students=students), app


def test_a_lone_simulated_student_submits_the_injector_student_s_programs_after_its_think_times():
    """Known answer: student 12 of seed 5 submits, one after the other, the programs its
    injector generator picks, each costing one of that program's measured runs, and
    sends again its next think time after each answer (more submissions than the
    stream's first width, so the stream grows)."""
    cluster, app = _student_cluster(InjectorDraws(seed=5, first_number=12))
    cluster.set_users(1)
    spans = cluster.run_to(300.0).spans
    assert len(spans.start_s) > 40  # past the first 16 of the stream
    corpus, demands = load_corpus("v1"), app.demand.program_demands_s()
    rng = random.Random("5:0:12")
    t = rng.uniform(1.0, 3.0)
    for start, ms in zip(spans.start_s, spans.duration_ms, strict=True):
        costs = demands[corpus.pick(rng)]
        assert start == pytest.approx(t, abs=1e-9)
        assert np.min(np.abs(costs * 1000.0 - ms)) < 1e-6  # one of the program's measured runs
        t = start + ms / 1000.0 + rng.uniform(1.0, 3.0)


def test_many_students_through_rises_and_falls_submit_their_own_streams_and_nothing_else():
    """Four students, then the level rising and falling through 0 with requests in flight,
    on replicas enough that every request runs alone (its span lasts its demand): each
    student's stream is the programs its injector generator picks, costed from that
    program's measured runs, and the spans are exactly the submissions the streams say
    were made (a stopped student's last request still ends; it sends nothing after)."""
    app = SANDBOX_LIVE.with_overrides(overhead_ms=0.0, cpu_limit=1.0, cpu_request=1.0, burst_cores=1.0,
                                      wall_limit_ms=None)
    settings = ClusterSettings(min_replicas=1, max_replicas=12, initial_replicas=12, startup_seconds=0.0,
                               balancer="least-requests", think_low_s=0.2, think_high_s=1.0, students="injector")
    rng_think, rng_demand = np.random.default_rng(1), np.random.default_rng(2)
    demands = app.demand.program_demands_s()
    students = InjectorStudents(InjectorDraws(seed=9, first_number=3), (0.2, 1.0), "v1", demands, rng_demand, rng_think)
    cluster = SimCluster(app, settings, rng_think, rng_demand, np.random.default_rng(3), students=students)
    durations = []
    for t, level in ((0, 4), (20, 2), (35, 0), (50, 5), (80, 1), (100, 6), (130, 6)):
        cluster.set_users(level)
        durations.append(cluster.run_to(t + 15.0).spans.duration_ms)
    durations = np.sort(np.concatenate(durations))
    corpus = load_corpus("v1")
    made, answered, stopped = [], 0, 0
    for u in range(cluster.students.created):
        rng = random.Random(f"9:0:{3 + u}")  # student number first_number + u took user index u
        rng.uniform(0.2, 1.0)
        # answers it read (each moved its stream on), and, once stopped, one request that may have been running
        sent = int(cluster.u_next[u]) + (0 if cluster.u_active[u] else 1)
        for k in range(sent):
            costs = demands[corpus.pick(rng)]
            assert np.min(np.abs(costs - cluster.u_demand[u, k])) == 0.0, (u, k)  # its own program's run
            assert cluster.u_think[u, k] == rng.uniform(0.2, 1.0)
        made += list(cluster.u_demand[u, :sent] * 1000.0)
        answered += int(cluster.u_next[u])
        stopped += 0 if cluster.u_active[u] else 1
    assert cluster.students.created == students_created([4, 2, 0, 5, 1, 6, 6]) == 4 + 5 + 5 and stopped == 14 - 6
    # the spans: every answer a working student read, plus the last requests of stopped ones that were running
    assert answered <= len(durations) <= answered + stopped and len(durations) > 100
    assert np.isin(np.round(durations, 6), np.round(np.array(made), 6)).all()  # each one a submission made


def test_a_fall_of_the_level_stops_students_and_a_rise_brings_new_numbers():
    cluster, _ = _student_cluster(InjectorDraws(seed=5), think=(0.5, 1.0))
    cluster.set_users(4)
    cluster.run_to(10.0)
    cluster.set_users(2)
    assert int(cluster.u_active.sum()) == 2 and cluster.students.created == 4
    cluster.set_users(5)
    assert int(cluster.u_active.sum()) == 5 and cluster.students.created == 7  # three new students, numbers 4-6
    assert list(np.flatnonzero(cluster.u_active)[-3:]) == [4, 5, 6]
    before = cluster.requests_started
    cluster.run_to(40.0)
    assert cluster.requests_started > before


def _week(**over):
    cfg = load_config(config_path("live-evaluation-week"), backend="sim", runs=2, **over)
    return cfg, resolve(cfg)


def test_an_episode_replays_the_students_of_its_place_in_the_live_folder():
    cfg, r = _week()
    loads = np.array([r.workload.users_at(k * cfg.step_seconds) for k in range(r.steps)])
    seeds = episode_seeds(cfg.seed, cfg.runs, len(cfg.policies))
    per_episode = students_created([int(x) for x in loads])
    draws = injector_draws(cfg, r, dict(seeds[1], policy=seeds[1]["policy"][2]), loads, (1, 2))
    assert draws == InjectorDraws(seed=seeds[1]["policy"][2], first_number=5 * per_episode)
    # runs repeating live folders of one run: run 1 is run 0 again, its own noise aside
    cfg1, _ = _week(seed_runs=1)
    again = episode_seeds(cfg1.seed, 2, 3, seed_runs=1)
    assert again[1]["policy"] == again[0]["policy"] and again[1]["calendar"] == again[0]["calendar"]
    assert again[1]["demand"] == seeds[1]["demand"] != again[0]["demand"]
    assert injector_draws(cfg1, r, dict(again[1], policy=again[1]["policy"][2]), loads, (1, 2)).first_number \
        == 2 * per_episode


def test_injector_students_need_a_corpus_closed_workload_on_the_event_engine():
    with pytest.raises(ConfigError, match=r"cluster\.students"):
        load_config(config_path("live-evaluation-week"), cluster={"students": "locust"})
    with pytest.raises(ConfigError, match="engine: des only"):
        load_config(config_path("live-evaluation-week"), engine="fluid")
    with pytest.raises(ConfigError, match=r"not replay, des"):
        load_config(config_path("live-evaluation-week"), backend="replay")
    cfg = load_config({"workload": {"kind": "paper-sim-v1"}, "cluster": {"students": "injector"}})
    with pytest.raises(ConfigError, match="corpus"):
        injector_draws(cfg, resolve(cfg), {"policy": 1}, np.ones(3), (0, 0))


def test_the_same_seed_gives_the_same_students_and_the_run_s_noise_its_own_costs(tmp_path):
    from scalelab.experiments.experiment import run_experiment
    from scalelab.experiments.runfolder import read_steps

    def steps(seed_runs, out):
        cfg = load_config(config_path("live-evaluation-week"), backend="sim", runs=2, steps=60, seed_runs=seed_runs)
        cfg.policies = cfg.policies[1:2]
        return read_steps(run_experiment(cfg, out=out, progress=False, report=False).path)

    a, b = steps(1, tmp_path / "a"), steps(1, tmp_path / "b")
    assert a.equals(b)
    r0, r1 = a[a.run == 0], a[a.run == 1]
    # the same students: the submissions per step nearly equal; their costs differ a little
    assert np.corrcoef(r0.spans, r1.spans)[0, 1] > 0.9 and not np.array_equal(r0.p95_ms, r1.p95_ms)


def test_the_runners_students_draw_from_their_own_streams_too():
    """On the jobs engine the same students submit their programs as jobs: every
    submission's demand comes from its student's stream, none from the shared buffer."""
    from scalelab.experiments.episode import make_backend
    from scalelab.orchestrator.backend import VirtualClock

    cfg = load_config(config_path("live-evaluation-week-jobs"), backend="sim", runs=1)
    r = resolve(cfg)
    loads = np.array([r.workload.users_at(k * cfg.step_seconds) for k in range(r.steps)])
    seeds = dict(episode_seeds(cfg.seed, 1, len(cfg.policies))[0])
    seeds["policy"] = seeds["policy"][0]
    clock = VirtualClock()
    backend = make_backend(cfg, r, seeds, loads, clock, episode=(0, 0))
    backend.set_load(12)
    clock.sleep_until(120.0)
    backend.observe()
    cluster = backend.deployment
    assert cluster.students is not None and cluster.students.created == 12
    from scalelab.simulator import engine as E

    assert cluster.meta[E.M_STREAMED] > 12 and cluster.meta[E.M_DEMAND] == 0
    assert cluster.requests_started == cluster.meta[E.M_STREAMED]


def test_the_floor_warns_when_a_live_folder_numbered_its_students_otherwise(tmp_path):
    """A live folder whose injector restarted, or with a failed episode, numbers its
    students otherwise than the simulator replays them: the floor says so."""
    import json

    from scalelab.experiments.twin import floor_lines, injector_breaks

    folder = tmp_path / "live"
    (folder / "parts" / "hpa--run000").mkdir(parents=True)
    (folder / "services.json").write_text(json.dumps({"restarts": {"injector": 1, "orchestrator": 0}}))
    (folder / "parts" / "hpa--run000" / "status.json").write_text(json.dumps({"status": "failed"}))
    assert injector_breaks(folder) == {"injector_restarts": 1, "failed_episodes": 1}
    assert injector_breaks(tmp_path) == {}  # a simulated folder: nothing to say
    import pandas as pd

    runs = pd.DataFrame(columns=["policy", "metric", "p_sim_live", "p_live_live"])
    floor = {"cells": {"cells": 0, "sim_live": np.nan, "live_live": np.nan, "sim_live_ci": (np.nan, np.nan),
                       "live_live_ci": (np.nan, np.nan)},
             "minutes": {q: {"sim_live": np.nan, "live_live": np.nan, "minutes": 0} for q in ("p95_ms", "rps")},
             "runs": runs, "draws": {}, "live_sides": 2, "students": "injector", "broken_numbering": ["B"],
             "verdicts": {"per-cell p95 quantiles": None, "per-minute p95 within 10 %": None,
                          "per-minute throughput within 10 %": None, "per-run means equivalent (TOST)": False,
                          "ranking": False}}
    assert any(line.startswith("- WARNING: live B: the injector restarted") for line in floor_lines(floor))
    assert not any("WARNING" in line for line in floor_lines({**floor, "broken_numbering": []}))


def test_the_docs_figures_of_the_simulator_against_itself_and_of_the_spent_cpu_over_seeds(capsys):
    """docs/evaluation-week.md quotes ``scripts/twin_draws.py`` (the simulated week against
    itself) and the CPU per request ``sandbox-live``'s replicas spend over simulator seeds
    0-5 on the recording's cells: both recomputed here."""
    import runpy
    import sys
    from pathlib import Path

    from scalelab.experiments.calibration_report import dataset_samples

    root = Path(__file__).parents[1]
    doc = " ".join((root / "docs" / "evaluation-week.md").read_text().split())
    argv, sys.argv = sys.argv, ["twin_draws.py"]
    try:
        runpy.run_path(str(root / "scripts" / "twin_draws.py"), run_name="__main__")
    finally:
        sys.argv = argv
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in capsys.readouterr().out.splitlines()[1:]}
    for label, doc_label in (("other draws (pairs of runs)", "other draws (another run's seeds)"),
                             ("same draws, overhead_ms + 1 ms", "the same draws, 1 ms more overhead per request"),
                             ("same draws, overhead_ms + 4 ms", "the same draws, 4 ms more overhead"),
                             ("same draws, add_ms + 5 ms", "the same draws, 5 ms more CPU per request")):
        cell, minutes = rows[label]
        assert f"| {doc_label} | {cell} | {minutes.rstrip('%')} % |" in doc, label
    target = dataset_samples(SANDBOX_LIVE, root / "simulator" / "data" / "live-sandbox-students.parquet", steps=150)
    spent = [target.score(target.app, seed=s).cpu_per_request_s * 1000 for s in range(6)]
    assert f"{min(spent):.0f}-{max(spent):.0f} ms over seeds 0-5, median {np.median(spent):.0f}" in doc
