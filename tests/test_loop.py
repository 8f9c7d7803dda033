"""The one step loop (agent/loop.py): the same experiment through the runner, the
Gymnasium env and the agent process gives the same records; the two loop modes; empty
windows under overload; the one clamp rule of every backend."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import Decision
from scalelab.agent.loop import ROW_COLUMNS, LoopSettings, StepLoop, takes_violation
from scalelab.agent.process import AgentSpec, records_of, run_agent
from scalelab.agent.rewards import make_reward
from scalelab.errors import UserError
from scalelab.experiments.config import load_config
from scalelab.experiments.env import SandboxScalingEnv
from scalelab.experiments.episode import COLUMNS, episode_records, episode_seeds, make_backend, resolve
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.metrics import summarize
from scalelab.orchestrator.backend import VirtualClock
from scalelab.simulator.backends import ReplayBackend, settled_at
from scalelab.simulator.replay import Replay

CONFIG = {
    "name": "three-ways", "seed": 5, "runs": 1, "steps": 40,
    "workload": {"kind": "step", "before": 4, "after": 22, "at_s": 60, "duration_s": 200},
    "cluster": {"min_replicas": 1, "max_replicas": 5, "initial_replicas": 1, "startup_seconds": 5},
    "policies": [{"name": "linucb", "alpha": 2.0}],
}  # fmt: skip


def without_propensity(rec):
    return dataclasses.replace(rec, decision=Decision(rec.decision.action))


def violation_by_the_docs(p95_ms: float, missing: str, slo_ms: float = 600.0) -> bool:
    """docs/architecture.md, "An empty window is not a met SLO": a step breaks the SLO
    when its outcome's p95 (where nothing completed, the p95 of the in-flight requests'
    ages: censored latencies) is above the SLO, or its spans did not arrive. A censored
    step is scored on its p95 like any other: censoring is not a violation by itself.
    ``missing``: the row's comma-separated list."""
    return p95_ms > slo_ms or "spans" in missing.split(",")


def assert_violations_follow_the_docs(steps: pd.DataFrame, slo_ms: float = 600.0) -> None:
    want = [violation_by_the_docs(p, m, slo_ms) for p, m in zip(steps["p95_ms"], steps["missing"], strict=True)]
    assert steps["violation"].tolist() == want


@pytest.mark.parametrize("loop", ["period", "settle"])
def test_runner_env_and_agent_process_give_identical_records(tmp_path, loop):
    cfg = load_config({**CONFIG, "loop": loop})
    r = resolve(cfg)
    seeds = dict(episode_seeds(cfg.seed, 1, 1)[0])
    seeds["policy"] = seeds["policy"][0]
    loads = r.workload.series(cfg.step_seconds, r.steps)
    runner = list(episode_records(cfg, r, 0, 0, seeds, loads, None))
    assert len(runner) == 40 and len({rec.order.applied for rec in runner}) > 1  # it scaled

    # the Gymnasium env, replaying the runner's actions on the same backend seeds
    env = SandboxScalingEnv(cfg, reward="config")
    env.reset(seed=0, options={"episode_seeds": seeds})
    via_env = [env.step(rec.decision.action)[4]["record"] for rec in runner]
    assert [without_propensity(x) for x in via_env] == [without_propensity(x) for x in runner]
    # the backend's seeds alone are enough: the policy's and the calendar's come from the env's seed
    env.reset(seed=0, options={"episode_seeds": {k: seeds[k] for k in ("think", "demand", "arrivals")}})
    again = [env.step(rec.decision.action)[4]["record"] for rec in runner]
    assert [without_propensity(x) for x in again] == [without_propensity(x) for x in runner]
    with pytest.raises(UserError, match=r"unknown keys \['demnd'\]; it takes \['arrivals', 'calendar'"):
        env.reset(seed=0, options={"episode_seeds": {"demnd": 1}})

    # the agent process, against an in-process simulator on a virtual clock
    clock = VirtualClock()
    backend = make_backend(cfg, r, seeds, loads, clock)
    spec = AgentSpec(policy="linucb", params={"alpha": 2.0}, steps=40, seed=seeds["policy"], loop=loop,
                     min_replicas=1, max_replicas=5, initial_replicas=1, users=[int(u) for u in loads])
    run_agent(spec, backend, tmp_path / "agent", clock=clock)
    assert records_of(tmp_path / "agent") == runner


def test_rows_are_the_records_fields_and_keep_the_old_column_names():
    cfg = load_config({**CONFIG, "steps": 6})
    r = resolve(cfg)
    seeds = dict(episode_seeds(cfg.seed, 1, 1)[0], policy=1)
    rec = next(iter(episode_records(cfg, r, 0, 0, seeds, r.workload.series(5.0, 6), None)))
    assert tuple(rec.row()) == ROW_COLUMNS
    for old in ("run", "policy", "step", "t_s", "users", "replicas", "target_replicas", "p95_ms", "mean_ms", "rps",
                "cpu_request_ratio", "spans", "action", "probability", "reward", "violation", "oracle_replicas",
                "probabilities"):
        assert old in COLUMNS
    row = rec.row()
    assert row["p95_ms"] == rec.after.context.p95_ms and row["pre_p95_ms"] == rec.before.context.p95_ms
    assert row["violation"] == violation_by_the_docs(rec.after.context.p95_ms, ",".join(rec.after.missing))
    assert row["censored"] == rec.after.censored and row["in_flight"] == rec.after.in_flight


def tiny_replay() -> Replay:
    """5 users; replicas 1..3; three samples per cell, p95 = 1000 / replicas + sample."""
    rows = []
    for n, k in itertools.product((1, 2, 3), range(3)):
        p95 = 1000.0 / n + k
        rows.append({"users": 5, "replicas": n, "sample": k, "replicas_": n, "p95_ms": p95, "rps": 10.0,
                     "cpu_request_ratio": 0.5, "cpu_limit_ratio": 0.5, "mem_request_ratio": 0.1,
                     "mem_limit_ratio": 0.1, "mean_ms": p95 / 2, "spans": 50, "cpu_request_now": 0.5})
    frame = pd.DataFrame(rows).drop(columns="replicas_")
    frame["replicas"] = frame["replicas"].astype(int)
    return Replay(frame.assign(**{"replicas": frame["replicas"]}), 1, 3, 1)


def scripted(loop: str, actions: list[int]):
    clock = VirtualClock()
    backend = ReplayBackend(tiny_replay(), clock)
    lp = StepLoop(backend, clock, [5] * len(actions), LoopSettings(5.0, loop, 600.0),
                  make_reward("slo-binary-v1", slo_ms=600.0))
    obs, out = lp.start(), []
    acts = ActionSet.incremental(-1, 0, 1)
    for k, a in enumerate(actions):
        rec, obs = lp.act(k, obs, Decision(a), acts)
        out.append(rec)
    return out


def test_settle_mode_draws_the_new_cell_at_once_and_scores_it():
    up, stay = 2, 1
    recs = scripted("settle", [up, stay, up])
    # step 0: before = first sample of (5 users, 1 replica); the up order draws (5, 2) at once
    assert recs[0].before.context.p95_ms == 1000.0
    assert recs[0].after.context.replicas == 2 and recs[0].after.context.p95_ms == 500.0
    assert recs[0].violation is False and recs[0].reward == 1.0  # scored on the settled outcome
    # step 1 (stay): its outcome is its own observation, the next sample of (5, 2)
    assert recs[1].before.context.p95_ms == 501.0 and recs[1].after is recs[1].before
    assert recs[2].after.context.replicas == 3


def test_period_mode_scores_the_next_observation():
    recs = scripted("period", [2, 1, 1])
    assert recs[0].after is recs[1].before
    assert recs[0].before.context.p95_ms == 1000.0 and recs[0].violation is False  # 1000 ms is not the outcome


def simulated_loop(cfg, loads: list[float]) -> StepLoop:
    """A step loop on the backend ``cfg`` names, on a virtual clock, at ``loads``."""
    r = resolve(cfg)
    clock = VirtualClock()
    backend = make_backend(cfg, r, dict(episode_seeds(1, 1, 1)[0], policy=0), np.asarray(loads), clock)
    return StepLoop(backend, clock, loads, r.loop, make_reward("slo-binary-v1"))


@pytest.mark.parametrize("engine", ["des", "fluid"])
def test_settle_on_the_simulator_waits_for_readiness_and_a_sample(engine):
    cfg = load_config({**CONFIG, "engine": engine, "loop": "settle", "steps": 4,
                       "cluster": {"max_replicas": 5, "startup_seconds": 7}})
    lp = simulated_loop(cfg, [10.0] * 4)
    before = lp.start()
    rec, _ = lp.act(0, before, Decision(0), ActionSet.fixed(3, 3))
    assert rec.order.applied == 3 and rec.after.context.replicas == 3  # the new replicas are ready
    # ready at 5 + 7 = 12 s; Prometheus scrapes at 15 (first sample of the new pods) and
    # 20 (their CPU rate exists: 3 pods counted), then one more sample: 25 s
    assert before.t_s == 5.0 and rec.after.t_s == pytest.approx(25.0)
    assert settled_at(12.0, grew=False) == 20.0  # a scale-down: counted at the next scrape, one more sample


@pytest.mark.parametrize("engine", ["des", "fluid", "jobs"])
def test_every_backend_clamps_and_reports(engine):
    arch = {"engine": "des", "architecture": "jobs"} if engine == "jobs" else {"engine": engine}
    cfg = load_config({**CONFIG, **arch, "steps": 3})
    r = resolve(cfg)
    backend = make_backend(cfg, r, dict(episode_seeds(1, 1, 1)[0], policy=0), np.full(3, 5.0), VirtualClock())
    res = backend.scale_to(12)
    assert (res.requested, res.applied, res.clamped) == (12, 5, True) and backend.desired_replicas == 5
    res = backend.scale_to(0)
    assert (res.applied, res.clamped) == (1, True)
    replay = ReplayBackend(tiny_replay(), VirtualClock())
    assert replay.scale_to(9).applied == 3 and replay.scale_to(-2).applied == 1


def test_an_empty_window_under_overload_is_a_violation(tmp_path):
    """400 students' programs on one sandbox replica: each takes minutes, so the first
    windows see no completion. Those steps take the in-flight requests' ages as
    (censored) latencies -- ages of tens of seconds, far above the SLO -- so every
    overloaded step is a violation by its p95; none reads p95 = 0 (which the context
    reported before, scoring the worst steps as fine). (Without the sandbox's wall limit:
    with it, runs are killed at 10 s and every window holds their answers.)"""
    cfg = {"name": "overload", "seed": 1, "runs": 1, "steps": 30, "app": {"profile": "sandbox", "wall_limit_ms": "none"},
           "workload": {"kind": "constant", "users": 400, "duration_s": 150},
           "cluster": {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1},
           "policies": [{"name": "static", "replicas": 1}]}  # fmt: skip
    steps = run_experiment(cfg, out=tmp_path, progress=False, report=False, workers=1).steps
    assert_violations_follow_the_docs(steps)
    overloaded = steps[steps["step"] >= 2]
    empty = overloaded[overloaded["spans"] == 0]
    assert len(empty) >= 5, "the scenario must produce empty windows"
    assert (empty["censored"] > 0).all() and (empty["censored"] == empty["in_flight"]).all()
    assert (empty["p95_ms"] > 5 * 600).all()  # requests waiting for seconds: their ages alone break the SLO
    assert overloaded["violation"].all() and (overloaded["p95_ms"] > 0).all()


def test_a_quiet_step_whose_only_request_was_just_sent_is_not_a_violation(tmp_path):
    """One user thinking 5-25 s between 200-ms requests: most 12-s windows hold one
    completion or none, and now and then a step is observed while the user's request is
    in flight and nothing completed in the window. That step is censored (the request's
    age, a fraction of a second, is its p95) and, its p95 within the SLO, not a
    violation: a young in-flight request is not an overload."""
    cfg = {"name": "quiet", "seed": 1, "runs": 1, "steps": 400,
           "app": {"profile": "paper", "demand": {"kind": "fixed-cpu", "cpu_ms": 200.0, "cv": 0.0}},
           "workload": {"kind": "constant", "users": 1, "duration_s": 2000},
           "cluster": {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1, "think_s": [5.0, 25.0]},
           "policies": [{"name": "static", "replicas": 1}]}  # fmt: skip
    steps = run_experiment(cfg, out=tmp_path, progress=False, report=False, workers=1).steps
    assert_violations_follow_the_docs(steps)
    censored = steps[steps["censored"] > 0]
    assert len(censored) >= 5, "the scenario must observe steps with a request in flight and none completed"
    assert (censored["spans"] == 0).all() and (censored["in_flight"] == 1).all() and (censored["censored"] == 1).all()
    # the age of a request younger than a completed one takes: above 0, within the SLO
    longest = steps.loc[steps["spans"] > 0, "p95_ms"].max()
    assert longest < 600 and ((censored["p95_ms"] > 0) & (censored["p95_ms"] <= longest)).all()
    assert not censored["violation"].any()
    # the quiet windows with nothing at all in them are not violations either (spans arrived): their
    # p95 is NaN in the rows (nothing measured; 0 in the context the policy saw), counted apart
    idle = steps[(steps["spans"] == 0) & (steps["in_flight"] == 0)]
    assert len(idle) > 0 and not idle["violation"].any() and idle["p95_ms"].isna().all()
    assert steps["p95_ms"].isna().sum() == len(idle) and not censored["p95_ms"].isna().any()
    assert not steps["violation"].any()
    summary = summarize(steps, load_config(cfg)).iloc[0]
    assert summary["quiet_steps_per_run"]["mean"] == len(idle)
    assert summary["p95_ms"]["mean"] == pytest.approx(steps["p95_ms"].mean())  # over the measured steps only
    assert summary["p95_ms"]["mean"] > steps["p95_ms"].fillna(0.0).mean()  # not dragged down by quiet zeros


def test_the_context_takes_in_flight_ages_only_when_nothing_completed():
    from scalelab.orchestrator.context import ContextBuilder, Spans

    b = ContextBuilder()
    ages = np.array([1000.0, 2000.0, 30000.0])
    assert b.build(20.0, 1).p95_ms == 0.0  # no request at all: nothing to say
    empty = b.build(20.0, 1, ages)
    assert empty.spans == 0 and empty.p95_ms == pytest.approx(np.percentile(ages, 95))
    b.add_spans(Spans(np.array([15.0]), np.array([80.0])))
    assert b.build(20.0, 1, ages).p95_ms == 80.0  # completions in the window: the spans' p95


def test_the_live_balancer_reports_the_ages_of_requests_in_flight():
    """``show sess`` as Debian's HAProxy 2.6 printed it with three 3-s requests in flight
    on slot 1 (captured on the local stack), plus the runtime API's own stream."""
    from scalelab.orchestrator.haproxy import session_ages_s
    from scalelab.orchestrator.live_backend import observation_from_state

    line = ("0x5648272a0aa0: proto=tcpv4 src=127.0.0.1:49562 fe=web be=sandbox srv=s1 ts=00 epoch=0 age=3s "
            "calls=2 rate=0 cpu=0 lat=0 rq[f=49c40080h,i=0,an=8000h,rx=,wx=,ax=] "
            "rp[f=80400000h,i=0,an=1400000h,rx=4m56s,wx=,ax=] scf=[8,80h,fd=11] scb=[8,11h,fd=12] exp=1s rc=0 c_exp=")
    admin = ("0x7f42a003fc70: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0 age=0s "
             "calls=1 rate=0 cpu=0 lat=0 exp= rc=0 c_exp=")
    out = "\n".join([line, line.replace("age=3s", "age=1m2s"), admin])
    assert session_ages_s(out, "sandbox") == [3.0, 62.0]
    state = {"context": {"replicas": 1, "p95_ms": 62000.0, "rps": 0.0, "cpu_request_ratio": 1.0,
                         "cpu_limit_ratio": 1.0, "mem_request_ratio": 0.1, "mem_limit_ratio": 0.1, "spans": 0},
             "desired_replicas": 1, "in_flight": 2, "censored": 2, "gaps": {"prometheus_s": 2.0}}
    obs = observation_from_state(state, 10.0, load=20)
    assert (obs.in_flight, obs.censored, obs.missing) == (2, 2, ())
    from scalelab.agent.loop import is_violation

    assert is_violation(obs, 600.0)


@pytest.mark.parametrize("mode, expected", [("period", 2), ("settle", 1)])
def test_the_oracle_is_told_the_load_its_outcome_is_measured_at(mode, expected):
    """period: the outcome is observed under the next step's load; settle: under this one's."""
    clock = VirtualClock()
    lp = StepLoop(ReplayBackend(tiny_replay(), clock), clock, [5, 5, 5], LoopSettings(5.0, mode, 600.0),
                  make_reward("slo-binary-v1"), oracle=[1, 2, 3])
    assert lp.info(0, lp.start())["oracle_replicas"] == expected


def test_a_warm_up_holds_its_load_before_step_0_and_shifts_the_grid():
    cfg = load_config({**CONFIG, "steps": 3, "warmup": {"load": 45, "seconds": 15},
                       "cluster": {"max_replicas": 10, "initial_replicas": 5}})
    lp = simulated_loop(cfg, [2.0] * 3)
    before = lp.start()
    assert before.t_s == pytest.approx(20.0)  # 15 s of warm-up, then step 0's 5 s
    # the 12-s window still holds the warm-up's 45 users: far more requests than 2 users make
    assert before.context.rps > 10 and before.context.replicas == 5
    _, following = lp.act(0, before, Decision(1), ActionSet.incremental(-1, 0, 1))
    assert following.t_s == pytest.approx(25.0)


class SpansLostAfter(ReplayBackend):
    """The tiny replay, but from the ``lost``-th observation on the spans never arrive:
    the context reads p95 0 (nothing to measure) and the observation says so."""

    def __init__(self, lost: int) -> None:
        super().__init__(tiny_replay(), VirtualClock())
        self.lost, self.seen = lost, 0

    def observe(self):
        obs = super().observe()
        self.seen += 1
        if self.seen <= self.lost:
            return obs
        return dataclasses.replace(obs, context=dataclasses.replace(obs.context, p95_ms=0.0, spans=0),
                                   missing=("spans",))


def test_a_reward_that_takes_the_loops_violation_flag_never_pays_missing_spans_as_met():
    v2 = make_reward("slo-cost-v2", slo_ms=600.0, max_replicas=3, replica_cost=0.5, change_cost=0.3)
    binary = make_reward("slo-binary-v1", slo_ms=600.0)  # the paper's: the p95 alone, as it was
    rewards = {}
    for name, fn in (("v2", v2), ("binary", binary)):
        backend = SpansLostAfter(lost=1)
        lp = StepLoop(backend, backend.clock, [5, 5], LoopSettings(5.0, "period", 600.0), fn)
        obs = lp.start()
        rec, _ = lp.act(0, obs, Decision(2), ActionSet.incremental(-1, 0, 1))  # one up: 2 replicas
        assert rec.after.missing == ("spans",) and rec.after.context.p95_ms == 0.0 and rec.violation
        rewards[name] = rec.reward
    # by hand: slo_met 0 (the flag), minus 1, minus 0.5 * 2 / 3, minus 0.3 * 1 / 3
    assert rewards["v2"] == pytest.approx(0.0 - 1.0 - 0.5 * 2 / 3 - 0.3 / 3)
    assert rewards["binary"] == 1.0  # p95 0 <= SLO: why a cost-aware learner must not read the p95 alone
    # and within the SLO a step costs only its replicas and change: 0 is the best a step earns
    assert v2(rec.before.context, 1, rec.before.context, violation=False) == pytest.approx(-0.5 * 1 / 3)


def test_only_rewards_with_a_violation_keyword_are_handed_the_flag():
    def plugin(before, action, after):  # an older plug-in's signature keeps working
        return 1.0

    assert not takes_violation(plugin) and not takes_violation(make_reward("slo-binary-v1"))
    assert takes_violation(make_reward("slo-cost-v2")) and takes_violation(make_reward("slo-cost-v2").terms)
    backend = SpansLostAfter(lost=1)
    lp = StepLoop(backend, backend.clock, [5, 5], LoopSettings(5.0, "period", 600.0), plugin)
    rec, _ = lp.act(0, lp.start(), Decision(1), ActionSet.incremental(-1, 0, 1))
    assert rec.reward == 1.0 and rec.violation  # the record still marks the step
