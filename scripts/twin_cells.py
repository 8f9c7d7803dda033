"""Where the simulator and live differ, cell by cell: for each (students, replicas) cell
of the twin's floor, the q10/q50/q90 of the per-step p95 (ms) of every simulated run and
of every shipped live run pooled and their ratio live / sim at q50; then the median q50
ratio by load, and the simulated replicas' CPU (share of their limit) under load (the
shipped live summaries hold no CPU: compare it with a live folder's steps).

    python scripts/twin_cells.py SIM_FOLDER [--config live-evaluation-week]

``SIM_FOLDER``: the simulated run folder ``scalelab twin CONFIG --shipped-live`` made.
"""

from __future__ import annotations

import argparse

import numpy as np

from scalelab.experiments.runfolder import read_steps
from scalelab.experiments.twin import CELL_QUANTILES, read_summary, run_groups, shipped_live_summaries

#: Bands of students per replica the ratios are summarised over.
BANDS = ((0, 8), (9, 19), (20, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sim_folder")
    ap.add_argument("--config", default="live-evaluation-week")
    args = ap.parse_args()
    lives = [read_summary(p) for p in shipped_live_summaries(args.config)]
    sims = run_groups(args.sim_folder, 1)
    print(f"{'cell':>8s} {'steps sim/live':>15s} {'sim q10/q50/q90':>20s} {'live q10/q50/q90':>20s} {'q50 live/sim':>13s}")
    ratios: dict[tuple[int, int], list[float]] = {band: [] for band in BANDS}
    for key in lives[0]["cells"]:
        live = np.concatenate([np.asarray(s["cells"].get(key, []), float) for s in lives])
        sim = np.concatenate([np.asarray(s["cells"].get(key, []), float) for s in sims])
        if len(live) < 10 or len(sim) < 10:
            continue
        qs, ql = np.quantile(sim, CELL_QUANTILES), np.quantile(live, CELL_QUANTILES)
        students, replicas = (int(x) for x in key.split(","))
        ratio = ql[1] / qs[1]
        for band in BANDS:
            if band[0] <= students / replicas <= band[1]:
                ratios[band].append(ratio)
        print(f"{key:>8s} {f'{len(sim)}/{len(live)}':>15s} {'/'.join(f'{x:.0f}' for x in qs):>20s} "
              f"{'/'.join(f'{x:.0f}' for x in ql):>20s} {ratio:13.2f}")
    for (lo, hi), r in ratios.items():
        if r:
            print(f"students per replica {lo}-{hi}: median q50 live / sim {np.median(r):.2f} over {len(r)} cells")
    steps = read_steps(args.sim_folder)
    busy = steps[steps.users >= 20]
    print(f"replicas' CPU / limit, steps with >= 20 students: sim {busy.cpu_limit_ratio.mean():.3f}")


if __name__ == "__main__":
    main()
