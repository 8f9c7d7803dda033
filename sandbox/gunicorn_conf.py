"""gunicorn settings of a sandbox replica (``gunicorn -c python:scalelab.sandbox.gunicorn_conf``):
each worker also answers ``/healthz`` and ``/metrics`` on ``$SANDBOX_CONTROL_PORT`` from a
thread of its own, so a replica whose request threads are all busy with ``/run`` still
tells the balancer and Prometheus that it lives (the workers share the port:
``SO_REUSEPORT``)."""

from __future__ import annotations

import os

#: No control socket (gunicorn >= 25.1 binds one fixed path per user, so every replica on
#: a host would rebind it and the first to stop would remove it under the others; nothing
#: here uses gunicornc). Older gunicorns ignore the unknown setting.
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Before the worker serves: prove it can seal and run a program (its health answer
    says why not, and fails, while it cannot; ``SANDBOX_PROVE=0`` skips it for a replica
    that only serves ``/compute``), then open the control port."""
    from scalelab.sandbox.app import application, start_control_listener

    if os.environ.get("SANDBOX_PROVE", "1") != "0":
        application.prove()
    port = os.environ.get("SANDBOX_CONTROL_PORT")
    if port:
        start_control_listener(application, int(port))
