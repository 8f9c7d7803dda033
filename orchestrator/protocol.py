"""Scale orders and their clamping: the part of the message protocol the agent uses.

An order is ``fixed`` (``level`` is the target replica count) or ``incremental``
(``level`` is a signed step). Either way the result is clamped to ``[min, max]``, as the
paper's orchestrator did with its ``deployment_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.errors import OrderError
from scalelab.orchestrator.backend import ScaleResult, clamp

__all__ = ["ORDERS", "ORDER_MODES", "OrderError", "ScaleOrder", "clamp"]

ORDER_MODES = ("fixed", "incremental")


@dataclass(frozen=True)
class ScaleOrder:
    """``scaleSUT``: ``mode`` is ``fixed`` or ``incremental``; ``level`` an integer."""

    mode: str
    level: int

    def __post_init__(self) -> None:
        if self.mode not in ORDER_MODES:
            raise OrderError(f"scaleSUT.mode={self.mode!r} is not one of {ORDER_MODES}")
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise OrderError(f"scaleSUT.level={self.level!r} must be an integer")
        if self.mode == "fixed" and self.level < 0:
            raise OrderError(f"scaleSUT.level={self.level} must be >= 0 in fixed mode")

    def requested(self, current: int) -> int:
        """The replica count this order asks for from ``current`` replicas, before the
        limits (``clamp`` applies them)."""
        return self.level if self.mode == "fixed" else int(current) + self.level

    def carry_out(self, current: int, minimum: int, maximum: int) -> ScaleResult:
        """This order from ``current`` replicas under the limits: :func:`clamp`."""
        return clamp(current, self.requested(current), minimum, maximum)

    def target(self, current: int, minimum: int, maximum: int) -> int:
        """The replica count this order leaves, clamped to ``[minimum, maximum]``."""
        return self.carry_out(current, minimum, maximum).applied


STAY = ScaleOrder("incremental", 0)


# --------------------------------------------------------------------------- messages
#: Orders the orchestrator understands on topic ``action`` (the paper's vocabulary).
ORDERS = (
    "getState", "scaleSUT", "setDeploymentLimit", "LocustMgmt", "getConfig", "ChangeConfig",
    "setZipkinLookback", "setZipkinService", "getDeploymentState", "resetZipkinPrometheusStats",
)  # fmt: skip
LOCUST_ORDERS = ("set_user_level", "step_user_level", "reset", "stop", "set_task")

#: Ceilings of the config orders (an order beyond them is refused, not clamped).
MAX_ORDER_BYTES = 65_536
MAX_REPLICAS = 1000
MAX_LOOKBACK_S = 3600.0
MAX_TRACE_NUMBER = 1_000_000
MAX_WAIT_S = 300.0  # scaleSUT's ``timeout_s`` (waitPrometheus)


def _finite(value) -> bool:
    import math

    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class Order:
    """A parsed order: its ``transactionId``, name and the raw fields."""

    transaction_id: object
    name: str
    fields: dict


def parse_order(raw: bytes | str) -> Order:
    """Parse and check one message of topic ``action``; :class:`OrderError` names the
    field and the value that are wrong."""
    import json

    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OrderError(f"message is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(msg, dict):
        raise OrderError(f"message must be a JSON object, got {type(msg).__name__}")
    tid = msg.get("transactionId")
    name = msg.get("order")
    if tid is None or isinstance(tid, bool) or not isinstance(tid, str | int) or tid == "":
        raise OrderError(f"order {name!r} has no transactionId (a string or integer) to answer to, "
                         f"got {tid!r}; not carried out", order=name if isinstance(name, str) else None)
    if len(raw) > MAX_ORDER_BYTES:
        raise OrderError(f"order {str(name)[:40]!r} of {len(raw)} bytes is larger than {MAX_ORDER_BYTES}; "
                         "not carried out", transaction_id=tid, order=name if isinstance(name, str) else None)
    if name not in ORDERS:
        import difflib

        close = difflib.get_close_matches(str(name), ORDERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OrderError(f"unknown order {name!r}{hint}", transaction_id=tid, order=name)
    try:
        if name == "scaleSUT":
            ScaleOrder(msg.get("mode"), msg.get("level"))
            wait = msg.get("timeout_s", 60)
            if not _finite(wait) or not 0 < wait <= MAX_WAIT_S:
                raise OrderError(f"scaleSUT.timeout_s must be a number in (0, {MAX_WAIT_S:g}], got {wait!r}")
        elif name == "setDeploymentLimit":
            lo, hi = msg.get("min"), msg.get("max")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 0 <= lo <= hi \
                    or hi > MAX_REPLICAS:
                raise OrderError(f"setDeploymentLimit needs integers 0 <= min <= max <= {MAX_REPLICAS}, got "
                                 f"min={lo!r} max={hi!r}")
        elif name == "LocustMgmt":
            payload = msg.get("payload")
            if not isinstance(payload, dict) or payload.get("order") not in LOCUST_ORDERS:
                raise OrderError(f"LocustMgmt.payload.order must be one of {LOCUST_ORDERS}, got {payload!r}")
        elif name == "setZipkinLookback":
            lb = msg.get("lookback")
            if not _finite(lb) or not 0 < lb <= MAX_LOOKBACK_S:
                raise OrderError(f"setZipkinLookback.lookback must be a number in (0, {MAX_LOOKBACK_S:g}] s, "
                                 f"got {lb!r}")
        elif name == "setZipkinService":
            sv = msg.get("services")
            if not isinstance(sv, list) or not all(isinstance(s, str) for s in sv):
                raise OrderError(f"setZipkinService.services must be a list of names, got {sv!r}")
    except OrderError as exc:
        raise OrderError(str(exc), transaction_id=tid, order=name) from None
    return Order(transaction_id=tid, name=name, fields=msg)


def result_message(transaction_id, order, ok: bool, reason: str | None = None) -> dict:
    """The reply on topic ``action_result``."""
    out = {"transactionId": transaction_id, "order": order, "result": "OK" if ok else "ERROR"}
    if reason:
        out["reason"] = reason
    return out
