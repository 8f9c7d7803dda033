"""The twin: one config on the simulator and on the live stack, side by side.

``scalelab twin CONFIG`` runs ``CONFIG`` on ``sim`` and on ``live`` (same seed, same
runs), then :func:`twin_report` on the two run folders (also ``scalelab report A B``):

- per policy, the per-step p95, replicas and request rate of both (median over runs,
  ``twin.png``);
- the twin's error per policy: the per-step p95 error ``|sim - live| / live`` over the
  steps both measured (live steps with a missing signal are left out), median and
  worst (95th percentile of the steps, so that one stray step does not decide);
- violations per run and replica-hours of each policy on each backend (mean ± 95 % Student-t interval),
  whether each simulated mean falls inside the live run's interval, and the ranking of
  the policies on both;
- whether the live replicas' CPU limit was a CFS quota (``stack.json``).

Everything goes to ``twin.md``, ``twin.csv`` and ``twin.png`` in ``out``. With more live
runs of the same config and seed, the noise floor (:func:`noise_floor`,
:func:`floor_report`): the same comparisons of sim against live and of live against
itself, on distributions (per cell, per minute, per run), not single steps.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.experiments.metrics import mean_ci
from scalelab.experiments.runfolder import read_steps


def _per_run(steps: pd.DataFrame, step_s: float) -> pd.DataFrame:
    g = steps.groupby(["policy", "run"])
    return pd.DataFrame({"violations": g.violation.sum(),
                         "replica_hours": g.replicas.sum() * step_s / 3600.0}).reset_index()


def _mean_ci(v: pd.Series) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width (nan with fewer than two runs)."""
    m = mean_ci(v.to_numpy(float))
    if m["mean"] is None:
        return float("nan"), float("nan")
    return m["mean"], m["ci95"] if v.notna().sum() > 1 else float("nan")


def _config(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())


@dataclass(frozen=True)
class ConfigDifference:
    """One key whose value differs between two configs: its dotted ``key`` (``workload.at_s``)
    and the two values; written ``key: a -> b``."""

    key: str
    a: Any
    b: Any

    @property
    def section(self) -> str:
        """The top-level key (``workload`` for ``workload.at_s``)."""
        return self.key.split(".")[0]

    def __str__(self) -> str:
        return f"{self.key}: {self.a!r} -> {self.b!r}"


def config_differences(a: dict, b: dict, prefix: str = "") -> list[ConfigDifference]:
    """Keys whose values differ between two resolved configs (``backend``, ``runs``
    and ``name`` left out)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if not prefix and key in ("backend", "runs", "name"):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(ConfigDifference(f"{prefix}{key}", va, vb))
    return out


def twin_table(sim: pd.DataFrame, live: pd.DataFrame, step_s: float) -> pd.DataFrame:
    """One row per policy: violations/run and replica-hours (mean, ci95) on each backend,
    whether the simulated mean is inside the live interval, and the per-step p95 error
    (median, worst = 95th percentile of steps)."""
    rows = []
    sim_runs, live_runs = _per_run(sim, step_s), _per_run(live, step_s)
    for policy in [p for p in live.policy.unique() if p in set(sim.policy)]:
        row = {"policy": policy}
        for name, runs in (("sim", sim_runs), ("live", live_runs)):
            r = runs[runs.policy == policy]
            row[f"{name}_runs"] = len(r)
            for metric in ("violations", "replica_hours"):
                row[f"{name}_{metric}"], row[f"{name}_{metric}_ci95"] = _mean_ci(r[metric])
        for metric in ("violations", "replica_hours"):
            lo = row[f"live_{metric}"] - row[f"live_{metric}_ci95"]
            hi = row[f"live_{metric}"] + row[f"live_{metric}_ci95"]
            row[f"{metric}_within"] = bool(lo <= row[f"sim_{metric}"] <= hi) if np.isfinite(lo) else None
        s = sim[sim.policy == policy].groupby("step").p95_ms.median()
        lv = live[(live.policy == policy) & (live.missing.fillna("") == "")].groupby("step").p95_ms.median()
        both = pd.concat([s.rename("sim"), lv.rename("live")], axis=1).dropna()
        both = both[both.live > 0]
        err = ((both.sim - both.live).abs() / both.live).to_numpy()
        row["steps_compared"] = len(err)
        row["p95_error_median"] = float(np.median(err)) if len(err) else float("nan")
        row["p95_error_worst"] = float(np.quantile(err, 0.95)) if len(err) else float("nan")
        lv_steps = live[live.policy == policy]
        row["live_missing_steps"] = int((lv_steps.missing.fillna("") != "").sum())
        both = lv_steps[(lv_steps.client_p95_ms > 0) & (lv_steps.p95_ms > 0)]
        gap = ((both.p95_ms - both.client_p95_ms).abs() / both.client_p95_ms).to_numpy()
        row["orchestrator_vs_locust_p95"] = float(np.median(gap)) if len(gap) else float("nan")
        rows.append(row)
    t = pd.DataFrame(rows)
    if len(t):
        for name in ("sim", "live"):
            t[f"{name}_rank"] = t[[f"{name}_violations", f"{name}_replica_hours"]].apply(tuple, axis=1).rank(
                method="min").astype(int)
    return t


# ----------------------------------------------------------------------------- the noise floor
#: Quantiles of the per-step p95 compared per cell.
CELL_QUANTILES = (0.10, 0.50, 0.90)
#: A cell is compared when each side has at least this many measured steps in it.
CELL_MIN_STEPS = 5
#: A minute is "within" when its value is within this share of live's.
MINUTE_TOLERANCE = 0.10
#: The equivalence margin of the per-run means (two one-sided tests): this share of live's
#: mean, and at least :data:`MARGIN_FLOOR` of the metric's unit. Why 20 %: the policies a
#: comparison separates differ by more (on the live week, replica-hours by 25-60 % and
#: violations by factors), so a twin within 20 % ranks them as live does; a tighter margin
#: would need more live runs than two cores give in a day.
MARGIN_SHARE = 0.20
MARGIN_FLOOR = {"violations": 2.0, "replica_hours": 0.01}
#: How far the simulator may be from live, as a multiple of live's distance to itself.
FLOOR_FACTOR = 1.25


def twin_summary(steps: pd.DataFrame, step_s: float, slo_ms: float) -> dict:
    """What the noise floor needs of one run folder, small enough to ship as data: per
    (policy, run) the violations and replica-hours; per (students, replicas) cell the
    per-step p95 of every step that measured something; per (policy, run, minute) the
    mean per-step p95 (ms) and request rate (requests/s)."""
    measured = steps[(steps.p95_ms > 0) & (steps.missing.fillna("") == "")]
    runs = _per_run(steps, step_s)
    cells: dict[str, list[float]] = {}
    for (users, replicas), g in measured.groupby(["users", "replicas"]):
        cells[f"{round(users)},{int(replicas)}"] = [round(float(v), 3) for v in g.p95_ms]
    minute = (steps.t_s // 60.0).astype(int)
    per_minute = measured.assign(minute=minute).groupby(["policy", "run", "minute"]).agg(
        p95_ms=("p95_ms", "mean"), rps=("rps", "mean")).reset_index()
    return {"step_s": float(step_s), "slo_ms": float(slo_ms),
            "runs": runs.to_dict(orient="records"), "cells": cells,
            "minutes": per_minute.round(4).to_dict(orient="records")}


def _folder_settings(folder: Path) -> tuple[dict, float, float]:
    """A run folder's config, its step (s) and its SLO (ms; inf without one)."""
    cfg = _config(folder)
    return cfg, float(cfg.get("step_seconds", 5.0)), float(cfg.get("slo_ms") or np.inf)


def read_summary(source: str | Path, steps: pd.DataFrame | None = None) -> dict:
    """A twin summary: a run folder's (computed from its steps, ``steps`` when already
    read, with ``config``: the experiment's name, seed, runs and backend, and the folder's
    name) or a summary JSON file."""
    source = Path(source)
    if source.is_file():
        return json.loads(source.read_text())
    cfg, step_s, slo = _folder_settings(source)
    summary = twin_summary(read_steps(source) if steps is None else steps, step_s, slo)
    summary["config"] = {"name": cfg.get("name"), "seed": cfg.get("seed"), "runs": cfg.get("runs"),
                         "backend": cfg.get("backend", "sim"), "folder": source.name,
                         "students": (cfg.get("cluster") or {}).get("students", "simulator"),
                         **injector_breaks(source)}
    return summary


def injector_breaks(folder: Path) -> dict:
    """What breaks a live folder's student numbering (which ``cluster.students:
    injector`` replays: one injector process playing every episode in order): the
    injector restarts its supervisor counted (``services.json``) and the episodes that
    failed (their users run on into the next); ``{}`` for a simulated folder."""
    services = folder / "services.json"
    if not services.is_file():
        return {}
    restarts = int(json.loads(services.read_text()).get("restarts", {}).get("injector", 0))
    failed = sum(json.loads(f.read_text()).get("status") == "failed" for f in folder.glob("parts/*/status.json"))
    return {"injector_restarts": restarts, "failed_episodes": failed}


def run_groups(folder: str | Path, per: int, steps: pd.DataFrame | None = None) -> list[dict]:
    """Twin summaries of a run folder's runs (its ``steps`` when already read) in
    consecutive groups of ``per`` (the last may be smaller), each group's runs renumbered
    from 0 so that its minutes line up with a live side's of ``per`` runs: sides of the
    same size, for :func:`noise_floor`."""
    folder = Path(folder)
    _, step_s, slo = _folder_settings(folder)
    steps = read_steps(folder) if steps is None else steps
    first = steps.run - steps.run % per
    return [twin_summary(g.assign(run=g.run - start), step_s, slo) for start, g in steps.groupby(first)]


#: Where the live summaries shipped with scalelab live: ``<config name>/summary-live-a.json``,
#: ``-b``, ... and a ``README.md`` with the commands, the commits and the machine that made them.
SHIPPED_TWIN = "twin"


def shipped_live_summaries(config_name: str) -> list[Path]:
    """The shipped summaries of live runs of the config ``config_name`` (the noise floor's
    live sides, :func:`floor_report`), in their order (``summary-live-a.json``, ``-b``, ...);
    a ``UserError`` names the configs that have at least two."""
    from importlib import resources

    from scalelab.errors import UserError

    root = Path(str(resources.files("scalelab.experiments.data"))) / SHIPPED_TWIN

    def sides(folder: Path) -> list[Path]:
        return sorted(folder.glob("summary-live-[a-z].json"))

    found = sides(root / config_name)
    if len(found) < 2:
        have = sorted(p.name for p in root.iterdir() if len(sides(p)) >= 2) if root.is_dir() else []
        raise UserError(f"fewer than two shipped live summaries for {config_name!r} (configs with two or more: "
                        f"{', '.join(have) or 'none'})")
    return found


def side_letter(i: int) -> str:
    """The letter of the ``i``-th live side of a floor: ``A``, ``B``, ..."""
    return chr(ord("A") + i)


def side_name(i: int) -> str:
    """The name of the ``i``-th live side of a floor: ``live-a``, ``live-b``, ..."""
    return f"live-{side_letter(i).lower()}"


def live_pairs(n: int) -> list[tuple[int, int]]:
    """The pairs of ``n`` live sides a floor compares, as ``(later, earlier)``: each
    side against every one before it (``(1, 0)``, B against A, for two)."""
    return [(j, i) for i, j in itertools.combinations(range(n), 2)]


def check_same_experiment(config_name: str, *summaries: dict) -> None:
    """Refuse summaries of another experiment than ``config_name`` (those that say which)."""
    from scalelab.errors import UserError

    for s in summaries:
        theirs = (s.get("config") or {}).get("name")
        if theirs is not None and theirs != config_name:
            raise UserError(f"the live summary is of the experiment {theirs!r}, not {config_name!r}: compare a "
                            f"simulation of the same config")


def _cell_distance(x: np.ndarray, ref: np.ndarray, slo_ms: float) -> float:
    """How far ``x``'s per-step p95 distribution is from ``ref``'s: the mean relative
    distance of their :data:`CELL_QUANTILES`, plus the gap of their shares above the SLO."""
    qx, qr = np.quantile(x, CELL_QUANTILES), np.quantile(ref, CELL_QUANTILES)
    return float(np.mean(np.abs(qx - qr) / qr)) + abs(float(np.mean(x > slo_ms)) - float(np.mean(ref > slo_ms)))


def cell_floor(sims: Sequence[dict], lives: Sequence[dict], rng: np.random.Generator, reps: int = 400) -> dict:
    """Per cell every side visits (each with :data:`CELL_MIN_STEPS` steps): the distance
    sim-live (the mean over each simulated side against each live side: sides of the same
    number of runs, :func:`run_groups`, so that neither is the less noisy for pooling more)
    and live-live (the mean over the pairs of live sides, :func:`live_pairs`: B to A for
    two; nan with one side); their medians over cells, with 95 % basic bootstrap intervals
    (steps resampled within cells; none with ``reps=0``). A resampled cell is noisier, so
    farther from any other: the basic interval ``2 d - q97.5, 2 d - q2.5`` takes that
    bias out, and may lie below the estimate ``d``, which keeps it."""
    slo = lives[0]["slo_ms"]
    pairs = live_pairs(len(lives))
    keys = [k for k in lives[0]["cells"] if all(len(side["cells"].get(k, ())) >= CELL_MIN_STEPS
                                                 for side in (*sims, *lives))]
    out = {"cells": len(keys), "live_sides": len(lives), "per_cell": {}}
    if not keys:
        return {**out, "sim_live": float("nan"), "live_live": float("nan"), "sim_live_ci": (np.nan, np.nan),
                "live_live_ci": (np.nan, np.nan)}
    data = {k: tuple(np.asarray(side["cells"][k], float) for side in (*sims, *lives)) for k in keys}
    n_sim = len(sims)

    def cell(values: Sequence[np.ndarray]) -> tuple[float, float]:
        sim, live = values[:n_sim], values[n_sim:]
        between = [_cell_distance(live[j], live[i], slo) for j, i in pairs]
        return (float(np.mean([_cell_distance(x, y, slo) for x in sim for y in live])),
                float(np.mean(between)) if between else float("nan"))

    def distances(pick) -> tuple[float, float]:
        sl, ll = zip(*(cell([pick(v) for v in data[k]]) for k in keys), strict=True)
        return float(np.median(sl)), float(np.median(ll))

    for k in keys:
        sl, ll = cell(data[k])
        out["per_cell"][k] = {"steps": tuple(len(v) for v in data[k]), "sim_live": sl, "live_live": ll}
    out["sim_live"], out["live_live"] = distances(lambda v: v)
    if reps == 0:
        return {**out, "sim_live_ci": (np.nan, np.nan), "live_live_ci": (np.nan, np.nan)}
    boot = np.array([distances(lambda v: v[rng.integers(0, len(v), len(v))]) for _ in range(reps)])
    for i, key in enumerate(("sim_live", "live_live")):
        lo, hi = np.quantile(boot[:, i], [0.025, 0.975])
        out[f"{key}_ci"] = (max(2 * out[key] - hi, 0.0), max(2 * out[key] - lo, 0.0))
    return out


def minute_floor(sims: Sequence[dict], lives: Sequence[dict]) -> dict:
    """Per quantity (``p95_ms``, ``rps``): the share of (policy, run, minute) cells whose
    value is within :data:`MINUTE_TOLERANCE` of a live side's, for sim (each simulated
    side against each live side, averaged) and for live against live (over the pairs,
    :func:`live_pairs`)."""
    sim_frames = [pd.DataFrame(side["minutes"]) for side in sims]
    live_frames = [pd.DataFrame(side["minutes"]) for side in lives]

    def share(quantity: str, x: pd.DataFrame, ref: pd.DataFrame) -> tuple[float, int]:
        both = x.merge(ref, on=["policy", "run", "minute"], suffixes=("_x", "_r"))
        both = both[both[f"{quantity}_r"] > 0]
        if both.empty:
            return float("nan"), 0
        gap = (both[f"{quantity}_x"] - both[f"{quantity}_r"]).abs() / both[f"{quantity}_r"]
        return float((gap <= MINUTE_TOLERANCE).mean()), len(both)

    out = {}
    for quantity in ("p95_ms", "rps"):
        against = [share(quantity, x, ref) for x in sim_frames for ref in live_frames]
        between = [share(quantity, live_frames[j], live_frames[i])[0] for j, i in live_pairs(len(live_frames))]
        out[quantity] = {"sim_live": float(np.mean([s for s, _ in against])),
                         "live_live": float(np.mean(between)) if between else float("nan"),
                         "minutes": against[0][1]}
    return out


def draw_floor(sims: Sequence[dict]) -> dict:
    """How far one simulated side is from another (:func:`run_groups`: the same number of
    runs as a live side), per cell and per minute, the quantities :func:`cell_floor` and
    :func:`minute_floor` give sim against live (medians over the pairs of simulated
    sides); ``{}`` with fewer than two. The live sides of a floor share their seed and so
    their draws: each student's programs and think times come from a generator seeded by
    the run's seed and the student's number, the same in every live run; so live-live
    measures the execution's noise only. A simulator that draws its own students
    (``cluster.students: simulator``) has sides of other draws, and this measures the
    draws' noise that sim-live also holds; one that replays the injector's
    (``injector``, with ``seed_runs``) has sides of the same students, and this measures
    its own execution noise."""
    if len(sims) < 2:
        return {}
    pairs = list(itertools.combinations(range(len(sims)), 2))
    cells, minutes = pair_distances(sims, sims, pairs)
    return {"pairs": len(pairs), "cells_sim_sim": cells, "minutes_sim_sim": minutes}


def pair_distances(xs: Sequence[dict], refs: Sequence[dict], pairs: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """For ``pairs`` of (index in ``xs``, index in ``refs``): the median per-cell distance
    (:func:`cell_floor`) and the median share of minutes whose p95 is within
    :data:`MINUTE_TOLERANCE` (:func:`minute_floor`), of ``x`` against ``ref``; the
    pairs with nothing to compare left out (nan when none has)."""
    rng = np.random.default_rng(0)  # unused: no bootstrap
    cells = [cell_floor([xs[i]], [refs[j]], rng, reps=0)["sim_live"] for i, j in pairs]
    minutes = [minute_floor([xs[i]], [refs[j]])["p95_ms"]["sim_live"] for i, j in pairs]
    return _finite_median(cells), _finite_median(minutes)


def _finite_median(values: Sequence[float]) -> float:
    """The median of the finite ``values`` (nan when there is none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def tost(x: np.ndarray, y: np.ndarray, margin: float) -> float:
    """The p-value of two one-sided Welch t-tests that ``mean(x) - mean(y)`` lies inside
    ``(-margin, margin)`` (equivalent at 5 % when below 0.05; nan with fewer than two
    values a side). With no spread on either side, 0 when the gap is inside, 1 outside."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    diff = x.mean() - y.mean()
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(vx + vy)
    if se == 0:
        return 0.0 if abs(diff) < margin else 1.0
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    p_low = stats.t.sf((diff + margin) / se, df)  # H0: diff <= -margin
    p_high = stats.t.cdf((diff - margin) / se, df)  # H0: diff >= +margin
    return float(max(p_low, p_high))


def run_floor(sim: dict, lives: Sequence[dict]) -> pd.DataFrame:
    """Per policy and metric (violations/run, replica-hours/run): sim's and live's (every
    live side pooled) means with 95 % intervals, each live side's mean (``live_a``,
    ``live_b``, ...), the margin and the TOST p-values of sim against live and of live
    against itself (the runs of sides B, D, ... against those of A, C, ...: B against A
    for two); and the ranking of the policies by (violations, replica-hours) on sim and
    on live."""
    sim_runs = pd.DataFrame(sim["runs"])
    side_runs = [pd.DataFrame(s["runs"]) for s in lives]
    live_runs = pd.concat(side_runs)
    halves = [pd.concat(side_runs[0::2]), pd.concat(side_runs[1::2])]
    rows = []
    for policy in [p for p in side_runs[0].policy.unique()
                   if p in set(sim_runs.policy) and all(p in set(r.policy) for r in side_runs)]:
        for metric in ("violations", "replica_hours"):
            s, lv = sim_runs[sim_runs.policy == policy][metric], live_runs[live_runs.policy == policy][metric]
            first, second = (h[h.policy == policy][metric] for h in halves)
            margin = max(MARGIN_SHARE * abs(float(lv.mean())), MARGIN_FLOOR[metric])
            (sm, sc), (lm, lc) = _mean_ci(s), _mean_ci(lv)
            sides = {f"live_{side_letter(i).lower()}": float(r[r.policy == policy][metric].mean())
                     for i, r in enumerate(side_runs)}
            rows.append({"policy": policy, "metric": metric, "sim": sm, "sim_ci95": sc, "live": lm, "live_ci95": lc,
                         **sides, "margin": margin,
                         "p_sim_live": tost(s, lv, margin), "p_live_live": tost(second, first, margin),
                         "sim_runs": len(s), "live_runs": len(lv)})
    t = pd.DataFrame(rows)
    if len(t):
        wide = t.pivot(index="policy", columns="metric", values=["sim", "live"])
        for side in ("sim", "live"):
            order = sorted(wide.index, key=lambda p, side=side: (wide.loc[p, (side, "violations")],
                                                                  wide.loc[p, (side, "replica_hours")]))
            t[f"{side}_rank"] = t.policy.map({p: i + 1 for i, p in enumerate(order)})
    return t


def noise_floor(sim: dict, lives: Sequence[dict], seed: int = 0, sims: Sequence[dict] = ()) -> dict:
    """The comparisons of the twin against its floor over two or more live sides of the
    same config and seed: per cell and per minute (:func:`cell_floor`,
    :func:`minute_floor`) with the simulated sides ``sims`` (:func:`run_groups`: as many
    runs each as a live side; default ``[sim]``), per run (:func:`run_floor`) with every
    simulated run (``sim``), the draws' own distance when there are two simulated sides
    or more (:func:`draw_floor`), and one verdict per metric (``None``: nothing to
    compare)."""
    if len(lives) < 2:
        raise ValueError(f"a noise floor needs at least two live sides, got {len(lives)}")
    sims = list(sims) or [sim]
    cells = cell_floor(sims, lives, np.random.default_rng(seed))
    minutes = minute_floor(sims, lives)
    runs = run_floor(sim, lives)
    draws = draw_floor(sims)

    def at_most(x: float, bound: float) -> bool | None:
        return bool(x <= bound) if np.isfinite(x) and np.isfinite(bound) else None

    verdicts = {
        "per-cell p95 quantiles": at_most(cells["sim_live"], FLOOR_FACTOR * cells["live_live"]),
        "per-minute p95 within 10 %": at_most(-minutes["p95_ms"]["sim_live"], -min(
            0.80, minutes["p95_ms"]["live_live"] / FLOOR_FACTOR)),
        "per-minute throughput within 10 %": at_most(-minutes["rps"]["sim_live"], -min(
            0.80, minutes["rps"]["live_live"] / FLOOR_FACTOR)),
        "per-run means equivalent (TOST)": bool(len(runs)) and bool((runs.p_sim_live < 0.05).all()),
        "ranking": bool(len(runs)) and bool((runs.sim_rank == runs.live_rank).all()),
    }
    if draws:
        cell_ok = at_most(cells["sim_live"], FLOOR_FACTOR * draws["cells_sim_sim"])
        minute_ok = at_most(-minutes["p95_ms"]["sim_live"], -draws["minutes_sim_sim"] / FLOOR_FACTOR)
        verdicts["as close as another draw"] = None if None in (cell_ok, minute_ok) else cell_ok and minute_ok
    broken = [side_letter(i) for i, side in enumerate(lives)
              if side.get("config", {}).get("injector_restarts") or side.get("config", {}).get("failed_episodes")]
    return {"cells": cells, "minutes": minutes, "runs": runs, "draws": draws, "verdicts": verdicts,
            "live_sides": len(lives), "students": sim.get("config", {}).get("students", "simulator"),
            "broken_numbering": broken}


def floor_report(sim: str | Path, lives: Sequence[str | Path], out: str | Path) -> Path:
    """The noise floor of the simulator against two or more live sides (run folders or
    summary files: :func:`read_summary`), written to ``out``: ``floor.md``, ``floor.csv``
    (the per-run table) and each side's ``summary-*.json`` (``summary-sim.json``,
    ``summary-live-a.json``, ...: what to ship instead of the live steps); returns
    ``floor.md``. A simulated run folder is also cut into sides of as many runs as the
    first live side has (:func:`run_groups`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim_steps = read_steps(sim) if Path(sim).is_dir() else None  # read once: the summary and the sides
    sides = {"sim": read_summary(sim, sim_steps), **{side_name(i): read_summary(src) for i, src in enumerate(lives)}}
    for name, summary in sides.items():
        (out / f"summary-{name}.json").write_text(json.dumps(summary))
    live = [sides[side_name(i)] for i in range(len(lives))]
    per = len({r["run"] for r in live[0]["runs"]}) or 1
    sims = run_groups(sim, per, sim_steps) if sim_steps is not None else []
    floor = noise_floor(sides["sim"], live, sims=sims)
    floor["runs"].to_csv(out / "floor.csv", index=False)
    (out / "floor.md").write_text("\n".join(floor_lines(floor)) + "\n")
    return out / "floor.md"


def floor_lines(floor: dict) -> list[str]:
    """The noise-floor section of ``twin.md``: one line per metric saying whether the
    simulator is as close to live as live is to itself, then the per-run table."""
    c, m, runs, v, d = floor["cells"], floor["minutes"], floor["runs"], floor["verdicts"], floor["draws"]

    def yes(ok: bool | None, close: str = "as close as live to itself",
            far: str = "farther than live from itself") -> str:
        return {True: f"**{close}**", False: f"**{far}**", None: "**undetermined** (nothing to compare)"}[ok]

    def letters(indices) -> str:
        return " / ".join(side_letter(i) for i in indices)

    n = floor["live_sides"]
    pairs = len(live_pairs(n))
    lines = [f"## The noise floor: {n} live runs of the same config and seed ({letters(range(n))})", "",
             f"- per-cell p95 quantiles (q10/q50/q90 and the share above the SLO; median over {c['cells']} "
             f"(students, replicas) cells with >= {CELL_MIN_STEPS} measured steps on every side; each simulated "
             f"side against each live run, live against live over {pairs} pair{'s' if pairs != 1 else ''} of runs; "
             f"95 % basic bootstrap intervals): sim-live "
             f"{c['sim_live']:.2f} [{c['sim_live_ci'][0]:.2f}, {c['sim_live_ci'][1]:.2f}], live-live "
             f"{c['live_live']:.2f} [{c['live_live_ci'][0]:.2f}, {c['live_live_ci'][1]:.2f}] "
             f"(target sim-live <= {FLOOR_FACTOR} x live-live): {yes(v['per-cell p95 quantiles'])}"]
    for quantity, name, key in (("p95_ms", "p95", "per-minute p95 within 10 %"),
                                ("rps", "throughput", "per-minute throughput within 10 %")):
        q = m[quantity]
        lines.append(f"- per-minute {name} within ±{MINUTE_TOLERANCE:.0%} of live ({q['minutes']} minutes): sim "
                     f"{q['sim_live']:.0%} of minutes, live against live {q['live_live']:.0%} (target >= 80 %, or "
                     f">= live's share / {FLOOR_FACTOR}): {yes(v[key])}")
    shown, floor_shown = int((runs.p_sim_live < 0.05).sum()), int((runs.p_live_live < 0.05).sum())
    lines.append(f"- per-run violations and replica-hours equivalent to live (two one-sided Welch tests at 5 %, "
                 f"margin {MARGIN_SHARE:.0%} of live's mean): shown for {shown} of {len(runs)} (policy, metric), "
                 f"live against live ({letters(range(1, n, 2))} against {letters(range(0, n, 2))}) for "
                 f"{floor_shown}: "
                 + ("**equivalent**" if v["per-run means equivalent (TOST)"] else "**not shown equivalent**"))
    lines.append(f"- ranking of the policies (violations, then replica-hours): "
                 f"{'the same' if v['ranking'] else 'DIFFERENT'} on the simulator and live")
    if floor.get("students") == "injector" and floor.get("broken_numbering"):
        lines.append(f"- WARNING: live {', '.join(floor['broken_numbering'])}: the injector restarted or an "
                     "episode failed, so its students are not numbered as the simulator replays them")
    if d:
        pairs_text = f"median of {d['pairs']} pair{'s' if d['pairs'] != 1 else ''}"
        against = (f"one simulated side against another ({pairs_text}): per-cell distance {d['cells_sim_sim']:.2f}, "
                   f"minutes whose p95 is within ±{MINUTE_TOLERANCE:.0%}: {d['minutes_sim_sim']:.0%}; the simulator "
                   f"against live (above): {c['sim_live']:.2f} and {m['p95_ms']['sim_live']:.0%}: ")
        if floor.get("students") == "injector":
            lines.append("- the simulator against itself (it replays the live students, cluster.students: injector; "
                         "its sides differ by its own noise: which measured run each program costs, who leaves on a "
                         "fall): " + against
                         + yes(v["as close as another draw"], "as close to live as to another run of itself",
                               "farther from live than from another run of itself")
                         + " (a simulator less noisy than live reads farther here: set it beside live against live)")
        else:
            lines.append("- other draws of the same students (the live runs share their seed, and so each student's "
                         "programs and think times; the simulator draws its own): " + against
                         + yes(v["as close as another draw"], "as close to live as to another draw of itself",
                               "farther from live than from another draw of itself"))
    lines += ["", f"| policy | metric | sim | live (all runs) | live {letters(range(n))} | margin | TOST p sim-live | "
              "TOST p live-live | runs sim / live |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs.to_dict(orient="records"):
        per_side = " / ".join(f"{r[f'live_{side_letter(i).lower()}']:.3g}" for i in range(n))
        lines.append(f"| {r['policy']} | {r['metric']} | {r['sim']:.3g} ± {r['sim_ci95']:.2g} | "
                     f"{r['live']:.3g} ± {r['live_ci95']:.2g} | {per_side} | {r['margin']:.3g} | "
                     f"{r['p_sim_live']:.3f} | {r['p_live_live']:.3f} | {r['sim_runs']} / {r['live_runs']} |")
    lines += ["", "A TOST p below 0.05 says the two means are within the margin; with few runs it stays "
              "above even for identical systems (the live-live column shows what the runs can resolve)."]
    return lines


def why_not_a_twin(sim: str | Path, live: str | Path) -> str:
    """Why two run folders, one simulated and one live, are not a twin ("" when they
    are): a twin is one experiment (its config the same but for the backend and the
    runs); two with another workload, length or seed do not correspond step by step."""
    sim, live = Path(sim), Path(live)
    differ = config_differences(_config(sim), _config(live))
    if any(d.section in ("workload", "steps", "step_seconds", "seed") for d in differ):
        return f"{sim.name} and {live.name} are different experiments ({'; '.join(map(str, differ[:3]))}): their steps " \
            "do not correspond"
    return ""


def twin_report(sim_dir: str | Path, live_dir: str | Path, out: str | Path | None = None,
                live_again: Sequence[str | Path] | str | Path = ()) -> Path:
    """Compare two run folders of one config (any two backends; ``sim`` and ``live``
    in the usual case) and write ``twin.md``, ``twin.csv``, ``twin.png`` to ``out``
    (default: ``live_dir/twin``); returns the path of ``twin.md``. With ``live_again``
    (more live run folders of the same config and seed, or their summary files), also
    the noise floor (:func:`floor_report`)."""
    sim_dir, live_dir = Path(sim_dir), Path(live_dir)
    out = Path(out) if out else live_dir / "twin"
    out.mkdir(parents=True, exist_ok=True)
    cfg_sim, cfg_live = _config(sim_dir), _config(live_dir)
    step_s = float(cfg_live.get("step_seconds", 5.0))
    sim, live = read_steps(sim_dir), read_steps(live_dir)
    t = twin_table(sim, live, step_s)
    stack = {}
    if (live_dir / "stack.json").exists():
        stack = json.loads((live_dir / "stack.json").read_text())
    quota = stack.get("cpu_limit_enforced")
    differ = config_differences(cfg_sim, cfg_live)
    injector = json.loads((live_dir / "injector.json").read_text()) if (live_dir / "injector.json").exists() else {}
    t["live_requests"] = [injector.get(p, {}).get("requests") for p in t.policy]
    t["live_failure_rate"] = [injector.get(p, {}).get("failure_rate") for p in t.policy]
    t.to_csv(out / "twin.csv", index=False)
    _plot(sim, live, out / "twin.png", cfg_live.get("slo_ms"))
    lines = [f"# Twin: {cfg_live.get('name')} on {cfg_sim.get('backend')} and {cfg_live.get('backend')}", "",
             f"- simulated: `{sim_dir}` ({cfg_sim.get('backend')}); measured: `{live_dir}` ({cfg_live.get('backend')})",
             f"- SLO {cfg_live.get('slo_ms')} ms on the per-step p95; a violation is a step above it",
             "- the two configs " + ("are the same experiment (only the backend and the runs differ)" if not differ
                                     else "DIFFER beyond the backend: " + "; ".join(map(str, differ[:10]))),
             "- the live replicas' CPU limit: " + ({True: "a CFS quota (enforced by the kernel)",
                                                     False: "NOT enforced (no writable cgroup here)",
                                                     None: "not recorded"}[quota]
                                                    if cfg_live.get("backend") == "live" else "n/a (no live run)"), "",
             "| policy | violations/run sim | live | sim in live's 95 % CI | replica-h sim | live | "
             "rank sim / live | per-step p95 error median / worst (p95 of steps) | steps compared |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        within = {True: "yes", False: "no", None: "n/a (1 live run)"}[r.violations_within]
        lines.append(f"| {r.policy} | {r.sim_violations:.1f} ± {r.sim_violations_ci95:.1f} | "
                     f"{r.live_violations:.1f} ± {r.live_violations_ci95:.1f} | {within} | "
                     f"{r.sim_replica_hours:.3f} | {r.live_replica_hours:.3f} | {r.sim_rank} / {r.live_rank} | "
                     f"{r.p95_error_median:.0%} / {r.p95_error_worst:.0%} | {r.steps_compared} |")
    lines += ["", "| policy | live requests | failed, not as the program meant | orchestrator p95 vs Locust's "
              "(median per-step relative gap) | live steps with a missing signal |", "|---|---|---|---|---|"]
    window = (cfg_live.get("context") or {}).get("window_s")
    for r in t.itertuples():
        rate = "n/a" if r.live_failure_rate is None or pd.isna(r.live_failure_rate) else f"{r.live_failure_rate:.2%}"
        lines.append(f"| {r.policy} | {r.live_requests if r.live_requests is not None else 'n/a'} | {rate} | "
                     f"{r.orchestrator_vs_locust_p95:.1%} | {r.live_missing_steps} |")
    reasons: dict[str, int] = {}
    for agg in injector.values():
        for k, v in agg.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + int(v)
    if reasons:
        lines += ["", "Failure reasons (all policies): " + "; ".join(f"{k}: {v}" for k, v in sorted(
            reasons.items(), key=lambda kv: -kv[1])[:8])]
    lines += ["", "The orchestrator's p95 is over its context window (spans of the last "
              f"{window or 'preset'} s); the users' is over the same window at the same instant (Locust's timing "
              "of each request): a gap between them is the balancer, the network and the client."]
    same = len(t) and (t.sim_rank == t.live_rank).all()
    lines += ["", f"Ranking (by violations, then replica-hours): {'the same' if same else 'DIFFERENT'} on both.",
              "Intervals are mean ± a 95 % Student-t interval over runs (nan with one run).", "", "![twin](twin.png)"]
    if isinstance(live_again, str | Path):
        live_again = [live_again]
    if live_again:
        lines += ["", *floor_report(sim_dir, [live_dir, *live_again], out).read_text().splitlines()]
    (out / "twin.md").write_text("\n".join(lines) + "\n")
    return out / "twin.md"


def _plot(sim: pd.DataFrame, live: pd.DataFrame, path: Path, slo_ms) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = [p for p in live.policy.unique() if p in set(sim.policy)]
    fig, axes = plt.subplots(len(policies), 3, figsize=(14, 2.8 * max(len(policies), 1)), squeeze=False,
                             sharex=True)
    for i, policy in enumerate(policies):
        for name, frame, color in (("sim", sim, "C1"), ("live", live, "C0")):
            g = frame[frame.policy == policy].groupby("step")
            t = g.t_s.median() / 60.0
            axes[i, 0].plot(t, g.p95_ms.median(), color=color, lw=1, label=name)
            axes[i, 1].step(t, g.replicas.median(), where="post", color=color, lw=1.2, label=name)
            axes[i, 2].plot(t, g.rps.median(), color=color, lw=1, label=name)
        if slo_ms:
            axes[i, 0].axhline(float(slo_ms), color="grey", ls=":", lw=1, label="SLO")
        axes[i, 0].set_yscale("log")
        axes[i, 0].set_ylabel(f"{policy}\np95 (ms)")
        axes[i, 1].set_ylabel("ready replicas")
        axes[i, 2].set_ylabel("requests/s")
        axes[i, 0].legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle("simulator (orange) and live stack (blue), per step, median over runs")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
