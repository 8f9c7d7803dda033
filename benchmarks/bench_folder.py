"""The size of a run folder (target: the default ``scalelab compare`` folder <= 20 MB).

Runs ``compare`` (the quick start's evaluation-week day, every policy, ``--runs``) through
``run_experiment`` with its report, then prints, in the same run:

* the folder's size and its largest files;
* ``steps.parquet`` as written (:func:`scalelab.experiments.runfolder.write_steps`) beside
  the same frame written the way folders were before (``DataFrame.to_parquet``: every
  column float64 or int64, snappy), and the policy states beside plain JSON;
* that reading the folder back (:func:`scalelab.read_steps`) gives the run's own frame and
  summary.

    python benchmarks/bench_folder.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from scalelab import load_config, read_steps, run_experiment
from scalelab.agent.base import read_state_file
from scalelab.experiments.config import config_path
from scalelab.experiments.metrics import summarize

MB = 1e6


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(config_path("compare"), runs=args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_experiment(cfg, out=tmp, progress=False)
        folder = res.path
        total = size(folder)
        print(f"compare, {args.runs} runs, {len(cfg.policies)} policies, {len(res.steps):,} rows: folder "
              f"{total / MB:.1f} MB (target <= 20 MB)")
        for f in sorted(folder.iterdir(), key=size, reverse=True)[:5]:
            print(f"  {f.name:20s} {size(f) / MB:6.2f} MB")
        old = Path(tmp) / "old-steps.parquet"
        res.steps.to_parquet(old, index=False)
        new = size(folder / "steps.parquet")
        print(f"steps.parquet: {new / MB:.1f} MB; as folders wrote it before (float64/int64, snappy) "
              f"{size(old) / MB:.1f} MB ({size(old) / new:.1f}x)")
        states = sorted((folder / "policies").glob("*.json.gz"))
        plain = sum(len(json.dumps(read_state_file(f))) for f in states)
        print(f"policies/: {size(folder / 'policies') / MB:.2f} MB gzip; plain JSON {plain / MB:.2f} MB")
        back = read_steps(folder)
        pd.testing.assert_frame_equal(back, res.steps, check_exact=True)
        pd.testing.assert_frame_equal(summarize(back, cfg), res.summary, check_exact=True)
        print("read back: the run's own steps and summary, exactly")


if __name__ == "__main__":
    main()
