"""The notebooks run top to bottom with their small (CI) parameters, through papermill
in a real Jupyter kernel; their committed files carry no outputs; they import only the
public API."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

from scalelab import read_steps
from tests.tools import requires

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PROJECT = ("scalelab", "orchestrator", "agent", "injector", "simulator", "sandbox", "experiments")

#: CI parameters: small, so that all five run in a few minutes.
SMALL = {
    "01-quickstart": {"RUNS": 1, "DAYS": 0.1},
    "02-reproduce-the-paper": {"RUNS": 1, "STEPS": 1500},
    "03-bandits-vs-hpa-evaluation-week": {"RUNS": 2, "DAYS": 0.2},
    "04-write-your-own-policy": {"RUNS": 2, "DURATION_S": 900},
    "05-live-agent": {"STEPS": 8, "STEP_SECONDS": 2.0, "USERS": [2, 2, 10, 10, 10, 10, 10, 10]},
    "06-train-ppo": {"TIMESTEPS": 2048, "RUNS": 1, "STEPS": 300},
    "07-anticipation": {"RUNS": 1, "VARIANT_RUNS": 1, "DAYS": 0.27, "START_DAY": 1, "START_HOUR": 8.5,
                        "ENGINE": "fluid", "HELD_OUT": ["noisy"]},
    "08-architectures": {"RUNS": 1, "HOURS": 1.5},
}
#: notebooks with their own test (the live stack; the rl extra)
OWN_TEST = ("05-live-agent", "06-train-ppo")



def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_notebook_has_ci_parameters_and_no_outputs():
    books = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert books == sorted(SMALL)
    for name in books:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, name
        declared = {t.id for t in ast.walk(ast.parse("".join(tagged[0]["source"]))) if isinstance(t, ast.Name)}
        assert set(SMALL[name]) <= declared, f"{name}: CI parameters {set(SMALL[name]) - declared} not declared"
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None, f"{name}: outputs are committed"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebooks_import_only_public_names(name):
    for src in code_cells(NOTEBOOKS / f"{name}.ipynb"):
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
                parts = node.module.split(".")
                assert not any(p.startswith("_") for p in parts), f"{name} imports private module {node.module}"
                for alias in node.names:
                    assert not alias.name.startswith("_"), f"{name} imports private {node.module}.{alias.name}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PROJECT:
                        assert not any(p.startswith("_") for p in alias.name.split(".")), alias.name
        private = r"\b(?:" + "|".join(PROJECT) + r")(?:\.\w+)*\._\w+"
        assert not re.search(private, src), f"{name} uses a private name"


def _documented_api(doc: str) -> list[str]:
    """The names scalelab's docstring lists under its groups (the indented lines after
    each heading; the example import is not a group)."""
    names = []
    for line in doc.splitlines():
        if line.startswith("    ") and not line.strip().startswith("from "):
            names += [w.strip() for w in line.split(",") if w.strip()]
    return names


def test_the_public_api_is_what_the_docstring_lists_each_name_from_the_module_that_defines_it():
    import importlib

    import scalelab

    documented = _documented_api(scalelab.__doc__)
    assert all(n.isidentifier() for n in documented), documented
    assert sorted(documented) == scalelab.__all__  # every name documented once, nothing else exported
    assert dir(scalelab) == scalelab.__all__
    table = {**scalelab._EXPORTS, **{k: m for k, (m, _) in scalelab._RENAMED.items()}}  # the API table
    assert sorted(table) == scalelab.__all__
    for name in scalelab.__all__:
        obj = getattr(scalelab, name)
        module = importlib.import_module(table[name])
        attr = scalelab._RENAMED[name][1] if name in scalelab._RENAMED else name
        assert vars(module)[attr] is obj, name  # the very object the table's module holds
        if hasattr(obj, "__module__"):  # classes and functions: defined there, not re-exported from elsewhere
            assert obj.__module__ == table[name], (name, obj.__module__, table[name])
        else:
            assert name == "PAPER_RESULTS" and isinstance(obj, dict) and obj, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scalelab.nope  # noqa: B018


def _execute(name: str, tmp_path: Path) -> float:
    import papermill

    t0 = time.perf_counter()
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters=SMALL[name], cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False, execution_timeout=600)
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.1f} s")
    return seconds


@pytest.mark.parametrize("name", [n for n in sorted(SMALL) if n not in OWN_TEST])
def test_notebook_runs_top_to_bottom(name, tmp_path):
    _execute(name, tmp_path)


@pytest.mark.live
@requires("locust", "prometheus", "haproxy")
def test_the_live_agent_notebook_drives_the_local_stack(tmp_path):
    _execute("05-live-agent", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("stable_baselines3") is None,
                    reason="needs stable-baselines3 (and torch): pip install -e '.[rl]'")
def test_the_training_notebook_trains_exports_and_compares(tmp_path):
    _execute("06-train-ppo", tmp_path)
    folder = next((tmp_path / "runs" / "ppo-notebook").glob("ppo-vs-hslinucb-*"))

    steps = read_steps(folder)
    assert set(steps.policy) == {"ppo", "hslinucb", "hpa", "oracle"} and len(steps) == 4 * 300
