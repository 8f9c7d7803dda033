"""Resource usage of one replica's process tree, read from /proc (or its cgroup).

The CPU total counts every live process under the replica's root plus, through their
``cutime``/``cstime``, every child they already reaped (sandboxed runs included).
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds incl. reaped children, rss bytes) of ``pid``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    rss = int(fields[21]) * PAGE
    return ppid, (utime + stime + cutime + cstime) / TICKS, rss


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds and resident bytes of ``root`` and all its descendants."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    cpu, rss, todo = 0.0, 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            cpu += stats[pid][1]
            rss += stats[pid][2]
        todo.extend(children.get(pid, ()))
    return cpu, rss


def cgroup_usage(cpu_dir: str | None, memory_dir: str | None) -> tuple[float, int] | None:
    """CPU seconds and memory bytes of a cgroup (v1 cpuacct/memory, or v2), if readable."""
    try:
        if cpu_dir and Path(cpu_dir, "cpuacct.usage").exists():
            cpu = int(Path(cpu_dir, "cpuacct.usage").read_text()) / 1e9
        elif cpu_dir and Path(cpu_dir, "cpu.stat").exists():
            stat = dict(line.split() for line in Path(cpu_dir, "cpu.stat").read_text().splitlines())
            cpu = int(stat["usage_usec"]) / 1e6
        else:
            return None
        mem = 0
        for name in ("memory.usage_in_bytes", "memory.current"):
            if memory_dir and Path(memory_dir, name).exists():
                mem = int(Path(memory_dir, name).read_text())
                break
        return cpu, mem
    except (OSError, ValueError, KeyError):
        return None
