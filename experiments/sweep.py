"""``scalelab sweep``: the cartesian product of config variants × seeds, on processes or Dask.

A grid is ``KEY=V1,V2`` items. ``KEY`` is a dotted path into the config
(``workload.after=30,40``, ``cluster.max_replicas=8,12``, ``engine=des,fluid``), or one
of three special forms: ``seed`` (the experiment's root seed), ``policy`` (one of the
config's policies by its label, so that each cell runs one policy) and ``policy.PARAM``
(a parameter of the cell's policies, ``policy.target_utilization=50,70``). Values are YAML
scalars. Each cell is an ordinary experiment (``run_simulated``, one process, no report)
whose per-run metrics come back to the caller, which writes them to
``OUT/cells/<cell>.json``: a re-run skips the cells already there, a failed cell is
written to ``OUT/cells/<cell>.error`` and the others go on. The client writes every
file, so Dask workers need no shared file system.

Results: ``OUT/sweep.csv`` (one row per cell × policy × run, with the cell's grid
values) and ``OUT/leaderboard.md`` / ``leaderboard.csv``: per group of the grid's other
keys, each policy's mean violations and replica-hours over seeds and runs, its Pareto
rank (1 = no policy has both fewer violations and lower cost), its rank by violations
at equal cost (the policies whose cost is within ``band`` of each other compete on
violations) and by cost at equal violations (within ``band`` of each other on
violations, they compete on cost).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scalelab.errors import UserError
from scalelab.experiments.config import ConfigError, load_config
from scalelab.experiments.metrics import pareto_ranks
from scalelab.experiments.runner import count_on


class SweepError(UserError):
    """A malformed grid; the message names the item."""


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["a.b=1,2", "seed=1,2"]`` → ``{"a.b": [1, 2], "seed": [1, 2]}``."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise SweepError(f"grid item {item!r} is not KEY=V1,V2,...")
        if key in grid:
            raise SweepError(f"grid key {key!r} is given twice")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its values, by key, in grid order."""

    values: tuple[tuple[str, object], ...]

    @property
    def name(self) -> str:
        text = ",".join(f"{k}={v}" for k, v in self.values)
        safe = "".join(ch if ch.isalnum() or ch in "-_.=," else "_" for ch in text)
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        return f"{safe[:80]}-{digest}"

    def as_dict(self) -> dict:
        return dict(self.values)


def cells(grid: dict[str, list]) -> list[Cell]:
    keys = list(grid)
    return [Cell(tuple(zip(keys, combo, strict=True))) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_config(base: dict, cell: Cell) -> dict:
    """The config mapping of ``cell``: ``base`` with the cell's values put in."""
    data = copy.deepcopy(base)
    for key, value in cell.values:
        if key == "policy":
            chosen = [p for p in data.get("policies", []) if (p.get("label") or p["name"]) == value]
            if not chosen:
                known = [p.get("label") or p["name"] for p in data.get("policies", [])]
                raise SweepError(f"grid: policy={value!r} is not one of the config's policies {known}")
            data["policies"] = chosen
            continue
        if key.startswith("policy."):  # a parameter of the cell's policies (after policy= chose them)
            for p in data.get("policies", []):
                p[key.split(".", 1)[1]] = value
            continue
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SweepError(f"grid: {key!r}: {part!r} is not a mapping in the config")
        target[parts[-1]] = value
    return data


def run_cell(config: dict) -> dict:
    """Run one cell (any process: a local worker or a Dask worker) in a scratch folder;
    returns its per-run metrics as records, and how long it took."""
    import tempfile

    from scalelab.experiments.metrics import per_run
    from scalelab.experiments.runner import run_simulated

    t0 = time.perf_counter()
    cfg = load_config(config)
    with tempfile.TemporaryDirectory(prefix="scalelab-cell-") as tmp:
        res = run_simulated(cfg, out=tmp, workers=1, progress=False)
    table = per_run(res.steps, cfg.step_seconds)
    return {"records": json.loads(table.to_json(orient="records")), "seconds": time.perf_counter() - t0}


@dataclass
class SweepResult:
    path: Path
    table: pd.DataFrame
    leaderboard: pd.DataFrame
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _local_map(fn: Callable, jobs: list[tuple], workers: int):
    """Yield ``(index, result or exception)`` as jobs finish, in processes."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if workers <= 1:
        for i, job in enumerate(jobs):
            try:
                yield i, fn(*job)
            except Exception as exc:
                yield i, exc
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as exc:
                yield futures[fut], exc


def _dask_map(fn: Callable, jobs: list[tuple], scheduler):
    """The same on a Dask cluster (``scheduler``: an address or a ``distributed.Client``)."""
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = {client.submit(fn, *job, pure=False): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as exc:
                yield futures[fut], exc
    finally:
        if client is not scheduler:
            client.close()


def run_sweep(config: str | Path | dict, grid: dict[str, list], out: str | Path, executor: str = "local",
              scheduler=None, workers: int | None = None, band: float = 0.1,
              progress=None) -> SweepResult:
    """Run every cell of ``grid`` over ``config`` into ``out`` (see the module docstring).
    ``progress``: a command's bar (:func:`scalelab.experiments.runner.command_bar`; each
    cell advances it, a finished one at once)."""
    import os

    if isinstance(config, dict):
        base = copy.deepcopy(config)
    else:
        base = yaml.safe_load(Path(config).read_text())
        if not isinstance(base, dict):
            raise ConfigError(f"config: {config} is not a mapping")
    if not grid:
        raise SweepError("a sweep needs at least one grid item KEY=V1,V2")
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    all_cells = cells(grid)
    configs = {}
    for cell in all_cells:  # every cell's config is checked before anything runs
        data = cell_config(base, cell)
        try:
            load_config(data)
        except ConfigError as exc:
            raise SweepError(f"cell {cell.name}: {exc}") from None
        configs[cell.name] = data
    (out / "sweep.yaml").write_text(yaml.safe_dump({"config": base, "grid": grid}, sort_keys=False))
    todo = [c for c in all_cells if not (out / "cells" / f"{c.name}.json").exists()]
    result = SweepResult(out, pd.DataFrame(), pd.DataFrame(), skipped=[c.name for c in all_cells if c not in todo])
    jobs = [(configs[c.name],) for c in todo]
    if executor == "local":
        stream = _local_map(run_cell, jobs, workers or min(len(jobs), os.cpu_count() or 1) or 1)
    elif executor == "dask":
        if scheduler is None:
            raise SweepError("executor dask needs --scheduler ADDRESS (a running distributed scheduler)")
        stream = _dask_map(run_cell, jobs, scheduler)
    else:
        raise SweepError(f"executor={executor!r} is not one of ['local', 'dask']")
    if progress is not None:
        count_on(progress, len(todo), len(all_cells) - len(todo))
    for i, answer in stream:
        cell = todo[i]
        if isinstance(answer, Exception):
            text = "".join(traceback.format_exception(answer)).strip()
            (out / "cells" / f"{cell.name}.error").write_text(text + "\n")
            result.failed[cell.name] = f"{type(answer).__name__}: {answer}"
        else:
            (out / "cells" / f"{cell.name}.error").unlink(missing_ok=True)
            payload = {"cell": cell.as_dict(), **answer}
            (out / "cells" / f"{cell.name}.json").write_text(json.dumps(payload, indent=1, default=str))
            result.ran.append(cell.name)
        if progress is not None:
            progress.set_postfix_str(cell.name, refresh=False)
            progress.update(1)
    result.table = gather(out, all_cells)
    result.leaderboard = leaderboard(result.table, [k for k in grid if k not in ("seed", "policy")], band)
    result.table.to_csv(out / "sweep.csv", index=False)
    result.leaderboard.to_csv(out / "leaderboard.csv", index=False)
    (out / "leaderboard.md").write_text(format_leaderboard(result.leaderboard, band))
    return result


def gather(out: Path, all_cells: list[Cell]) -> pd.DataFrame:
    """One row per finished cell × policy × run, with the cell's grid values."""
    rows = []
    for cell in all_cells:
        f = out / "cells" / f"{cell.name}.json"
        if not f.exists():
            continue
        payload = json.loads(f.read_text())
        for rec in payload["records"]:
            rows.append({**{f"grid.{k}": v for k, v in cell.values}, "cell": cell.name, **rec})
    return pd.DataFrame(rows)


def _banded_rank(primary: np.ndarray, other: np.ndarray, band: float) -> np.ndarray:
    """Rank by ``primary`` (lower better) among the entries whose ``other`` lies within
    ``band`` (relative) of theirs; ties broken by ``other``. Returns the rank of each
    entry within its band, 1 = best."""
    out = np.zeros(len(primary), dtype=int)
    for i in range(len(primary)):
        peers = [j for j in range(len(primary)) if abs(other[j] - other[i]) <= band * max(abs(other[i]), 1e-9)]
        out[i] = 1 + sum(1 for j in peers if (primary[j], other[j]) < (primary[i], other[i]))
    return out


def leaderboard(table: pd.DataFrame, group_keys: list[str], band: float = 0.1) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()
    cols = [f"grid.{k}" for k in group_keys]
    parts = []
    groups = table.groupby(cols, sort=False, dropna=False) if cols else [((), table)]
    for key, g in groups:
        agg = g.groupby("policy", sort=False).agg(
            violations=("violations_per_run", "mean"), replica_hours=("replica_hours", "mean"),
            p95_ms=("p95_ms", "mean"), runs=("run", "size")).reset_index()
        v, c = agg.violations.to_numpy(), agg.replica_hours.to_numpy()
        agg["pareto_rank"] = pareto_ranks(v, c)
        agg["rank_violations_at_equal_cost"] = _banded_rank(v, c, band)
        agg["rank_cost_at_equal_violations"] = _banded_rank(c, v, band)
        for col, value in zip(cols, key if isinstance(key, tuple) else (key,), strict=True):
            agg.insert(0, col, value)
        parts.append(agg.sort_values(["pareto_rank", "violations", "replica_hours"]))
    return pd.concat(parts, ignore_index=True)


def format_leaderboard(board: pd.DataFrame, band: float) -> str:
    if board.empty:
        return "# Leaderboard\n\nNo cell finished.\n"
    lines = ["# Leaderboard", "",
             f"Pareto rank 1: no other policy has both fewer violations and a lower cost. The banded ranks "
             f"compare policies within {band:.0%} of each other on the other axis.", ""]
    cols = list(board.columns)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for row in board.itertuples(index=False):
        lines.append("| " + " | ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"
