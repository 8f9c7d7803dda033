"""Helpers for the local stack's processes: free ports, detached starts, stopping by pid
or by session (each process of a stack leads a session of its own: what it forks stays in
it), processes that die with the thread that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], log: Path, env: dict | None = None, preexec=None) -> int:
    """Start ``cmd`` detached (own session), output to ``log``; returns its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=preexec, close_fds=True)
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state, ppid, pgrp,
    session, ...), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | None) -> int | None:
    """When ``pid`` started (clock ticks after boot): with its pid, it names one process,
    not whichever process the pid is given to later. None if it is gone."""
    fields = _stat(pid) if pid else None
    return int(fields[19]) if fields else None


def reused(pid: int, start: int | None) -> bool:
    """``pid`` now names another process than the one that started at ``start``."""
    return alive(pid) and start is not None and start_time(pid) != start


def sessions_members(sids: Iterable[int]) -> dict[int, list[int]]:
    """The live processes of each session of ``sids`` (one pass over ``/proc``): the
    process that leads it, if alive, and whatever it started that did not leave the
    session (the kernel does not give the number to another process while any of them
    lives)."""
    out: dict[int, list[int]] = {sid: [] for sid in sids}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) in out:
                out[int(fields[3])].append(int(entry))
    return out


def session_members(sid: int) -> list[int]:
    """The live processes of session ``sid`` (:func:`sessions_members`)."""
    return sessions_members([sid])[sid]


def stop_sessions(leaders: Iterable[tuple[int, int | None]], timeout_s: float = 10.0) -> list[int]:
    """Stop the sessions led by ``leaders`` ((pid, start time) pairs): SIGTERM to every
    member, then SIGKILL to what is left after ``timeout_s``. A leader alive with another
    start time is another process that got the pid (its session is not touched). Returns
    the pids still alive."""
    sids = [pid for pid, start in leaders if not reused(pid, start)]

    def members() -> list[int]:
        for sid in sids:
            reap(sid)  # a leader that is this process's child is a zombie until reaped
        return sorted({p for ps in sessions_members(sids).values() for p in ps})

    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while members() and time.monotonic() < end:
            time.sleep(0.05)
    return members()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the thread
    that started it ends, the process's death by SIGKILL included (Linux
    ``PR_SET_PDEATHSIG``). Elsewhere it does nothing."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return lambda: None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(pid: int | None, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Signal ``pid``'s process group, wait, then SIGKILL it; True if it is gone."""
    if not pid:
        return True
    for s, wait in ((sig, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, s)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, s)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end:
            reap(pid)
            if not alive(pid):
                return True
            time.sleep(0.05)
    return not alive(pid)


def wait_http(url: str, timeout_s: float = 30.0, pid: int | None = None) -> bool:
    """Poll ``url`` until it answers 200 (False on timeout or if ``pid`` died)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pid is not None:
            reap(pid)
            if not alive(pid):
                return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
