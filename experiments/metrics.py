"""The summary of a run folder: per policy, the mean over runs ± a 95 % Student-t
interval (``t(0.975, runs − 1) · SD / √runs``; with 3 runs t = 4.30, not 1.96).

Per run (one policy, one run), from its steps:

Every figure is read off each step's **outcome** (``scalelab.agent.loop``: in ``period`` mode the
observation one step after the order, in ``settle`` mode the one after the order took
effect):

violations_per_run     steps whose outcome breaks the SLO: p95 above it (where nothing
                       completed, the p95 of the in-flight requests' ages), or no spans
forced_ups_per_run     steps whose action a rule imposed (the paper's +1 above the SLO)
missing_per_run        steps whose outcome lacked a signal (spans or metrics)
quiet_steps_per_run    steps whose window measured no latency (no span completed, none in
                       flight): their p95 is NaN in steps.parquet, neither a violation nor
                       a p95 of 0 in the means
p95_ms                 mean over the measured steps of the outcome's p95 (quiet steps and
                       steps missing a signal left out), ms
replicas               mean over steps of the ready replicas
replica_hours          sum over steps of ready replicas × step length, replica-hours
scale_changes_per_run  steps whose ordered replica count differs from the previous one
under_share            share of a run's steps with fewer ready replicas than the oracle
                       ordered (under-provisioned); NaN with no oracle
short_replica_steps    sum over a run's steps of the replicas missing below the oracle's,
                       max(oracle − ready, 0): under-provisioning, replica-steps
spare_replica_steps    sum over a run's steps of the replicas above the oracle's,
                       max(ready − oracle, 0): over-provisioning, replica-steps. Kept apart
                       (a signed mean would let the two cancel: a static policy short half
                       the time and spare the other half would show 0)
client_p95_ms          live runs only: mean of the load generator's own p95 (its requests,
                       Locust's timings, over the window and instant of the spans' p95:
                       the orchestrator's ``client`` state), ms, over the steps where both
                       it and the spans measured something;
p95_vs_client          live runs only: the median over those same steps of span p95 /
                       client p95 (1.0 when the orchestrator's p95 is what the users saw;
                       the client's includes the balancer and the network, the spans only
                       the replica's handling). A median of per-step ratios, not a ratio
                       of means: one step of few requests moves a ratio of means.

Each becomes ``{"mean": m, "ci95": t(0.975, runs-1) * std(ddof=1) / sqrt(runs), "low", "high"}``
(ci95 = 0 for one run), where ``low`` and ``high`` are the interval m ∓ ci95 cut at the range
the quantity cannot leave (counts in [0, steps], shares in [0, 1], replicas in [0,
max_replicas], latencies ≥ 0; :func:`metric_ranges`): the true mean lies in that range, so
the cut interval covers it as often as the t-interval does. Tables show ``m ± ci95``, or
``m [low, high]`` where the interval was cut. ``pareto_rank`` ranks the policies by non-dominated sorting on
(violations_per_run, replica_hours), both lower-better, with their intervals: a policy is
dominated only when another is no worse on both means and better beyond the noise on at
least one axis (its 95 % interval entirely below), so rank 1, the front, holds every policy
no other beats beyond the noise (:func:`pareto_ranks`). ``front_share`` is the share of
bootstrap resamples of the runs in which the policy's means are on the front of the means
(:func:`front_shares`). The oracle is a reference and is not ranked.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from scipy import stats

METRICS = (
    "violations_per_run", "p95_ms", "replicas", "replica_hours", "scale_changes_per_run",
    "under_share", "short_replica_steps", "spare_replica_steps", "forced_ups_per_run", "missing_per_run",
    "quiet_steps_per_run",
)  # fmt: skip


def per_run(steps: pd.DataFrame, step_seconds: float) -> pd.DataFrame:
    """One row per (policy, run) with the raw metrics."""
    rows = []
    for (policy, run), g in steps.groupby(["policy", "run"], sort=False):
        target = g["target_replicas"].to_numpy()
        has_oracle = bool((g["oracle_replicas"] >= 0).all())
        rows.append({
            "policy": policy,
            "run": run,
            "steps": len(g),
            "violations_per_run": float(g["violation"].sum()),
            "p95_ms": float(g["p95_ms"][g["missing"].str.len() == 0].mean()) if "missing" in g else float(g["p95_ms"].mean()),
            "replicas": float(g["replicas"].mean()),
            "replica_hours": float(g["replicas"].sum() * step_seconds / 3600.0),
            "scale_changes_per_run": float(np.count_nonzero(np.diff(target))),
            **_against_oracle(g["replicas"].to_numpy(float), g["oracle_replicas"].to_numpy(float), has_oracle),
            "forced_ups_per_run": float(g["forced"].sum()) if "forced" in g else 0.0,
            "missing_per_run": float((g["missing"].str.len() > 0).sum()) if "missing" in g else 0.0,
            "quiet_steps_per_run": float(((g["spans"] == 0) & (g["censored"] == 0)).sum())
            if {"spans", "censored"} <= set(g) else 0.0,
            **(_client_p95(g) if "client_p95_ms" in g and g["client_p95_ms"].notna().any() else {}),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _against_oracle(ready: np.ndarray, oracle: np.ndarray, has_oracle: bool) -> dict:
    """Under- and over-provisioning of one run against the oracle's replicas, apart.

    >>> _against_oracle(np.array([1.0, 3.0, 2.0, 2.0]), np.array([2.0, 2.0, 2.0, 4.0]), True)
    {'under_share': 0.5, 'short_replica_steps': 3.0, 'spare_replica_steps': 1.0}
    """
    if not has_oracle:
        return {"under_share": np.nan, "short_replica_steps": np.nan, "spare_replica_steps": np.nan}
    gap = ready - oracle
    return {"under_share": float(np.mean(gap < 0)), "short_replica_steps": float(np.clip(-gap, 0, None).sum()),
            "spare_replica_steps": float(np.clip(gap, 0, None).sum())}


def steps_per_run(steps: pd.DataFrame) -> int:
    """Steps of the longest run (one policy, one run) of ``steps``; 0 if empty."""
    return int(steps.groupby(["policy", "run"]).size().max()) if len(steps) else 0


def _client_p95(g: pd.DataFrame) -> dict:
    both = (g["client_p95_ms"] > 0) & (g["spans"] > 0)  # NaN compares False
    if not both.any():
        return {"client_p95_ms": np.nan, "p95_vs_client": np.nan}
    ratio = g["p95_ms"][both] / g["client_p95_ms"][both]
    return {"client_p95_ms": float(g["client_p95_ms"][both].mean()), "p95_vs_client": float(ratio.median())}


def t95(runs: int) -> float:
    """The two-sided 95 % Student-t factor for ``runs`` values (``runs − 1`` degrees of
    freedom): 12.71 for 2, 4.30 for 3, 2.26 for 10; 0 for one run."""
    return float(stats.t.ppf(0.975, runs - 1)) if runs > 1 else 0.0


def mean_ci(values: np.ndarray, lower: float = -np.inf, upper: float = np.inf) -> dict:
    """``{"mean", "ci95", "low", "high"}`` of per-run values (NaN-aware): the mean, the
    half-width of its 95 % Student-t interval, and that interval's ends cut to the range
    ``[lower, upper]`` the quantity cannot leave (a count is not below 0, a share not above
    1). The true mean lies in that range, so the cut interval keeps the t-interval's
    coverage; it is no longer symmetric where it was cut.

    >>> mean_ci(np.array([0.0, 0.0, 3.0]), lower=0.0)["low"]
    0.0
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": None, "ci95": None, "low": None, "high": None}
    m = float(v.mean())
    ci = float(t95(v.size) * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return {"mean": m, "ci95": ci, "low": float(max(m - ci, lower)), "high": float(min(m + ci, upper))}


def interval(v: dict) -> tuple[float, float]:
    """The ends of a summary cell's 95 % interval: its cut ends where it has them
    (:func:`mean_ci`), else mean ∓ ci95; NaNs for an empty cell."""
    m, c = v.get("mean"), v.get("ci95") or 0.0
    if m is None or m != m:
        return (np.nan, np.nan)
    low, high = v.get("low"), v.get("high")
    return (m - c if low is None else low, m + c if high is None else high)


def metric_ranges(cfg, steps: int) -> dict[str, tuple[float, float]]:
    """The range each per-run metric cannot leave, for runs of ``steps`` steps of ``cfg``:
    counts in [0, steps], shares in [0, 1], ready replicas in [0, max_replicas],
    replica-hours in [0, max_replicas × the run's hours], latencies and replica-steps ≥ 0."""
    top = float(cfg.cluster.max_replicas)
    counts = ("violations_per_run", "scale_changes_per_run", "forced_ups_per_run", "missing_per_run",
              "quiet_steps_per_run")
    return {**{m: (0.0, np.inf) for m in (*METRICS, "client_p95_ms", "p95_vs_client")},
            **{m: (0.0, float(steps)) for m in counts}, "under_share": (0.0, 1.0), "replicas": (0.0, top),
            "replica_hours": (0.0, top * steps * cfg.step_seconds / 3600.0)}


def _domination(violations, cost, violations_interval=None, cost_interval=None):
    """``dominates(j, i)``, the rule :func:`pareto_ranks` sorts by (on the means alone
    without intervals)."""
    v, c = np.asarray(violations, float), np.asarray(cost, float)
    if violations_interval is None or cost_interval is None:
        vi, ci = np.stack([v, v], axis=1), np.stack([c, c], axis=1)
    else:
        vi, ci = np.asarray(violations_interval, float), np.asarray(cost_interval, float)

    def dominates(j: int, i: int) -> bool:
        no_worse = v[j] <= v[i] and c[j] <= c[i]
        return no_worse and (vi[j, 1] < vi[i, 0] or ci[j, 1] < ci[i, 0] or
                             ((v[j], c[j]) != (v[i], c[i]) and vi[j, 1] <= vi[i, 0] and ci[j, 1] <= ci[i, 0]))

    return dominates


def pareto_ranks(violations: np.ndarray, cost: np.ndarray, violations_interval: np.ndarray | None = None,
                 cost_interval: np.ndarray | None = None) -> np.ndarray:
    """Non-dominated sorting on (violations, cost), both lower-better; 1 = the front.

    Without intervals, on the means: ``j`` dominates ``i`` when it is no worse on both
    and better on one. With intervals (``(n, 2)`` arrays of each policy's 95 % interval
    ends), a policy is dominated only when another is no worse on both means and better
    beyond the noise on at least one axis (its interval entirely below: ``high_j <
    low_i``), so a policy whose means lose to another's on both axes, each within the
    intervals, stays on the front.

    >>> pareto_ranks(np.array([0, 5, 1, 6]), np.array([10, 2, 12, 3])).tolist()
    [1, 1, 2, 2]
    >>> v, c = np.array([0.0, 1.0]), np.array([10.0, 12.0])  # b's means are worse on both ...
    >>> pareto_ranks(v, c, np.array([[0, 2], [0, 3]]), np.array([[9, 11], [11, 13]])).tolist()  # ... within noise
    [1, 1]
    """
    dominates = _domination(violations, cost, violations_interval, cost_interval)
    v = np.asarray(violations, float)
    rank = np.zeros(len(v), dtype=int)
    left = set(range(len(v)))
    r = 1
    while left:
        front = {i for i in left if not any(dominates(j, i) for j in left if j != i)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    return rank


#: Bootstrap resamples behind ``front_share``, and the spawn key of their generator (a
#: stream of the experiment's seed of its own, so a summary recomputed by ``scalelab
#: report`` gives the same shares).
FRONT_RESAMPLES = 1000
FRONT_STREAM = 0xF407


def front_shares(violations: list[np.ndarray], cost: list[np.ndarray], seed: int,
                 resamples: int = FRONT_RESAMPLES) -> np.ndarray:
    """Each policy's share of bootstrap resamples in which its means are on the front of
    the means: a resample draws each policy's runs with replacement (``violations[p]`` and
    ``cost[p]``, one value per run) and takes their means. 1.0: on the front whatever the
    runs' noise; 0.0: dominated in every resample.

    >>> front_shares([np.array([0.0, 0.0]), np.array([5.0, 5.0])], [np.array([1.0, 1.0]), np.array([2.0, 2.0])], 1)
    array([1., 0.])
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(FRONT_STREAM,)))
    means_v, means_c = [], []
    for v, c in zip(violations, cost, strict=True):
        pick = rng.integers(0, len(v), size=(resamples, len(v)))
        means_v.append(np.asarray(v, float)[pick].mean(axis=1))
        means_c.append(np.asarray(c, float)[pick].mean(axis=1))
    mv, mc = np.stack(means_v, axis=1)[:, :, None], np.stack(means_c, axis=1)[:, :, None]  # (B, j, 1)
    vi, ci = np.swapaxes(mv, 1, 2), np.swapaxes(mc, 1, 2)  # (B, 1, i)
    dominated = ((mv <= vi) & (mc <= ci) & ((mv < vi) | (mc < ci))).any(axis=1)  # some j dominates i
    return (~dominated).mean(axis=0)


def is_reference(policy: str) -> bool:
    """The oracle (it reads the coming load) is drawn and tabled, never ranked: under its
    own name, a labelled variant (``oracle[...]``, ``oracle:...``) or as a comparison of
    run folders names it (``A oracle``), so that every report ranks it alike.

    >>> [is_reference(p) for p in ("oracle", "B oracle", "oracle[2]", "hslinucb", "A oracle-free")]
    [True, True, True, False, False]
    """
    base = str(policy).split("[")[0].split(":")[0]
    return base == "oracle" or base.endswith(" oracle")


def summarize(steps: pd.DataFrame, cfg) -> pd.DataFrame:
    """One row per policy (config order): ``policy, runs`` and each metric as a dict."""
    runs = per_run(steps, cfg.step_seconds)
    order = [p.display for p in cfg.policies]
    rows = []
    for policy in order:
        g = runs[runs.policy == policy]
        if g.empty:
            continue
        metrics = (*METRICS, "client_p95_ms", "p95_vs_client") if "p95_vs_client" in runs else METRICS
        ranges = metric_ranges(cfg, int(g["steps"].max()))
        rows.append({"policy": policy, "runs": len(g), **{m: mean_ci(g[m].to_numpy(), *ranges[m]) for m in metrics}})
    out = with_pareto_ranks(pd.DataFrame(rows))
    ranked = [p for p in out.policy if not is_reference(p)] if len(out) else []
    shares = front_shares([runs[runs.policy == p].violations_per_run.to_numpy() for p in ranked],
                          [runs[runs.policy == p].replica_hours.to_numpy() for p in ranked], cfg.seed) if ranked else []
    share_of = dict(zip(ranked, shares, strict=True))
    out["front_share"] = [float(share_of[p]) if p in share_of else None for p in out.policy]
    return out


def summary_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """A run's summary (``RunResult.summary``) as a flat DataFrame: one row per policy,
    ``runs``, ``pareto_rank``, and ``<metric>`` (mean) and ``<metric>_ci95`` columns."""
    return flat_summary(summary).set_index("policy")


def flat_summary(summary: pd.DataFrame, mean_suffix: str = "") -> pd.DataFrame:
    """The summary as plain columns: ``policy, runs, pareto_rank`` and, per metric,
    ``<metric><mean_suffix>`` (the mean) and ``<metric>_ci95``."""
    rows = []
    for rec in summary.to_dict(orient="records"):
        row = {"policy": rec["policy"], "runs": rec["runs"], "pareto_rank": rec.get("pareto_rank"),
               "front_share": rec.get("front_share"), "dominated_by": rec.get("dominated_by")}
        for key, val in rec.items():
            if isinstance(val, dict):
                row[f"{key}{mean_suffix}"], row[f"{key}_ci95"] = val["mean"], val["ci95"]
                row[f"{key}_low"], row[f"{key}_high"] = interval(val)
        rows.append(row)
    return pd.DataFrame(rows)


def with_pareto_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with a ``pareto_rank`` column (None for the oracle) and ``dominated_by``
    (the policies that dominate it, comma-separated; None on the front)."""
    out = summary.copy()
    ranked = [i for i, p in enumerate(out["policy"]) if not is_reference(p)] if len(out) else []
    out["pareto_rank"] = None
    out["dominated_by"] = None  # the policies that beat it: no worse on both means, beyond the noise on one
    if ranked:
        v = np.array([out["violations_per_run"].iloc[i]["mean"] for i in ranked], float)
        c = np.array([out["replica_hours"].iloc[i]["mean"] for i in ranked], float)
        vi = np.array([interval(out["violations_per_run"].iloc[i]) for i in ranked], float)
        ci = np.array([interval(out["replica_hours"].iloc[i]) for i in ranked], float)
        ranks = pareto_ranks(v, c, vi, ci)
        dominates = _domination(v, c, vi, ci)
        names = [str(out["policy"].iloc[i]) for i in ranked]
        col, by = out.columns.get_loc("pareto_rank"), out.columns.get_loc("dominated_by")
        for k, (i, r) in enumerate(zip(ranked, ranks, strict=True)):
            out.iat[i, col] = int(r)
            out.iat[i, by] = ", ".join(names[j] for j in range(len(ranked)) if j != k and dominates(j, k)) or None
    return out


#: what each column of the summary means, in the terminal table's order: (metric, head, meaning)
COLUMNS = (
    ("violations_per_run", "violations/run",
     "steps of a run whose outcome broke the SLO: p95 above it (with nothing completed, the in-flight "
     "requests' ages), or no spans while load was offered"),
    ("p95_ms", "p95 ms", "per-step p95 latency (over the context window), averaged over a run's measured steps "
                         "(quiet windows, which measured nothing, are counted apart: quiet_steps_per_run in the CSV)"),
    ("replicas", "replicas", "ready replicas, averaged over a run's steps"),
    ("replica_hours", "replica-h", "the cost: ready replicas x step length, summed over a run, hours"),
    ("scale_changes_per_run", "changes/run", "steps whose ordered replica count differs from the previous one"),
    ("under_share", "under", "share of steps with fewer ready replicas than the oracle's (under-provisioned)"),
    ("spare_replica_steps", "spare r-steps", "replicas above the oracle's, summed over a run's steps "
                                             "(over-provisioning; the replicas short below it are in the CSV)"),
    ("forced_ups_per_run", "forced-ups/run", "steps where a rule imposed the action (the paper's +1 above the SLO)"),
    ("missing_per_run", "missing/run", "steps whose outcome lacked a signal (spans or metrics)"),
)  # fmt: skip

#: The terminal table's columns (it fits 100 characters with the usual policy names);
#: every column of :data:`COLUMNS` is in ``summary.csv`` and ``report.html``.
TABLE_COLUMNS = ("violations_per_run", "p95_ms", "replica_hours", "under_share")
#: The terminal's width the table and its text are set for, characters.
WIDTH = 100

PARETO_TEXT = ("pareto: rank by non-dominated sorting on (violations/run, replica-h), both lower-better, "
               "with the intervals: a policy is dominated only when another is no worse on both means and better "
               "beyond the 95 % intervals on at least one; 1 (*) = the front, which no policy beats beyond the noise")

ORACLE_TEXT = ("oracle: a reference, not ranked. Each step it orders the fewest replicas whose steady-state p95 "
               "stayed under the SLO at the coming step's load in separate simulator runs (scalelab.simulator.oracle). "
               "It can still violate: new replicas need the startup delay before they serve, queues built "
               "before a jump take time to drain (steady state is not the transient), a step's p95 is noisy "
               "beyond the steps it was measured on, and max_replicas caps it.")


def experiment_lines(cfg, steps_per_run: int | None = None, runs: int | None = None) -> list[str]:
    """What was run: backend, workload, steps and their length, SLO, runs, interval."""
    w = dict(cfg.workload)
    kind = w.pop("kind", "?")
    params = ", ".join(f"{k}={v}" for k, v in w.items())
    n = runs or cfg.runs
    steps = steps_per_run or cfg.steps
    length = f"{steps} steps of {cfg.step_seconds:g} s ({steps * cfg.step_seconds / 3600:.2f} h)" if steps else (
        f"steps of {cfg.step_seconds:g} s")
    engine = f", engine {cfg.engine}" if cfg.backend == "sim" else ""
    return [
        f"experiment  {cfg.name}: backend {cfg.backend}{engine}, loop {cfg.loop}, seed {cfg.seed}",
        f"workload    {kind}" + (f" ({params})" if params else ""),
        f"per run     {length}; SLO: p95 <= {cfg.slo_ms:g} ms per step",
        *([f"runs        {n} per policy; ± is a 95 % Student-t interval over runs (t = {t95(n):.2f}),",
           "            [low, high] where it was cut at the quantity's range (a count >= 0, a share <= 1)"]
          if n > 1 else ["runs        1 per policy: no interval"]),
        *(["oracle      skipped (config oracle: false): no under/spare columns, no oracle policy"]
          if not getattr(cfg, "oracle", True) and cfg.backend in ("sim", "replay") else []),
    ]


def cell(v: dict, digits: int = 2) -> str:
    """A summary cell as text: ``mean ± ci95``, or ``mean [low, high]`` where the interval
    was cut at its quantity's range (:func:`mean_ci`); ``-`` when empty."""
    if v["mean"] is None:
        return "-"
    m, c = v["mean"], v["ci95"] or 0.0
    low, high = interval(v)
    if np.isclose(low, m - c) and np.isclose(high, m + c):
        return f"{m:.{digits}f} ± {c:.{digits}f}"
    def end(x: float) -> str:  # 0 and 144 rather than 0.00 and 144.00: the table stays narrow
        text = f"{x:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    return f"{m:.{digits}f} [{end(low)}, {end(high)}]"


def metric_cell(v: dict, metric: str) -> str:
    """:func:`cell` with the digits that suit ``metric``: none for milliseconds and
    replica-steps, one for counts per run, two for the rest."""
    digits = 0 if metric in ("p95_ms", "spare_replica_steps", "short_replica_steps") else 1 if \
        metric.endswith("_per_run") else 2
    return cell(v, digits)


#: The fewest runs per policy for which the conclusion names a winner (the protocol: a
#: claim rests on at least five runs; with three, t = 4.30 and intervals are often wider
#: than the means).
MIN_RUNS_FOR_A_WINNER = 5

#: The criterion the conclusion states: fewest violations; among the policies not
#: distinguishable from the fewest on violations, fewest replica-hours.
CRITERION = ("fewest violations per run, then, among the policies not distinguishable from the fewest on "
             "violations, fewest replica-hours")


def _best_and_tied(rows: list[dict], metric: str) -> tuple[dict, list[dict], list[dict]]:
    """The row of the lowest mean of ``metric``, the rows whose 95 % interval overlaps
    its interval (not distinguishable from it) and the others (distinguishably higher)."""
    best = min(rows, key=lambda r: r[metric]["mean"])
    hi = interval(best[metric])[1]
    tied = [r for r in rows if r is not best and interval(r[metric])[0] <= hi]
    return best, tied, [r for r in rows if r is not best and r not in tied]


def conclusion(summary: pd.DataFrame) -> str:
    """The results in plain words: which policies are distinguishable on violations and on
    replica-hours (95 % intervals that do not overlap), and which wins under
    :data:`CRITERION`, or that none can be told apart. The oracle, a reference, is left
    out."""
    rows = [r for r in summary.to_dict(orient="records") if not is_reference(r["policy"])
            and r["violations_per_run"]["mean"] is not None]
    if len(rows) < 2:
        return "One policy: nothing to compare."
    runs = sorted({int(r["runs"]) for r in rows})
    if runs == [1]:
        return (f"{len(rows)} policies, one run each: no interval, so no policy can be told apart from another; "
                "run more (runs: 5 or more).")

    def names(rs: list[dict]) -> str:
        return ", ".join(str(r["policy"]) for r in rs)

    out = [f"{len(rows)} policies, {'-'.join(map(str, runs))} runs each; two policies differ when their 95 % "
           "intervals do not overlap."]
    for metric, what in (("violations_per_run", "violations per run"), ("replica_hours", "replica-hours")):
        best, tied, worse = _best_and_tied(rows, metric)
        b = best[metric]
        line = f"Fewest {what}: {best['policy']} ({metric_cell(b, metric)})"
        line += f"; not distinguishable from it: {names(tied)}" if tied else "; distinguishably below every other"
        line += f"; distinguishably more: {len(worse)} ({names(worse)})." if worse else "."
        out.append(line)
    if min(runs) < MIN_RUNS_FOR_A_WINNER:
        out.append(f"With fewer than {MIN_RUNS_FOR_A_WINNER} runs per policy no winner is named (intervals over "
                   f"{min(runs)} runs are too wide to trust): run {MIN_RUNS_FOR_A_WINNER} or more.")
        return " ".join(out)
    best, tied, _ = _best_and_tied(rows, "violations_per_run")
    pool = [best, *tied]
    if len(pool) == 1:
        out.append(f"Under the criterion ({CRITERION}): {best['policy']} wins.")
    else:
        cheapest, cost_tied, _ = _best_and_tied(pool, "replica_hours")
        if cost_tied:
            out.append(f"Under the criterion ({CRITERION}): no single winner; {names([cheapest, *cost_tied])} "
                       "cannot be told apart on either axis.")
        else:
            out.append(f"Under the criterion ({CRITERION}): {cheapest['policy']} wins (its violations are not "
                       f"distinguishable from the fewest, and its replica-hours are distinguishably lower than "
                       f"those of {names([r for r in pool if r is not cheapest])}).")
    return " ".join(out)


def ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's rows by Pareto rank, then violations, then cost; the oracle last."""
    if "pareto_rank" not in summary:
        summary = with_pareto_ranks(summary)
    key = pd.DataFrame({
        "rank": [r if r is not None and r == r else 10**6 for r in summary["pareto_rank"]],
        "v": [v["mean"] if v["mean"] is not None else np.inf for v in summary["violations_per_run"]],
        "c": [v["mean"] if v["mean"] is not None else np.inf for v in summary["replica_hours"]],
    }, index=summary.index)  # fmt: skip
    return summary.loc[key.sort_values(["rank", "v", "c"], kind="stable").index]


def _first(names: str, n: int) -> str:
    """The first ``n`` of comma-separated ``names``, and how many more."""
    parts = names.split(", ")
    return ", ".join(parts[:n]) + (f" and {len(parts) - n} more" if len(parts) > n else "")


def format_table(summary: pd.DataFrame, cfg=None, steps_per_run: int | None = None, glossary: bool = True) -> str:
    """The summary as text: what was run (with ``cfg``), the table ranked by Pareto rank
    (mean ± 95 % t-interval), the front, and a glossary of every column."""
    shown = [c for c in COLUMNS if c[0] in TABLE_COLUMNS]
    heads = ["pareto", "policy", "runs", *(h for _, h, _ in shown)]
    lines = []
    table = ranked(summary)
    for rec in table.to_dict(orient="records"):
        rank = rec.get("pareto_rank")
        mark = "ref" if rank is None or rank != rank else f"{int(rank)}{'*' if rank == 1 else ''}"
        lines.append([mark, str(rec["policy"]), str(rec["runs"]), *(metric_cell(rec[m], m) for m, _, _ in shown)])
    widths = [max(len(h), *(len(r[k]) for r in lines)) for k, h in enumerate(heads)]
    out = [*experiment_lines(cfg, steps_per_run, int(summary["runs"].max())), ""] if cfg is not None else []
    out.append("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    front = [f"{r['policy']} ({r['violations_per_run']['mean']:.1f} violations, {r['replica_hours']['mean']:.2f} "
             f"replica-h)" for r in table.to_dict(orient="records") if r.get("pareto_rank") == 1]
    out += ["", *textwrap.wrap(conclusion(summary), WIDTH)]
    if front:
        out += ["", *textwrap.wrap("the front (no policy beats these on both axes beyond the intervals): "
                                   + "; ".join(front), WIDTH, subsequent_indent="  ")]
    beaten = [f"{r['policy']} by {_first(r['dominated_by'], 2)}" for r in table.to_dict(orient="records")
              if r.get("dominated_by")]
    if beaten:
        out += textwrap.wrap("dominated (no worse on both means, better beyond the noise on one): " + "; ".join(beaten),
                             WIDTH, subsequent_indent="  ")
    if glossary:
        out += ["", "columns:"]
        slo = f" (SLO {cfg.slo_ms:g} ms)" if cfg is not None else ""
        entries = [(head, text + (slo if head == "violations/run" else "")) for _, head, text in shown]
        entries.append(("pareto", PARETO_TEXT.split(": ", 1)[1]))
        entries.append(("more", "in summary.csv and report.html: " + ", ".join(
            f"{head} ({metric})" for metric, head, _ in COLUMNS if metric not in TABLE_COLUMNS)
            + ", short_replica_steps, quiet_steps_per_run, front_share (the share of bootstrap resamples of the "
            "runs in which the policy's means are on the front)"))
        for head, text in entries:
            out += textwrap.wrap(f"{head:15s} {text}", WIDTH, initial_indent="  ", subsequent_indent=" " * 18)
        if any(is_reference(p) for p in summary["policy"]):
            out += ["", *textwrap.wrap(ORACLE_TEXT, WIDTH)]
    return "\n".join(out)
