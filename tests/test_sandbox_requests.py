"""Issue 30, findings 8, 9 and 11: every malformed run request gets a 400 naming the
field (not a 500), stdin and output of a valid one are delivered and capped, the answer
is bounded by its caps, and a worker builds its sandbox once. The app is called in
process; where a program would run, a stand-in sandbox records what it was given."""

import fcntl
import json
import os
import threading

import pytest

from scalelab.sandbox.app import App, Settings, escaped_size, fit_escaped, json_depth
from scalelab.sandbox.runner import Limits, RunResult, SandboxRequestError
from tests.test_sandbox import call


class Recorder:
    """Stands in for the sandbox: remembers the run it was asked for and answers with
    its output (given by the test)."""

    def __init__(self, stdout: str = "", stderr: str = "") -> None:
        self.languages = {"python": ["python3"]}
        self.asked, self.stdout, self.stderr = [], stdout, stderr

    def run(self, code, language="python", stdin="", limits=None):
        if language not in self.languages:
            raise SandboxRequestError(f"language {language!r} is not one of {sorted(self.languages)}")
        self.asked.append((code, language, stdin, limits))
        return RunResult(0, None, self.stdout, self.stderr, False, False, 1.0, 1.0)


def app_with(recorder: Recorder) -> App:
    app = App(Settings(pod="p", namespace="ns", kafka_bootstrap=None))
    app._sandbox = recorder
    return app


def post(app, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, answer = call(app, "POST", "/run", body=raw)
    return code, json.loads(answer)


@pytest.mark.parametrize(("body", "field"), [
    ({"code": "1", "limits": {"cpu_seconds": 10**400}}, "limits.cpu_seconds"),
    ({"code": "1", "limits": {"memory_mib": 10**400}}, "limits.memory_mib"),
    ({"code": "1", "limits": {"memory_mib": 100.5}}, "limits.memory_mib counts MiB: a whole number"),
    ({"code": "1", "limits": {"processes": 2.5}}, "limits.processes counts processes"),
    ({"code": "1", "limits": {"file_size_kib": 0.5}}, "limits.file_size_kib"),
    ({"code": "1", "limits": {"output_bytes": 1000.25}}, "limits.output_bytes counts bytes"),
    ({"code": "1", "limits": {"wall_seconds": True}}, "limits.wall_seconds must be a number"),
    ({"code": "1", "limits": {"wall_seconds": "3"}}, "limits.wall_seconds must be a number"),
    ({"code": "1", "language": ["python"]}, "'language' must be a string, got list"),
    ({"code": "1", "language": {"python": 1}}, "'language' must be a string, got dict"),
    ({"code": "1", "language": "cobol"}, "language 'cobol' is not one of ['python']"),
    ({"code": 3}, "'code' must be a string, got int"),
    ({"stdin": "x"}, "'code' (a string) is required"),
    ({"code": "1", "stdin": ["x"]}, "'stdin' must be a string, got list"),
    ([1, 2], "the body must be a JSON object"),
])
def test_a_malformed_request_gets_a_400_naming_the_field(body, field):
    rec = Recorder()
    code, answer = post(app_with(rec), body)
    assert code == 400 and field in answer["error"], answer
    assert rec.asked == []  # nothing ran


def test_lone_surrogates_and_deep_json_are_refused_before_anything_runs():
    rec = Recorder()
    app = app_with(rec)
    code, answer = post(app, b'{"code": "print(1)\\ud800"}')  # valid JSON, not valid Unicode
    assert code == 400 and "'code' is not valid Unicode: a lone surrogate at index 8" in answer["error"]
    code, answer = post(app, b'{"code": "1", "stdin": "\\udc00"}')
    assert code == 400 and "'stdin' is not valid Unicode" in answer["error"]
    deep = b'{"code": "1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    code, answer = post(app, deep)
    assert code == 400 and "nests deeper than 32 levels" in answer["error"]
    assert rec.asked == []


def test_a_valid_request_is_delivered_whole_with_whole_limits():
    rec = Recorder(stdout="42\n")
    code, answer = post(app_with(rec), {"code": "print(6*7)", "stdin": "é" * 3, "language": "python",
                                        "limits": {"memory_mib": 128.0, "output_bytes": 4096}})
    assert code == 200 and answer["stdout"] == "42\n"
    ((code_run, language, stdin, limits),) = rec.asked
    assert (code_run, language, stdin) == ("print(6*7)", "python", "ééé")
    assert limits.memory_mib == 128 and isinstance(limits.memory_mib, int) and limits.output_bytes == 4096


def test_the_answer_is_bounded_by_its_caps_as_written():
    # 256 KiB of control bytes on each stream: 6 bytes each in JSON (\u0001), 3 MB unbounded
    flood = "\x01" * (256 * 1024)
    app = app_with(Recorder(stdout=flood, stderr=flood))
    code, raw = call(app, "POST", "/run", body=json.dumps({"code": "1", "limits": {"output_bytes": 65536}}).encode())
    answer = json.loads(raw)
    assert code == 200 and answer["stdout_truncated"] and answer["stderr_truncated"]
    assert escaped_size(answer["stdout"]) <= 65536 and len(answer["stdout"]) == 65536 // 6
    assert len(raw) <= 2 * 65536 + 1024  # two capped streams and the fields


def test_escaping_counts_as_written():
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3  # brackets in strings do not count
    assert escaped_size("ab") == 2 and escaped_size("\x00") == 6 and escaped_size("é") == 2 and escaped_size('"') == 2
    text, cut = fit_escaped("a\x01b" * 10, 14)
    assert cut and text == "a\x01ba"  # 1 + 6 + 1 + 1 = 9 bytes; the next character, \x01, would make 15
    assert fit_escaped("short", 100) == ("short", False)


def test_limits_are_checked_where_they_are_made():
    assert Limits(memory_mib=64.0).memory_mib == 64
    with pytest.raises(SandboxRequestError, match=r"limits\.cpu_seconds must be a finite number in \(0, "):
        Limits(cpu_seconds=float("inf"))
    with pytest.raises(SandboxRequestError, match=r"limits\.processes must be a finite number"):
        Limits(processes=0)


def test_a_worker_builds_its_sandbox_once_under_concurrent_first_requests(monkeypatch):
    import scalelab.sandbox.app as app_module

    built = []
    gate = threading.Event()

    class Slow(Recorder):
        def __init__(self, **kwargs):
            super().__init__()
            built.append(self)
            gate.wait(5)  # the build takes a while: every thread arrives during it

    monkeypatch.setattr(app_module, "Sandbox", Slow)
    app = App(Settings(pod="p", namespace="ns", kafka_bootstrap=None))
    got = []
    threads = [threading.Thread(target=lambda: got.append(app.sandbox)) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and len(got) == 8 and all(s is built[0] for s in got)


def test_replicas_do_not_share_gunicorns_control_socket():
    """Issue 30, finding 12: the replicas' gunicorn config turns the control socket off,
    with a setting the installed gunicorn knows (else it would be ignored silently)."""
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from scalelab.sandbox import gunicorn_conf

    known = {s.name for s in gunicorn_config.KNOWN_SETTINGS}
    assert "post_worker_init" in known
    if "control_socket_disable" in known:  # gunicorn >= 25.1
        assert gunicorn_conf.control_socket_disable is True


def test_a_replica_that_cannot_run_programs_says_so_and_is_unhealthy_until_it_can(monkeypatch):
    """Issue 30, finding 13: the proof run at a worker's start fails, so /healthz answers
    503 with the reason (the balancer stops sending students); proved again at most every
    PROVE_EVERY_S while it fails, it comes back once a run works."""
    import scalelab.sandbox.app as app_module

    now = [1000.0]
    monkeypatch.setattr(app_module.time, "monotonic", lambda: now[0])

    class Broken(Recorder):
        def run(self, code, language="python", stdin="", limits=None):
            self.asked.append((code, language, stdin, limits))
            if self.stdout:
                return RunResult(0, None, self.stdout, "", False, False, 1.0, 1.0)
            return RunResult(1, None, "", "bwrap: Can't find source path /tmp/x/run-1: Permission denied\n",
                             False, False, 1.0, 1.0)

    broken = Broken()
    app = app_with(broken)
    assert call(app, "GET", "/healthz") == (200, b"ok\n")  # not proved yet (an app outside gunicorn)
    assert app.prove().startswith("a test program failed (exit 1, signal None, limit None): bwrap: Can't find")
    code, body = call(app, "GET", "/healthz")
    assert code == 503 and b"cannot run programs: a test program failed" in body and len(broken.asked) == 1
    broken.stdout = "sealed\n"  # the run would work now, but it is not proved again before 10 s
    assert call(app, "GET", "/healthz")[0] == 503 and len(broken.asked) == 1
    now[0] += 10.0
    assert call(app, "GET", "/healthz") == (200, b"ok\n") and len(broken.asked) == 2
    assert call(app, "GET", "/healthz") == (200, b"ok\n") and len(broken.asked) == 2  # healthy: not run again


def test_a_replica_whose_sandbox_cannot_be_built_is_unhealthy(monkeypatch):
    import scalelab.sandbox.app as app_module
    from scalelab.sandbox.runner import SandboxError

    def refuse(**kwargs):
        raise SandboxError("cannot create a network namespace here")

    monkeypatch.setattr(app_module, "Sandbox", refuse)
    app = App(Settings(pod="p", namespace="ns", kafka_bootstrap=None))
    assert app.prove() == "the sandbox cannot be built: cannot create a network namespace here"
    assert call(app, "GET", "/healthz")[0] == 503


LEASE_HOLDER = """
import sys, threading, time
from scalelab.sandbox.runner import UidLease
leases, lock = [], threading.Lock()
def take():
    lease = UidLease()
    with lock:
        leases.append(lease)
threads = [threading.Thread(target=take) for _ in range(int(sys.argv[1]))]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(str(l.uid) for l in leases), flush=True)
sys.stdin.read()  # hold the leases until told to go (then die holding them)
"""


def test_run_uids_never_collide_across_workers_and_come_back_when_a_holder_dies(tmp_path, monkeypatch):
    """Issue 30, finding 7: uids are leased host-wide (an flock per uid), so runs of
    different workers and replicas never share one; a worker that dies gives its back."""
    import subprocess
    import sys

    from scalelab.sandbox.runner import UID_BASE, UID_COUNT, UidLease

    monkeypatch.setenv("SANDBOX_UID_LEASES", str(tmp_path / "leases"))
    workers = [subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, "16"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(6)]
    held = [set(map(int, w.stdout.readline().split())) for w in workers]
    everyone = set().union(*held)
    assert len(everyone) == 6 * 16 and all(UID_BASE <= u < UID_BASE + UID_COUNT for u in everyone)
    mine = UidLease()  # this process too: not one of theirs
    assert mine.uid not in everyone
    # a worker dies holding its leases: the kernel drops its locks, its uids can be taken again;
    # a live worker's cannot
    workers[0].kill()
    workers[0].wait()

    def free(uid: int) -> bool:
        fd = os.open(tmp_path / "leases" / str(uid), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    assert all(free(uid) for uid in held[0]) and not any(free(uid) for uid in held[1])
    mine.release()
    assert free(mine.uid)
    for w in workers[1:]:
        w.communicate("")
