"""The paper's other learners, inside the same control rule as HSLinUCB.

Both use HSLinUCB's wrapper (docs/hslinucb.md): a forced +1 when the p95 exceeds the
SLO (no learning on that step), otherwise a choice between down (0) and stay (1), and
the paper's binary reward. Their greedy probability ("epsilon" in the paper's code)
rises linearly from 0 to 1 over ``greedy_steps`` decisions; otherwise they explore
uniformly. Hot start: ``greedy_start: 1`` acts greedily from the first step.

``paper: true`` runs each learner as the paper's notebooks did, quirks included
(``../shared/paper.md`` section 8, docs/hslinucb.md "The paper's learners"):

- DQN: target network never refreshed (the copy sits under ``counter % 5`` truthy and
  ``counter % 100 == 0``, which never hold together); trains on 4 of 5 observations;
  the replay memory keeps duplicates and is de-duplicated every 500 observations;
  greedy ties go to the first index (``np.argmax``); the Huber loss is Keras' (mean
  over both outputs).
- Q-learning: the 5-field state key (replicas, p95 and RPS rounded to 100 ms and 10,
  CPU and memory request ratios to 0.1); the next state is looked up with the unrounded
  p95 and RPS, so the bootstrap term is almost always 0; random actions when exploring
  or when both values are 0, otherwise the first maximum.

Without it (the default) they are the corrected learners: a target network refreshed
every ``target_every`` trainings, training on every observation, a de-duplicated memory,
the 7-field state key with the same rounding for the next state, random tie-breaking.
Both scale the DQN's inputs as the notebook did (replicas/10, p95/20000, RPS/100).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.agent.policies.linucb import argmax_random, paper_reward
from scalelab.orchestrator.context import Context


class PaperRule(BasePolicy):
    """Forced scale-up above the SLO, two learned arms (down, stay) below it.

    paper: the notebooks' variant of the learner (see the module docstring)."""

    DOWN, STAY, UP = 0, 1, 2

    def __init__(self, slo_ms: float = 600.0, greedy_steps: int = 6000, greedy_start: float = 0.0,
                 paper_reward: bool = True, paper: bool = False, seed=None) -> None:
        super().__init__(ActionSet.incremental(-1, 0, 1), seed)
        if slo_ms <= 0 or greedy_steps < 1 or not 0 <= greedy_start <= 1:
            raise PolicyError(f"{self.name}: need slo_ms > 0, greedy_steps >= 1, 0 <= greedy_start <= 1")
        self.slo_ms, self.greedy_steps, self.greedy_start = float(slo_ms), int(greedy_steps), float(greedy_start)
        self.paper_reward, self.paper = bool(paper_reward), bool(paper)
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

    def choose(self, q: np.ndarray, greedy: float) -> tuple[int, np.ndarray]:
        """The action among down and stay, and both probabilities: greedy with
        probability ``greedy`` (ties at random), else uniform."""
        best = q == q.max()
        probs = greedy * best / best.sum() + (1 - greedy) / 2
        if self.rng.random() < greedy:
            return argmax_random(q, self.rng)[0], probs
        return int(self.rng.integers(2)), probs

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        if context.p95_ms > self.slo_ms:
            return Decision(action=self.UP, probability=1.0, probabilities=(0.0, 0.0, 1.0), forced=True)
        g = self.greedy
        self.decisions += 1
        action, probs = self.choose(self.values(context), g)
        return Decision(action=action, probability=float(probs[action]), probabilities=(*probs, 0.0))

    def update(self, context: Context, action: int, reward: float, next_context: Context) -> None:
        if action == self.UP:
            return
        if self.paper_reward:
            reward = paper_reward(context, action, next_context, self.slo_ms)
        self.learn(context, action, reward, next_context)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "decisions": self.decisions}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.decisions = int(state["decisions"])


class QLearning(PaperRule):
    """Tabular Q-learning over the paper's discretised context: replicas; p95 rounded to
    100 ms; RPS to 10; the CPU and memory ratios to 0.1 (all four; the request ratios
    only with ``paper``). α = 0.1, γ = 0.9."""

    name = "q-learning"

    def __init__(self, alpha: float = 0.1, gamma: float = 0.9, slo_ms: float = 600.0, greedy_steps: int = 6000,
                 greedy_start: float = 0.0, paper_reward: bool = True, paper: bool = False, seed=None) -> None:
        super().__init__(slo_ms, greedy_steps, greedy_start, paper_reward, paper, seed)
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.q: dict[tuple, list[float]] = {}

    def state_key(self, c: Context) -> tuple:
        if self.paper:  # qlearning_coldstart.ipynb, cell 11: select / observe
            return (int(c.replicas), int(round(c.p95_ms, -2)), int(round(c.rps, -1)),
                    int(round(c.cpu_request_ratio, 1) * 10), int(round(c.mem_request_ratio, 1) * 10))
        return (
            int(c.replicas), round(c.p95_ms, -2), round(c.rps, -1), round(c.cpu_request_ratio, 1),
            round(c.cpu_limit_ratio, 1), round(c.mem_request_ratio, 1), round(c.mem_limit_ratio, 1),
        )  # fmt: skip

    def next_state_key(self, c: Context) -> tuple:
        """The key the bootstrap term looks up: the notebook's rounds p95 and RPS to
        units, not to 100 and 10 (``paper``); otherwise the state's own key."""
        if self.paper:
            return (int(c.replicas), round(c.p95_ms), round(c.rps),
                    int(round(c.cpu_request_ratio, 1) * 10), int(round(c.mem_request_ratio, 1) * 10))
        return self.state_key(c)

    def values(self, context: Context) -> np.ndarray:
        return np.array(self.q.get(self.state_key(context), (0.0, 0.0)))

    def choose(self, q: np.ndarray, greedy: float) -> tuple[int, np.ndarray]:
        if not self.paper:
            return super().choose(q, greedy)
        # explore when a uniform draw exceeds the greedy probability, or both values are 0
        explore = self.rng.random() > greedy
        if explore or not q.any():
            probs = np.full(2, 0.5) if not q.any() else greedy * (np.arange(2) == q.argmax()) + (1 - greedy) / 2
            return int(self.rng.integers(2)), probs
        return int(q.argmax()), greedy * (np.arange(2) == q.argmax()) + (1 - greedy) / 2

    def learn(self, context, action, reward, next_context) -> None:
        row = self.q.setdefault(self.state_key(context), [0.0, 0.0])
        target = reward + self.gamma * max(self.q.get(self.next_state_key(next_context), (0.0, 0.0)))
        row[action] += self.alpha * (target - row[action])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "q": [[list(k), v] for k, v in self.q.items()]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.q = {tuple(k): list(v) for k, v in state["q"]}


class MLP:
    """A small ReLU network with He-uniform initialisation, Huber loss and Adam, numpy only.

    The weights ``W`` and biases ``b`` are views into one flat vector, and Adam's moments
    are flat too, so one optimiser step is a few array operations whatever the layers
    (element by element the same arithmetic as per parameter)."""

    def __init__(self, sizes: tuple[int, ...], rng: np.random.Generator, lr: float = 0.01) -> None:
        self._shapes = [(a, b) for a, b in itertools.pairwise(sizes)] + [(b,) for b in sizes[1:]]
        self.theta = np.zeros(sum(int(np.prod(shape)) for shape in self._shapes))
        self._grad = np.zeros_like(self.theta)
        self._bind()
        for w in self.W:
            a = w.shape[0]
            w[...] = rng.uniform(-np.sqrt(6 / a), np.sqrt(6 / a), w.shape)
        self.lr, self.t = lr, 0
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)

    def _bind(self) -> None:
        """``W``, ``b`` (and the gradient's) as views into the flat vectors."""
        n = len(self._shapes) // 2
        params, grads = self._views(self.theta, self._shapes), self._views(self._grad, self._shapes)
        self.W, self.b = params[:n], params[n:]
        self._gw, self._gb = grads[:n], grads[n:]

    def __getstate__(self) -> dict:  # copies and pickles keep W and b views of their own theta
        return {k: v for k, v in self.__dict__.items() if k not in ("W", "b", "_gw", "_gb")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()

    @staticmethod
    def _views(flat: np.ndarray, shapes: list[tuple]) -> list[np.ndarray]:
        out, at = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            out.append(flat[at:at + size].reshape(shape))
            at += size
        return out

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        for k, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if k < len(self.W) - 1 else z)
        return acts[-1], acts

    def train(self, x: np.ndarray, action: np.ndarray, target: np.ndarray, over_outputs: bool = False) -> float:
        """One Adam step on the Huber loss of ``Q(x, action)`` against ``target``;
        ``over_outputs``: averaged over every output as well (Keras' ``fit`` on a target
        vector equal to the prediction except at ``action``)."""
        q, acts = self.forward(x)
        rows = np.arange(len(x))
        err = q[rows, action] - target
        share = len(x) * (q.shape[1] if over_outputs else 1)
        abs_err = np.abs(err)
        loss = np.where(abs_err <= 1, 0.5 * err**2, abs_err - 0.5).sum() / share
        grad = np.zeros_like(q)
        grad[rows, action] = np.clip(err, -1, 1) / share
        for k in range(len(self.W) - 1, -1, -1):
            np.matmul(acts[k].T, grad, out=self._gw[k])
            grad.sum(axis=0, out=self._gb[k])
            if k:
                grad = (grad @ self.W[k].T) * (acts[k] > 0)
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-7
        g = self._grad
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        mhat, vhat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        self.theta -= self.lr * mhat / (np.sqrt(vhat) + eps)
        return float(loss)

    def copy_from(self, other: MLP) -> None:
        self.theta[:] = other.theta

    def _split(self, flat: np.ndarray) -> list[list]:
        return [part.tolist() for part in self._views(flat, self._shapes)]

    def params(self) -> dict:
        """Weights and the optimiser's state (Adam's moments and step), JSON-ready."""
        return {"W": [w.tolist() for w in self.W], "b": [b.tolist() for b in self.b], "t": self.t,
                "m": self._split(self.m), "v": self._split(self.v)}

    def load(self, d: dict) -> None:
        for view, value in zip(self.W + self.b, d["W"] + d["b"], strict=True):
            view[...] = np.asarray(value, dtype=float).reshape(view.shape)
        if "m" in d:  # states saved before the optimiser's state was kept have none
            self.t = int(d["t"])
            self.m = np.concatenate([np.asarray(m, dtype=float).ravel() for m in d["m"]])
            self.v = np.concatenate([np.asarray(v, dtype=float).ravel() for v in d["v"]])


class DQN(PaperRule):
    """The paper's deep Q-learning: MLP 7→24→12→2 on the context scaled by ``scale``
    (the notebook's replicas/10, p95/20000, RPS/100, ratios as they are), Huber loss,
    Adam (lr 0.01), γ = 0.9, batches of 50 from the replay memory, greedy probability
    rising over 3000 steps. Corrected (default): a de-duplicated memory, training on
    every observation, the target network copied every ``target_every`` trainings,
    random ties. ``paper: true``: as the notebook ran (module docstring)."""

    name = "dqn"

    #: dqn_coldstart.ipynb, cell 6 (getContext): replicas / max_level, p95 / 20000, rps / 100
    PAPER_SCALE = (10.0, 20000.0, 100.0, 1.0, 1.0, 1.0, 1.0)

    def __init__(self, lr: float = 0.01, gamma: float = 0.9, batch: int = 50, target_every: int = 100,
                 memory: int = 100_000, slo_ms: float = 600.0, greedy_steps: int = 3000, greedy_start: float = 0.0,
                 paper_reward: bool = True, paper: bool = False, scale: list[float] | None = None,
                 clean_every: int = 500, seed=None) -> None:
        super().__init__(slo_ms, greedy_steps, greedy_start, paper_reward, paper, seed)
        self.gamma, self.batch, self.target_every, self.capacity = float(gamma), int(batch), int(target_every), int(memory)
        self.scale = np.asarray(self.PAPER_SCALE if scale is None else scale, dtype=float)
        if self.scale.shape != (7,) or (self.scale <= 0).any():
            raise PolicyError(f"dqn: scale needs 7 positive numbers, got {scale}")
        self.clean_every = int(clean_every)
        self.net = MLP((7, 24, 12, 2), self.rng, lr)
        self.target = MLP((7, 24, 12, 2), self.rng, lr)
        self.target.copy_from(self.net)
        # corrected: an insertion-ordered set of transitions; paper: a list, duplicates
        # dropped every ``clean_every`` observations
        self.memory: dict[tuple, None] = {}
        self.paper_memory: list[tuple] = []
        self._paper_rows = np.zeros((0, 16))  # paper_memory as an array, row for row (batches index it)
        self.trained = 0
        self.observed = 0  # the notebook's learn_step_counter

    def features(self, context: Context) -> np.ndarray:
        return context.vector() / self.scale

    def values(self, context: Context) -> np.ndarray:
        return self.net.forward(self.features(context)[None, :])[0][0]

    def choose(self, q: np.ndarray, greedy: float) -> tuple[int, np.ndarray]:
        if not self.paper:
            return super().choose(q, greedy)
        first = np.arange(2) == q.argmax()  # np.argmax: ties to the first index
        probs = greedy * first + (1 - greedy) / 2
        if self.rng.random() < greedy:
            return int(q.argmax()), probs
        return int(self.rng.integers(2)), probs

    def learn(self, context, action, reward, next_context) -> None:
        item = (*self.features(context), action, reward, *self.features(next_context))
        if self.paper:
            self._learn_as_notebook(item)
            return
        self.memory.pop(item, None)
        self.memory[item] = None
        while len(self.memory) > self.capacity:
            self.memory.pop(next(iter(self.memory)))
        if len(self.memory) < self.batch:
            return
        keys = list(self.memory)
        self._train([keys[i] for i in self.rng.choice(len(keys), self.batch, replace=False)])
        if self.trained % self.target_every == 0:
            self.target.copy_from(self.net)

    def _learn_as_notebook(self, item: tuple) -> None:
        """``DeepQNetwork.observe`` of dqn_coldstart.ipynb, cell 11."""
        memory = self.paper_memory
        if self.observed % self.clean_every == 0:
            memory[:] = list(dict.fromkeys(memory))  # drop_duplicates, keeping the first
            self._mirror_paper_memory()
        memory.append(item)
        if len(memory) > len(self._paper_rows):
            self._paper_rows = np.concatenate((self._paper_rows, np.zeros((max(len(memory), 1024), 16))))
        self._paper_rows[len(memory) - 1] = item
        if self.observed % 5 and len(memory) >= self.batch:
            # the target copy would go here under `observed % 100 == 0`: never true
            self._train(self._paper_rows[self.rng.choice(len(memory), self.batch, replace=False)],
                        over_outputs=True)
        self.observed += 1

    def _mirror_paper_memory(self) -> None:
        self._paper_rows = np.array(self.paper_memory, dtype=float).reshape(len(self.paper_memory), 16)

    def _train(self, batch: list[tuple] | np.ndarray, over_outputs: bool = False) -> None:
        """One training step on ``batch``: transitions (x, action, reward, x'), 16 numbers each."""
        rows = np.asarray(batch, dtype=float)
        x, a, r, x2 = rows[:, :7], rows[:, 7].astype(int), rows[:, 8], rows[:, 9:]
        target = r + self.gamma * self.target.forward(x2)[0].max(axis=1)
        self.net.train(x, a, target, over_outputs)
        self.trained += 1

    def state_dict(self) -> dict:
        memory = self.paper_memory if self.paper else self.memory
        return {**super().state_dict(), "net": self.net.params(), "target": self.target.params(),
                "memory": [list(k) for k in memory], "trained": self.trained, "observed": self.observed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.net.load(state["net"])
        self.target.load(state["target"])
        self.trained = int(state["trained"])
        self.observed = int(state.get("observed", 0))
        if self.paper:
            self.paper_memory = [tuple(k) for k in state["memory"]]
            self._mirror_paper_memory()
        else:
            self.memory = {tuple(k): None for k in state["memory"]}

    def hot_start(self, seed) -> None:
        super().hot_start(seed)
        if self.paper:
            # load_model + load_memory of the hot-start notebooks: the target becomes the
            # loaded network, the memory the saved one de-duplicated, a new Agent's counter
            self.target.copy_from(self.net)
            self.paper_memory = list(dict.fromkeys(self.paper_memory))
            self._mirror_paper_memory()
            self.observed = 0
