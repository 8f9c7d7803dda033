"""An experiment from its config to its report: the one place that runs, then reports.

The runners write the run folder (:mod:`scalelab.experiments.runfolder`): the simulated
one (:func:`scalelab.experiments.runner.run_simulated`) and the live one
(:func:`scalelab.experiments.live.run_on_stack`); the report
(:func:`scalelab.experiments.report.write_report`) reads it. Neither knows the other;
this module calls one, then the other. The CLI and the public API (``scalelab.run_experiment``,
``scalelab.run_live``) call these functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scalelab.experiments.config import ExperimentConfig
from scalelab.experiments.runfolder import RunResult
from scalelab.experiments.runner import run_simulated, run_together

# the report (matplotlib, plotly) and the live run (the stack's modules) are imported when
# used, so that importing this module (the paper's, the CLI's) stays cheap


def run_experiment(config: ExperimentConfig | str | Path | dict | None, out: str | Path | None = None, *,
                   report: bool = True, **options) -> RunResult:
    """Run ``config`` (``backend: sim`` or ``replay``) into a new folder under ``out``
    (default ``runs/``) with :func:`scalelab.experiments.runner.run_simulated`, which takes
    ``options`` (``resume``: finish the run in that folder; ``workers``; ``progress``;
    ``command``); then, with ``report``, write its figures and ``report.html``. Returns
    the steps, the summary and the folder."""
    result = run_simulated(config, out, **options)
    return with_report(result) if report else result


def run_experiments(configs: list, out: str | Path | None = None, *, report: bool = True,
                    **options) -> Iterator[tuple[int, RunResult]]:
    """Run several independent configs with their episodes in one pool
    (:func:`scalelab.experiments.runner.run_together`, which takes ``options``:
    ``workers``, ``progress``, ``command``); each run's report is written as soon as it
    finishes, while the others' episodes go on. Yields ``(index in configs, result)``."""
    runs = run_together(configs, out, **options)
    for i, result in runs:
        try:
            result = with_report(result) if report else result
        except KeyboardInterrupt:  # the runner names every folder left to finish, this one included
            runs.throw(KeyboardInterrupt)
        yield i, result


def run_live(config: ExperimentConfig | str | Path | None, out: str | Path = "runs", *, report: bool = True,
             **options) -> RunResult:
    """Run ``config`` (``backend: live``) on the live stack
    (:func:`scalelab.experiments.live.run_on_stack`, which takes ``options``: ``resume``,
    ``bootstrap``, ``stack_dir``, ``command``, ...); then, with ``report``, write its
    figures and ``report.html``."""
    from scalelab.experiments.live import run_on_stack

    result = run_on_stack(config, out=out, **options)
    return with_report(result) if report else result


def with_report(result: RunResult) -> RunResult:
    """Write the figures and ``report.html`` of ``result``'s run folder; returns ``result``."""
    from scalelab.experiments.report import write_report

    write_report(result.path, steps=result.steps, summary=result.summary, cfg=result.config)
    return result
