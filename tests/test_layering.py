"""The architecture and the toolchain are checked with the tests. The layering is written
once, as import-linter contracts in pyproject.toml; this file runs them, checks that
docs/architecture.md quotes them word for word, and asks grimp for import circles."""

import shutil
import subprocess
import sys
import tomllib
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


def test_the_architecture_doc_quotes_every_contract_word_for_word():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    layering = doc[doc.index("## Layering"):doc.index("\n## ", doc.index("## Layering") + 1)]
    assert len(contracts) >= 3
    for contract in contracts:
        assert f'**"{contract["name"]}"**' in layering, contract["name"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    for layer in layers:
        for part in layer.split("|"):
            assert f"scalelab.{part.strip()}" in layering, part


def test_no_module_imports_itself_through_others():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("scalelab")
    circles = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                      if graph.chain_exists(importer=b, imported=a)})
    assert circles == []
