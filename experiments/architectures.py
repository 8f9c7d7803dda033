"""``scalelab architectures``: the evaluation week on both architectures, one report.

The same students, programs, seed and SLO on

* the **service** (``evaluation-week-5d``): submissions are requests to replicas behind a
  balancer, scaled by HPA, the KPA and HSLinUCB;
* the **runners** (``evaluation-week-5d-jobs``): submissions are jobs on a partitioned
  topic that a Deployment of runners pulls, scaled by KEDA's Kafka scaler, PrairieLearn's
  external-grader rule and HSLinUCB on the paper's context and on the queue's;
* the runners as **ScaledJobs** (``evaluation-week-5d-scaledjob``): one Job per
  submission, KEDA's ScaledJob creating them;

each with its oracle. A violation is a step whose p95 of what the students wait for (the
response on the service, the job's turnaround on the runners) is above the SLO; the cost
is replica-hours (runner-hours on the runners). Writes, in ``OUT/architectures-<time>/``:

* ``comparison.html`` / ``.csv`` / ``.png``: every policy of the three in one ranked
  table and trade-off plot (:func:`scalelab.experiments.report.write_comparison`);
* ``folders.json``: each architecture's run folder;
* ``architectures.md``: per architecture its own Pareto front (with the intervals), then
  where each architecture wins: violations and replica-hours in the exam slots and in
  the rest of the week, and the verdict under the comparison's stated criterion.

``hours=8`` runs Tuesday from 08:00 for that many hours only (8: both of its exams; the
command's ``--short``) for a quick look, the notebook and the tests. ``live=True`` (the
command's ``--live``) is the short form on the live stack: ``live-evaluation-week`` (the
service) and ``live-evaluation-week-jobs`` (the runners), Tuesday 13:00-15:00 compressed
12 times, one after the other (each run about 10 minutes per policy).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.metrics import conclusion, is_reference, metric_cell, pareto_ranks
from scalelab.experiments.report import folder_summary, write_comparison
from scalelab.experiments.runfolder import read_steps
from scalelab.injector.workloads import make_workload


@dataclass(frozen=True)
class Architecture:
    """One side of the comparison: its name in the report, the shipped config it runs,
    the policies (labels) it keeps from that config (None: all), and what it is."""

    name: str
    config: str
    policies: tuple[str, ...] | None
    what: str


ARCHITECTURES = (
    Architecture("service", "evaluation-week-5d", ("hslinucb", "hpa-default", "kpa", "oracle"),
                 "an HTTP service: requests to replicas behind a least-requests balancer"),
    Architecture("runners", "evaluation-week-5d-jobs", None,
                 "jobs on a 12-partition topic, pulled by a Deployment of runners (5 jobs each at most)"),
    Architecture("scaledjob", "evaluation-week-5d-scaledjob", None,
                 "jobs on the same topic, one Kubernetes Job per submission (KEDA ScaledJob)"),
)
#: The short form on the live stack (``live=True``): Tuesday 13:00-15:00 (a deadline, then
#: an exam) compressed 12 times, at 8 % of the students, on the local stack.
LIVE_ARCHITECTURES = (
    Architecture("service", "live-evaluation-week", None,
                 "the sealed sandbox service behind HAProxy, on the local stack"),
    Architecture("runners", "live-evaluation-week-jobs", None,
                 "runner processes pulling jobs from the embedded broker's 12-partition topic, on the local stack"),
)
#: The exam slots: from an exam's start to this long after its end, s (the students still
#: finishing and the queues draining).
EXAM_TAIL_S = 600.0
#: ``--short``: Tuesday from 08:00 for this many hours (both of Tuesday's exams).
SHORT_HOURS = 8.0


def architecture_config(arch: Architecture, runs: int | None = None, hours: float | None = None,
                        base: dict | None = None) -> dict:
    """The config ``arch`` runs: its shipped config (or ``base``), its policies kept,
    ``runs`` set; with ``hours``, only Tuesday from 08:00 for that many hours."""
    import yaml

    cfg = copy.deepcopy(base) if base is not None else yaml.safe_load(config_path(arch.config).read_text())
    if arch.policies is not None:
        cfg["policies"] = [p for p in cfg["policies"] if p.get("label", p["name"]) in arch.policies]
    cfg.pop("calendar", None)  # the timetable's features are the anticipation study's; not compared here
    if runs is not None:
        cfg["runs"] = runs
    if hours is not None:
        cfg["workload"] = {**cfg["workload"], "start_day": 1, "start_hour": 8.0, "days": hours / 24.0}
        cfg["name"] = f"{cfg['name']}-{hours:g}h"
    return cfg


def exam_steps(folder: Path) -> np.ndarray:
    """Per step of the run folder's config, whether it falls in an exam slot (an exam's
    start to :data:`EXAM_TAIL_S` after its end), shape ``(steps,)``."""
    cfg = load_config(folder / "config.yaml")
    workload = make_workload(cfg.workload)
    n = cfg.steps or int(np.ceil(workload.duration_s / cfg.step_seconds))
    t = np.arange(n) * cfg.step_seconds
    inside = np.zeros(n, dtype=bool)
    for start, end, _ in workload.exam_windows():
        inside |= (t >= start) & (t < end + EXAM_TAIL_S)
    return inside


def by_phase(folder: Path) -> pd.DataFrame:
    """Per policy: violations and replica-hours per run in the exam slots and in the rest
    of the week (means over runs)."""
    steps = read_steps(folder)
    inside = exam_steps(folder)
    steps = steps.assign(exam=inside[np.minimum(steps["step"].to_numpy(), len(inside) - 1)])
    dt_h = load_config(folder / "config.yaml").step_seconds / 3600.0
    rows = []
    for policy, frame in steps.groupby("policy", sort=False):
        runs = frame["run"].nunique()
        row = {"policy": policy}
        for phase, part in (("exams", frame[frame.exam]), ("rest", frame[~frame.exam])):
            row[f"{phase}_violations"] = part["violation"].sum() / runs
            row[f"{phase}_replica_hours"] = part["replicas"].sum() * dt_h / runs
        rows.append(row)
    return pd.DataFrame(rows)


def _front(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's policies (the oracle left out) with their rank on this
    architecture's own front, computed with the intervals."""
    s = summary[[not is_reference(p) for p in summary.policy]].reset_index(drop=True)
    v = np.array([r["mean"] for r in s.violations_per_run], dtype=float)
    c = np.array([r["mean"] for r in s.replica_hours], dtype=float)

    def ends(col):
        return np.array([[r.get("low", r["mean"] - r["ci95"]), r.get("high", r["mean"] + r["ci95"])]
                         for r in col], dtype=float)

    return s.assign(own_rank=pareto_ranks(v, c, ends(s.violations_per_run), ends(s.replica_hours)))


def write_summary(results: list[tuple[Architecture, Path]], out: Path) -> Path:
    """``architectures.md``: each architecture's front, the phases, the verdict."""
    cfg0 = load_config(results[0][1] / "config.yaml")
    lines = ["# The evaluation week on two architectures", "",
             f"Same students, programs, seed ({cfg0.seed}) and SLO ({cfg0.slo_ms:g} ms on the p95 of what a student "
             "waits for: the response on the service, the job's turnaround on the runners). Cost: replica-hours "
             "(runner-hours on the runners). Means over runs, with the 95 % interval; rank: the architecture's own "
             "Pareto front, computed with the intervals (1 = on it).", ""]
    combined = []
    for arch, folder in results:
        cfg, summary = folder_summary(folder)
        front = _front(summary)
        lines += [f"## {arch.name}: {arch.what}", "", f"`{cfg.name}`, run folder `{folder}` ({cfg.runs} runs)", "",
                  "| policy | violations/run | replica-h | rank on its front |", "|---|---|---|---|"]
        for r in front.sort_values(["own_rank", "policy"]).to_dict(orient="records"):
            lines.append(f"| {r['policy']} | {metric_cell(r['violations_per_run'], 'violations_per_run')} | "
                         f"{metric_cell(r['replica_hours'], 'replica_hours')} | {r['own_rank']} |")
        for r in summary[[is_reference(p) for p in summary.policy]].to_dict(orient="records"):
            lines.append(f"| {r['policy']} (reference) | "
                         f"{metric_cell(r['violations_per_run'], 'violations_per_run')} | "
                         f"{metric_cell(r['replica_hours'], 'replica_hours')} | – |")
        lines += ["", conclusion(summary), ""]
        combined.append(summary.assign(policy=[f"{arch.name} · {p}" for p in summary.policy]))
        phases = by_phase(folder)
        phases["policy"] = [f"{arch.name} · {p}" for p in phases.policy]
        combined[-1] = combined[-1].merge(phases, on="policy")
    table = pd.concat(combined, ignore_index=True)
    lines += ["## Where each architecture wins", "",
              f"Exam slots: from each exam's start to {EXAM_TAIL_S / 60:g} minutes after its end; the rest: every "
              "other step of the week (the diurnal hours and the deadlines).", "",
              "| policy | exam violations/run | exam replica-h | rest violations/run | rest replica-h |",
              "|---|---|---|---|---|"]
    for r in table.to_dict(orient="records"):
        lines.append(f"| {r['policy']} | {r['exams_violations']:.1f} | {r['exams_replica_hours']:.1f} | "
                     f"{r['rest_violations']:.1f} | {r['rest_replica_hours']:.1f} |")
    lines += ["", "## Across both architectures", "", conclusion(table), ""]
    path = Path(out) / "architectures.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_architectures(out: str | Path = "runs", runs: int | None = None, hours: float | None = None,
                      workers: int | None = None, progress: bool = True,
                      architectures: tuple[Architecture, ...] | None = None,
                      bases: dict[str, dict] | None = None, live: bool = False) -> Path:
    """Run every architecture's config, then write the comparison; returns its folder.
    ``live``: the short form on the live stack (:data:`LIVE_ARCHITECTURES`, one after the
    other; ``hours`` does not apply). ``runs``: per policy (default 5 on the simulator, the
    live configs' own 2 live). ``bases`` replaces a shipped config by name (tests)."""
    from scalelab.experiments.experiment import run_experiments, run_live
    from scalelab.experiments.runner import command_bar, episodes

    if architectures is None:
        architectures = LIVE_ARCHITECTURES if live else ARCHITECTURES
    if runs is None and not live:
        runs = 5
    configs = [(arch, load_config(architecture_config(arch, runs, None if live else hours,
                                                      (bases or {}).get(arch.name)))) for arch in architectures]
    paths = {}
    simulated = [(arch, cfg) for arch, cfg in configs if cfg.backend != "live"]
    with command_bar(progress and bool(simulated), "architectures", sum(episodes(c) for _, c in simulated)) as bar:
        for i, res in run_experiments([cfg for _, cfg in simulated], out=out, workers=workers, progress=bar):
            if progress:
                bar.write(str(res.table()))
            paths[simulated[i][0].name] = res.path
    for arch, cfg in configs:  # the live ones one after the other
        if cfg.backend == "live":
            res = run_live(cfg, out=out)
            if progress:
                print(res.table(), flush=True)
            paths[arch.name] = res.path
    results = [(arch, paths[arch.name]) for arch, _ in configs]
    folder = Path(out) / f"architectures-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    write_comparison([p for _, p in results], folder)
    (folder / "folders.json").write_text(json.dumps({a.name: str(p) for a, p in results}, indent=1) + "\n")
    write_summary(results, folder)
    return folder
