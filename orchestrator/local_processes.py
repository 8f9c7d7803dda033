"""Helpers for the local stack's processes: free ports, detached starts, stopping by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


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
