"""``scalelab corpus``: build the submission corpus and measure it on a live sandbox.

``measure_corpus`` runs every program of a corpus through ``POST /run`` of a sandbox
service (``url``), or of a one-replica local stack brought up for it with the
``sandbox`` profile's resources, and stores the CPU times with the corpus
(:mod:`scalelab.injector.corpus`).
"""

from __future__ import annotations

import json
import platform
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from scalelab.errors import UserError
from scalelab.injector.corpus import Corpus, build_corpus, measure


def http_post_run(url: str, timeout_s: float = 60.0) -> Callable[[dict], dict]:
    """A function posting a run request to ``url``/run and returning its JSON answer;
    an answer other than 200 raises :class:`UserError` with the service's words."""

    def post(body: dict) -> dict:
        req = urllib.request.Request(url.rstrip("/") + "/run", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise UserError(f"POST {url}/run answered {exc.code}: {exc.read()[:300]!r}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise UserError(f"POST {url}/run failed: {exc}") from None

    return post


def measure_corpus(corpus: Corpus | None = None, url: str | None = None, repeats: int = 5,
                   progress: Callable[[int], None] | None = None) -> Corpus:
    """``corpus`` (default: the programs of :func:`build_corpus`) measured on ``url``, or
    on a local stack of one ``sandbox``-profile replica brought up and down for it."""
    corpus = corpus or build_corpus()
    if url is not None:
        return measure(corpus, http_post_run(url), repeats, host=url, progress=progress)
    from scalelab.orchestrator.scalers.local import ReplicaSpec
    from scalelab.orchestrator.stack import LocalStack
    from scalelab.simulator.models import SANDBOX

    spec = ReplicaSpec(cpu_request=SANDBOX.cpu_request, cpu_limit=SANDBOX.cpu_limit,
                       memory_request_mib=round(SANDBOX.memory_request_mib),
                       memory_limit_mib=round(SANDBOX.memory_limit_mib))
    with tempfile.TemporaryDirectory(prefix="scalelab-corpus-") as d:
        stack = LocalStack(Path(d))
        stack.up(replicas=1, spec=spec)
        try:
            enforced = stack.scaler.cpu_limit_enforced
            host = (f"local stack, 1 replica of {spec.cpu_limit:g} core "
                    f"({'CFS quota' if enforced else 'CPU limit NOT enforced'}), {platform.node()} "
                    f"{platform.machine()}, Python {platform.python_version()}")
            return measure(corpus, http_post_run(stack.service_url), repeats, host=host, progress=progress)
        finally:
            stack.down()
