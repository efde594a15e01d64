"""A hardened ``ocpp.v201.ChargePoint`` shared by the CSMS and the station side.

The ``ocpp`` package parses frames in ``route_message`` and logs a traceback for anything
malformed.  Here every frame is checked for the OCPP-J shape first (OCPP 2.0.1 Part 4, 4.1-4.3):
a bad frame gets a CALLERROR (``RpcFrameworkError``/``FormatViolation``) and a one-line warning,
never a crash, and is counted.  Errors raised on purpose from handlers (``OCPPError``) are
logged as warnings; only a real fault in our own code is logged with a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ocpp import messages as _ocpp_messages
from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.routing import create_route_map
from ocpp.v201 import ChargePoint

# The ocpp package validates each payload in the default thread pool unless told otherwise.
# Our frames are small and capped (the websocket's max_size), so schema validation takes tens
# of microseconds, less than the hop to a thread and back; inline it also leaves the pool to
# the password checks (benchmarks/bench_campaign.py).
_ocpp_messages.ASYNC_VALIDATION = False

LOG = logging.getLogger("chargeward.ocpp")
MAX_UNIQUE_ID = 36  # OCPP-J: messageId is at most 36 characters


class _QuietOcppErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``exception()`` for an OCPPError becomes a warning without a traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OCPPError):
            self.warning(
                "%s: %s (%s)",
                self.extra["station"] if self.extra else "?",
                type(err).__name__,
                err.description,
            )
            return
        self.error(msg, *args, exc_info=exc_info, **kw)

    def info(self, msg: object, *args: Any, **kw: Any) -> None:  # every frame: debug level
        self.debug(msg, *args, **kw)


def _frame_error(raw: Any) -> tuple[str, str, str, bool] | None:
    """Return (unique_id, code, description, reply) when ``raw`` is not a well-formed frame.

    ``reply`` is False for a malformed CALLRESULT/CALLERROR: responses are never answered.
    """
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError):
        return "-1", "RpcFrameworkError", "message is not valid JSON", True
    if not isinstance(msg, list) or not msg:
        return "-1", "RpcFrameworkError", "message is not a JSON array", True
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else "-1"
    if len(uid) > MAX_UNIQUE_ID:
        return "-1", "RpcFrameworkError", "messageId longer than 36 characters", True
    kind = msg[0]
    shapes: dict[Any, tuple[type, ...]] = {
        2: (int, str, str, dict),
        3: (int, str, dict),
        4: (int, str, str, str, dict),
    }
    if isinstance(kind, bool) or kind not in shapes:
        return uid, "MessageTypeNotSupported", f"unknown MessageTypeId {kind!r}", True
    want = shapes[kind]
    if len(msg) != len(want) or not all(isinstance(v, t) for v, t in zip(msg, want, strict=True)):
        return uid, "FormatViolation", "frame does not have the OCPP-J shape", kind == 2
    return None


_ROUTE_TABLES: dict[type, dict[str, dict[str, Any]]] = {}
_BOUND = ("_on_action", "_after_action")


class _Routes(Mapping[str, dict[str, Any]]):
    """The ``ocpp`` route map of one charge point, bound when looked up.

    ``ocpp`` builds a map of bound handlers for every instance; a CSMS holding ten thousand
    connections spent ~2.5 KiB on each (benchmarks/bench_connections.py).  Here the table is
    built once per class and one action's handlers are bound per message.
    """

    __slots__ = ("_owner", "_table")

    def __init__(self, owner: ChargePoint) -> None:
        cls = type(owner)
        if cls not in _ROUTE_TABLES:
            _ROUTE_TABLES[cls] = create_route_map(cls)  # plain functions, same shape
        self._owner = owner
        self._table = _ROUTE_TABLES[cls]

    def __getitem__(self, action: str) -> dict[str, Any]:
        entry = self._table[action]
        return {k: v.__get__(self._owner) if k in _BOUND else v for k, v in entry.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class HardenedChargePoint(ChargePoint):  # type: ignore[misc]
    """``ChargePoint`` whose receive loop survives any input."""

    def __init__(self, station_id: str, connection: Any, *, response_timeout: float = 30) -> None:
        super().__init__(
            station_id,
            connection,
            response_timeout,
            logger=_QuietOcppErrors(LOG, {"station": station_id}),
        )
        self.route_map = _Routes(self)
        self.invalid_messages = 0

    async def route_message(self, raw_msg: Any) -> None:
        problem = _frame_error(raw_msg)
        if problem is not None:
            uid, code, description, reply = problem
            self.invalid_messages += 1
            LOG.warning("%s: refused frame: %s", self.id, description)
            if reply:
                await self._send(json.dumps([4, uid, code, description, {}]))
            return
        await super().route_message(raw_msg)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ocpp_time(t: dt.datetime) -> str:
    """OCPP date-time: UTC, ISO 8601 with 'Z'."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ocpp_time(value: str) -> dt.datetime:
    """Parse an OCPP date-time; the ``ocpp`` package does not enforce the format."""
    try:
        t = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError) as e:
        raise FormatViolationError(details={"cause": f"bad date-time {value!r}"}) from e
    if t.tzinfo is None:
        raise FormatViolationError(details={"cause": f"date-time without offset {value!r}"})
    return t.astimezone(dt.UTC)
