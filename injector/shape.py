"""A Locust load shape that only asks the workload: ``users_at(t × compression)``.

:func:`shape_tick` is the whole logic, a pure function (tested without Locust, whose
import patches the interpreter with gevent); :func:`make_shape` wraps it in a Locust
``LoadTestShape`` for the injector process.
"""

from __future__ import annotations

from scalelab.injector.workloads import Workload


def shape_tick(workload: Workload, run_time_s: float, compression: float = 1.0,
               spawn_rate: float = 100.0) -> tuple[int, float] | None:
    """(users, spawn rate) at ``run_time_s`` of wall clock, or None past the workload's end."""
    t = run_time_s * compression
    if t >= workload.duration_s:
        return None
    return workload.users_at(t), spawn_rate


def make_shape(workload: Workload, compression: float = 1.0, spawn_rate: float = 100.0):
    """A LoadTestShape class following ``workload`` (time compressed by ``compression``)."""
    from locust import LoadTestShape

    if workload.loop != "closed":
        raise ValueError(f"workload {workload.name!r} is open-loop; Locust users need a closed workload")

    from scalelab.injector.locustfile import CURRENT, USER_CLASSES

    class WorkloadShape(LoadTestShape):
        def tick(self):
            tick = shape_tick(workload, self.get_run_time(), compression, spawn_rate)
            # only the users of the injector's task (the paper's clients or students)
            return None if tick is None else (*tick, [USER_CLASSES[CURRENT["task"].kind]])

    return WorkloadShape
