"""The scaled service: a WSGI app served by gunicorn, one process tree per replica.

Routes:

``GET /compute?cpu=N``
    the paper's fixed CPU work (``/ConsumeFixedCpu?cpu=200`` did 200 × 1000 list
    append/pop iterations); answers ``{"cpu": N, "ms": ...}``.
``POST /run``
    a JSON body ``{"code": str, "language": "python", "stdin": str, "limits": {...}}``;
    the program runs sealed (:mod:`scalelab.sandbox.runner`); answers the run's JSON result.
``GET /healthz``
    ``ok`` (503 ``draining`` once the replica was told to drain).
``GET /metrics``
    Prometheus text with the names kube-state-metrics and cAdvisor use.

Every request emits a Zipkin SERVER span to Kafka (``KAFKA_BOOTSTRAP``), off the request
path. Settings come from the environment (``SANDBOX_*``, see :class:`Settings`).

Run one replica: ``gunicorn -w 2 -b 127.0.0.1:8080 scalelab.sandbox.app:application``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from urllib.parse import parse_qs

from scalelab.sandbox import usage
from scalelab.sandbox.runner import Limits, Sandbox, SandboxError, SandboxRequestError
from scalelab.sandbox.spans import SpanExporter, make_span

MAX_BODY = 1024 * 1024
#: The program a replica runs to prove it can (at its start, and while it cannot, again
#: at most every PROVE_EVERY_S seconds), with what it must print and small limits.
PROOF_PROGRAM, PROOF_OUTPUT = "print('sealed')", "sealed\n"
PROOF_LIMITS = Limits(cpu_seconds=2.0, wall_seconds=10.0, memory_mib=128, processes=8, file_size_kib=64,
                      output_bytes=4096)
PROVE_EVERY_S = 10.0
#: How deep a run request's JSON may nest, checked before it is parsed (its shape needs 2).
MAX_JSON_DEPTH = 32

#: The server's per-run limits: the defaults and the ceiling a request can only lower
#: (``SANDBOX_LIMITS``: JSON of :class:`scalelab.sandbox.runner.Limits` fields).
CEILING = Limits(**json.loads(os.environ.get("SANDBOX_LIMITS") or "{}"))
LIMIT_KEYS = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Settings:
    """Replica identity and resources (what the pod spec would say). Units: cores, MiB."""

    pod: str = field(default_factory=lambda: os.environ.get("SANDBOX_POD", f"sandbox-{os.getpid()}"))
    namespace: str = field(default_factory=lambda: os.environ.get("SANDBOX_NAMESPACE", "default"))
    container: str = field(default_factory=lambda: os.environ.get("SANDBOX_CONTAINER", "sandbox"))
    service: str = field(default_factory=lambda: os.environ.get("SANDBOX_SERVICE", "sandbox"))
    cpu_request: float = field(default_factory=lambda: float(os.environ.get("SANDBOX_CPU_REQUEST", "0.5")))
    cpu_limit: float = field(default_factory=lambda: float(os.environ.get("SANDBOX_CPU_LIMIT", "0.5")))
    memory_request_mib: float = field(default_factory=lambda: float(os.environ.get("SANDBOX_MEMORY_REQUEST_MIB", "512")))
    memory_limit_mib: float = field(default_factory=lambda: float(os.environ.get("SANDBOX_MEMORY_LIMIT_MIB", "512")))
    kafka_bootstrap: str | None = field(default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP") or None)
    allow_network: bool = field(default_factory=lambda: os.environ.get("SANDBOX_ALLOW_NETWORK", "") == "1")
    # the kernel's seal (scalelab.sandbox.seal): "1" required, "0" not (gVisor is the seal), unset: required as root
    require_seal: bool | None = field(default_factory=lambda: {"1": True, "0": False}.get(
        os.environ.get("SANDBOX_REQUIRE_SEAL", "")))
    cgroup_cpu: str | None = field(default_factory=lambda: os.environ.get("SANDBOX_CGROUP_CPU") or None)
    cgroup_memory: str | None = field(default_factory=lambda: os.environ.get("SANDBOX_CGROUP_MEMORY") or None)
    drain_file: str | None = field(default_factory=lambda: os.environ.get("SANDBOX_DRAIN_FILE") or None)
    root_pid: int = field(default_factory=lambda: int(os.environ.get("SANDBOX_ROOT_PID", "0")) or os.getppid())


def consume_fixed_cpu(n: int) -> None:
    """The paper's work unit: ``n`` × 1000 list append/pop pairs."""
    items: list[int] = []
    for _ in range(n):
        for i in range(1000):
            items.append(i)
            items.pop()


class App:
    """The WSGI application (one instance per worker process)."""

    def __init__(self, settings: Settings | None = None, exporter: SpanExporter | None = None) -> None:
        self.s = settings or Settings()
        self._exporter = exporter
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.proof: str | None = None  # None: not proved yet; "": it runs programs; else why it cannot
        self.proved_at = 0.0

    @property
    def exporter(self) -> SpanExporter:
        if self._exporter is None:
            with self._lock:
                if self._exporter is None:
                    self._exporter = SpanExporter(self.s.kafka_bootstrap)
        return self._exporter

    @property
    def sandbox(self) -> Sandbox:
        """The worker's sandbox, built once, under the lock (concurrent first requests
        wait for the one build instead of racing it)."""
        if self._sandbox is None:
            with self._lock:
                if self._sandbox is None:
                    self._sandbox = Sandbox(allow_network=self.s.allow_network, require_seal=self.s.require_seal)
        return self._sandbox

    def __call__(self, environ, start_response):
        t0 = time.time()
        p0 = time.perf_counter()
        path = environ.get("PATH_INFO", "/")
        status, headers, body = self.route(environ, path)
        start_response(status, headers)
        self.requests += 1
        if path in ("/metrics", "/healthz"):
            return [body]
        start = int(t0 * 1e6)
        queued = _queued_us(environ.get("HTTP_X_REQUEST_START"), start)
        name = f"{environ.get('REQUEST_METHOD', 'GET').lower()} {path}"
        code = int(status.split()[0])

        def finished() -> None:  # the server calls close() once the response is written
            dur = int((time.perf_counter() - p0) * 1e6)
            self.exporter.submit(make_span(self.s.service, name, start - queued, dur + queued, path, code))

        return _Body(body, finished)

    def route(self, environ, path: str):
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/compute" and method == "GET":
                return self.compute(environ)
            if path == "/run" and method == "POST":
                return self.run(environ)
            if path == "/healthz":
                return self.healthz()
            if path == "/metrics":
                return _text("200 OK", self.metrics(), "text/plain; version=0.0.4")
            return _json("404 Not Found", {"error": f"no route {method} {path}"})
        except SandboxError as exc:
            return _json("503 Service Unavailable", {"error": str(exc)})

    def compute(self, environ):
        q = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            n = int(q.get("cpu", ["200"])[0])
            if not 0 <= n <= 100_000:
                raise ValueError
        except ValueError:
            return _json("400 Bad Request", {"error": "cpu must be an integer in 0..100000"})
        t = time.perf_counter()
        consume_fixed_cpu(n)
        return _json("200 OK", {"cpu": n, "ms": round((time.perf_counter() - t) * 1000, 3)})

    def run(self, environ):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = -1
        if not 0 < size <= MAX_BODY:
            return _json("400 Bad Request", {"error": f"body must be 1..{MAX_BODY} bytes of JSON"})
        status, answer = self.submission(environ["wsgi.input"].read(size))
        return _json(status, answer)

    def submission(self, raw: bytes) -> tuple[str, dict]:
        """Run one submission, the JSON body of ``POST /run`` (``raw``): its status line
        and answer. The one run path of the service's replicas and of the jobs
        architecture's runners (:mod:`scalelab.sandbox.job_runner`): a malformed request is
        ``400`` naming what is wrong, a sandbox that cannot run programs ``503``."""
        try:
            if json_depth(raw) > MAX_JSON_DEPTH:
                raise ValueError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
            code = valid_text(req, "code", required=True)
            language = valid_text(req, "language", default="python")
            stdin = valid_text(req, "stdin", default="")
            asked = req.get("limits", {})
            if not isinstance(asked, dict):
                raise ValueError("'limits' must be a mapping")
            unknown = set(asked) - set(LIMIT_KEYS)
            if unknown:
                raise ValueError(f"unknown limits {sorted(unknown)}; known: {list(LIMIT_KEYS)}")
            # the server's limits are the ceiling: a request may only lower them
            limits = Limits(**{**asdict(CEILING), **asked}).within(CEILING)
        except (ValueError, TypeError, SandboxRequestError) as exc:  # JSON's errors and ours name what is wrong
            return "400 Bad Request", {"error": f"bad run request: {exc}"}
        try:
            result = self.sandbox.run(code, language, stdin, limits)
        except SandboxRequestError as exc:  # a language this replica does not run
            return "400 Bad Request", {"error": f"bad run request: {exc}"}
        except SandboxError as exc:
            return "503 Service Unavailable", {"error": str(exc)}
        return "200 OK", capped_answer(result, limits.output_bytes)

    def prove(self) -> str:
        """Build the sandbox and run a test program through it: ``""`` when it printed
        what it should, else why not (the sandbox cannot be built, or the run failed, with
        the first line of its stderr). Logged to stderr; :meth:`healthz` reports it."""
        try:
            result = self.sandbox.run(PROOF_PROGRAM, "python", "", PROOF_LIMITS)
            why = "" if result.stdout == PROOF_OUTPUT else (
                f"a test program failed (exit {result.exit_code}, signal {result.signal}, limit {result.limit}): "
                + (result.stderr.strip().splitlines() or ["no stderr"])[0][:300])
        except SandboxError as exc:
            why = f"the sandbox cannot be built: {exc}"[:400]
        self.proof, self.proved_at = why, time.monotonic()
        if why:
            print(f"sandbox replica {self.s.pod}: cannot run programs: {why}", file=sys.stderr, flush=True)
        return why

    def healthz(self):
        """503 while draining, or while the replica cannot run programs (its last
        :meth:`prove` failed; proved again at most every ``PROVE_EVERY_S`` while it
        fails, so a replica that recovers comes back); else 200."""
        if self.s.drain_file and os.path.exists(self.s.drain_file):
            return _text("503 Service Unavailable", "draining\n")
        if self.proof and time.monotonic() - self.proved_at >= PROVE_EVERY_S:
            self.prove()
        if self.proof:
            return _text("503 Service Unavailable", f"cannot run programs: {self.proof}\n")
        return _text("200 OK", "ok\n")

    def metrics(self) -> str:
        s = self.s
        measured = usage.cgroup_usage(s.cgroup_cpu, s.cgroup_memory) or usage.tree_usage(s.root_pid)
        cpu_s, mem_b = measured
        lbl = f'namespace="{s.namespace}",pod="{s.pod}",container="{s.container}"'
        ex = self._exporter
        lines = [
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
            "# TYPE container_cpu_usage_seconds_total counter",
            f"container_cpu_usage_seconds_total{{{lbl}}} {cpu_s:.6f}",
            "# HELP container_memory_working_set_bytes Current working set in bytes.",
            "# TYPE container_memory_working_set_bytes gauge",
            f"container_memory_working_set_bytes{{{lbl}}} {mem_b}",
            "# HELP kube_pod_container_resource_requests The number of requested resources by a container.",
            "# TYPE kube_pod_container_resource_requests gauge",
            f'kube_pod_container_resource_requests{{{lbl},resource="cpu",unit="core"}} {s.cpu_request}',
            f'kube_pod_container_resource_requests{{{lbl},resource="memory",unit="byte"}} '
            f"{int(s.memory_request_mib * 2**20)}",
            "# HELP kube_pod_container_resource_limits The number of limited resources by a container.",
            "# TYPE kube_pod_container_resource_limits gauge",
            f'kube_pod_container_resource_limits{{{lbl},resource="cpu",unit="core"}} {s.cpu_limit}',
            f'kube_pod_container_resource_limits{{{lbl},resource="memory",unit="byte"}} '
            f"{int(s.memory_limit_mib * 2**20)}",
            "# TYPE sandbox_spans_sent_total counter",
            f"sandbox_spans_sent_total{{{lbl}}} {ex.sent if ex else 0}",
            "# TYPE sandbox_spans_dropped_total counter",
            f"sandbox_spans_dropped_total{{{lbl}}} {ex.dropped if ex else 0}",
        ]
        return "\n".join(lines) + "\n"


def start_control_listener(app: App, port: int, host: str = "127.0.0.1"):
    """Serve ``/healthz`` and ``/metrics`` of ``app`` on ``port`` from a daemon thread
    (not the request pool: they answer while every request thread runs a program). The
    port may be shared by several processes (``SO_REUSEPORT``). Returns the server."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                status, headers, body = app.healthz()
            elif path == "/metrics":
                status, headers, body = _text("200 OK", app.metrics(), "text/plain; version=0.0.4")
            else:
                status, headers, body = _json("404 Not Found", {"error": f"no route GET {path} here"})
            self.send_response(int(status.split()[0]))
            for k, v in headers:
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        allow_reuse_port = True
        daemon_threads = True

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


class _Body:
    """A one-chunk WSGI body whose ``close()`` (called after the response is sent) ends
    the span, so the span covers writing the answer, as a sidecar's span does."""

    def __init__(self, body: bytes, on_close) -> None:
        self.body, self.on_close = body, on_close

    def __iter__(self):
        yield self.body

    def close(self) -> None:
        self.on_close()


def _queued_us(header: str | None, start_us: int) -> int:
    """Microseconds between the balancer's ``X-Request-Start: t=<ms>`` and the app's start
    (0 without a plausible header)."""
    if not header:
        return 0
    try:
        t_ms = int(header.split("=", 1)[-1])
    except ValueError:
        return 0
    queued = start_us - t_ms * 1000
    return queued if 0 <= queued <= 60_000_000 else 0


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of the JSON text ``raw`` nest (brackets inside
    strings do not count), without parsing it: a parser recurses per level."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def valid_text(req: dict, name: str, default: str | None = None, required: bool = False) -> str:
    """The request's field ``name``: a string of valid Unicode (no lone surrogate, so it
    can be written as UTF-8), else ``ValueError`` naming it."""
    if name not in req:
        if required:
            raise ValueError(f"'{name}' (a string) is required")
        return default
    value = req[name]
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"'{name}' is not valid Unicode: a lone surrogate at index {exc.start}") from None
    return value


def escaped_size(text: str) -> int:
    """The bytes ``text`` takes in the answer: its JSON string body, UTF-8 (a control
    character counts 6, as ``\\u00XX``; a non-ASCII character its UTF-8 bytes)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "replace")) - 2


def fit_escaped(text: str, cap: int) -> tuple[str, bool]:
    """The longest prefix of ``text`` whose :func:`escaped_size` is at most ``cap``
    bytes, and whether it was cut."""
    if escaped_size(text) <= cap:
        return text, False
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if escaped_size(text[:mid]) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


def capped_answer(result, output_bytes: int) -> dict:
    """``result`` as the answer's JSON object, each output cut to ``output_bytes`` as
    it is written in the answer (:func:`escaped_size`), so the answer is bounded by its
    caps: at most 2 x ``output_bytes`` of output and a few hundred bytes of fields."""
    out = result.to_dict()
    for stream in ("stdout", "stderr"):
        out[stream], cut = fit_escaped(out[stream], output_bytes)
        out[f"{stream}_truncated"] = out[f"{stream}_truncated"] or cut
    return out


def _json(status: str, obj) -> tuple[str, list, bytes]:
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace")  # UTF-8; never a lone surrogate
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body


def _text(status: str, text: str, ctype: str = "text/plain") -> tuple[str, list, bytes]:
    body = text.encode()
    return status, [("Content-Type", ctype), ("Content-Length", str(len(body)))], body


application = App()
