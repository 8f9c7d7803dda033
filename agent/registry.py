"""The policy registry: ``make_policy(name, **params)``.

Policies register a factory under a name. A typo gets the closest name suggested.
Factories receive ``seed`` and ``max_replicas`` from the runner plus the user's
parameters; a parameter the policy does not take is reported by name.

A policy from outside the package is named ``package.module:Class`` or, installed, by
its entry point in the ``scalelab.policies`` group (:mod:`scalelab.orchestrator.plugins`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from scalelab.agent.base import Policy, PolicyError
from scalelab.orchestrator import plugins

_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register(name: str, factory: Callable[..., Policy], *, replace: bool = False) -> None:
    """Make ``factory`` available as ``name`` (``replace=True`` to override one)."""
    if name in _REGISTRY and not replace:
        raise PolicyError(f"a policy named {name!r} is already registered")
    _REGISTRY[name] = factory


def policy_names(installed: bool = True) -> list[str]:
    """Registered names and (``installed``) the entry points of installed plug-ins, sorted."""
    return sorted({*_REGISTRY, *(plugins.entry_points("policy") if installed else ())})


def factory_of(name: str) -> Callable[..., Policy]:
    """The factory registered as ``name``, or a plug-in's (``module:Class`` or an
    installed entry point)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if plugins.is_import_path(name):
        factory = plugins.load_object(name, "policy")
    else:
        factory = plugins.load_entry_point(name, "policy")
        if factory is None:
            close = difflib.get_close_matches(str(name), policy_names(), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {policy_names()}"
            raise PolicyError(f"unknown policy {name!r}{hint} (or name one of your own as 'package.module:Class')")
    if not callable(factory):
        raise PolicyError(f"policy {name!r} is a {type(factory).__name__}, not a class or a factory")
    return factory


def _check_type(policy: str, key: str, value, default) -> None:
    """A parameter whose default is a number, a flag or a string must be one too."""
    if key == "seed":
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool)) or hasattr(value, "spawn")
        rule = "an integer"
    elif isinstance(default, bool):
        ok, rule = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
        rule = "an integer"
    elif isinstance(default, float):
        ok, rule = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, rule = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise PolicyError(f"policy {policy!r}: parameter {key}={value!r} must be {rule}")


def make_policy(name: str, *, defaults: dict | None = None, **params) -> Policy:
    """Build the policy registered as ``name`` with ``params``.

    ``defaults`` (``seed``, ``max_replicas``, ``slo_ms``, ...) are what the runner knows;
    each is passed only if the policy takes it and ``params`` does not set it.
    """
    factory = factory_of(name)
    sig = inspect.signature(factory)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_any:
        for key in params:
            if key not in sig.parameters:
                close = difflib.get_close_matches(key, list(sig.parameters), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PolicyError(f"policy {name!r} has no parameter {key!r}{hint}")
    for key, value in (defaults or {}).items():
        if key not in params and (accepts_any or key in sig.parameters):
            params[key] = value
    for key, value in params.items():
        if key in sig.parameters:
            _check_type(name, key, value, sig.parameters[key].default)
    try:
        policy = factory(**params)
    except TypeError as exc:
        raise PolicyError(f"policy {name!r}: {exc}") from None
    missing = [m for m in ("decide", "update", "state_dict", "load_state_dict") if not callable(getattr(policy, m, None))]
    if missing:
        raise PolicyError(f"policy {name!r} has no {', '.join(missing)}: a policy implements scalelab.agent.base.Policy "
                          "(subclass scalelab.agent.base.BasePolicy)")
    return policy


def _register_builtins() -> None:
    from scalelab.agent.policies.anticipatory import CalendarHSLinUCB, KedaCronHPA, PredictiveHPA
    from scalelab.agent.policies.autothrottle import Autothrottle
    from scalelab.agent.policies.bandits import UCB1, EpsilonGreedy, LinTS
    from scalelab.agent.policies.cola import Cola
    from scalelab.agent.policies.keda_kafka import KedaKafka
    from scalelab.agent.policies.keda_scaledjob import KedaScaledJob
    from scalelab.agent.policies.linucb import HSLinUCB, LinUCB, QueueHSLinUCB
    from scalelab.agent.policies.oracle import Oracle
    from scalelab.agent.policies.paper_learners import DQN, QLearning
    from scalelab.agent.policies.prairielearn_grader import PrairieLearnGrader
    from scalelab.agent.policies.serverless import KPA, Invok, PrairieLearn, PrairieLearnNotes
    from scalelab.agent.policies.static import Static
    from scalelab.agent.policies.thresholds import HPA, ThresholdCPU

    register("static", Static)
    register("oracle", Oracle)
    register("hslinucb", HSLinUCB)
    register("hslinucb-queue", QueueHSLinUCB)
    register("linucb", LinUCB)
    register("lin-ts", LinTS)
    register("epsilon-greedy", EpsilonGreedy)
    register("ucb1", UCB1)
    register("cola", Cola)
    register("q-learning", QLearning)
    register("dqn", DQN)
    register("kpa", KPA)
    register("prairielearn-notes", PrairieLearnNotes)
    register("prairielearn", PrairieLearn)
    register("invok", Invok)
    register("threshold-cpu", ThresholdCPU)
    register("hpa", HPA)
    register("autothrottle", Autothrottle)
    register("keda-cron", KedaCronHPA)
    register("phpa-holt-winters", PredictiveHPA)
    register("hslinucb-calendar", CalendarHSLinUCB)
    register("keda-kafka", KedaKafka)
    register("keda-scaledjob", KedaScaledJob)
    register("prairielearn-grader", PrairieLearnGrader)
    register("onnx", _onnx_policy)


def _onnx_policy(model: str = "", pipeline: str | None = None, seed=None):
    """A trained agent exported to ONNX, with the observation pipeline it was trained on."""
    from scalelab.agent.policies.onnx_policy import OnnxPolicy  # onnxruntime only when used

    return OnnxPolicy(model=model, pipeline=pipeline, seed=seed)


_register_builtins()
