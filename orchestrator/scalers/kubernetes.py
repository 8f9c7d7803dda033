"""KubernetesScaler: the sandbox Deployment's ``apps/v1`` scale subresource.

``scale_to(n)`` patches ``deployments/{name}/scale`` and then polls the Deployment until
``status.readyReplicas == n`` (the paper's ``waitKubernetes``), within a timeout.
Conflicts (409) and server errors (5xx, connection failures) are retried with
exponential backoff; any other answer is a permanent error, raised, never swallowed.
It needs only ``get``/``patch`` on ``deployments/scale`` and ``get`` on ``deployments``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from scalelab.errors import PermanentError


class KubernetesScaleError(PermanentError, RuntimeError):
    """A scale order the API server refused; ``retry`` says whether it is temporary."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def retry_after_s(headers) -> float:
    """The ``Retry-After`` of an API server's answer, s (0 without one, or a date)."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


class KubernetesScaler:
    def __init__(self, deployment: str, namespace: str = "default", api=None, host: str | None = None,
                 ready_timeout_s: float = 300.0, poll_s: float = 1.0, retries: int = 5, backoff_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from kubernetes import client, config

        if api is None:
            if host is not None:
                cfg = client.Configuration()
                cfg.host = host
                api = client.AppsV1Api(client.ApiClient(cfg))
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                api = client.AppsV1Api()
        self.api, self.name, self.ns = api, deployment, namespace
        self.ready_timeout, self.poll, self.retries, self.backoff, self.sleep = (
            ready_timeout_s, poll_s, retries, backoff_s, sleep)

    def _call(self, what: str, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        delay = self.backoff
        for attempt in range(self.retries + 1):
            wait = delay
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                temporary = exc.status == 409 or exc.status >= 500 or exc.status == 429
                if not temporary or attempt == self.retries:
                    raise KubernetesScaleError(f"{what} {self.ns}/{self.name}: HTTP {exc.status} {exc.reason}",
                                               retry=temporary) from None
                wait = max(delay, retry_after_s(exc.headers))  # the API server's Retry-After (429, 503)
            except HTTPError as exc:
                if attempt == self.retries:
                    raise KubernetesScaleError(f"{what} {self.ns}/{self.name}: {exc}", retry=True) from None
            self.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    @property
    def desired_replicas(self) -> int:
        scale = self._call("get scale of", self.api.read_namespaced_deployment_scale, self.name, self.ns)
        return int(scale.spec.replicas or 0)

    @property
    def ready_replicas(self) -> int:
        dep = self._call("get", self.api.read_namespaced_deployment, self.name, self.ns)
        return int(dep.status.ready_replicas or 0)

    def scale_to(self, n: int, wait: bool = True) -> None:
        if n < 0:
            raise KubernetesScaleError(f"cannot scale {self.ns}/{self.name} to {n}", retry=False)
        self._call("patch scale of", self.api.patch_namespaced_deployment_scale, self.name, self.ns,
                   {"spec": {"replicas": int(n)}})
        if not wait:
            return
        end = time.monotonic() + self.ready_timeout
        while self.ready_replicas != n:
            if time.monotonic() > end:
                raise KubernetesScaleError(
                    f"{self.ns}/{self.name} has {self.ready_replicas} ready replicas, not {n}, after "
                    f"{self.ready_timeout:g} s", retry=True)
            self.sleep(self.poll)
