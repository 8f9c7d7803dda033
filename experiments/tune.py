"""``scalelab tune``: a baseline's parameters chosen on tuning seeds, judged on held-out seeds.

A rule baseline at its defaults may never fire on a given service (HPA's 80 % target on
CPU-limited pods); compared so, it loses for a reason that says nothing about the rule.
Tuning gives it its best parameters, chosen by a stated criterion, on seeds the
comparison does not use:

1. **Tuning.** The grid (``--grid PARAM=V1,V2``: the policy's own parameters) runs on the
   tuning seeds, one policy per cell (a :mod:`scalelab.experiments.sweep`: local
   processes or a Dask cluster). Each parameter set gets its mean violations and
   replica-hours per run over the tuning seeds and runs.
2. **The choice**, by the criterion stated in the report:

   - ``budget`` (with ``--budget B``): the fewest replica-hours among the sets whose mean
     violations per run are at most ``B``; when none is, the fewest violations;
   - ``knee`` (the default): on the sets' own Pareto front (means), the set nearest the
     ideal corner (fewest violations, fewest replica-hours) once each axis is scaled to
     the front's range; ties to the cheaper.

3. **Held out.** The policy at its defaults and at the chosen parameters run on the
   held-out seeds, never used to choose: both rows, mean ± 95 % t-interval over the
   runs, are the result a comparison may quote.

Files in ``OUT``: ``tuning/`` and ``held-out/PARAMS/`` (the two sweeps, resumable; one
held-out folder per choice),
``tune.json`` (the choice, the criterion, both tables) and ``tune.md``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scalelab.experiments.config import ConfigError
from scalelab.experiments.metrics import cell, mean_ci, pareto_ranks
from scalelab.experiments.sweep import SweepError, run_sweep

#: Seeds of the two phases (disjoint from each other and from the shipped configs' seeds).
TUNING_SEEDS = (101, 102, 103)
HELD_OUT_SEEDS = (201, 202, 203, 204, 205)
CRITERIA = ("knee", "budget")


@dataclass
class TuneResult:
    """The outcome: the chosen parameters, the criterion in words, the tuning table (one row
    per parameter set) and the held-out table (default and tuned)."""

    path: Path
    policy: str
    params: dict
    criterion: str
    tuning: pd.DataFrame
    held_out: pd.DataFrame


def choose(table: pd.DataFrame, criterion: str = "knee", budget: float | None = None) -> tuple[int, str]:
    """The row of ``table`` (``violations``, ``replica_hours``: means per run) the criterion
    picks, and the criterion in words.

    >>> t = pd.DataFrame({"violations": [0.0, 5.0, 50.0, 60.0], "replica_hours": [40.0, 20.0, 10.0, 30.0]})
    >>> choose(t)[0], choose(t, "budget", budget=10.0)[0], choose(t, "budget", budget=-1.0)[0]
    (1, 1, 0)
    """
    v, c = table["violations"].to_numpy(float), table["replica_hours"].to_numpy(float)
    if criterion == "budget":
        if budget is None:
            raise SweepError("tune: criterion budget needs --budget VIOLATIONS (per run)")
        within = np.flatnonzero(v <= budget)
        words = f"the fewest replica-hours among the parameter sets with at most {budget:g} violations per run"
        if within.size == 0:
            return int(np.argmin(v)), words + " (none was within: the fewest violations)"
        return int(within[np.argmin(c[within])]), words
    if criterion != "knee":
        raise SweepError(f"tune: criterion {criterion!r} is not one of {list(CRITERIA)}")
    front = np.flatnonzero(pareto_ranks(v, c) == 1)
    span_v, span_c = np.ptp(v[front]) or 1.0, np.ptp(c[front]) or 1.0
    distance = np.hypot((v[front] - v[front].min()) / span_v, (c[front] - c[front].min()) / span_c)
    best = front[np.lexsort((c[front], distance))[0]]
    return int(best), ("the knee of the parameter sets' own front: nearest the ideal corner (fewest violations, "
                       "fewest replica-hours) with each axis scaled to the front's range")


def _per_set(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean violations and replica-hours per run of each parameter set over seeds and runs."""
    rows = []
    for values, g in table.groupby([f"grid.{k}" for k in keys], sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values, strict=True)), "runs": len(g),
                     "violations": float(g.violations_per_run.mean()),
                     "replica_hours": float(g.replica_hours.mean())})
    return pd.DataFrame(rows)


def tune(config: str | Path | dict, policy: str, grid: dict[str, list], out: str | Path,
         criterion: str = "knee", budget: float | None = None, tuning_seeds=TUNING_SEEDS,
         held_out_seeds=HELD_OUT_SEEDS, runs: int = 1, executor: str = "local", scheduler=None,
         workers: int | None = None, progress=None) -> TuneResult:
    """Tune ``policy`` (a label of the config's policies) over ``grid`` (its parameters'
    values) and judge default against tuned on held-out seeds; see the module docstring.
    ``progress``: a bar both sweeps' cells advance (:func:`scalelab.experiments.runner.command_bar`)."""
    base = copy.deepcopy(config) if isinstance(config, dict) else yaml.safe_load(Path(config).read_text())
    if not isinstance(base, dict):
        raise ConfigError(f"config: {config} is not a mapping")
    if not grid:
        raise SweepError("tune needs at least one --grid PARAM=V1,V2 (a parameter of the policy)")
    if set(tuning_seeds) & set(held_out_seeds):
        raise SweepError(f"tune: the held-out seeds {sorted(held_out_seeds)} must not be tuning seeds "
                         f"{sorted(tuning_seeds)}")
    labels = [p.get("label") or p["name"] for p in base.get("policies", [])]
    if policy not in labels:
        raise SweepError(f"tune: --policy {policy!r} is not one of the config's policies {labels}")
    entry = copy.deepcopy(base["policies"][labels.index(policy)])
    _check_parameters(entry["name"], policy, grid)
    base["runs"] = runs
    out = Path(out)
    keys = list(grid)
    sweep_grid = {"policy": [policy], **{f"policy.{k}": v for k, v in grid.items()}, "seed": list(tuning_seeds)}
    tuning = run_sweep(base, sweep_grid, out / "tuning", executor=executor, scheduler=scheduler, workers=workers,
                       progress=progress)
    if tuning.failed:
        raise SweepError(f"tune: {len(tuning.failed)} tuning cells failed; see {out / 'tuning' / 'cells'}")
    sets = _per_set(tuning.table.rename(columns={f"grid.policy.{k}": f"grid.{k}" for k in keys}), keys)
    pick, words = choose(sets, criterion, budget)
    params = {k: _plain(sets.loc[pick, k]) for k in keys}
    stem = policy.removesuffix("-default")
    default = {**entry, "label": f"{stem}-default"}
    tuned = {**entry, **params, "label": f"{stem}-tuned"}
    # one folder per choice: a re-run with another grid that chooses otherwise never reuses these cells
    held_dir = out / "held-out" / ",".join(f"{k}={v}" for k, v in params.items())
    held = run_sweep({**base, "policies": [default, tuned]}, {"seed": list(held_out_seeds)}, held_dir,
                     executor=executor, scheduler=scheduler, workers=workers, progress=progress)
    if held.failed:
        raise SweepError(f"tune: {len(held.failed)} held-out cells failed; see {held_dir / 'cells'}")
    rows = []
    for label in (default["label"], tuned["label"]):
        g = held.table[held.table.policy == label]
        rows.append({"policy": label, "runs": len(g), **{f"{m}_{part}": value for m in ("violations_per_run",
                     "replica_hours") for part, value in mean_ci(g[m].to_numpy(), 0.0).items()}})
    held_out = pd.DataFrame(rows)
    result = TuneResult(out, policy, params, words, sets, held_out)
    _write(result, entry, grid, tuning_seeds, held_out_seeds, runs)
    return result


def _check_parameters(name: str, label: str, grid: dict) -> None:
    """Every grid key is a parameter of the policy (before any cell runs)."""
    import difflib
    import inspect

    from scalelab.agent.registry import factory_of

    params = inspect.signature(factory_of(name)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    for key in grid:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; its parameters: {', '.join(params)}"
            raise SweepError(f"tune: {label} ({name}) has no parameter {key!r}{hint}")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _write(res: TuneResult, entry: dict, grid: dict, tuning_seeds, held_out_seeds, runs: int) -> None:
    (res.path / "tune.json").write_text(json.dumps({
        "policy": res.policy, "entry": entry, "grid": grid, "params": res.params, "criterion": res.criterion,
        "tuning_seeds": list(tuning_seeds), "held_out_seeds": list(held_out_seeds), "runs_per_seed": runs,
        "tuning": json.loads(res.tuning.to_json(orient="records")),
        "held_out": json.loads(res.held_out.to_json(orient="records"))}, indent=1, default=str))
    res.path.joinpath("tune.md").write_text(format_tune(res, tuning_seeds, held_out_seeds))


def format_tune(res: TuneResult, tuning_seeds, held_out_seeds) -> str:
    """The report: the tuning table with the choice marked, the criterion, the held-out rows."""
    keys = [k for k in res.tuning.columns if k not in ("runs", "violations", "replica_hours")]
    lines = [f"# {res.policy}, tuned", "",
             f"Tuning seeds {', '.join(map(str, tuning_seeds))}: mean per run over seeds and runs.", "",
             "| " + " | ".join([*keys, "violations/run", "replica-h", ""]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for rec in res.tuning.to_dict(orient="records"):
        chosen = all(rec[k] == res.params[k] for k in keys)
        lines.append("| " + " | ".join([*(str(rec[k]) for k in keys), f"{rec['violations']:.1f}",
                                        f"{rec['replica_hours']:.2f}", "**chosen**" if chosen else ""]) + " |")
    lines += ["", f"Criterion: {res.criterion}.", "",
              f"Chosen: {', '.join(f'{k}={v}' for k, v in res.params.items())}.", "",
              f"Held-out seeds {', '.join(map(str, held_out_seeds))} (never used to choose): mean ± 95 % "
              "t-interval over the runs.", "", "| policy | runs | violations/run | replica-h |", "|---|---|---|---|"]
    for rec in res.held_out.to_dict(orient="records"):
        v, h = ({part: rec[f"{m}_{part}"] for part in ("mean", "ci95", "low", "high")}
                for m in ("violations_per_run", "replica_hours"))
        lines.append(f"| {rec['policy']} | {rec['runs']} | {cell(v, 1)} | {cell(h, 2)} |")
    return "\n".join(lines) + "\n"
