"""``scalelab live run``: an experiment on the live local stack, in wall-clock time.

The parts run as separate processes talking only through Kafka, as in the paper: the
orchestrator (``python -m scalelab.orchestrator``), the Locust injector (``python -m scalelab.injector``),
the sandbox replicas, and per episode the agent (``python -m scalelab.agent``), whose config this
module writes from the experiment (policy, reward, limits, the workload's user level per
step). The agent records every decision as it goes and saves its policy state each
step; if it dies, it is started again on the same folder and resumes. Afterwards its
records become the same run folder as a simulated run (:mod:`scalelab.experiments.runfolder`:
the same snapshot, chunks, ``done`` markers, lock and resume), so ``scalelab report``
compares them. The report is the caller's step
(:func:`scalelab.experiments.experiment.run_live` runs, then reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from scalelab.agent.process import AgentFolder, AgentSpec, records_of
from scalelab.errors import PermanentError
from scalelab.experiments import runfolder
from scalelab.experiments.config import ConfigError, ExperimentConfig
from scalelab.experiments.episode import (
    Resolved,
    build_policy,
    build_reward,
    records_frame,
    resolve,
    run_timetable,
    saved_state_of,
)
from scalelab.experiments.runfolder import RunResult, completed_steps, config_to_run, folder_lock
from scalelab.injector.calendar import calendar_features, timetable_data
from scalelab.orchestrator import plugins
from scalelab.orchestrator.local_processes import die_with_parent
from scalelab.orchestrator.scalers.local import ReplicaSpec
from scalelab.orchestrator.stack import JobsStack, LocalStack


class AgentFailed(PermanentError):
    """The agent process kept failing (the message has its last words)."""


@dataclass(frozen=True)
class LiveSettings:
    """What a live run hands its processes, all read from the resolved config (the same
    settings the simulator runs with): the replicas' resources, the injector's think
    time, the orchestrator's context settings and limits."""

    replica: ReplicaSpec
    think_s: tuple[float, float]
    context: dict
    min_replicas: int
    max_replicas: int
    initial_replicas: int
    task: dict = field(default_factory=lambda: {"task": "compute", "cpu": 200})  # the injector's set_task order
    jobs: JobsStack | None = None  # the jobs architecture: runners pull jobs from Kafka (None: the service)


def injector_task(r: Resolved, injector_cpu: int = 200, jobs: bool = False) -> dict:
    """What the injector's users do for the resolved config: the app's service demand
    has one live counterpart. ``fixed-cpu`` (the paper's) is ``GET /compute?cpu=N``
    clients; ``corpus`` (the ``sandbox`` profile) is students submitting the corpus's
    programs to ``POST /run``; with ``jobs`` (``architecture: jobs``), the same students
    submitting them as jobs to Kafka and waiting for their results. The think time is the
    simulator's."""
    d, c = r.app.demand, r.cluster
    think = [c.think_low_s, c.think_high_s]
    if jobs:
        if d.kind != "corpus":
            raise ConfigError(f"config: architecture: jobs runs the submission corpus's programs as jobs; "
                              f"app.demand.kind={d.kind!r} has no jobs counterpart (use the sandbox profile)")
        return {"task": "job", "corpus": d.corpus, "think_s": think}
    if d.kind == "fixed-cpu":
        return {"task": "compute", "cpu": int(injector_cpu), "think_s": think}
    if d.kind == "corpus":
        return {"task": "student", "corpus": d.corpus, "think_s": think}
    raise ConfigError(f"config: app.demand.kind={d.kind!r} has no live counterpart; a live run needs "
                      f"'fixed-cpu' (GET /compute) or 'corpus' (students POST /run, the sandbox profile)")


def live_settings(cfg: ExperimentConfig, r: Resolved | None = None, injector_cpu: int = 200) -> LiveSettings:
    """The settings of ``cfg`` for the live stack."""
    r = r or resolve(cfg)
    a, c = r.app, r.cluster
    replica = ReplicaSpec(cpu_request=a.cpu_request, cpu_limit=a.cpu_limit,
                          memory_request_mib=round(a.memory_request_mib),
                          memory_limit_mib=round(a.memory_limit_mib))
    jobs = None
    if cfg.architecture == "jobs":
        j = cfg.jobs
        if j.runner_mode != "deployment":
            raise ConfigError(f"config: jobs.runner_mode={j.runner_mode!r}: the local stack runs long-lived runners "
                              "only ('deployment'); a runner per job is the Kubernetes ScaledJob's")
        jobs = JobsStack(partitions=j.partitions, max_concurrent_jobs=j.max_concurrent_jobs)
    return LiveSettings(replica=replica, think_s=(c.think_low_s, c.think_high_s), context=asdict(r.context),
                        min_replicas=c.min_replicas, max_replicas=c.max_replicas,
                        initial_replicas=c.initial_replicas, task=injector_task(r, injector_cpu, jobs is not None),
                        jobs=jobs)


def agent_spec(cfg: ExperimentConfig, policy_index: int, run: int, seed: int, injector_cpu: int = 200,
               calendar_seed: int = 0) -> AgentSpec:
    """The agent config of one episode of ``cfg`` (``seed``: the policy's;
    ``calendar_seed``: the run's timetable noise, as the simulated runner's)."""
    r = resolve(cfg)
    spec = cfg.policies[policy_index]
    params, saved = saved_state_of(spec, run)
    hot = str(saved) if saved is not None else None
    users = [int(r.workload.users_at(k * cfg.step_seconds)) for k in range(r.steps)]
    return AgentSpec(policy=spec.name, params=params, display=spec.display, seed=int(seed), run=run,
                     steps=r.steps, step_seconds=float(cfg.step_seconds), slo_ms=float(cfg.slo_ms), loop=cfg.loop,
                     reward=cfg.reward.name, reward_params=dict(cfg.reward.params),
                     min_replicas=cfg.cluster.min_replicas, max_replicas=cfg.cluster.max_replicas,
                     initial_replicas=cfg.cluster.initial_replicas, users=users, hot_start=hot,
                     warmup_load=cfg.warmup.load, warmup_seconds=float(cfg.warmup.seconds),
                     injector_task={**injector_task(r, injector_cpu, cfg.architecture == "jobs"), "seed": int(seed)},
                     calendar=agent_calendar(cfg, r, calendar_seed))


def agent_calendar(cfg: ExperimentConfig, r: Resolved, calendar_seed: int) -> dict:
    """The ``calendar`` of an agent config: the run's announced exams and, with
    ``calendar.features``, the features per step, computed as the simulated runner
    computes them (:func:`scalelab.experiments.episode.run_timetable`); empty without a timetable."""
    table = run_timetable(cfg, r, {"calendar": calendar_seed})
    if table is None:
        return {}
    out = timetable_data(table).to_dict()
    if cfg.calendar.features:
        out["features"] = calendar_features(table, cfg.step_seconds, r.steps).tolist()
    return out


def records_to_steps(folder: Path, run: int, policy: str) -> pd.DataFrame:
    """The agent's records as rows of ``steps.parquet`` (the same rows as a simulated
    run's; ``client_p95_ms`` is Locust's p95 at the step, NaN when it had none)."""
    return records_frame(records_of(folder), run, policy, None)


def plugin_env() -> dict[str, str]:
    """The environment of an agent process: the folders of imported plug-ins on its
    ``PYTHONPATH``, so ``python -m scalelab.agent`` finds a ``module:Class`` policy too."""
    dirs = [v["dir"] for v in plugins.imported().values() if v.get("dir")]
    env = dict(os.environ)
    if dirs:
        env["PYTHONPATH"] = os.pathsep.join([*dirs, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_agent_process(spec: AgentSpec, part: Path, bootstrap: str, restarts: int = 3,
                      kill_after_records: int | None = None) -> int:
    """Run ``python -m scalelab.agent`` for one episode in ``part``, starting it again (it
    resumes) if it dies; it gets SIGTERM if this thread ends (``die_with_parent``). Returns
    how many times it was restarted. ``kill_after_records`` (fault tests) kills it with
    SIGKILL once that many decisions are on disk."""
    spec.save(part / "agent.yaml")
    folder = AgentFolder(part)
    budget = spec.steps * spec.step_seconds * 3 + 120
    started = 0
    while True:
        with open(part / "agent.log", "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "scalelab.agent", "--config", str(part / "agent.yaml"),
                                     "--bootstrap", bootstrap], stdout=log, stderr=subprocess.STDOUT,
                                    env=plugin_env(), preexec_fn=die_with_parent())
            end = time.monotonic() + budget
            try:
                while proc.poll() is None:
                    if kill_after_records is not None and len(folder.records()) >= kill_after_records:
                        proc.kill()
                        kill_after_records = None
                    if time.monotonic() > end:
                        proc.kill()
                    time.sleep(0.2)
            except BaseException:  # the run is stopping (Terminated, Ctrl-C): the agent goes with it
                proc.kill()
                proc.wait()
                raise
        if proc.returncode == 0:
            return started
        if proc.returncode == 2 or started >= restarts:
            tail = (part / "agent.log").read_text().strip().splitlines()[-5:]
            raise AgentFailed(f"agent for {spec.display} run {spec.run} exited {proc.returncode}: " + " | ".join(tail))
        started += 1


def service_commands(stack_dir: Path, bootstrap: str, service_url: str, settings: LiveSettings,
                     injector_cpu: int = 200) -> tuple[list[list[str]], dict[str, str]]:
    """The orchestrator's and the injector's command lines, and the injector's
    environment, for ``settings``."""
    task = settings.task
    env = {"INJECTOR_TASK": task["task"], "INJECTOR_CPU": str(task.get("cpu", injector_cpu)),
           "INJECTOR_CORPUS": str(task.get("corpus", "v1")), "INJECTOR_WAIT_MIN": str(settings.think_s[0]),
           "INJECTOR_WAIT_MAX": str(settings.think_s[1])}
    cmds = [[sys.executable, "-m", "scalelab.orchestrator", "--stack-dir", str(stack_dir), "--min",
             str(settings.min_replicas), "--max", str(settings.max_replicas),
             "--context-json", json.dumps(settings.context)],
            [sys.executable, "-m", "scalelab.injector", "--host", service_url, "--bootstrap", bootstrap]]
    return cmds, env


def start_services(stack: LocalStack, settings: LiveSettings, injector_cpu: int = 200) -> list[subprocess.Popen]:
    """Start ``python -m scalelab.orchestrator`` and ``python -m scalelab.injector`` on ``stack``; each
    says "ready" on its first line once it listens to Kafka. They get SIGTERM when the
    thread that started them ends (``die_with_parent``): a run killed with SIGKILL leaves
    no orchestrator replacing the replicas of a stack ``scalelab live down`` stops."""
    addr = stack.state["kafka"]["bootstrap"]
    cmds, extra = service_commands(stack.dir, addr, stack.service_url, settings, injector_cpu)
    env = {**os.environ, **extra}
    procs: list[subprocess.Popen] = []
    try:
        for cmd in cmds:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=die_with_parent())
            procs.append(p)
            line = p.stdout.readline().strip()
            if not line.endswith("ready"):
                raise RuntimeError(f"{cmd[2]} did not start (said {line!r})")
    except Exception:
        stop_services(procs)
        raise
    return procs


def stop_services(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()


class Supervisor:
    """Keeps a local stack's services alive during a live run: every ``period_s`` the
    orchestrator and the injector (restarted with their own command lines if their
    process ended) and the stack's Kafka and Prometheus (:meth:`LocalStack.heal`); the
    orchestrator replaces dead replicas itself. ``restarts`` counts each service's
    restarts; ``services.json`` in ``folder`` holds them as they happen."""

    def __init__(self, stack: LocalStack, settings: LiveSettings, procs: list[subprocess.Popen], folder: Path,
                 injector_cpu: int = 200, period_s: float = 1.0) -> None:
        self.stack, self.settings, self.procs, self.folder = stack, settings, procs, folder
        self.injector_cpu, self.period_s = injector_cpu, period_s
        self.restarts = {"orchestrator": 0, "injector": 0, "kafka": 0, "prometheus": 0}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self._write()

    def _write(self) -> None:
        (self.folder / "services.json").write_text(json.dumps({"restarts": self.restarts,
                                                               "errors": self.errors[-20:]}, indent=1))

    def check(self) -> list[str]:
        """One round; returns what was restarted."""
        started = self.stack.heal()
        addr = self.stack.state["kafka"]["bootstrap"]
        cmds, extra = service_commands(self.stack.dir, addr, self.stack.service_url, self.settings, self.injector_cpu)
        for i, (name, cmd) in enumerate(zip(("orchestrator", "injector"), cmds, strict=True)):
            if self.procs[i].poll() is not None:
                if self.procs[i].stdout:
                    self.procs[i].stdout.close()
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **extra},
                                     preexec_fn=die_with_parent())
                line = p.stdout.readline().strip()
                if not line.endswith("ready"):
                    raise RuntimeError(f"{name} did not start again (said {line!r})")
                self.procs[i] = p
                started.append(name)
        for name in started:
            self.restarts[name] += 1
        if started:
            self._write()
        return started

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check()
            except Exception as exc:  # tried again at the next round; the episode's gaps show the outage
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                self._write()


def run_on_stack(config: ExperimentConfig | str | Path | None, out: str | Path = "runs",
                 stack_dir: Path | None = None, command: str | None = None, injector_cpu: int = 200,
                 kill_agent_after: int | None = None, bootstrap: str | None = None,
                 resume: str | Path | None = None, during: Callable[[Path, LocalStack | None], None] | None = None,
                 supervise_s: float = 1.0) -> RunResult:
    """Run ``config`` (``backend: live``) on a local stack brought up for it, or, given
    ``bootstrap``, against a running testbed whose orchestrator and injector listen on
    that Kafka (a Kubernetes cluster set up from ``k8s/``): only the agents start here.
    No report (the caller's step).

    On a local stack a :class:`Supervisor` restarts dead services. Each episode ends
    with ``status.json``: ``done`` (and the folder's ``done`` marker), or ``failed`` with
    the error and the rows it kept (they are in ``steps.parquet``; the run goes on with
    the next episode). ``resume``: a run folder to finish -- done episodes are read back,
    the others continue (the agent resumes within its episode from its checkpoint).
    ``kill_agent_after``, ``during`` (fault tests): kill each agent once after that many
    decisions; a function called in a thread with the run folder and the stack;
    ``supervise_s``: the supervisor's period, s."""
    t_start = time.perf_counter()
    cfg, path = config_to_run(config, resume)
    if cfg.backend != "live":
        raise ConfigError(f"config: backend={cfg.backend!r}; scalelab live run needs backend: live")
    run_cfg = cfg if path is None else runfolder.from_snapshot(cfg, path)
    live_settings(run_cfg, injector_cpu=injector_cpu)  # the app has a live counterpart
    for spec in cfg.policies:
        build_policy(spec, run_cfg, seed=0, table=run_timetable(run_cfg, resolve(run_cfg), {}))
    build_reward(cfg)
    if path is None:
        path = runfolder.create(cfg, out, command)
        run_cfg = runfolder.from_snapshot(cfg, path)  # a new run runs from its snapshot, as its resume will
    settings = live_settings(run_cfg, injector_cpu=injector_cpu)
    with folder_lock(path), terminated_as_exit():
        steps, summary = _run_live_in(run_cfg, settings, path, stack_dir, injector_cpu, kill_agent_after,
                                      bootstrap, during, supervise_s)
    return RunResult(path=path, steps=steps, summary=summary, seconds=time.perf_counter() - t_start, config=cfg)


def kept_episode(part: runfolder.Part, run: int, policy: str) -> pd.DataFrame | None:
    """A finished episode's rows: its chunks, if its ``done`` marker agrees with them;
    else, when ``status.json`` says it finished (a folder from before the one marker,
    or chunks removed), the agent's records, which become its chunk and marker again.
    None: it has to run (or continue)."""
    if not part.marked_done():
        return None
    kept = part.verified()
    if kept is None and (part.status() or {}).get("status") == "done":
        kept = records_to_steps(part.dir, run, policy)
        part.start()
        part.write_chunk(0, kept)
        part.mark_done(len(kept))
    return kept


class Terminated(PermanentError, SystemExit):
    """The live run was told to stop (SIGTERM, as ``timeout`` or a batch scheduler ends
    it): raised where the run is, so that what it started is stopped on the way out (a
    ``SystemExit`` too: nothing that catches only errors of the run's own keeps it)."""


@contextlib.contextmanager
def terminated_as_exit():
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (once: a second
    one during the clean-up is ignored), so the live run's ``finally`` stops its agent,
    services and stack instead of leaving them as orphans; the old handler comes back
    after. Elsewhere than the main thread it does nothing (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    told = []

    def stop(signum, frame) -> None:
        if not told:
            told.append(signum)
            raise Terminated(f"the live run was stopped by signal {signum}; its agent, services and stack were "
                             "stopped (finish it with --resume FOLDER)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_live_in(cfg: ExperimentConfig, settings: LiveSettings, path: Path, stack_dir: Path | None,
                 injector_cpu: int, kill_agent_after: int | None, bootstrap: str | None,
                 during: Callable[[Path, LocalStack | None], None] | None,
                 supervise_s: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    complete = completed_steps(path)
    if complete is not None:  # resuming a finished run: nothing to redo
        write_injector_summary(path)
        return complete, runfolder.write_summary(path, complete, cfg)
    seeds = runfolder.write_versions(path, cfg)
    episodes = [(run, k, pspec) for run in range(cfg.runs) for k, pspec in enumerate(cfg.policies)]
    kept = {(run, k): kept_episode(runfolder.part(path, pspec.display, run), run, pspec.display)
            for run, k, pspec in episodes}
    todo = [e for e in episodes if kept[e[:2]] is None]
    stack = None if bootstrap or not todo else LocalStack(stack_dir or path / "stack")
    procs: list[subprocess.Popen] = []
    supervisor = None
    try:
        if stack is not None:
            if stack.state:  # a resumed run's stack, left behind by the run that died
                stack.down()
            stack.up(replicas=settings.initial_replicas, spec=settings.replica, owner_stops_on_sigterm=True,
                     jobs=settings.jobs)
            (path / "stack.json").write_text(json.dumps({"cpu_limit_enforced": stack.scaler.cpu_limit_enforced,
                                                         "replica": asdict(settings.replica), "task": settings.task,
                                                         "jobs": asdict(settings.jobs) if settings.jobs else None}))
        if stack is not None:
            addr = stack.state["kafka"]["bootstrap"]
            procs = start_services(stack, settings, injector_cpu=injector_cpu)
            supervisor = Supervisor(stack, settings, procs, path, injector_cpu, period_s=supervise_s).start()
        else:
            addr = bootstrap
        if during is not None:
            threading.Thread(target=during, args=(path, stack), daemon=True).start()
        frames = []
        for run, k, pspec in episodes:
            if kept[run, k] is not None:
                frames.append(kept[run, k])
                continue
            part = runfolder.part(path, pspec.display, run)
            part.start()
            aspec = agent_spec(cfg, k, run, seeds[run]["policy"][k], injector_cpu, seeds[run]["calendar"])
            try:
                run_agent_process(aspec, part.dir, addr, kill_after_records=kill_agent_after)
            except AgentFailed as exc:
                rows = records_to_steps(part.dir, run, pspec.display)
                frames.append(rows)
                part.write_status({"status": "failed", "error": str(exc)[:1000], "rows": len(rows),
                                   "steps": aspec.steps})
                continue
            rows = records_to_steps(part.dir, run, pspec.display)
            frames.append(rows)
            part.write_chunk(0, rows)
            part.write_policy(json.loads((part.dir / "agent-state.json").read_text())["policy"])
            part.write_status({"status": "done", "rows": len(rows)})
            part.mark_done(len(rows))
    finally:
        if supervisor is not None:
            supervisor.stop()
        stop_services(supervisor.procs if supervisor is not None else procs)
        if stack is not None:
            stack.down()
    steps, summary = runfolder.finish(path, cfg, frames)
    write_injector_summary(path)
    return steps, summary


def write_injector_summary(path: Path) -> dict:
    """``injector.json`` of a live run folder: per policy, the load generator's requests
    and failed requests (summed over runs), the failure rate and the reasons (a student's
    submission fails only when its answer is not what the program was meant to get)."""
    out: dict[str, dict] = {}
    for part in sorted((path / runfolder.PARTS).glob("*--run*")):
        f = part / "injector.json"
        if not f.exists():
            continue
        stats = json.loads(f.read_text())
        policy = part.name.rsplit("--run", 1)[0]
        agg = out.setdefault(policy, {"requests": 0, "failures": 0, "reasons": {}})
        agg["requests"] += int(stats.get("num_requests", 0))
        agg["failures"] += int(stats.get("num_failures", 0))
        for reason, n in (stats.get("failures") or {}).items():
            agg["reasons"][reason] = agg["reasons"].get(reason, 0) + int(n)
    for agg in out.values():
        agg["failure_rate"] = agg["failures"] / agg["requests"] if agg["requests"] else None
    (path / "injector.json").write_text(json.dumps(out, indent=1))
    return out
