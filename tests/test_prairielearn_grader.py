"""PrairieLearn's external-grader autoscaling (``grader_loads_current.sql`` and
``externalGraderLoad.ts`` at PrairieLearn 88fb855): synthetic inputs whose result is worked
out by hand from the SQL in each test, then the policy driven through ``decide`` on the
jobs model's queue signals."""

from __future__ import annotations

import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.policies.prairielearn_grader import (
    GraderLoads,
    PrairieLearnGrader,
    TimeSeries,
    applies,
    grader_loads_current,
)
from scalelab.orchestrator.backend import Observation, PodSample, QueueSignals
from scalelab.orchestrator.context import Context


def loads(in_service=2, current_jobs=0.0, ungraded=0, users=0, instance_count=None, per_grader=5):
    return GraderLoads(instance_count=in_service if instance_count is None else instance_count,
                       instance_count_in_service=in_service, current_jobs=current_jobs,
                       max_jobs=float(per_grader * in_service), ungraded_jobs=float(ungraded), current_users=users)


def test_the_backlog_sizes_the_fleet():
    """2 graders in service, 5 jobs each: max_jobs 10, jobs_per_instance = max(10 / 2, 1) = 5.
    23 ungraded jobs: 23 / 5 = 4.6; current 7.5 jobs: 7.5 · 1 / 5 = 1.5; no history, no
    users. desired_instances_current = ceil(max(1, 4.6, 1.5, 0, 0, 0)) = 5; no history
    either, so desired_instances = 5, which differs from the 2 instances: applied."""
    r = grader_loads_current(0.0, loads(in_service=2, current_jobs=7.5, ungraded=23), TimeSeries(900))
    assert r.jobs_per_instance == 5.0
    assert r.desired_instances_by_ungraded_jobs == pytest.approx(4.6)
    assert r.desired_instances_by_current_jobs == 1.5
    assert r.load_perc == 75.0
    assert (r.desired_instances_current, r.desired_instances_history, r.desired_instances) == (5, 0, 5)
    assert applies(r)


def test_no_grader_in_service_makes_each_job_an_instance():
    """No grader in service: max_jobs 0, jobs_per_instance = max(0 / max(0, 1), 1) = 1, so
    3 ungraded jobs ask for ceil(3 / 1) = 3 instances; nothing at all asks for 1."""
    r = grader_loads_current(0.0, loads(in_service=0, ungraded=3, instance_count=0), TimeSeries(900))
    assert (r.jobs_per_instance, r.desired_instances) == (1.0, 3)
    r = grader_loads_current(0.0, loads(in_service=0, instance_count=0), TimeSeries(900))
    assert r.desired_instances == 1 and applies(r)


def test_the_history_holds_the_fleet_for_900_seconds():
    """Anti-flapping. t=0: as in the backlog example, 5. t=8: the load is gone (no jobs);
    history_jobs = max(7.5) → 7.5 / 5 = 1.5, so desired_instances_current = ceil(1.5) = 2,
    and the history of desired_instances_current, max(5), keeps desired_instances at 5.
    t=900: only the rows after 900 − 900 = 0 count (strictly), the t=8 run's: current_jobs
    0, desired_instances_current 2 → desired_instances = max(1, 2) = 2. t=908: no row after
    8 → 1."""
    series = TimeSeries(900)
    assert grader_loads_current(0.0, loads(current_jobs=7.5, ungraded=23), series).desired_instances == 5
    r = grader_loads_current(8.0, loads(instance_count=5, in_service=5), series)
    assert (r.history_jobs, r.jobs_per_instance) == (7.5, 5.0)
    assert (r.desired_instances_current, r.desired_instances_history, r.desired_instances) == (2, 5, 5)
    assert not applies(r)  # 5 == the 5 instances: left alone
    r = grader_loads_current(900.0, loads(instance_count=5, in_service=5), series)
    assert (r.history_jobs, r.desired_instances_current, r.desired_instances_history) == (0.0, 1, 2)
    assert r.desired_instances == 2
    r = grader_loads_current(908.0, loads(instance_count=2), series)
    assert r.desired_instances == 1


def test_users_predict_the_load():
    """One grader (jobs_per_instance 5), 5 jobs in grading, 5 ungraded, the users varying.
    t=0, 10 users: grading_jobs_per_user 0.5, no history: 1 instance.
    t=8, 10 users: average_grading_jobs_per_user = avg(0.5) = 0.5 (the t=0 row); its history
    max(0) = 0 (t=0's average); still 1.
    t=16, 40 users: grading_jobs_per_user 0.125; average = avg(0.5, 0.5) = 0.5; history max(0,
    0.5) = 0.5; predicted_jobs_by_current_users = 0.5 · 40 = 20 → 20 / 5 = 4 instances.
    t=24, no users, no jobs: predicted_jobs_by_history_users = max(0, 0, 20) = 20 → 4."""
    series = TimeSeries(900)
    one = dict(in_service=1, current_jobs=5.0, ungraded=5)
    r = grader_loads_current(0.0, loads(users=10, **one), series)
    assert (r.grading_jobs_per_user, r.desired_instances) == (0.5, 1)
    r = grader_loads_current(8.0, loads(users=10, **one), series)
    assert (r.average_grading_jobs_per_user, r.history_grading_jobs_per_user, r.desired_instances) == (0.5, 0.0, 1)
    r = grader_loads_current(16.0, loads(users=40, **one), series)
    assert r.grading_jobs_per_user == 0.125
    assert (r.average_grading_jobs_per_user, r.history_grading_jobs_per_user) == (0.5, 0.5)
    assert r.predicted_jobs_by_current_users == 20.0
    assert (r.desired_instances_by_current_users, r.desired_instances) == (4.0, 4)
    r = grader_loads_current(24.0, loads(in_service=1), series)
    assert r.average_grading_jobs_per_user == pytest.approx(0.375)
    assert (r.predicted_jobs_by_current_users, r.predicted_jobs_by_history_users) == (0.0, 20.0)
    assert (r.desired_instances_current, r.desired_instances) == (4, 4)


def test_capacity_factors():
    """externalGradingCurrentCapacityFactor 1.5: 8 current jobs on 5-job graders ask for
    ceil(8 · 1.5 / 5) = ceil(2.4) = 3."""
    r = grader_loads_current(0.0, loads(in_service=1, current_jobs=8.0), TimeSeries(900), 900.0, 1.5, 1.0)
    assert r.desired_instances == 3


# -- the policy -----------------------------------------------------------------------------


def observe(t, ready, waiting, in_progress, starting=0):
    pods = tuple(PodSample(f"g{i}", "starting" if i < starting else "ready", 0.0, None if i < starting else 1.0,
                           1.0, 1.0, 512.0, 512.0, 0.1, 100.0) for i in range(ready + starting))
    return Observation(t_s=t, context=Context(ready, 100.0, 0.0, 0.1, 0.1, 0.1, 0.1), desired_replicas=ready + starting,
                       pods=pods, queue=QueueSignals(lag=waiting + in_progress, waiting=waiting,
                                                     in_progress=in_progress, runners=ready + starting))


def decide(p, t, current, obs, **info):
    return p.decide(obs.context, {"t_s": t, "current_replicas": current, "observation": obs, **info})


def test_the_policy_runs_on_its_8_second_cron():
    """Steps of 5 s: the SQL runs at t=0, then at the first step 8 s or more later (10, 20, ...);
    in between it holds. t=0: 2 graders, 3 waiting and 10 in progress → ungraded 13 / 5 =
    2.6 → 3. t=5: holds 2 (the current count). t=10: the current jobs are the mean of the
    samples of the last 10 s (t=5 and t=10: 10 and 20 → 15): 15 / 5 = 3; ungraded 40 / 5 = 8."""
    p = PrairieLearnGrader(max_replicas=20)
    assert decide(p, 0.0, 2, observe(0.0, 2, 3, 10)).action == 3
    assert decide(p, 5.0, 2, observe(5.0, 2, 30, 10)).action == 2
    assert decide(p, 10.0, 2, observe(10.0, 2, 20, 20)).action == 8
    assert p.last.current_jobs == 15.0


def test_it_leaves_the_count_when_it_equals_the_reporting_graders():
    """externalGraderLoad.ts: no call when desired_instances equals instance_count (the
    graders reporting: ready ones, not those still starting)."""
    p = PrairieLearnGrader()
    d = decide(p, 0.0, 4, observe(0.0, 3, 2, 10, starting=1))  # (2 + 10) / 5 → 3 == 3 reporting
    assert (p.last.desired_instances, p.last.instance_count, d.action) == (3, 3, 4)


def test_users_come_from_the_runner():
    p = PrairieLearnGrader()
    decide(p, 0.0, 1, observe(0.0, 1, 0, 5), users=10)
    assert p.last.current_users == 10 and p.last.grading_jobs_per_user == 0.5
    p = PrairieLearnGrader()
    decide(p, 0.0, 1, observe(0.0, 1, 0, 5))
    assert p.last.current_users == 0 and p.last.predicted_jobs_by_current_users == 0.0


def test_bad_parameters_and_the_service_model():
    with pytest.raises(PolicyError, match="max_concurrent_jobs=0"):
        PrairieLearnGrader(max_concurrent_jobs=0)
    with pytest.raises(PolicyError, match="external_grading_load_average_interval_sec=10"):
        PrairieLearnGrader(external_grading_load_average_interval_sec=10.0)
    obs = observe(0.0, 1, 0, 0)
    with pytest.raises(PolicyError, match=r"needs the jobs model \(architecture: jobs\)"):
        decide(PrairieLearnGrader(), 0.0, 1, Observation(0.0, obs.context, 1))
