"""``python -m scalelab.agent --config agent.yaml --bootstrap HOST:PORT``: the agent process.

Runs :func:`scalelab.agent.process.run_agent` against the orchestrator over Kafka. This entry
point is the one place of ``agent/`` that plugs in a network client: it wraps
``scalelab.orchestrator.client.OrchestratorClient`` (the paper's CogscalingLib) in the live
backend (``scalelab.orchestrator.live_backend.OrchestratorBackend``); the loop itself sees only
the :class:`scalelab.orchestrator.backend.Backend` protocol. Restarted with
the same ``--folder``, it resumes where it stopped. Exit codes: 0 done, 2 bad config,
3 the orchestrator stayed away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalelab.agent.process import AgentConfigError, AgentSpec, run_agent
from scalelab.errors import OperationalError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scalelab.agent", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the agent config (YAML), see scalelab.agent.process.AgentSpec")
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port")
    ap.add_argument("--folder", help="where records and state go (default: the config's folder)")
    ap.add_argument("--timeout", type=float, default=15.0,
                    help="seconds to wait for one answer before sending the order again")
    args = ap.parse_args(argv)
    try:
        spec = AgentSpec.load(args.config)
    except AgentConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from scalelab.orchestrator.backend import WallClock
    from scalelab.orchestrator.client import OrchestratorClient
    from scalelab.orchestrator.live_backend import OrchestratorBackend

    client = OrchestratorClient(args.bootstrap, timeout_s=args.timeout)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    backend = OrchestratorBackend(client, WallClock(), spec.min_replicas, spec.max_replicas, retry_s=spec.retry_s,
                                  spawn_rate=spec.spawn_rate, injector_task=spec.injector_task, log=log)
    print("agent ready", flush=True)
    try:
        result = run_agent(spec, backend, args.folder or Path(args.config).parent, log=log)
    except AgentConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OperationalError as exc:  # the orchestrator stayed away, or refused an order
        print(f"agent: {exc}", file=sys.stderr)
        return 3
    finally:
        client.close()
    print(f"agent done: {result.steps_done} steps (resumed at {result.resumed_at}, {result.retries} retries)",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
