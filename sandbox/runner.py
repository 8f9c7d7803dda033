"""The sealed code runner: one submitted program, one throw-away sandbox.

Where the kernel can (root, bubblewrap, cgroups: ``scalelab.sandbox.seal``), each run is sealed
by it: its own user, mount, PID, IPC, UTS and network namespaces, a read-only runtime
and a private ``/tmp`` and ``/dev/shm``, a seccomp filter, and a cgroup counting memory,
processes and CPU across all of its processes, killed and removed at the end; the run
dies with the worker that started it. What follows is the second line, kept in both
modes (and the only one with ``require_seal=False`` where the kernel cannot seal):

* its own temporary directory (removed afterwards) and a user id of its own (100000 +
  a counter), so the kernel keeps it out of everything else and its process limit
  counts only its own processes; ``no_new_privs`` is set;
* a scrubbed environment (``PATH``, ``HOME``, ``LANG`` only);
* resource limits: CPU time, address space (memory), processes, file size; a wall-clock
  deadline; stdout and stderr each capped at ``output_bytes`` (the rest is drained and
  dropped, ``*_truncated`` says so);
* no network: a new, empty network namespace (``unshare(CLONE_NEWNET)``). Where the
  kernel refuses it the runner refuses to start, unless the operator opts out with
  ``allow_network=True``;
* for Python, an audit hook installed before the program runs that denies opening files
  outside its directory (the standard library excepted), sockets, ``ctypes`` and
  ``subprocess`` spawning (``os.fork`` stays allowed: the process limit handles it).

After the program ends (or is killed), every process left under its user id is killed.
The answer says which limit was hit, if any.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scalelab.errors import PermanentError, UserError

CLONE_NEWNET = 0x40000000
#: A run's host directory is ``<tmp>/scalelab-run-<worker pid>-...``: a worker that died
#: leaves it, and the next sandbox made on the machine sweeps it (:func:`sweep_leftovers`).
RUN_PREFIX = "scalelab-run-"
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
#: Runs take their uids from UID_BASE .. UID_BASE + UID_COUNT - 1, each leased host-wide
#: (:class:`UidLease`) for as long as its run lives.
UID_BASE = 100_000
UID_COUNT = 50_000
_lease_starts = itertools.count()

#: What the sandbox's Python boot script prints when it denies something.
DENIED_MARK = "sandbox: denied"

BOOT = r'''
import os, sys
_root = os.path.realpath(os.getcwd())
_allowed = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
_sealed = os.environ.get("SCALELAB_SEALED") == "1"  # the kernel refuses (and reports) network sockets
def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == _root or p.startswith(_root + os.sep) or p.startswith(_allowed) or p in ("/dev/null", "/dev/urandom")
def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)) and not _inside(args[0]):
        raise PermissionError("%s: file access outside the sandbox: %r" % (MARK, args[0]))
    if (event.startswith("socket.") and not _sealed) or event in ("ctypes.dlopen", "ctypes.cdata", "subprocess.Popen",
                                                   "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
        raise PermissionError("%s: %s is not allowed in the sandbox" % (MARK, event))
sys.addaudithook(_hook)
del _hook
sys.argv = ["main.py"]
import runpy
runpy.run_path("main.py", run_name="__main__")
'''.replace("MARK", repr(DENIED_MARK))

def _interpreter() -> str:
    """A Python the sandbox's unprivileged users can execute: the system one when the
    running interpreter sits in a private directory (``$SCALELAB_SANDBOX_PYTHON`` wins)."""
    env = os.environ.get("SCALELAB_SANDBOX_PYTHON")
    if env:
        return env
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        path = os.path.realpath(candidate)
        parts = path.split(os.sep)
        public = all(
            os.stat(os.sep.join(parts[: k + 1]) or os.sep).st_mode & 0o001 for k in range(len(parts) - 1)
        ) if os.path.exists(path) else False
        if public:
            return candidate
    return sys.executable


#: Languages: the command run in the program's directory (a setting of the service).
LANGUAGES = {
    "python": [_interpreter(), "-I", "-S", "-B", "boot.py"],
}
def source_file(command: list[str]) -> str:
    """The file the program's source is written to: the command's ``main.*`` argument
    (``main.py`` for Python, which ``boot.py`` runs)."""
    return next((a for a in command if a.startswith("main.")), "main.py")


class SandboxError(PermanentError, RuntimeError):
    """The sandbox cannot run programs safely here (no seal, no network namespace)."""


class SandboxRequestError(SandboxError, UserError):
    """A malformed run request (language, code, stdin, limits); the message names it."""


#: The largest value any limit may be asked for (the server's ceiling lowers it further).
MAX_LIMIT = 2**31

#: The limits that count something, and what: whole numbers only.
COUNT_LIMITS = {"memory_mib": "MiB", "processes": "processes", "file_size_kib": "KiB", "output_bytes": "bytes"}


@dataclass(frozen=True)
class Limits:
    """Per-run limits: CPU s, wall s, memory MiB (the whole run's, sealed; else per
    process), processes (the whole run's), file size KiB, bytes kept of stdout and of
    stderr. Every value finite and > 0."""

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_mib: int = 512
    processes: int = 32
    file_size_kib: int = 1024
    output_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        import math

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SandboxRequestError(f"limits.{f.name} must be a number, got {value!r}")
            # compared as given: a huge integer (10**400) has no float, and is out of range anyway
            if not (0 < value <= MAX_LIMIT) or (isinstance(value, float) and not math.isfinite(value)):
                raise SandboxRequestError(f"limits.{f.name} must be a finite number in (0, {MAX_LIMIT}], "
                                          f"got {str(value)[:40]}")
            if f.name in COUNT_LIMITS:  # a count: whole, kept as an int
                if isinstance(value, float) and not value.is_integer():
                    raise SandboxRequestError(f"limits.{f.name} counts {COUNT_LIMITS[f.name]}: a whole number, "
                                              f"got {value!r}")
                object.__setattr__(self, f.name, int(value))

    def within(self, ceiling: Limits) -> Limits:
        """These limits, none above ``ceiling`` (the server's): a client may only lower
        them."""
        return Limits(**{k: min(v, getattr(ceiling, k)) for k, v in asdict(self).items()})


@dataclass
class RunResult:
    """What a run gave: exit code or signal, outputs, timings and the limit hit."""

    exit_code: int | None
    signal: str | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    wall_ms: float
    cpu_ms: float
    limit: str | None = None  # cpu, wall, memory, processes, file_size, output
    denied: list[str] = field(default_factory=list)  # network, filesystem, ... attempts refused
    uid: int | None = None  # the run's own user id (None when not isolated)

    def to_dict(self) -> dict:
        return asdict(self)


def network_isolation_available() -> bool:
    """Whether a child can enter a new network namespace here."""
    pid = os.fork()
    if pid == 0:
        rc = ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        os._exit(0 if rc == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def uid_lease_dir() -> Path:
    """Where the host's uid leases live (root's): ``$SANDBOX_UID_LEASES``, else
    ``/run/scalelab-uid-leases`` (the temporary directory's where ``/run`` cannot hold
    it); every worker of every replica on the host uses the same one."""
    if os.environ.get("SANDBOX_UID_LEASES"):
        return Path(os.environ["SANDBOX_UID_LEASES"])
    run = Path("/run")
    return run / "scalelab-uid-leases" if os.access(run, os.W_OK) else Path(tempfile.gettempdir()) / "scalelab-uid-leases"


class UidLease:
    """A run's own uid, held exclusively across the host while the lease is open: an
    ``flock`` on ``<uid_lease_dir>/<uid>``, which the kernel releases when the holder
    closes it or dies, so two runs (of any workers or replicas) never share a uid and a
    run's kill of its uid's processes can only reach its own."""

    def __init__(self) -> None:
        folder = uid_lease_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        start = (os.getpid() * 7919 + next(_lease_starts) * 104_729) % UID_COUNT  # spread the searches
        for k in range(UID_COUNT):
            uid = UID_BASE + (start + k) % UID_COUNT
            fd = os.open(folder / str(uid), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise SandboxError(f"no free run uid on this host ({UID_COUNT} runs at once)")

    def release(self) -> None:
        """Give the uid back (after every process of it was killed)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (a helper takes the uid and signals -1)."""
    if os.getuid() != 0:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(10_000):  # until no process of the uid is left (forks may race)
                os.kill(-1, signal.SIGKILL)
        except OSError:  # ProcessLookupError: none left
            pass
        os._exit(0)
    os.waitpid(pid, 0)


class _Capped(threading.Thread):
    """Reads a pipe to its end, keeping the first ``cap`` bytes."""

    def __init__(self, stream, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.kept = bytearray()
        self.truncated = False

    def run(self) -> None:
        while True:
            chunk = self.stream.read(65536)
            if not chunk:
                break
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            if len(chunk) > max(room, 0):
                self.truncated = True


class Sandbox:
    """Runs programs sealed. ``require_seal`` (default): refuse to start where the
    kernel cannot seal runs (``scalelab.sandbox.seal``); ``allow_network=True`` is the explicit
    opt-out when the kernel cannot give each run its own network namespace (unsealed
    mode only)."""

    def __init__(self, languages: dict[str, list[str]] | None = None, allow_network: bool = False,
                 isolate_users: bool | None = None, require_seal: bool | None = None) -> None:
        self.languages = dict(languages or LANGUAGES)
        self.seal = _Seal.make(required=require_seal, languages=self.languages)
        self.isolate_network = self.seal is not None or network_isolation_available()
        if not self.isolate_network and not allow_network:
            raise SandboxError(
                "cannot create a network namespace here (unshare(CLONE_NEWNET) refused); "
                "refusing to run programs with network access. Run as root or with CAP_SYS_ADMIN, "
                "or opt out explicitly with allow_network=True"
            )
        self.isolate_users = (os.getuid() == 0) if isolate_users is None else isolate_users

    def run(self, code: str, language: str = "python", stdin: str = "", limits: Limits | None = None) -> RunResult:
        if language not in self.languages:
            raise SandboxRequestError(f"language {language!r} is not one of {sorted(self.languages)}")
        if not isinstance(code, str):
            raise SandboxRequestError("code must be a string")
        limits = limits or Limits()
        if not isinstance(stdin, str):
            raise SandboxRequestError("stdin must be a string")
        workdir = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")
        lease = UidLease() if self.isolate_users else None
        uid = lease.uid if lease is not None else None
        try:
            command = self.languages[language]
            with open(os.path.join(workdir, source_file(command)), "w") as f:
                f.write(code)
            if "boot.py" in command:
                with open(os.path.join(workdir, "boot.py"), "w") as f:
                    f.write(BOOT)
            if uid is not None:
                os.chown(workdir, uid, uid)
                for name in os.listdir(workdir):
                    os.chown(os.path.join(workdir, name), uid, uid)
                os.chmod(workdir, 0o700)
            return self._execute(workdir, language, stdin, limits, uid)
        finally:
            if lease is not None:
                _kill_uid(lease.uid)
                lease.release()  # only once nothing of the uid is left
            shutil.rmtree(workdir, ignore_errors=True)

    def _execute(self, workdir: str, language: str, stdin: str, limits: Limits, uid: int | None) -> RunResult:
        if self.seal is not None and uid is not None:
            return self.seal.execute(language, workdir, stdin, limits, uid)
        isolate_net = self.isolate_network

        def preexec() -> None:  # runs in the child, before exec
            libc = ctypes.CDLL(None, use_errno=True)
            if isolate_net and libc.unshare(CLONE_NEWNET) != 0:
                os._exit(126)
            cpu = int(limits.cpu_seconds + 0.999)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            mem = limits.memory_mib * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            fsize = limits.file_size_kib * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if uid is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            self.languages[language], cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=preexec, start_new_session=True, close_fds=True,
        )  # fmt: skip
        out, err = _Capped(proc.stdout, limits.output_bytes), _Capped(proc.stderr, limits.output_bytes)
        out.start()
        err.start()
        status, usage, t_end, wall_hit = _run_until(proc, stdin, t0 + limits.wall_seconds,
                                                    lambda: _kill_group(proc.pid, uid))
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall_ms = (t_end - t0) * 1000.0
        _kill_group(proc.pid, uid)  # leftovers (forked children) end with the run
        out.join(timeout=2)
        err.join(timeout=2)
        cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000.0
        code = proc.returncode
        if code == 126 and isolate_net and not out.kept and not err.kept:
            raise SandboxError("the network namespace could not be created for this run")
        sig = signal.Signals(-code).name if code < 0 else None
        stderr = err.kept.decode(errors="replace")
        result = RunResult(
            exit_code=code if code >= 0 else None, signal=sig, stdout=out.kept.decode(errors="replace"),
            stderr=stderr, stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            wall_ms=round(wall_ms, 3), cpu_ms=round(cpu_ms, 3),
        )  # fmt: skip
        result.uid = uid
        result.limit = _which_limit(result, limits, wall_hit)
        result.denied = _denials(stderr)
        return result


class _Seal:
    """The kernel's seal (``scalelab.sandbox.seal``): bubblewrap, seccomp and a cgroup per run."""

    def __init__(self, bwrap: str, languages: dict[str, list[str]]) -> None:
        from scalelab.sandbox import seal

        sweep_leftovers()
        self.bwrap = bwrap
        self.languages = languages
        self.filter = seal.seccomp_program()  # in memory: each run gets it through a memfd
        self.python = _interpreter()  # runs each run's reaper
        #: per language, what its runs see of the host (the allow-list, built once)
        self.runtimes = {name: seal.runtime_for(command, self.python) for name, command in languages.items()}
        self._runs = itertools.count()

    @classmethod
    def make(cls, required: bool | None, languages: dict[str, list[str]]) -> _Seal | None:
        """The seal, or None where the kernel cannot give it and ``required`` is False;
        ``required=None``: required where the process runs as root."""
        from scalelab.sandbox import seal

        required = (os.getuid() == 0) if required is None else required
        missing = []
        bwrap = seal.bwrap_path()
        if bwrap is None:
            missing.append("bubblewrap (apt-get install bubblewrap)")
        if os.getuid() != 0:
            missing.append("root (to give each run its own uid and cgroup)")
        elif not seal.cgroups_available():
            missing.append(f"a writable cgroup hierarchy under {seal.CGROUP_ROOT}")
        if not missing:
            try:
                return cls(bwrap, languages)
            except seal.SealError as exc:
                missing.append(str(exc))
        if required:
            raise SandboxError("the kernel cannot seal runs here: missing " + "; ".join(missing)
                               + ". Refusing to run programs (require_seal=False runs them behind the "
                               "audit hook, rlimits and a network namespace only)")
        return None

    def execute(self, language: str, workdir: str, stdin: str, limits: Limits, uid: int) -> RunResult:
        from scalelab.sandbox import seal

        command = self.languages[language]
        cg = seal.RunCgroup(f"run-{os.getpid()}-{next(self._runs)}", limits.memory_mib * 2**20, limits.processes)
        supervisor_end, reaper_end = socket.socketpair()
        reaper = seal.ReaperFds(code=seal.memory_fd(seal.REAPER.encode(), "scalelab-reaper"),
                                channel=reaper_end.fileno(),
                                program=seal.memory_fd(self.filter, "scalelab-seccomp"))
        files = {name: os.open(os.path.join(workdir, name), os.O_RDONLY | os.O_CLOEXEC)
                 for name in sorted(os.listdir(workdir))}
        args = seal.args_fd(seal.bwrap_command(files, self.runtimes[language], uid,
                                               work_bytes=limits.memory_mib * 2**20))
        denials = seal.Denials(supervisor_end)
        try:
            argv = [self.bwrap, "--args", str(args), "--",
                    *seal.sandboxed_command(command, limits.wall_seconds, self.python, reaper)]

            worker = os.getpid()

            def preexec() -> None:  # in the child, before exec: its cgroup, its uid, no privileges
                cg.join()
                cpu = int(limits.cpu_seconds + 0.999)
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                fsize = limits.file_size_kib * 1024
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
                # die with the worker from here on (changing uid cleared the setting; bwrap's
                # own --die-with-parent comes only once it runs): no window where it outlives it
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != worker:
                    os._exit(1)

            # SCALELAB_SEALED: the audit hook leaves sockets to the kernel, which refuses and reports them
            env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                   "SCALELAB_SEALED": "1"}
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, preexec_fn=preexec, start_new_session=True,
                                    close_fds=True, pass_fds=(reaper.code, reaper.channel, reaper.program, args,
                                                              *files.values()))
            reaper_end.close()  # the run holds the other end: the channel ends when the run does
            denials.start()
            out, err = _Capped(proc.stdout, limits.output_bytes), _Capped(proc.stderr, limits.output_bytes)
            out.start()
            err.start()
            status, usage, t_end, wall_hit = _run_until(
                proc, stdin, t0 + limits.wall_seconds, cg.kill_all,
                over_cpu=lambda: cg.cpu_seconds() >= limits.cpu_seconds)  # all of the run's processes together
            cg.kill_all()  # whatever is left of the run ends with it
            out.join(timeout=2)
            err.join(timeout=2)
            denials.join(timeout=2)
            stderr = err.kept.decode(errors="replace")
            if not denials.armed.is_set() and not wall_hit:
                raise SandboxError(f"a run could not start (its filter was never armed): {stderr.strip()[-300:]}")
            code: int | None = os.waitstatus_to_exitcode(status)  # bwrap's own: < 0 when the supervisor killed it
            if code is not None and code >= 0:  # bwrap writes a signal N as 128 + N, as a program may: the
                # reaper's report tells them apart (None: the program killed its reaper; no verdict)
                code = None if denials.status is None else os.waitstatus_to_exitcode(denials.status)
                if code is None:
                    stderr += "\nsandbox: the run's reaper was killed before it reported (no exit status)"
            cpu_s = max(cg.cpu_seconds(), usage.ru_utime + usage.ru_stime)
            result = RunResult(
                exit_code=code if code is not None and code >= 0 else None,
                signal=signal.Signals(-code).name if code is not None and code < 0 else None,
                stdout=out.kept.decode(errors="replace"), stderr=stderr, stdout_truncated=out.truncated,
                stderr_truncated=err.truncated, wall_ms=round((t_end - t0) * 1000.0, 3),
                cpu_ms=round(cpu_s * 1000.0, 3), uid=uid,
            )  # fmt: skip
            result.limit = _sealed_limit(result, limits, cpu_s, cg.oom_killed(), cg.pids_hit(), wall_hit,
                                         denials.largest_file)
            result.denied = sorted(set(denials.kinds))  # what the filter refused, as the supervisor answered
            return result
        finally:
            denials.stop()
            for open_fd in (reaper.code, reaper.program, args, *files.values()):
                os.close(open_fd)
            reaper_end.close()
            cg.kill_all()
            cg.remove()


def sweep_leftovers() -> list[str]:
    """Remove what runs of dead workers left (their processes died with them): run
    cgroups and host directories named after a worker pid that is gone. Returns what
    was removed."""
    from scalelab.sandbox import seal

    def dead(pid: str) -> bool:
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            return True
        except (ValueError, PermissionError):
            return False

    removed = []
    bases = [seal.CGROUP_ROOT / seal.GROUP] + [seal.run_group_base(c) for c in ("memory", "pids", "cpu", "cpuacct")]
    for base in bases:
        if base.is_dir():
            for d in base.iterdir():
                parts = d.name.split("-")
                if d.is_dir() and d.name.startswith("run-") and len(parts) >= 3 and dead(parts[1]):
                    for pid in (d / "cgroup.procs").read_text().split() if (d / "cgroup.procs").exists() else []:
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    try:
                        d.rmdir()
                        removed.append(str(d))
                    except OSError:
                        pass
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{RUN_PREFIX}*"):
        pid = d.name[len(RUN_PREFIX):].split("-", 1)[0]
        if d.is_dir() and dead(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def _run_until(proc: subprocess.Popen, stdin: str, deadline: float, kill,
               over_cpu=None) -> tuple[int, object, float, bool]:
    """Feed ``stdin`` (from a thread: the deadline runs while it is written) and wait for
    ``proc`` until ``deadline`` (``perf_counter`` s), calling ``kill`` then -- or as soon
    as ``over_cpu()`` says the whole run used its CPU (checked every
    :data:`CPU_CHECK_S`); returns its wait status, its resource usage, when its time
    ended and whether the deadline hit (the kill itself is not the program's time)."""
    def feed() -> None:
        try:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    next_cpu_check = time.perf_counter() + CPU_CHECK_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, time.perf_counter(), False
        now = time.perf_counter()
        if now >= deadline:
            kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage, now, True
        if over_cpu is not None and now >= next_cpu_check:
            next_cpu_check = now + CPU_CHECK_S
            if over_cpu():  # the run's processes together used its CPU: it ends here
                kill()
                _, status, usage = os.wait4(proc.pid, 0)
                return status, usage, now, False
        time.sleep(0.005)


#: How often the supervisor reads a sealed run's CPU from its cgroup, s.
CPU_CHECK_S = 0.05


def _kill_group(pid: int, uid: int | None) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)


#: The share of its CPU limit a run must have used, by its cgroup's accounting, for the
#: CPU limit to be what ended it (the supervisor reads the accounting every
#: :data:`CPU_CHECK_S`; the rlimit backstop fires at the limit).
CPU_LIMIT_SHARE = 0.95


def _sealed_limit(r: RunResult, limits: Limits, cpu_s: float, oom_killed: bool, pids_hit: bool,
                  wall_hit: bool, largest_file: int) -> str | None:
    """The limit a sealed run hit, from what the program cannot write: the cgroup's
    counters (an OOM kill; the pids limit refusing a fork; the CPU it used, s), the
    supervisor's wall timer and its output caps, and the file-size limit from the
    largest file the run left (bytes, measured by its reaper: a file at the limit; the
    kernel refused the rest with EFBIG, which no counter records)."""
    if oom_killed and not wall_hit:
        return "memory"
    if pids_hit and not wall_hit and cpu_s < CPU_LIMIT_SHARE * limits.cpu_seconds:
        return "processes"
    if cpu_s >= CPU_LIMIT_SHARE * limits.cpu_seconds:
        return "cpu"
    if wall_hit:
        return "wall"
    if r.stdout_truncated or r.stderr_truncated:
        return "output"
    if largest_file >= limits.file_size_kib * 1024:
        return "file_size"
    return None


def _which_limit(r: RunResult, limits: Limits, wall_hit: bool) -> str | None:
    """The limit an unsealed run (rlimits and the audit hook only, no cgroup) hit, as
    well as its result tells."""
    if r.signal in ("SIGXCPU",) or (r.signal == "SIGKILL" and r.cpu_ms >= 1000 * limits.cpu_seconds * 0.95):
        return "cpu"
    if wall_hit:
        return "wall"
    if r.signal == "SIGXFSZ" or "File too large" in r.stderr:
        return "file_size"
    if "MemoryError" in r.stderr or "Cannot allocate memory" in r.stderr:
        return "memory"
    if "Resource temporarily unavailable" in r.stderr and ("fork" in r.stderr or "BlockingIOError" in r.stderr):
        return "processes"
    if r.stdout_truncated or r.stderr_truncated:
        return "output"
    return None


def _denials(stderr: str) -> list[str]:
    out = []
    if DENIED_MARK in stderr:
        if "socket." in stderr:
            out.append("network")
        if "file access outside" in stderr:
            out.append("filesystem")
        if "ctypes" in stderr:
            out.append("ctypes")
        if "subprocess" in stderr or "os.exec" in stderr or "os.system" in stderr or "spawn" in stderr:
            out.append("process-spawn")
    return out
