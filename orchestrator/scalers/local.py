"""LocalScaler: sandbox replicas as process trees on this machine, behind HAProxy.

A replica is a gunicorn serving ``scalelab.sandbox.app`` on its own port. Scaling up starts one,
waits until ``/healthz`` answers (its real startup delay), then puts it in the balancer.
Scaling down drains it: the balancer stops sending first, in-flight requests finish,
then gunicorn stops gracefully. Each replica's CPU limit is enforced with a CFS quota in
its own cgroup (cgroup v1 ``cpu``, with ``cpuacct`` and ``memory`` for usage) where the
kernel lets us; ``cpu_limit_enforced`` says honestly whether it could.

The scaler's state (replicas, ports, pids) lives in ``state_dir/replicas.json``, so any
process (``scalelab live``, the orchestrator) can take it over; ``on_spawn(name, pid)`` is
told of each replica started (the stack records it in the user's registry of stacks).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scalelab.errors import PermanentError
from scalelab.orchestrator.haproxy import HAProxy
from scalelab.orchestrator.local_processes import alive, free_port, reap, spawn, stop, wait_http

CGROUP_ROOT = Path("/sys/fs/cgroup")


class ScaleError(PermanentError, RuntimeError):
    """A replica failed to start or to stop."""


@dataclass(frozen=True)
class ReplicaSpec:
    """Resources of every replica (cores, MiB) and its server settings."""

    cpu_request: float = 0.5
    cpu_limit: float = 0.5
    memory_request_mib: int = 512
    memory_limit_mib: int = 512
    workers: int = 2
    threads: int = 4
    namespace: str = "default"
    service: str = "sandbox"
    startup_timeout_s: float = 60.0
    drain_timeout_s: float = 300.0


@dataclass
class Replica:
    name: str
    slot: int
    port: int
    pid: int
    state: str = "starting"  # starting, ready, draining
    started_at: float = field(default_factory=time.time)
    control_port: int | None = None  # /healthz and /metrics off the request threads
    cgroup: str | None = None  # its cgroups' name under scalelab/ (unique on the host: LocalScaler.cgroup_name)


def _cgroup_dirs(name: str) -> dict[str, Path]:
    return {c: CGROUP_ROOT / c / "scalelab" / name for c in ("cpu", "cpuacct", "memory")}


def make_cgroup(name: str, spec: ReplicaSpec) -> dict[str, Path] | None:
    """Create the replica's cgroups with its CPU quota and memory limit; None if we may not."""
    dirs = _cgroup_dirs(name)
    try:
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
        (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(spec.cpu_limit * 100000)))
        (dirs["memory"] / "memory.limit_in_bytes").write_text(str(spec.memory_limit_mib * 2**20))
        return dirs
    except OSError:
        remove_cgroup(name)
        return None


def remove_cgroup(name: str) -> None:
    """Remove the replica's cgroups, and the empty groups its sandboxed runs nested in
    (``scalelab-runs``, which the sandbox names: children first)."""
    for d in _cgroup_dirs(name).values():
        try:
            for child in sorted((c for c in d.rglob("*") if c.is_dir()), key=lambda c: -len(c.parts)):
                child.rmdir()
            d.rmdir()
        except OSError:
            pass


class LocalScaler:
    """Starts and drains sandbox replicas; ``scale_to(n)`` is the scale subresource."""

    def __init__(self, state_dir: Path, haproxy: HAProxy, spec: ReplicaSpec = ReplicaSpec(),
                 kafka_bootstrap: str | None = None, targets_file: Path | None = None,
                 on_spawn: Callable[[str, int], None] | None = None) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.haproxy, self.spec, self.kafka = haproxy, spec, kafka_bootstrap
        self.targets_file, self.on_spawn = targets_file, on_spawn
        self.replicas: list[Replica] = []
        self.cpu_limit_enforced: bool | None = None
        self._counter = 0
        self._load()

    # -- state
    @property
    def _state_file(self) -> Path:
        return self.dir / "replicas.json"

    def _load(self) -> None:
        if self._state_file.exists():
            d = json.loads(self._state_file.read_text())
            self.replicas = [Replica(**r) for r in d["replicas"]]
            self.cpu_limit_enforced = d.get("cpu_limit_enforced")
            self._counter = d.get("counter", 0)

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"replicas": [asdict(r) for r in self.replicas],
                                   "cpu_limit_enforced": self.cpu_limit_enforced, "counter": self._counter}))
        tmp.replace(self._state_file)
        if self.targets_file is not None:
            targets = [{"targets": [f"127.0.0.1:{r.control_port or r.port}"], "labels": {"replica": r.name}}
                       for r in self.replicas]
            t = self.targets_file.with_suffix(".tmp")
            t.write_text(json.dumps(targets))
            t.replace(self.targets_file)

    # -- queries
    def in_flight_ages_ms(self) -> list[float]:
        """Ages of the requests in flight at the balancer, ms (censored latencies when no
        request completes in a window)."""
        return [a * 1000.0 for a in self.haproxy.in_flight_ages_s()]

    @staticmethod
    def _dead(r: Replica) -> bool:
        reap(r.pid)  # a replica that died is a zombie of this process until reaped
        return not alive(r.pid)

    @property
    def ready_replicas(self) -> int:
        """Replicas ready and alive: a replica whose process died is not counted."""
        return sum(r.state == "ready" and not self._dead(r) for r in self.replicas)

    def replace_dead(self) -> list[str]:
        """Replicas whose process died: out of the balancer, forgotten, and replaced by
        new ones, as a Deployment's controller does (each logged in ``replaced.jsonl``);
        returns the dead ones' names."""
        dead = [r for r in self.replicas if r.state == "ready" and self._dead(r)]
        for r in dead:
            try:
                self.haproxy.disable(r.slot)
            except Exception:  # the balancer's answer does not change what is dead
                pass
            remove_cgroup(r.cgroup or r.name)
            self.replicas.remove(r)
        if dead:
            self._save()
            with open(self.dir / "replaced.jsonl", "a") as log:  # the record a run folder keeps
                for r in dead:
                    log.write(json.dumps({"t": time.time(), "replica": r.name, "pid": r.pid}) + "\n")
        for _ in dead:
            self._start_one()
        return [r.name for r in dead]

    @property
    def desired_replicas(self) -> int:
        return sum(r.state in ("starting", "ready") for r in self.replicas)

    # -- actions
    def scale_to(self, n: int, wait: bool = True) -> None:
        """Start or drain replicas until ``n`` serve (blocking until ready / drained)."""
        if n < 0:
            raise ScaleError(f"cannot scale to {n} replicas")
        while self.desired_replicas < n:
            self._start_one()
        while self.desired_replicas > n:
            victim = max((r for r in self.replicas if r.state in ("starting", "ready")), key=lambda r: r.started_at)
            self._drain(victim)

    def cgroup_name(self, name: str) -> str:
        """The cgroups' name of this scaler's replica ``name``: the replica's name after a
        key of the scaler's folder, so two stacks on one host (each has its ``sandbox-1``)
        never share a replica's cgroups -- and so its CPU quota."""
        return f"{hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:10]}-{name}"

    def _prepare(self, name: str, control: int) -> tuple[str, dict[str, Path] | None, dict, Callable[[], None]]:
        """A new replica's cgroups (with its CPU quota and memory limit, where the kernel
        lets us), its environment (what the pod spec would say) and the ``preexec_fn``
        that puts it in its cgroups."""
        cgroup = self.cgroup_name(name)
        cg = make_cgroup(cgroup, self.spec)
        self.cpu_limit_enforced = cg is not None if self.cpu_limit_enforced in (None, True) else False
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
            "SANDBOX_POD": name, "SANDBOX_NAMESPACE": self.spec.namespace, "SANDBOX_SERVICE": self.spec.service,
            "SANDBOX_CPU_REQUEST": str(self.spec.cpu_request), "SANDBOX_CPU_LIMIT": str(self.spec.cpu_limit),
            "SANDBOX_MEMORY_REQUEST_MIB": str(self.spec.memory_request_mib),
            "SANDBOX_MEMORY_LIMIT_MIB": str(self.spec.memory_limit_mib),
            "KAFKA_BOOTSTRAP": self.kafka or "", "SANDBOX_CONTROL_PORT": str(control),
        }  # fmt: skip
        if cg is not None:
            env["SANDBOX_CGROUP_CPU"] = str(cg["cpuacct"])
            env["SANDBOX_CGROUP_MEMORY"] = str(cg["memory"])

        def join_cgroup() -> None:
            if cg is not None:
                for d in cg.values():
                    (d / "cgroup.procs").write_text(str(os.getpid()))

        return cgroup, cg, env, join_cgroup

    def _start_one(self) -> Replica:
        self._counter += 1
        name = f"sandbox-{self._counter}"
        used = {r.slot for r in self.replicas}
        slot = next(s for s in range(1, self.haproxy.slots + 1) if s not in used)
        port, control = free_port(), free_port()
        cgroup, cg, env, join_cgroup = self._prepare(name, control)
        cmd = [sys.executable, "-m", "gunicorn", "-w", str(self.spec.workers), "--threads", str(self.spec.threads),
               "-b", f"127.0.0.1:{port}", "--graceful-timeout", str(int(self.spec.drain_timeout_s)),
               "--timeout", "120", "-c", "python:scalelab.sandbox.gunicorn_conf", "scalelab.sandbox.app:application"]
        pid = spawn(cmd, self.dir / f"{name}.log", env=env, preexec=join_cgroup)
        if self.on_spawn is not None:
            self.on_spawn(name, pid)
        replica = Replica(name=name, slot=slot, port=port, pid=pid, control_port=control,
                          cgroup=cgroup if cg is not None else None)
        self.replicas.append(replica)
        self._save()
        if not (wait_http(f"http://127.0.0.1:{port}/healthz", self.spec.startup_timeout_s, pid=pid)
                and wait_http(f"http://127.0.0.1:{control}/healthz", self.spec.startup_timeout_s, pid=pid)):
            stop(pid)
            self.replicas.remove(replica)
            remove_cgroup(cgroup)
            self._save()
            raise ScaleError(f"replica {name} did not become healthy; see {self.dir / (name + '.log')}")
        self.haproxy.enable(slot, port, check_port=control)
        replica.state = "ready"
        self._save()
        return replica

    def _drain(self, r: Replica) -> None:
        """Take ``r`` out of the balancer, let its requests finish (up to the drain
        timeout), then stop it: gracefully only if something may still be running; a
        replica that never became ready is killed at once (no graceful wait)."""
        was_ready = r.state == "ready"
        r.state = "draining"
        self._save()
        busy = False
        try:
            self.haproxy.disable(r.slot)
            end = time.monotonic() + self.spec.drain_timeout_s
            while was_ready and self.haproxy.in_flight(r.slot) > 0 and time.monotonic() < end:
                time.sleep(0.05)
            busy = was_ready and self.haproxy.in_flight(r.slot) > 0
        finally:
            if not was_ready:
                stop(r.pid, timeout_s=2.0, sig=signal.SIGKILL)
            else:
                stop(r.pid, timeout_s=self.spec.drain_timeout_s if busy else 10.0)
            remove_cgroup(r.cgroup or r.name)
            self.replicas.remove(r)
            self._save()

    def stop_all(self) -> None:
        for r in list(self.replicas):
            try:
                self.haproxy.disable(r.slot)
            except Exception:
                pass
            stop(r.pid, timeout_s=10)
            remove_cgroup(r.cgroup or r.name)
            self.replicas.remove(r)
        self._save()

    def status(self) -> list[dict]:
        return [{**asdict(r), "alive": alive(r.pid)} for r in self.replicas]


@dataclass(frozen=True)
class RunnerSpec:
    """What the jobs architecture's runners pull and how many jobs each holds
    (``python -m scalelab.sandbox.job_runner``'s options)."""

    jobs_topic: str = "jobs"
    results_topic: str = "results"
    group: str = "runners"
    max_concurrent_jobs: int = 5


class LocalRunnerScaler(LocalScaler):
    """The jobs architecture's runners as processes on this machine
    (``python -m scalelab.sandbox.job_runner``), each in its cgroups as a service replica
    is, with no balancer: runners pull their jobs from Kafka. A runner is ready once its
    ``/healthz`` (control port) answers, after it proved it runs programs. Scaling down
    sends SIGTERM to the newest runners at once (each stops taking jobs, finishes those it
    holds, commits and leaves the group) and waits for them to exit, up to the drain
    timeout; then what is left is killed. Prometheus scrapes their ``/metrics`` as it
    scrapes the replicas'."""

    def __init__(self, state_dir: Path, spec: ReplicaSpec = ReplicaSpec(), runner: RunnerSpec = RunnerSpec(),
                 kafka_bootstrap: str | None = None, targets_file: Path | None = None,
                 on_spawn: Callable[[str, int], None] | None = None) -> None:
        super().__init__(state_dir, None, spec, kafka_bootstrap, targets_file, on_spawn)
        self.runner = runner

    def in_flight_ages_ms(self) -> list[float]:
        """No balancer: the jobs' ages come from the topics (the orchestrator's jobs collector)."""
        return []

    def scale_to(self, n: int, wait: bool = True) -> None:
        if n < 0:
            raise ScaleError(f"cannot scale to {n} runners")
        while self.desired_replicas < n:
            self._start_one()
        active = sorted((r for r in self.replicas if r.state in ("starting", "ready")), key=lambda r: r.started_at)
        self._drain_all(active[n:])

    def _start_one(self) -> Replica:
        self._counter += 1
        name = f"runner-{self._counter}"
        control = free_port()
        cgroup, cg, env, join_cgroup = self._prepare(name, control)
        r = self.runner
        cmd = [sys.executable, "-m", "scalelab.sandbox.job_runner", "--bootstrap", self.kafka or "",
               "--jobs-topic", r.jobs_topic, "--results-topic", r.results_topic, "--group", r.group,
               "--max-concurrent-jobs", str(r.max_concurrent_jobs), "--drain-timeout", str(self.spec.drain_timeout_s)]
        pid = spawn(cmd, self.dir / f"{name}.log", env=env, preexec=join_cgroup)
        if self.on_spawn is not None:
            self.on_spawn(name, pid)
        replica = Replica(name=name, slot=0, port=0, pid=pid, control_port=control,
                          cgroup=cgroup if cg is not None else None)
        self.replicas.append(replica)
        self._save()
        if not wait_http(f"http://127.0.0.1:{control}/healthz", self.spec.startup_timeout_s, pid=pid):
            stop(pid)
            self.replicas.remove(replica)
            remove_cgroup(cgroup)
            self._save()
            raise ScaleError(f"runner {name} did not become healthy; see {self.dir / (name + '.log')}")
        replica.state = "ready"
        self._save()
        return replica

    def _drain(self, r: Replica) -> None:
        self._drain_all([r])

    def _drain_all(self, victims: list[Replica]) -> None:
        """SIGTERM to each runner's own process (not its session: its sandboxed runs are
        its to finish), wait until they exited, then stop what is left."""
        if not victims:
            return
        for r in victims:
            r.state = "draining"
        self._save()
        for r in victims:
            try:
                os.kill(r.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + self.spec.drain_timeout_s
        while any(not self._dead(r) for r in victims) and time.monotonic() < end:
            time.sleep(0.05)
        for r in victims:
            stop(r.pid, timeout_s=1.0, sig=signal.SIGTERM if self._dead(r) else signal.SIGKILL)
            remove_cgroup(r.cgroup or r.name)
            self.replicas.remove(r)
        self._save()

    def stop_all(self) -> None:
        self._drain_all([r for r in self.replicas if r.state != "draining"] or list(self.replicas))
        for r in list(self.replicas):  # left draining by a process that died
            stop(r.pid, timeout_s=2.0, sig=signal.SIGKILL)
            remove_cgroup(r.cgroup or r.name)
            self.replicas.remove(r)
        self._save()
