"""``scalelab paper``: the HSLinUCB paper's four experiments, run as the paper ran them
and set beside its tables.

1. ``paper-coldstart``: the replay of the paper's own D1 samples (``dataset:
   paper-D1``), the paper's replay semantics and learners (docs/hslinucb.md);
2. ``paper-hotstart-seen`` and 3. ``paper-hotstart-unseen``: from the cold start's
   final states; the unseen one on the paper's own D2 samples (``dataset: paper-D2``)
   or on ``--d2 PATH`` (another recording in that format);
4. ``paper-real-week``: the real-cluster pattern on the simulator, the settle loop.

The report (``paper-report.md`` and ``paper-comparison.csv`` in ``out``) has ours
beside the paper's with absolute differences and both intervals, the reproduction
checks, one line per gap that remains with its cause, and where every dataset's
samples come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from scalelab.experiments.config import ExperimentConfig, config_path, load_config
from scalelab.experiments.experiment import run_experiment, run_experiments
from scalelab.experiments.metrics import cell as summary_cell
from scalelab.experiments.metrics import interval
from scalelab.experiments.runfolder import RunResult
from scalelab.experiments.runner import command_bar, episodes

EXPERIMENTS = ("paper-coldstart", "paper-hotstart-seen", "paper-hotstart-unseen", "paper-real-week")
METRICS = (("violations_per_run", "violations/run", 1), ("p95_ms", "p95 ms", 1), ("replicas", "replicas", 2))


@dataclass(frozen=True)
class PaperValue:
    """One number of the paper's tables (its notebooks' saved outputs, 10 runs): the
    mean and, where the paper gives it, its 1.96·SE interval."""

    mean: float
    ci95: float | None = None


def _p(*values):
    return tuple(v if isinstance(v, PaperValue) or v is None else PaperValue(v) for v in values)


#: (experiment, policy) -> (violations per run, mean p95 ms, mean replicas); docs/hslinucb.md
PAPER_RESULTS: dict[tuple[str, str], tuple[PaperValue | None, ...]] = {
    ("paper-coldstart", "hslinucb"): _p(PaperValue(6.1, 0.6), PaperValue(291.4, 1.6), 2.98),
    ("paper-coldstart", "dqn"): _p(PaperValue(560.5, 14.7), PaperValue(344.6, 3.7), 3.00),
    ("paper-coldstart", "q-learning"): _p(PaperValue(1118.2, 13.1), PaperValue(437.5, 4.2), 2.72),
    ("paper-coldstart", "oracle"): _p(None, None, 2.8),
    ("paper-hotstart-seen", "hslinucb"): _p(0.0, 280.5, 3.02),
    ("paper-hotstart-seen", "dqn"): _p(0.1, 266.1, 3.12),
    ("paper-hotstart-seen", "q-learning"): _p(0.6, 304.4, 2.93),
    ("paper-hotstart-seen", "oracle"): _p(None, None, 2.8),
    ("paper-hotstart-unseen", "hslinucb"): _p(2.0, 255.3, 3.24),
    ("paper-hotstart-unseen", "dqn"): _p(0.0, 251.7, 3.25),
    ("paper-hotstart-unseen", "q-learning"): _p(PaperValue(226.1, 30.4), 324.0, 2.91),
    ("paper-hotstart-unseen", "oracle"): _p(None, None, 3.1),
    ("paper-real-week", "hslinucb"): _p(PaperValue(4.4, 0.5), PaperValue(285.3, 6.6), PaperValue(2.56, 0.08)),
    ("paper-real-week", "dqn"): _p(PaperValue(108.8, 6.9), PaperValue(428.0, 15.9), 2.39),
    ("paper-real-week", "threshold-cpu"): _p(PaperValue(31.9, 2.8), PaperValue(279.5, 7.5), 2.61),
}

#: A difference is a gap when it exceeds both intervals plus this much (violations per
#: run absolute; p95 and replicas relative to the paper's value).
GAP_TOLERANCE = {"violations_per_run": 1.0, "p95_ms": 0.03, "replicas": 0.03}

#: Why a gap remains, where it was isolated (docs/hslinucb.md, "What still differs").
CAUSES = {
    ("paper-coldstart", "oracle", "replicas"):
        "by the paper's own oracle rule (a cell's samples all <= 600 ms, mean and max) on the paper's D1 "
        "samples, 10 users need 2 replicas (one 602.8 ms sample on 1) and 35 users need 4 (35/3 has samples "
        "up to 745 ms); the paper's logged oracle says 1 and 3, so it came from samples we do not have",
    ("paper-coldstart", "dqn", "replicas"):
        "not isolated; a candidate: the DQN reads all seven features, and in paper-D1 only the p95 is the "
        "paper's -- RPS, CPU and memory come from the simulator",
    ("paper-hotstart-seen", "hslinucb", "p95_ms"):
        "not isolated; it runs at 2.97 replicas against the paper's 3.02, and fewer replicas mean a higher p95; "
        "a candidate, as for the DQN: the features other than the p95 come from the simulator",
    ("paper-real-week", "threshold-cpu", "violations_per_run"):
        "the sidecar's CPU per request decides it (scripts/paper_factorial.py --real-week): none 52.9, Istio's "
        "published 0.6 ms (ours) 22.5, 3 ms 6.8 violations/run; the paper's 31.9 lies between none and 0.6 ms, "
        "and its logs do not tell the real figure",
    ("paper-real-week", "threshold-cpu", "replicas"):
        "as its violations (the sidecar's CPU in the rule's signal)",
    ("paper-real-week", "threshold-cpu", "p95_ms"):
        "as its violations (the sidecar's CPU in the rule's signal)",
    ("paper-hotstart-unseen", "dqn", "violations_per_run"):
        "which of the cold start's ten saved networks the hot start loads decides it (scripts/paper_factorial.py "
        "--hot-networks, 5 runs each): 0.0 to 13.6 violations/run over the ten, 1.4 at 3.31 replicas from the "
        "cold start's run 8 and 5.8 at 3.20 from its last, which the paper's hot start loads as ours does; the "
        "paper's 0.0 at 3.25 is its own last network's, one draw of that spread",
}
CAUSES[("paper-hotstart-seen", "oracle", "replicas")] = CAUSES[("paper-coldstart", "oracle", "replicas")]
UNSEEN_STANDIN = ("the paper's D2 is not public: this experiment ran on sim-D2, a recording of the calibrated "
                  "simulator, not on the paper's samples (give --d2 PATH)")


@dataclass(frozen=True)
class Check:
    """A reproduction target: what is compared, the rule, and whether it holds."""

    what: str
    rule: str
    ours: str
    ok: bool


def prepare(name: str, runs: int | None = None, steps: int | None = None, d2: str | Path | None = None,
            real_week: str | Path | None = None) -> ExperimentConfig:
    """The shipped config ``name``, shortened (``runs``, ``steps``) or pointed at other
    data (``d2`` for the unseen hot start, ``real_week`` for another pattern file)."""
    cfg = load_config(config_path(name))
    if runs is not None:
        cfg = replace(cfg, runs=runs)
    if steps is not None:  # never beyond the experiment's own length (the real week's 912)
        cfg = replace(cfg, steps=min(steps, cfg.steps) if cfg.steps else steps)
    if d2 is not None and name == "paper-hotstart-unseen":
        cfg = replace(cfg, dataset=str(d2))
    if real_week is not None and cfg.workload.get("kind") == "paper-real-week-v1":
        cfg = replace(cfg, workload={**cfg.workload, "path": str(real_week)})
    return cfg


def comparison(results: dict[str, RunResult]) -> pd.DataFrame:
    """Ours beside the paper's, one row per (experiment, policy): for each metric ours
    (mean, ci95), the paper's (mean, ci95) and the absolute difference."""
    rows = []
    for exp, res in results.items():
        for rec in res.summary.to_dict(orient="records"):
            ref = PAPER_RESULTS.get((exp, rec["policy"]), (None, None, None))
            row = {"experiment": exp, "policy": rec["policy"], "runs": rec["runs"]}
            for (key, _, _), paper in zip(METRICS, ref, strict=True):
                ours = rec[key]["mean"]
                row[f"{key}_ours"], row[f"{key}_ours_ci95"] = ours, rec[key]["ci95"]
                row[f"{key}_ours_low"], row[f"{key}_ours_high"] = interval(rec[key])
                row[f"{key}_paper"] = paper.mean if paper else None
                row[f"{key}_paper_ci95"] = paper.ci95 if paper else None
                row[f"{key}_diff"] = ours - paper.mean if paper and ours is not None else None
            rows.append(row)
    return pd.DataFrame(rows)


def _num(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def gaps(table: pd.DataFrame, datasets: dict[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """``(experiment, policy, metric, cause)`` of every difference larger than both
    intervals plus :data:`GAP_TOLERANCE`; ``datasets`` (experiment -> dataset) tells
    which ran on a stand-in for the paper's data."""
    standin = {e for e, d in (datasets or {}).items() if d.startswith("sim-")}
    out = []
    for r in table.to_dict(orient="records"):
        for key, _, _ in METRICS:
            paper, diff = r[f"{key}_paper"], r[f"{key}_diff"]
            if not (_num(paper) and _num(diff)):
                continue
            tol = GAP_TOLERANCE[key] * (1 if key == "violations_per_run" else abs(paper))
            allowed = sum(v for v in (r[f"{key}_ours_ci95"], r[f"{key}_paper_ci95"]) if _num(v)) + tol
            if abs(diff) > allowed:
                cause = UNSEEN_STANDIN if r["experiment"] in standin else CAUSES.get(
                    (r["experiment"], r["policy"], key), "cause not isolated yet")
                out.append((r["experiment"], r["policy"], key, cause))
    return out


@dataclass(frozen=True)
class Target:
    """One reproduction target: ``metric`` of ``policy`` in ``experiment`` is at most
    ``at_most``, within ``within`` (relative) of the paper's figure in
    :data:`PAPER_RESULTS`, inside ``between`` (low, high), or below the same metric of
    the policy ``below``."""

    what: str
    experiment: str
    policy: str
    metric: str
    at_most: float | None = None
    within: float | None = None
    below: str | None = None
    between: tuple[float, float] | None = None


#: The reproduction targets (the paper's cold start, hot starts and real week, within the stated bounds), in the report's order; the paper's figures they name are read
#: from :data:`PAPER_RESULTS`, not written here again.
TARGETS = (
    Target("cold start HSLinUCB violations/run", "paper-coldstart", "hslinucb", "violations_per_run", at_most=8),
    Target("cold start HSLinUCB replicas", "paper-coldstart", "hslinucb", "replicas", within=0.05),
    Target("cold start dqn violations/run", "paper-coldstart", "dqn", "violations_per_run", within=0.15),
    Target("cold start q-learning violations/run", "paper-coldstart", "q-learning", "violations_per_run", within=0.15),
    Target("hot start (seen) hslinucb violations/run", "paper-hotstart-seen", "hslinucb", "violations_per_run",
           at_most=2),
    Target("hot start (seen) dqn violations/run", "paper-hotstart-seen", "dqn", "violations_per_run", at_most=2),
    Target("hot start (seen) q-learning violations/run", "paper-hotstart-seen", "q-learning", "violations_per_run",
           at_most=5),
    Target("real week HSLinUCB violations/run", "paper-real-week", "hslinucb", "violations_per_run", at_most=8),
    Target("real week HSLinUCB replicas", "paper-real-week", "hslinucb", "replicas", within=0.10),
    Target("real week HSLinUCB below threshold-cpu", "paper-real-week", "hslinucb", "violations_per_run",
           below="threshold-cpu"),
    # the unseen hot start, on the paper's own D2 (dataset paper-D2)
    Target("hot start (unseen) HSLinUCB violations/run", "paper-hotstart-unseen", "hslinucb", "violations_per_run",
           at_most=4),
    Target("hot start (unseen) HSLinUCB replicas", "paper-hotstart-unseen", "hslinucb", "replicas", within=0.05),
    Target("hot start (unseen) dqn violations/run", "paper-hotstart-unseen", "dqn", "violations_per_run", at_most=2),
    Target("hot start (unseen) q-learning violations/run", "paper-hotstart-unseen", "q-learning",
           "violations_per_run", between=(150, 300)),
)


def paper_value(experiment: str, policy: str, metric: str) -> PaperValue | None:
    """The paper's figure for ``metric`` (a key of :data:`METRICS`) of ``policy`` in
    ``experiment``, from :data:`PAPER_RESULTS`; ``None`` where the paper gives none."""
    keys = [key for key, _, _ in METRICS]
    return PAPER_RESULTS.get((experiment, policy), (None,) * len(keys))[keys.index(metric)]


def checks(table: pd.DataFrame) -> list[Check]:
    """The reproduction targets (:data:`TARGETS`) that the table can tell."""
    def get(exp, pol, key):
        m = table[(table.experiment == exp) & (table.policy == pol)]
        return None if m.empty else float(m.iloc[0][f"{key}_ours"])

    digits = {key: d for key, _, d in METRICS}
    out = []
    for t in TARGETS:
        v = get(t.experiment, t.policy, t.metric)
        if v is None:
            continue
        ours = f"{v:.{digits[t.metric]}f}"
        if t.at_most is not None:
            out.append(Check(t.what, f"<= {t.at_most:g}", ours, v <= t.at_most))
        elif t.within is not None:
            paper = paper_value(t.experiment, t.policy, t.metric).mean
            out.append(Check(t.what, f"{paper} ± {t.within * 100:g} %", ours, abs(v - paper) <= t.within * paper))
        elif t.between is not None:
            low, high = t.between
            out.append(Check(t.what, f"{low:g} to {high:g}", ours, low <= v <= high))
        else:
            other = get(t.experiment, t.below, t.metric)
            if other is not None:
                out.append(Check(t.what, "fewer violations", f"{ours} < {other:.{digits[t.metric]}f}", v < other))
    return out


def _ours_cell(r: dict, key: str, digits: int) -> str:
    """Our figure of a comparison row: mean ± t-interval, or [low, high] where cut; ``-``."""
    if not _num(r[f"{key}_ours"]):
        return "-"
    return summary_cell({"mean": r[f"{key}_ours"], "ci95": r[f"{key}_ours_ci95"], "low": r.get(f"{key}_ours_low"),
                         "high": r.get(f"{key}_ours_high")}, digits)


def _paper_cell(r: dict, key: str, digits: int) -> str:
    """The paper's figure of a comparison row, with its ± where it gives one; ``-``."""
    p, pci = r[f"{key}_paper"], r[f"{key}_paper_ci95"]
    return "-" if not _num(p) else f"{p:.{digits}f}" + (f" ± {pci:.{digits}f}" if _num(pci) else "")


def format_comparison(table: pd.DataFrame) -> str:
    """The fixed-width table: per metric ``ours ± ci | paper (± ci) | ours - paper``."""
    def cell(r, key, digits):
        diff = r[f"{key}_diff"]
        c = f"{diff:+.{digits}f}" if _num(diff) else ""
        return f"{_ours_cell(r, key, digits):>15s} | {_paper_cell(r, key, digits):>15s} | {c:>8s}"

    head = f"{'experiment':22s} {'policy':13s} " + "  ".join(
        f"{label + ': ours | paper | diff':>44s}" for _, label, _ in METRICS)
    lines = [head, "-" * len(head)]
    for r in table.to_dict(orient="records"):
        lines.append(f"{r['experiment']:22s} {r['policy']:13s} " + "  ".join(
            f"{cell(r, key, digits):>44s}" for key, _, digits in METRICS))
    return "\n".join(lines)


def markdown_table(table: pd.DataFrame) -> str:
    """The comparison as the docs show it (``docs/hslinucb.md``): one row per experiment and
    policy (the oracle and policies the paper did not run left out), violations per run and
    replicas, ours (mean ± 95 % t-interval, or [low, high] where cut at 0) beside the
    paper's."""
    lines = ["| experiment | policy | violations/run ours | paper | replicas ours | paper |", "|---|---|---|---|---|---|"]
    for r in table.to_dict(orient="records"):
        if _num(r["violations_per_run_paper"]):
            lines.append(f"| {r['experiment']} | {r['policy']} | {_ours_cell(r, 'violations_per_run', 1)} | "
                         f"{_paper_cell(r, 'violations_per_run', 1)} | {_ours_cell(r, 'replicas', 2)} | "
                         f"{_paper_cell(r, 'replicas', 2)} |")
    return "\n".join(lines)


def report_text(table: pd.DataFrame, results: dict[str, RunResult], datasets: dict[str, str],
                seconds: float | None = None, steps: int | None = None) -> str:
    """The whole report: the table, the checks, the gaps, the data, the run folders.
    ``steps``: the runs were cut to that many steps (said at the top)."""
    from scalelab.simulator.datasets import describe

    runs = sorted(set(table.runs)) if len(table) else []
    lines = ["# The HSLinUCB paper, reproduced by scalelab", ""]
    if steps is not None or runs != [10]:
        lines += [f"**Shortened: {'/'.join(map(str, runs))} runs" + (f" of {steps} steps" if steps else "")
                  + " -- a quick look, not comparable with the paper's figures (10 runs, full length).**", ""]
    lines += [
             f"Ours: {'/'.join(map(str, runs))} runs per policy, mean ± 95 % Student-t interval; the paper's: its notebooks' saved "
             "outputs, 10 runs (± where it gives one); diff = ours - paper, absolute.", "", "```",
             format_comparison(table), "```", "", "## Checks (the reproduction targets)", ""]
    for c in checks(table):
        lines.append(f"- {'PASS' if c.ok else 'MISS'}  {c.what}: {c.ours} (target {c.rule})")
    lines += ["", "## Gaps that remain", ""]
    found = gaps(table, datasets)
    for exp, pol, key, cause in found:
        lines.append(f"- {exp} / {pol} / {key}: {cause}")
    if not found:
        lines.append("- none beyond the intervals")
    lines += ["", "## Data", ""]
    for exp, ds in datasets.items():
        lines.append(f"- {exp}: {describe(ds) if ds else 'the simulator (paper profile), no dataset'}")
    lines += ["", "## Run folders", ""]
    lines += [f"- {name}: {res.path}" for name, res in results.items()]
    if seconds is not None:
        lines += ["", f"{seconds:.0f} s in all."]
    return "\n".join(lines) + "\n"


def reproduce_paper(out: str | Path = "runs/paper", runs: int | None = None, only: tuple[str, ...] = EXPERIMENTS,
                    progress: bool = True, steps: int | None = None, d2: str | Path | None = None,
                    real_week: str | Path | None = None, workers: int | None = None,
                    ) -> tuple[pd.DataFrame, dict[str, RunResult]]:
    """Run the paper's experiments into ``out`` (the hot starts after the cold start
    they load); write ``paper-report.md`` and ``paper-comparison.csv`` there. ``runs``
    and ``steps`` shorten them (quick looks, tests); the paper's are the default.
    ``workers``: parallel processes per experiment (default: one per core)."""
    import time

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(only) - set(EXPERIMENTS))
    if unknown:
        from scalelab.experiments.config import ConfigError

        raise ConfigError(f"scalelab paper: unknown experiments {unknown}; choose among {list(EXPERIMENTS)}")
    order = [n for n in EXPERIMENTS if n in only]
    if any(n.startswith("paper-hotstart") for n in order) and "paper-coldstart" not in order:
        order.insert(0, "paper-coldstart")  # the hot starts load its states
    results: dict[str, RunResult] = {}
    datasets: dict[str, str] = {}
    coldstart = None
    configs = {name: prepare(name, runs, steps, d2, real_week) for name in order}
    with command_bar(progress, "paper", sum(episodes(cfg) for cfg in configs.values())) as bar:
        if "paper-coldstart" in configs:  # first: the others load its states
            cfg = configs.pop("paper-coldstart")
            results[cfg.name] = run_experiment(cfg, out=out, progress=bar, command="scalelab paper", workers=workers)
            datasets[cfg.name] = cfg.dataset or ""
            coldstart = results[cfg.name].path
        if coldstart is not None:  # the cold start just run, not an older one in `out`
            configs = {name: replace(cfg, policies=[replace(p, params={**p.params, "load": str(coldstart)})
                                                    if p.params.get("load") == "paper-coldstart" else p
                                                    for p in cfg.policies]) for name, cfg in configs.items()}
        names = list(configs)
        # the rest in one pool: one experiment's long learner overlaps the others' episodes
        for i, res in run_experiments(list(configs.values()), out=out, progress=bar, command="scalelab paper",
                                      workers=workers):
            results[names[i]] = res
            datasets[names[i]] = configs[names[i]].dataset or ""
        results = {name: results[name] for name in order}
    table = comparison(results)
    table.to_csv(out / "paper-comparison.csv", index=False)
    (out / "paper-report.md").write_text(report_text(table, results, datasets, time.perf_counter() - t0, steps))
    return table, results
