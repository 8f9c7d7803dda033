"""``calibrate``: the simulator against the paper's D1 samples, a recorded dataset or the
paper's table of means (with ``--fit``, a search for a better profile, saved by name),
or the fluid engine against the discrete-event one. The analysis, its figures and the
acceptance bands are :mod:`scalelab.experiments.calibration_report`'s."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scalelab.errors import UserError


def cmd_calibrate(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from scalelab.cli._common import refuse_overwrite
    from scalelab.experiments import calibration_report as cr
    from scalelab.simulator.calibration import calibrate, fit_profile
    from scalelab.simulator.models import find_profile, profiles_dir, save_profile

    if args.out is None:  # the two analyses keep their own figures: one never refuses the other's
        args.out = "calibration-fluid.png" if args.engine == "fluid" else "calibration.png"
    out = Path(args.out)
    refuse_overwrite([out, out.with_suffix(".csv")], args.force)
    if args.fit:
        refuse_overwrite([profiles_dir() / f"{args.save or args.profile + '-fitted'}.json"], args.force, "--save")
    app = find_profile(args.profile)
    if args.engine == "fluid":
        t = cr.fluid_against_des(app, steps=args.steps, seed=args.seed)
        lines, files = cr.fluid_lines(t), cr.write_fluid(t, args.profile, args.out)
    elif args.against == "samples" or args.dataset:
        target = (cr.dataset_samples(app, args.dataset, args.steps, args.seed, args.slo_ms) if args.dataset
                  else cr.paper_samples(app, args.steps, args.seed))
        app = target.app
        before = res = target.score(app)
        fitted = []
        if args.fit:
            cpu_range = None if target.cpu is None or args.free_cpu else (target.cpu.low_s, target.cpu.high_s)
            with tqdm(total=args.fit, desc="fit", unit="profile") as bar:
                app, res, tried = fit_profile(app, target.score, candidates=args.fit, seed=args.seed,
                                              progress=bar.update, cpu_range=cpu_range)
            if not any(np.isfinite(c.loss) for c in tried):
                raise UserError(f"--fit: none of the {args.fit} candidates lies in the CPU per request measured "
                                f"beside the samples ({cpu_range[0] * 1000:.0f}-{cpu_range[1] * 1000:.0f} ms) or "
                                f"has a finite loss: search more (--fit), start nearer, or lift the bound (--free-cpu)"
                                if cpu_range else f"--fit: no candidate of the {args.fit} has a finite loss")
            app = replace(app, name=args.save or f"{args.profile}-fitted")
            fitted = cr.fit_lines(app, res, tried, cr.seed_tolerance(target, app, args.seed))
            print(f"fitted profile saved: {save_profile(app)} (use it as app: {{profile: {app.name}}})")
        lines = cr.sample_lines(res, target, before if args.fit else None) + cr.cpu_lines(target, app, res) + fitted
        files = cr.write_samples(res, target, app.name, args.out)
    else:
        from scalelab.simulator.calibration import paper_table

        with tqdm(total=len(paper_table(args.min_steps)), desc="calibrate", unit="cell") as bar:
            res = calibrate(app, min_steps=args.min_steps, steps=args.steps, seed=args.seed, progress=bar.update)
        lines, files = cr.means_lines(res, args.min_steps), cr.write_means(res, args.profile, args.out)
    print("\n".join(lines))
    print(f"plot {files[0]}, table {files[1]}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("calibrate", help="draw the simulator against the paper's D1 samples (or its table of means)")
    p.add_argument("--against", choices=["samples", "means"], default="samples",
                   help="samples: the paper's D1 p95 samples per cell (quantiles, fraction above 600 ms); "
                        "means: the logged per-cell means (selection-biased)")
    p.add_argument("--profile", default="paper", help="a built-in profile, a saved one or a .json (default: paper)")
    p.add_argument("--dataset", help="a recorded dataset (scalelab dataset record) instead of the paper's samples")
    p.add_argument("--fit", type=int, default=0, help="search this many profiles around --profile, save the best")
    p.add_argument("--free-cpu", action="store_true",
                   help="--fit with --dataset: let the CPU per request leave the range measured beside the samples "
                        "(held inside it by default when the dataset measured it)")
    p.add_argument("--save", help="name of the fitted profile (default PROFILE-fitted), usable as app: {profile: NAME}")
    p.add_argument("--slo-ms", type=float, help="the SLO for the fraction above it (default: the dataset's)")
    p.add_argument("--min-steps", type=int, default=100, help="cells measured on at least this many steps")
    p.add_argument("--steps", type=int, default=150, help="simulated 5 s steps per cell")
    p.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    p.add_argument("--out", help="the figure (PNG; default calibration.png, or calibration-fluid.png with "
                                 "--engine fluid); its table goes beside it as .csv")
    p.add_argument("--force", action="store_true", help="replace the figure, its table or a saved profile that exist")
    p.add_argument("--engine", choices=["des", "fluid"], default="des",
                   help="des: against the paper's table; fluid: the fluid engine against the discrete-event one")
    p.set_defaults(func=cmd_calibrate)
