"""p95 recordings: the latency samples a platform measured per (users, replicas) cell,
in the order a replay serves them -- the paper's D1 and D2 (reconstructed from its
notebooks' logs, ``simulator/data/paper-D?-p95.json``) or any file in that format.
Readers: the datasets (:mod:`scalelab.simulator.datasets`, which complete a recording
into a replay dataset) and the calibration (:mod:`scalelab.simulator.calibration`, which
fits a profile to its known samples).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scalelab.simulator.replay import DatasetError

#: The shipped recordings of the paper's datasets, by name (see simulator/data/README.md).
SHIPPED = {"D1": "paper-D1-p95.json", "D2": "paper-D2-p95.json"}


@dataclass(frozen=True)
class P95Recording:
    """p95 samples (ms) measured on some platform, per (users, replicas) cell, in the
    order a replay serves them; ``None`` where a position is unknown."""

    name: str
    cells: dict[tuple[int, int], tuple[float | None, ...]]
    samples_per_cell: int
    provenance: str
    origin: str  # the file it was read from

    @property
    def known(self) -> int:
        """How many samples are known."""
        return sum(v is not None for s in self.cells.values() for v in s)


def read_p95_recording(path: str | Path | None = None, shipped: str = "D1") -> P95Recording:
    """Read a p95 recording (``paper-D1-p95.json``'s format) from ``path``, or without
    it the ``shipped`` one (``D1`` or ``D2``). Errors name the file and the field."""
    if path is None:
        text = resources.files("scalelab.simulator.data").joinpath(SHIPPED[shipped]).read_text()
        origin = f"simulator/data/{SHIPPED[shipped]}"
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DatasetError(f"dataset {str(p)!r} does not exist")
        text, origin = p.read_text(), str(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"dataset {origin!r} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise DatasetError(f"dataset {origin!r}: expected an object with a 'cells' list "
                           f"(the format of simulator/data/{SHIPPED['D1']})")
    n = data.get("samples_per_cell")
    if not isinstance(n, int) or n < 1:
        raise DatasetError(f"dataset {origin!r}: samples_per_cell={n!r} must be a positive integer")
    cells: dict[tuple[int, int], tuple[float | None, ...]] = {}
    for i, cell in enumerate(data["cells"]):
        where = f"dataset {origin!r}: cells[{i}]"
        if not isinstance(cell, dict):
            raise DatasetError(f"{where} is not an object")
        users, replicas, samples = cell.get("users"), cell.get("replicas"), cell.get("samples_ms")
        if not (isinstance(users, int) and users > 0 and isinstance(replicas, int) and replicas > 0):
            raise DatasetError(f"{where}: users={users!r} and replicas={replicas!r} must be positive integers")
        if not isinstance(samples, list) or len(samples) != n:
            raise DatasetError(f"{where} ({users} users, {replicas} replicas): samples_ms must be a list of "
                               f"{n} numbers or nulls")
        for k, v in enumerate(samples):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or v < 0):
                raise DatasetError(f"{where} ({users} users, {replicas} replicas): samples_ms[{k}]={v!r} is not a "
                                   f"latency in ms")
        if (users, replicas) in cells:
            raise DatasetError(f"{where}: the cell ({users} users, {replicas} replicas) appears twice")
        cells[(users, replicas)] = tuple(None if v is None else float(v) for v in samples)
    name = str(data.get("dataset") or Path(origin).stem)
    return P95Recording(name=name, cells=cells, samples_per_cell=n, provenance=str(data.get("provenance", "")),
                        origin=origin)


