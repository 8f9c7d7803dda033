"""The sandbox service: sealed runs of hostile programs, the WSGI routes, and a real
gunicorn replica on loopback."""

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from wsgiref.util import setup_testing_defaults

import pytest

from scalelab.sandbox.app import App, Settings, consume_fixed_cpu
from scalelab.sandbox.runner import Limits, Sandbox, network_isolation_available
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(os.getuid() != 0 or not network_isolation_available(),
                                reason="the sealed runner needs root and network namespaces")

LIM = Limits(cpu_seconds=1, wall_seconds=3, memory_mib=256, processes=16, file_size_kib=512, output_bytes=65536)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox()


def uid_processes(uid):
    """Live (not zombie) processes of the user ``uid``."""
    rows = subprocess.run(["ps", "-eo", "uid=,stat="], capture_output=True, text=True).stdout.splitlines()
    return [r for r in rows if int(r.split()[0]) == uid and not r.split()[1].startswith("Z")]


HOSTILE = {
    "fork-bomb": ("import os\nwhile True:\n    os.fork()", "processes"),
    "memory-bomb": ("x = []\nwhile True:\n    x.append(bytearray(10**7))", "memory"),
    "infinite-loop": ("while True:\n    pass", "cpu"),
    "output-flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)", None),
    "sleep-forever": ("import time\ntime.sleep(60)", "wall"),
    "big-file": ("open('f', 'wb').write(b'x' * 10**7)", "file_size"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_gets_a_clear_result_and_leaves_nothing(sandbox, name):
    code, limit = HOSTILE[name]
    r = sandbox.run(code, limits=LIM)
    if name == "output-flood":
        # the CPU limit ends it, or the wall clock when a loaded machine starves it of CPU
        assert r.stdout_truncated and len(r.stdout) == LIM.output_bytes and r.limit in ("cpu", "output", "wall")
    else:
        assert r.limit == limit, r
    if r.limit == "wall":  # the deadline ended it (sleep(60) would end by itself), and not before its time
        assert r.wall_ms >= 1000 * LIM.wall_seconds
    # how soon after the deadline the kill comes is a speed figure: benchmarks/bench_sandbox.py
    assert r.uid is not None and not uid_processes(r.uid)  # every process of the run was killed


def test_sockets_and_outside_files_are_denied(sandbox):
    """A network socket is refused by the kernel's filter, which the supervisor answers
    and records (``denied``); the audit hook refuses files outside and ctypes (its
    PermissionError in stderr: the program's own process says so, so it is not a
    verdict, and ``denied`` stays empty)."""
    r = sandbox.run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", limits=LIM)
    assert r.exit_code == 1 and r.denied == ["network"], r
    r = sandbox.run("print(open('/etc/passwd').read())", limits=LIM)
    assert r.exit_code == 1 and r.denied == [] and "PermissionError" in r.stderr and "root:" not in r.stdout
    r = sandbox.run("import ctypes\nctypes.CDLL(None)", limits=LIM)
    assert r.exit_code == 1 and r.denied == [] and "ctypes" in r.stderr


def test_denials_are_what_the_filter_refused_never_what_the_program_printed():
    """Issue 30, finding 5: a program printing the audit hook's words gets no denial; one
    making the refused calls (past the hook) gets each kind the supervisor answered."""
    forged = Sandbox().run("import sys\nprint('sandbox: denied: socket.connect is not allowed', file=sys.stderr)\n"
                           "print('sandbox: denied: file access outside the sandbox', file=sys.stderr)", limits=LIM)
    assert forged.exit_code == 0 and forged.denied == [], forged
    from tests.test_sandbox_hostile import unhooked

    code = ("import ctypes, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.ptrace(0, 0, 0, 0), libc.unshare(0x10000000), libc.mount(b'x', b'/work', b'tmpfs', 0, 0))\n"
            "try:\n    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\nexcept OSError as e:\n    print(e.errno)\n")
    r = unhooked().run(code, limits=LIM)
    assert r.exit_code == 0 and r.stdout.split() == ["-1", "-1", "-1", "97"], r  # 97: EAFNOSUPPORT
    assert r.denied == ["mount", "namespace", "network", "ptrace"], r


def test_the_network_namespace_is_empty_even_without_the_python_hook():
    # the shell alone (its builtins: a sealed run's root holds no other program)
    sh = Sandbox(languages={"sh": ["/bin/sh", "main.sh"]})
    r = sh.run("{ read a; read b; while IFS=: read name rest; do echo $name; done; } < /proc/net/dev",
               language="sh", limits=LIM)
    assert r.stdout.split() == ["lo"], r


def test_a_good_program_runs_with_stdin_and_its_directory_is_removed(sandbox):
    import tempfile

    before = set(os.listdir(tempfile.gettempdir()))
    r = sandbox.run("import os\nprint(input()[::-1], os.getcwd())\nopen('out.txt', 'w').write('ok')",
                    stdin="olleh\n", limits=LIM)
    assert r.exit_code == 0 and r.limit is None and r.stdout == "hello /work\n"  # its own view: /work
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("scalelab-run-")}
    assert not left  # its directory on the host is gone
    assert r.cpu_ms > 0


def call(app, method, path, query="", body=b""):
    env = {}
    setup_testing_defaults(env)
    env.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query, CONTENT_LENGTH=str(len(body)))
    env["wsgi.input"] = io.BytesIO(body)
    got = {}
    out = app(env, lambda status, headers: got.update(status=status, headers=headers))
    body = b"".join(out)
    if hasattr(out, "close"):
        out.close()  # as a WSGI server does once the response is sent
    return int(got["status"].split()[0]), body


def test_wsgi_routes():
    app = App(Settings(pod="p1", namespace="ns"))
    code, body = call(app, "GET", "/compute", "cpu=10")
    assert code == 200 and json.loads(body)["cpu"] == 10
    assert call(app, "GET", "/compute", "cpu=abc")[0] == 400
    assert call(app, "GET", "/healthz")[1] == b"ok\n"
    code, body = call(app, "POST", "/run", body=json.dumps({"code": "print(6*7)"}).encode())
    assert code == 200 and json.loads(body)["stdout"] == "42\n"
    assert call(app, "POST", "/run", body=b"{not json")[0] == 400
    assert call(app, "POST", "/run", body=json.dumps({"code": "1", "language": "cobol"}).encode())[0] == 400
    assert call(app, "POST", "/run", body=json.dumps({"code": "1", "limits": {"cpu_seconds": -1}}).encode())[0] == 400
    code, body = call(app, "GET", "/metrics")
    text = body.decode()
    for name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                 "kube_pod_container_resource_requests", "kube_pod_container_resource_limits"):
        assert f'{name}{{namespace="ns",pod="p1",container="sandbox"' in text
    # no broker configured: the spans are counted as dropped, off the request path
    wait_for(lambda: app.exporter.dropped >= 3, 60, "the exporter to count the spans as dropped")
    assert app.exporter.sent == 0


def test_compute_is_the_papers_work_unit():
    """``/compute?cpu=n``: n x 1000 list append/pop pairs (the paper's
    ``ConsumeFixedCpu``), counted as the interpreter calls them; its speed is
    benchmarks/bench_sandbox.py's."""
    from collections import Counter

    for n in (0, 1, 7):
        calls: Counter = Counter()

        def count(frame, event, arg, calls=calls):
            if event == "c_call":
                calls[getattr(arg, "__qualname__", "")] += 1

        sys.setprofile(count)
        try:
            consume_fixed_cpu(n)
        finally:
            sys.setprofile(None)
        assert (calls["list.append"], calls["list.pop"]) == (1000 * n, 1000 * n)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.live
def test_gunicorn_replica_survives_hostile_programs(tmp_path):
    port = free_port()
    env = {**os.environ, "SANDBOX_POD": "replica-0"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "--timeout", "30", "scalelab.sandbox.app:application"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/healthz"), 60, "gunicorn to answer /healthz")
        for name, (code, limit) in sorted(HOSTILE.items()):
            req = urllib.request.Request(url + "/run", data=json.dumps(
                {"code": code, "limits": dataclasses.asdict(LIM)}).encode(),
                headers={"Content-Type": "application/json"})
            got = json.loads(urllib.request.urlopen(req, timeout=60).read())["limit"]
            # the limit the sealed run reports in-process (the first test), now over HTTP
            assert got in (("cpu", "output", "wall") if name == "output-flood" else (limit,)), (name, got)
            assert urllib.request.urlopen(url + "/healthz", timeout=30).read() == b"ok\n"
        metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
        cpu = float(next(ln for ln in metrics.splitlines() if ln.startswith("container_cpu_usage")).split()[-1])
        assert cpu > 1.0  # the sandboxed runs' CPU counts toward the replica
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).read()
        return True
    except OSError:
        return False


def test_health_and_metrics_answer_while_every_request_thread_runs_a_program():
    """The control port answers while the replica's only request thread runs an 8-s
    program: both answers arrive while the program still runs (generous timeouts: how
    fast they come is benchmarks/bench_sandbox.py's figure)."""
    import threading

    port, control = free_port(), free_port()
    env = {**os.environ, "SANDBOX_POD": "replica-busy", "SANDBOX_CONTROL_PORT": str(control)}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "1", "-b", f"127.0.0.1:{port}",
                             "--timeout", "30", "-c", "python:scalelab.sandbox.gunicorn_conf", "scalelab.sandbox.app:application"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{control}/healthz"), 60, "the control port to answer")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/run", data=json.dumps(
            {"code": "import time\ntime.sleep(8)", "limits": {"wall_seconds": 10}}).encode())
        busy = threading.Thread(target=lambda: urllib.request.urlopen(req, timeout=60).read())
        busy.start()  # the replica's only request thread now runs a program for 8 s
        from scalelab.sandbox import seal

        runs = [seal.CGROUP_ROOT / seal.GROUP, seal.run_group_base("pids")]  # the replica is in this one's cgroups
        wait_for(lambda: any(d.is_dir() and any(x.name.startswith("run-") for x in d.iterdir()) for d in runs),
                 60, "the program to start")
        assert urllib.request.urlopen(f"http://127.0.0.1:{control}/healthz", timeout=30).read() == b"ok\n"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{control}/metrics", timeout=30).read().decode()
        assert "container_cpu_usage_seconds_total" in metrics
        assert busy.is_alive()  # answered while the program was still running (not queued behind it)
        busy.join(timeout=60)
        assert not busy.is_alive()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_span_starts_when_the_balancer_took_the_request():
    from scalelab.sandbox.app import _queued_us

    assert _queued_us("t=1000", 1_005_000) == 5_000  # 5 ms between HAProxy and the app
    assert _queued_us(None, 1_000_000) == 0
    assert _queued_us("t=garbage", 1_000_000) == 0
    assert _queued_us("t=2000", 1_000_000) == 0  # from the future: ignored


@pytest.mark.live
def test_a_replica_that_cannot_run_programs_fails_its_health_check(tmp_path):
    """Issue 30, finding 13: a replica whose runs all fail -- here its interpreter lies in
    a folder the run uids cannot traverse (mode 0700), so bwrap cannot bind it -- says so on
    its health answer (503 and why) instead of taking students; a healthy replica answers
    ok."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "python3").symlink_to(os.path.realpath(sys.executable))
    answers = {}
    for name, python in (("healthy", None), ("closed", closed / "python3")):
        port, control = free_port(), free_port()
        env = {**os.environ, "SANDBOX_POD": f"replica-{name}", "SANDBOX_CONTROL_PORT": str(control)}
        if python is not None:
            env["SCALELAB_SANDBOX_PYTHON"] = str(python)
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                                 "--timeout", "30", "-c", "python:scalelab.sandbox.gunicorn_conf",
                                 "scalelab.sandbox.app:application"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{control}/healthz"
            wait_for(lambda url=url: _status(url) is not None, 60, f"the {name} replica's control port")
            answers[name] = _status(url)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        answers[name + "-log"] = err.decode(errors="replace")
    assert answers["healthy"] == (200, "ok\n")
    code, text = answers["closed"]
    assert code == 503 and text.startswith("cannot run programs: the sandbox cannot be built: a run could not "
                                           "start"), text
    assert "Permission denied" in text, text  # bubblewrap's reason: the run uids cannot reach that Python
    assert "replica-closed: cannot run programs" in answers["closed-log"]


def _status(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None
