"""How much of the twin's distance is the students' draws: the simulated
``live-evaluation-week`` against itself, (a) with the same draws (the same seeds: each
student's think times and programs) and the service perturbed a little, as two live
runs of one seed differ; (b) with other draws (another run's seeds). Prints, for each,
the per-cell p95 quantile distance and the share of minutes whose p95 is within ±10 %
(medians over the runs, or over the pairs of runs), the quantities of the twin's noise
floor (``scalelab.experiments.twin``).

    python scripts/twin_draws.py [--runs 4] [--config live-evaluation-week]

The live runs of a twin share their seed, and so their draws (the injector seeds each
student's generator with the run's seed and the student's number). With the config's
``cluster.students: injector`` the simulator draws them as the injector does, so (b)'s
other seeds are other students drawn so; with ``simulator`` it draws its own. If (a) is
small and (b) is about the simulator's distance to live, that distance is the draws',
not the model's.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import replace

from scalelab.experiments.config import config_path, load_config
from scalelab.experiments.episode import resolve
from scalelab.experiments.experiment import run_experiment
from scalelab.experiments.twin import pair_distances, run_groups

#: The service perturbed as little as a second live run perturbs it (ms of overhead per
#: request, ms of CPU per request), each on its own.
PERTURBATIONS = ({"overhead_ms": 1.0}, {"overhead_ms": 4.0}, {"add_ms": 5.0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--config", default="live-evaluation-week")
    args = ap.parse_args()
    cfg = replace(load_config(config_path(args.config)), backend="sim", runs=args.runs)
    profile = resolve(cfg).app
    with tempfile.TemporaryDirectory() as out:
        base = run_groups(run_experiment(cfg, out=out, progress=False, report=False).path, 1)
        same = [(i, i) for i in range(args.runs)]
        other = list(itertools.combinations(range(args.runs), 2))
        print(f"{'':44s} {'per-cell distance':>18s} {'minutes within 10 %':>20s}")
        cell, minute = pair_distances(base, base, other)
        print(f"{'other draws (pairs of runs)':44s} {cell:18.2f} {minute:20.0%}")
        for change in PERTURBATIONS:
            key, delta = next(iter(change.items()))
            if key == "add_ms":
                changed = replace(cfg.app, demand={**(cfg.app.demand or {}), "add_ms": profile.demand.add_ms + delta})
            else:
                changed = replace(cfg.app, overhead_ms=profile.overhead_ms + delta)
            alt = run_groups(run_experiment(replace(cfg, app=changed), out=out, progress=False, report=False).path, 1)
            cell, minute = pair_distances(alt, base, same)
            print(f"{f'same draws, {key} + {delta:g} ms':44s} {cell:18.2f} {minute:20.0%}")


if __name__ == "__main__":
    main()
