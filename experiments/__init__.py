"""scalelab's public API, in one place (what the notebooks use).

    from experiments import load_config, run_experiment, summary_frame

Names load lazily (PEP 562), so ``import experiments`` stays cheap for the CLI.

Experiments
    load_config, save_config, ExperimentConfig, ConfigError, run_experiment, RunResult,
    summarize, summary_frame, format_table, per_run, write_report, plot_load,
    plot_replicas, plot_p95, plot_tradeoff, configs_dir
The paper
    reproduce_paper, comparison, format_comparison, PAPER_RESULTS, gaps, checks
Policies
    make_policy, register, policy_names, BasePolicy, Decision, ActionSet, Context,
    make_reward, off_policy_evaluate
Workloads
    make_workload
The loop
    StepLoop, LoopSettings, StepRecord, VirtualClock, WallClock, OrchestratorBackend
Live
    LocalStack, OrchestratorClient, start_services, stop_services, run_live, live_settings
"""

from __future__ import annotations

import importlib
from pathlib import Path

_EXPORTS = {
    "load_config": "experiments.config", "save_config": "experiments.config",
    "ExperimentConfig": "experiments.config", "ConfigError": "experiments.config",
    "run_experiment": "experiments.runner", "RunResult": "experiments.runner",
    "summarize": "experiments.metrics", "format_table": "experiments.metrics", "per_run": "experiments.metrics",
    "write_report": "experiments.report", "plot_load": "experiments.report", "plot_replicas": "experiments.report",
    "plot_p95": "experiments.report", "plot_tradeoff": "experiments.report",
    "reproduce_paper": "experiments.paper", "comparison": "experiments.paper",
    "format_comparison": "experiments.paper", "PAPER_RESULTS": "experiments.paper",
    "gaps": "experiments.paper", "checks": "experiments.paper",
    "make_policy": "agent.registry", "register": "agent.registry", "policy_names": "agent.registry",
    "BasePolicy": "agent.base", "Decision": "agent.base", "ActionSet": "agent.actions",
    "make_reward": "agent.rewards", "Context": "orchestrator.context",
    "make_workload": "injector.workloads",
    "LocalStack": "orchestrator.stack", "OrchestratorClient": "orchestrator.client",
    "start_services": "experiments.live", "stop_services": "experiments.live", "run_live": "experiments.live",
    "live_settings": "experiments.live",
    "StepLoop": "agent.loop", "LoopSettings": "agent.loop", "StepRecord": "agent.loop",
    "VirtualClock": "orchestrator.backend", "WallClock": "orchestrator.backend",
    "OrchestratorBackend": "orchestrator.live_backend",
}  # fmt: skip
_RENAMED = {"off_policy_evaluate": ("experiments.ope", "evaluate")}

__all__ = sorted([*_EXPORTS, *_RENAMED, "summary_frame", "configs_dir"])


def configs_dir() -> Path:
    """The folder of the ready experiment configs (``experiments/configs``)."""
    return Path(__file__).parent / "configs"


def summary_frame(summary):
    """A run's summary (``RunResult.summary``) as a flat DataFrame: one row per policy,
    ``runs``, ``pareto_rank``, and ``<metric>`` (mean) and ``<metric>_ci95`` columns."""
    from experiments.metrics import flat_summary

    return flat_summary(summary).set_index("policy")


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
