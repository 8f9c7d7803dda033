"""``cola``: COLA's UCB bandit over replica counts, per request-rate context, learning online.

COLA ("COLA: Optimizing Cloud Resource Allocation for Microservices", Sachidananda and
Sivaraman, arXiv 2112.14845) learns, for each of a few request rates, the replica count
of every microservice that meets an end-to-end latency target at the least cost. Its
code is ``vigsachi/erlang``: the bandit is ``training/cola/bandit_algo.py``
(``UCB_Bandit``), driven by ``training/cola/train_bandit.py`` (``BanditTrainer``); the
reward is ``utils/locust_loadgen.py`` (``LoadGenerator.compute_qoe``); the deployed
policy is ``inference/cola/inference_cola.py`` (``BanditAutoscaler``). Defaults are the
training configs' (``configs/app/*/train_config.py``: ``c=2, w_l=5, w_i=15``,
``train_iters`` 10 for online_boutique, 15 for book_info and hello_world).

What it computes, as the source does (units: replicas, req/s, ms):

* **Contexts**: ``contexts`` is COLA's ``train_rps``, the request rates it trains at
  (sorted). A request rate ``rps`` belongs to the first context above it (the upper
  bound ``inference_cola.query_model`` looks up), the last one at or above the largest;
  ``rps = 0`` is COLA's zero context (the fewest replicas), never learned.
* **A round** (``run_bandit`` + ``UCB_Bandit``): ``arms`` (COLA's ``k = 5``) replica
  counts centred on the context's current count, ``current - floor(k/2) ...``, shifted
  inside ``[max(1, min_replicas), max_replicas]`` (``create_action_to_rep_map``);
  ``pulls`` pulls (``min(50, 2k) = 10``). A pull orders its count and holds it for
  ``settle_s`` (the source's ``time.sleep(30)``) and then ``sample_s`` (Locust's
  ``sample_duration``, 25 s by ``TrainConfig``'s default), whole steps of
  ``step_seconds`` (at least one of sample); its latency is the mean of the latencies
  of the sample's steps, and it counts for the context it started in. Each pull plays
  ``argmax(k_reward + c * sqrt(ln(n) / k_n))`` (``np.argmax``: the first, the fewest
  replicas, on a tie), with ``n = 1`` and ``k_n = 1`` at the start: all arms tie at 0
  on the first pull, and as every reward is negative an unplayed arm (mean 0) beats a
  played one, so the arms are played in order once before any is played twice. The
  reward (``compute_qoe``) is ``w_l * min(0, slo_ms - latency) - w_i * (a + 1)``, with
  ``a`` the arm's index in the window (the source passes ``action=a+1``, not the replica
  count: the same arm wins either way). The updates are the source's:
  ``k_reward[a] += (r - k_reward[a]) / k_n[a]`` (and the same for the arm's latency),
  then ``n += 1, k_n[a] += 1``.
* **After a round** (``train_context``): the context's count becomes the arm with the
  best mean reward; if that arm's mean latency is at most ``slo_ms`` the context is
  learned (the early stop), else a new round starts centred on it, up to ``rounds``
  rounds (``train_iters``). A context seen for the first time starts from the count
  this policy last ordered (``restart_policy: false``, the source's default: the next
  context starts from the policy left by the previous one; before any order, the
  fewest replicas, as the trainer starts from 1), or from the fewest replicas
  (``restart_policy: true``).
* **A learned context** acts as ``BanditAutoscaler`` does: it orders
  ``ceil(w_lb * count(lb) + w_ub * count(ub))`` between the learned counts of the
  contexts below and above the rate (``w_ub = (rps - lb + 1e-4) / (ub - lb + 1e-4)``;
  the zero context has the fewest replicas; one count alone above the largest context),
  clamped to the limits, and only when the rate moved by more than ``rps_change``
  (``|rps - previous| / (previous + 1) > 0.1``) since the previous step or the previous
  step was a pull; otherwise it orders its previous count again.

How this differs from COLA: COLA trains offline, on a cluster it drives, one service at
a time (chosen by CPU growth under load), holding each training rate with Locust for
every pull (30 s to settle, then 25-45 s of load and its median latency), and then
deploys the finished table of counts per rate. Here there is one deployment and no
separate training phase: it learns online, step by step as HSLinUCB does. Every loop
step orders a count; a pull lasts the steps of its settling and its sample
(``settle_s: 0`` and ``sample_s`` of one step make a pull per step, scored on the
step's outcome) under whatever load the workload offers meanwhile; its latency is the
mean of the steps' figures, not Locust's over the whole sample; the context is the
measured request rate, not an offered load (Locust users, in the source). A context
learns the first time rates in it are seen, and the interpolation uses the counts as
they stand (a context below not yet seen: the count of the one above alone). The
latency is ``latency: p95`` (the context's p95, what scalelab's SLO is on) or
``mean``; COLA's default is Locust's median, which the context does not carry, and its
50 ms target gives way to the experiment's ``slo_ms``. As in COLA, the target is met on
average over a sample, not at every step: a count whose sample's mean p95 is under the
target is kept even if some of its steps break it. The interpolation's ceiling is the
source's, floating point included (at a context's own rate the next one weighs 1e-5,
which ceils one replica up). The reward the experiment configures is not used (COLA's
own is). No draw is random: the generator is kept for the checker's rules.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.orchestrator.context import Context

#: The request rates learned at by default (req/s): the paper staircase's levels. COLA's
#: own are per application (online_boutique 100..400, book_info 200..800 Locust users).
DEFAULT_CONTEXTS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
LATENCIES = ("p95", "mean")


def cola_reward(latency_ms: float, slo_ms: float, action: int, w_l: float = 5.0, w_i: float = 15.0) -> float:
    """COLA's ``compute_qoe``: the latency's excess over the target, hinged at 0, times
    ``w_l``, minus ``w_i`` per unit of ``action`` (the arm's index + 1 during training).

    >>> cola_reward(70.0, 50.0, 3)  # 20 ms over the target on the third arm
    -145.0
    """
    soft = slo_ms - latency_ms
    if soft > 0:
        soft = 0
    return soft * w_l - int(action) * w_i


def window_start(current: int, arms: int, low: int, high: int) -> int:
    """The first replica count of a round's ``arms`` counts (``create_action_to_rep_map``):
    ``current - floor(arms / 2)``, shifted up to ``low`` or else down so that the last is
    ``high``.

    >>> window_start(3, 5, 1, 10), window_start(1, 5, 1, 10), window_start(9, 5, 1, 10)
    (1, 1, 6)
    """
    start = current - arms // 2
    if start < low:
        start = low
    elif start + arms - 1 > high:
        start = high - arms + 1
    return start


def ucb_index(k_reward: np.ndarray, k_n: np.ndarray, n: float, c: float) -> np.ndarray:
    """``UCB_Bandit.pull``'s score of each arm: ``k_reward + c * sqrt(ln(n) / k_n)``."""
    return k_reward + c * np.sqrt(np.log(n) / k_n)


@dataclass
class Round:
    """One ``UCB_Bandit``: the window's first count ``low`` and the source's statistics
    (``n`` and ``k_n`` start at 1; ``k_reward`` and ``k_latency`` are running means)."""

    low: int
    n: float
    k_n: list[float]
    k_reward: list[float]
    k_latency: list[float]
    pulls: int = 0

    @classmethod
    def start(cls, low: int, arms: int) -> Round:
        return cls(low, 1.0, [1.0] * arms, [0.0] * arms, [0.0] * arms)

    def choose(self, c: float) -> int:
        """The arm ``np.argmax`` of the UCB index picks (the first on a tie)."""
        return int(np.argmax(ucb_index(np.asarray(self.k_reward), np.asarray(self.k_n), self.n, c)))

    def update(self, arm: int, reward: float, latency_ms: float) -> None:
        """The source's update, in its order: the arm's means with ``k_n`` before the
        increment, then ``n`` and ``k_n``."""
        self.k_reward[arm] = self.k_reward[arm] + (reward - self.k_reward[arm]) / self.k_n[arm]
        self.k_latency[arm] = self.k_latency[arm] + (latency_ms - self.k_latency[arm]) / self.k_n[arm]
        self.n += 1
        self.k_n[arm] += 1
        self.pulls += 1

    def best(self) -> int:
        """``np.argmax(ucb.k_reward)``: the arm the trainer keeps."""
        return int(np.argmax(self.k_reward))

    def to_dict(self) -> dict:
        return {"low": self.low, "n": self.n, "k_n": list(self.k_n), "k_reward": list(self.k_reward),
                "k_latency": list(self.k_latency), "pulls": self.pulls}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Round:
        return cls(int(d["low"]), float(d["n"]), [float(x) for x in d["k_n"]], [float(x) for x in d["k_reward"]],
                   [float(x) for x in d["k_latency"]], int(d["pulls"]))


@dataclass
class ContextState:
    """One context: its current count (the trainer's ``policy[service]``), the rounds
    it finished, whether it is learned, and the round under way."""

    replicas: int
    rounds: int = 0
    done: bool = False
    round: Round | None = None

    def to_dict(self) -> dict:
        return {"replicas": self.replicas, "rounds": self.rounds, "done": self.done,
                "round": None if self.round is None else self.round.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContextState:
        return cls(int(d["replicas"]), int(d["rounds"]), bool(d["done"]),
                   None if d["round"] is None else Round.from_dict(d["round"]))


@dataclass
class Pull:
    """A pull under way: its context and arm, the steps it has lasted and the latencies
    (ms) of the steps of its sample."""

    context: int
    arm: int
    steps: int = 0
    latencies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"context": self.context, "arm": self.arm, "steps": self.steps, "latencies": list(self.latencies)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pull:
        return cls(int(d["context"]), int(d["arm"]), int(d["steps"]), [float(x) for x in d["latencies"]])


def _number(name: str, value: Any, rule: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise PolicyError(f"cola: {name} must be {rule}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, rule: str, ok) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer() \
            or not ok(int(value)):
        raise PolicyError(f"cola: {name} must be {rule}, got {value!r}")
    return int(value)


class Cola(BasePolicy):
    """COLA's UCB bandit (arXiv 2112.14845, ``vigsachi/erlang``): per request-rate context,
    rounds of UCB over 5 replica counts, reward trading latency over the target against
    replicas; learned online for one deployment (module docstring).

    c: exploration constant. w_l: reward per ms of latency above ``slo_ms``. w_i: cost per
    replica (per arm index). arms: replica counts per round (COLA's k). pulls: pulls per
    round. rounds: rounds per context at most (COLA's train_iters). slo_ms: the latency
    target, ms. latency: ``p95`` or ``mean`` of the step's outcome. contexts: the request
    rates learned at, req/s (COLA's train_rps). rps_change: the relative change of the
    rate that makes a learned context act again. restart_policy: start a new context
    from the fewest replicas instead of the current count. settle_s, sample_s: how long
    a pull holds its count before it measures, and measures, s (whole steps of
    ``step_seconds``).
    """

    name = "cola"

    def __init__(self, c: float = 2.0, w_l: float = 5.0, w_i: float = 15.0, arms: int = 5, pulls: int = 10,
                 rounds: int = 10, slo_ms: float = 50.0, latency: str = "p95",
                 contexts: Sequence[float] = DEFAULT_CONTEXTS, rps_change: float = 0.1,
                 restart_policy: bool = False, settle_s: float = 30.0, sample_s: float = 25.0,
                 step_seconds: float = 5.0, min_replicas: int = 1, max_replicas: int = 10, seed=None) -> None:
        self.c = _number("c", c, "a number >= 0", lambda v: v >= 0)
        self.w_l = _number("w_l", w_l, "a number >= 0", lambda v: v >= 0)
        self.w_i = _number("w_i", w_i, "a number >= 0", lambda v: v >= 0)
        self.slo_ms = _number("slo_ms", slo_ms, "a number of ms > 0", lambda v: v > 0)
        self.rps_change = _number("rps_change", rps_change, "a number >= 0 (a fraction: 0.1 is 10 %)",
                                  lambda v: v >= 0)
        step_s = _number("step_seconds", step_seconds, "a number of s > 0", lambda v: v > 0)
        self.settle_s = _number("settle_s", settle_s, "a number of s >= 0", lambda v: v >= 0)
        self.sample_s = _number("sample_s", sample_s, "a number of s > 0", lambda v: v > 0)
        self.settle_steps = round(self.settle_s / step_s)  # steps of a pull before its sample
        self.sample_steps = max(1, round(self.sample_s / step_s))  # steps measured
        min_replicas = _integer("min_replicas", min_replicas, "an integer >= 0", lambda v: v >= 0)
        self.low = max(1, min_replicas)  # COLA never goes below one replica
        self.high = _integer("max_replicas", max_replicas, f"an integer >= {self.low}", lambda v: v >= self.low)
        span = self.high - self.low + 1
        self.arms = _integer("arms", arms, f"an integer in 1..{span} (the replica counts between "
                             f"{self.low} and max_replicas={self.high})", lambda v: 1 <= v <= span)
        self.pulls = _integer("pulls", pulls, f"an integer >= arms={self.arms} (every arm played once)",
                              lambda v: v >= self.arms)
        self.rounds = _integer("rounds", rounds, "an integer >= 1", lambda v: v >= 1)
        if latency not in LATENCIES:
            raise PolicyError(f"cola: latency must be one of {LATENCIES}, got {latency!r}")
        self.latency = latency
        if isinstance(contexts, str | bytes) or not isinstance(contexts, Sequence) or not contexts:
            raise PolicyError(f"cola: contexts must be a non-empty list of request rates (req/s), got {contexts!r}")
        levels = [_number("contexts", v, "a list of request rates > 0 (req/s)", lambda x: x > 0) for v in contexts]
        if len(set(levels)) != len(levels):
            raise PolicyError(f"cola: contexts must be distinct request rates, got {list(contexts)!r}")
        self.contexts = sorted(levels)  # as TrainConfig sorts train_rps
        if not isinstance(restart_policy, bool):
            raise PolicyError(f"cola: restart_policy must be true or false, got {restart_policy!r}")
        self.restart_policy = restart_policy
        super().__init__(ActionSet.fixed(min_replicas, self.high), seed)
        self.first = min_replicas  # the replica count of action 0
        self.states: list[ContextState | None] = [None] * len(self.contexts)
        self.previous_rps = 0.0  # BanditAutoscaler.current_rps
        self.last_order: int | None = None
        self.pulled = False  # the previous decision was a pull
        self.pull: Pull | None = None  # the pull under way

    # ------------------------------------------------------------------ contexts
    def context_of(self, rps: float) -> int | None:
        """The index of the context a request rate learns in: the first context above
        ``rps``, the last one from the largest up; None at 0 req/s."""
        if rps <= 0:
            return None
        return min(bisect.bisect_right(self.contexts, rps), len(self.contexts) - 1)

    def count(self, rps: float) -> int:
        """``get_pod_config``: the interpolated count between the contexts below and above
        ``rps`` (``query_model``), ceiled and clamped."""
        levels = self.contexts
        i = bisect.bisect_right(levels, rps)
        if rps <= 0:
            return self.low  # the zero context: one replica of every service
        if i == len(levels):  # above every context: the largest alone
            value = float(self._replicas(len(levels) - 1))
        else:
            ub, lb = levels[i], (levels[i - 1] if i > 0 else 0.0)
            upper = self._replicas(i)
            lower = self.low if i == 0 else self._replicas(i - 1)
            if lower is None:
                value = float(upper)
            else:
                w_ub = (rps - lb + 1e-4) / (ub - lb + 1e-4)
                w_lb = 1 - w_ub
                value = lower * w_lb + upper * w_ub
        return min(max(math.ceil(value), self.low), self.high)

    def _replicas(self, i: int) -> int | None:
        s = self.states[i]
        return None if s is None else s.replicas

    def _start(self) -> ContextState:
        current = self.low if self.restart_policy or self.last_order is None else self.last_order
        return ContextState(current, round=Round.start(window_start(current, self.arms, self.low, self.high),
                                                       self.arms))

    # ------------------------------------------------------------------ the policy
    def _decision(self, target: int, **info: Any) -> Decision:
        target = min(max(target, self.low), self.high)  # a state saved under other limits
        self.last_order = target
        a = target - self.first
        probs = [0.0] * len(self.actions)
        probs[a] = 1.0
        return Decision(action=a, probability=1.0, probabilities=tuple(probs), info=info)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        rps = float(context.rps)
        moved = abs(rps - self.previous_rps) / (self.previous_rps + 1) > self.rps_change
        self.previous_rps = rps
        if self.pull is not None:  # the pull goes on: the same count until its sample ends
            p = self.pull
            return self._decision(self.states[p.context].round.low + p.arm, cola="pull", context=p.context,
                                  arm=p.arm)
        i = self.context_of(rps)
        if i is not None:
            if self.states[i] is None:
                self.states[i] = self._start()
            state = self.states[i]
            if not state.done:
                arm = state.round.choose(self.c)
                self.pulled = True
                self.pull = Pull(i, arm)
                return self._decision(state.round.low + arm, cola="pull", context=i, arm=arm)
        if moved or self.pulled or self.last_order is None:
            self.pulled = False
            return self._decision(self.count(rps), cola="learned", context=i)
        return self._decision(self.last_order, cola="hold", context=i)

    def latency_of(self, context: Context) -> float:
        """The latency a pull measures in a step's outcome, ms."""
        return float(context.p95_ms if self.latency == "p95" else context.mean_ms)

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        p = self.pull
        if p is None:
            return
        p.steps += 1
        if p.steps > self.settle_steps:
            p.latencies.append(self.latency_of(next_context))
        if p.steps < self.settle_steps + self.sample_steps:
            return
        self.pull = None
        state = self.states[p.context]
        rnd = state.round
        latency = float(np.mean(p.latencies))
        rnd.update(p.arm, cola_reward(latency, self.slo_ms, p.arm + 1, self.w_l, self.w_i), latency)
        if rnd.pulls < self.pulls:
            return
        best = rnd.best()  # train_context after run_bandit: keep the best arm
        state.replicas = rnd.low + best
        state.rounds += 1
        if rnd.k_latency[best] <= self.slo_ms or state.rounds >= self.rounds:
            state.done, state.round = True, None
        else:
            state.round = Round.start(window_start(state.replicas, self.arms, self.low, self.high), self.arms)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "contexts": list(self.contexts),
                "states": [None if s is None else s.to_dict() for s in self.states],
                "previous_rps": self.previous_rps, "last_order": self.last_order, "pulled": self.pulled,
                "pull": None if self.pull is None else self.pull.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if [float(x) for x in state["contexts"]] != self.contexts:
            raise PolicyError(f"cola: the saved state learned at contexts {state['contexts']}, "
                              f"this policy has {self.contexts}")
        states = [None if s is None else ContextState.from_dict(s) for s in state["states"]]
        for s in states:
            if s is not None and s.round is not None and len(s.round.k_n) != self.arms:
                raise PolicyError(f"cola: the saved state has rounds of {len(s.round.k_n)} arms, "
                                  f"this policy has arms={self.arms}")
        self.states = states
        self.previous_rps = float(state["previous_rps"])
        self.last_order = None if state["last_order"] is None else int(state["last_order"])
        self.pulled = bool(state["pulled"])
        self.pull = None if state["pull"] is None else Pull.from_dict(state["pull"])
