"""Every local stack this user started, wherever its folder is.

A stack's folder may be the default live folder (``scalelab live up``), a run folder's
``stack/`` (``scalelab live run``) or a temporary folder (the collectors). Each stack has
one record here, a JSON file in the registry folder (``$SCALELAB_STACKS_DIR``, default
``~/.scalelab/stacks``), so that ``scalelab live down`` finds them all, those whose owner
died (SIGKILL) or whose folder was removed included:

- ``dir``: the stack's folder;
- ``owner``: the process that brought it up (pid, start time, command line) and whether
  SIGTERM makes it stop the stack itself (a live run does);
- ``processes``: what the stack started (Kafka, Prometheus, HAProxy, each replica), each
  the leader of a session of its own, as its pid and start time: a pid the kernel gave to
  another process since is not taken for one of them.

:class:`scalelab.orchestrator.stack.LocalStack` adds each process as it starts it (from
whichever process starts it: the orchestrator replaces replicas) and removes the record
once its ``down`` left nothing alive. This module is the only one that reads or writes the
records.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from scalelab.orchestrator.local_processes import alive, reused, sessions_members, start_time, stop_sessions


def registry_dir() -> Path:
    return Path(os.environ.get("SCALELAB_STACKS_DIR") or Path.home() / ".scalelab" / "stacks")


def _file(stack_dir: Path) -> Path:
    key = hashlib.sha1(str(Path(stack_dir).resolve()).encode()).hexdigest()[:16]
    return registry_dir() / f"{key}.json"


@contextlib.contextmanager
def _locked():
    """One writer at a time (the owner and an orchestrator may add processes together)."""
    registry_dir().mkdir(parents=True, exist_ok=True)
    with open(registry_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def this_process(stops_on_sigterm: bool) -> dict:
    """The owner entry of a stack this process brings up."""
    return {"pid": os.getpid(), "start": start_time(os.getpid()), "command": " ".join(sys.argv)[:300],
            "stops_on_sigterm": stops_on_sigterm}


def add(stack_dir: Path, processes: dict[str, int] | None = None, owner: dict | None = None) -> None:
    """Record ``processes`` (name -> pid of a session leader just started) as the
    stack's; ``owner``: the stack is (again) brought up by that owner. Processes whose
    session has no live member any more are dropped on the way."""
    with _locked():
        f = _file(stack_dir)
        rec = json.loads(f.read_text()) if f.exists() else None
        rec = rec or {"dir": str(Path(stack_dir).resolve()), "owner": None, "started": time.time(), "processes": []}
        if owner is not None:
            rec.update(owner=owner, started=time.time())
        live = _members(rec["processes"])
        kept = [p for p in rec["processes"] if p["pid"] in live]
        rec["processes"] = kept + [{"name": n, "pid": pid, "start": start_time(pid)} for n, pid in (processes or {}).items()]
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(f)


def remove(stack_dir: Path) -> None:
    with _locked():
        _file(stack_dir).unlink(missing_ok=True)


def record(stack_dir: Path) -> dict | None:
    f = _file(stack_dir)
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        return None


def records() -> list[dict]:
    """Every record, oldest stack first (a record being replaced meanwhile is skipped)."""
    out = []
    for f in registry_dir().glob("*.json") if registry_dir().is_dir() else []:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            out.append(json.loads(f.read_text()))
    return sorted(out, key=lambda r: r.get("started", 0))


def _leader(p: dict) -> tuple[int, int | None]:
    return p["pid"], p.get("start")


def _members(processes: list[dict]) -> dict[int, list[int]]:
    """The live members of each recorded process's session, by its pid; none for a pid the
    kernel gave to another process since (alive, with another start time)."""
    ours = [p["pid"] for p in processes if not reused(p["pid"], p.get("start"))]
    return {pid: ms for pid, ms in sessions_members(ours).items() if ms}


def alive_pids(rec: dict) -> list[int]:
    """The live processes of the stack's recorded sessions."""
    return sorted({m for ms in _members(rec["processes"]).values() for m in ms})


def owner_alive(rec: dict) -> bool:
    owner = rec.get("owner") or {}
    return alive(owner.get("pid")) and start_time(owner["pid"]) == owner.get("start")


def stop_processes(rec: dict, timeout_s: float = 10.0) -> list[int]:
    """Stop every recorded session of the stack (SIGTERM, then SIGKILL); returns the pids
    still alive."""
    return stop_sessions([_leader(p) for p in rec["processes"]], timeout_s)
