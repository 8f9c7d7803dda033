"""The paper's other learners, inside the same control rule as HSLinUCB.

Both use HSLinUCB's wrapper (docs/hslinucb.md): a forced +1 when the p95 exceeds the
SLO (no learning on that step), otherwise a choice between down (0) and stay (1), and
the paper's binary reward. Their greedy probability ("epsilon" in the paper's code)
rises linearly from 0 to 1 over ``greedy_steps`` decisions; otherwise they explore
uniformly. Hot start: ``greedy_start: 1`` acts greedily from the first step.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.actions import ActionSet
from agent.base import BasePolicy, Decision, PolicyError
from agent.policies.linucb import argmax_random
from orchestrator.context import Context


class PaperRule(BasePolicy):
    """Forced scale-up above the SLO, two learned arms (down, stay) below it."""

    DOWN, STAY, UP = 0, 1, 2

    def __init__(self, slo_ms: float = 600.0, greedy_steps: int = 6000, greedy_start: float = 0.0,
                 paper_reward: bool = True, seed=None) -> None:
        super().__init__(ActionSet.incremental(-1, 0, 1), seed)
        if slo_ms <= 0 or greedy_steps < 1 or not 0 <= greedy_start <= 1:
            raise PolicyError(f"{self.name}: need slo_ms > 0, greedy_steps >= 1, 0 <= greedy_start <= 1")
        self.slo_ms, self.greedy_steps, self.greedy_start = float(slo_ms), int(greedy_steps), float(greedy_start)
        self.paper_reward = bool(paper_reward)
        self.decisions = 0

    @property
    def greedy(self) -> float:
        """Probability of acting greedily now."""
        return min(1.0, self.greedy_start + (1 - self.greedy_start) * self.decisions / self.greedy_steps)

    def values(self, context: Context) -> np.ndarray:
        """Estimated value of down and stay, shape ``(2,)``."""
        raise NotImplementedError

    def learn(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        raise NotImplementedError

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if context.p95_ms > self.slo_ms:
            return Decision(action=self.UP, probability=1.0, probabilities=(0.0, 0.0, 1.0), forced=True)
        g = self.greedy
        self.decisions += 1
        q = self.values(context)
        best = q == q.max()
        probs = g * best / best.sum() + (1 - g) / 2
        if self.rng.random() < g:
            action = argmax_random(q, self.rng)[0]
        else:
            action = int(self.rng.integers(2))
        return Decision(action=action, probability=float(probs[action]), probabilities=(*probs, 0.0))

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        if action == self.UP:
            return
        if self.paper_reward:
            measured = next_context if action == self.DOWN else context
            reward = 1.0 if measured.p95_ms <= self.slo_ms else 0.0
        self.learn(context, action, reward, next_context)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "decisions": self.decisions}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.decisions = int(state["decisions"])


class QLearning(PaperRule):
    """Tabular Q-learning over the paper's discretised context: replicas; p95 rounded to
    100 ms; RPS to 10; the four CPU and memory ratios to 0.1. α = 0.1, γ = 0.9."""

    name = "q-learning"

    def __init__(self, alpha: float = 0.1, gamma: float = 0.9, slo_ms: float = 600.0, greedy_steps: int = 6000,
                 greedy_start: float = 0.0, paper_reward: bool = True, seed=None) -> None:
        super().__init__(slo_ms, greedy_steps, greedy_start, paper_reward, seed)
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.q: dict[tuple, list[float]] = {}

    @staticmethod
    def state_key(c: Context) -> tuple:
        return (
            int(c.replicas), round(c.p95_ms, -2), round(c.rps, -1), round(c.cpu_request_ratio, 1),
            round(c.cpu_limit_ratio, 1), round(c.mem_request_ratio, 1), round(c.mem_limit_ratio, 1),
        )  # fmt: skip

    def values(self, context: Context) -> np.ndarray:
        return np.array(self.q.get(self.state_key(context), (0.0, 0.0)))

    def learn(self, context, action, reward, next_context) -> None:
        row = self.q.setdefault(self.state_key(context), [0.0, 0.0])
        target = reward + self.gamma * max(self.q.get(self.state_key(next_context), (0.0, 0.0)))
        row[action] += self.alpha * (target - row[action])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "q": [[list(k), v] for k, v in self.q.items()]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.q = {tuple(k): list(v) for k, v in state["q"]}


class MLP:
    """A small ReLU network with He-uniform initialisation, Huber loss and Adam, numpy only."""

    def __init__(self, sizes: tuple[int, ...], rng: np.random.Generator, lr: float = 0.01) -> None:
        self.W = [rng.uniform(-np.sqrt(6 / a), np.sqrt(6 / a), (a, b)) for a, b in itertools.pairwise(sizes)]
        self.b = [np.zeros(b) for b in sizes[1:]]
        self.lr, self.t = lr, 0
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        for k, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if k < len(self.W) - 1 else z)
        return acts[-1], acts

    def train(self, x: np.ndarray, action: np.ndarray, target: np.ndarray) -> float:
        """One Adam step on the Huber loss of ``Q(x, action)`` against ``target``."""
        q, acts = self.forward(x)
        err = q[np.arange(len(x)), action] - target
        loss = np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5).mean()
        grad = np.zeros_like(q)
        grad[np.arange(len(x)), action] = np.clip(err, -1, 1) / len(x)
        grads_w, grads_b = [], []
        for k in range(len(self.W) - 1, -1, -1):
            grads_w.insert(0, acts[k].T @ grad)
            grads_b.insert(0, grad.sum(axis=0))
            if k:
                grad = (grad @ self.W[k].T) * (acts[k] > 0)
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-7
        for i, (p, g) in enumerate(zip(self.W + self.b, grads_w + grads_b, strict=True)):
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            mhat, vhat = self.m[i] / (1 - b1**self.t), self.v[i] / (1 - b2**self.t)
            p -= self.lr * mhat / (np.sqrt(vhat) + eps)
        return float(loss)

    def copy_from(self, other: MLP) -> None:
        self.W = [w.copy() for w in other.W]
        self.b = [b.copy() for b in other.b]

    def params(self) -> dict:
        """Weights and the optimiser's state (Adam's moments and step), JSON-ready."""
        return {"W": [w.tolist() for w in self.W], "b": [b.tolist() for b in self.b], "t": self.t,
                "m": [m.tolist() for m in self.m], "v": [v.tolist() for v in self.v]}

    def load(self, d: dict) -> None:
        self.W = [np.asarray(w, dtype=float) for w in d["W"]]
        self.b = [np.asarray(b, dtype=float) for b in d["b"]]
        if "m" in d:  # states saved before the optimiser's state was kept have none
            self.t = int(d["t"])
            self.m = [np.asarray(m, dtype=float) for m in d["m"]]
            self.v = [np.asarray(v, dtype=float) for v in d["v"]]


class DQN(PaperRule):
    """The paper's deep Q-learning: MLP 7→24→12→2 on the raw context, Huber loss, Adam
    (lr 0.01), γ = 0.9, batches of 50 from a de-duplicated replay memory, target network
    copied every 100 training steps, greedy probability rising over 3000 steps."""

    name = "dqn"

    def __init__(self, lr: float = 0.01, gamma: float = 0.9, batch: int = 50, target_every: int = 100,
                 memory: int = 100_000, slo_ms: float = 600.0, greedy_steps: int = 3000, greedy_start: float = 0.0,
                 paper_reward: bool = True, seed=None) -> None:
        super().__init__(slo_ms, greedy_steps, greedy_start, paper_reward, seed)
        self.gamma, self.batch, self.target_every, self.capacity = float(gamma), int(batch), int(target_every), int(memory)
        self.net = MLP((7, 24, 12, 2), self.rng, lr)
        self.target = MLP((7, 24, 12, 2), self.rng, lr)
        self.target.copy_from(self.net)
        self.memory: dict[tuple, None] = {}  # insertion-ordered set: de-duplicated transitions
        self.trained = 0

    def values(self, context: Context) -> np.ndarray:
        return self.net.forward(context.vector()[None, :])[0][0]

    def learn(self, context, action, reward, next_context) -> None:
        item = (*context.vector(), action, reward, *next_context.vector())
        self.memory.pop(item, None)
        self.memory[item] = None
        while len(self.memory) > self.capacity:
            self.memory.pop(next(iter(self.memory)))
        if len(self.memory) < self.batch:
            return
        keys = list(self.memory)
        rows = np.array([keys[i] for i in self.rng.choice(len(keys), self.batch, replace=False)])
        x, a, r, x2 = rows[:, :7], rows[:, 7].astype(int), rows[:, 8], rows[:, 9:]
        target = r + self.gamma * self.target.forward(x2)[0].max(axis=1)
        self.net.train(x, a, target)
        self.trained += 1
        if self.trained % self.target_every == 0:
            self.target.copy_from(self.net)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "net": self.net.params(), "target": self.target.params(),
                "memory": [list(k) for k in self.memory], "trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.net.load(state["net"])
        self.target.load(state["target"])
        self.memory = {tuple(k): None for k in state["memory"]}
        self.trained = int(state["trained"])
