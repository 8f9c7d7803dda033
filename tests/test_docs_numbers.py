"""The numbers the docs quote that the program prints are the program's: the corpus (its
size, each kind's share, its CPU figures), the paper's table (rendered from the
comparison ``scalelab paper`` wrote, whose cold-start rows a fresh run reproduces in
``tests/test_paper_reproduction.py``), the policies the quick start runs."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from scalelab.agent.registry import policy_names
from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.paper import markdown_table
from scalelab.injector.corpus import load_corpus, summary

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "docs" / "data" / "paper-comparison.csv"


def test_the_corpus_figures_of_the_evaluation_week_doc_are_the_corpus():
    text = (ROOT / "docs" / "evaluation-week.md").read_text()
    corpus = load_corpus()
    figures = summary(corpus)
    assert f"{len(corpus.programs)} Python programs like the ones students submit" in text
    for kind, k in figures["kinds"].items():
        assert re.search(rf"\| {re.escape(kind)} \| {100 * k['share']:g} % \|", text), kind
    assert f"median {figures['q50_ms']:.0f} ms of CPU" in text
    assert f"mean {figures['mean_ms']:.0f} ms" in text
    assert f"{100 * figures['at_cpu_limit']:.1f} % at the 2 s limit" in text
    assert corpus.limits["cpu_seconds"] == 2.0


def test_the_paper_table_of_the_docs_is_the_comparison_scalelab_paper_wrote():
    text = (ROOT / "docs" / "hslinucb.md").read_text()
    table = pd.read_csv(PAPER_CSV)
    assert markdown_table(table) in text
    assert set(table.runs) == {10}  # the paper's 10 runs, not a shortened look


def test_the_quick_start_policies_are_the_ones_the_readme_names():
    readme = " ".join((ROOT / "README.md").read_text().split())
    entries = [p.name for p in load_config(config_path("compare")).policies]
    twice = sorted({n for n in entries if entries.count(n) == 2})
    distinct = {n for n in entries if n != "oracle"}
    left_out = sorted(set(policy_names()) - set(entries))
    assert (f"{len(entries)} rows: {len(distinct)} policies ({' and '.join(twice)} each at two settings) and the "
            "oracle") in readme
    assert f"({', '.join(left_out)})" in readme
