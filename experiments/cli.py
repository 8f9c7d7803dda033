"""``scalelab``: a thin shim over the library (every command is one library call).

Examples::

    scalelab compare                      # evaluation week on the simulator, every policy
    scalelab run experiments/configs/step-demo.yaml --runs 3 --seed 1
    scalelab run CONFIG --resume runs/step-demo-20261123-101500
    scalelab report runs/step-demo-20261123-101500
    scalelab workload show evaluation-week-v1 --out week.png
    scalelab calibrate --out calibration.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalelab.orchestrator.errors import ScalelabError, UserError

EPILOG = __doc__.split("Examples::", 1)[1]


def _config_path(name: str) -> Path:
    from scalelab.experiments.config import config_path

    return config_path(name)


def cmd_run(args) -> int:
    from scalelab.experiments.runner import run_experiment

    overrides = {k: v for k, v in (("runs", args.runs), ("seed", args.seed)) if v is not None}
    if args.resume:
        result = run_experiment(None, resume=args.resume, workers=args.workers, command=_command())
    else:
        from scalelab.experiments.config import load_config

        cfg = load_config(_config_path(args.config), **overrides)
        result = run_experiment(cfg, out=args.out, workers=args.workers, command=_command())
    print(result.table())
    print(f"\nrun folder: {result.path}  ({result.seconds:.1f} s)")
    print(f"report:     {result.path / 'report.html'}")
    return 0


def cmd_capacity(args) -> int:
    import json

    from scalelab.experiments.capacity import load_test
    from scalelab.experiments.config import load_config

    overrides = {"seed": args.seed} if args.seed is not None else {}
    cfg = load_config(_config_path(args.config), **overrides)
    table = load_test(cfg, args.students, args.steps)
    print(f"# load test of {cfg.name}: fewest replicas whose steady-state p95 <= {cfg.slo_ms:g} ms over "
          f"{args.steps} steps of {cfg.step_seconds:g} s ({cfg.engine})")
    for students, replicas in table:
        print(f"#   {students:5d} students -> {replicas} replicas")
    print("capacity: " + json.dumps(table))
    return 0


def cmd_anticipation(args) -> int:
    from scalelab.experiments.anticipation import run_anticipation

    folder = run_anticipation(out=args.out, runs=args.runs, variant_runs=args.variant_runs, only=args.only,
                              workers=args.workers)
    print((folder / "anticipation.md").read_text())
    print(f"comparison: {folder / 'comparison.html'}")
    return 0


def cmd_compare(args) -> int:
    args.config = "compare"
    args.resume = None
    return cmd_run(args)


def cmd_report(args) -> int:
    """One folder: rewrite its figures and report. Several: also one report comparing them."""
    from scalelab.experiments.report import folder_summary, write_comparison, write_report

    folders = [Path(d) for d in args.dirs]
    for d in folders:  # every folder checked before any work
        folder_summary(d)
    for d in folders:
        print(f"report:     {write_report(d)}")
    if len(folders) > 1:
        out = Path(args.out) if args.out else folders[0].parent / ("comparison-" + "-vs-".join(d.name for d in folders))[:120]
        print(f"comparison: {write_comparison(folders, out)}")
        if len(folders) == 2:  # two runs of one config (a simulated and a live one, say): step by step
            from scalelab.experiments.twin import twin_report

            live = {d: "backend: live" in (d / "config.yaml").read_text() for d in folders}
            sim, measured = sorted(folders, key=lambda d: live[d])
            md = twin_report(sim, measured, out)
            print(md.read_text())
            print(f"twin:       {md}")
    return 0


def cmd_twin(args) -> int:
    """One config on the simulator and on the live stack, then the twin report."""
    from dataclasses import replace

    from scalelab.experiments.config import load_config
    from scalelab.experiments.live import run_live
    from scalelab.experiments.runner import run_experiment
    from scalelab.experiments.twin import twin_report

    cfg = load_config(_config_path(args.config))
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    sim = run_experiment(replace(cfg, backend="sim"), out=args.out, command=_command())
    print(f"simulated: {sim.path} ({sim.seconds:.1f} s)")
    if args.live:  # a live run made before (the simulator recalibrated since, say)
        live_path = Path(args.live)
    else:
        live = run_live(replace(cfg, backend="live"), out=args.out, command=_command())
        print(f"live: {live.path} ({live.seconds:.1f} s)")
        live_path = live.path
    md = twin_report(sim.path, live_path)
    print(md.read_text())
    print(f"twin report: {md}")
    return 0


def _parse_params(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param {item!r} must be KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def cmd_list(args) -> int:
    """Shipped configs, workloads (with their parameters), policies, rewards and the
    paper's experiments; plug-ins installed through entry points are included."""
    from scalelab.experiments.config import config_path, load_config, shipped_configs

    want = args.what
    if want in ("all", "configs"):
        print("configs (scalelab run NAME):")
        for name in shipped_configs():
            cfg = load_config(config_path(name))
            print(f"  {name:26s} {cfg.backend:6s} {cfg.workload.get('kind')}, {len(cfg.policies)} policies")
    if want in ("all", "workloads"):
        _print_workloads()
    if want in ("all", "policies"):
        from scalelab.agent.registry import factory_of, policy_names

        print("policies (policies: [{name: NAME, ...}], or 'package.module:Class' of your own):")
        for name in policy_names():
            print(f"  {name:20s} {_first_sentence(factory_of(name))}")
    if want in ("all", "rewards"):
        from scalelab.agent.rewards import reward_names

        print("rewards (reward: {name: NAME}):", ", ".join(reward_names()))
    if want in ("all", "paper"):
        from scalelab.experiments.paper import EXPERIMENTS

        print("paper experiments (scalelab paper --only NAME):", ", ".join(EXPERIMENTS))
    return 0


def _first_sentence(obj, width: int = 96) -> str:
    """The first sentence of an object's docstring (its module's if it has none)."""
    import inspect
    import re

    doc = inspect.getdoc(obj) or inspect.getdoc(inspect.getmodule(obj)) or ""
    para = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
    sentence = re.split(r"(?<=[.:])\s(?=[A-Z])", para, maxsplit=1)[0].rstrip(":")
    return sentence if len(sentence) <= width else sentence[: width - 1] + "…"


def _print_workloads() -> None:
    from scalelab.injector.workloads import workload_names, workload_params

    print("workloads (workload: {kind: NAME, ...}; any also takes time_compression, user_scale):")
    for name in workload_names():
        params = workload_params(name)
        print(f"  {name:20s} {', '.join(params) if params is not None else '(any parameters)'}")


def cmd_workload_show(args) -> int:
    if not args.name:
        _print_workloads()
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from scalelab.injector.workloads import WorkloadError, make_workload

    try:
        wl = make_workload({"kind": args.name, **_parse_params(args.param)})
    except WorkloadError as exc:
        raise UserError(f"{exc}") from None
    series = wl.series(args.step)
    t_h = np.arange(series.shape[0]) * args.step / 3600.0
    unit = "users" if wl.loop == "closed" else "req/s"
    print(f"workload      {wl.name} ({wl.loop}-loop, {unit})")
    print(f"duration      {wl.duration_s:.0f} s ({wl.duration_s / 3600:.2f} h), {series.shape[0]} steps of {args.step:g} s")
    print(f"min/mean/max  {series.min():.1f} / {series.mean():.1f} / {series.max():.1f} {unit}")
    print(f"p50/p95/p99   {np.percentile(series, 50):.1f} / {np.percentile(series, 95):.1f} / {np.percentile(series, 99):.1f}")
    if wl.think_s is not None:
        print(f"think time    uniform {wl.think_s[0]:g}..{wl.think_s[1]:g} s")
    out = Path(args.out or f"{wl.name}.png")
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(t_h, series, lw=0.8)
    ax.set_xlabel("time (h)")
    ax.set_ylabel(unit)
    ax.set_title(wl.name)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"plot          {out}")
    return 0


def cmd_calibrate(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from scalelab.simulator.calibration import calibrate, paper_table
    from scalelab.simulator.models import find_profile

    app = find_profile(args.profile)
    if args.engine == "fluid":
        return _calibrate_fluid(app, args, plt)
    if args.against == "samples" or args.dataset:
        return _calibrate_samples(app, args, plt)
    n = len(paper_table(args.min_steps))
    with tqdm(total=n, desc="calibrate", unit="cell") as bar:
        res = calibrate(app, min_steps=args.min_steps, steps=args.steps, seed=args.seed, progress=bar.update)
    t = res.table
    for row in t.itertuples():
        print(f"{row.users:3d} users {row.containers:2d} replicas  paper {row.mean_p95_ms:7.1f} ms  "
              f"sim {row.sim_p95_ms:7.1f} ms  {row.error:+6.1%}")
    print(f"median |error| {res.median_abs_error:.1%}, max |error| {res.max_abs_error:.1%} "
          f"over {n} cells with >= {args.min_steps} steps")
    out = Path(args.out)
    fig, ax = plt.subplots(figsize=(8, 5))
    for reps, g in t.groupby("containers"):
        line = ax.plot(g.users, g.mean_p95_ms, "o-", label=f"paper, {reps} replicas")[0]
        ax.plot(g.users, g.sim_p95_ms, "x--", color=line.get_color(), label=f"sim, {reps} replicas")
    ax.set_yscale("log")
    ax.set_xlabel("users")
    ax.set_ylabel("mean p95 (ms)")
    ax.set_title(f"profile {args.profile}: median |error| {res.median_abs_error:.1%}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    t.to_csv(out.with_suffix(".csv"), index=False)
    print(f"plot {out}, table {out.with_suffix('.csv')}")
    return 0


def _calibrate_samples(app, args, plt) -> int:
    """The simulator against measured p95 samples per cell (the paper's D1, or a
    recorded dataset with ``--dataset``): quantiles and the fraction above the SLO;
    with ``--fit N``, a random search of N profiles first, the best saved by name."""
    from scalelab.simulator.calibration import (
        calibrate_samples,
        compare_cells,
        dataset_cells,
        dataset_utilization,
        fit_profile,
    )
    from scalelab.simulator.datasets import read_dataset_meta
    from scalelab.simulator.models import save_profile
    from scalelab.simulator.replay import load_dataset

    if args.dataset:
        frame = load_dataset(args.dataset)
        meta = read_dataset_meta(args.dataset)
        if meta.replica:  # the profile on the replicas the dataset was measured on
            app = app.with_overrides(**meta.replica)
        slo = args.slo_ms or meta.slo_ms
        used = dataset_utilization(frame)

        def score(a):
            return compare_cells(a, dataset_cells(frame), meta.cluster_settings(), meta.context, steps=args.steps,
                                 seed=args.seed, slo_ms=slo, utilization=used)
        label = f"dataset {Path(args.dataset).name} ({meta.source or 'recorded'})"
    else:
        slo = 600.0

        def score(a):
            return calibrate_samples(a, steps=args.steps, seed=args.seed)
        label = "the paper's D1 samples"
    before = score(app)
    res = before
    if args.fit:
        from tqdm.auto import tqdm

        with tqdm(total=args.fit, desc="fit", unit="profile") as bar:
            app, res, _ = fit_profile(app, score, candidates=args.fit, seed=args.seed, progress=bar.update)
        name = args.save or f"{args.profile}-fitted"
        from dataclasses import replace

        app = replace(app, name=name)
        print(f"fitted profile saved: {save_profile(app)} (use it as app: {{profile: {name}}})")
    t = res.table
    for r in t.itertuples():
        print(f"{r.users:3d} users {r.replicas:2d} replicas  q50 data {r.data_q50:7.1f} sim {r.sim_q50:7.1f}  "
              f"q90 data {r.data_q90:7.1f} sim {r.sim_q90:7.1f}  above {slo:g} ms data {r.data_above:4.2f} "
              f"sim {r.sim_above:4.2f}{'  (saturated)' if r.saturated else ''}")
    n_ok = int((~t.saturated).sum())
    if args.fit:
        print(f"before the fit: median |quantile error| {before.median_q_error:.1%}, worst {before.worst_q_error:.1%}")
    print(f"against {label} ({n_ok} cells not saturated of {len(t)}): |quantile error| median "
          f"{res.median_q_error:.1%}, worst {res.worst_q_error:.1%}; |error of the fraction above {slo:g} ms| "
          f"mean {res.mean_above_error:.3f}, worst {res.worst_above_error:.3f}")
    print(f"against the means (the old criterion, same cells): median |error| {res.mean_error:.1%}")
    out = Path(args.out)
    plot_calibration(t, slo, f"profile {app.name} against {label}: |quantile error| median "
                     f"{res.median_q_error:.1%}, worst {res.worst_q_error:.1%}", out, plt)
    t.to_csv(out.with_suffix(".csv"), index=False)
    print(f"plot {out}, table {out.with_suffix('.csv')}")
    return 0


def plot_calibration(t, slo: float, title: str, out: Path, plt) -> None:
    """Per cell: measured and simulated p95 quantiles (q10-q90 bars, q50 dots), and the
    fraction of samples above the SLO, measured against simulated."""
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    x = np.arange(len(t))
    left.vlines(x - 0.15, t.data_q10, t.data_q90, color="C0", lw=3, label="measured, q10-q90")
    left.plot(x - 0.15, t.data_q50, "o", color="C0", ms=4, label="measured, median")
    left.vlines(x + 0.15, t.sim_q10, t.sim_q90, color="C1", lw=3, label="simulator, q10-q90")
    left.plot(x + 0.15, t.sim_q50, "o", color="C1", ms=4, label="simulator, median")
    for i in np.flatnonzero(t.saturated.to_numpy()):
        left.axvspan(i - 0.5, i + 0.5, color="grey", alpha=0.12, lw=0)
    left.axhline(slo, color="grey", ls=":", label=f"SLO {slo:g} ms")
    left.set_yscale("log")
    left.set_xticks(x, [f"{u}/{r}" for u, r in zip(t.users, t.replicas, strict=True)], rotation=90, fontsize=7)
    left.set_xlabel("users / replicas (grey: saturated)")
    left.set_ylabel("p95 per step (ms)")
    left.legend(fontsize=8)
    right.plot([0, 1], [0, 1], color="grey", ls=":")
    right.scatter(t.data_above, t.sim_above, s=18)
    for r in t.itertuples():
        if 0 < r.data_above < 1 or 0 < r.sim_above < 1:
            right.annotate(f"{r.users}/{r.replicas}", (r.data_above, r.sim_above), fontsize=8)
    right.set_xlabel(f"measured: fraction of steps above {slo:g} ms")
    right.set_ylabel(f"simulator: fraction above {slo:g} ms")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _calibrate_fluid(app, args, plt) -> int:
    """The fluid engine against the discrete-event one, on scalelab.simulator.fluid.GRID for each
    demand kind: p95 and RPS per cell, utilisation, and the cells outside 15 % / 5 %."""
    import pandas as pd

    from scalelab.simulator.fluid import GRID, validate
    from scalelab.simulator.models import DEMAND_KINDS

    rows = []
    for kind in DEMAND_KINDS:
        for r in validate(app.with_overrides(demand={"kind": kind}), list(GRID), steps=args.steps // 4,
                          seed=args.seed):
            rows.append({"demand": kind, **r})
    t = pd.DataFrame(rows)
    t["p95_error"] = t.fluid_p95_ms / t.des_p95_ms - 1
    t["rps_error"] = t.fluid_rps / t.des_rps - 1
    t["checked"] = t.utilization < 0.9
    t["within"] = (t.p95_error.abs() <= 0.15) & (t.rps_error.abs() <= 0.05)
    for r in t.itertuples():
        flag = "" if not r.checked else ("ok" if r.within else "MISS")
        print(f"{r.demand:11s} {r.users:3d} users {r.replicas:2d} replicas  util {r.utilization:4.2f}  "
              f"p95 des {r.des_p95_ms:8.1f} fluid {r.fluid_p95_ms:8.1f} ({r.p95_error:+6.1%})  "
              f"rps {r.rps_error:+5.1%}  {flag}")
    checked = t[t.checked]
    print(f"{int(checked.within.sum())} of {len(checked)} cells below 0.9 utilisation within 15 % (p95) and "
          f"5 % (RPS); median |p95 error| {checked.p95_error.abs().median():.1%}")
    out = Path(args.out)
    fig, axes = plt.subplots(1, len(DEMAND_KINDS), figsize=(5 * len(DEMAND_KINDS), 4))
    for ax, (kind, g) in zip(axes, t.groupby("demand", sort=False), strict=True):
        ax.loglog(g.des_p95_ms, g.fluid_p95_ms, "o")
        lim = [min(g.des_p95_ms.min(), g.fluid_p95_ms.min()) * 0.8, max(g.des_p95_ms.max(), g.fluid_p95_ms.max()) * 1.2]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.fill_between(lim, [v * 0.85 for v in lim], [v * 1.15 for v in lim], alpha=0.15, color="green")
        ax.set_title(f"{args.profile}, {kind}")
        ax.set_xlabel("discrete-event p95 (ms)")
        ax.set_ylabel("fluid p95 (ms)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    t.to_csv(out.with_suffix(".csv"), index=False)
    print(f"plot {out}, table {out.with_suffix('.csv')}")
    return 0


def cmd_sweep(args) -> int:
    from scalelab.experiments.sweep import SweepError, parse_grid, run_sweep

    try:
        grid = parse_grid(args.grid)
        res = run_sweep(_config_path(args.config), grid, args.out, executor=args.executor,
                        scheduler=args.scheduler, workers=args.workers, band=args.band,
                        progress=lambda name: print(f"cell done: {name}", flush=True))
    except SweepError as exc:
        print(f"scalelab: error: {exc}", file=sys.stderr)
        return 2
    print((res.path / "leaderboard.md").read_text())
    print(f"{len(res.ran)} cells ran, {len(res.skipped)} already done, {len(res.failed)} failed; "
          f"table {res.path / 'sweep.csv'}")
    for name, reason in res.failed.items():
        print(f"FAILED {name}: {reason} (see {res.path / 'cells' / (name + '.error')})", file=sys.stderr)
    return 1 if res.failed else 0


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"{what} must be integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} must be integers >= 1, got {text!r}")
    return values


def cmd_dataset_record(args) -> int:
    """The paper's collector on the simulator or on the live local stack."""
    from tqdm.auto import tqdm

    from scalelab.experiments.config import load_config
    from scalelab.experiments.episode import resolve
    from scalelab.simulator.datasets import DatasetMeta, write_dataset_meta

    out = Path(args.out)
    users = _int_list(args.users, "--users")
    replicas = _int_list(args.replicas, "--replicas")
    if args.config:
        cfg = load_config(_config_path(args.config))
    else:
        cfg = load_config({"name": "dataset", "seed": args.seed, "app": {"profile": args.profile},
                           "context": {"preset": "paper"}, "workload": {"kind": "constant", "users": max(users)},
                           "cluster": {"think_s": [0, 2]}, "policies": [{"name": "static"}]})
    r = resolve(cfg)
    replica = {k: getattr(r.app, k) for k in ("cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib")}
    meta = DatasetMeta(think_s=(r.cluster.think_low_s, r.cluster.think_high_s), context=r.context,
                       step_s=float(cfg.step_seconds), slo_ms=float(cfg.slo_ms),
                       source=args.backend, config=str(args.config or ""), replica=replica)
    cells = 2 * len(users) * len(replicas)
    with tqdm(total=cells, desc=f"record ({args.backend})", unit="level") as bar:
        if args.backend == "live":
            from scalelab.experiments.collector import record_live

            data = record_live(cfg, users, replicas, args.samples, out, warmup_steps=args.warmup_steps,
                               progress=bar.update)
        else:
            from scalelab.simulator.replay import record_dataset

            data = record_dataset(r.app, users=users, replicas=replicas, samples=args.samples, seed=args.seed,
                                  context=r.context, settings=r.cluster, step_s=float(cfg.step_seconds),
                                  progress=bar.update)
            out.parent.mkdir(parents=True, exist_ok=True)
            data["source"] = "sim"
            data.to_parquet(out, index=False)
    write_dataset_meta(out, meta)
    gaps = int((data.get("missing", "").fillna("") != "").sum()) if "missing" in data else 0
    print(f"{len(data)} samples ({data.users.nunique()} user levels x {data.replicas.nunique()} replica counts "
          f"x {args.samples}; {gaps} with missing signals) -> {out} (+ {out.name}.meta.json)")
    return 0


def cmd_corpus(args) -> int:
    """Build, measure and show the submission corpus."""
    import json

    from scalelab.injector.corpus import build_corpus, load_corpus, save_corpus, summary

    if args.corpus_command == "measure":
        from tqdm.auto import tqdm

        from scalelab.experiments.corpus import measure_corpus

        corpus = build_corpus() if args.rebuild else load_corpus(args.corpus)
        with tqdm(total=len(corpus.programs) * args.repeats, desc="measure", unit="run") as bar:
            measured = measure_corpus(corpus, url=args.url, repeats=args.repeats, progress=bar.update)
        out = save_corpus(measured, args.out)
        print(json.dumps(summary(measured), indent=1))
        print(f"measured on {measured.measured['host']} -> {out}")
        return 0
    corpus = load_corpus(args.corpus)
    print(f"{corpus.name}: {len(corpus.programs)} programs, limits {corpus.limits}")
    for p in corpus.programs:
        times = (corpus.measured or {}).get("cpu_ms", {}).get(p.id, [])
        cpu = f"{sorted(times)[len(times) // 2]:8.1f} ms CPU" if times else "not measured"
        print(f"  {p.id:22s} {p.kind:14s} meant {p.intent:7s} weight {p.weight:.3f}  {cpu}")
    if corpus.measured:
        print(json.dumps(summary(corpus), indent=1))
    return 0


def cmd_paper(args) -> int:
    from scalelab.experiments.paper import EXPERIMENTS, reproduce_paper

    only = tuple(args.only) if args.only else EXPERIMENTS
    reproduce_paper(args.out, runs=args.runs, only=only, d2=args.d2, real_week=args.real_week)
    report = Path(args.out) / "paper-report.md"
    print(report.read_text())
    print(f"report: {report}")
    return 0


def cmd_live(args) -> int:
    import json

    from scalelab.orchestrator.scalers.local import ReplicaSpec
    from scalelab.orchestrator.stack import LocalStack

    if args.live_command == "run":
        from scalelab.experiments.live import run_live

        if not args.config and not args.resume:
            raise UserError("scalelab live run: give a CONFIG or --resume FOLDER")
        res = run_live(_config_path(args.config) if args.config else None, out=args.out, command=_command(),
                       bootstrap=args.bootstrap, resume=args.resume)
        print(res.table())
        print(f"\nrun folder: {res.path}  ({res.seconds:.1f} s)")
        return 0
    stack = LocalStack(Path(args.dir) if args.dir else None)
    if args.live_command == "up":
        spec = ReplicaSpec(cpu_request=args.cpu_request, cpu_limit=args.cpu_limit,
                           memory_request_mib=args.memory_mib, memory_limit_mib=args.memory_mib)
        print(json.dumps(stack.up(replicas=args.replicas, spec=spec), indent=1))
    elif args.live_command == "status":
        print(json.dumps(stack.status(), indent=1))
    elif args.live_command == "scale":
        if not stack.state:
            raise UserError(f"no stack is up in {stack.dir}; run `scalelab live up` first")
        stack.scaler.scale_to(args.replicas)
        print(json.dumps(stack.status(), indent=1))
    else:
        left = stack.down()
        if left:
            print(f"scalelab: error: processes still alive after down: {left}", file=sys.stderr)
            return 1
        print(json.dumps({"up": False, "dir": str(stack.dir)}))
    return 0


def cmd_kafka(args) -> int:
    from scalelab.orchestrator.kafka_embedded import serve

    serve(brokers=args.brokers, seconds=args.seconds)
    return 0


def _command() -> str:
    return "scalelab " + " ".join(sys.argv[1:])


def _with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option's help ends with its default (unless it says it already)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _with_defaults(sub)
        elif action.help and action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
            action.help += f" (default: {action.default})"
    return parser


def build_parser() -> argparse.ArgumentParser:
    from scalelab.experiments.paper import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog="scalelab", description="Horizontal autoscaling with contextual bandits: a testbed.",
        epilog="examples:" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def run_opts(p):
        p.add_argument("--runs", type=int, help="runs per policy (overrides the config)")
        p.add_argument("--seed", type=int, help="root seed (overrides the config)")
        p.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
        p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")

    p = sub.add_parser("run", help="run an experiment config")
    p.add_argument("config", nargs="?", help="a YAML file, or the name of a shipped config")
    p.add_argument("--resume", help="finish the run in this folder without redoing finished episodes")
    run_opts(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("capacity", help="a load test on the simulator: replicas needed per number of students "
                                        "(the capacity table of the calendar policies)")
    p.add_argument("config", help="a YAML file, or the name of a shipped config")
    p.add_argument("--students", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300, 400, 500],
                   help="student counts to test")
    p.add_argument("--steps", type=int, default=60, help="steps measured per (students, replicas) cell")
    p.add_argument("--seed", type=int, help="root seed (overrides the config)")
    p.set_defaults(func=cmd_capacity)

    p = sub.add_parser("anticipation", help="anticipation against reaction: the 5-day evaluation week and three "
                                            "held-out calendars, with the comparison and the targets")
    p.add_argument("--runs", type=int, help="runs per policy on every calendar (default: the config's 10 on the "
                                           "default week, --variant-runs on the others)")
    p.add_argument("--variant-runs", type=int, default=5, help="runs per policy on the held-out calendars")
    p.add_argument("--only", nargs="+", choices=["default", "moved", "resized", "noisy"],
                   help="calendars to run (default: all four)")
    p.add_argument("--out", default="runs", help="parent folder of the run folders")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.set_defaults(func=cmd_anticipation)

    p = sub.add_parser("compare", help="the quick start: evaluation week on the simulator, every policy")
    run_opts(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="(re)write the figures and report.html of run folders; with several, "
                                      "also one report comparing them")
    p.add_argument("dirs", nargs="+", metavar="RUN_FOLDER",
                   help="finished run folders; with two or more, also comparison.html (a simulated and a live "
                        "run: also their twin report)")
    p.add_argument("--out", help="with several folders: the comparison's folder (default: "
                                 "comparison-A-vs-B beside the first folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("twin", help="run a config on the simulator and on the live stack, then compare them")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. live-evaluation-week)")
    p.add_argument("--runs", type=int, help="runs per policy on each backend (default: the config's)")
    p.add_argument("--out", default="runs", help="parent folder of the two run folders (default: runs)")
    p.add_argument("--live", metavar="FOLDER", help="compare with this live run folder instead of running live")
    p.set_defaults(func=cmd_twin)

    p = sub.add_parser("workload", help="workloads")
    wsub = p.add_subparsers(dest="workload_command", required=True)
    w = wsub.add_parser("show", help="plot a workload and print its statistics")
    w.add_argument("name", nargs="?", help="a workload kind (without it: the list of workloads and their parameters)")
    w.add_argument("--param", action="append", help="KEY=VALUE (YAML value), repeatable; e.g. days=2")
    w.add_argument("--step", type=float, default=5.0, help="sampling step, s (default 5)")
    w.add_argument("--out", help="PNG path (default NAME.png)")
    w.set_defaults(func=cmd_workload_show)

    p = sub.add_parser("paper", help="run the HSLinUCB paper's experiments and print ours beside its tables")
    p.add_argument("--out", default="runs/paper", help="folder of the experiments' run folders and paper-report.md")
    p.add_argument("--d2", help="a second recording for the unseen hot start, in paper-D1-p95.json's format "
                                "(default: sim-D2, the simulator's stand-in; the report says so)")
    p.add_argument("--real-week", help="another real-week pattern file (default: the paper's, shipped)")
    p.add_argument("--runs", type=int, help="runs per policy (default: the paper's 10)")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="EXPERIMENT",
                   help=f"a subset of the experiments: {', '.join(EXPERIMENTS)} (default: all; a hot start brings "
                        "its cold start)")
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("live", help="the local live data plane: Kafka, Prometheus, HAProxy, sandbox replicas")
    lsub = p.add_subparsers(dest="live_command", required=True)
    for name, text in (("up", "bring the stack up"), ("status", "print one JSON document about the stack"),
                       ("scale", "set the replica count"), ("down", "stop everything, leave no process")):
        lp = lsub.add_parser(name, help=text)
        lp.add_argument("--dir", help="state folder (default $SCALELAB_LIVE_DIR or ~/.scalelab/live)")
        if name in ("up", "scale"):
            lp.add_argument("--replicas", type=int, default=1, help="sandbox replicas")
        if name == "up":
            lp.add_argument("--cpu-request", type=float, default=0.5, help="cores (the paper: 0.5)")
            lp.add_argument("--cpu-limit", type=float, default=0.5, help="cores, enforced by a CFS quota")
            lp.add_argument("--memory-mib", type=int, default=512, help="memory request and limit per replica, MiB")
        lp.set_defaults(func=cmd_live)
    lp = lsub.add_parser("run", help="run a backend: live experiment on a local stack brought up for it, "
                                     "or on a cluster whose orchestrator and injector listen on --bootstrap")
    lp.add_argument("config", nargs="?", help="a YAML file (backend: live), or the name of a shipped config "
                                              "(e.g. live-evaluation-week)")
    lp.add_argument("--out", default="runs", help="parent folder of the run folder")
    lp.add_argument("--resume", help="a live run folder to finish: done episodes are kept, the others continue")
    lp.add_argument("--bootstrap", help="Kafka of a running testbed (e.g. kafka:9092 in k8s/): no local stack")
    lp.set_defaults(func=cmd_live)

    p = sub.add_parser("sweep", help="run config variants x seeds (a grid) locally or on a Dask cluster")
    p.add_argument("config", help="a YAML file, or the name of a shipped config (e.g. compare)")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="a dotted config key (or seed, or policy) and its values; repeatable")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: processes on this machine; dask: a Dask cluster (--scheduler)")
    p.add_argument("--scheduler", help="the Dask scheduler's address (executor dask), e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, help="local processes (default: one per core)")
    p.add_argument("--out", default="runs/sweep", help="the sweep's folder: cells/, sweep.csv, leaderboard.md")
    p.add_argument("--band", type=float, default=0.1, help="relative band of 'equal' cost or violations (0.1: 10 %%)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("kafka", help="start an embedded Kafka-protocol broker (librdkafka mock) and print its address")
    p.add_argument("--brokers", type=int, default=1, help="brokers of the mock cluster")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C / SIGTERM)")
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("dataset", help="datasets for the replay backend")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    d = dsub.add_parser("record", help="record p95 and the context by users x replicas (the paper's collector)")
    d.add_argument("--backend", default="sim", choices=["sim", "live"],
                   help="sim: the simulator; live: a local stack brought up for the recording (default: sim)")
    d.add_argument("--config", help="take the app, request mix (/compute or corpus students), think time and "
                                    "context from this config (default: the paper's, with --profile)")
    d.add_argument("--profile", default="paper", help="app profile without --config (default: paper)")
    d.add_argument("--users", default="5,10,15,20,25,30,35,40,45,50", help="user levels (default: 5..50 by 5)")
    d.add_argument("--replicas", default="1,2,3,4,5,6,7,8,9,10", help="replica counts (default: 1..10)")
    d.add_argument("--seed", type=int, default=1, help="the simulator's seed (default 1)")
    d.add_argument("--samples", type=int, default=20, help="samples per (users, replicas) cell (default 20)")
    d.add_argument("--warmup-steps", type=int, default=2, help="live: steps skipped after each level (default 2)")
    d.add_argument("--out", required=True, help="Parquet file to write (its settings go to FILE.meta.json)")
    d.set_defaults(func=cmd_dataset_record)
    p = sub.add_parser("corpus", help="the submission corpus: show it, or measure it on a live sandbox")
    csub = p.add_subparsers(dest="corpus_command", required=True)
    c = csub.add_parser("show", help="the programs, their kinds and measured CPU times")
    c.add_argument("corpus", nargs="?", default="v1", help="v1 (shipped) or a corpus file (default: v1)")
    c.set_defaults(func=cmd_corpus)
    c = csub.add_parser("measure", help="run every program through POST /run and store the CPU times")
    c.add_argument("corpus", nargs="?", default="v1", help="v1 (shipped) or a corpus file (default: v1)")
    c.add_argument("--rebuild", action="store_true", help="measure the programs of the code (scalelab.injector.corpus) "
                                                          "instead of the file's")
    c.add_argument("--url", help="a sandbox service (default: a one-replica local stack brought up for it)")
    c.add_argument("--repeats", type=int, default=5, help="runs of each program (default 5)")
    c.add_argument("--out", required=True, help="the measured corpus file to write")
    c.set_defaults(func=cmd_corpus)

    p = sub.add_parser("calibrate", help="draw the simulator against the paper's D1 samples (or its table of means)")
    p.add_argument("--against", choices=["samples", "means"], default="samples",
                   help="samples: the paper's D1 p95 samples per cell (quantiles, fraction above 600 ms); "
                        "means: the logged per-cell means (selection-biased)")
    p.add_argument("--profile", default="paper", help="a built-in profile, a saved one or a .json (default: paper)")
    p.add_argument("--dataset", help="a recorded dataset (scalelab dataset record) instead of the paper's samples")
    p.add_argument("--fit", type=int, default=0, help="search this many profiles around --profile, save the best")
    p.add_argument("--save", help="name of the fitted profile (default PROFILE-fitted), usable as app: {profile: NAME}")
    p.add_argument("--slo-ms", type=float, help="the SLO for the fraction above it (default: the dataset's)")
    p.add_argument("--min-steps", type=int, default=100, help="cells measured on at least this many steps")
    p.add_argument("--steps", type=int, default=150, help="simulated 5 s steps per cell")
    p.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    p.add_argument("--out", default="calibration.png", help="the figure (PNG); its table goes beside it as .csv")
    p.add_argument("--engine", choices=["des", "fluid"], default="des",
                   help="des: against the paper's table; fluid: the fluid engine against the discrete-event one")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("list", help="what is shipped and installed: configs, workloads, policies, rewards, the "
                                    "paper's experiments")
    p.add_argument("what", nargs="?", default="all", choices=["all", "configs", "workloads", "policies", "rewards", "paper"],
                   help="one listing")
    p.set_defaults(func=cmd_list)
    return _with_defaults(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and not args.config and not args.resume:
        parser.error("run needs a CONFIG or --resume DIR")
    try:
        return args.func(args)
    except ScalelabError as exc:  # only the project's own errors: a bug keeps its traceback
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"scalelab: error: {msg}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
