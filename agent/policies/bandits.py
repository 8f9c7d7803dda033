"""More contextual bandits over any action set: linear Thompson sampling, ε-greedy
ridge regression, and UCB1 (non-contextual, a reference)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.agent.policies.linucb import LinearBandit, LinUCBCore, argmax_random
from scalelab.orchestrator.context import Context


class LinTS(LinearBandit):
    """Linear Thompson sampling (Agrawal & Goyal 2013), disjoint arms.

    Each arm's weights are drawn from ``N(θ̂_k, v² A_k⁻¹)`` with ``θ̂_k = A_k⁻¹ b_k``; the
    arm with the best sampled score is played. The probability vector of a decision is
    estimated from ``propensity_samples`` further draws (for off-policy evaluation).
    """

    name = "lin-ts"

    def __init__(self, v: float = 0.5, lam: float = 1.0, steps=None, fixed=None, scale=None, bias=False,
                 propensity_samples: int = 200, seed=None) -> None:
        super().__init__(steps, fixed, scale, bias, seed)
        if v <= 0:
            raise PolicyError(f"lin-ts: v must be > 0, got {v}")
        self.v = float(v)
        self.samples = int(propensity_samples)
        self.core = LinUCBCore(len(self.actions), self.d, 0.0, lam)

    def sample_theta(self, n: int) -> np.ndarray:
        """``n`` draws of every arm's weights, shape ``(n, arms, d)``."""
        theta = np.einsum("kij,kj->ki", self.core.A_inv, self.core.b)
        chol = np.linalg.cholesky((self.core.A_inv + self.core.A_inv.transpose(0, 2, 1)) / 2)
        z = self.rng.standard_normal((n, *theta.shape))
        return theta + self.v * np.einsum("kij,nkj->nki", chol, z)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        x = self.features(context)
        draws = self.sample_theta(1 + self.samples) @ x  # (n, arms)
        action = int(np.argmax(draws[0]))
        if self.samples:
            probs = np.bincount(np.argmax(draws[1:], axis=1), minlength=len(self.actions)) / self.samples
            prob = max(float(probs[action]), 1.0 / self.samples)
        else:
            probs, prob = None, float("nan")
        return Decision(action=action, probability=prob, probabilities=None if probs is None else tuple(probs))


class EpsilonGreedy(LinearBandit):
    """Ridge regression per arm; a uniformly random arm with probability ``epsilon``."""

    name = "epsilon-greedy"

    def __init__(self, epsilon: float = 0.1, lam: float = 1.0, steps=None, fixed=None, scale=None, bias=False,
                 seed=None) -> None:
        super().__init__(steps, fixed, scale, bias, seed)
        if not 0 <= epsilon <= 1:
            raise PolicyError(f"epsilon-greedy: epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.core = LinUCBCore(len(self.actions), self.d, 0.0, lam)

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        k = len(self.actions)
        s = self.core.scores(self.features(context))
        best = s == s.max()
        probs = self.epsilon / k + (1 - self.epsilon) * best / best.sum()
        action = int(self.rng.integers(k)) if self.rng.random() < self.epsilon else argmax_random(s, self.rng)[0]
        return Decision(action=action, probability=float(probs[action]), probabilities=tuple(probs))


class UCB1(BasePolicy):
    """UCB1 (Auer et al. 2002): ignores the context. Untried arms first."""

    name = "ucb1"

    def __init__(self, c: float = 1.0, steps: list[int] | None = None, seed=None) -> None:
        super().__init__(ActionSet.incremental(*(steps or [-1, 0, 1])), seed)
        self.c = float(c)
        self.n = np.zeros(len(self.actions))
        self.total = np.zeros(len(self.actions))

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if (self.n == 0).any():
            s = (self.n == 0).astype(float)
        else:
            s = self.total / self.n + self.c * np.sqrt(2 * np.log(self.n.sum()) / self.n)
        a, p = argmax_random(s, self.rng)
        return Decision(action=a, probability=p, probabilities=tuple(np.where(s == s.max(), p, 0.0)))

    def update(self, context, action, reward, next_context) -> None:
        self.n[action] += 1
        self.total[action] += reward

    def state_dict(self) -> dict:
        return {**super().state_dict(), "n": self.n.tolist(), "total": self.total.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.n, self.total = np.asarray(state["n"]), np.asarray(state["total"])
