"""Errors mean what the hierarchy says (scalelab/errors.py, as kopf separates its errors):
every error raised on purpose derives from ScalelabError; a user's mistake is a
UserError, a fault that may pass a TemporaryError with its retry delay, one that will
not a PermanentError."""

import ast
import builtins
from pathlib import Path

import pytest

from scalelab.errors import OperationalError, PermanentError, ScalelabError, TemporaryError, UserError

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_ERRORS = {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)}


def project_sources():
    for folder in ("agent", "experiments", "orchestrator", "simulator", "injector", "sandbox", "scalelab"):
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "scalelab" and path.parent.name != "cli" and path.name != "errors.py":
                continue  # the links: their files are read under their own folders
            yield path


def test_every_error_class_derives_from_the_projects_base():
    """A class built on a builtin exception also names a project error among its bases
    (ScalelabError itself is the one exception)."""
    offenders = []
    for path in project_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            if any(b in BUILTIN_ERRORS for b in bases) and all(b in BUILTIN_ERRORS for b in bases) \
                    and node.name != "ScalelabError":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({', '.join(bases)})")
    assert offenders == []


def test_the_branches_of_the_hierarchy():
    assert issubclass(UserError, ScalelabError) and issubclass(UserError, ValueError)
    assert issubclass(TemporaryError, OperationalError) and issubclass(PermanentError, OperationalError)
    assert (UserError.exit_code, OperationalError.exit_code) == (2, 3)
    assert TemporaryError("later", retry_after_s=4).retry_after_s == 4.0


@pytest.mark.parametrize(("where", "name", "branch"), [
    ("scalelab.injector.workloads", "WorkloadError", UserError),
    ("scalelab.injector.corpus", "CorpusError", UserError),
    ("scalelab.orchestrator.client", "OrderFailed", PermanentError),
    ("scalelab.orchestrator.client", "OrchestratorUnavailable", TemporaryError),
    ("scalelab.orchestrator.live_backend", "OrchestratorGone", PermanentError),
    ("scalelab.orchestrator.collectors.prometheus", "PrometheusUnavailable", TemporaryError),
    ("scalelab.sandbox.runner", "SandboxError", PermanentError),
    ("scalelab.sandbox.runner", "SandboxRequestError", UserError),
    ("scalelab.sandbox.seal", "SealError", PermanentError),
    ("scalelab.agent.rewards", "RewardError", UserError),
    ("scalelab.agent.base", "PolicyError", UserError),
])
def test_each_error_is_on_its_branch(where, name, branch):
    import importlib

    assert issubclass(getattr(importlib.import_module(where), name), branch)


def test_bad_settings_are_user_errors_that_name_the_key():
    from scalelab.orchestrator.context import ContextSettings
    from scalelab.simulator.cluster import ClusterSettings

    with pytest.raises(UserError, match=r"context\.window_s must be > 0"):
        ContextSettings(window_s=0)
    with pytest.raises(UserError, match=r"cluster\.balancer=.random."):
        ClusterSettings(balancer="random")
