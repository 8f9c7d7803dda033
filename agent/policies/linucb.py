"""Disjoint LinUCB (Li et al. 2010) and the paper's HSLinUCB wrapper, in numpy.

Per arm ``k``: ``A_k = λ I + Σ x xᵀ``, ``b_k = Σ r x``, ``θ_k = A_k⁻¹ b_k`` and the score
``θ_k·x + α sqrt(xᵀ A_k⁻¹ x)``. The arm with the highest score is played; ties are broken
uniformly at random by the policy's own generator, so the probability of the chosen arm
is ``1 / (number of tied arms)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError, needs_queue
from scalelab.orchestrator.context import FIELDS, Context


@njit(cache=True)
def _ucb_scores(A_inv, theta, x, alpha):
    """θ_k·x + α sqrt(xᵀ A_k⁻¹ x) for every arm k."""
    k, d, _ = A_inv.shape
    out = np.empty(k)
    for a in range(k):
        mean = 0.0
        width = 0.0
        for i in range(d):
            mean += theta[a, i] * x[i]
            row = 0.0
            for j in range(d):
                row += A_inv[a, i, j] * x[j]
            width += x[i] * row
        out[a] = mean + alpha * np.sqrt(max(width, 0.0))
    return out


@njit(cache=True)
def _sherman_morrison(A, A_inv, b, theta, arm, x, reward):
    """Rank-one update of arm ``arm``: A += x xᵀ, b += r x, A⁻¹ and θ = A⁻¹ b."""
    d = x.shape[0]
    ax = np.zeros(d)
    for i in range(d):
        b[arm, i] += reward * x[i]
        for j in range(d):
            A[arm, i, j] += x[i] * x[j]
            ax[i] += A_inv[arm, i, j] * x[j]
    denom = 1.0
    for i in range(d):
        denom += x[i] * ax[i]
    for i in range(d):
        for j in range(d):
            A_inv[arm, i, j] -= ax[i] * ax[j] / denom
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += A_inv[arm, i, j] * b[arm, j]
        theta[arm, i] = acc


class LinUCBCore:
    """The per-arm statistics; ``d`` features, ``n_arms`` arms.

    ``exact_inverse=True`` recomputes ``A⁻¹`` from ``A`` at every update (what the paper's
    code did); otherwise a Sherman–Morrison rank-one update keeps it in O(d²).
    """

    def __init__(self, n_arms: int, d: int, alpha: float = 1.0, lam: float = 1.0, exact_inverse: bool = False):
        if alpha < 0:
            raise PolicyError(f"alpha must be >= 0, got {alpha}")
        if lam <= 0:
            raise PolicyError(f"lambda must be > 0, got {lam}")
        self.alpha, self.lam, self.exact_inverse = float(alpha), float(lam), exact_inverse
        self.A = np.tile(np.eye(d) * lam, (n_arms, 1, 1))
        self.A_inv = np.tile(np.eye(d) / lam, (n_arms, 1, 1))
        self.b = np.zeros((n_arms, d))
        self.theta = np.zeros((n_arms, d))  # A⁻¹ b, kept up to date by update()

    def scores(self, x: np.ndarray) -> np.ndarray:
        """UCB score of each arm for the feature vector ``x`` (shape ``(d,)``)."""
        return _ucb_scores(self.A_inv, self.theta, np.ascontiguousarray(x, dtype=np.float64), self.alpha)

    def update(self, arm: int, x: np.ndarray, reward: float) -> None:
        if not self.exact_inverse:
            _sherman_morrison(self.A, self.A_inv, self.b, self.theta, int(arm), np.asarray(x, dtype=np.float64),
                              float(reward))
            return
        self.A[arm] += np.outer(x, x)
        self.b[arm] += reward * x
        self.A_inv[arm] = np.linalg.inv(self.A[arm])
        self.theta[arm] = self.A_inv[arm] @ self.b[arm]

    def state(self) -> dict:
        return {"A": self.A.tolist(), "A_inv": self.A_inv.tolist(), "b": self.b.tolist(), "theta": self.theta.tolist()}

    def load(self, state: dict) -> None:
        A, b = np.asarray(state["A"]), np.asarray(state["b"])
        if A.shape != self.A.shape or b.shape != self.b.shape:
            raise PolicyError(f"saved LinUCB state has shape {A.shape}, this policy needs {self.A.shape}")
        self.A, self.b, self.A_inv = A, b, np.asarray(state["A_inv"])
        # θ as it was (recomputing it rounds differently, and ties are decided exactly)
        self.theta = np.asarray(state["theta"]) if "theta" in state else np.einsum("kij,kj->ki", self.A_inv, self.b)


def paper_reward(context: Context, action: int, next_context: Context, slo_ms: float) -> float:
    """The paper's binary reward of down (0) and stay (1): down pays 1 if it removed a
    replica and the p95 measured after it is at most the SLO -- a down refused at the
    minimum pays 0 (the notebooks' ``armDown``); stay pays 1 if the current p95 is at
    most the SLO."""
    if action == 0:
        return 1.0 if next_context.replicas < context.replicas and next_context.p95_ms <= slo_ms else 0.0
    return 1.0 if context.p95_ms <= slo_ms else 0.0


def argmax_random(scores: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
    """Index of a maximum, ties broken uniformly by ``rng``; and its probability."""
    a = int(scores.argmax())
    ties = scores == scores[a]
    n = int(ties.sum())
    if n == 1:
        return a, 1.0
    best = np.flatnonzero(ties)
    return int(best[rng.integers(n)]), 1.0 / n


def tie_probabilities(scores: np.ndarray, action: int, p: float) -> tuple[float, ...]:
    """The probability vector of a greedy choice with random tie-breaking."""
    if p == 1.0:
        out = [0.0] * scores.shape[0]
        out[action] = 1.0
        return tuple(out)
    return tuple(np.where(scores == scores.max(), p, 0.0).tolist())


class LinearBandit(BasePolicy):
    """Shared parts of the contextual bandits over any action set.

    steps: the incremental action set (default ``[-1, 0, 1]``), or ``fixed: [lo, hi]``
    for one action per target count. scale: divide the 7 context features by these
    (default: none); bias: append a constant 1.
    """

    def __init__(self, steps: list[int] | None = None, fixed: list[int] | None = None,
                 scale: list[float] | None = None, bias: bool = False, seed=None) -> None:
        actions = ActionSet.fixed(*fixed) if fixed else ActionSet.incremental(*(steps or [-1, 0, 1]))
        super().__init__(actions, seed)
        if scale is not None and (len(scale) != len(FIELDS) or min(scale) <= 0):
            raise PolicyError(f"{self.name}: scale needs {len(FIELDS)} positive numbers, got {scale}")
        self.scale = None if scale is None else np.asarray(scale, float)
        self.bias = bool(bias)
        self.d = len(FIELDS) + int(self.bias)

    core: LinUCBCore  # set by each subclass

    def features(self, context: Context) -> np.ndarray:
        x = context.vector()
        if self.scale is not None:
            x = x / self.scale
        if self.bias:
            x = np.concatenate((x, (1.0,)))
        return x

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        self.core.update(action, self.features(context), reward)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "core": self.core.state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.core.load(state["core"])


class LinUCB(LinearBandit):
    """General disjoint LinUCB over any action set (see :class:`LinearBandit`)."""

    name = "linucb"

    def __init__(self, alpha: float = 1.0, lam: float = 1.0, steps: list[int] | None = None,
                 fixed: list[int] | None = None, scale: list[float] | None = None, bias: bool = False,
                 seed=None) -> None:
        super().__init__(steps, fixed, scale, bias, seed)
        self.core = LinUCBCore(len(self.actions), self.d, alpha, lam)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        s = self.core.scores(self.features(context))
        a, p = argmax_random(s, self.rng)
        return Decision(action=a, probability=p, probabilities=tie_probabilities(s, a, p))


class HSLinUCB(BasePolicy):
    """The paper's control rule (docs/hslinucb.md), exactly.

    Actions: 0 = scale down by one, 1 = stay, 2 = the forced scale-up. If the current
    p95 exceeds ``slo_ms``, scale up by one (probability 1) and do not update the bandit.
    Otherwise disjoint LinUCB (α = 1, λ = 1, the raw 7 features, no bias, ``A⁻¹``
    recomputed at each update) picks down or stay. With ``paper_reward`` (default) the
    bandit learns the paper's binary reward (:func:`paper_reward`). Otherwise it learns
    the experiment's configured reward.
    """

    name = "hslinucb"
    DOWN, STAY, UP = 0, 1, 2

    def __init__(self, alpha: float = 1.0, lam: float = 1.0, slo_ms: float = 600.0, paper_reward: bool = True,
                 seed=None) -> None:
        super().__init__(ActionSet.incremental(-1, 0, 1), seed)
        if slo_ms <= 0:
            raise PolicyError(f"hslinucb: slo_ms must be > 0, got {slo_ms}")
        self.slo_ms = float(slo_ms)
        self.paper_reward = bool(paper_reward)
        self.core = LinUCBCore(2, len(FIELDS), alpha, lam, exact_inverse=True)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if context.p95_ms > self.slo_ms:
            return Decision(action=self.UP, probability=1.0, probabilities=(0.0, 0.0, 1.0), forced=True)
        s = self.core.scores(context.vector())
        a, p = argmax_random(s, self.rng)
        return Decision(action=a, probability=p, probabilities=(*tie_probabilities(s, a, p), 0.0))

    def reward(self, context: Context, action: int, next_context: Context) -> float:
        """The paper's binary reward of a bandit action (:func:`paper_reward`)."""
        return paper_reward(context, action, next_context, self.slo_ms)

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        if action == self.UP:  # the forced rule: the bandit is not updated
            return
        r = self.reward(context, action, next_context) if self.paper_reward else reward
        self.core.update(action, context.vector(), r)

    def state_dict(self) -> dict:
        """The bandit, and (variants that decide on more than the context: the calendar's,
        the queue's) the features of the last decision, which its update learns on: a run
        resumed between a decision and its update learns as an uninterrupted one."""
        x = getattr(self, "_x", None)
        return {**super().state_dict(), "core": self.core.state(), "x": None if x is None else x.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.core.load(state["core"])
        if hasattr(self, "_x"):
            self._x = None if state.get("x") is None else np.asarray(state["x"], dtype=float)


class QueueHSLinUCB(HSLinUCB):
    """HSLinUCB over the jobs model's context (``architecture: jobs``): the paper's rule
    and reward on the turnaround (the context's p95 is the jobs' turnaround there), its
    bandit on the paper's 7 features plus two from the queue: the lag per runner (jobs
    submitted and not committed, over the runners that exist; jobs) and the oldest
    waiting job's age (s). A queue that grows is then visible before the turnaround
    breaks the SLO."""

    name = "hslinucb-queue"
    architecture = "jobs"
    EXTRA = ("lag_per_runner", "oldest_wait_s")

    def __init__(self, alpha: float = 1.0, lam: float = 1.0, slo_ms: float = 600.0, paper_reward: bool = True,
                 seed=None) -> None:
        super().__init__(alpha=alpha, lam=lam, slo_ms=slo_ms, paper_reward=paper_reward, seed=seed)
        self.core = LinUCBCore(2, len(FIELDS) + len(self.EXTRA), alpha, lam, exact_inverse=True)
        self._x: np.ndarray | None = None  # the features of the last decision

    def features(self, context: Context, info: Mapping[str, Any] | None) -> np.ndarray:
        """The 7 features, then the lag per runner (jobs) and the oldest wait (s)."""
        _, q = needs_queue(self.name, info or {})
        return np.concatenate((context.vector(), (q.lag / max(q.runners, 1), q.oldest_wait_s)))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        self._x = self.features(context, info)
        if context.p95_ms > self.slo_ms:
            return Decision(action=self.UP, probability=1.0, probabilities=(0.0, 0.0, 1.0), forced=True)
        s = self.core.scores(self._x)
        a, p = argmax_random(s, self.rng)
        return Decision(action=a, probability=p, probabilities=(*tie_probabilities(s, a, p), 0.0))

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        if action == self.UP or self._x is None:
            return
        r = self.reward(context, action, next_context) if self.paper_reward else reward
        self.core.update(action, self._x, r)
