"""gunicorn settings of a sandbox replica (``gunicorn -c python:scalelab.sandbox.gunicorn_conf``):
each worker also answers ``/healthz`` and ``/metrics`` on ``$SANDBOX_CONTROL_PORT`` from a
thread of its own, so a replica whose request threads are all busy with ``/run`` still
tells the balancer and Prometheus that it lives (the workers share the port:
``SO_REUSEPORT``)."""

from __future__ import annotations

import os


def post_worker_init(worker) -> None:
    port = os.environ.get("SANDBOX_CONTROL_PORT")
    if port:
        from scalelab.sandbox.app import application, start_control_listener

        start_control_listener(application, int(port))
