"""PrairieLearn's external-grader autoscaling, on the jobs model.

Followed: ``PrairieLearn/PrairieLearn`` (read at 88fb855, 2026-08):

* ``apps/prairielearn/src/sprocs/grader_loads_current.sql`` (the formula dates from 2018):
  :func:`grader_loads_current`, line for line, with its ``time_series`` table
  (:class:`TimeSeries`). Each history reads the rows written by the *earlier* runs (the
  SQL selects before it inserts), over ``date > now() - interval`` (strict).
* ``apps/prairielearn/src/ee/cron/externalGraderLoad.ts``: run every
  ``cronIntervalExternalGraderLoadSec`` (8 s), ``setAutoScalingGroupCapacity`` applies
  ``desired_instances`` when it is an integer in ``[1, 1e6]`` and differs from
  ``instance_count``.
* ``apps/prairielearn/src/lib/config.ts``: ``externalGradingLoadAverageIntervalSec`` 30,
  ``externalGradingHistoryLoadIntervalSec`` 900, ``externalGradingCurrentCapacityFactor``
  and ``externalGradingHistoryCapacityFactor`` 1.
* ``apps/grader-host/src/lib/load.ts``, ``config.ts``: each grader reports every
  ``reportIntervalSec`` (10 s) its ``average_jobs`` -- the time integral of its concurrent
  jobs since its previous report over the time elapsed -- and ``max_jobs`` =
  ``maxConcurrentJobs`` (5).

How scalelab fills the SQL's inputs from the observation (runners are graders):

* ``current_jobs``: the sum of the graders' ``average_jobs`` that reported within the
  30-s load-average interval. A runner reports every ``report_interval_sec``, so every
  runner counts, and the sum is the time-average of ``queue.in_progress`` over the last
  ``report_interval_sec`` (the mean of the samples the policy saw in that window). The
  brief of this port said "over the 30-s load-average interval"; the source averages over
  each grader's report interval and uses the 30 s only to drop stale reports, and is
  followed here.
* ``max_jobs``: ``max_concurrent_jobs`` x the in-service runners (ready pods; without
  pods, the context's ready replicas). ``instance_count_in_service``: the same runners.
  ``instance_count``: the runners reporting (ready or draining pods; without pods,
  ``queue.runners``).
* ``ungraded_jobs``: ``queue.waiting + queue.in_progress``.
* ``current_users``: ``info["users"]``, the students working now (the step loop gives the
  load offered during the step); without it 0, which turns both user-based predictions off (``predicted_jobs_by_current_users`` is then 0,
  and so is its history).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError, needs_queue
from scalelab.orchestrator.context import Context

#: The SQL's fixed window of ``average_grading_jobs_per_user``, s ("5 minutes").
AVERAGE_INTERVAL_S = 300.0
#: ``setAutoScalingGroupCapacity``'s upper bound.
MAX_DESIRED = 1_000_000
#: The series the SQL reads back.
SERIES = ("grading_jobs_per_user", "average_grading_jobs_per_user", "current_jobs",
          "predicted_jobs_by_current_users", "desired_instances_current")


class TimeSeries:
    """PrairieLearn's ``time_series`` table, for the series the SQL reads back: rows
    ``(t_s, name, value)``. Rows older than ``keep_s`` are dropped."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = float(keep_s)
        self.rows: list[tuple[float, str, float]] = []

    def insert(self, t: float, values: Mapping[str, float]) -> None:
        self.rows.extend((t, name, float(values[name])) for name in SERIES)
        self.rows = [r for r in self.rows if r[0] > t - self.keep_s]

    def values(self, name: str, now: float, interval_s: float) -> list[float]:
        """``SELECT value FROM time_series WHERE name = $name AND date > now() - $interval``."""
        return [v for t, n, v in self.rows if n == name and t > now - interval_s]

    def max(self, name: str, now: float, interval_s: float) -> float:
        """``coalesce(max(value), 0)``."""
        return max(self.values(name, now, interval_s), default=0.0)

    def avg(self, name: str, now: float, interval_s: float) -> float:
        """``coalesce(avg(value), 0)``."""
        v = self.values(name, now, interval_s)
        return sum(v) / len(v) if v else 0.0

    def state(self) -> list[list]:
        return [[t, n, v] for t, n, v in self.rows]

    def load(self, rows: list) -> None:
        self.rows = [(float(t), str(n), float(v)) for t, n, v in rows]


@dataclass(frozen=True)
class GraderLoads:
    """The SQL's inputs at one run: the grader instances' reports and the jobs and users."""

    instance_count: int
    instance_count_in_service: int
    current_jobs: float
    max_jobs: float
    ungraded_jobs: float
    current_users: int


@dataclass(frozen=True)
class GraderLoadsResult:
    """The SQL's outputs that the decision uses (and the ones CloudWatch shows about it)."""

    instance_count: int
    current_jobs: float
    max_jobs: float
    load_perc: float
    ungraded_jobs: float
    history_jobs: float
    current_users: int
    grading_jobs_per_user: float
    average_grading_jobs_per_user: float
    history_grading_jobs_per_user: float
    predicted_jobs_by_current_users: float
    predicted_jobs_by_history_users: float
    jobs_per_instance: float
    desired_instances_by_ungraded_jobs: float
    desired_instances_by_current_jobs: float
    desired_instances_by_history_jobs: float
    desired_instances_by_current_users: float
    desired_instances_by_history_users: float
    desired_instances_current: int
    desired_instances_history: int
    desired_instances: int


def grader_loads_current(now: float, loads: GraderLoads, series: TimeSeries, history_interval_s: float = 900.0,
                         current_capacity_factor: float = 1.0,
                         history_capacity_factor: float = 1.0) -> GraderLoadsResult:
    """``grader_loads_current`` at ``now`` (s): reads ``series`` (the earlier runs), then
    writes this run's rows to it, as the SQL does."""
    current_jobs, max_jobs = float(loads.current_jobs), float(loads.max_jobs)
    current_users = int(loads.current_users)
    grading_jobs_per_user = current_jobs / max(current_users, 1)
    average_grading_jobs_per_user = series.avg("grading_jobs_per_user", now, AVERAGE_INTERVAL_S)
    history_grading_jobs_per_user = series.max("average_grading_jobs_per_user", now, history_interval_s)
    predicted_jobs_by_current_users = history_grading_jobs_per_user * current_users
    history_jobs = series.max("current_jobs", now, history_interval_s)
    predicted_jobs_by_history_users = series.max("predicted_jobs_by_current_users", now, history_interval_s)
    load_perc = current_jobs / max(max_jobs, 1) * 100
    jobs_per_instance = max(max_jobs / max(loads.instance_count_in_service, 1), 1)
    by_ungraded = loads.ungraded_jobs / jobs_per_instance
    by_current = current_jobs * current_capacity_factor / jobs_per_instance
    by_history = history_jobs * history_capacity_factor / jobs_per_instance
    by_current_users = predicted_jobs_by_current_users / jobs_per_instance
    by_history_users = predicted_jobs_by_history_users / jobs_per_instance
    desired_current = math.ceil(max(1, by_ungraded, by_current, by_history, by_current_users, by_history_users))
    desired_history = round(series.max("desired_instances_current", now, history_interval_s))  # into an integer
    desired = max(desired_current, desired_history)
    series.insert(now, {"grading_jobs_per_user": grading_jobs_per_user,
                        "average_grading_jobs_per_user": average_grading_jobs_per_user,
                        "current_jobs": current_jobs,
                        "predicted_jobs_by_current_users": predicted_jobs_by_current_users,
                        "desired_instances_current": desired_current})
    return GraderLoadsResult(
        loads.instance_count, current_jobs, max_jobs, load_perc, float(loads.ungraded_jobs), history_jobs,
        current_users, grading_jobs_per_user, average_grading_jobs_per_user, history_grading_jobs_per_user,
        predicted_jobs_by_current_users, predicted_jobs_by_history_users, jobs_per_instance, by_ungraded, by_current,
        by_history, by_current_users, by_history_users, desired_current, desired_history, desired)


def applies(result: GraderLoadsResult) -> bool:
    """``setAutoScalingGroupCapacity``'s guard: an integer in ``[1, 1e6]`` other than the
    instance count."""
    d = result.desired_instances
    return 1 <= d <= MAX_DESIRED and d != result.instance_count


class PrairieLearnGrader(BasePolicy):
    """PrairieLearn's external-grader autoscaler (module docstring). Parameters, PrairieLearn's
    names in snake case and its defaults: ``max_concurrent_jobs`` 5 (the grader's
    ``maxConcurrentJobs``: set it to the runners' ``max_concurrent_jobs``),
    ``report_interval_sec`` 10 (the grader's ``reportIntervalSec``),
    ``external_grading_load_average_interval_sec`` 30 (must exceed the report interval:
    a grader whose report is older does not count; here every runner reports at every
    step, so no report is that old and it only validates), ``external_grading_history_load_interval_sec``
    900, ``external_grading_current_capacity_factor`` and
    ``external_grading_history_capacity_factor`` 1, ``cron_interval_external_grader_load_sec`` 8.

    Every 8 s of ``t_s`` (at the first step at least that long after the previous run) the
    SQL runs; ``desired_instances`` is ordered when it applies, else (and between runs)
    the current count."""

    name = "prairielearn-grader"
    architecture = "jobs"

    def __init__(self, max_concurrent_jobs: int = 5, report_interval_sec: float = 10.0,
                 external_grading_load_average_interval_sec: float = 30.0,
                 external_grading_history_load_interval_sec: float = 900.0,
                 external_grading_current_capacity_factor: float = 1.0,
                 external_grading_history_capacity_factor: float = 1.0,
                 cron_interval_external_grader_load_sec: float = 8.0, max_replicas: int = 10, seed=None) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise PolicyError(f"prairielearn-grader: {message}")

        need(max_concurrent_jobs >= 1, f"max_concurrent_jobs={max_concurrent_jobs!r} must be >= 1")
        need(report_interval_sec > 0, f"report_interval_sec={report_interval_sec!r} must be > 0")
        need(external_grading_load_average_interval_sec > report_interval_sec,
             f"external_grading_load_average_interval_sec={external_grading_load_average_interval_sec!r} must "
             f"exceed report_interval_sec={report_interval_sec!r} (older reports do not count)")
        need(external_grading_history_load_interval_sec > 0,
             f"external_grading_history_load_interval_sec={external_grading_history_load_interval_sec!r} must be > 0")
        for key, v in (("external_grading_current_capacity_factor", external_grading_current_capacity_factor),
                       ("external_grading_history_capacity_factor", external_grading_history_capacity_factor)):
            need(v >= 0, f"{key}={v!r} must be >= 0")
        need(cron_interval_external_grader_load_sec > 0,
             f"cron_interval_external_grader_load_sec={cron_interval_external_grader_load_sec!r} must be > 0")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.max_concurrent_jobs = int(max_concurrent_jobs)
        self.report_s = float(report_interval_sec)
        self.history_s = float(external_grading_history_load_interval_sec)
        self.current_factor = float(external_grading_current_capacity_factor)
        self.history_factor = float(external_grading_history_capacity_factor)
        self.cron_s = float(cron_interval_external_grader_load_sec)
        self.series = TimeSeries(max(self.history_s, AVERAGE_INTERVAL_S))
        self.samples: list[tuple[float, float]] = []  # (t_s, in_progress)
        self.last_run: float | None = None
        self.last: GraderLoadsResult | None = None

    def current_jobs(self, t: float, in_progress: float) -> float:
        """The graders' ``average_jobs`` summed: the mean of ``in_progress`` over the samples
        of the last ``report_interval_sec`` (this one included)."""
        self.samples.append((t, float(in_progress)))
        self.samples = [s for s in self.samples if s[0] > t - self.report_s]
        return sum(v for _, v in self.samples) / len(self.samples)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        obs, queue = needs_queue(self.name, info)
        t = float(info.get("t_s", obs.t_s))
        current = int(info.get("current_replicas", context.replicas))
        jobs = self.current_jobs(t, queue.in_progress)
        if self.last_run is not None and t - self.last_run < self.cron_s - 1e-9:
            return Decision(action=min(current, len(self.actions) - 1), probability=1.0)
        self.last_run = t
        if obs.pods:
            in_service = sum(p.phase == "ready" for p in obs.pods)
            reporting = sum(p.phase != "starting" for p in obs.pods)
        else:
            in_service, reporting = context.replicas, queue.runners
        users = info.get("users")
        loads = GraderLoads(instance_count=int(reporting), instance_count_in_service=int(in_service),
                            current_jobs=jobs, max_jobs=float(self.max_concurrent_jobs * in_service),
                            ungraded_jobs=float(queue.waiting + queue.in_progress),
                            current_users=int(users) if users is not None else 0)
        self.last = grader_loads_current(t, loads, self.series, self.history_s, self.current_factor,
                                         self.history_factor)
        order = self.last.desired_instances if applies(self.last) else current
        return Decision(action=min(order, len(self.actions) - 1), probability=1.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "series": self.series.state(), "samples": [list(s) for s in self.samples],
                "last_run": self.last_run, "last": None if self.last is None else asdict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.series.load(state["series"])
        self.samples = [(float(t), float(v)) for t, v in state["samples"]]
        self.last_run = state["last_run"]
        self.last = None if state.get("last") is None else GraderLoadsResult(**state["last"])
