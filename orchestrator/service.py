"""The orchestrator service: orders in on Kafka topic ``action``, answers out.

Threads: the Zipkin collector (spans, continuously), the Prometheus loop (pod samples
every ``metric_interval_s``), and the order loop. Every order gets a reply on
``action_result`` naming its ``transactionId``: ``OK``, or ``ERROR`` with a reason.
``getState`` also answers on ``state`` with the context and how stale each signal is
(``gaps``). Malformed, unknown and out-of-range orders get ``ERROR``; the service never
scales outside ``[min, max]`` and never dies on input. When Prometheus or Kafka goes
away the loops wait and reconnect; the context says how long a signal has been missing.

Run: ``python -m scalelab.orchestrator --bootstrap 127.0.0.1:PORT --stack-dir DIR`` (the local
stack's replicas) — see ``--help``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Protocol

import numpy as np

from scalelab.errors import ScalelabError
from scalelab.orchestrator.backend import clamp
from scalelab.orchestrator.collectors.zipkin import ZipkinCollector
from scalelab.orchestrator.context import ClientLatencies, ContextBuilder, ContextSettings
from scalelab.orchestrator.protocol import MAX_TRACE_NUMBER, Order, OrderError, ScaleOrder, parse_order, result_message


class Scaler(Protocol):
    """What the orchestrator needs of a deployment: the simulated cluster, the
    LocalScaler and the KubernetesScaler all provide it."""

    @property
    def desired_replicas(self) -> int: ...

    @property
    def ready_replicas(self) -> int: ...

    def scale_to(self, n: int) -> None: ...


#: Orders that change something: each is carried out once per transactionId.
MUTATING = frozenset({"scaleSUT", "setDeploymentLimit", "LocustMgmt", "ChangeConfig", "setZipkinLookback",
                      "setZipkinService", "resetZipkinPrometheusStats"})
#: How many answers are kept to recognise a repeated transactionId.
ANSWERS_KEPT = 10_000


class OrchestratorService:
    def __init__(self, scaler: Scaler, bootstrap: str | None = None, prometheus_url: str | None = None,
                 context: ContextSettings | None = None, services: tuple[str, ...] = ("sandbox",),
                 min_replicas: int = 1, max_replicas: int = 10, metric_interval_s: float = 5.0,
                 namespace: str = "default", clock: Callable[[], float] = time.time,
                 api_version: tuple[int, int] | None = (2, 3), fetch_wait_ms: int = 50,
                 pools: dict[str, Scaler] | None = None, jobs: dict | None = None) -> None:
        # the jobs architecture (runners pulling jobs from Kafka): {"jobs_topic", "results_topic", "group"}
        self.jobs_settings = dict(jobs) if jobs else None
        self.jobs = None  # its JobsCollector, once started
        # several Deployments (node pools): scaleSUT's optional ``deployment`` picks one
        self.pools = dict(pools or {})
        self.fetch_wait_ms = fetch_wait_ms  # the order consumer's long-poll wait: idle CPU vs round trip
        self.scaler, self.bootstrap, self.prometheus_url = scaler, bootstrap, prometheus_url
        self.min, self.max = min_replicas, max_replicas
        self.interval, self.namespace, self.clock, self.api_version = metric_interval_s, namespace, clock, api_version
        self.lock = threading.Lock()
        self.settings = context or ContextSettings()
        self.builder = ContextBuilder(self.settings)
        self.services = tuple(services)
        self.last_prometheus_ok: float | None = None
        self.last_locust: dict | None = None
        self.client = ClientLatencies()  # the load generator's requests, from its statistics messages
        self.prometheus_error: str | None = None
        self.kafka_error: str | None = None
        self.orders_handled = 0
        self.errors = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.zipkin: ZipkinCollector | None = None
        self._scale_lock = threading.Lock()
        self._answered: dict[tuple[str, str], list] = {}  # the last answers of changing orders
        self.replicas_replaced = 0  # replicas found dead and replaced (scalers that can)
        # scale orders wait (readiness, Prometheus) on their own thread, not the order loop's
        self._scaling = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scaling")
        self._outbox: queue.Queue = queue.Queue()
        self.started_wall_s = time.time()  # Kafka timestamps are wall clock: older orders are stale

    # ------------------------------------------------------------------ orders
    def handle(self, raw: bytes) -> list[tuple[str, dict]]:
        """Answer one message of topic ``action``: ``[(topic, message), ...]``. An order
        that changes something is carried out once per ``transactionId``: a repeat gets
        the first answer again (marked ``duplicate``), not a second application."""
        self.orders_handled += 1
        try:
            order = parse_order(raw)
            key = (str(order.transaction_id), order.name)
            if order.name in MUTATING and key in self._answered:
                return [(topic, {**msg, "duplicate": True}) for topic, msg in self._answered[key]]
            out = self._dispatch(order)
            if order.name in MUTATING:
                self._answered[key] = out
                while len(self._answered) > ANSWERS_KEPT:
                    self._answered.pop(next(iter(self._answered)))
            return out
        except OrderError as exc:
            self.errors += 1
            return [("action_result", result_message(exc.transaction_id, exc.order, False, str(exc)))]
        except Exception as exc:  # a failing scaler or collector: report, keep serving
            self.errors += 1
            tid = _tid(raw)
            return [("action_result", result_message(tid, None, False, f"{type(exc).__name__}: {exc}"))]

    def handle_batch(self, records: list[tuple[bytes, float]],
                     defer: Callable[[bytes], None] | None = None) -> list[tuple[str, dict]]:
        """Answer a batch of ``(message, sent_at_s)`` read from topic ``action``, in
        order. An order sent before this orchestrator started (left in the topic while
        it was down) is stale and refused; of several ``scaleSUT`` orders of one
        deployment in the batch, only the newest is carried out, the others are
        answered as superseded. ``defer``: scale orders to be carried out there (off the
        order loop, so a long wait for readiness holds no other order) instead of here."""
        heads = [_scale_head(raw) for raw, _ in records]
        newest: dict[str, int] = {}
        for i, ((_, sent_at), head) in enumerate(zip(records, heads, strict=True)):
            if head is not None and sent_at >= self.started_wall_s - STALE_SLACK_S:
                newest[head[1]] = i
        out = []
        for i, ((raw, sent_at), head) in enumerate(zip(records, heads, strict=True)):
            if sent_at < self.started_wall_s - STALE_SLACK_S:
                self.errors += 1
                out.append(("action_result", result_message(
                    _tid(raw), None, False, f"stale: sent {self.started_wall_s - sent_at:.0f} s before this "
                    "orchestrator started; not carried out")))
            elif head is not None and newest.get(head[1]) != i:
                out.append(("action_result", result_message(
                    head[0], "scaleSUT", False, "superseded by a newer scaleSUT in the same batch; not carried out")))
            elif head is not None and defer is not None:
                defer(raw)
            else:
                out.extend(self.handle(raw))
        return out

    def _ok(self, order: Order, reason: str | None = None, **extra) -> tuple[str, dict]:
        return "action_result", {**result_message(order.transaction_id, order.name, True, reason), **extra}

    def _dispatch(self, order: Order) -> list[tuple[str, dict]]:
        f = order.fields
        if order.name == "getState":
            return [("state", self.state_message(order.transaction_id)), self._ok(order)]
        if order.name == "scaleSUT":
            scaler = self._pool(order)
            current = scaler.desired_replicas
            result = ScaleOrder(f["mode"], f["level"]).carry_out(current, self.min, self.max)
            target = result.applied
            note = f"clamped from {result.requested} to [{self.min}, {self.max}]: {target}" if result.clamped else None
            if f.get("waitKubernetes", True):
                with self._scale_lock:
                    scaler.scale_to(target)
                if f.get("waitPrometheus", False) and self.prometheus_url:
                    self._wait_prometheus(target, float(f.get("timeout_s", 60)))
            else:
                threading.Thread(target=self._scale_async, args=(scaler, target), daemon=True).start()
            return [self._ok(order, note, replicas=target)]
        if order.name == "setDeploymentLimit":
            self.min, self.max = f["min"], f["max"]
            clamped = []
            for name, scaler in (self.pools or {"default": self.scaler}).items():  # the deployment obeys at once
                current = scaler.desired_replicas
                target = clamp(current, current, self.min, self.max).applied
                if target != current:
                    with self._scale_lock:
                        scaler.scale_to(target)
                    clamped.append(f"{name} {current} -> {target}")
            return [self._ok(order, f"scaled into the new limits: {', '.join(clamped)}" if clamped else None)]
        if order.name == "LocustMgmt":
            return [("locust_order", f["payload"]), self._ok(order)]
        if order.name == "getConfig":
            return [self._ok(order, config=self.config())]
        if order.name == "getDeploymentState":
            return [self._ok(order, replicas=self.scaler.desired_replicas, ready=self.scaler.ready_replicas,
                             min=self.min, max=self.max)]
        if order.name == "resetZipkinPrometheusStats":  # a new episode: drop the last one's spans and samples
            self._reconfigure()
            return [self._ok(order)]
        if order.name == "setZipkinLookback":
            self._reconfigure(window_s=float(f["lookback"]))
            return [self._ok(order)]
        if order.name == "setZipkinService":
            self.services = tuple(f["services"])
            if self.zipkin is not None:
                self.zipkin.services = frozenset(self.services)
            return [self._ok(order)]
        if order.name == "ChangeConfig":
            comp, n = f.get("component"), f.get("trace_number")
            if comp not in ("zipkin", "prometheus") or isinstance(n, bool) or not isinstance(n, int) \
                    or not 1 <= n <= MAX_TRACE_NUMBER:
                raise OrderError(f"ChangeConfig needs component zipkin|prometheus and 1 <= trace_number <= "
                                 f"{MAX_TRACE_NUMBER}, got {comp!r}, {n!r}", order.transaction_id, order.name)
            if comp == "zipkin":
                self._reconfigure(span_buffer=n)
            else:
                self._reconfigure(metric_buffer=n)
            return [self._ok(order)]
        raise OrderError(f"order {order.name!r} is not handled", order.transaction_id, order.name)

    def _pool(self, order: Order) -> Scaler:
        name = order.fields.get("deployment")
        if name is None:
            return self.scaler
        if name not in self.pools:
            raise OrderError(f"scaleSUT.deployment {name!r} is not one of {sorted(self.pools) or 'the pools (none)'}",
                             order.transaction_id, order.name)
        return self.pools[name]

    def _scale_async(self, scaler: Scaler, target: int) -> None:
        with self._scale_lock:
            try:
                scaler.scale_to(target)
            except Exception:
                self.errors += 1

    def _reconfigure(self, **changes) -> None:
        try:
            settings = replace(self.settings, **changes)
        except ValueError as exc:
            raise OrderError(str(exc)) from None
        with self.lock:
            self.settings = settings
            self.builder = ContextBuilder(settings)
            if self.zipkin is not None:
                self.zipkin.builder = self.builder
            if self.jobs is not None:
                self.jobs.builder = self.builder

    def config(self) -> dict:
        return {"context": asdict(self.settings), "services": list(self.services), "min": self.min,
                "max": self.max, "metric_interval_s": self.interval, "prometheus": self.prometheus_url,
                "bootstrap": self.bootstrap}

    def state_message(self, transaction_id) -> dict:
        now = self.clock()
        ages = self._in_flight_ages_ms()
        with self.lock:
            ctx = self.builder.build(now, self.scaler.ready_replicas, ages)
            client_p95, client_n = self.client.p95(now, self.settings)
        last_span = self.zipkin.last_span_at if self.zipkin is not None else (
            self.jobs.last_result_at if self.jobs is not None else None)
        gaps = {
            "prometheus_s": None if self.last_prometheus_ok is None else round(now - self.last_prometheus_ok, 3),
            "zipkin_s": None if last_span is None else round(now - last_span, 3),
            "prometheus_error": self.prometheus_error,
            "replicas_replaced": self.replicas_replaced,
        }
        out = {"transactionId": transaction_id, "order": "getState", "context": ctx.to_dict(),
               "desired_replicas": self.scaler.desired_replicas, "gaps": gaps, "locust": self.last_locust,
               "client": {"p95_ms": client_p95, "requests": client_n}, "t": now}
        if ages is not None:  # the balancer's view: in-flight requests, censored when none completed
            out["in_flight"] = int(ages.shape[0])
            out["censored"] = int(ages.shape[0]) if ctx.spans == 0 else 0
        if self.jobs is not None:  # the jobs architecture's queue (offsets, waits, turnaround)
            runners = len(getattr(self.scaler, "replicas", ())) or self.scaler.desired_replicas
            try:
                out["queue"] = self.jobs.signals(now, self.settings.window_s, runners).to_dict()
            except Exception as exc:  # the broker did not answer the offsets: the state goes on, marked
                gaps["queue_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if self.pools:
            out["pools"] = {n: {"desired": p.desired_replicas, "ready": p.ready_replicas} for n, p in self.pools.items()}
        return out

    def _in_flight_ages_ms(self):
        """The ages of the requests in flight at the balancer, ms (None when the scaler
        cannot tell, as on Kubernetes)."""
        if self.jobs is not None:  # jobs submitted and not finished
            return self.jobs.unfinished_ages_ms(self.clock())
        ages = getattr(self.scaler, "in_flight_ages_ms", None)
        if ages is None:
            return None
        try:
            return np.asarray(ages(), dtype=float)
        except (OSError, ScalelabError):  # the balancer is a best-effort view; the state goes on without it
            return None

    # ------------------------------------------------------------------ loops
    def _prometheus_loop(self) -> None:
        from scalelab.orchestrator.collectors.prometheus import PrometheusCollector, PrometheusUnavailable

        collector = PrometheusCollector(self.prometheus_url, namespace=self.namespace)
        while not self._stop.is_set():
            try:
                pods = collector.sample()
                with self.lock:
                    self.builder.add_pod_samples(pods)
                self.last_prometheus_ok = self.clock()
                self.prometheus_error = None
                wait = self.interval
            except PrometheusUnavailable as exc:  # temporary: try again when it says
                self.prometheus_error = str(exc)[:300]
                wait = min(self.interval, exc.retry_after_s)
            self._stop.wait(wait)

    def _wait_prometheus(self, replicas: int, timeout_s: float) -> None:
        """Until Prometheus has a fresh sample of every one of ``replicas`` pods."""
        from scalelab.orchestrator.collectors.prometheus import PrometheusCollector, PrometheusUnavailable

        collector = PrometheusCollector(self.prometheus_url, namespace=self.namespace)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            wait = 0.5
            try:
                if len(collector.sample().cpu_cores) == replicas:
                    return
            except PrometheusUnavailable as exc:
                wait = max(wait, exc.retry_after_s)
            time.sleep(min(wait, max(0.0, end - time.monotonic())))

    def _order_loop(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        kw = {"api_version": self.api_version} if self.api_version else {}
        consumer = producer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer("action", "locust", bootstrap_servers=self.bootstrap,
                                             group_id="scalelab-orchestrator-orders", auto_offset_reset="latest",
                                             metadata_max_age_ms=5000, fetch_max_wait_ms=self.fetch_wait_ms, **kw)
                    producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0, **kw)
                batches = consumer.poll(timeout_ms=200, max_records=100)
                if not self.ready.is_set() and consumer.assignment():
                    # ready once every partition's position is known: a fresh group starts at the latest
                    # offset, and an order sent before that reset resolved would be skipped
                    for tp in consumer.assignment():
                        consumer.position(tp)
                    self.ready.set()
                replied = False
                for tp, records in batches.items():
                    if tp.topic == "locust":
                        for rec in records:
                            self._locust_stats(rec.value)
                        continue
                    for topic, msg in self.handle_batch([(rec.value, rec.timestamp / 1000.0) for rec in records],
                                                        defer=self._defer_scale):
                        producer.send(topic, json.dumps(msg).encode())
                        replied = True
                while not self._outbox.empty():  # answers of the scale orders carried out meanwhile
                    topic, msg = self._outbox.get_nowait()
                    producer.send(topic, json.dumps(msg).encode())
                    replied = True
                if replied:
                    producer.flush(timeout=10)
            except Exception as exc:  # broker away: reconnect; orders sent meanwhile are the sender's to retry
                self.kafka_error = f"{type(exc).__name__}: {exc}"[:300]
                for client in (consumer, producer):
                    try:
                        if client is not None:
                            client.close()
                    except Exception:
                        pass
                consumer = producer = None
                self._stop.wait(1.0)
        for client in (consumer, producer):
            if client is not None:
                client.close()

    def _defer_scale(self, raw: bytes) -> None:
        """Carry out a scale order on the scaling thread (one at a time, in order); its
        answer goes out from the order loop when it is done."""
        def work() -> None:
            for reply in self.handle(raw):
                self._outbox.put(reply)

        self._scaling.submit(work)

    def _health_loop(self, period_s: float = 2.0) -> None:
        """Every ``period_s``: replicas whose process died are replaced (counted in
        ``gaps.replicas_replaced`` of every state message)."""
        while not self._stop.wait(period_s):
            try:
                with self._scale_lock:
                    self.replicas_replaced += len(self.scaler.replace_dead())
            except Exception as exc:  # a replacement that fails is retried at the next period
                self.errors += 1
                print(f"orchestrator: replacing a dead replica failed: {type(exc).__name__}: {exc}", flush=True)

    def _locust_stats(self, raw: bytes) -> None:
        """One statistics message of the injector: kept as the last (without its
        ``samples``, which go to :attr:`client`); a malformed one is counted, not kept."""
        try:
            stats = json.loads(raw)
            if not isinstance(stats, dict):
                raise ValueError("not an object")
            samples = np.asarray(stats.pop("samples", None) or np.zeros((0, 3)), float)
            if samples.ndim != 2 or samples.shape[1] != 3 or not np.isfinite(samples).all():
                raise ValueError("samples must be rows of [start_s, end_s, response_ms]")
        except (ValueError, TypeError):
            self.errors += 1
            return
        with self.lock:
            self.client.add(samples)
        self.last_locust = stats

    def start(self) -> None:
        if self.bootstrap and self.jobs_settings is not None:
            from scalelab.orchestrator.collectors.jobs import JobsCollector

            self.jobs = JobsCollector(self.bootstrap, self.builder, self.lock, **self.jobs_settings)
            self.jobs.start()
        elif self.bootstrap:
            self.zipkin = ZipkinCollector(self.bootstrap, self.builder, self.lock, services=self.services,
                                          api_version=self.api_version)
            self.zipkin.start()
        if self.bootstrap:
            self._threads.append(threading.Thread(target=self._order_loop, name="orders", daemon=True))
        if self.prometheus_url:
            self._threads.append(threading.Thread(target=self._prometheus_loop, name="prometheus", daemon=True))
        if hasattr(self.scaler, "replace_dead"):
            self._threads.append(threading.Thread(target=self._health_loop, name="health", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        if self.zipkin is not None:
            self.zipkin.stop()
        if self.jobs is not None:
            self.jobs.stop()
        for t in self._threads:
            t.join(timeout=10)
        self._scaling.shutdown(wait=False, cancel_futures=True)


#: An order sent this long before the orchestrator started is still taken (clock skew), s.
STALE_SLACK_S = 2.0


def _scale_head(raw: bytes) -> tuple[object, str] | None:
    """``(transactionId, deployment)`` of a well-formed ``scaleSUT``, else None."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(msg, dict) and msg.get("order") == "scaleSUT" and msg.get("transactionId") is not None:
        return msg["transactionId"], str(msg.get("deployment", ""))
    return None


def _tid(raw: bytes):
    try:
        msg = json.loads(raw)
        return msg.get("transactionId") if isinstance(msg, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None
