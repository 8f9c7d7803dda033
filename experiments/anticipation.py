"""``scalelab anticipation``: anticipation against reaction on the 5-day evaluation week.

Runs ``evaluation-week-5d`` (the default week, which the anticipatory policies were tuned
on), then the same config, unchanged but for its calendar, on held-out calendars
(:data:`VARIANTS`): exams moved, sizes changed with an extra exam, and the default week
with a noisy timetable (announced sizes off by up to 30 %, starts by up to 10 minutes).
Then writes, in ``OUT/anticipation-<time>/``:

* ``comparison.html`` / ``.csv`` / ``.png``: every calendar's policies in one ranked
  table and trade-off plot (:func:`scalelab.experiments.report.write_comparison`);
* ``anticipation.md``: per calendar, each anticipatory policy against HSLinUCB (the
  violations' change, the replica-hours' ratio) and whether it is on the Pareto front
  against every reactive policy: the targets below, checked;
* ``exams-<calendar>.png``: the exam-slot timeline: around each exam, every policy's
  replicas (mean over runs, per minute) over the students, and its violations.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.metrics import cell, pareto_ranks
from scalelab.experiments.report import policy_styles, write_comparison
from scalelab.experiments.runfolder import read_steps
from scalelab.injector.workloads import make_workload

BASE = "evaluation-week-5d"
#: Policies that read the timetable or forecast from history; the rest are reactive.
ANTICIPATORY = ("keda-cron", "phpa-holt-winters", "hslinucb-calendar")
REFERENCE = "oracle"
#: Held-out calendars: name -> (what changed, config overrides).
VARIANTS: dict[str, tuple[str, dict]] = {
    "moved": ("exams moved: Mon 10:00 250 students (90 min), Wed 15:00 200 (60 min), Fri 09:00 400 (120 min)",
              {"workload": {"kind": "evaluation-week-v1", "exams": [
                  {"day": 0, "hour": 10.0, "students": 250, "minutes": 90},
                  {"day": 2, "hour": 15.0, "students": 200, "minutes": 60},
                  {"day": 4, "hour": 9.0, "students": 400, "minutes": 120}]}}),
    "resized": ("sizes changed and an extra exam: Tue 09:00 360, Tue 14:00 150, Wed 11:00 300 (extra, 90 min), "
                "Thu 10:00 250",
                {"workload": {"kind": "evaluation-week-v1", "exams": [
                    {"day": 1, "hour": 9.0, "students": 360, "minutes": 60},
                    {"day": 1, "hour": 14.0, "students": 150, "minutes": 90},
                    {"day": 2, "hour": 11.0, "students": 300, "minutes": 90},
                    {"day": 3, "hour": 10.0, "students": 250, "minutes": 120}]}}),
    "noisy": ("the default week with a noisy timetable: announced sizes x U(0.7, 1.3), starts +- U(0, 10) min, "
              "drawn per run", {"calendar": {"features": True, "size_noise": 0.3, "start_noise_min": 10.0}}),
}


def variant_config(base: dict, overrides: dict, name: str, runs: int | None) -> dict:
    """``base`` with ``overrides`` merged one level deep, renamed ``<base>-<name>``."""
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) and key != "workload" else value
    cfg["name"] = f"{base['name']}-{name}"
    if runs is not None:
        cfg["runs"] = runs
    return cfg


def kind_of(policy: str, labels_to_names: dict[str, str]) -> str:
    name = labels_to_names.get(policy, policy)
    if name == REFERENCE:
        return "reference"
    return "anticipatory" if name in ANTICIPATORY else "reactive"


def targets(summary: pd.DataFrame, labels_to_names: dict[str, str], against: str = "hslinucb") -> list[dict]:
    """Per anticipatory policy: violations and replica-hours against ``against``
    (HSLinUCB), and whether it is on the Pareto front of itself and every reactive
    policy. The target: >= 30 % fewer violations at no more replica-hours, and
    on that front."""
    s = summary.set_index("policy")
    base_v, base_c = s.loc[against, "violations_per_run"]["mean"], s.loc[against, "replica_hours"]["mean"]
    reactive = [p for p in s.index if kind_of(p, labels_to_names) == "reactive"]
    out = []
    for p in s.index:
        if kind_of(p, labels_to_names) != "anticipatory":
            continue
        group = [p, *reactive]
        ranks = pareto_ranks(np.array([s.loc[q, "violations_per_run"]["mean"] for q in group]),
                             np.array([s.loc[q, "replica_hours"]["mean"] for q in group]))
        v, c = s.loc[p, "violations_per_run"]["mean"], s.loc[p, "replica_hours"]["mean"]
        fewer = 1.0 - v / base_v if base_v > 0 else 0.0
        out.append({"policy": p, "violations": v, "replica_hours": c, "fewer_violations": fewer,
                    "cost_ratio": c / base_c, "front_vs_reactive": bool(ranks[0] == 1),
                    "meets": bool(fewer >= 0.30 and c <= base_c and ranks[0] == 1),
                    "violations_cell": cell(s.loc[p, "violations_per_run"], 1),
                    "replica_hours_cell": cell(s.loc[p, "replica_hours"], 1)})
    return out


def exam_timeline(folder: Path, out: Path, before_min: float = 30.0, after_min: float = 20.0) -> Path | None:
    """``exams-<name>.png``: one column per exam of the run folder's workload; top,
    each policy's ready replicas (mean over runs, per minute) and the students; bottom,
    its violations per minute (mean over runs)."""
    cfg = load_config(folder / "config.yaml")
    steps = read_steps(folder)[["run", "policy", "step", "users", "replicas", "violation", "oracle_replicas"]]
    step_s = float(cfg.step_seconds)
    end_s = (steps.step.max() + 1) * step_s
    windows = [w for w in make_workload(cfg.workload).exam_windows() if w[0] < end_s and w[1] > 0]  # in the run
    if not windows:
        return None
    runs = steps.run.nunique()
    styles = policy_styles(steps.policy.unique())
    fig, axes = plt.subplots(2, len(windows), figsize=(5.2 * len(windows), 6.4), sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]})
    t = steps.step.to_numpy() * step_s
    in_any = np.zeros(len(steps), dtype=bool)
    for start, end, _ in windows:
        in_any |= (t >= start - before_min * 60.0) & (t < end + after_min * 60.0)
    students_top = max(float(steps.users[in_any].max()) * 1.15, 1.0)  # one scale for every panel
    for j, (start, end, students) in enumerate(windows):
        lo, hi = start - before_min * 60.0, end + after_min * 60.0
        part = steps[(t >= lo) & (t < hi)]
        part = part.assign(minute=(part.step * step_s - start) // 60.0)
        top, bottom = axes[0, j], axes[1, j]
        load = part.groupby("minute").users.mean()
        twin = top.twinx()
        twin.fill_between(load.index, load.to_numpy(), color="0.85", step="post", label="students")
        twin.set_ylim(0, students_top)
        if j == len(windows) - 1:
            twin.set_ylabel("students (shaded)")
        else:
            twin.set_yticklabels([])
        top.set_zorder(twin.get_zorder() + 1)
        top.patch.set_visible(False)
        for policy, g in part.groupby("policy", sort=False):
            per_min = g.groupby("minute").agg(replicas=("replicas", "mean"), violations=("violation", "sum"))
            st = styles[policy]
            top.plot(per_min.index, per_min.replicas, color=st["color"], ls=st["ls"], lw=1.4, label=policy)
            bottom.plot(per_min.index, per_min.violations / runs, color=st["color"], ls=st["ls"], lw=1.1)
        day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        offset = getattr(make_workload(cfg.workload), "offset_s", 0.0)
        when = (start + offset) / 3600.0
        top.set_title(f"{day[int(when // 24) % 7]} {int(when % 24):02d}:{round(when % 1 * 60):02d}, "
                      f"{students:.0f} students", fontsize=10)
        for ax in (top, bottom):
            ax.axvline(0, color="k", lw=0.6)
            ax.axvline((end - start) / 60.0, color="k", lw=0.6, ls="--")
            ax.grid(alpha=0.3)
        bottom.set_xlabel("minutes from the exam's start")
    axes[0, 0].set_ylabel("ready replicas (mean over runs)")
    axes[1, 0].set_ylabel("violations / min\n(mean over runs)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=9, frameon=False)
    fig.suptitle(f"{cfg.name}: the exam slots ({runs} runs; solid line at the start, dashed at the end)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = out / f"exams-{cfg.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary(results: list[tuple[str, str, Path]], out: Path) -> Path:
    """``anticipation.md``: the targets per calendar (see :func:`targets`)."""
    lines = ["# Anticipation against reaction: the 5-day evaluation week", "",
             "Each anticipatory policy against HSLinUCB on the same calendar (mean over runs, ± the 95 % "
             "interval); target: at least 30 % fewer violations at no more replica-hours, and on the Pareto front "
             "of itself and every reactive policy. The policies were tuned on the default week only.", ""]
    for name, what, folder in results:
        cfg = load_config(folder / "config.yaml")
        summary = pd.DataFrame(json.loads((folder / "summary.json").read_text()))
        labels = {p.display: p.name for p in cfg.policies}
        lines += [f"## {name}: {what}", "", f"run folder: `{folder}` ({cfg.runs} runs)", "",
                  "| policy | violations/run | replica-h | violations vs HSLinUCB | replica-h / HSLinUCB's | "
                  "front vs reactive | target |", "|---|---|---|---|---|---|---|"]
        for r in targets(summary, labels):
            lines.append(f"| {r['policy']} | {r['violations_cell']} | {r['replica_hours_cell']} | "
                         f"{-100 * r['fewer_violations']:+.0f} % | {r['cost_ratio']:.2f} | "
                         f"{'yes' if r['front_vs_reactive'] else 'no'} | {'**met**' if r['meets'] else 'missed'} |")
        s = summary.set_index("policy")
        lines += ["", "reactive and reference: " + "; ".join(
            f"{p} {s.loc[p, 'violations_per_run']['mean']:.1f} violations at {s.loc[p, 'replica_hours']['mean']:.1f} "
            f"replica-h" for p in s.index if kind_of(p, labels) != "anticipatory"), ""]
    path = out / "anticipation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_anticipation(out: str | Path = "runs", runs: int | None = None, variant_runs: int | None = 5,
                     only: list[str] | None = None, workers: int | None = None, progress: bool = True,
                     base: dict | None = None, variants: dict | None = None,
                     policies: list[str] | None = None) -> Path:
    """Run the default week and the held-out calendars (``only``: a subset of
    ``default`` and :data:`VARIANTS`), then write the comparison; returns its folder.
    ``policies``: only these of the config's (labels); the oracle is then computed only
    when kept. ``base`` and ``variants`` replace the shipped config and :data:`VARIANTS` (tests)."""
    import yaml

    from scalelab.experiments.config import ConfigError
    from scalelab.experiments.experiment import run_experiments
    from scalelab.experiments.runner import command_bar, episodes

    base = base if base is not None else yaml.safe_load(config_path(BASE).read_text())
    if policies:
        labels = [p.get("label", p["name"]) for p in base["policies"]]
        unknown = sorted(set(policies) - set(labels))
        if unknown:
            raise ConfigError(f"anticipation: --policies {', '.join(unknown)}: not in {BASE} (its policies: "
                              f"{', '.join(labels)})")
        base = {**base, "policies": [p for p, label in zip(base["policies"], labels, strict=True) if label in policies],
                "oracle": REFERENCE in policies}
    variants = variants if variants is not None else VARIANTS
    chosen = only or ["default", *variants]
    configs = {}
    for name in chosen:
        if name == "default":
            configs[name] = load_config(dict(base, runs=runs or base["runs"])), "the week the policies were tuned on"
        else:
            what, overrides = variants[name]
            cfg = variant_config(base, overrides, name, variant_runs if runs is None else runs)
            configs[name] = load_config(cfg), what
    names = list(configs)
    paths = {}
    with command_bar(progress, "anticipation", sum(episodes(cfg) for cfg, _ in configs.values())) as bar:
        for i, res in run_experiments([cfg for cfg, _ in configs.values()], out=out, workers=workers, progress=bar):
            if progress:
                bar.write(str(res.table()))
            paths[names[i]] = res.path
    results = [(name, configs[name][1], paths[name]) for name in names]
    folder = Path(out) / f"anticipation-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    write_comparison([p for _, _, p in results], folder)
    for _, _, path in results:
        exam_timeline(path, folder)
    write_summary(results, folder)
    return folder
