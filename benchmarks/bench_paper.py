"""``scalelab paper`` end to end on this machine (target: <= 60 s): the four
experiments at the paper's scale (10 runs; cold and hot starts 9000 steps, real week
912), the report; prints each experiment's time and the total, median of ``--repeats``.
The three experiments after the cold start share one pool, so their times overlap: each is
from its folder's making to its last episode's steps.

    python benchmarks/bench_paper.py [--repeats 3]

Each repeat runs in a fresh folder. Run it with another checkout first on PYTHONPATH
for a before figure (an older ``scalelab paper`` may lack the per-experiment times).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once(out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scalelab.cli", "paper", "--out", str(out)], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def experiment_seconds(out: Path) -> dict[str, float]:
    """Each experiment's wall time, from its run folder (config written to summary)."""
    times = {}
    for folder in sorted(p for p in out.iterdir() if (p / "steps.parquet").is_file()):
        start = (folder / "config.yaml").stat().st_mtime
        end = (folder / "steps.parquet").stat().st_mtime
        times[folder.name.rsplit("-", 2)[0]] = end - start
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    walls, parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            out = Path(tmp) / f"paper-{k}"
            walls.append(once(out))
            parts.append(experiment_seconds(out))
            print(f"repeat {k}: {walls[-1]:.1f} s  " + "  ".join(f"{n} {s:.1f} s" for n, s in parts[-1].items()))
    names = parts[0].keys()
    print("median per experiment: " + "  ".join(
        f"{n} {statistics.median(p.get(n, float('nan')) for p in parts):.1f} s" for n in names))
    print(f"scalelab paper: {statistics.median(walls):.1f} s (median of {args.repeats}), target <= 60 s")


if __name__ == "__main__":
    main()
