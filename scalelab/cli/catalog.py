"""What is shipped and installed: ``list`` (configs, workloads, policies, rewards, the
paper's experiments; plug-ins from entry points included) and ``workload show``."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli._common import parse_params, refuse_overwrite
from scalelab.errors import UserError


def cmd_list(args) -> int:
    from scalelab.experiments.config import config_path, load_config, shipped_configs

    want = args.what
    if want in ("all", "configs"):
        print("configs (scalelab run NAME):")
        for name in shipped_configs():
            cfg = load_config(config_path(name))
            print(f"  {name:26s} {cfg.backend:6s} {cfg.workload.get('kind')}, {len(cfg.policies)} policies")
    if want in ("all", "workloads"):
        print_workloads()
    if want in ("all", "policies"):
        import textwrap

        from scalelab.agent.registry import factory_of, policy_names

        print(textwrap.fill("policies (policies: [{name: NAME, ...}], or 'package.module:Class' of your own; "
                            "under each, its parameters with their defaults; those the experiment knows -- slo_ms, "
                            "min_replicas, max_replicas, step_seconds -- are taken from it unless given):", 100))
        for name in policy_names():
            factory = factory_of(name)
            print(f"  {name:20s} {first_sentence(factory)}")
            params = parameters_of(factory)
            if params:
                print(textwrap.fill(", ".join(params), 100, initial_indent=" " * 23, subsequent_indent=" " * 23))
    if want in ("all", "rewards"):
        from scalelab.agent.rewards import reward_names

        print("rewards (reward: {name: NAME}):", ", ".join(reward_names()))
    if want in ("all", "paper"):
        from scalelab.experiments.paper import EXPERIMENTS

        print("paper experiments (scalelab paper --only NAME):", ", ".join(EXPERIMENTS))
    return 0


def parameters_of(factory) -> list[str]:
    """``name=default`` of each keyword a policy factory takes (its generator's ``seed``
    left out: the experiment's seed decides it)."""
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable without a readable signature
        return []
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [f"{p.name}={p.default!r}" for p in sig.parameters.values()
            if p.kind in kinds and p.default is not inspect.Parameter.empty and p.name != "seed"]


def first_sentence(obj, width: int = 96) -> str:
    """The first sentence of an object's docstring (its module's if it has none)."""
    import inspect
    import re

    doc = inspect.getdoc(obj) or inspect.getdoc(inspect.getmodule(obj)) or ""
    para = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
    sentence = re.split(r"(?<=[.:])\s(?=[A-Z])", para, maxsplit=1)[0].rstrip(":")
    return sentence if len(sentence) <= width else sentence[: width - 1] + "…"


def print_workloads() -> None:
    from scalelab.injector.workloads import workload_names, workload_params

    print("workloads (workload: {kind: NAME, ...}; any also takes time_compression, user_scale):")
    for name in workload_names():
        params = workload_params(name)
        print(f"  {name:20s} {', '.join(params) if params is not None else '(any parameters)'}")


def cmd_workload_show(args) -> int:
    if not args.name:
        print_workloads()
        return 0
    import numpy as np
    from matplotlib.figure import Figure

    from scalelab.injector.workloads import WorkloadError, make_workload

    try:
        wl = make_workload({"kind": args.name, **parse_params(args.param)})
    except WorkloadError as exc:
        raise UserError(f"{exc}") from None
    out = Path(args.out or f"{wl.name}.png")
    refuse_overwrite([out], args.force)
    series = wl.series(args.step)
    unit = "users" if wl.loop == "closed" else "req/s"
    print(f"workload      {wl.name} ({wl.loop}-loop, {unit})")
    print(f"duration      {wl.duration_s:.0f} s ({wl.duration_s / 3600:.2f} h), {series.shape[0]} steps of {args.step:g} s")
    print(f"min/mean/max  {series.min():.1f} / {series.mean():.1f} / {series.max():.1f} {unit}")
    print(f"p50/p95/p99   {np.percentile(series, 50):.1f} / {np.percentile(series, 95):.1f} / {np.percentile(series, 99):.1f}")
    if wl.think_s is not None:
        print(f"think time    uniform {wl.think_s[0]:g}..{wl.think_s[1]:g} s")
    fig = Figure(figsize=(10, 3))
    ax = fig.subplots()
    ax.plot(np.arange(series.shape[0]) * args.step / 3600.0, series, lw=0.8)
    ax.set_xlabel("time (h)")
    ax.set_ylabel(unit)
    ax.set_title(wl.name)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"plot          {out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("workload", help="workloads")
    wsub = p.add_subparsers(dest="workload_command", required=True)
    w = wsub.add_parser("show", help="plot a workload and print its statistics")
    w.add_argument("name", nargs="?", help="a workload kind (without it: the list of workloads and their parameters)")
    w.add_argument("--param", action="append", help="KEY=VALUE (YAML value), repeatable; e.g. days=2")
    w.add_argument("--step", type=float, default=5.0, help="sampling step, s (default 5)")
    w.add_argument("--out", help="PNG path (default NAME.png)")
    w.add_argument("--force", action="store_true", help="replace the PNG if it exists")
    w.set_defaults(func=cmd_workload_show)

    p = sub.add_parser("list", help="what is shipped and installed: configs, workloads, policies, rewards, the "
                                    "paper's experiments")
    p.add_argument("what", nargs="?", default="all", choices=["all", "configs", "workloads", "policies", "rewards", "paper"],
                   help="one listing")
    p.set_defaults(func=cmd_list)
