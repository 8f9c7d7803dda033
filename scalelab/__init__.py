"""scalelab: a research testbed for horizontal autoscaling with contextual bandits.

The public API, in one place (what the notebooks use)

    from scalelab import load_config, run_experiment, summary_frame

Names load lazily (PEP 562), so ``import scalelab`` stays cheap for the CLI.

Experiments
    load_config, save_config, ExperimentConfig, ConfigError, run_experiment, RunResult,
    summarize, summary_frame, format_table, per_run, write_report, plot_load,
    plot_replicas, plot_p95, plot_tradeoff, configs_dir, read_steps
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

_EXPORTS = {
    "load_config": "scalelab.experiments.config", "save_config": "scalelab.experiments.config",
    "ExperimentConfig": "scalelab.experiments.config", "ConfigError": "scalelab.experiments.config",
    "run_experiment": "scalelab.experiments.experiment", "RunResult": "scalelab.experiments.runfolder",
    "summarize": "scalelab.experiments.metrics", "format_table": "scalelab.experiments.metrics", "per_run": "scalelab.experiments.metrics",
    "write_report": "scalelab.experiments.report", "plot_load": "scalelab.experiments.report", "plot_replicas": "scalelab.experiments.report",
    "plot_p95": "scalelab.experiments.report", "plot_tradeoff": "scalelab.experiments.report",
    "reproduce_paper": "scalelab.experiments.paper", "comparison": "scalelab.experiments.paper",
    "format_comparison": "scalelab.experiments.paper", "PAPER_RESULTS": "scalelab.experiments.paper",
    "gaps": "scalelab.experiments.paper", "checks": "scalelab.experiments.paper",
    "make_policy": "scalelab.agent.registry", "register": "scalelab.agent.registry", "policy_names": "scalelab.agent.registry",
    "BasePolicy": "scalelab.agent.base", "Decision": "scalelab.agent.base", "ActionSet": "scalelab.agent.actions",
    "make_reward": "scalelab.agent.rewards", "Context": "scalelab.orchestrator.context",
    "make_workload": "scalelab.injector.workloads",
    "LocalStack": "scalelab.orchestrator.stack", "OrchestratorClient": "scalelab.orchestrator.client",
    "start_services": "scalelab.experiments.live", "stop_services": "scalelab.experiments.live", "run_live": "scalelab.experiments.experiment",
    "live_settings": "scalelab.experiments.live",
    "StepLoop": "scalelab.agent.loop", "LoopSettings": "scalelab.agent.loop", "StepRecord": "scalelab.agent.loop",
    "VirtualClock": "scalelab.orchestrator.backend", "WallClock": "scalelab.orchestrator.backend",
    "OrchestratorBackend": "scalelab.orchestrator.live_backend",
    "configs_dir": "scalelab.experiments", "summary_frame": "scalelab.experiments.metrics",
    "read_steps": "scalelab.experiments.runfolder",
}  # fmt: skip
_RENAMED = {"off_policy_evaluate": ("scalelab.experiments.ope", "evaluate")}

__all__ = sorted([*_EXPORTS, *_RENAMED])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'scalelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
