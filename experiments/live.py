"""``scalelab live run``: an experiment on the live local stack, in wall-clock time.

The parts run as separate processes talking through Kafka, as in the paper: the
orchestrator (``python -m orchestrator``), the Locust injector (``python -m injector``)
and the sandbox replicas; the agent loop runs here, through
:class:`orchestrator.client.OrchestratorClient`. Each step: set the injector's level
from the workload, wait for the step's end, ``getState``, reward the previous decision,
decide, ``scaleSUT`` (blocking until the replicas are ready, the paper's
``waitKubernetes``). The run folder has the same files as a simulated run, so
``scalelab report`` compares them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from agent.rewards import make_reward
from experiments.config import ConfigError, ExperimentConfig, load_config
from experiments.episode import COLUMNS, build_policy, episode_name, resolve
from experiments.runner import RunResult, finish_run, new_run_folder, write_versions
from orchestrator.client import OrchestratorClient
from orchestrator.context import FIELDS, Context
from orchestrator.scalers.local import ReplicaSpec
from orchestrator.stack import LocalStack


def _context(state: dict) -> Context:
    c = state["context"]
    return Context(**{k: c[k] for k in (*FIELDS, "mean_ms", "spans", "cpu_request_now") if k in c})


def run_live_episode(cfg: ExperimentConfig, policy_index: int, run: int, seed: int, client: OrchestratorClient,
                     part_dir: Path, sleep=time.sleep, clock=time.monotonic) -> pd.DataFrame:
    r = resolve(cfg)
    spec = cfg.policies[policy_index]
    policy = build_policy(spec, cfg, seed, run)
    reward_fn = make_reward(cfg.reward.name, **{"slo_ms": cfg.slo_ms, **cfg.reward.params})
    client.order("setDeploymentLimit", min=cfg.cluster.min_replicas, max=cfg.cluster.max_replicas)
    client.scale("fixed", cfg.cluster.initial_replicas)
    rows: list[dict] = []
    prev = None
    level = None
    t0 = clock()
    for k in range(r.steps):
        users = int(r.workload.users_at(k * cfg.step_seconds))
        if users != level:
            client.order("LocustMgmt", payload={"order": "set_user_level", "level": users, "spawn_rate": 100})
            level = users
        wait = t0 + (k + 1) * cfg.step_seconds - clock()
        if wait > 0:
            sleep(wait)
        state = client.get_state()
        ctx = _context(state)
        if prev is not None:
            rew = reward_fn(prev[0], prev[1], ctx)
            rows[-1]["reward"] = rew
            policy.update(prev[0], prev[1], rew, ctx)
        current = int(state.get("desired_replicas", ctx.replicas))
        decision = policy.decide(ctx, {"step": k, "t_s": (k + 1) * cfg.step_seconds, "current_replicas": current})
        order = policy.actions.order(decision.action)
        target = order.target(current, cfg.cluster.min_replicas, cfg.cluster.max_replicas)
        if target != current:
            client.scale("fixed", target)
        rows.append({
            "run": run, "policy": spec.display, "step": k, "t_s": (k + 1) * cfg.step_seconds, "users": users,
            "replicas": ctx.replicas, "target_replicas": target, "p95_ms": ctx.p95_ms, "mean_ms": ctx.mean_ms,
            "rps": ctx.rps, "cpu_request_ratio": ctx.cpu_request_ratio, "cpu_limit_ratio": ctx.cpu_limit_ratio,
            "mem_request_ratio": ctx.mem_request_ratio, "mem_limit_ratio": ctx.mem_limit_ratio, "spans": ctx.spans,
            "action": decision.action, "probability": decision.probability, "reward": np.nan,
            "violation": ctx.p95_ms > cfg.slo_ms, "oracle_replicas": -1,
            "probabilities": json.dumps(list(decision.probabilities)) if decision.probabilities else "",
        })  # fmt: skip
        pd.DataFrame(rows, columns=list(COLUMNS)).to_parquet(part_dir / "chunk-00000000.parquet", index=False)
        prev = (ctx, decision.action)
    (part_dir / "policy.json").write_text(json.dumps(policy.state_dict()))
    (part_dir / "done").write_text("ok\n")
    client.order("LocustMgmt", payload={"order": "stop"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def run_live(config: ExperimentConfig | str | Path, out: str | Path = "runs", stack_dir: Path | None = None,
             command: str | None = None, injector_cpu: int = 200) -> RunResult:
    """Run ``config`` (``backend: live``) on a local stack brought up for it."""
    t_start = time.perf_counter()
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    if cfg.backend != "live":
        raise ConfigError(f"config: backend={cfg.backend!r}; scalelab live run needs backend: live")
    resolve(cfg)
    for spec in cfg.policies:
        build_policy(spec, cfg, seed=0)
    path = new_run_folder(cfg, out, command)
    seeds = write_versions(path, cfg)
    a = cfg.app
    spec = ReplicaSpec(cpu_request=a.cpu_request or 0.5, cpu_limit=a.cpu_limit or 0.5,
                       memory_request_mib=int(a.memory_request_mib or 512),
                       memory_limit_mib=int(a.memory_limit_mib or 512))
    stack = LocalStack(stack_dir or path / "stack")
    stack.up(replicas=cfg.cluster.initial_replicas, spec=spec)
    procs: list[subprocess.Popen] = []
    client = None
    try:
        addr = stack.state["kafka"]["bootstrap"]
        think = cfg.cluster.think_s or [0.0, 2.0]
        env = {**os.environ, "INJECTOR_CPU": str(injector_cpu), "INJECTOR_WAIT_MIN": str(think[0]),
               "INJECTOR_WAIT_MAX": str(think[1])}
        for cmd in ([sys.executable, "-m", "orchestrator", "--stack-dir", str(stack.dir), "--min",
                     str(cfg.cluster.min_replicas), "--max", str(cfg.cluster.max_replicas), "--context", cfg.context.preset],
                    [sys.executable, "-m", "injector", "--host", stack.service_url, "--bootstrap", addr]):
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            procs.append(p)
            line = p.stdout.readline().strip()
            if not line.endswith("ready"):
                raise RuntimeError(f"{cmd[2]} did not start (said {line!r})")
        client = OrchestratorClient(addr)
        frames = []
        for run in range(cfg.runs):
            for k, pspec in enumerate(cfg.policies):
                part = path / "parts" / episode_name(pspec.display, run)
                part.mkdir(parents=True, exist_ok=True)
                frames.append(run_live_episode(cfg, k, run, seeds[run]["policy"][k], client, part))
    finally:
        if client is not None:
            client.close()
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
            if p.stdout:
                p.stdout.close()
        stack.down()
    steps, summary = finish_run(path, cfg, frames)
    return RunResult(path=path, steps=steps, summary=summary, seconds=time.perf_counter() - t_start)
