"""gunicorn settings of a sandbox replica (``gunicorn -c python:scalelab.sandbox.gunicorn_conf``):
each worker also answers ``/healthz`` and ``/metrics`` on ``$SANDBOX_CONTROL_PORT`` from a
thread of its own, so a replica whose request threads are all busy still tells the
balancer and Prometheus that it lives (the workers share the port: ``SO_REUSEPORT``).

**Slow clients** hold no request thread for long, and do not hold up the others
(:class:`ReplicaWorker`, gunicorn's threaded worker with two changes):

- a request -- headers and body -- must arrive within ``$SANDBOX_REQUEST_TIMEOUT``
  seconds (default 10) of its first byte, or it is answered 408 and its connection closed.
  gunicorn has no such setting: its ``timeout`` is the worker's heartbeat (a threaded
  worker's main loop beats while a thread waits on a client forever; a sync worker is
  killed, every request in it lost), and its threaded worker bounds only the wait for a
  connection's first byte (5 s), then reads with no timeout at all;
- a worker takes a connection only when one of its threads is free for it (at most
  ``threads`` connections, no keep-alive; gunicorn >= 24), so new connections wait in the
  listening socket's queue for whichever worker has a free thread; gunicorn's default
  (1000 connections a worker) queues them behind a worker's busy threads while another
  worker idles. (``reuse_port`` would not spread them: each worker then listens on a
  socket of its own, and the kernel hashes connections over the sockets, busy or not.)

In front of the local replicas HAProxy buffers each request whole before it picks a
replica (``orchestrator/haproxy.py``), so a dripping client never reaches one there.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time

from gunicorn import __version__ as gunicorn_version
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

#: No control socket (gunicorn >= 25.1 binds one fixed path per user, so every replica on
#: a host would rebind it and the first to stop would remove it under the others; nothing
#: here uses gunicornc). Older gunicorns ignore the unknown setting.
control_socket_disable = True

#: The replica's worker (below); ``--threads`` sets its threads, as for gunicorn's own.
worker_class = "scalelab.sandbox.gunicorn_conf.ReplicaWorker"


def request_timeout_s(environ=os.environ) -> float:
    """``$SANDBOX_REQUEST_TIMEOUT``: seconds a request may take to arrive, from its first byte."""
    raw = environ.get("SANDBOX_REQUEST_TIMEOUT", "10")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"SANDBOX_REQUEST_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


request_timeout_s()  # a bad value stops gunicorn as it starts, with the message


class RequestTimeout(NoMoreData):
    """The request did not arrive in time (gunicorn ends a connection quietly on
    ``NoMoreData``; the connection answered 408 first)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return f"the request did not arrive within {self.timeout_s:g} s of its first byte (SANDBOX_REQUEST_TIMEOUT)"


class DeadlineSocket(socket.socket):
    """A client's connection whose request must arrive within ``timeout_s`` of its first
    byte: every read waits at most until then, and at the deadline the request is answered
    408, the connection half-closed and its reading side shut (gunicorn then ends it as a
    client gone). Once an answer is sent, or the request was cut, reads are the caller's
    (the linger before a close): one request per connection, as the worker serves them."""

    timeout_s = 10.0
    deadline: float | None = None
    answered = cut = False

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.answered or self.cut:
            return super().recv(bufsize, flags)
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.timeout_s
        before = self.gettimeout()
        left = self.deadline - now
        if before is not None and before < left:  # the caller's own, shorter wait (or none)
            return super().recv(bufsize, flags)
        try:
            if left <= 0:
                raise TimeoutError
            self.settimeout(left)
            return super().recv(bufsize, flags)
        except TimeoutError:
            self._cut()
            raise RequestTimeout(self.timeout_s) from None
        finally:
            with contextlib.suppress(OSError):
                self.settimeout(before)

    def sendall(self, data, flags: int = 0) -> None:
        self.answered = True  # gunicorn writes answers with sendall (a 100 Continue with send)
        return super().sendall(data, flags)

    def _cut(self) -> None:
        self.cut = True
        why = RequestTimeout(self.timeout_s)
        try:
            peer = self.getpeername()
        except OSError:
            peer = "a client gone"
        print(f"sandbox: 408 to {peer}: {why}", file=sys.stderr, flush=True)
        body = f"{why}\n".encode()
        with contextlib.suppress(OSError):
            self.sendall(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        linger(self)


def linger(sock: socket.socket, timeout_s: float = 2.0, max_bytes: int = 65536) -> None:
    """Half-close ``sock`` and read what the client still sends, up to ``timeout_s`` and
    ``max_bytes`` (so that its last bytes do not make the close a reset that loses the
    answer), then shut the reading side: gunicorn's own close finds nothing to wait for
    (it lingers too, on the worker's main loop, which a client still dripping would stall)."""
    end = time.monotonic() + timeout_s
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < max_bytes and (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(4096)
            if not data:
                break
            drained += len(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class DeadlineListener(socket.socket):
    """A listening socket whose connections are :class:`DeadlineSocket` s."""

    timeout_s = 10.0

    def accept(self) -> tuple[DeadlineSocket, object]:
        conn, addr = super().accept()
        return take(DeadlineSocket, conn, self.timeout_s), addr


def take(cls: type, sock: socket.socket, timeout_s: float):
    """``sock``'s file descriptor as a ``cls`` socket with ``timeout_s`` (``sock`` lets go of it)."""
    timeout = sock.gettimeout()
    new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
    new.settimeout(timeout)
    new.timeout_s = timeout_s
    return new


#: gunicorn >= 24: the threaded worker hands a connection to a thread as it accepts it and,
#: at ``worker_connections``, only stops accepting. Before (23), it also stopped polling the
#: connections it had accepted, so a cap at ``threads`` would leave one waiting there for
#: a busy thread to finish: no cap then (the sandbox image pins a gunicorn >= 24).
CAPS_CONNECTIONS = hasattr(ThreadWorker, "set_accept_enabled")


class ReplicaWorker(ThreadWorker):
    """gunicorn's threaded worker, with a deadline on each request and a connection only
    for a free thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = 0  # every answer closes its connection (an idle one would hold a thread's place)
        if CAPS_CONNECTIONS:
            self.worker_connections = self.cfg.threads  # accept only for a free thread

    def init_process(self) -> None:
        """In the worker's process (the listeners are the arbiter's until the fork): its
        listeners accept connections with a request deadline."""
        if not CAPS_CONNECTIONS:
            self.log.warning("gunicorn %s: a worker takes connections while its threads are busy (gunicorn >= 24 "
                             "takes them only for a free thread)", gunicorn_version)
        timeout_s = request_timeout_s()
        for listener in self.sockets:  # gunicorn's listeners wrap a socket.socket as .sock
            if not isinstance(getattr(listener, "sock", None), socket.socket):
                raise TypeError(f"gunicorn's listener {listener!r} has no socket as .sock: the replica cannot "
                                "bound its requests' time (SANDBOX_REQUEST_TIMEOUT)")
            listener.sock = take(DeadlineListener, listener.sock, timeout_s)
        super().init_process()


def post_worker_init(worker) -> None:
    """Before the worker serves: prove it can seal and run a program (its health answer
    says why not, and fails, while it cannot; ``SANDBOX_PROVE=0`` skips it for a replica
    that only serves ``/compute``), then open the control port."""
    from scalelab.sandbox.app import application, start_control_listener

    if os.environ.get("SANDBOX_PROVE", "1") != "0":
        application.prove()
    port = os.environ.get("SANDBOX_CONTROL_PORT")
    if port:
        start_control_listener(application, int(port))
