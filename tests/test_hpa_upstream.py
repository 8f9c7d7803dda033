"""The Kubernetes HPA replica calculator's own test cases for the CPU resource path,
ported from ``pkg/controller/podautoscaler/replica_calculator_test.go`` (every
``TestReplicaCalc*`` case on ``v1.ResourceCPU``, and ``TestGroupPods``' CPU cases).

The Go fixtures build pods with two containers each, each with the case's request and
usage, so a pod's request and usage are twice the case's figures; hot pods start now,
cool ones 3 minutes ago; an unset time is Go's zero time. The test calculator runs with
a 2-minute CPU-initialisation period and a 10-s readiness delay.
"""

from __future__ import annotations

import math

import pytest

from scalelab.agent.policies.thresholds import (
    HPA,
    HPAError,
    HPAPod,
    Tolerances,
    group_pods,
    hpa_pods,
    resource_replicas,
)
from scalelab.orchestrator.backend import Observation, PodSample
from scalelab.orchestrator.context import Context

NOW = 1e9  # time.Now(); Go's zero time is 0
HOT, COOL = NOW, NOW - 180.0
INIT, DELAY = 120.0, 10.0
CONTAINERS = 2


def calc(current, target, levels, requests, readiness=None, start=None, phase=None, deleted=None, pod_names=None,
         timestamp=0.0):
    """``replicaCalcTestCase.runTest`` for a resource case: (replicas, utilization, raw)."""
    n = max(current, len(phase or []))
    metric_of = {}
    for i, level in enumerate(levels):
        name = pod_names[i] if pod_names and i < len(pod_names) else f"test-pod-{i}"
        metric_of[name] = CONTAINERS * level
    pods = [HPAPod(name=f"test-pod-{i}",
                   request_m=CONTAINERS * requests[i] if i < len(requests) else None,
                   metric_m=metric_of.get(f"test-pod-{i}"),
                   phase=(phase or ["Running"] * n)[i],
                   deleted=bool(deleted and deleted[i]),
                   ready=readiness[i] if readiness and i < len(readiness) else True,
                   start_s=(start or [0.0] * n)[i], ready_transition_s=0.0,
                   metric_t_s=timestamp, metric_window_s=60.0) for i in range(n)]
    return resource_replicas(current, target, pods, NOW, 0.1, INIT, DELAY, metrics=metric_of)


R3 = [1000, 1000, 1000]
R5 = [1000] * 5
R7 = [1000] * 7

CASES = {
    "ScaleUp": (dict(current=3, target=30, levels=[300, 500, 700], requests=R3), 5, 50, 500),
    "ScaleUpUnreadyLessScale": (dict(current=3, target=30, levels=[300, 500, 700], requests=R3,
                                     readiness=[False, True, True]), 4, 60, 600),
    "ScaleUpHotCpuLessScale": (dict(current=3, target=30, levels=[300, 500, 700], requests=R3,
                                    start=[HOT, COOL, COOL]), 4, 60, 600),
    "ScaleUpUnreadyNoScale": (dict(current=3, target=30, levels=[400, 500, 700], requests=R3,
                                   readiness=[True, False, False]), 3, 40, 400),
    "ScaleHotCpuNoScale": (dict(current=3, target=30, levels=[400, 500, 700], requests=R3,
                                readiness=[True, False, False], start=[COOL, HOT, HOT]), 3, 40, 400),
    "ScaleUpIgnoresFailedPods": (dict(current=2, target=30, levels=[500, 700], requests=[1000] * 4,
                                      readiness=[True, True, False, False],
                                      phase=["Running", "Running", "Failed", "Failed"]), 4, 60, 600),
    "ScaleUpIgnoresDeletionPods": (dict(current=2, target=30, levels=[500, 700], requests=[1000] * 4,
                                        readiness=[True, True, False, False], phase=["Running"] * 4,
                                        deleted=[False, False, True, True]), 4, 60, 600),
    "ScaleDown": (dict(current=5, target=50, levels=[100, 300, 500, 250, 250], requests=R5), 3, 28, 280),
    "ScaleDownIncludeUnreadyPods": (dict(current=5, target=50, levels=[100, 300, 500, 250, 250], requests=R5,
                                         readiness=[True, True, True, False, False]), 2, 30, 300),
    "ScaleDownExcludeUnscheduledPods": (dict(current=5, target=50, levels=[100], requests=R5,
                                             readiness=[True, False, False, False, False],
                                             phase=["Running"] + ["Pending"] * 4), 1, 10, 100),
    "ScaleDownIgnoreHotCpuPods": (dict(current=5, target=50, levels=[100, 300, 500, 250, 250], requests=R5,
                                       start=[COOL, COOL, COOL, HOT, HOT]), 2, 30, 300),
    "ScaleDownIgnoresFailedPods": (dict(current=5, target=50, levels=[100, 300, 500, 250, 250], requests=R7,
                                        readiness=[True] * 5 + [False] * 2,
                                        phase=["Running"] * 5 + ["Failed"] * 2), 3, 28, 280),
    "ScaleDownIgnoresDeletionPods": (dict(current=5, target=50, levels=[100, 300, 500, 250, 250], requests=R7,
                                          readiness=[True] * 5 + [False] * 2, phase=["Running"] * 7,
                                          deleted=[False] * 5 + [True] * 2), 3, 28, 280),
    "Tolerance": (dict(current=3, target=100, levels=[1010, 1030, 1020], requests=[900, 1000, 1100]), 3, 102, 1020),
    "SuperfluousMetrics": (dict(current=4, target=100, levels=[4000, 9500, 3000, 7000, 3200, 2000],
                                requests=[1000] * 4), 24, 587, 5875),
    "MissingMetrics": (dict(current=4, target=100, levels=[400, 95], requests=[1000] * 4), 3, 24, None),
    "MissingMetricsNoChangeEq": (dict(current=2, target=100, levels=[1000], requests=[1000] * 2), 2, 100, 1000),
    "MissingMetricsNoChangeGt": (dict(current=2, target=100, levels=[1900], requests=[1000] * 2), 2, 190, 1900),
    "MissingMetricsNoChangeLt": (dict(current=2, target=100, levels=[600], requests=[1000] * 2), 2, 60, 600),
    "MissingMetricsUnreadyChange": (dict(current=3, target=50, levels=[100, 450], requests=R3,
                                         readiness=[False, True, True]), 3, 45, 450),
    "MissingMetricsHotCpuNoChange": (dict(current=3, target=50, levels=[100, 450], requests=R3,
                                          start=[HOT, COOL, COOL]), 3, 45, 450),
    "MissingMetricsUnreadyScaleUp": (dict(current=3, target=50, levels=[100, 2000], requests=R3,
                                          readiness=[False, True, True]), 4, 200, 2000),
    "MissingMetricsHotCpuScaleUp": (dict(current=3, target=50, levels=[100, 2000], requests=R3,
                                         readiness=[False, True, True], start=[HOT, COOL, COOL]), 4, 200, 2000),
    "MissingMetricsUnreadyScaleDown": (dict(current=4, target=50, levels=[100, 100, 100], requests=[1000] * 4,
                                            readiness=[False, True, True, True]), 3, 10, 100),
    "DuringRollingUpdateWithMaxSurge": (dict(current=2, target=50, levels=[100, 100], requests=R3,
                                             phase=["Running"] * 3), 2, 10, 100),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_replica_calculator_case(name):
    kw, replicas, utilization, value = CASES[name]
    got = calc(**kw)
    assert got[0] == replicas, name
    assert got[1] == utilization, name
    if value is not None:
        assert got[2] == CONTAINERS * value, name
    else:  # MissingMetrics: "numContainersPerPod * 247, for sufficiently large values of 247"
        assert got[2] == 495


def test_replica_calculator_computed_tolerance():
    """TestReplicaCalcComputedToleranceAlgImplementation, both halves."""
    start_pods, used = 10, 10 * 150
    requested = 2 * used
    requested_to_used = float(requested // used)
    per_pod = requested // start_pods
    target = abs(1 / (requested_to_used * (1 - 0.1))) + 0.01
    final_pods = math.ceil(used / (requested * target) * start_pods)
    requests = [per_pod + d for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0)]
    got = calc(current=start_pods, target=int(target * 100), levels=[used // 10] * 10, requests=requests)
    assert got[0] == final_pods == 9 and got[1] == (used * 100) // requested
    target = abs(1 / (requested_to_used * (1 - 0.1))) + 0.004
    assert calc(current=start_pods, target=int(target * 100), levels=[used // 10] * 10,
                requests=requests)[0] == start_pods


@pytest.mark.parametrize("kw, message", [
    (dict(current=1, target=100, levels=[100], requests=[1000], pod_names=["an-older-pod-name"]),
     "no metrics returned matched known pods"),  # TestReplicaCalcDisjointResourcesMetrics
    (dict(current=1, target=100, levels=[200], requests=[]), "missing request for"),  # EmptyCPURequest
])  # fmt: skip
def test_replica_calculator_errors(kw, message):
    with pytest.raises(HPAError, match=message):
        calc(**kw)


def test_empty_metrics_is_an_error():
    """TestReplicaCalcEmptyMetrics: no metric at all (the metrics API returned none)."""
    pods = [HPAPod(f"test-pod-{i}", 2000, None) for i in range(4)]
    with pytest.raises(HPAError, match="no metrics returned from resource metrics API"):
        resource_replicas(4, 100, pods, NOW, 0.1, INIT, DELAY)


def pod(name, metric=1, phase="Succeeded", start=None, ready=None, transition=0.0, ts=0.0, window=60.0):
    return HPAPod(name, 1000, metric, phase=phase, ready=ready, start_s=start, ready_transition_s=transition,
                  metric_t_s=ts, metric_window_s=window)


GROUP_CASES = {
    "void": ([], 0, set(), set(), set()),
    "ignore a pod without ready condition": ([pod("lucretius", start=NOW)], 0, {"lucretius"}, set(), set()),
    "count in a ready pod with fresh metrics during initialization period": (
        [pod("bentham", start=NOW - 60, ready=True, transition=NOW - 30, ts=NOW, window=30)], 1, set(), set(), set()),
    "ignore a ready pod without fresh metrics during initialization period": (
        [pod("bentham", start=NOW - 60, ready=True, transition=NOW - 30, ts=NOW, window=60)], 0, {"bentham"}, set(), set()),
    "ignore an unready pod during initialization period": (
        [pod("lucretius", start=NOW - 600, ready=False, transition=NOW - 594)], 0, {"lucretius"}, set(), set()),
    "count in a ready pod without fresh metrics after initialization period": (
        [pod("bentham", start=NOW - 180, ready=True, transition=NOW - 180, ts=NOW - 120)], 1, set(), set(), set()),
    "count in an unready pod that was ready after initialization period": (
        [pod("lucretius", start=NOW - 600, ready=False, transition=NOW - 540)], 1, set(), set(), set()),
    "ignore pod that has never been ready after initialization period": (
        [pod("lucretius", start=NOW - 600, ready=False, transition=NOW - 590)], 1, set(), set(), set()),
    "a missing pod": ([pod("epicurus", metric=None, start=NOW - 180)], 0, set(), {"epicurus"}, set()),
    "several pods": ([pod("lucretius", start=NOW), pod("niccolo", start=NOW - 180, ready=True, transition=NOW - 180),
                      pod("epicurus", metric=None, start=NOW - 180)], 1, {"lucretius"}, {"epicurus"}, set()),
    "pending pods are unreadied": ([pod("unscheduled", metric=None, phase="Pending")], 0, {"unscheduled"}, set(), set()),
    "ignore pods with deletion timestamps": ([HPAPod("deleted", 1000, 1, phase="Pending", deleted=True)], 0, set(),
                                             set(), {"deleted"}),
    "ignore pods in a failed state": ([HPAPod("failed", 1000, 1, phase="Failed")], 0, set(), set(), {"failed"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GROUP_CASES))
def test_group_pods_case(name):
    pods, ready, unready, missing, ignored = GROUP_CASES[name]
    assert group_pods(pods, NOW, INIT, DELAY) == (ready, unready, missing, ignored)


# -- the controller's view of scalelab's observations (hpa_pods), and the cases that
# -- tell it apart from a calculator that counts every pod as Running


def context(replicas: int, cpu: float) -> Context:
    return Context(replicas=replicas, p95_ms=100.0, rps=10.0, cpu_request_ratio=cpu, cpu_limit_ratio=cpu,
                   mem_request_ratio=0.3, mem_limit_ratio=0.3, cpu_request_now=cpu)


def sample(name, phase, cpu_cores, request=2.0, start=0.0):
    """A pod of two containers of ``request / 2`` cores each (the Go fixtures' pods)."""
    return PodSample(name, phase, start, None if phase == "starting" else start, request, request, 512.0, 512.0,
                     cpu_cores, None if cpu_cores is None else 100.0)


def test_upstream_TestReplicaCalcScaleDownExcludeUnscheduledPods_from_an_observation():
    """TestReplicaCalcScaleDownExcludeUnscheduledPods through ``hpa_pods``: one ready pod
    at 10 % and four pods created but not started (starting, no CPU sample) are Pending,
    so unready, not missing: 1 replica at 10 % (filled at 100 % as missing pods they
    would flip the direction and keep 5)."""
    pods = (sample("test-pod-0", "ready", 0.2), *(sample(f"test-pod-{i}", "starting", None) for i in range(1, 5)))
    obs = Observation(NOW, context(1, 0.1), 5, pods=pods)
    seen = hpa_pods(obs, 60.0)
    assert [p.phase for p in seen] == ["Running"] + ["Pending"] * 4
    assert resource_replicas(5, 50, seen, NOW, 0.1, INIT, DELAY) == (1, 10, CONTAINERS * 100)


def test_hpa_pods_starting_pod_with_a_sample_is_running_and_unready():
    """A starting pod the metrics API has a sample of has started its containers:
    Running, Ready false since its creation (unready within the CPU-initialisation
    period), not Pending."""
    obs = Observation(NOW, context(1, 0.5), 2, pods=(sample("a", "ready", 1.0), sample("b", "starting", 0.1, start=NOW)))
    seen = hpa_pods(obs, 60.0)
    assert [(p.phase, p.ready) for p in seen] == [("Running", True), ("Running", False)]
    assert group_pods(seen, NOW, INIT, DELAY) == (1, {"b"}, set(), set())


def test_upstream_TestReplicaCalcMissingMetricsScaleDownTargetOver100():
    """TestReplicaCalcMissingMetricsScaleDownTargetOver100: on a scale-down the missing
    pod is filled at ``max(100 %, target)`` of its request (300 % here): 2 replicas (at
    100 % it would be 1)."""
    got = calc(current=4, target=300, levels=[200, 100, 100], requests=[1000, 1000, 2000, 2000],
               readiness=[False, True, True, True])
    assert got == (2, 6, CONTAINERS * 100)


def test_upstream_TestGroupPods_ignore_pods_with_deletion_timestamps_and_failed():
    """TestGroupPods "ignore pods with deletion timestamps" and "ignore pods in a failed
    state": both report a metric, and both are ignored."""
    assert group_pods([HPAPod("deleted", 1000, 1, phase="Pending", deleted=True)], NOW, INIT, DELAY) == (
        0, set(), set(), {"deleted"})
    assert group_pods([HPAPod("failed", 1000, 1, phase="Failed")], NOW, INIT, DELAY) == (0, set(), set(), {"failed"})


def test_upstream_TestReplicaCalcScaleUpIgnoresDeletionPods_with_metrics():
    """TestReplicaCalcScaleUpIgnoresDeletionPods and ...Failed..., with the deleted and
    failed pods still reporting CPU (``removeMetricsForPods(metrics, ignoredPods)``):
    their usage leaves the utilisation, 4 replicas at 60 % as in the Go case."""
    got = calc(current=2, target=30, levels=[500, 700, 2000, 2000], requests=[1000] * 4,
               readiness=[True, True, False, False], phase=["Running"] * 4, deleted=[False, False, True, True])
    assert got == (4, 60, CONTAINERS * 600)
    got = calc(current=2, target=30, levels=[500, 700, 2000, 2000], requests=[1000] * 4,
               readiness=[True, True, False, False], phase=["Running", "Running", "Failed", "Failed"])
    assert got == (4, 60, CONTAINERS * 600)


def test_draining_pod_with_cpu_is_ignored_from_an_observation():
    """A draining pod (a deletion timestamp) that still reports CPU is ignored: two ready
    pods at 50 % of a 50 % target hold at 2 (with the draining pod's 100 % counted it
    would be 66 % and 3 replicas)."""
    pods = (sample("a", "ready", 1.0), sample("b", "ready", 1.0), sample("c", "draining", 2.0))
    obs = Observation(NOW, context(2, 0.5), 2, pods=pods)
    assert resource_replicas(2, 50, hpa_pods(obs, 60.0), NOW, 0.1, INIT, DELAY) == (2, 50, 1000)


def test_upstream_Tolerances_isWithin_at_exactly_110_percent():
    """``Tolerances.isWithin`` (as TestReplicaCalcTolerance, at the bound): 10 pods at
    88 % of an 80 % target have a usage ratio of exactly 1 + 0.1 and hold at 10, on the
    per-pod path as on the context's mean. ``abs(1 - 1.1) <= 0.1`` is false in floating
    point (0.10000000000000009), which scaled to 11."""
    assert abs(1.0 - 88 / 80) > 0.1 and Tolerances(0.1, 0.1).within(88 / 80)
    pods = (sample(f"p{i}", "ready", 0.88, request=1.0) for i in range(10))
    obs = Observation(NOW, context(10, 0.88), 10, pods=tuple(pods))
    assert resource_replicas(10, 80, hpa_pods(obs, 60.0), NOW)[:2] == (10, 88)
    h = HPA(target_utilization=80, max_replicas=20)
    assert h.proposal(10, 10, 0, 0.88) == 10
    assert h.reconcile(NOW, 10, 10, 0.88, obs) == 10
    assert resource_replicas(10, 80, hpa_pods(obs, 60.0), NOW, Tolerances(0.1, 0.05))[0] == 11  # a 5 % scale-up tolerance
