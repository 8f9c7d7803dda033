"""The local live data plane: embedded Kafka, Prometheus, HAProxy and N sandbox replicas;
or, for the jobs architecture (``up(..., jobs=JobsStack(...))``), embedded Kafka with the
jobs and results topics, Prometheus and N runners (no balancer: runners pull their jobs).

``LocalStack(dir).up(n)`` starts everything as detached processes and records them in
``dir/stack.json``; ``status()`` reports one JSON document; ``down()`` stops everything
and checks that no process is left. Any process can take the stack over from its folder.
Each stack is also recorded in the user's registry of stacks
(:mod:`scalelab.orchestrator.stack_registry`), so :func:`down_all` (``scalelab live
down``) finds every stack, wherever its folder is and whether or not its owner lives.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from scalelab.errors import PermanentError
from scalelab.orchestrator import stack_registry
from scalelab.orchestrator.haproxy import HAProxy
from scalelab.orchestrator.kafka_embedded import fixed_port_env, topic_args
from scalelab.orchestrator.local_processes import alive, free_port, reap, spawn, stop
from scalelab.orchestrator.prometheus_local import LocalPrometheus
from scalelab.orchestrator.scalers.local import LocalRunnerScaler, LocalScaler, ReplicaSpec, RunnerSpec

#: The paper's topics (docs/architecture.md; the order vocabulary is in orchestrator/protocol.py).
TOPICS = ("action", "action_result", "state", "locust_order", "locust", "zipkin")


def create_topics(bootstrap: str, topics: tuple[str, ...], timeout_s: float = 10.0) -> None:
    """Create the topics up front (a metadata request per topic; the broker auto-creates
    them), so consumers that subscribe before the first message see them."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "allow.auto.create.topics": True})
    try:
        for t in topics:
            md = p.list_topics(topic=t, timeout=timeout_s)
            if t not in md.topics or (md.topics[t].error is not None and "UNKNOWN" in str(md.topics[t].error)):
                raise StackError(f"could not create Kafka topic {t!r} on {bootstrap}")
    finally:
        p.flush(1)


def _start_with_a_free_port(make, attempts: int = 3):
    """Start a server on a free port; another process may take the port between our
    probe and its bind, so try again with a new one."""
    for attempt in range(attempts):
        server = make(free_port())
        try:
            server.start()
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class JobsStack:
    """The jobs architecture on the local stack: the jobs and results topics with
    ``partitions`` partitions each, runners in consumer group ``group`` holding at most
    ``max_concurrent_jobs`` jobs at once."""

    partitions: int = 12
    max_concurrent_jobs: int = 5
    jobs_topic: str = "jobs"
    results_topic: str = "results"
    group: str = "runners"

    def runner(self) -> RunnerSpec:
        return RunnerSpec(self.jobs_topic, self.results_topic, self.group, self.max_concurrent_jobs)

    def topics(self) -> dict[str, int]:
        return {self.jobs_topic: self.partitions, self.results_topic: self.partitions}


class StackError(PermanentError, RuntimeError):
    """The local stack could not be brought up (the message names the part)."""


def default_dir() -> Path:
    return Path(os.environ.get("SCALELAB_LIVE_DIR", Path.home() / ".scalelab" / "live"))


class LocalStack:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory or default_dir())
        self.file = self.dir / "stack.json"
        self.state: dict = json.loads(self.file.read_text()) if self.file.exists() else {}

    # -- parts, rebuilt from the state
    @property
    def haproxy(self) -> HAProxy:
        h = self.state["haproxy"]
        return HAProxy(self.dir / "haproxy", h["port"], h["slots"], pid=h["pid"])

    @property
    def prometheus(self) -> LocalPrometheus:
        p = self.state["prometheus"]
        return LocalPrometheus(self.dir / "prometheus", p["port"], pid=p["pid"])

    @property
    def jobs(self) -> JobsStack | None:
        """The jobs architecture's settings; None on the service architecture."""
        return JobsStack(**self.state["jobs"]) if self.state.get("jobs") else None

    @property
    def scaler(self) -> LocalScaler:
        jobs = self.jobs
        if jobs is not None:
            return LocalRunnerScaler(self.dir / "replicas", ReplicaSpec(**self.state["spec"]), jobs.runner(),
                                     kafka_bootstrap=self.state["kafka"]["bootstrap"],
                                     targets_file=self.prometheus.targets_file, on_spawn=self._register)
        return LocalScaler(self.dir / "replicas", self.haproxy, ReplicaSpec(**self.state["spec"]),
                           kafka_bootstrap=self.state["kafka"]["bootstrap"],
                           targets_file=self.prometheus.targets_file, on_spawn=self._register)

    @property
    def service_url(self) -> str:
        """Where students send submissions: the balancer, or the broker of the jobs topic
        (``kafka://ADDRESS``)."""
        if self.state.get("jobs"):
            return f"kafka://{self.state['kafka']['bootstrap']}"
        return f"http://127.0.0.1:{self.state['haproxy']['port']}"

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file.write_text(json.dumps(self.state, indent=1))

    def _register(self, name: str, pid: int) -> None:
        """Add a process just started to the stack's record in the registry."""
        stack_registry.add(self.dir, {name: pid})

    # -- lifecycle
    def up(self, replicas: int = 1, spec: ReplicaSpec | None = None, slots: int = 20,
           owner_stops_on_sigterm: bool = False, jobs: JobsStack | None = None) -> dict:
        """Bring the stack up with ``replicas`` replicas (runners, with ``jobs``); this
        process is its owner in the registry (``owner_stops_on_sigterm``: SIGTERM makes this
        process stop the stack, so ``scalelab live down`` sends it one first, as a live
        run's owner)."""
        spec = spec or ReplicaSpec()
        if self.state and any(alive(self.state[k].get("pid")) for k in ("kafka", "prometheus", "haproxy")
                              if k in self.state):
            raise StackError(f"a stack is already up in {self.dir}; run `scalelab live down` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = {"spec": asdict(spec), "started": time.time()}
        if jobs is not None:
            self.state["jobs"] = asdict(jobs)
        stack_registry.add(self.dir, owner=stack_registry.this_process(owner_stops_on_sigterm))
        try:
            self.start_kafka()
            prom = _start_with_a_free_port(lambda port: LocalPrometheus(self.dir / "prometheus", port))
            self._register("prometheus", prom.pid)
            self.state["prometheus"] = {"pid": prom.pid, "port": prom.port, "url": prom.url}
            self._save()
            if jobs is None:
                hap = _start_with_a_free_port(lambda port: HAProxy(self.dir / "haproxy", port, slots))
                self._register("haproxy", hap.pid)
                self.state["haproxy"] = {"pid": hap.pid, "port": hap.port, "slots": slots}
                self._save()
            self.scaler.scale_to(replicas)
        except Exception:
            self.down()
            raise
        return self.status()

    def start_kafka(self, attempts: int = 3) -> str:
        """Start the embedded broker on a fixed port (the same one again after
        :meth:`kill_kafka`), create the topics; returns the bootstrap address."""
        log = self.dir / "kafka.log"
        for attempt in range(attempts):
            port = self.state.get("kafka", {}).get("port") or free_port()
            log.write_text("")
            jobs = self.jobs
            cmd = [sys.executable, "-m", "scalelab.orchestrator.kafka_embedded",
                   *(topic_args(jobs.topics()) if jobs is not None else [])]
            pid = spawn(cmd, log, env=fixed_port_env(port))
            self._register("kafka", pid)
            try:
                bootstrap = self._read_bootstrap(log, pid)
            except StackError:
                stop(pid)
                if attempt == attempts - 1 or "port" in self.state.get("kafka", {}):
                    raise
                continue
            if bootstrap != f"127.0.0.1:{port}":
                stop(pid)
                raise StackError(f"the embedded Kafka listens on {bootstrap}, not on port {port}; see {log}")
            self.state["kafka"] = {"pid": pid, "port": port, "bootstrap": bootstrap}
            self._save()
            create_topics(bootstrap, TOPICS)
            return bootstrap
        raise AssertionError("unreachable")

    def kill_kafka(self) -> None:
        """Kill the broker (SIGKILL, as a crash): its topics and groups are lost, its
        address stays reserved for :meth:`start_kafka`."""
        stop(self.state["kafka"]["pid"], sig=signal.SIGKILL)

    def heal(self) -> list[str]:
        """Start again, at the same address, the stack's Kafka and Prometheus if their
        process died; returns the names started (the replicas are the orchestrator's:
        it replaces dead ones)."""
        started = []
        if "kafka" in self.state:
            reap(self.state["kafka"]["pid"])
            if not alive(self.state["kafka"]["pid"]):
                self.start_kafka()
                started.append("kafka")
        if "prometheus" in self.state:
            p = self.state["prometheus"]
            reap(p["pid"])
            if not alive(p["pid"]):
                prom = LocalPrometheus(self.dir / "prometheus", p["port"])
                prom.start()
                self._register("prometheus", prom.pid)
                self.state["prometheus"] = {**p, "pid": prom.pid}
                self._save()
                started.append("prometheus")
        return started

    @staticmethod
    def _read_bootstrap(log: Path, pid: int, timeout_s: float = 20.0) -> str:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            line = log.read_text().strip().splitlines()
            if line and line[0].startswith("127.0.0.1:"):
                return line[0]
            if not alive(pid):
                break
            time.sleep(0.05)
        raise StackError(f"the embedded Kafka did not start; see {log}")

    def status(self) -> dict:
        if not self.state:
            return {"up": False, "dir": str(self.dir)}
        out = {"up": True, "dir": str(self.dir), "service": self.service_url,
               "kafka": {**self.state["kafka"], "alive": alive(self.state["kafka"]["pid"])}}
        if "prometheus" in self.state:
            p = self.state["prometheus"]
            targets = []
            try:
                with urllib.request.urlopen(f"{p['url']}/api/v1/targets", timeout=3) as r:
                    active = json.loads(r.read())["data"]["activeTargets"]
                targets = [{"instance": t["labels"].get("instance"), "replica": t["labels"].get("replica"),
                            "health": t["health"]} for t in active]
            except OSError as exc:
                targets = [{"error": f"prometheus did not answer: {exc}"}]
            out["prometheus"] = {**p, "alive": alive(p["pid"]), "targets": targets}
        if "jobs" in self.state:
            out["jobs"] = self.state["jobs"]
        if "haproxy" in self.state:
            out["haproxy"] = {**self.state["haproxy"], "alive": alive(self.state["haproxy"]["pid"])}
        if self._has_scaler():
            sc = self.scaler
            out["replicas"] = sc.status()
            out["ready_replicas"] = sc.ready_replicas
            out["cpu_limit_enforced"] = sc.cpu_limit_enforced
        return out

    def pids(self) -> list[int]:
        pids = [self.state[k]["pid"] for k in ("kafka", "prometheus", "haproxy") if k in self.state]
        if self._has_scaler():
            pids += [r.pid for r in self.scaler.replicas]
        return pids

    def down(self, owner_timeout_s: float = 180.0) -> list[int]:
        """Stop everything; returns the pids still alive afterwards (should be none).

        When another process owns the stack and stops it on SIGTERM (a live run), it gets
        one first, and up to ``owner_timeout_s`` to stop its agent, services and stack. Then
        the replicas leave the balancer and stop, then HAProxy, Prometheus and Kafka, and
        last every process the registry recorded for this folder (whatever else kept their
        sessions, the folder's state lost or not); the record goes once nothing is left."""
        rec = stack_registry.record(self.dir)
        if rec is not None:
            self._stop_owner(rec, owner_timeout_s)
        pids = self.pids() if self.state else []
        if self._has_scaler():
            try:
                self.scaler.stop_all()
            except Exception:
                pass
        for key in ("haproxy", "prometheus", "kafka"):
            if key in self.state:
                stop(self.state[key]["pid"])
        left = {p for p in pids if alive(p)}
        if rec is not None:
            left.update(stack_registry.stop_processes(stack_registry.record(self.dir) or rec))
        if not left:
            self.file.unlink(missing_ok=True)
            self.state = {}
            stack_registry.remove(self.dir)
        return sorted(left)

    def _has_scaler(self) -> bool:
        """Whether the stack got as far as its replicas' scaler (HAProxy, or the runners'
        Prometheus targets)."""
        return "haproxy" in self.state or ("jobs" in self.state and "prometheus" in self.state)

    def _stop_owner(self, rec: dict, timeout_s: float) -> None:
        owner = rec.get("owner") or {}
        if not owner.get("stops_on_sigterm") or owner["pid"] == os.getpid() or not stack_registry.owner_alive(rec):
            return
        os.kill(owner["pid"], signal.SIGTERM)
        end = time.monotonic() + timeout_s
        while stack_registry.owner_alive(rec) and time.monotonic() < end:
            time.sleep(0.1)
        self.state = json.loads(self.file.read_text()) if self.file.exists() else {}  # what the owner left


def down_all() -> list[dict]:
    """Stop every stack this user started: each in the registry (whatever its folder and
    whether its owner lives) and one in the default folder that has no record. One report
    per stack: its folder, its owner, the pids that were alive and those still alive."""
    dirs = [Path(r["dir"]) for r in stack_registry.records()]
    if (default_dir() / "stack.json").exists() and default_dir().resolve() not in dirs:
        dirs.append(default_dir())
    reports = []
    for d in dirs:
        stack, rec = LocalStack(d), stack_registry.record(d) or {}
        before = set(stack.pids() if stack.state else []) | set(stack_registry.alive_pids(rec) if rec else [])
        report = {"dir": str(d), "owner_pid": (rec.get("owner") or {}).get("pid"),
                  "owner_alive": bool(rec) and stack_registry.owner_alive(rec)}
        left = stack.down()
        reports.append({**report, "stopped": sorted(p for p in before if p not in left), "left": left})
    return reports


def stacks() -> list[dict]:
    """Every stack this user started (``scalelab live status``): the registry's record of
    each, with its owner's and processes' liveness, and the stack's status when its folder
    still holds its state."""
    out = []
    for rec in stack_registry.records():
        stack = LocalStack(Path(rec["dir"]))
        status = stack.status() if stack.state else {"up": False, "dir": rec["dir"],
                                                     "state": "the folder holds no stack.json"}
        owner = rec.get("owner") or {}
        out.append({**status, "owner": {**owner, "alive": stack_registry.owner_alive(rec)},
                    "alive_pids": stack_registry.alive_pids(rec)})
    return out
