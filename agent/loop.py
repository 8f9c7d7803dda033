"""The step loop: the only one. Simulated and replayed runs, the live agent process and
the Gymnasium env all run their steps through :class:`StepLoop`.

One step ``k`` (times on the loop's :class:`~scalelab.orchestrator.backend.Clock`, s):

1. the **observation before** the decision (taken at the end of the previous step);
2. the policy **decides** on its context (the caller does this: a policy, or the
   Gymnasium agent's action);
3. the order is **clamped and applied** (:meth:`Backend.scale_to`);
4. the step's **outcome** is observed, by the loop mode:

   - ``period`` (default; how HPA and KEDA run): the load moves to step ``k + 1``'s
     level, the clock runs one ``step_seconds`` and the backend is observed; that
     observation is both step ``k``'s outcome and step ``k + 1``'s observation before;
   - ``settle`` (the paper's loop): if the order changed the count, the backend
     **settles** (the new replicas ready and measured; in replay, a draw of the new
     cell) and that observation is the outcome; otherwise the outcome is the
     observation before. Step ``k + 1`` then starts from the clock's now: a step lasts
     longer than ``step_seconds`` after a change, as the paper's real loop did;

5. the **reward** of (before, action, outcome), and one frozen :class:`StepRecord`.

The outcome is what a step is scored on: a violation is an outcome whose p95 exceeds the
SLO -- in a window where nothing completed, the p95 of the in-flight requests' ages, a
lower bound of their latencies (censored) -- or whose spans did not arrive. Both observations are recorded, so every run can be scored
either way.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Decision, Policy
from scalelab.errors import UserError
from scalelab.orchestrator.backend import QUEUE_COLUMNS, Backend, Clock, Observation, ScaleResult
from scalelab.orchestrator.context import CALENDAR_FEATURES, CalendarFeatures, Context

LOOP_MODES = ("period", "settle")

#: The context fields, in order: each is a column of the scored observation and, with
#: ``pre_``, of the observation the decision was made on.
CONTEXT_FIELDS = tuple(f.name for f in fields(Context))

#: The keys of :meth:`StepRecord.row`, in order.
ROW_COLUMNS = (
    "step", "t_s", "users", *CONTEXT_FIELDS, "target_replicas", "requested_replicas", "clamped", "action",
    "probability", "forced", "probabilities", "reward", "violation", "outcome_t_s", "in_flight", "censored",
    "missing", "desired_replicas", "client_p95_ms", *("pre_" + f for f in CONTEXT_FIELDS), "pre_in_flight",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Everything one step did. t_s: when the decision was made, s. load: the offered
    load during the step (users, or req/s). before: what the decision saw. after: the
    step's outcome (see the module docstring). reward: of (before, action, after).
    violation: the outcome breaks the SLO (or could not be measured)."""

    step: int
    t_s: float
    load: float
    before: Observation
    decision: Decision
    order: ScaleResult
    after: Observation
    reward: float
    violation: bool

    def row(self) -> dict[str, Any]:
        """The flat row of ``steps.parquet`` (without ``run`` and ``policy``): the scored
        observation under the context's own names, the one decided on under ``pre_``."""
        a, b, d, o = self.after, self.before, self.decision, self.order
        row: dict[str, Any] = {"step": self.step, "t_s": self.t_s, "users": self.load}
        ac, bc = a.context, b.context
        for name in CONTEXT_FIELDS:
            row[name] = getattr(ac, name)
        if quiet(a):  # nothing completed and nothing in flight: no latency to report
            row["p95_ms"] = row["mean_ms"] = math.nan
        row.update(
            target_replicas=o.applied, requested_replicas=o.requested, clamped=o.requested != o.applied,
            action=d.action, probability=d.probability, forced=d.forced,
            probabilities=probabilities_json(d.probabilities) if d.probabilities else "",
            reward=self.reward, violation=self.violation, outcome_t_s=a.t_s, in_flight=a.in_flight,
            censored=a.censored, missing=",".join(a.missing), desired_replicas=a.desired_replicas,
            client_p95_ms=a.client_p95_ms if a.client_p95_ms is not None else float("nan"),
        )
        for name in CONTEXT_FIELDS:
            row["pre_" + name] = getattr(bc, name)
        if quiet(b):
            row["pre_p95_ms"] = row["pre_mean_ms"] = math.nan
        row["pre_in_flight"] = b.in_flight
        if a.queue is not None:  # the jobs model: its signals as queue_* columns
            row.update({"queue_" + k: getattr(a.queue, k) for k in QUEUE_COLUMNS})
        return row

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the agent's ``decisions.jsonl``)."""
        return {"step": self.step, "t_s": self.t_s, "load": self.load, "before": self.before.to_dict(),
                "decision": decision_to_dict(self.decision),
                "order": {"current": self.order.current, "requested": self.order.requested,
                          "applied": self.order.applied},
                "after": self.after.to_dict(), "reward": self.reward, "violation": self.violation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(step=int(data["step"]), t_s=float(data["t_s"]), load=float(data["load"]),
                   before=Observation.from_dict(data["before"]), decision=decision_from_dict(data["decision"]),
                   order=ScaleResult(**data["order"]), after=Observation.from_dict(data["after"]),
                   reward=float(data["reward"]), violation=bool(data["violation"]))


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """A decision as JSON-ready data (its ``info`` is not kept)."""
    return {"action": d.action, "probability": d.probability, "forced": d.forced,
            "probabilities": list(d.probabilities) if d.probabilities else None}


def decision_from_dict(data: Mapping[str, Any]) -> Decision:
    probs = data.get("probabilities")
    return Decision(action=int(data["action"]), probability=float(data["probability"]),
                    probabilities=tuple(probs) if probs else None, forced=bool(data["forced"]))


@functools.lru_cache(maxsize=4096)
def probabilities_json(probabilities: tuple[float, ...]) -> str:
    """A probability vector as the JSON text of ``steps.parquet`` (6 decimals); policies
    repeat a few vectors, so the text is cached."""
    return json.dumps([round(float(v), 6) for v in probabilities])


def quiet(obs: Observation) -> bool:
    """A window that measured no latency: no span completed in it and none was in
    flight to censor. Its p95 is 0 in the context a policy sees, and NaN in
    ``steps.parquet`` (left out of means and figures, counted as a quiet step)."""
    return obs.context.spans == 0 and obs.censored == 0


def is_violation(obs: Observation, slo_ms: float) -> bool:
    """The outcome breaks the SLO: its p95 is above it -- where no request completed,
    the p95 of the in-flight requests' ages, a lower bound of their latencies, so an
    overloaded empty window is a violation and a quiet one with a request just sent is
    not -- or its spans did not arrive (nothing to tell, so never scored as fine)."""
    return obs.context.p95_ms > slo_ms or "spans" in obs.missing


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: step_seconds, s; mode ``period`` or ``settle``; slo_ms, ms;
    warmup_load (users or req/s) held for warmup_seconds (s) before step 0, if given."""

    step_seconds: float = 5.0
    mode: str = "period"
    slo_ms: float = 600.0
    warmup_load: float | None = None
    warmup_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in LOOP_MODES:
            raise UserError(f"config: loop={self.mode!r} is not one of {LOOP_MODES}")
        if not self.step_seconds > 0:
            raise UserError(f"config: step_seconds={self.step_seconds!r} must be > 0")
        if self.warmup_seconds < 0:
            raise UserError(f"config: warmup.seconds={self.warmup_seconds!r} must be >= 0")

    @property
    def warmup_s(self) -> float:
        """How long the warm-up lasts, s (0 without a warm-up load)."""
        return self.warmup_seconds if self.warmup_load is not None else 0.0


#: ``reward(before, action, after) -> float``; a reward whose signature has a
#: ``violation`` keyword is handed the loop's own flag (:func:`is_violation`: p95 above
#: the SLO or the spans missing), so a step that saw nothing is never paid as fine.
Reward = Callable[[Context, int, Context], float]


def takes_violation(reward: Callable) -> bool:
    """Whether ``reward`` accepts the loop's ``violation`` flag as a keyword."""
    try:
        return "violation" in inspect.signature(reward).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False


class StepLoop:
    """Runs steps against a backend; the caller supplies each decision (:meth:`act`) or a
    policy (:meth:`run`).

    loads: the offered load per step (the workload sampled every ``step_seconds``).
    oracle: per step, the fewest replicas meeting the SLO (simulator and replay), handed
    to policies in ``info``.
    calendar: per step, the announced timetable's features (rows of
    :data:`~scalelab.orchestrator.context.CALENDAR_FEATURES`, from the timetable alone), handed to
    policies in ``info["calendar"]`` as :class:`~scalelab.orchestrator.context.CalendarFeatures`; None: no
    calendar signal (the default: the paper's context only).
    """

    def __init__(self, backend: Backend, clock: Clock, loads: Sequence[float] | np.ndarray,
                 settings: LoopSettings, reward: Reward, oracle: Sequence[int] | np.ndarray | None = None,
                 calendar: Sequence[Sequence[float]] | np.ndarray | None = None) -> None:
        self.backend, self.clock, self.settings, self.reward = backend, clock, settings, reward
        self._reward_takes_violation = takes_violation(reward)
        self.loads = [float(x) for x in loads]
        self.oracle = None if oracle is None else [int(x) for x in oracle]
        self.calendar = None if calendar is None else np.asarray(calendar, dtype=float)
        width = len(CALENDAR_FEATURES)
        if self.calendar is not None and self.calendar.shape != (len(self.loads), width):
            raise UserError(f"calendar features have shape {self.calendar.shape}, the loop needs "
                            f"({len(self.loads)}, {width}): one row of {', '.join(CALENDAR_FEATURES)} per step")
        self.steps = len(self.loads)
        self._deadline = 0.0

    # ------------------------------------------------------------------ time
    def _tick(self, k: int) -> Observation:
        """Step ``k``'s load for one ``step_seconds``, then observe."""
        self.backend.set_load(self.loads[min(k, self.steps - 1)])
        step_s = self.settings.step_seconds
        now = self.clock.now()
        if self.settings.mode == "period":
            self._deadline += step_s
            if now > self._deadline + step_s:  # late by more than a step (an outage): re-anchor
                self._deadline = now
        else:
            self._deadline = now + step_s
        self.clock.sleep_until(self._deadline)
        return self.backend.observe()

    def start(self, step: int = 0) -> Observation:
        """Begin (or resume) at ``step``: the observation step ``step`` decides on. A
        run that begins holds the warm-up load first, if any, and observes at its end
        (discarded: it makes a simulated backend run the warm-up). In ``period`` mode the
        steps keep their grid: step ``k`` is observed at ``warmup_s + (k + 1) *
        step_seconds`` on the clock."""
        s = self.settings
        if step == 0 and s.warmup_load is not None:
            self.backend.set_load(s.warmup_load)
            self.clock.sleep_until(self.clock.now() + s.warmup_seconds)
            self.backend.observe()  # a simulated backend runs up to now under that load
        if s.mode == "period":
            self._deadline = s.warmup_s + step * s.step_seconds
        return self._tick(step)

    def info(self, k: int, before: Observation) -> dict[str, Any]:
        """What a policy may know at step ``k`` besides the context: ``workload_t_s`` is
        the moment of the workload (s from its start) whose load the step's outcome is
        measured under (step ``k + 1``'s in ``period`` mode, ``k``'s in ``settle``), and
        the oracle and the calendar are given for that moment. ``users`` is the load offered
        during step ``k`` (students working on the site now: what PrairieLearn's
        ``current_pages`` counts; req/s for an open workload)."""
        ahead = 1 if self.settings.mode == "period" else 0  # the load the step's outcome is measured at
        faces = min(k + ahead, self.steps - 1)
        info = {"step": k, "t_s": before.t_s, "current_replicas": self.backend.desired_replicas,
                "observation": before, "workload_t_s": faces * self.settings.step_seconds, "users": self.loads[k]}
        if self.oracle is not None:
            info["oracle_replicas"] = self.oracle[faces]
        if self.calendar is not None:  # what the timetable says for that moment and after
            info["calendar"] = CalendarFeatures.from_vector(self.calendar[faces])
        return info

    # ------------------------------------------------------------------ one step
    def act(self, k: int, before: Observation, decision: Decision, actions: ActionSet,
            requested: int | None = None, current: int | None = None) -> tuple[StepRecord, Observation | None]:
        """Carry out ``decision`` at step ``k``; returns the step's record and the
        observation step ``k + 1`` decides on (None after the last step). Resuming a
        decision taken before a crash: ``requested`` is its replica count and
        ``current`` the count it was taken at."""
        if requested is None:
            requested = self.requested(decision, actions)
        result = self.backend.scale_to(requested)
        if current is not None:
            result = ScaleResult(current, result.requested, result.applied)
        last = k + 1 >= self.steps
        if self.settings.mode == "period":
            after = self._tick(k + 1)
            following: Observation | None = None if last else after
        else:
            after = self.backend.settle() if result.changed else before
            following = None if last else self._tick(k + 1)
        violation = is_violation(after, self.settings.slo_ms)
        if self._reward_takes_violation:
            reward = float(self.reward(before.context, decision.action, after.context, violation=violation))
        else:
            reward = float(self.reward(before.context, decision.action, after.context))
        record = StepRecord(step=k, t_s=before.t_s, load=self.loads[k], before=before, decision=decision,
                            order=result, after=after, reward=reward, violation=violation)
        return record, following

    def requested(self, decision: Decision, actions: ActionSet) -> int:
        """The replica count ``decision`` asks for, before clamping."""
        return actions.order(decision.action).requested(self.backend.desired_replicas)

    def run(self, policy: Policy, start: int = 0, before: Observation | None = None,
            pending: tuple[Decision, int, int] | None = None,
            on_decided: Callable[[int, Observation, Decision, int, int], None] | None = None,
            ) -> Iterator[tuple[StepRecord, Observation | None]]:
        """Run ``policy`` from ``start`` to the end; yields each record, after the
        policy learned from it, with the next step's observation (for checkpoints).

        Resuming: ``before`` is the observation step ``start`` decides on; ``pending``
        a decision already taken there, with its requested count and the count it was
        taken at (it is carried out, not taken again). ``on_decided(k, before,
        decision, requested, current)`` runs between the decision and the order (the
        agent process checkpoints there)."""
        obs = self.start(start) if before is None else before
        for k in range(start, self.steps):
            current = None
            if pending is not None and k == start:
                decision, requested, current = pending
            else:
                decision = policy.decide(obs.context, self.info(k, obs))
                requested = self.requested(decision, policy.actions)
            if on_decided is not None:
                on_decided(k, obs, decision, requested, current if current is not None else self.backend.desired_replicas)
            record, following = self.act(k, obs, decision, policy.actions, requested, current)
            policy.update(obs.context, decision.action, record.reward, record.after.context)
            yield record, following
            if following is None:
                break
            obs = following
