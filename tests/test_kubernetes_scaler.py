"""The KubernetesScaler against a local stub of the API server (no cluster here)."""

import pytest

pytest.importorskip("kubernetes")

from scalelab.orchestrator.scalers.kubernetes import KubernetesScaleError, KubernetesScaler
from tests.k8s_stub import StubAPIServer

#: What the orchestrator's Role grants (k8s/base): the scaler must need nothing else.
ALLOWED = {("get", "deployments/scale"), ("patch", "deployments/scale"), ("get", "deployments")}


def scaler(stub, **kw):
    return KubernetesScaler("sandbox", "default", host=stub.url, poll_s=0.05, backoff_s=0.01, **kw)


def test_scale_patches_and_waits_until_ready():
    with StubAPIServer(replicas=1, ready_delay_s=0.3) as stub:
        sc = scaler(stub)
        assert sc.desired_replicas == 1 and sc.ready_replicas == 1
        sc.scale_to(3)
        assert stub.spec == 3 and sc.ready_replicas == 3
        assert set(stub.calls) <= ALLOWED


def test_conflicts_and_server_errors_are_retried():
    with StubAPIServer(replicas=2, ready_delay_s=0.0) as stub:
        stub.faults = [409, 503, 500]
        scaler(stub).scale_to(4)
        assert stub.spec == 4
        assert set(stub.calls) <= ALLOWED


def test_the_api_servers_retry_after_is_honoured():
    waits = []
    with StubAPIServer(replicas=2, ready_delay_s=0.0) as stub:
        stub.faults, stub.retry_after = [429, 503], "3"
        scaler(stub, sleep=waits.append).scale_to(4)
        assert stub.spec == 4
    # each refused request waited the server's 3 s (more than the 0.01-s and 0.02-s backoffs)
    assert waits[:2] == [3.0, 3.0]


def test_permanent_errors_are_raised_not_swallowed():
    with StubAPIServer() as stub:
        stub.faults = [403]
        with pytest.raises(KubernetesScaleError, match="HTTP 403") as e:
            scaler(stub).scale_to(2)
        assert e.value.retry is False
        stub.faults = [503] * 10
        with pytest.raises(KubernetesScaleError, match="HTTP 503") as e:
            scaler(stub, retries=2).scale_to(2)
        assert e.value.retry is True


def test_readiness_timeout_is_reported():
    with StubAPIServer(replicas=1, ready_delay_s=60) as stub:
        with pytest.raises(KubernetesScaleError, match="ready replicas"):
            scaler(stub, ready_timeout_s=0.3).scale_to(5)
