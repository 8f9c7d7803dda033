"""A live run is the config's experiment: what ``scalelab live run`` would hand its
processes (replicas, injector, orchestrator, agent) equals the settings the simulator
resolves from the same config. No live stack needed."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from scalelab.agent.process import AgentSpec
from scalelab.experiments.config import ExperimentConfig, load_config
from scalelab.experiments.episode import resolve
from scalelab.experiments.live import agent_spec, live_settings, service_commands
from scalelab.orchestrator.__main__ import context_settings

CONFIG = {
    "name": "live-twin", "backend": "live", "seed": 3, "slo_ms": 450, "loop": "settle",
    "app": {"profile": "sandbox", "cpu_request": 0.25, "memory_limit_mib": 768},
    "workload": {"kind": "evaluation-week-v1", "days": 0.01},
    "context": {"preset": "paper", "window_s": 8},
    "cluster": {"min_replicas": 2, "max_replicas": 7, "initial_replicas": 3},
    "policies": [{"name": "hslinucb"}],
}  # fmt: skip


def test_live_processes_get_the_simulators_resolved_settings():
    cfg = load_config(CONFIG)
    r = resolve(cfg)
    s = live_settings(cfg)
    # the replicas: the resolved profile (overrides included), not a fallback of 0.5 core
    assert (s.replica.cpu_request, s.replica.cpu_limit) == (r.app.cpu_request, r.app.cpu_limit) == (0.25, r.app.cpu_limit)
    assert (s.replica.memory_request_mib, s.replica.memory_limit_mib) == (r.app.memory_request_mib, 768)
    # the injector: think time as the simulator takes it (the workload's, when the cluster sets none)
    assert s.think_s == (r.cluster.think_low_s, r.cluster.think_high_s)
    cmds, env = service_commands(Path("/stack"), "127.0.0.1:9092", "http://127.0.0.1:8080", s)
    assert (float(env["INJECTOR_WAIT_MIN"]), float(env["INJECTOR_WAIT_MAX"])) == s.think_s
    # the orchestrator: every context setting, overrides included, not just the preset's name
    orch = cmds[0]
    args = argparse.Namespace(context="default", context_json=orch[orch.index("--context-json") + 1])
    assert context_settings(args) == r.context and r.context.window_s == 8 and r.context.rps_mode == "paper"
    assert orch[orch.index("--min") + 1] == "2" and orch[orch.index("--max") + 1] == "7"
    # the agent: the SLO, the loop mode, the limits, the load per step
    a = agent_spec(cfg, 0, 0, seed=11)
    assert (a.slo_ms, a.loop, a.step_seconds) == (450.0, "settle", cfg.step_seconds)
    assert (a.min_replicas, a.max_replicas, a.initial_replicas) == (2, 7, 3)
    assert a.users == [int(r.workload.users_at(k * cfg.step_seconds)) for k in range(r.steps)]
    assert json.loads(json.dumps(asdict(s.replica)))  # plain data, as it is written to the stack


def test_one_slo_default_everywhere():
    slo = {f.name: f.default for f in fields(ExperimentConfig)}["slo_ms"]
    assert AgentSpec(policy="static", steps=1).slo_ms == slo == 600.0
