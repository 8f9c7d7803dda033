"""The jobs model (simulator/jobs.py): queueing theory where it has a closed form, the
consumer group's rules, the offsets' invariants, one-shot runners, determinism, and a
whole run of an ``architecture: jobs`` config."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab import load_config, run_experiment
from scalelab.experiments.config import ConfigError
from scalelab.experiments.runfolder import read_steps
from scalelab.orchestrator.backend import QUEUE_COLUMNS, VirtualClock
from scalelab.orchestrator.context import ContextSettings
from scalelab.simulator import engine as E
from scalelab.simulator.backends import JobsBackend, stream_seeds
from scalelab.simulator.cluster import ClusterSettings
from scalelab.simulator.jobs import JobsCluster, JobsSettings
from scalelab.simulator.models import find_profile

#: Exponential work of mean 1 s; a runner's CPU limit (2 cores) above what one job uses
#: (one core): the quota never binds, so a runner holding one job serves at rate 1. A
#: long CFS period only spares the engine its period-boundary events.
EXP_APP = find_profile("paper").with_overrides(
    demand={"kind": "exponential", "mean_ms": 1000.0}, cpu_request=0.5, cpu_limit=2.0, burst_cores=1.0,
    contention=0.0, overhead_ms=0.0, sidecar="none", cfs_period_ms=60_000.0)


def erlang_c(c: int, a: float) -> float:
    """The probability that an arrival waits in M/M/c with offered load ``a = λ/μ``."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def _cluster(app, c: int, jobs: JobsSettings, seed: int = 1, **kw) -> JobsCluster:
    think, demand, arrivals, part = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    settings = ClusterSettings(**{"min_replicas": 1, "max_replicas": max(c, 1), "initial_replicas": c,
                                  "startup_seconds": 0.0, **kw})
    return JobsCluster(app, settings, jobs, think, demand, arrivals, part, max_users=64)


def _waits(cluster: JobsCluster, rate: float, horizon_s: float, warmup_s: float = 2000.0) -> np.ndarray:
    """Waits in queue (start - submit, s) of the jobs submitted after ``warmup_s`` under
    Poisson arrivals at ``rate`` per second until ``horizon_s``."""
    out, t = [], 0.0
    while t < horizon_s:
        t += 1000.0
        cluster.add_open_arrivals(rate, t)
        s = cluster.run_to(t)
        out.append(s.wait_s[s.submit_s >= warmup_s])
    return np.concatenate(out)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_a_shared_queue_of_c_single_slot_runners_is_erlang_c(rho):
    """M/M/c: c = 4 runners of one slot taking any partition's oldest job (the shared
    assignor), Poisson submissions, exponential work, no pause. Over 10^6 s (2-3.6 million
    jobs) the mean wait and the probability of waiting are within 5 % of Erlang C's
    (seed 1: at 0.5, W_q -0.1 %, P(wait) +0.3 %; at 0.9, +1.6 % and +0.3 %; eight other
    seeds within 2.5 %)."""
    c, mu = 4, 1.0
    lam = rho * c * mu
    waits = _waits(_cluster(EXP_APP, c, JobsSettings(partitions=8, max_concurrent_jobs=1, rebalance_seconds=0.0,
                                                     assignor="shared")), lam, 1_000_000.0)
    p_wait = erlang_c(c, lam / mu)
    w_q = p_wait / (c * mu - lam)
    assert waits.mean() == pytest.approx(w_q, rel=0.05)
    assert (waits > 0).mean() == pytest.approx(p_wait, rel=0.05)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_a_consumer_group_of_single_slot_runners_is_c_separate_queues(rho):
    """With partitions owned (range assignor), a job waits for its partition's runner even
    when another is idle: 8 partitions on 4 runners, a uniformly random partition per job,
    is 4 separate M/M/1 queues fed λ/4 each (W_q = ρ/(μ - λ/4), P(wait) = ρ), not M/M/c
    (seed 1: at 0.5, W_q +0.3 %, P(wait) +0.2 %; at 0.8, +1.0 % and +0.2 %)."""
    c, mu = 4, 1.0
    lam = rho * c * mu
    waits = _waits(_cluster(EXP_APP, c, JobsSettings(partitions=8, max_concurrent_jobs=1, rebalance_seconds=0.0)),
                   lam, 1_000_000.0)
    assert waits.mean() == pytest.approx(rho / (mu - lam / c), rel=0.05)
    assert (waits > 0).mean() == pytest.approx(rho, rel=0.05)
    assert waits.mean() > 1.5 * erlang_c(c, lam / mu) / (c * mu - lam)  # pooling would wait far less


@pytest.mark.parametrize("assignor", ["range", "round-robin"])
def test_a_runner_beyond_the_partitions_holds_none_and_idles(assignor):
    cluster = _cluster(EXP_APP, 3, JobsSettings(partitions=2, max_concurrent_jobs=2, assignor=assignor))
    held = cluster.held_partitions()
    assert sorted(len(v) for v in held.values()) == [0, 1, 1]
    idle = next(name for name, parts in held.items() if not parts)
    cluster.add_open_arrivals(3.0, 600.0)
    s = cluster.run_to(600.0)
    ran = {cluster.pod_name[r] for r in s.runner}
    assert len(s.runner) > 1000 and ran == set(held) - {idle}
    cpu = {name: c for name, _, _, _, c, _ in cluster.pod_view()}
    assert cpu[idle] == 0.0 and min(v for k, v in cpu.items() if k != idle) > 0.5


def test_range_and_round_robin_assign_as_kafka_does():
    rr = _cluster(EXP_APP, 3, JobsSettings(partitions=7, assignor="round-robin")).held_partitions()
    rng = _cluster(EXP_APP, 3, JobsSettings(partitions=7)).held_partitions()
    assert list(rng.values()) == [[0, 1, 2], [3, 4], [5, 6]]
    assert list(rr.values()) == [[0, 3, 6], [1, 4], [2, 5]]


def _backend(jobs: JobsSettings, seed: int = 1, replicas: int = 2, closed: bool = True, app=None,
             startup_s: float = 10.0, max_replicas: int = 6) -> tuple[JobsBackend, VirtualClock]:
    clock = VirtualClock()
    cluster = ClusterSettings(min_replicas=1, max_replicas=max_replicas, initial_replicas=replicas,
                              startup_seconds=startup_s)
    return JobsBackend(app or find_profile("sandbox"), cluster, jobs, ContextSettings(), clock, stream_seeds(seed),
                       closed=closed, max_users=64), clock


def _jobs_of(b: JobsBackend, until_s: float, every_s: float = 0.5) -> dict[str, np.ndarray]:
    """Run the backend's runners to ``until_s`` in steps of ``every_s``; every job finished:
    its start, finish (s) and runner (pod name)."""
    start, finish, runner = [], [], []
    overhead = b.deployment.app.overhead_ms / 1000.0
    clock = b.clock
    while clock.now() < until_s - 1e-9:
        clock.sleep_until(min(until_s, clock.now() + every_s))
        s = b.deployment.run_to(clock.now())
        start.extend((s.submit_s + s.wait_s).tolist())
        finish.extend((s.submit_s + s.turnaround_s - overhead).tolist())
        runner.extend(b.deployment.pod_name[r] for r in s.runner)
    return {"start": np.array(start), "finish": np.array(finish), "runner": np.array(runner)}


def _rebalanced_at(jobs: dict[str, np.ndarray], change_s: float, window_s: float, members: list[str]) -> float:
    """When the group takes jobs again after a change at ``change_s``: the join window
    closes ``window_s`` later; a member still holding a job then (one started before the
    change, finishing after the window) is back when its last one finishes, and another
    window follows."""
    held = (jobs["start"] <= change_s) & np.isin(jobs["runner"], members)
    back = jobs["finish"][held].max(initial=change_s)
    return change_s + window_s if back <= change_s + window_s else back + window_s


@pytest.mark.parametrize("window_s", [0.05, 4.0, 12.0])
def test_a_runner_joining_stops_the_group_until_the_window_closes_and_its_members_are_back(window_s):
    """A runner ordered at 100 s is ready at 110 s. No job starts from then until the join
    window closes (``rebalance_seconds`` later) with every member back -- a member holding
    jobs finishes them first (the runners' revoke callback), and one that misses the
    window is waited for and another window follows (measured on the live runners:
    ``scripts/measure_rebalance.py``); then the partitions are assigned anew and the
    first jobs start at that instant. With sandbox jobs (a runner full at 2 jobs) the
    three windows cover both cases."""
    b, clock = _backend(JobsSettings(partitions=6, max_concurrent_jobs=2, rebalance_seconds=window_s), replicas=1,
                        startup_s=10.0)
    b.set_load(30)
    clock.sleep_until(100.0)
    b.observe()
    b.scale_to(2)
    jobs = _jobs_of(b, 160.0)
    expected = _rebalanced_at(jobs, 110.0, window_s, ["runner-0"])
    after = np.sort(jobs["start"][jobs["start"] > 110.0])
    assert jobs["start"][(jobs["start"] > 100.0) & (jobs["start"] <= 110.0)].size > 0
    assert after[0] == pytest.approx(expected, abs=1e-9)
    assert set(jobs["runner"][jobs["start"] > 110.0]) == {"runner-0", "runner-1"}
    assert list(b.deployment.held_partitions().values()) == [[0, 1, 2], [3, 4, 5]]
    if window_s == 0.05:
        assert expected > 110.0 + window_s, "a member still held a job: it missed the window"


def test_a_draining_runner_keeps_its_partitions_until_drained_then_leaves_and_all_is_committed():
    """Scaled from 3 runners to 1: the two removed take no new job and keep their
    partitions (2-5: range over 3) until they have finished theirs, while the one that
    stays goes on with its own (0, 1) until the first of them leaves; that starts a
    rebalance whose window waits for the other, still finishing its jobs, so the group
    takes jobs again one window after the last has left (or after the jobs the runner that
    stays held then), and the runner left holds all six. Every offset is committed at the
    end."""
    window_s = 3.0
    b, clock = _backend(JobsSettings(partitions=6, max_concurrent_jobs=5, rebalance_seconds=window_s), replicas=3)
    b.set_load(40)
    for k in range(40):
        clock.sleep_until((k + 1) * 5.0)
        b.observe()
    b.scale_to(1)
    change = clock.now()
    clock.sleep_until(change + 0.001)
    obs = b.observe()
    draining = [p.pod for p in obs.pods if p.phase == "draining"]
    assert sorted(draining) == ["runner-1", "runner-2"], "the removed runners hold jobs: they drain"
    assert obs.queue.runners == 3 and obs.context.replicas == 1
    assert list(b.deployment.held_partitions().values()) == [[0, 1]]  # no rebalance yet
    jobs = _jobs_of(b, change + 60.0)
    left = jobs["finish"][np.isin(jobs["runner"], draining)].max()  # the last one leaves
    assert not np.isin(jobs["runner"][jobs["start"] > change], draining).any(), "a draining runner takes nothing"
    before = jobs["start"][(jobs["start"] > change) & (jobs["start"] < left)]
    assert before.size > 0, "the runner that stays goes on with its partitions"
    expected = _rebalanced_at(jobs, left, window_s, ["runner-0"])
    later = np.sort(jobs["start"][jobs["start"] >= left])
    assert later[0] == pytest.approx(expected, abs=1e-9)
    assert list(b.deployment.held_partitions().values()) == [list(range(6))]
    b.set_load(0)
    for _ in range(60):
        clock.sleep_until(clock.now() + 5.0)
        obs = b.observe()
    q = obs.queue
    assert [p.phase for p in obs.pods] == ["ready"] and q.runners == 1
    assert q.lag == q.waiting == q.in_progress == 0
    assert all(p.committed == p.latest > 0 for p in q.partitions)


def test_job_mode_runs_one_job_per_runner_and_never_removes_one():
    b, clock = _backend(JobsSettings(runner_mode="job"), replicas=2, startup_s=2.0)
    b.set_load(20)
    ran: list[str] = []
    for k in range(100):
        clock.sleep_until((k + 1) * 5.0)
        s = b.deployment.run_to(clock.now())
        ran.extend(b.deployment.pod_name[r] for r in s.runner)
        b.scale_to(4)  # tops up to 4 starting or ready runners
        assert b.deployment.desired_replicas == 4
        runners = b.deployment.runners
        assert b.scale_to(1).applied == 1  # never kills: every runner stays
        assert b.deployment.runners == runners and b.deployment.desired_replicas == 4
    assert len(ran) > 50
    assert len(set(ran)) == len(ran), "a one-shot runner runs exactly one job"
    obs = b.observe()
    assert obs.queue.runners_busy <= obs.queue.runners
    assert max(b.deployment.ri[:, E.RI_N]) <= 1


@given(
    assignor=st.sampled_from(["range", "round-robin", "shared"]),
    mode=st.sampled_from(["deployment", "job"]),
    partitions=st.integers(1, 5),
    maxc=st.integers(1, 3),
    rebalance=st.sampled_from([0.0, 2.0]),
    fetch=st.sampled_from([0.0, 0.5]),
    plan=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4), st.floats(0.5, 20.0)), min_size=1, max_size=12),
    seed=st.integers(0, 3),
)
def test_offsets_invariants(assignor, mode, partitions, maxc, rebalance, fetch, plan, seed):
    """After every step, per partition: 0 <= committed <= taken <= latest, the reported
    committed offset is the internal one (INVALID before the first commit); lag =
    Σ(latest - committed) >= waiting + in_progress; waiting = Σ(latest - taken); every
    job submitted is waiting, in progress or finished; a runner holds at most its slots
    (one in job mode); busy runners <= runners. Then, with no more submissions and two
    runners ordered, every job finishes and is committed (no rebalance waits forever)."""
    jobs = JobsSettings(partitions=partitions, max_concurrent_jobs=maxc, runner_mode=mode,
                        rebalance_seconds=rebalance, assignor=assignor, fetch_wait_seconds=fetch)
    b, clock = _backend(jobs, seed=seed, startup_s=3.0, max_replicas=4)
    c = b.deployment
    finished = 0
    for users, replicas, dt in plan:
        b.set_load(users)
        b.scale_to(replicas)
        clock.sleep_until(clock.now() + dt)
        b._advance()
        obs = b.observe()
        finished += obs.queue.completion_rate * dt
        q = obs.queue
        assert np.all(0 <= c.committed) and np.all(c.committed <= c.taken) and np.all(c.taken <= c.latest)
        assert [p.latest for p in q.partitions] == c.latest.tolist()
        assert [max(p.committed, 0) for p in q.partitions] == c.committed.tolist()
        assert q.lag == int((c.latest - c.committed).sum()) == sum(p.lag for p in q.partitions)
        assert q.waiting == int((c.latest - c.taken).sum())
        assert q.waiting + q.in_progress <= q.lag
        assert c.ri[:, E.RI_N].max() <= (1 if mode == "job" else maxc)
        assert 0 <= q.runners_busy <= q.runners
    assert c.submitted == int(c.latest.sum())
    assert round(finished) + q.waiting + q.in_progress == c.submitted
    b.set_load(0)
    for _ in range(120):
        b.scale_to(2)
        clock.sleep_until(clock.now() + 5.0)
        b._advance()
        q = b.observe().queue
    assert q.waiting == q.in_progress == q.lag == 0


def _trace(seed: int) -> list[dict]:
    b, clock = _backend(JobsSettings(partitions=4, max_concurrent_jobs=3), seed=seed)
    out = []
    for k in range(60):
        b.set_load(10 + (k // 10) * 8)
        clock.sleep_until((k + 1) * 5.0)
        out.append(b.observe().to_dict())
        b.scale_to(1 + (k // 15))
    return out


def test_the_same_seeds_give_the_same_signals():
    first = _trace(5)
    assert first == _trace(5)
    assert first != _trace(6)
    assert any(o["queue"]["waiting"] > 0 for o in first)


def test_censored_turnaround_when_nothing_finished():
    """A window with no job finished but jobs waiting reads their ages, as the service's
    empty windows read the in-flight requests' ages."""
    slow = find_profile("sandbox").with_overrides(demand={"kind": "fixed-cpu", "cpu_ms": 60_000.0, "cv": 0.0},
                                                  wall_limit_ms=None)
    b, clock = _backend(JobsSettings(partitions=2, max_concurrent_jobs=1), app=slow, closed=False, replicas=1)
    b.set_load(1.0)
    for k in range(6):
        clock.sleep_until((k + 1) * 5.0)
        obs = b.observe()
    q = obs.queue
    assert q.completion_rate == 0 and q.censored == q.waiting + q.in_progress > 0
    assert q.turnaround_p95_ms > 20_000 and obs.context.p95_ms > 0 and obs.censored > 0
    assert q.oldest_wait_s > 20


JOBS = {
    "name": "jobs-small",
    "seed": 3,
    "runs": 1,
    "architecture": "jobs",
    "jobs": {"partitions": 6, "max_concurrent_jobs": 3, "rebalance_seconds": 2},
    "slo_ms": 3000,
    "app": {"profile": "sandbox"},
    "workload": {"kind": "step", "before": 5, "after": 30, "at_s": 60, "duration_s": 240},
    "cluster": {"max_replicas": 4, "startup_seconds": 5},
    "policies": [{"name": "static", "replicas": 2}, {"name": "hpa", "target_utilization": 60}, {"name": "oracle"}],
}


def test_run_experiment_on_the_jobs_model(tmp_path):
    result = run_experiment(load_config(JOBS), out=tmp_path, progress=False, workers=1, report=False)
    steps = read_steps(result.path)
    assert {"queue_" + k for k in QUEUE_COLUMNS} <= set(steps.columns)
    assert set(steps.policy) == {"static", "hpa", "oracle"}
    assert steps.queue_lag.max() > 0 and (steps.queue_runners >= 1).all()
    assert (steps.oracle_replicas >= 1).all()
    static = steps[steps.policy == "static"]
    assert (static.replicas == 2).all() and (static.queue_completion_rate > 0).any()
    assert steps[steps.policy == "hpa"].target_replicas.max() > 1
    assert (steps.violation == (steps.p95_ms > 3000)).all()  # the turnaround scored as the service's p95


@pytest.mark.parametrize("change, message", [
    ({"engine": "fluid"}, r"engine='fluid' must be 'des' with architecture: jobs"),
    ({"backend": "replay", "dataset": "paper-D1"}, r"backend='replay' must be 'sim' or 'live' with architecture: jobs"),
    ({"jobs": {"partitions": 0}}, r"jobs.partitions=0 must be within"),
    ({"jobs": {"max_concurrent_jobs": 0}}, r"jobs.max_concurrent_jobs=0 must be >= 1"),
    ({"jobs": {"runner_mode": "pod"}}, r"jobs.runner_mode='pod' must be one of"),
    ({"jobs": {"rebalance_seconds": -1}}, r"jobs.rebalance_seconds=-1.0 must be >= 0"),
    ({"jobs": {"assignor": "sticky"}}, r"jobs.assignor='sticky' must be one of"),
    ({"jobs": {"fetch_wait_seconds": -0.5}}, r"jobs.fetch_wait_seconds=-0.5 must be within \[0, 60\]"),
    ({"jobs": {"fetch_wait_seconds": 600}}, r"jobs.fetch_wait_seconds=600.0 must be within \[0, 60\]"),
    ({"jobs": {"partition": 3}}, r"unknown key 'jobs.partition' \(value 3\); did you mean 'partitions'"),
    ({"architecture": "queue"}, r"architecture='queue' must be one of \['service', 'jobs'\]"),
    ({"architecture": "service", "jobs": {"partitions": 3}}, r"config: jobs=.* is read only with architecture: jobs"),
])
def test_bad_jobs_configs_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config({**JOBS, **change})


@pytest.mark.parametrize("cycle_s", [0.0, 0.5])
def test_a_job_is_seen_at_the_end_of_the_fetch_cycle_it_was_produced_in(cycle_s):
    """``fetch_wait_seconds``: the runners see a job at the end of the fetch cycle it was
    produced in (cycles of that length from t = 0, as the mock broker answers a fetch only
    when ``fetch.wait.max.ms`` has passed: measured on the live runners, an idle runner
    started jobs 0.007-0.497 s after they were sent, median 0.263 s). One runner with 5
    slots and Poisson jobs at 0.2/s: almost never full, so a job starts at its cycle's
    end, ``ceil(submit / W) W`` (at once without cycles), and none sooner; the mean wait
    is W / 2."""
    cluster = _cluster(EXP_APP, 1, JobsSettings(partitions=4, max_concurrent_jobs=5, fetch_wait_seconds=cycle_s))
    submit, wait = [], []
    for k in range(20):
        cluster.add_open_arrivals(0.2, (k + 1) * 100.0)
        s = cluster.run_to((k + 1) * 100.0)
        submit.append(s.submit_s)
        wait.append(s.wait_s)
    submit, wait = np.concatenate(submit), np.concatenate(wait)
    start = submit + wait
    due = np.ceil(submit / cycle_s) * cycle_s if cycle_s else submit
    assert submit.size > 300
    assert np.all(start >= due - 1e-9)
    assert np.mean(np.isclose(start, due, rtol=0.0, atol=1e-9)) > 0.99
    assert np.mean(wait) == pytest.approx(cycle_s / 2, abs=0.03)


def test_a_job_due_late_in_a_long_run_is_seen_at_its_cycles_end():
    """The fetch cycle's end is one expression for the event and for the jobs it shows: a
    job produced at 325,517.66 s with a 10-ms cycle (where ``t / W`` is 3e7, beyond the
    reach of a 1e-9 tolerance) starts at its cycle's end, not at the next submission."""
    cluster = _cluster(EXP_APP, 1, JobsSettings(partitions=2, fetch_wait_seconds=0.01))
    t0 = 325517.6629475164
    cluster.run_to(t0 - 1.0)
    cluster.open_arrivals = np.array([t0])
    cluster.meta[E.M_OPEN] = 0
    s = cluster.run_to(t0 + 100.0)
    assert s.submit_s.size == 1 and s.wait_s[0] == pytest.approx(np.ceil(t0 / 0.01) * 0.01 - t0, abs=1e-6)


def test_a_runner_ready_at_once_joins_at_once():
    """With no startup a runner added by scale_to is ready on the order: it joins then, and
    after the window the partitions are split between the two."""
    b, clock = _backend(JobsSettings(partitions=4, rebalance_seconds=2.0), replicas=1, startup_s=0.0)
    b.set_load(10)
    clock.sleep_until(50.0)
    b.observe()
    b.scale_to(2)
    clock.sleep_until(clock.now() + 20.0)
    b.observe()
    assert list(b.deployment.held_partitions().values()) == [[0, 1], [2, 3]]
