"""Where the time goes in the commands that run episodes: ``scalelab compare``, ``scalelab
paper`` and ``scalelab anticipation``, each in one process (``workers=1``) under
cProfile, split into the parts of a run:

* **oracle**: the fewest replicas per load level (``episode.oracle_levels``);
* **engine**: the simulated cluster advancing (``SimCluster.run_to``, ``FluidCluster.step``,
  the replay's draws), what the backend's ``observe`` and ``settle`` spend in it;
* **observation**: the rest of ``observe``/``settle`` (pod samples, the context);
* **policies**: ``decide`` and ``update`` as ``StepLoop.run`` calls them;
* **loop**: the rest of ``StepLoop.run`` (orders, the clock, rewards, the record);
* **recording**: rows and chunks as the episode goes (``records_frame``, ``Part``) and
  ``steps.parquet`` with the summary at the end (``runfolder.finish``);
* **report**: figures and ``report.html`` (``write_report``, ``write_comparison``);
* **other**: the rest (configs, imports, process start).

Shares of one process's time, so they hold on a busy machine too; the wall times are
only indicative there (cProfile adds its own cost, most to the many small calls).

    python benchmarks/profile_commands.py [--only compare paper anticipation] [--runs 1]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path


def _entries(stats: pstats.Stats) -> dict:
    return stats.stats  # {(file, line, name): (cc, nc, tt, ct, callers)}


def _cum(stats, file_end: str, name: str, caller: tuple[str, str] | None = None) -> float:
    """Cumulative seconds of ``name`` in a file ending in ``file_end`` (all such
    functions), counting only calls from ``caller`` (file end, name) when given."""
    total = 0.0
    for (file, _, fn), (_, _, _, ct, callers) in _entries(stats).items():
        if fn != name or not file.endswith(file_end):
            continue
        if caller is None:
            total += ct
        else:
            total += sum(c[3] for (cf, _, cn), c in callers.items() if cn == caller[1] and cf.endswith(caller[0]))
    return total


def split(stats: pstats.Stats, wall: float) -> dict[str, float]:
    """The parts above, s."""
    loop = ("agent/loop.py", "run")
    run = _cum(stats, "agent/loop.py", "run")
    policies = _cum(stats, ".py", "decide", loop) + _cum(stats, ".py", "update", loop)
    observe = sum(_cum(stats, "backends.py", n) for n in ("observe", "settle"))
    engine = (_cum(stats, "simulator/cluster.py", "run_to") + _cum(stats, "simulator/fluid.py", "step")
              + _cum(stats, "simulator/replay.py", "draw") + _cum(stats, "simulator/replay.py", "sample"))
    oracle = _cum(stats, "experiments/episode.py", "oracle_levels")
    engine_in_run = max(0.0, engine - _cum(stats, "simulator/oracle.py", "run_to"))
    recording = (_cum(stats, "experiments/episode.py", "records_frame") + _cum(stats, "experiments/runfolder.py", "write_chunk")
                 + _cum(stats, "experiments/runfolder.py", "finish"))
    report = _cum(stats, "experiments/report.py", "write_report") + _cum(stats, "experiments/report.py",
                                                                         "write_comparison")
    parts = {"oracle": oracle, "engine": min(engine_in_run, observe), "observation": max(0.0, observe - engine_in_run),
             "policies": policies, "loop": max(0.0, run - policies - observe), "recording": recording,
             "report": report}
    parts["other"] = max(0.0, wall - sum(parts.values()))
    return parts


def profile(label: str, work) -> None:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    work()
    prof.disable()
    wall = time.perf_counter() - t0
    parts = split(pstats.Stats(prof), wall)
    print(f"{label}: {wall:.1f} s in one process under cProfile")
    for name, s in parts.items():
        print(f"  {name:12s} {s:7.1f} s  {s / wall:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="+", default=["compare", "paper", "anticipation"])
    ap.add_argument("--runs", type=int, default=1, help="runs per policy (compare, paper, anticipation's week)")
    args = ap.parse_args()
    from scalelab import load_config, run_experiment
    from scalelab.experiments.anticipation import run_anticipation
    from scalelab.experiments.config import config_path
    from scalelab.experiments.paper import reproduce_paper

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "compare" in args.only:
            cfg = load_config(config_path("compare"), runs=args.runs)
            profile(f"compare ({args.runs} run(s))", lambda: run_experiment(cfg, out=out, progress=False, workers=1))
        if "paper" in args.only:
            profile(f"paper ({args.runs} run(s) per experiment)",
                    lambda: reproduce_paper(out=out / "paper", runs=args.runs, progress=False, workers=1))
        if "anticipation" in args.only:
            profile(f"anticipation (the default week, {args.runs} run(s))",
                    lambda: run_anticipation(out=out, runs=args.runs, only=["default"], workers=1, progress=False))


if __name__ == "__main__":
    main()
