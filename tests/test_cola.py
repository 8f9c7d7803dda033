"""cola: COLA's UCB bandit (vigsachi/erlang, training/cola/bandit_algo.py and the trainer and
autoscaler around it) by hand -- the reward, the arm windows, the UCB indices and choices
of a round, ties, the early stop and the rounds, the contexts and the deployed policy's
interpolation -- then the checker and a short experiment where it learns."""

import math

import numpy as np
import pytest

from scalelab.agent.base import PolicyError
from scalelab.agent.check import check_policy
from scalelab.agent.policies.cola import Cola, ContextState, Round, cola_reward, ucb_index, window_start
from scalelab.agent.registry import make_policy
from scalelab.experiments.config import load_config
from scalelab.experiments.experiment import run_experiment
from scalelab.orchestrator.context import Context

#: one step per pull (COLA's pull settles 30 s and samples 25 s: 11 steps of 5 s by default)
ONE = {"settle_s": 0.0, "sample_s": 5.0}


def ctx(rps: float, p95: float = 100.0, replicas: int = 1) -> Context:
    return Context(replicas=replicas, p95_ms=p95, rps=rps, cpu_request_ratio=0.5, cpu_limit_ratio=0.5,
                   mem_request_ratio=0.1, mem_limit_ratio=0.1, mean_ms=p95 / 2)


def step(pol: Cola, rps: float, latency_of) -> tuple[int, dict]:
    """One loop step: decide at ``rps``, then learn from the outcome whose p95 is
    ``latency_of(replicas ordered)``; returns the replicas ordered and the decision's info."""
    before = ctx(rps)
    d = pol.decide(before)
    replicas = pol.actions.order(d.action).level
    pol.update(before, d.action, 0.0, ctx(rps, latency_of(replicas), replicas))
    return replicas, dict(d.info)


# ---------------------------------------------------------------- the source's pieces by hand
def test_the_reward_is_compute_qoe():
    # (latency_threshold - latency) hinged at 0, times w_l, minus action * w_i (w_l 5, w_i 15)
    assert cola_reward(70.0, 50.0, 3) == (50 - 70) * 5 - 3 * 15 == -145.0
    assert cola_reward(30.0, 50.0, 1) == -15.0  # under the target: the cost alone
    assert cola_reward(50.0, 50.0, 2) == -30.0  # at the target: no penalty
    assert cola_reward(900.0, 600.0, 1, w_l=1.0, w_i=0.0) == -300.0


def test_the_arm_window_is_create_action_to_rep_map():
    # k = 5 counts: current - floor(k/2) .. ; shifted up to 1 (underflow) or down to the maximum
    assert window_start(6, 5, 1, 10) == 4  # 4..8
    assert window_start(3, 5, 1, 10) == 1  # 1..5
    assert window_start(1, 5, 1, 10) == 1  # -1..3 shifted to 1..5
    assert window_start(9, 5, 1, 10) == 6  # 7..11 shifted to 6..10
    assert window_start(10, 5, 1, 10) == 6
    assert window_start(4, 4, 1, 10) == 2  # even k: floor(4/2) = 2 below
    assert window_start(2, 5, 2, 12) == 2  # the deployment's minimum instead of 1


def test_ucb_index_by_hand():
    # n = 2 after one pull of arm 0 (k_n = [2, 1, 1]): ln 2 = 0.693147
    s = ucb_index(np.array([-1515.0, 0.0, 0.0]), np.array([2.0, 1.0, 1.0]), 2.0, 2.0)
    assert s[0] == pytest.approx(-1515 + 2 * math.sqrt(math.log(2) / 2))  # -1513.8225
    assert s[1] == s[2] == pytest.approx(2 * math.sqrt(math.log(2)))  # 1.66511
    # the very first pull: ln(1) = 0, every arm scores its (zero) mean
    assert ucb_index(np.zeros(5), np.ones(5), 1.0, 2.0).tolist() == [0.0] * 5


def test_ties_go_to_the_first_arm_the_fewest_replicas():
    r = Round.start(low=3, arms=5)
    assert r.choose(2.0) == 0  # all tie at 0 on the first pull: np.argmax takes the first
    r.k_reward, r.k_n, r.n = [-10.0, -10.0, -3.0, -3.0, -50.0], [2.0, 2.0, 2.0, 2.0, 2.0], 6.0
    assert r.choose(2.0) == 2  # -3 + bonus twice: the first of the two
    r.k_reward = [-10.0, -10.0, -30.0, -30.0, -50.0]
    assert r.best() == 0


def test_the_update_is_the_sources_running_mean_with_k_n_from_one():
    r = Round.start(low=1, arms=2)
    r.update(0, -100.0, 700.0)  # k_n[0] = 1: the mean becomes the reward itself
    assert (r.k_reward, r.k_latency, r.k_n, r.n, r.pulls) == ([-100.0, 0.0], [700.0, 0.0], [2.0, 1.0], 2.0, 1)
    r.update(0, -50.0, 500.0)  # k_n[0] = 2: halfway
    assert (r.k_reward[0], r.k_latency[0], r.k_n[0], r.n) == (-75.0, 600.0, 3.0, 3.0)
    r.update(0, -30.0, 300.0)  # k_n[0] = 3: a third of the way -- the plain mean of the three
    assert r.k_reward[0] == pytest.approx((-100 - 50 - 30) / 3)


# ---------------------------------------------------------------- a round, step by step
#: p95 (ms) by replica count: 1 and 2 break a 600-ms target, 3 is the cheapest that meets it
LATENCY = {1: 900.0, 2: 700.0, 3: 550.0, 4: 400.0, 5: 300.0, 6: 250.0, 7: 220.0}.__getitem__


def test_a_round_by_hand_plays_every_arm_once_then_the_best_and_stops_early():
    pol = Cola(slo_ms=600.0, contexts=[10.0, 20.0], max_replicas=10, seed=0, **ONE)
    # rewards w_l (600 - p95)^- - w_i (a + 1): arm 0 (1 replica) -1500 - 15, arm 1 -500 - 30,
    # arm 2 -45, arm 3 -60, arm 4 -75
    orders = []
    for k in range(5):  # unplayed arms (mean 0) beat the played ones: in order, ties to the first
        replicas, info = step(pol, 15.0, LATENCY)
        orders.append(replicas)
        assert info == {"cola": "pull", "context": 1, "arm": k}
    assert orders == [1, 2, 3, 4, 5]
    rnd = pol.states[1].round
    assert rnd.k_reward == [-1515.0, -530.0, -45.0, -60.0, -75.0]
    assert rnd.k_n == [2.0] * 5 and rnd.n == 6.0
    # pull 6: every index is the mean + 2 sqrt(ln 6 / 2) = mean + 1.89302: arm 2
    assert ucb_index(np.array(rnd.k_reward), np.array(rnd.k_n), rnd.n, 2.0)[2] == pytest.approx(-43.10698, abs=1e-5)
    assert step(pol, 15.0, LATENCY)[0] == 3
    # pull 7: arm 2 at -45 + 2 sqrt(ln 7 / 3) = -43.38924, arm 3 at -60 + 2 sqrt(ln 7 / 2) = -58.02723
    s = ucb_index(np.array(rnd.k_reward), np.array(rnd.k_n), rnd.n, 2.0)
    assert s[2] == pytest.approx(-43.38924, abs=1e-5) and s[3] == pytest.approx(-58.02723, abs=1e-5)
    for _ in range(4):
        assert step(pol, 15.0, LATENCY)[0] == 3
    # 10 pulls: the best mean is arm 2 (3 replicas), its mean latency 550 <= 600: learned
    state = pol.states[1]
    assert (state.replicas, state.rounds, state.done, state.round) == (3, 1, True, None)
    # learned: the count of the context above 15 req/s (the one below never seen: alone)
    assert step(pol, 15.0, LATENCY) == (3, {"cola": "learned", "context": 1})
    assert step(pol, 15.5, LATENCY) == (3, {"cola": "hold", "context": 1})  # 0.5 / 16 < 10 %


def test_a_round_whose_best_misses_the_target_recentres_until_rounds_run_out():
    # every count from 1 to 7 misses the 600 ms target (p95 2000 - 100 r): the reward
    # 5 (100 r - 1400) - 15 (a + 1) grows with the replicas, so the best is the last arm
    pol = Cola(slo_ms=600.0, contexts=[10.0], rounds=2, max_replicas=10, seed=0, **ONE)
    orders = [step(pol, 5.0, lambda r: 2000.0 - 100 * r)[0] for _ in range(10)]
    assert orders[:5] == [1, 2, 3, 4, 5] and orders[5:] == [5] * 5
    state = pol.states[0]
    assert (state.replicas, state.rounds, state.done) == (5, 1, False)
    assert state.round.low == 3  # the next round's arms: 3..7, centred on 5
    orders = [step(pol, 5.0, lambda r: 2000.0 - 100 * r)[0] for _ in range(10)]
    assert orders[:5] == [3, 4, 5, 6, 7] and set(orders[5:]) == {7}
    assert (state.replicas, state.rounds, state.done) == (7, 2, True)  # train_iters = 2 rounds


def test_a_new_context_starts_from_the_current_count_or_from_one():
    pol = Cola(slo_ms=600.0, contexts=[10.0, 20.0], max_replicas=10, seed=0, **ONE)
    for _ in range(10):
        step(pol, 9.0, lambda r: 1500.0 if r < 4 else 100.0)
    assert pol.states[0].replicas == 4 and pol.states[0].done
    # learned, and ordered: 1 x 0.09999 + 4 x 0.90001 = 3.7, ceiled (w_ub = 9.0001 / 10.0001)
    assert step(pol, 9.0, LATENCY)[0] == 4
    assert step(pol, 15.0, LATENCY)[0] == 2  # context 1 starts from 4: arms 2..6, the first
    assert pol.states[1].round.low == 2
    fresh = Cola(slo_ms=600.0, contexts=[10.0, 20.0], max_replicas=10, restart_policy=True, seed=0, **ONE)
    fresh.load_state_dict({**pol.state_dict(), "states": [pol.states[0].to_dict(), None]})
    step(fresh, 15.0, LATENCY)
    assert fresh.states[1].round.low == 1  # restart_policy: from one replica


def test_a_pull_holds_its_count_while_it_settles_and_samples():
    # 30 s to settle then 25 s of sample, steps of 5 s: 6 steps unmeasured, 5 measured
    pol = Cola(slo_ms=600.0, contexts=[10.0, 20.0], max_replicas=10, seed=0)
    assert (pol.settle_steps, pol.sample_steps) == (6, 5)
    latencies = iter([5000.0] * 6 + [700.0, 800.0, 900.0, 600.0, 500.0])
    rates = iter([15.0, 15.0, 3.0, 30.0] + [15.0] * 7)  # the rate may leave the context meanwhile
    for k in range(11):
        replicas, info = step(pol, next(rates), lambda r: next(latencies))
        assert (replicas, info) == (1, {"cola": "pull", "context": 1, "arm": 0})
        assert (pol.states[1].round.pulls, pol.pull is None) == ((0, False) if k < 10 else (1, True))
    # the mean of the sample, 700 ms: 5 x (600 - 700) - 15 x 1
    assert pol.states[1].round.k_reward[0] == -515.0 and pol.states[1].round.k_latency[0] == 700.0
    assert step(pol, 15.0, LATENCY)[1] == {"cola": "pull", "context": 1, "arm": 1}
    assert pol.states[0] is None  # 3 req/s passed during the pull: nothing learned there


# ---------------------------------------------------------------- contexts and the deployed policy
def test_a_rate_learns_in_the_first_context_above_it():
    pol = Cola(contexts=[20.0, 10.0, 30.0])
    assert pol.contexts == [10.0, 20.0, 30.0]  # sorted, as TrainConfig sorts train_rps
    assert [pol.context_of(r) for r in (0.0, 0.1, 9.9, 10.0, 15.0, 20.0, 29.9, 30.0, 500.0)] == \
        [None, 0, 0, 1, 1, 2, 2, 2, 2]


def test_the_learned_count_is_the_autoscalers_interpolation_ceiled():
    pol = Cola(contexts=[10.0, 20.0], max_replicas=10)
    pol.states = [ContextState(2, done=True), ContextState(5, done=True)]
    # w_ub = (15 - 10 + 1e-4) / (20 - 10 + 1e-4) = 0.500005: 2 x 0.499995 + 5 x 0.500005 = 3.500015
    assert pol.count(15.0) == 4
    # below the first context: between the zero context (1 replica) and 2
    assert pol.count(5.0) == 2  # 1 x 0.499995 + 2 x 0.500005 = 1.500005
    assert pol.count(1e-6) == 2  # 1 + 1e-5 or so, ceiled: the source's ceil
    assert pol.count(10.0) == 3  # at a context the next one weighs 1e-5: 2.00003, ceiled
    assert pol.count(20.0) == pol.count(95.0) == 5  # from the largest context up: its count alone
    assert pol.count(0.0) == 1  # the zero context
    pol.states = [None, ContextState(5, done=True)]
    assert pol.count(15.0) == 5  # the context below never seen: the one above alone


def test_a_learned_context_acts_on_a_ten_percent_change_of_the_rate():
    pol = Cola(contexts=[10.0, 20.0], max_replicas=10, seed=0, **ONE)
    pol.states = [ContextState(2, done=True), ContextState(5, done=True)]
    assert step(pol, 15.0, LATENCY) == (4, {"cola": "learned", "context": 1})  # 15 / 1 moved
    assert step(pol, 16.5, LATENCY) == (4, {"cola": "hold", "context": 1})  # 1.5 / 16 = 9.4 %
    assert step(pol, 19.0, LATENCY) == (5, {"cola": "learned", "context": 1})  # 2.5 / 17.5 = 14 %
    assert step(pol, 0.0, LATENCY) == (1, {"cola": "learned", "context": None})  # 0 req/s: one replica


# ---------------------------------------------------------------- parameters, checker, learning
@pytest.mark.parametrize("params,named", [
    ({"c": -1.0}, "c"), ({"w_l": -5.0}, "w_l"), ({"w_i": float("nan")}, "w_i"), ({"arms": 0}, "arms"),
    ({"arms": 11}, "arms"), ({"pulls": 4}, "pulls"), ({"rounds": 0}, "rounds"), ({"slo_ms": 0.0}, "slo_ms"),
    ({"latency": "median"}, "latency"), ({"contexts": []}, "contexts"), ({"contexts": [5.0, 5.0]}, "contexts"),
    ({"contexts": [0.0, 5.0]}, "contexts"), ({"contexts": "5,10"}, "contexts"), ({"rps_change": -0.1}, "rps_change"),
    ({"max_replicas": 0}, "max_replicas"), ({"min_replicas": -1}, "min_replicas"),
    ({"restart_policy": "yes"}, "restart_policy"), ({"arms": 2.5}, "arms"), ({"settle_s": -1.0}, "settle_s"),
    ({"sample_s": 0.0}, "sample_s"), ({"step_seconds": 0.0}, "step_seconds"),
])
def test_a_bad_parameter_is_named(params, named):
    with pytest.raises(PolicyError, match=named):
        make_policy("cola", **params)


def test_defaults_are_colas():
    pol = make_policy("cola")
    assert (pol.c, pol.w_l, pol.w_i, pol.arms, pol.pulls, pol.rounds, pol.slo_ms, pol.rps_change) == \
        (2.0, 5.0, 15.0, 5, 10, 10, 50.0, 0.1)
    assert not pol.restart_policy and pol.latency == "p95"
    assert (pol.settle_s, pol.sample_s) == (30.0, 25.0)  # time.sleep(30), TrainConfig's sample_duration
    assert len(pol.actions) == 10 and pol.actions.order(0).level == 1


def test_a_state_from_other_contexts_is_refused():
    state = Cola(contexts=[10.0]).state_dict()
    with pytest.raises(PolicyError, match="contexts"):
        Cola(contexts=[10.0, 20.0]).load_state_dict(state)


def test_cola_passes_the_policy_checker():
    check_policy("cola")
    check_policy("cola", {"contexts": [20.0, 40.0, 60.0], "latency": "mean", "restart_policy": True, "arms": 3,
                          "pulls": 4, "rounds": 3})


def step_run(cola: dict, others: list[dict], duration_s: float):
    """The paper's app, 5 then 35 users from 10 min on, a 600-ms SLO, one run: the steps of each policy."""
    cfg = load_config({"name": "cola-step", "seed": 3, "runs": 1, "slo_ms": 600,
                       "workload": {"kind": "step", "before": 5, "after": 35, "at_s": 600, "duration_s": duration_s},
                       "app": {"profile": "paper"}, "cluster": {"max_replicas": 10, "startup_seconds": 5},
                       "policies": [{"name": "cola", **cola}, *others], "oracle": any(p["name"] == "oracle" for p in others)})
    steps = run_experiment(cfg, out=None, progress=False, workers=1, report=False).steps
    return {p: g.sort_values("step") for p, g in steps.groupby("policy")}


def test_pulled_every_step_it_learns_the_oracles_count_and_stops_breaking_the_slo():
    # a pull per step: every step's p95 is a sample, so the count it keeps meets the SLO step by step
    runs = step_run(ONE, [{"name": "oracle"}], 3600)
    cola, oracle = runs["cola"], runs["oracle"]
    half = len(cola) // 2
    first, second = int(cola.violation.iloc[:half].sum()), int(cola.violation.iloc[half:].sum())
    assert first > 0 and second < first / 4
    assert set(cola.target_replicas.iloc[-120:]) == set(oracle.target_replicas.iloc[-120:])  # the last 10 minutes


def test_with_colas_pulls_it_keeps_the_cheapest_count_whose_mean_latency_meets_the_target():
    # 30 s + 25 s pulls score the mean p95 of a sample: 3 replicas average under 600 ms at
    # 35 users (some steps above it), 2 do not -- COLA keeps 3, as its objective says
    runs = step_run({}, [{"name": "static", "label": "static-2", "replicas": 2},
                         {"name": "static", "label": "static-3", "replicas": 3}], 7200)
    tail = lambda g: g.iloc[-600:]  # noqa: E731 -- the last 50 minutes
    assert tail(runs["static-3"]).p95_ms.mean() <= 600 < tail(runs["static-2"]).p95_ms.mean()
    assert (tail(runs["cola"]).target_replicas == 3).mean() > 0.9
