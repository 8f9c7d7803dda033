"""The Prometheus collector: per-pod CPU and memory over requests and limits.

The same PromQL runs here and on a cluster (the local replicas export cAdvisor's and
kube-state-metrics' names): CPU usage is the rate of ``container_cpu_usage_seconds_total``
over ``rate_window``; memory is ``container_memory_working_set_bytes``; requests and
limits come from ``kube_pod_container_resource_{requests,limits}``. A dead Prometheus
raises :class:`PrometheusUnavailable` (temporary: retry on the next tick).
"""

from __future__ import annotations

import numpy as np

from scalelab.errors import TemporaryError
from scalelab.orchestrator.context import PodSamples


class PrometheusUnavailable(TemporaryError, RuntimeError):
    """Prometheus did not answer; temporary, try again on the next tick."""

    retry = True


def queries(namespace: str, container: str, rate_window: str = "15s") -> dict[str, str]:
    sel = f'namespace="{namespace}",container="{container}"'
    return {
        "cpu": f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{sel}}}[{rate_window}]))",
        "mem": f"sum by (pod) (container_memory_working_set_bytes{{{sel}}})",
        "cpu_request": f'sum by (pod) (kube_pod_container_resource_requests{{{sel},resource="cpu"}})',
        "cpu_limit": f'sum by (pod) (kube_pod_container_resource_limits{{{sel},resource="cpu"}})',
        "mem_request": f'sum by (pod) (kube_pod_container_resource_requests{{{sel},resource="memory"}})',
        "mem_limit": f'sum by (pod) (kube_pod_container_resource_limits{{{sel},resource="memory"}})',
    }


class PrometheusCollector:
    def __init__(self, url: str, namespace: str = "default", container: str = "sandbox",
                 rate_window: str = "15s", timeout_s: float = 4.0) -> None:
        from prometheus_api_client import PrometheusConnect

        self.prom = PrometheusConnect(url=url, disable_ssl=True)
        self.timeout = timeout_s
        self.q = queries(namespace, container, rate_window)

    def _query(self, promql: str) -> dict[str, float]:
        try:
            result = self.prom.custom_query(promql, params={"timeout": f"{int(self.timeout)}s"})
        except Exception as exc:  # connection refused, timeout, HTTP error
            raise PrometheusUnavailable(f"prometheus at {self.prom.url} did not answer {promql!r}: {exc}") from None
        return {r["metric"].get("pod", ""): float(r["value"][1]) for r in result}

    def sample(self) -> PodSamples:
        """One sample per pod that has every series (pods still starting are left out)."""
        got = {k: self._query(q) for k, q in self.q.items()}
        pods = sorted(set.intersection(*(set(v) for v in got.values()))) if all(got.values()) else []
        arr = {k: np.array([got[k][p] for p in pods]) for k in got}
        return PodSamples(
            cpu_cores=arr["cpu"], memory_mib=arr["mem"] / 2**20, cpu_request=arr["cpu_request"],
            cpu_limit=arr["cpu_limit"], memory_request_mib=arr["mem_request"] / 2**20,
            memory_limit_mib=arr["mem_limit"] / 2**20,
        )

    def targets_up(self) -> dict[str, bool]:
        """Scrape health per target instance (``up``)."""
        return {r["metric"].get("instance", ""): r["value"][1] == "1" for r in self.prom.custom_query("up")}
