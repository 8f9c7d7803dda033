"""The replay backend, as the paper's simulator worked (the recorder is
:func:`scalelab.simulator.datasets.collect`).

A **dataset** holds, for users in steps of 5 and replicas 1..10, 20 context samples each
(the paper's ``dataset_collector``), measured on some backend: one row per sample with
``users, replicas, sample`` and the context fields. Recording from the simulator with
the ``paper`` profile stands in for the paper's D1; another seed for D2.

**Replay** answers a step at (users, replicas) with the next sample of that cell,
cycling through its samples in order (the paper's ``data_index``); scale orders take
effect at once, as in the paper's replay mode.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.orchestrator.context import Context

CONTEXT_COLUMNS = [f.name for f in fields(Context)]


class DatasetError(UserError):
    """A dataset that cannot serve a replay; the message names the cell or the file."""


def load_dataset(path: str | Path) -> pd.DataFrame:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"dataset {str(p)!r} does not exist (record one: scalelab dataset record --out FILE)")
    frame = pd.read_parquet(p)
    missing = {"users", "replicas", "sample", *CONTEXT_COLUMNS} - set(frame.columns)
    if missing:
        raise DatasetError(f"dataset {str(p)!r} lacks columns {sorted(missing)}")
    return frame


class Replay:
    """Serves samples in order per (users, replicas) cell, cycling. ``index`` holds each
    cell's next position; :meth:`restart` begins a new run at the initial replicas and,
    unless told to keep them, the first positions."""

    def __init__(self, dataset: pd.DataFrame, min_replicas: int = 1, max_replicas: int = 10,
                 initial_replicas: int = 1) -> None:
        self.cells: dict[tuple[int, int], list[Context]] = {}
        for (u, r), g in dataset.groupby(["users", "replicas"]):
            self.cells[(int(u), int(r))] = [Context(**{k: row[k] for k in CONTEXT_COLUMNS})
                                            for row in g.sort_values("sample").to_dict(orient="records")]
        self.index: dict[tuple[int, int], int] = {}
        self.min, self.max = min_replicas, max_replicas
        self.initial = self.replicas = initial_replicas
        self.users_levels = sorted({u for u, _ in self.cells})

    def restart(self, keep_index: bool) -> None:
        """A new run: back to the initial replicas; the cells' positions are kept
        (``keep_index``, the paper's shared ``data_index``) or reset."""
        self.replicas = self.initial
        if not keep_index:
            self.index = {}

    def index_state(self) -> list[list[int]]:
        """The cells' positions, JSON-ready: ``[[users, replicas, next], ...]``."""
        return [[u, r, i] for (u, r), i in sorted(self.index.items())]

    def load_index_state(self, state: list[list[int]]) -> None:
        self.index = {(int(u), int(r)): int(i) for u, r, i in state}

    @property
    def desired_replicas(self) -> int:
        return self.replicas

    def scale_to(self, n: int) -> None:
        if not self.min <= n <= self.max:
            raise ValueError(f"scale_to({n}) is outside [{self.min}, {self.max}]")
        self.replicas = n

    def context(self, users: int) -> Context:
        """The next recorded context at ``users`` and the current replica count."""
        key = (int(users), self.replicas)
        if key not in self.cells:
            raise DatasetError(
                f"the dataset has no samples for {users} users on {self.replicas} replicas "
                f"(users recorded: {self.users_levels})"
            )
        samples = self.cells[key]
        i = self.index.get(key, 0) % len(samples)
        self.index[key] = i + 1
        return samples[i]

    def oracle(self, users: int, slo_ms: float) -> int:
        """The paper's oracle: fewest replicas whose recorded p95 values (mean and max)
        are all within the SLO (the maximum replicas if none)."""
        for n in range(self.min, self.max + 1):
            cell = self.cells.get((int(users), n))
            if cell:
                p95 = np.array([c.p95_ms for c in cell])
                if p95.mean() <= slo_ms and p95.max() <= slo_ms:
                    return n
        return self.max
