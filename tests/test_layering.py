"""The architecture and the toolchain are checked with the tests."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name):
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def test_import_layers_hold():
    res = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_lint_is_clean():
    res = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_agent_imports_only_the_orchestrators_types():
    import ast

    allowed = {"orchestrator", "scalelab.orchestrator.context", "scalelab.orchestrator.protocol", "scalelab.orchestrator.backend",
               "scalelab.errors", "scalelab.orchestrator.plugins"}
    # the process entry point (python -m scalelab.agent) is where the Kafka client is plugged in
    entry = {"scalelab.orchestrator.client", "scalelab.orchestrator.live_backend"}
    for path in (ROOT / "agent").rglob("*.py"):
        ok = allowed | entry if path == ROOT / "agent" / "__main__.py" else allowed
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "orchestrator":
                    assert name in ok, f"{path.relative_to(ROOT)} imports {name}"
