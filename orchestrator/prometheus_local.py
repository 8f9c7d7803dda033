"""Debian's real Prometheus, with a generated configuration that scrapes every live
replica every 5 s (file-based service discovery, rewritten as replicas come and go)."""

from __future__ import annotations

import shutil
from pathlib import Path

from scalelab.errors import PermanentError
from scalelab.orchestrator.local_processes import spawn, stop, wait_http

CONFIG = """global:
  scrape_interval: {interval}
  scrape_timeout: 4s
  evaluation_interval: {interval}
scrape_configs:
  - job_name: sandbox
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"""


class PrometheusError(PermanentError, RuntimeError):
    """Prometheus is missing or did not start."""


class LocalPrometheus:
    def __init__(self, workdir: Path, port: int, interval_s: int = 5, pid: int | None = None) -> None:
        self.dir, self.port, self.interval, self.pid = Path(workdir), port, interval_s, pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.dir / "targets.json"

    def start(self, timeout_s: float = 30.0) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            raise PrometheusError("prometheus is not installed (apt-get install prometheus)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(CONFIG.format(interval=f"{self.interval}s", targets=self.targets_file))
        self.pid = spawn([exe, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                          "--storage.tsdb.retention.time=1d"], self.dir / "prometheus.log")
        if not wait_http(f"{self.url}/-/ready", timeout_s, pid=self.pid):
            raise PrometheusError(f"prometheus did not become ready; see {self.dir / 'prometheus.log'}")

    def stop(self) -> None:
        stop(self.pid)
