"""Locust users that call the sandbox, as the paper's injector did.

``SandboxUser``: ``wait_time = between(0, 2)`` (``INJECTOR_WAIT_MIN``/``MAX``), one task:
``GET /compute?cpu=200`` (the paper's ``/ConsumeFixedCpu?cpu=200``; ``INJECTOR_CPU``), or,
with ``INJECTOR_TASK=run``, ``POST /run`` with a small student-like program from
:data:`PROGRAMS`. Use it with ``locust -f injector/locustfile.py`` (master + workers) or
in library mode through :mod:`injector.master`.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

#: Small programs like the ones students submit (a solution, a bug, a slow one).
PROGRAMS = (
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(20))\n",
    "xs = [int(x) for x in '5 3 9 1 7'.split()]\nprint(sorted(xs))\n",
    "total = 0\nfor i in range(200000):\n    total += i * i\nprint(total)\n",
    "print(1 / 0)\n",
    "import math\nprint(sum(math.sqrt(i) for i in range(100000)))\n",
)


class SandboxUser(HttpUser):
    wait_time = between(float(os.environ.get("INJECTOR_WAIT_MIN", "0")), float(os.environ.get("INJECTOR_WAIT_MAX", "2")))
    cpu = int(os.environ.get("INJECTOR_CPU", "200"))
    mode = os.environ.get("INJECTOR_TASK", "compute")

    @task
    def call(self) -> None:
        if self.mode == "run":
            self.client.post("/run", json={"code": random.choice(PROGRAMS), "limits": {"cpu_seconds": 5}}, name="/run")
        else:
            self.client.get(f"/compute?cpu={self.cpu}", name="/compute")
