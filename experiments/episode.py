"""One episode: one policy, one run, on the simulator.

Each step of ``step_seconds``: the workload sets the load, the cluster serves it, the
context is built from the spans and pod samples, the previous decision gets its reward,
the policy decides, and the order is clamped and applied. One row per step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agent.registry import make_policy
from agent.rewards import make_reward
from experiments.config import ConfigError, ExperimentConfig, PolicySpec
from injector.workloads import Workload, WorkloadError, make_workload
from orchestrator.context import PRESETS, Context, ContextBuilder, ContextSettings
from simulator.cluster import ClusterSettings, SimCluster
from simulator.fluid import FluidCluster
from simulator.models import PROFILES, AppProfile
from simulator.replay import DatasetError, Replay, load_dataset

#: Columns of steps.parquet, in order.
COLUMNS = (
    "run", "policy", "step", "t_s", "users", "replicas", "target_replicas", "p95_ms",
    "mean_ms", "rps", "cpu_request_ratio", "cpu_limit_ratio", "mem_request_ratio",
    "mem_limit_ratio", "spans", "action", "probability", "reward", "violation",
    "oracle_replicas", "probabilities",
)  # fmt: skip


@dataclass(frozen=True)
class Resolved:
    """What a config means once its names are looked up."""

    app: AppProfile
    cluster: ClusterSettings
    context: ContextSettings
    workload: Workload
    steps: int


def resolve(cfg: ExperimentConfig) -> Resolved:
    """Look up the profile, workload and presets of ``cfg``; errors name the key."""
    if cfg.app.profile not in PROFILES:
        raise ConfigError(f"config: app.profile={cfg.app.profile!r} is not one of {sorted(PROFILES)}")
    overrides = {k: v for k, v in vars(cfg.app).items() if k != "profile" and v is not None}
    try:
        app = PROFILES[cfg.app.profile].with_overrides(**overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config: app: {exc}") from None
    try:
        workload = make_workload(cfg.workload)
    except WorkloadError as exc:
        raise ConfigError(f"config: {exc}") from None
    think = cfg.cluster.think_s or workload.think_s or (0.0, 2.0)
    c = cfg.cluster
    try:
        cluster = ClusterSettings(
            min_replicas=c.min_replicas, max_replicas=c.max_replicas,
            initial_replicas=c.initial_replicas, startup_seconds=c.startup_seconds,
            balancer=c.balancer, think_low_s=float(think[0]), think_high_s=float(think[1]),
        )
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    if cfg.context.preset not in PRESETS:
        raise ConfigError(f"config: context.preset={cfg.context.preset!r} is not one of {sorted(PRESETS)}")
    base = PRESETS[cfg.context.preset]
    ctx_over = {k: v for k, v in vars(cfg.context).items() if k != "preset" and v is not None}
    try:
        context = ContextSettings(**{**vars(base), **ctx_over})
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    steps = cfg.steps or math.ceil(workload.duration_s / cfg.step_seconds)
    return Resolved(app=app, cluster=cluster, context=context, workload=workload, steps=steps)


def saved_state_path(load: str, label: str, run: int) -> Path:
    """The state file a ``load: PATH`` means: PATH itself if it is a file; in a run folder,
    that policy's state for the same run (run 0 if the folder has fewer runs)."""
    p = Path(load).expanduser()
    if p.is_file():
        return p
    for candidate in (p / "policies" / f"{episode_name(label, run)}.json",
                      p / "policies" / f"{episode_name(label, 0)}.json"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config: policies: load={load!r}: no saved state for {label!r} there "
                      f"(expected a JSON file or a run folder with policies/{episode_name(label, run)}.json)")


def episode_name(policy_label: str, run: int) -> str:
    """Folder and file stem of one (policy, run) episode."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in policy_label)
    return f"{safe}--run{run:03d}"


def build_policy(spec: PolicySpec, cfg: ExperimentConfig, seed: int, run: int = 0):
    """The policy of ``spec`` with the runner's defaults offered to it; with ``load``
    (and optionally ``load_label``), its learned state is restored (hot start) and it
    keeps learning, with its own generator."""
    params = dict(spec.params)
    load = params.pop("load", None)
    load_label = params.pop("load_label", spec.display)
    defaults = {
        "seed": seed,
        "max_replicas": cfg.cluster.max_replicas,
        "min_replicas": cfg.cluster.min_replicas,
        "slo_ms": cfg.slo_ms,
        "step_seconds": cfg.step_seconds,
    }
    try:
        policy = make_policy(spec.name, defaults=defaults, **params)
    except ValueError as exc:
        raise ConfigError(f"config: policies: {exc}") from None
    if load is not None:
        state = json.loads(saved_state_path(str(load), load_label, run).read_text())
        try:
            policy.load_state_dict(state)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"config: policies: {spec.display}: cannot load {load!r}: {exc}") from None
        policy.rng = np.random.default_rng(seed)
    return policy


class _ClusterBackend:
    """A backend whose ``cluster`` takes scale orders (both simulator engines)."""

    cluster: SimCluster | FluidCluster

    @property
    def desired_replicas(self) -> int:
        return self.cluster.desired_replicas

    def scale_to(self, n: int) -> None:
        self.cluster.scale_to(n)


class SimBackend(_ClusterBackend):
    """The simulator and the context code, one step at a time."""

    def __init__(self, r: Resolved, seeds: dict, loads: np.ndarray) -> None:
        self.closed = r.workload.loop == "closed"
        self.cluster = SimCluster(
            r.app, r.cluster,
            np.random.default_rng(seeds["think"]), np.random.default_rng(seeds["demand"]),
            np.random.default_rng(seeds["arrivals"]),
            max_users=int(max(np.max(loads), 1)) if self.closed else 64,
        )  # fmt: skip
        self.ctx = ContextBuilder(r.context)

    def step(self, load: float, t1: float) -> Context:
        if self.closed:
            self.cluster.set_users(int(load))
        else:
            self.cluster.add_open_arrivals(float(load), t1)
        signals = self.cluster.run_to(t1)
        self.ctx.add_spans(signals.spans)
        self.ctx.add_pod_samples(signals.pods)
        return self.ctx.build(t1, signals.ready_replicas)


class FluidBackend(_ClusterBackend):
    """The fluid engine: the context from a queueing model per step (no requests)."""

    def __init__(self, r: Resolved) -> None:
        self.cluster = FluidCluster(r.app, r.cluster, r.context, closed=r.workload.loop == "closed")

    def step(self, load: float, t1: float) -> Context:
        return self.cluster.step(load, t1)


class ReplayBackend:
    """Recorded samples per (users, replicas), served in order (the paper's replay)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        if not cfg.dataset:
            raise ConfigError("config: backend='replay' needs dataset: PATH (scalelab dataset record --out PATH)")
        c = cfg.cluster
        try:
            self.replay = Replay(load_dataset(cfg.dataset), c.min_replicas, c.max_replicas, c.initial_replicas)
        except DatasetError as exc:
            raise ConfigError(f"config: dataset: {exc}") from None

    @property
    def desired_replicas(self) -> int:
        return self.replay.desired_replicas

    def scale_to(self, n: int) -> None:
        self.replay.scale_to(n)

    def step(self, load: float, t1: float) -> Context:
        return self.replay.context(int(load))


def make_backend(cfg: ExperimentConfig, r: Resolved, seeds: dict, loads: np.ndarray):
    if cfg.backend == "replay":
        return ReplayBackend(cfg)
    if cfg.engine == "fluid":
        return FluidBackend(r)
    return SimBackend(r, seeds, loads)


def run_episode(
    cfg: ExperimentConfig,
    resolved: Resolved,
    policy_index: int,
    run: int,
    seeds: dict[str, int],
    loads: np.ndarray,
    oracle: np.ndarray | None,
    chunk_dir: Path | None = None,
    chunk_steps: int = 5000,
) -> pd.DataFrame:
    """Run one episode and return its rows; with ``chunk_dir``, rows are also written
    there every ``chunk_steps`` steps so that a killed run keeps what it did."""
    spec = cfg.policies[policy_index]
    r = resolved
    backend = make_backend(cfg, r, seeds, loads)
    policy = build_policy(spec, cfg, seeds["policy"], run)
    reward_fn = make_reward(cfg.reward.name, **{"slo_ms": cfg.slo_ms, **cfg.reward.params})
    lo, hi = r.cluster.min_replicas, r.cluster.max_replicas
    n = r.steps
    step_s = cfg.step_seconds
    f = {k: np.zeros(n) for k in ("t_s", "users", "p95_ms", "mean_ms", "rps", "cpu_request_ratio",
                                   "cpu_limit_ratio", "mem_request_ratio", "mem_limit_ratio",
                                   "probability", "reward")}  # fmt: skip
    i = {k: np.zeros(n, dtype=np.int64) for k in ("replicas", "target_replicas", "spans", "action")}
    f["reward"][:] = np.nan
    probs: list[str] = [""] * n  # the full probability vector, JSON, when the policy gives it
    prev_ctx = prev_action = None
    written = 0

    def flush(upto: int) -> None:
        nonlocal written
        if chunk_dir is None or upto <= written:
            return
        frame = _frame(cfg, spec, run, f, i, oracle, written, upto, probs)
        frame.to_parquet(chunk_dir / f"chunk-{written:08d}.parquet", index=False)
        written = upto

    for k in range(n):
        t1 = (k + 1) * step_s
        load = loads[k]
        context = backend.step(load, t1)
        if prev_ctx is not None:
            rew = reward_fn(prev_ctx, prev_action, context)
            f["reward"][k - 1] = rew
            policy.update(prev_ctx, prev_action, rew, context)
        info = {"step": k, "t_s": t1, "current_replicas": backend.desired_replicas}
        if oracle is not None:
            info["oracle_replicas"] = int(oracle[min(k + 1, n - 1)])
        decision = policy.decide(context, info)
        order = policy.actions.order(decision.action)
        current = backend.desired_replicas
        target = order.target(current, lo, hi)
        if target != current:
            backend.scale_to(target)
        f["t_s"][k] = t1
        f["users"][k] = load
        f["p95_ms"][k] = context.p95_ms
        f["mean_ms"][k] = context.mean_ms
        f["rps"][k] = context.rps
        f["cpu_request_ratio"][k] = context.cpu_request_ratio
        f["cpu_limit_ratio"][k] = context.cpu_limit_ratio
        f["mem_request_ratio"][k] = context.mem_request_ratio
        f["mem_limit_ratio"][k] = context.mem_limit_ratio
        f["probability"][k] = decision.probability
        if decision.probabilities is not None:
            probs[k] = json.dumps([round(float(v), 6) for v in decision.probabilities])
        i["replicas"][k] = context.replicas
        i["target_replicas"][k] = target
        i["spans"][k] = context.spans
        i["action"][k] = decision.action
        prev_ctx, prev_action = context, decision.action
        if chunk_dir is not None and (k + 1) % chunk_steps == 0:
            flush(k)  # the last row's reward is not known yet
    frame = _frame(cfg, spec, run, f, i, oracle, 0, n, probs)
    if chunk_dir is not None:
        flush(n)
        (chunk_dir / "policy.json").write_text(json.dumps(policy.state_dict()))
    return frame


def _frame(cfg, spec, run, f, i, oracle, lo, hi, probs) -> pd.DataFrame:
    n = hi - lo
    data = {
        "run": np.full(n, run, dtype=np.int64),
        "policy": [spec.display] * n,
        "step": np.arange(lo, hi, dtype=np.int64),
    }
    for col in COLUMNS[3:]:
        if col in f:
            data[col] = f[col][lo:hi]
        elif col in i:
            data[col] = i[col][lo:hi]
    data["violation"] = f["p95_ms"][lo:hi] > cfg.slo_ms
    data["probabilities"] = probs[lo:hi]
    data["oracle_replicas"] = (
        oracle[lo:hi].astype(np.int64) if oracle is not None else np.full(n, -1, dtype=np.int64)
    )
    return pd.DataFrame(data, columns=list(COLUMNS))
