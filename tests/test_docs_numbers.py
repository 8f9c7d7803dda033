"""The numbers the docs quote that the program prints are the program's: the corpus (its
size, each kind's share, its CPU figures), the paper's table (rendered from the
comparison ``scalelab paper`` wrote, whose cold-start rows a fresh run reproduces in
``tests/test_paper_reproduction.py``), the policies the quick start runs."""

from __future__ import annotations

import json
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
    cfg = load_config(config_path("compare"))
    entries = [p.name for p in cfg.policies]
    several = [f"{n} at {entries.count(n)}" for n in sorted(set(entries)) if entries.count(n) > 1]
    several[0] += " settings"  # "hpa at 3 settings, kpa at 2, ..."
    distinct = {n for n in entries if n != "oracle"}
    left_out = sorted(set(policy_names()) - set(entries))
    assert f"{len(entries)} rows: {len(distinct)} policies ({', '.join(several)};" in readme
    assert f"({', '.join(left_out)})" in readme and f"{cfg.runs} runs each" in readme


def test_the_tuned_baselines_of_compare_are_the_choices_tune_shipped():
    """Each ``-tuned`` entry of compare.yaml is the policy of its shipped tune.json with the
    chosen parameters; docs/baselines.md quotes each held-out table as tune.md wrote it."""
    cfg = load_config(config_path("compare"))
    tuned = {p.display: p for p in cfg.policies if p.display.endswith("-tuned")}
    baselines = (ROOT / "docs" / "baselines.md").read_text()
    shipped = sorted((ROOT / "docs" / "data" / "tune").glob("*.json"))
    assert len(shipped) == len(tuned) == 3
    for path in shipped:
        saved = json.loads(path.read_text())
        label = saved["policy"].removesuffix("-default") + "-tuned"
        entry = {k: v for k, v in saved["entry"].items() if k not in ("name", "label")}
        assert tuned[label].name == saved["entry"]["name"]
        assert tuned[label].params == {**entry, **saved["params"]}, label
        assert set(saved["tuning_seeds"]).isdisjoint({cfg.seed}) and set(saved["held_out_seeds"]).isdisjoint(
            saved["tuning_seeds"])
        md = path.with_suffix(".md").read_text()
        held = md[md.index("| policy | runs |"):].strip()
        assert held in baselines, label



ARCHITECTURES_CSV = ROOT / "docs" / "data" / "architectures" / "comparison.csv"


def test_the_readmes_architectures_table_is_the_shipped_run():
    """Each row of the README's two-architectures table: the mean violations and
    replica-hours of ``scalelab architectures`` as it wrote them (docs/data/architectures)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Two architectures"):text.index("### Sweeps")]
    table = pd.read_csv(ARCHITECTURES_CSV)
    config = {"service": "evaluation-week-5d", "runners": "evaluation-week-5d-jobs",
              "ScaledJob": "evaluation-week-5d-scaledjob"}
    rows = re.findall(r"^\| (service|runners|ScaledJob) · ([\w-]+)(?: \([^)]*\))? \| ([\d.]+)[^|]*\| ([\d.]+)[^|]*\| "
                      r"([\d.]+), ([\d.]+) \|", section, re.M)
    assert len(rows) == len(table) == 13
    phases = (ARCHITECTURES_CSV.parent / "architectures.md").read_text()
    for arch, policy, violations, hours, exam_violations, exam_hours in rows:
        assert f"| {arch.lower()} · {policy} | {exam_violations} | {exam_hours} |" in phases, (arch, policy)
        folder = table.folder.str.rsplit("-", n=2).str[0]  # the config's name before its -date-time
        row = table[(folder == config[arch]) & (table.policy == policy)]
        assert len(row) == 1, (arch, policy)
        assert float(violations) == round(float(row.violations_per_run_mean.iloc[0]), 1), (arch, policy)
        assert float(hours) == round(float(row.replica_hours_mean.iloc[0]), 1), (arch, policy)


def test_the_readmes_ppo_figures_are_the_shipped_transfer_run():
    """The README's PPO trained on the discrete-event and the stochastic fluid engines,
    each run on the discrete-event staircase: ranges, medians and the seeds within the
    script's targets, read from the shipped summary."""
    s = pd.read_csv(ROOT / "docs/data/ppo-transfer/summary.csv").set_index("policy")
    o = s.loc["oracle"]
    text = " ".join((ROOT / "README.md").read_text().split())
    for engine, within in (("des", "5 of 6 seeds within those targets"), ("fluid-stochastic", "6 of 6")):
        r = s[s.index.str.startswith(f"ppo-{engine}-s")]
        v, n, c = r.violations_per_run_mean, r.replicas_mean, r.scale_changes_per_run_mean
        ok = (v <= 2 * o.violations_per_run_mean) & ((n / o.replicas_mean - 1).abs() <= 0.2) & (
            c <= 5 * o.scale_changes_per_run_mean)
        said = f"{v.min():.1f}-{v.max():.1f} violations (median {v.median():.1f})" if engine == "des" else (
            f"{v.min():.1f}-{v.max():.1f} (median {v.median():.1f}) at {n.min():.2f}-{n.max():.2f}")
        assert said in text, said
        assert within.startswith(f"{int(ok.sum())} of {len(r)}"), (engine, int(ok.sum()))
        assert within in text
    d = s[s.index.str.startswith("ppo-des-s")].replicas_mean
    assert f"at {d.min():.2f}-{d.max():.2f} replicas" in text
    assert f"(the oracle: {o.violations_per_run_mean:.1f} at {o.replicas_mean:.2f})" in text
