"""The Backend protocol is complete: every backend declares the step, the episode hooks
and the retry count, so that nothing asks a backend what it has."""

import re
from pathlib import Path

import numpy as np

from scalelab.agent.check import SyntheticBackend
from scalelab.experiments.config import load_config
from scalelab.experiments.episode import episode_seeds, make_backend, resolve
from scalelab.orchestrator.backend import Backend, BaseBackend, VirtualClock
from scalelab.orchestrator.live_backend import OrchestratorBackend

ROOT = Path(__file__).resolve().parents[1]


class Silent:
    """An orchestrator that answers every call (enough to build the live backend)."""

    def order(self, name, **fields):
        return {"result": "OK"}

    def scale(self, mode, level, **opts):
        return {"result": "OK"}

    def get_state(self):
        return {"context": {}, "desired_replicas": 1}


def backends():
    out = {}
    for engine, backend, arch in (("des", "sim", "service"), ("fluid", "sim", "service"), ("des", "replay", "service"),
                                  ("des", "sim", "jobs")):
        cfg = load_config({"name": "proto", "seed": 1, "runs": 1, "steps": 2, "engine": engine, "backend": backend,
                           "architecture": arch,
                           "workload": {"kind": "constant", "users": 2},
                           **({"dataset": "paper-D1"} if backend == "replay" else {}),
                           "policies": [{"name": "static", "replicas": 1}]})
        out[f"{backend}-{engine}" + ("-jobs" if arch == "jobs" else "")] = make_backend(cfg, resolve(cfg), dict(episode_seeds(1, 1, 1)[0], policy=0),
                                                  np.full(2, 2.0), VirtualClock())
    out["live"] = OrchestratorBackend(Silent(), VirtualClock(), 1, 4)
    out["checker"] = SyntheticBackend(VirtualClock())
    return out


def test_every_backend_is_a_complete_backend_with_the_base_hooks():
    for name, backend in backends().items():
        assert isinstance(backend, Backend), name
        assert isinstance(backend, BaseBackend), name
        assert backend.retries == 0 and isinstance(backend.clock, VirtualClock), name
    sim = backends()["sim-des"]
    assert sim.setup(1) is None and sim.stop_load() == {}  # the do-nothing defaults


def test_the_live_backend_stops_the_load_and_returns_its_statistics():
    class Stats(Silent):
        def __init__(self):
            self.orders = []

        def order(self, name, **fields):
            self.orders.append((name, fields))
            return {"result": "OK"}

        def get_state(self):
            return {"context": {}, "desired_replicas": 1, "locust": {"requests": 12, "failures": 1}}

    orch = Stats()
    live = OrchestratorBackend(orch, VirtualClock(), 1, 4)
    assert live.stop_load() == {"requests": 12, "failures": 1}
    assert orch.orders[-1] == ("LocustMgmt", {"payload": {"order": "stop"}})
    live.drive_load = False  # someone else drives the injector: left alone
    orch.orders.clear()
    assert live.stop_load() == {} and orch.orders == []


def test_no_code_asks_a_backend_what_it_has():
    pattern = re.compile(r"(hasattr|getattr)\([^)]*backend")
    for folder in ("agent", "experiments", "orchestrator", "simulator", "injector"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert not pattern.search(text), f"{path.relative_to(ROOT)}: {pattern.search(text).group(0)}"
