"""The kernel's part of a sandboxed run: bubblewrap namespaces, a seccomp filter and a
cgroup of its own. The runner (``scalelab.sandbox.runner``) puts each program inside all three.

- **Namespaces** (``bwrap``, Debian's ``bubblewrap``, run as the run's own unprivileged
  uid): user, mount, PID, IPC, UTS, network and cgroup. The root holds the language's
  allow-list, read-only (:func:`runtime_for`), a private ``/tmp`` and ``/dev/shm``
  (tmpfs, gone with the run), a minimal ``/dev``, its own ``/proc`` (its own processes
  only) and ``/work``, a size-limited tmpfs with its files (read-only). No capabilities;
  ``--die-with-parent``: the run is killed when the worker that started it dies.
- **A reaper** (:data:`REAPER`), the first program inside: it arms the seccomp filter,
  runs the program, kills it just past its wall limit (so a run whose worker died ends
  on its own) and reports its true wait status to the supervisor.
- **seccomp** (libseccomp through ``ctypes``; :func:`seccomp_program`): the system calls a
  program never needs and an escape would -- ``ptrace``, ``mount``, ``unshare``,
  ``setns``, ``bpf``, ``keyctl``, ``io_uring``, module loading, ... --, a ``clone`` with
  any namespace flag and a socket of a network family go to the supervisor
  (:class:`Denials`), which refuses them (EPERM, EAFNOSUPPORT) and records them: the run's
  ``denied``. ``clone3`` fails with ``ENOSYS`` (the C library falls back to ``clone``).
  The filter lives in memory (a memfd per run, :func:`memory_fd`).
- **A cgroup per run** (v2, or the v1 ``memory``/``pids``/``cpu`` hierarchies, under the
  replica's own): memory, processes and CPU counted across all of the run's processes;
  at the end every process left in it is killed and the cgroup removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scalelab.errors import PermanentError

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "scalelab-runs"

#: System calls refused (EPERM) inside a run.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
    "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "syslog", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "personality", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
    "lookup_dcookie", "quotactl", "nfsservctl", "vhangup", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick",
)  # fmt: skip


class SealError(PermanentError, RuntimeError):
    """The kernel cannot seal runs here (no bubblewrap, no user namespaces, no cgroups)."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


# ----------------------------------------------------------------------------- seccomp
#: clone(2) flags that create a namespace: a clone carrying any of them is refused, as
#: unshare and setns are (a nested user namespace would hold every capability in it).
NAMESPACE_FLAGS = {
    "CLONE_NEWTIME": 0x00000080, "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000,
}  # fmt: skip

#: Socket families a network namespace does not isolate: refused (AF_VSOCK shares the host
#: VM's port space).
UNNAMESPACED_FAMILIES = {"AF_VSOCK": 40}

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ, _SCMP_CMP_MASKED_EQ = 4, 7


def _errno_action(code: int) -> int:
    return 0x00050000 | code  # SCMP_ACT_ERRNO(code)


class _ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``: compare argument ``arg`` by ``op``."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


#: libseccomp's action handing the call to the supervisor (seccomp user notification).
_SCMP_ACT_NOTIFY = 0x7FC00000

#: Socket families refused and reported as ``network``: the internet and raw packets
#: (the run's network namespace is empty anyway) and :data:`UNNAMESPACED_FAMILIES`.
NETWORK_FAMILIES = {"AF_INET": 2, "AF_INET6": 10, "AF_PACKET": 17, **UNNAMESPACED_FAMILIES}


def _library():
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise SealError("libseccomp is not installed (Debian: libseccomp2)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # a malloc'd name (kept: one per denial kind)
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def syscall_number(name: str) -> int:
    """``name``'s system call number on this machine (-1 if it has none)."""
    return _library().seccomp_syscall_resolve_name(name.encode())


def seccomp_program() -> bytes:
    """The BPF program of a run's filter, which the run's reaper loads (:data:`REAPER`)
    with a listener the supervisor holds (:class:`Denials`). Each call it refuses goes to
    the supervisor, which records it and answers EPERM: :data:`DENIED_SYSCALLS`, a
    ``clone`` carrying any of :data:`NAMESPACE_FLAGS`, a ``socket`` of
    :data:`NETWORK_FAMILIES` (answered EAFNOSUPPORT). ``clone3``, whose flags sit behind a
    pointer a filter cannot read, fails with ENOSYS at once (unreported: the C library
    tries it for every thread, then falls back to ``clone``, as under container
    runtimes). Kept in memory: no file is left behind."""
    lib = _library()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SealError("seccomp_init failed")

    def rule(call: str, action: int, *compare: _ArgCmp) -> None:
        nr = lib.seccomp_syscall_resolve_name(call.encode())
        if nr < 0:
            return  # not a system call of this architecture
        array = (_ArgCmp * max(len(compare), 1))(*compare)
        if lib.seccomp_rule_add_array(ctx, action, nr, len(compare), array) != 0:
            raise SealError(f"seccomp: cannot add a rule for {call}")

    try:
        for call in DENIED_SYSCALLS:
            rule(call, _SCMP_ACT_NOTIFY)
        for flag in NAMESPACE_FLAGS.values():  # x86_64, arm64: the flags are clone's first argument
            rule("clone", _SCMP_ACT_NOTIFY, _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        rule("clone3", _errno_action(errno.ENOSYS))
        for family in NETWORK_FAMILIES.values():
            rule("socket", _SCMP_ACT_NOTIFY, _ArgCmp(0, _SCMP_CMP_EQ, family, 0))
        read, write = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, write) != 0:
                raise SealError("seccomp_export_bpf failed")
            os.close(write)
            write = -1
            chunks = []
            while chunk := os.read(read, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)
    finally:
        lib.seccomp_release(ctx)


#: ``ioctl`` requests on a seccomp listener (``_IOWR('!', n, struct)``): receive a
#: notification (``struct seccomp_notif``, 80 bytes), send the answer
#: (``struct seccomp_notif_resp``, 24 bytes).
NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101


def denial_kind(nr: int, args: tuple[int, ...]) -> str:
    """What a refused call was, as a run's ``denied`` lists it: ``network`` (a socket of
    :data:`NETWORK_FAMILIES`), ``namespace`` (``unshare``, ``setns``, a namespace
    ``clone``), else the system call's name (``ptrace``, ``mount``, ``bpf``, ...)."""
    name = _syscall_names().get(nr, f"syscall-{nr}")
    if name == "socket":
        return "network"
    if name in ("unshare", "setns", "clone"):
        return "namespace"
    return name


@functools.lru_cache(maxsize=1)
def _syscall_names() -> dict[int, str]:
    lib = _library()
    names = {}
    for call in (*DENIED_SYSCALLS, "clone", "socket"):
        nr = lib.seccomp_syscall_resolve_name(call.encode())
        if nr >= 0:
            names[nr] = call
    return names


class Denials(threading.Thread):
    """The supervisor's side of a run's filter: receives the listener the run's reaper
    sends over ``channel`` (a Unix socket), answers each refused call (EPERM;
    EAFNOSUPPORT for a socket family) and records what it was (:func:`denial_kind`),
    and reads the reaper's report of the program's wait status. All of it outside the
    program's reach: the kernel stops the calling thread until the answer comes."""

    def __init__(self, channel: socket.socket) -> None:
        super().__init__(daemon=True)
        self.channel = channel
        self.kinds: list[str] = []
        self.status: int | None = None  # the program's wait status, as its reaper saw it
        self.largest_file = 0  # bytes: the largest file the run left, as its reaper measured it
        self.armed = threading.Event()  # the filter is in place (the program may start)
        self._done = threading.Event()
        self._report = b""

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        import fcntl
        import json
        import select
        import struct

        listener = -1
        try:
            self.channel.settimeout(None)
            try:
                _, fds, _, _ = socket.recv_fds(self.channel, 16, 1)
            except OSError:
                return
            if not fds:
                return  # the reaper died before it could arm the filter
            listener = fds[0]
            self.armed.set()
            poll = select.poll()
            poll.register(listener, select.POLLIN)
            poll.register(self.channel, select.POLLIN)
            while not self._done.is_set():
                for fd, _ in poll.poll(100):
                    if fd == listener:
                        request = bytearray(80)
                        try:
                            fcntl.ioctl(listener, NOTIF_RECV, request)
                        except OSError:  # the caller is gone (killed while waiting)
                            continue
                        ident, _pid, _flags, nr, _arch, _ip, *args = struct.unpack("<QIIiIQ6Q", request)
                        kind = denial_kind(nr, tuple(args))
                        self.kinds.append(kind)
                        code = errno.EAFNOSUPPORT if kind == "network" else errno.EPERM
                        try:
                            fcntl.ioctl(listener, NOTIF_SEND, bytearray(struct.pack("<QqiI", ident, 0, -code, 0)))
                        except OSError:
                            pass
                    else:
                        chunk = self.channel.recv(4096)
                        if not chunk:  # the reaper ended: so did every process of the run
                            report = json.loads(self._report) if self._report.strip() else {}
                            self.status = report.get("status")
                            self.largest_file = report.get("largest_file", 0)
                            return
                        self._report += chunk
        finally:
            if listener >= 0:
                os.close(listener)
            self.channel.close()


#: The run's reaper, the first program inside the sandbox (``python3 -I -S -B`` from a
#: memfd): it arms the filter (``seccomp(SET_MODE_FILTER, NEW_LISTENER)``) and sends the
#: listener to the supervisor, starts the program (every descriptor but 0-2 closed, to die
#: with the reaper), kills it at the wall limit + :data:`WALL_MARGIN_S` if it still runs
#: (the worker may have died), and reports its wait status -- a status the program cannot
#: write (its ``exit(152)`` is an exit code, a signal is a signal) -- and the size of the
#: largest file the run left in ``/work``, ``/tmp`` or ``/dev/shm``. Not dumpable, so the
#: program cannot reach its descriptors through ``/proc``; if the program kills it, the
#: run has no verdict, never a false one. argv: channel fd, filter fd, seccomp's system
#: call number, deadline s, ``--``, the command.
REAPER = r"""
import ctypes, json, os, signal, socket, sys
channel, program_fd, seccomp_nr = (int(a) for a in sys.argv[1:4])
deadline = float(sys.argv[4])
command = sys.argv[sys.argv.index("--") + 1:]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
program = b""
while chunk := os.read(program_fd, 65536):
    program += chunk
os.close(program_fd)
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
code = ctypes.create_string_buffer(program, len(program))
fprog = SockFprog(len(program) // 8, ctypes.addressof(code))
libc.syscall.restype = ctypes.c_long
listener = libc.syscall(seccomp_nr, 1, 8, ctypes.byref(fprog))  # SET_MODE_FILTER, FLAG_NEW_LISTENER
if listener < 0:
    os.write(2, ("sandbox: cannot arm the run's filter: %s\n" % os.strerror(ctypes.get_errno())).encode())
    os._exit(125)
link = socket.socket(fileno=channel)
socket.send_fds(link, [b"L"], [listener])
os.close(listener)
pid = os.fork()
if pid == 0:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the program dies with its reaper
    os.closerange(3, 1 << 16)
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)
signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
signal.setitimer(signal.ITIMER_REAL, deadline)
_, status = os.waitpid(pid, 0)
largest, seen = 0, 0  # the largest file the run left where it may write (the file-size limit's evidence)
for top in ("/work", "/tmp", "/dev/shm"):
    for root, dirs, names in os.walk(top):
        for name in names:
            seen += 1
            try:
                largest = max(largest, os.lstat(os.path.join(root, name)).st_size)
            except OSError:
                pass
        if seen > 10000:
            break
link.sendall(json.dumps({"status": status, "largest_file": largest}).encode())
os._exit(0)
"""


def memory_fd(data: bytes, name: str) -> int:
    """A file descriptor holding ``data`` at offset 0 -- an anonymous memory file
    (``memfd_create``), never a path on disk -- for bwrap's ``--seccomp`` and ``--args``.
    The caller closes it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ----------------------------------------------------------------------------- cgroups
def own_cgroup(controller: str) -> str:
    """The calling process's cgroup path in the v1 hierarchy holding ``controller``
    ("/" when at the root or unknown), from ``/proc/self/cgroup``."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path or "/"
    except (OSError, ValueError):
        pass
    return "/"


def run_group_base(controller: str) -> Path:
    """Where runs' cgroups go for a v1 ``controller``: under the calling replica's own
    cgroup, for every controller, so a replica's limits bound its runs as a pod's bound
    what its container starts: the CFS quota and ``cpuacct.usage`` cover their CPU, the
    memory limit their memory (each run has its own, lower one; when the runs together
    reach the replica's, the kernel's OOM killer picks a run's process, never the worker:
    :data:`RUN_OOM_SCORE_ADJ`), the pids limit their processes."""
    return CGROUP_ROOT / controller / own_cgroup(controller).lstrip("/") / GROUP


#: A run's processes' ``oom_score_adj``: the most killable, so memory pressure in the
#: replica's cgroup (or the host) ends a run, never the replica's worker.
RUN_OOM_SCORE_ADJ = 1000


class RunCgroup:
    """One run's cgroup: ``memory_bytes``, ``pids`` and ``cpu_cores`` for all of its
    processes. v1: one per controller, nested under the caller's own cgroup
    (:func:`run_group_base`). v2 (``/sys/fs/cgroup`` unified): one, under
    ``/sys/fs/cgroup/scalelab-runs`` -- not nested, as v2 lets a cgroup holding processes
    (the replica's) have no children with controllers."""

    def __init__(self, name: str, memory_bytes: int, pids: int, cpu_cores: float = 1.0) -> None:
        self.v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
        self.dirs: list[Path] = []
        try:
            if self.v2:
                parent = CGROUP_ROOT / GROUP
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
                d = parent / name
                d.mkdir()
                self.dirs = [d]
                (d / "memory.max").write_text(str(memory_bytes))
                (d / "memory.swap.max").write_text("0")
                (d / "pids.max").write_text(str(pids))
                (d / "cpu.max").write_text(f"{int(cpu_cores * 100_000)} 100000")
            else:
                for controller in ("memory", "pids", "cpu", "cpuacct"):
                    d = run_group_base(controller) / name
                    d.mkdir(parents=True)
                    self.dirs.append(d)
                mem, pid, cpu, _ = self.dirs
                (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
                swap = mem / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(memory_bytes))
                (pid / "pids.max").write_text(str(pids))
                try:
                    (cpu / "cpu.cfs_period_us").write_text("100000")
                    (cpu / "cpu.cfs_quota_us").write_text(str(int(cpu_cores * 100_000)))
                except OSError as exc:  # above the replica's own quota: the replica's bounds the run
                    if exc.errno != errno.EINVAL:
                        raise
        except OSError as exc:
            self.remove()
            raise SealError(f"cannot make the run's cgroup under {CGROUP_ROOT} ({exc})") from None

    def join(self) -> None:
        """Put the calling process in the cgroup (the child, before it execs), first in
        line for the OOM killer (:data:`RUN_OOM_SCORE_ADJ`)."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))
        Path("/proc/self/oom_score_adj").write_text(str(RUN_OOM_SCORE_ADJ))

    def pids(self) -> list[int]:
        """The live processes in the cgroup (a zombie, dead and waiting for its parent
        to reap it, still shows in a v1 cgroup: it is left out)."""
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(p for p in out if alive_pid(p))

    def cpu_seconds(self) -> float:
        """CPU used by all of the run's processes, s."""
        try:
            if self.v2:
                stat = dict(line.split() for line in (self.dirs[0] / "cpu.stat").read_text().splitlines())
                return int(stat["usage_usec"]) / 1e6
            return int((self.dirs[3] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError, KeyError, IndexError):
            return 0.0

    def oom_killed(self) -> bool:
        """Whether the memory limit was hit (a process killed or an allocation failed)."""
        try:
            if self.v2:
                events = dict(line.split() for line in (self.dirs[0] / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0 or int(events.get("max", 0)) > 0
            m = self.dirs[0]
            control = dict(line.split() for line in (m / "memory.oom_control").read_text().splitlines())
            return int(control.get("oom_kill", 0)) > 0 or int((m / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError, IndexError):
            return False

    def pids_hit(self) -> bool:
        """Whether a fork was refused by the process limit."""
        try:
            d = self.dirs[0] if self.v2 else self.dirs[1]
            events = dict(line.split() for line in (d / "pids.events").read_text().splitlines())
            return int(events.get("max", 0)) > 0
        except (OSError, ValueError, IndexError):
            return False

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process in the cgroup until none is left."""
        if self.v2 and self.dirs and (self.dirs[0] / "cgroup.kill").exists():
            try:
                (self.dirs[0] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    time.sleep(0.01)
        self.dirs = []


def alive_pid(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cgroups_available() -> bool:
    """Whether a run's cgroup can be made here (root and a writable hierarchy)."""
    try:
        cg = RunCgroup(f"probe-{os.getpid()}", 64 * 2**20, 8)
    except SealError:
        return False
    cg.remove()
    return True


# ----------------------------------------------------------------------------- bwrap
#: Files of the host's configuration a run may read: the dynamic loader's cache and the
#: time zone.
ALLOWED_ETC = ("/etc/ld.so.cache", "/etc/localtime")

#: Where a Python keeps installed packages: never part of a run's root (programs run
#: with ``-I -S``, the standard library only).
PACKAGE_DIRS = ("site-packages", "dist-packages")


@dataclass(frozen=True)
class Runtime:
    """What a run sees of the host, read-only, and nothing else: ``files`` (a path inside
    the run -> the host's file it shows, for the executables and the shared libraries
    they load), ``dirs`` (whole directories: a Python's standard library) and
    ``hidden`` (directories inside ``dirs`` covered by an empty one: installed packages).
    Built once per worker from the language's command (:func:`runtime_for`)."""

    files: tuple[tuple[str, str], ...]
    dirs: tuple[str, ...]
    hidden: tuple[str, ...] = ()

    def binds(self) -> list[str]:
        """bwrap's options building the root from the list (merged-/usr links first)."""
        args = []
        for link, target in (("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
            if os.path.islink(link) and os.readlink(link).lstrip("/") == target:
                args += ["--symlink", target, link]
        for d in self.dirs:
            args += ["--ro-bind", d, d]
        for d in self.hidden:
            args += ["--size", "4096", "--perms", "0555", "--tmpfs", d]
        for inside, host in self.files:
            args += ["--ro-bind", host, inside]
        return args

    def names(self) -> set[str]:
        """Every path a run's root holds from the host, files and directories."""
        return {inside for inside, _ in self.files} | set(self.dirs)


def _canonical(path: str) -> str:
    """``path`` with its directory's links resolved (``/lib/x86_64-linux-gnu/libc.so.6``
    -> ``/usr/lib/x86_64-linux-gnu/libc.so.6`` on a merged-/usr system), its own name kept."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def shared_libraries(paths: list[str]) -> set[str]:
    """The shared libraries (and the dynamic loader) that the ELF files ``paths`` load,
    as ``ldd`` resolves them here."""
    import subprocess

    found: set[str] = set()
    for k in range(0, len(paths), 64):
        out = subprocess.run(["ldd", *paths[k:k + 64]], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
                found.add(words[words.index("=>") + 1])
            elif words and words[0].startswith("/") and not words[0].endswith(":"):
                found.add(words[0])
    return found


def runtime_for(command: list[str], reaper: str) -> Runtime:
    """The allow-list of a language's command: its executable and the Python that runs
    the run's reaper (:data:`REAPER`), the shared libraries both load,
    :data:`ALLOWED_ETC`, and each Python's standard library with the libraries its
    extension modules load (its installed packages hidden). Nothing else of the host:
    no ``/usr/local``, no other program, no ``/usr/share``."""
    import subprocess

    executables = list(dict.fromkeys([command[0], reaper]))
    dirs: list[str] = []
    hidden: list[str] = []
    elf = [os.path.realpath(e) for e in executables]
    pythons = [e for e in executables if os.path.basename(os.path.realpath(e)).startswith("python")]
    for python in pythons:
        probe = subprocess.run([python, "-I", "-S", "-c", "import sysconfig\nfor k in ('stdlib', "
                                "'platstdlib'):\n    print(sysconfig.get_path(k))"],
                               capture_output=True, text=True, check=True).stdout.split()
        for d in dict.fromkeys(os.path.realpath(p) for p in probe):
            if os.path.isdir(d) and d not in dirs:
                dirs.append(d)
                hidden += [os.path.join(d, p) for p in PACKAGE_DIRS if os.path.isdir(os.path.join(d, p))]
                for root, subdirs, names in os.walk(d):
                    subdirs[:] = [s for s in subdirs if s not in PACKAGE_DIRS]
                    elf += [os.path.join(root, n) for n in names if ".so" in n]
    files = {_canonical(e): os.path.realpath(e) for e in executables}
    for lib in shared_libraries(elf):
        files.setdefault(_canonical(lib), os.path.realpath(lib))
    for etc in ALLOWED_ETC:
        if os.path.exists(etc):
            files[etc] = os.path.realpath(etc)
    inside_dirs = tuple(dirs)
    outside = tuple(sorted((i, h) for i, h in files.items()
                           if not any(i.startswith(d + "/") for d in inside_dirs)))
    return Runtime(files=outside, dirs=inside_dirs, hidden=tuple(hidden))


#: The run's reaper kills the program this long past its wall limit: the worker kills it
#: at the limit; if the worker died first (bwrap's ``--die-with-parent`` has a start-up
#: window), the run still ends, s.
WALL_MARGIN_S = 2.0


def bwrap_command(files: dict[str, int], runtime: Runtime, uid: int, work_bytes: int) -> list[str]:
    """bwrap's options for a run in ``/work`` whose root holds ``runtime`` (the
    language's allow-list, :func:`runtime_for`) and nothing else of the host: a tmpfs of ``work_bytes``
    (what the program writes fills memory of its own cgroup, never the host's disk)
    holding read-only copies of ``files`` (name -> an open file descriptor: copied in, so
    no host path shows in the run's mount table). Hand them to bwrap through ``--args``
    (:func:`args_fd`), so that its command line -- ``/proc/1/cmdline`` inside the run --
    names nothing of the host either; the reaper and the command follow ``--``
    (:func:`sandboxed_command`)."""
    copies = []
    for name, fd in sorted(files.items()):
        copies += ["--perms", "0444", "--file", str(fd), f"/work/{name}"]
    return [
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--uid", str(uid), "--gid", str(uid), "--hostname", "sandbox",
        *runtime.binds(),
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
        "--size", str(int(work_bytes)), "--perms", "0700", "--tmpfs", "/work", *copies,
        "--chdir", "/work",
    ]  # fmt: skip


@dataclass(frozen=True)
class ReaperFds:
    """Descriptors a run's reaper inherits: its own code, the supervisor's end of the
    channel, the filter's BPF (each a number valid in bwrap and inside the run)."""

    code: int
    channel: int
    program: int


def sandboxed_command(command: list[str], wall_s: float, python: str, fds: ReaperFds) -> list[str]:
    """What bwrap runs, after ``--``: the reaper (:data:`REAPER`, read by ``python`` from
    its descriptor), which arms the filter and runs ``command``, killing it
    :data:`WALL_MARGIN_S` past ``wall_s``. It stays on bwrap's own command line
    (``--args`` takes options only) and names no host path."""
    return [python, "-I", "-S", "-B", f"/proc/self/fd/{fds.code}", str(fds.channel), str(fds.program),
            str(syscall_number("seccomp")), f"{wall_s + WALL_MARGIN_S:g}", "--", *command]


def args_fd(args: list[str]) -> int:
    """A :func:`memory_fd` holding ``args`` NUL-separated, for ``bwrap --args``."""
    return memory_fd(b"".join(a.encode() + b"\0" for a in args), "scalelab-bwrap-args")
