"""The local scaler's replicas, without starting them: each stack's replicas have cgroups
of their own, so two stacks on one host never share a CPU quota."""

from __future__ import annotations

import pytest

from scalelab.orchestrator.scalers.local import CGROUP_ROOT, LocalScaler, ReplicaSpec, make_cgroup, remove_cgroup


def test_two_stacks_replicas_never_share_a_cgroup(tmp_path):
    """Both stacks have a ``sandbox-1``: before, both were ``scalelab/sandbox-1``, so a
    second stack's quota (the live demo's 0.1 core) throttled the first one's replica (a
    twin run's 0.5 core) for the rest of its run."""
    a, b = LocalScaler(tmp_path / "a", None), LocalScaler(tmp_path / "b", None)
    name_a, name_b = a.cgroup_name("sandbox-1"), b.cgroup_name("sandbox-1")
    assert name_a != name_b and name_a.endswith("-sandbox-1") and name_a == a.cgroup_name("sandbox-1")
    if make_cgroup(name_a, ReplicaSpec(cpu_limit=0.5)) is None:
        pytest.skip("no writable cgroup v1 cpu hierarchy here")
    try:
        assert make_cgroup(name_b, ReplicaSpec(cpu_limit=0.1)) is not None
        quota = {n: int((CGROUP_ROOT / "cpu" / "scalelab" / n / "cpu.cfs_quota_us").read_text())
                 for n in (name_a, name_b)}
        assert quota == {name_a: 50_000, name_b: 10_000}
    finally:
        remove_cgroup(name_a)
        remove_cgroup(name_b)
