"""Data for the simulator and the replay: ``dataset record`` (the paper's collector on
the simulator or on a live stack) and ``corpus show | measure`` (the submission corpus)."""

from __future__ import annotations

import json
from pathlib import Path

from scalelab.cli._common import config_path, int_list
from scalelab.errors import UserError


def cmd_dataset_record(args) -> int:
    """The paper's collector on the simulator or on the live local stack."""
    from tqdm.auto import tqdm

    from scalelab.cli._common import refuse_overwrite
    from scalelab.experiments.config import load_config
    from scalelab.experiments.episode import resolve
    from scalelab.simulator.datasets import DatasetMeta, read_dataset_meta, write_dataset_meta

    out = Path(args.out)
    meta_file, rows_file = out.with_name(out.name + ".meta.json"), out.with_name(out.name + ".rows.jsonl")
    if args.resume and args.backend != "live":
        raise UserError("--resume continues a live recording (--backend live); the simulator's takes seconds")
    if args.resume and not rows_file.is_file():
        raise UserError(f"--resume: no interrupted recording at {rows_file}")
    refuse_overwrite([out] if args.resume else [out, meta_file, rows_file], args.force)
    users = int_list(args.users, "--users")
    replicas = int_list(args.replicas, "--replicas")
    if args.config:
        cfg = load_config(config_path(args.config))
    else:
        cfg = load_config({"name": "dataset", "seed": args.seed, "app": {"profile": args.profile},
                           "context": {"preset": "paper"}, "workload": {"kind": "constant", "users": max(users)},
                           "cluster": {"think_s": [0, 2]}, "policies": [{"name": "static"}]})
    r = resolve(cfg)
    replica = {k: getattr(r.app, k) for k in ("cpu_request", "cpu_limit", "memory_request_mib", "memory_limit_mib")}
    meta = DatasetMeta(think_s=(r.cluster.think_low_s, r.cluster.think_high_s), context=r.context,
                       step_s=float(cfg.step_seconds), slo_ms=float(cfg.slo_ms),
                       source=args.backend, config=str(args.config or ""), replica=replica,
                       grid={"users": list(users), "replicas": list(replicas), "samples": args.samples,
                             "warmup_steps": args.warmup_steps})
    if args.resume and (not meta_file.is_file() or read_dataset_meta(out) != meta):
        raise UserError(f"--resume: {meta_file} does not record the settings asked for now "
                        f"(another config, profile, context or grid of users, replicas, samples and warm-up); "
                        f"record anew with --force")
    write_dataset_meta(out, meta)  # before the first sample: a resumed recording must match it
    cells = 2 * len(users) * len(replicas)
    with tqdm(total=cells, desc=f"record ({args.backend})", unit="level") as bar:
        if args.backend == "live":
            from scalelab.experiments.collector import record_live

            data = record_live(cfg, users, replicas, args.samples, out, warmup_steps=args.warmup_steps,
                               progress=bar.update, resume=args.resume)
        else:
            from scalelab.simulator.datasets import record_dataset

            data = record_dataset(r.app, users=users, replicas=replicas, samples=args.samples, seed=args.seed,
                                  context=r.context, settings=r.cluster, step_s=float(cfg.step_seconds),
                                  progress=bar.update)
            out.parent.mkdir(parents=True, exist_ok=True)
            data["source"] = "sim"
            data.to_parquet(out, index=False)
    gaps = int((data.get("missing", "").fillna("") != "").sum()) if "missing" in data else 0
    print(f"{len(data)} samples ({data.users.nunique()} user levels x {data.replicas.nunique()} replica counts "
          f"x {args.samples}; {gaps} with missing signals) -> {out} (+ {out.name}.meta.json)")
    return 0


def cmd_corpus_show(args) -> int:
    from scalelab.injector.corpus import load_corpus, summary

    corpus = load_corpus(args.corpus)
    print(f"{corpus.name}: {len(corpus.programs)} programs, limits {corpus.limits}")
    for p in corpus.programs:
        times = (corpus.measured or {}).get("cpu_ms", {}).get(p.id, [])
        cpu = f"{sorted(times)[len(times) // 2]:8.1f} ms CPU" if times else "not measured"
        print(f"  {p.id:22s} {p.kind:14s} meant {p.intent:7s} weight {p.weight:.3f}  {cpu}")
    if corpus.measured:
        print(json.dumps(summary(corpus), indent=1))
    return 0


def cmd_corpus_measure(args) -> int:
    from tqdm.auto import tqdm

    from scalelab.cli._common import refuse_overwrite
    from scalelab.experiments.corpus import measure_corpus
    from scalelab.injector.corpus import build_corpus, load_corpus, save_corpus, summary

    refuse_overwrite([args.out], args.force)
    corpus = build_corpus() if args.rebuild else load_corpus(args.corpus)
    with tqdm(total=len(corpus.programs) * args.repeats, desc="measure", unit="run") as bar:
        measured = measure_corpus(corpus, url=args.url, repeats=args.repeats, progress=bar.update)
    out = save_corpus(measured, args.out)
    print(json.dumps(summary(measured), indent=1))
    print(f"measured on {measured.measured['host']} -> {out}")
    return 0


def add_parsers(sub) -> None:
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
    d.add_argument("--force", action="store_true", help="replace the file and its settings if they exist")
    d.add_argument("--resume", action="store_true",
                   help="live: continue an interrupted recording (FILE.rows.jsonl) with the same settings, "
                        "taking only the samples its cells still lack")
    d.set_defaults(func=cmd_dataset_record)

    p = sub.add_parser("corpus", help="the submission corpus: show it, or measure it on a live sandbox")
    csub = p.add_subparsers(dest="corpus_command", required=True)
    c = csub.add_parser("show", help="the programs, their kinds and measured CPU times")
    c.add_argument("corpus", nargs="?", default="v1", help="v1 (shipped) or a corpus file (default: v1)")
    c.set_defaults(func=cmd_corpus_show)
    c = csub.add_parser("measure", help="run every program through POST /run and store the CPU times")
    c.add_argument("corpus", nargs="?", default="v1", help="v1 (shipped) or a corpus file (default: v1)")
    c.add_argument("--rebuild", action="store_true", help="measure the programs of the code (scalelab.injector.corpus) "
                                                          "instead of the file's")
    c.add_argument("--url", help="a sandbox service (default: a one-replica local stack brought up for it)")
    c.add_argument("--repeats", type=int, default=5, help="runs of each program (default 5)")
    c.add_argument("--out", required=True, help="the measured corpus file to write")
    c.add_argument("--force", action="store_true", help="replace the file if it exists")
    c.set_defaults(func=cmd_corpus_measure)
