"""A real HAProxy in front of the local replicas, driven through its runtime API.

The configuration declares ``slots`` server slots (``server-template``), all in
maintenance; the LocalScaler points a slot at a replica (``set server ... addr``) and
sets it ``ready``, or ``maint`` to drain it (no new requests; in-flight ones finish),
and reads ``show stat`` to see when a slot has no request left.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import socket
import tempfile
import time
from pathlib import Path

from scalelab.errors import PermanentError
from scalelab.orchestrator.local_processes import alive, reap, spawn, stop

BACKEND = "sandbox"

CONFIG = """global
    stats socket {sock} mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    # a request (headers and body) must arrive within request_timeout_s (5 s): a slow
    # body is cut here (408), never holding a replica's worker. A body larger than
    # HAProxy's buffer (16 kB, far above a submission) is forwarded as it arrives: the
    # replica's own deadline (SANDBOX_REQUEST_TIMEOUT, sandbox/gunicorn_conf.py) bounds it
    timeout http-request {request_timeout_ms}ms
    option http-server-close
frontend web
    bind 127.0.0.1:{port}
    # the whole request is read before a replica is picked: a dripping client never reaches one
    option http-buffer-request
    # when the balancer took the request: the replica's span starts there, as a
    # sidecar proxy's span does (queueing in the replica counts)
    http-request set-header X-Request-Start t=%[date(0,ms)]
    default_backend {backend}
backend {backend}
    balance {balance}
    # retry only what never reached a replica: a POST /run a replica took is never sent twice
    retry-on conn-failure
    retries 3
    # a replica that fails its health check 3 times in a row is taken out until it passes
    # again; a check may take 10 s (a replica busy with long runs answers late, not never)
    option httpchk GET /healthz
    timeout check 10s
    default-server inter 1s fall 3 rise 1
    server-template s 1-{slots} 127.0.0.1:1 disabled check
"""


class HAProxyError(PermanentError, RuntimeError):
    """HAProxy is missing, did not start, or refused a runtime command."""


class HAProxy:
    """One HAProxy process; ``port`` is the service address, ``sock`` the admin socket."""

    def __init__(self, workdir: Path, port: int, slots: int = 20, balance: str = "leastconn",
                 pid: int | None = None, request_timeout_s: float = 5.0) -> None:
        self.dir, self.port, self.slots, self.balance, self.pid = Path(workdir), port, slots, balance, pid
        self.request_timeout_s = request_timeout_s
        # unix socket paths are short (HAProxy: 97 characters): keep it in the temp dir
        digest = hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:12]
        self.sock = Path(tempfile.gettempdir()) / f"scalelab-haproxy-{digest}.sock"

    def start(self, timeout_s: float = 30.0) -> None:
        exe = shutil.which("haproxy")
        if exe is None:
            raise HAProxyError("haproxy is not installed (apt-get install haproxy)")
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(CONFIG.format(sock=self.sock, port=self.port, backend=BACKEND, balance=self.balance,
                                     slots=self.slots, request_timeout_ms=round(self.request_timeout_s * 1000)))
        self.pid = spawn([exe, "-db", "-f", str(cfg)], self.dir / "haproxy.log")
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                self.command("show info")
                return
            except (OSError, HAProxyError):
                reap(self.pid)
                if not alive(self.pid):
                    break
                time.sleep(0.05)
        raise HAProxyError(f"haproxy did not open its admin socket; see {self.dir / 'haproxy.log'}")

    def stop(self) -> None:
        stop(self.pid)

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        out = b"".join(chunks).decode()
        if out.lower().startswith(("unknown", "no such", "require")) or "invalid" in out.lower()[:80]:
            raise HAProxyError(f"haproxy refused {cmd!r}: {out.strip()}")
        return out

    def enable(self, slot: int, port: int, check_port: int | None = None) -> None:
        """Requests to ``slot`` go to ``port``; its health checks to ``check_port`` (the
        replica's control listener) when given."""
        self.command(f"set server {BACKEND}/s{slot} addr 127.0.0.1 port {port}")
        if check_port is not None:
            self.command(f"set server {BACKEND}/s{slot} check-port {check_port}")
        self.command(f"set server {BACKEND}/s{slot} state ready")

    def disable(self, slot: int) -> None:
        """No new requests to the slot; in-flight ones continue."""
        self.command(f"set server {BACKEND}/s{slot} state maint")

    def stats(self) -> dict[str, dict]:
        """``show stat`` rows of the backend's servers, by server name."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r.get("pxname") == BACKEND and r["svname"] not in ("BACKEND", "FRONTEND")}

    def in_flight(self, slot: int) -> int:
        return int(self.stats().get(f"s{slot}", {}).get("scur") or 0)

    def in_flight_ages_s(self) -> list[float]:
        """Ages of the requests the backend's servers are serving now, s (``show sess``)."""
        return session_ages_s(self.command("show sess"), BACKEND)


_AGE_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}


def session_ages_s(show_sess: str, backend: str) -> list[float]:
    r"""From HAProxy's ``show sess`` output, the ages (s) of the streams that have a server
    of ``backend`` assigned (a request in flight there; idle keep-alive streams have
    none). Ages are HAProxy's human times (``age=1m5s``), to the second.

    >>> session_ages_s("0x1: proto=tcpv4 src=127.0.0.1:5 fe=sandbox be=sandbox srv=s2 ts=00 age=1m5s calls=3\n"
    ...                "0x2: proto=tcpv4 src=127.0.0.1:6 fe=sandbox be=sandbox srv=<NONE> ts=00 age=9s calls=1",
    ...                "sandbox")
    [65.0]
    """
    ages = []
    for line in show_sess.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part and not part.startswith("rq["))
        if fields.get("be") != backend or not fields.get("srv", "<NONE>").startswith("s"):
            continue
        age, total, num = fields.get("age", ""), 0.0, ""
        k = 0
        while k < len(age):
            if age[k].isdigit():
                num += age[k]
                k += 1
                continue
            unit = age[k : k + 2] if age[k : k + 2] in ("ms", "us") else age[k]
            total += float(num or 0) * _AGE_UNITS.get(unit, 0.0)
            num, k = "", k + len(unit)
        ages.append(total)
    return ages
