"""Off-policy evaluation from a run's decision records.

Given logged steps (context, action, reward, the logging policy's propensity) and a
target policy's action probabilities on the same contexts, estimate the target's mean
reward per step:

IPS       mean of w·r, with w = π(a|x) / p (Horvitz–Thompson)
SNIPS     Σ w·r / Σ w (self-normalised)
DM        mean over steps of Σ_a π(a|x) q̂(x, a), q̂ a ridge regression per action
DR        DM + mean of w·(r − q̂(x, a)) (doubly robust)

Each comes with a bootstrap 95 % interval (resampled steps). When every propensity is
1 the logging policy never explored: importance weights are then 0 or 1 and the
estimates say nothing about actions it never took; :func:`evaluate` flags it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.orchestrator.context import Context


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class OPEResult:
    """Estimates of the target policy's mean reward per step."""

    ips: Estimate
    snips: Estimate
    dm: Estimate
    dr: Estimate
    n: int
    logging_explored: bool

    def as_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"estimator": k, "value": e.value, "ci_low": e.low, "ci_high": e.high}
             for k, e in (("IPS", self.ips), ("SNIPS", self.snips), ("DM", self.dm), ("DR", self.dr))]
        )


def ridge_q(x: np.ndarray, actions: np.ndarray, rewards: np.ndarray, n_actions: int, lam: float = 1.0) -> np.ndarray:
    """Per-action ridge weights, shape ``(n_actions, d)``, on features ``x`` ``(n, d)``."""
    d = x.shape[1]
    w = np.zeros((n_actions, d))
    for a in range(n_actions):
        m = actions == a
        if m.any():
            xa = x[m]
            w[a] = np.linalg.solve(xa.T @ xa + lam * np.eye(d), xa.T @ rewards[m])
    return w


def _components(x, actions, rewards, propensities, target_probs, n_actions, lam):
    w = target_probs[np.arange(len(actions)), actions] / propensities
    q = x @ ridge_q(x, actions, rewards, n_actions, lam).T  # (n, actions)
    dm_terms = (target_probs * q).sum(axis=1)
    dr_terms = dm_terms + w * (rewards - q[np.arange(len(actions)), actions])
    return w, dm_terms, dr_terms


def estimate(x: np.ndarray, actions: np.ndarray, rewards: np.ndarray, propensities: np.ndarray,
             target_probs: np.ndarray, n_boot: int = 200, seed: int = 0, lam: float = 1.0) -> OPEResult:
    """All four estimators with bootstrap intervals.

    x: features ``(n, d)``; actions ``(n,)`` ints; rewards ``(n,)``; propensities ``(n,)``
    of the logged actions under the logging policy; target_probs ``(n, n_actions)``.
    """
    n, n_actions = target_probs.shape
    if np.any(propensities <= 0):
        raise UserError("propensities must be > 0 for every logged action")

    def point(idx):
        w, dm, dr = _components(x[idx], actions[idx], rewards[idx], propensities[idx], target_probs[idx],
                                n_actions, lam)
        r = rewards[idx]
        return np.array([np.mean(w * r), np.sum(w * r) / max(np.sum(w), 1e-12), dm.mean(), dr.mean()])

    full = point(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.array([point(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    est = [Estimate(float(v), float(a), float(b)) for v, a, b in zip(full, lo, hi, strict=True)]
    return OPEResult(*est, n=n, logging_explored=bool(np.any(propensities < 1.0)))


def decided_on(row: dict) -> Context:
    """The context a logged step's decision was made on: its ``pre_`` columns
    (``scalelab.agent.loop.StepRecord.row``), every field of :class:`Context`."""
    values = {f.name: row["pre_" + f.name] for f in fields(Context)}
    for name in ("p95_ms", "mean_ms"):  # a quiet window (NaN in the file) was 0 to the policy
        if values[name] != values[name]:
            values[name] = 0.0
    return Context.from_dict(values)


def evaluate(steps: pd.DataFrame, policy, n_boot: int = 200, seed: int = 0) -> OPEResult:
    """Estimate ``policy``'s value from logged ``steps`` (one policy's rows of a
    ``steps.parquet``). The target's probabilities come from ``policy.decide`` on each
    logged context (its ``probabilities`` if it gives them, else its chosen action)."""
    rows = steps.dropna(subset=["reward"])
    k = len(policy.actions)
    contexts = [decided_on(row) for row in rows.to_dict(orient="records")]
    target = np.zeros((len(contexts), k))
    for i, c in enumerate(contexts):
        d = policy.decide(c, {"step": i})
        if d.probabilities is not None and len(d.probabilities) == k:
            target[i] = d.probabilities
        else:
            target[i, d.action] = 1.0
    x = np.array([c.vector() for c in contexts])
    return estimate(x, rows["action"].to_numpy(), rows["reward"].to_numpy(), rows["probability"].to_numpy(),
                    target, n_boot=n_boot, seed=seed)
