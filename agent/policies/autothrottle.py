"""Autothrottle's Tower (Wang et al., NSDI'24) choosing the CPU-utilisation target of an
HPA-style captain: the vertical design read horizontally.

The source (``microsoft/autothrottle``: ``utils.py`` ``VwTower``, ``evaluation.py``,
``worker-daemon.py`` ``CaptainScaler``) is bi-level. Once a minute the **Tower**, a
contextual bandit, picks a pair of CPU-throttle targets (one per group of services, 9
levels each: 81 actions); every second each service's **Captain** adjusts its CPU quota so
that the measured throttle ratio approaches its target. Here one deployment is scaled
horizontally, so:

* the Tower's actions are **CPU-utilisation targets** (integer percent, HPA's unit), one
  group, 9 levels by default (``targets``, from the most generous to the tightest, as the
  source's throttle targets run from 0.0 to 0.3);
* the captain is the HPA's replica calculator (``thresholds.resource_replicas``, per pod
  when the backend reports pods, with its tolerance and readiness rules), run at every
  step instead of every 15 s and without the HPA's stabilisation window:
  ``desired = ceil(ready · utilisation / target)``, clamped to ``[min_replicas,
  max_replicas]``;
* the allocation the Tower minimises is the replica count (the source: the sum of the
  services' CPU limits, in cores); the SLO is on the p95 in ms (the source: the p99).

The Tower as the source runs it (``VwTower.__call__``), every ``period_s`` (60 s: the
Locust stats row it waits for is written every 60 s):

1. **sample**: the previous period gives ``(rps, action, probability, latency,
   allocation)``: the RPS it was chosen at, and what followed (here: the largest step p95
   of the period, ms, an upper bound of the period's pooled p95, and the mean replica
   count ordered). The first ``drop_samples`` samples are dropped.
2. **cost** of every sample, renormalised over all samples each period: a sample that met
   the SLO costs its allocation min-max normalised over the samples that met it (0.5 if
   they all have the same); one that did not costs 2 + its latency normalised over the
   samples that did not (2.5 if the same) -- so any SLO violation costs more than any
   allocation.
3. **aggregate**: per action, samples are grouped by RPS rounded to a multiple of
   ``aggregate_rps`` (Python's ``round``: halves to even) and each group keeps its median
   cost.
4. **learn**: the source retrains Vowpal Wabbit from scratch (``--cb_explore 81
   --epsilon 0 -l 0.5 --nn 3``, feature ``rps``) on 10,000 draws with replacement of the
   aggregated table, i.e. each aggregated entry weighs the same. Here the per-action cost
   model is that table itself: each action's median costs linearly interpolated in RPS
   between its buckets, constant beyond them (the fit the regressor approaches); an
   action never tried predicts 0, as a regressor whose weights start at zero does.
5. **choose**: the greedy action (least predicted cost at the current RPS; ties to the
   lowest index, as VW's argmin keeps the first, so to the more generous target), then
   the source's own exploration around it: the greedy action keeps ``1 - explore`` and the
   neighbouring levels (one above, one below; in the source the four neighbours of the
   9×9 grid) share ``explore``.

Units: ``period_s`` s; ``targets`` percent of the pods' CPU request; ``slo_ms`` ms;
``aggregate_rps`` requests/s; ``explore`` a probability; ``tolerance`` a fraction (0.1 is
10 %). Defaults are the source's: ``period_s`` 60, ``explore`` 0.1 (``VwTower``'s default,
"normally, 0.1 is a good value and no warmup process is needed"), ``aggregate_rps`` 20,
``drop_samples`` 0; ``tolerance`` is kube-controller-manager's 0.1.

What differs from the source: one group of targets instead of two (the 81 joint actions
become 9); utilisation targets and replicas instead of throttle targets and CPU quotas
(the Captain's throttle-feedback heuristic is replaced by the HPA rule); the p95 of the
steps instead of Locust's p99 of the minute; the learner is the exact fit of the table
VW is trained on, not VW's neural network (no VW numerics, no dependency); the source's
evaluation warms the Tower up first (six runs of uniform exploration, six with
``explore`` 0.5, then ``explore`` 0): here it learns from its first period, as the
source's default suggests (a saved state carries the samples to a later experiment).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, PolicyError
from scalelab.agent.policies.thresholds import HPAError, HPAPod, Tolerances, hpa_pods, resource_replicas
from scalelab.orchestrator.context import Context

#: The source's throttle targets per group of services (``evaluation.py``, "see section 4").
SOURCE_THROTTLE_TARGETS = (0.0, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.25, 0.3)
#: The default utilisation targets (percent): 9 levels, the most generous first.
DEFAULT_TARGETS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: The metrics API's window the captain's pods are read with (the HPA policy's default).
METRIC_WINDOW_S = 15.0

#: A Tower sample: (rps, action, probability, latency ms, allocation replicas).
Sample = tuple[float, int, float, float, float]


def tower_costs(samples: Sequence[Sample], slo_ms: float) -> list[float]:
    """``VwTower``'s cost of each sample: met the SLO (latency <= ``slo_ms``): its
    allocation min-max normalised over the samples that met it, in [0, 1] (0.5 when they
    all have one value); missed it: 2 + its latency min-max normalised over the samples
    that missed it, in [2, 3] (2.5 when one value)."""
    met = [s[4] for s in samples if s[3] <= slo_ms]
    missed = [s[3] for s in samples if s[3] > slo_ms]
    costs = []
    for _, _, _, latency, allocation in samples:
        if latency <= slo_ms:
            lo, hi = min(met), max(met)
            costs.append((allocation - lo) / (hi - lo) if hi != lo else 0.5)
        else:
            lo, hi = min(missed), max(missed)
            costs.append((latency - lo) / (hi - lo) + 2.0 if hi != lo else 2.5)
    return costs


def median(values: Sequence[float]) -> float:
    """The source's median: the middle value, or the mean of the two middle ones."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def rps_bucket(rps: float, width: float) -> float:
    """``round(rps / width) * width`` with Python's ``round`` (halves to even), as the
    source groups samples."""
    return round(rps / width) * width


def aggregate(samples: Sequence[Sample], costs: Sequence[float], width: float) -> dict[int, list[tuple[float, float]]]:
    """Per action, ``(RPS bucket, median cost)`` sorted by bucket."""
    groups: dict[int, dict[float, list[float]]] = {}
    for s, c in zip(samples, costs, strict=True):
        groups.setdefault(int(s[1]), {}).setdefault(rps_bucket(s[0], width), []).append(c)
    return {a: sorted((b, median(cs)) for b, cs in by.items()) for a, by in groups.items()}


def predicted_costs(table: Mapping[int, Sequence[tuple[float, float]]], n_actions: int, rps: float) -> np.ndarray:
    """Each action's cost at ``rps``: its buckets' medians linearly interpolated, constant
    beyond them; 0 for an action with no sample. Shape ``(n_actions,)``."""
    out = np.zeros(n_actions)
    for a, rows in table.items():
        xs, ys = zip(*rows, strict=True)
        out[a] = float(np.interp(rps, xs, ys))
    return out


def explore_distribution(greedy: int, n_actions: int, explore: float) -> np.ndarray:
    """The source's exploration around the greedy action: it keeps ``1 - explore``; its
    neighbouring levels (``greedy - 1``, ``greedy + 1``, those that exist) share
    ``explore`` equally. Shape ``(n_actions,)``."""
    dist = np.zeros(n_actions)
    dist[greedy] += 1.0 - explore
    near = [a for a in (greedy - 1, greedy + 1) if 0 <= a < n_actions]
    for a in near:
        dist[a] += explore / len(near)
    if not near:
        dist[greedy] = 1.0
    return dist


def context_pods(context: Context) -> list[HPAPod]:
    """The context's ready replicas as pods of one request (1000 m) at the newest
    scrape's CPU over request, ready long since (past the CPU-initialisation period):
    the HPA's per-pod path on the context's mean, for backends that report no pods."""
    metric = math.ceil(round(context.cpu_request_now * 1000.0, 6))
    return [HPAPod(name=f"pod-{i}", request_m=1000, metric_m=metric, start_s=-math.inf, ready_transition_s=-math.inf)
            for i in range(context.replicas)]


def captain_replicas(current: int, target_pct: int, pods: Sequence[HPAPod], now_s: float,
                     tolerance: float | Tolerances, min_replicas: int, max_replicas: int) -> int:
    """The captain: the HPA's ``GetResourceReplicas`` for ``target_pct`` (``ceil(ready ·
    utilisation / target)`` outside the tolerance), clamped to ``[min_replicas,
    max_replicas]``; the current count when it cannot compute (no metrics)."""
    if current > max_replicas:
        return max_replicas
    if current < min_replicas:
        return min_replicas
    try:
        proposal = resource_replicas(current, target_pct, pods, now_s, tolerance)[0]
    except HPAError:
        proposal = current
    return min(max(proposal, min_replicas), max_replicas)


class Autothrottle(BasePolicy):
    """Autothrottle's Tower (NSDI'24) choosing, every 60 s, the CPU-utilisation target
    of an HPA-style captain run every step (module docstring: the mapping, the units and
    what differs from the source).

    Every ``period_s`` the Tower closes the last period's sample, renormalises the
    costs, rebuilds its per-action cost table and picks a utilisation target (greedy,
    then ``explore`` around it); every step the captain orders the replicas that bring
    the pods' CPU utilisation to that target. The experiment's reward is not used: the
    Tower learns its own cost (allocation if the SLO was met, 2 + latency otherwise).
    """

    name = "autothrottle"

    def __init__(self, targets: Sequence[int] = DEFAULT_TARGETS, period_s: float = 60.0, explore: float = 0.1,
                 aggregate_rps: float = 20.0, drop_samples: int = 0, slo_ms: float = 600.0,
                 tolerance: float = 0.1, min_replicas: int = 1, max_replicas: int = 10, seed=None) -> None:
        targets = list(targets) if isinstance(targets, list | tuple) else [targets]
        if (not targets or any(isinstance(t, bool) or not isinstance(t, int | float) or not float(t).is_integer()
                               or t <= 0 for t in targets)
                or any(b <= a for a, b in pairwise(targets))):
            raise PolicyError(f"autothrottle: targets={targets!r} must be increasing whole percents > 0 "
                              "(CPU utilisation targets, the most generous first)")
        for key, value, ok, rule in (
            ("period_s", period_s, period_s > 0, "> 0 (s)"),
            ("explore", explore, 0.0 <= explore <= 1.0, "in [0, 1]"),
            ("aggregate_rps", aggregate_rps, aggregate_rps > 0, "> 0 (requests/s)"),
            ("drop_samples", drop_samples, drop_samples >= 0, ">= 0"),
            ("slo_ms", slo_ms, slo_ms > 0, "> 0 (ms)"),
            ("tolerance", tolerance, tolerance >= 0, ">= 0 (a fraction: 0.1 is 10 %)"),
            ("min_replicas", min_replicas, min_replicas >= 0, ">= 0"),
            ("max_replicas", max_replicas, max_replicas >= max(min_replicas, 1), ">= min_replicas and >= 1"),
        ):
            if not ok:
                raise PolicyError(f"autothrottle: {key}={value!r} must be {rule}")
        super().__init__(ActionSet.fixed(0, max_replicas), seed)
        self.targets = [int(t) for t in targets]
        self.period_s, self.explore, self.aggregate_rps = float(period_s), float(explore), float(aggregate_rps)
        self.slo_ms, self.tolerance = float(slo_ms), Tolerances.of(tolerance)
        self.min_r, self.max_r = int(min_replicas), int(max_replicas)
        self.samples: list[Sample] = []
        self.drop_left = int(drop_samples)
        self.last_tower: float | None = None  # when the Tower last chose, s
        self.action: int | None = None  # the Tower's target index in force
        self.action_p = 1.0
        self.action_rps = 0.0  # the RPS it was chosen at
        self.period_latency: float | None = None  # the period so far: the largest p95, ms
        self.period_alloc = 0.0  # the sum of the replicas ordered
        self.period_steps = 0

    # -- the Tower
    def close_period(self) -> None:
        """Turn the period under the current action into a sample (or drop it)."""
        if self.action is None or self.period_steps == 0:
            return
        sample = (self.action_rps, self.action, self.action_p, float(self.period_latency),
                  self.period_alloc / self.period_steps)
        if self.drop_left:
            self.drop_left -= 1
        else:
            self.samples.append(sample)
        self.period_latency, self.period_alloc, self.period_steps = None, 0.0, 0

    def predict(self, rps: float) -> np.ndarray:
        """The predicted cost of every target at ``rps`` from all samples so far."""
        table = aggregate(self.samples, tower_costs(self.samples, self.slo_ms), self.aggregate_rps)
        return predicted_costs(table, len(self.targets), rps)

    def tower(self, rps: float) -> np.ndarray:
        """One Tower decision at ``rps``: sets the action in force and returns the
        distribution it was drawn from."""
        costs = self.predict(rps)
        dist = explore_distribution(int(np.argmin(costs)), len(self.targets), self.explore)
        self.action = int(self.rng.choice(len(dist), p=dist / dist.sum()))
        self.action_p, self.action_rps = float(dist[self.action]), float(rps)
        return dist

    @property
    def target(self) -> int | None:
        """The utilisation target in force (percent)."""
        return None if self.action is None else self.targets[self.action]

    # -- the step
    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        info = info or {}
        t = float(info.get("t_s", 0.0))
        current = int(info.get("current_replicas", context.replicas))
        if self.action is not None:  # this observation is the outcome of the period's last step
            self.period_latency = max(context.p95_ms, self.period_latency or 0.0)
            self.period_alloc += current
            self.period_steps += 1
        dist = None
        if self.last_tower is None or t - self.last_tower >= self.period_s - 1e-9:
            self.close_period()
            dist = self.tower(context.rps)
            self.last_tower = t
        obs = info.get("observation")
        pods = hpa_pods(obs, METRIC_WINDOW_S) if obs is not None and obs.pods else context_pods(context)

        def replicas(target_pct: int) -> int:
            n = captain_replicas(current, target_pct, pods, t, self.tolerance, self.min_r, self.max_r)
            return min(n, len(self.actions) - 1)

        desired = replicas(self.targets[self.action])
        probs = np.zeros(len(self.actions))
        if dist is None:
            probs[desired] = 1.0
        else:  # the replica count's probability: that of every target that gives it
            for k, p in enumerate(dist):
                if p > 0:
                    probs[replicas(self.targets[k])] += p
        return Decision(action=desired, probability=float(probs[desired]), probabilities=tuple(probs.tolist()),
                        info={"target_pct": self.targets[self.action], "tower": dist is not None})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "targets": self.targets, "samples": [list(s) for s in self.samples],
                "drop_left": self.drop_left, "last_tower": self.last_tower, "action": self.action,
                "action_p": self.action_p, "action_rps": self.action_rps, "period_latency": self.period_latency,
                "period_alloc": self.period_alloc, "period_steps": self.period_steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if list(state["targets"]) != self.targets:
            raise PolicyError(f"autothrottle: the saved state is for targets {state['targets']}, "
                              f"this policy has {self.targets}")
        self.samples = [(float(s[0]), int(s[1]), float(s[2]), float(s[3]), float(s[4])) for s in state["samples"]]
        self.drop_left = int(state["drop_left"])
        self.last_tower = state["last_tower"]
        self.action = state["action"]
        self.action_p, self.action_rps = float(state["action_p"]), float(state["action_rps"])
        self.period_latency = state["period_latency"]
        self.period_alloc, self.period_steps = float(state["period_alloc"]), int(state["period_steps"])

    def hot_start(self, seed) -> None:
        """A new experiment keeps the samples (as the source's warm-up runs hand theirs
        on) and starts a new period: the Tower chooses at its first step."""
        super().hot_start(seed)
        self.last_tower, self.action = None, None
        self.period_latency, self.period_alloc, self.period_steps = None, 0.0, 0
