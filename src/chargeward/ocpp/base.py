"""A hardened ``ocpp.v201.ChargePoint`` shared by the CSMS and the station side.

The ``ocpp`` package parses frames in ``route_message`` and logs a traceback for anything
malformed.  Here every frame is checked for the OCPP-J shape first (OCPP 2.0.1 Part 4, 4.1-4.3):
a bad frame gets a CALLERROR (``RpcFrameworkError``/``FormatViolation``) and a one-line warning,
never a crash, and is counted.  Errors raised on purpose from handlers (``OCPPError``) are
logged as warnings; only a real fault in our own code is logged with a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ocpp import messages as _ocpp_messages
from ocpp.exceptions import (
    FormatViolationError,
    NotSupportedError,
    OCPPError,
    TypeConstraintViolationError,
)
from ocpp.exceptions import NotImplementedError as NotImplementedError_
from ocpp.routing import create_route_map
from ocpp.v16 import call as v16_call
from ocpp.v16 import call_result as v16_call_result
from ocpp.v16.enums import Action as V16Action
from ocpp.v201 import ChargePoint
from ocpp.v201.enums import Action as V201Action

from chargeward.crypto.pki import CertificateHashData
from chargeward.limits import DEFAULT_FORMAT_LIMITS

# The ocpp package validates each payload in the default thread pool unless told otherwise.
# Our frames are small and capped (the websocket's max_size), so schema validation takes tens
# of microseconds, less than the hop to a thread and back; inline it also leaves the pool to
# the password checks (benchmarks/bench_campaign.py).
_ocpp_messages.ASYNC_VALIDATION = False

LOG = logging.getLogger("chargeward.ocpp")
MAX_UNIQUE_ID = 36  # OCPP-J: messageId is at most 36 characters
# customData vendorId of Chargeward's OCPP extensions (delta offers, status notes): stations
# and CSMSs that do not know them ignore them.
VENDOR_ID = "org.chargeward"
_MAX_QUEUED_RESPONSES = 8


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


def is_text(value: str) -> bool:
    """Whether ``value`` can be stored and sent as UTF-8: no NUL, no lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # a lone surrogate, from an escape such as \ud800, does not
    except UnicodeEncodeError:
        return False
    return True


def _content_problem(msg: list[Any]) -> str | None:
    """Why the values of a frame cannot be taken: nested over ``FormatLimits.ocpp_depth``
    levels (arrays and objects, the frame included: OCPP 2.0.1 messages nest under ten, and the
    ocpp package converts and validates payloads recursively), or a string that is not text
    (OCPP strings are UTF-8; no database stores a NUL character or half a surrogate pair, in a
    key or a value)."""
    level: list[Any] = [msg]
    for _ in range(DEFAULT_FORMAT_LIMITS.ocpp_depth):
        below: list[Any] = []
        for value in level:
            for child in [*value, *value.values()] if isinstance(value, dict) else value:
                if isinstance(child, str):
                    if not is_text(child):
                        return "a string is not text (a NUL or a lone surrogate)"
                elif isinstance(child, dict | list):
                    below.append(child)
        if not below:
            return None
        level = below
    return f"message nested over {DEFAULT_FORMAT_LIMITS.ocpp_depth} levels"


def _frame_error(raw: Any) -> tuple[str, str, str, bool] | None:
    """Return (unique_id, code, description, reply) when ``raw`` is not a well-formed frame.

    ``reply`` is False for a malformed CALLRESULT/CALLERROR: responses are never answered.
    """
    try:
        msg = json.loads(raw)
    except RecursionError:  # nesting past the interpreter's stack
        return (
            "-1",
            "RpcFrameworkError",
            f"message nested over {DEFAULT_FORMAT_LIMITS.ocpp_depth} levels",
            True,
        )
    except (ValueError, TypeError):
        return "-1", "RpcFrameworkError", "message is not valid JSON", True
    if not isinstance(msg, list) or not msg:
        return "-1", "RpcFrameworkError", "message is not a JSON array", True
    kind = msg[0]
    answer = not (isinstance(kind, int | float) and kind in (3, 4))  # a response: never
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else "-1"
    if len(uid) > MAX_UNIQUE_ID:
        return "-1", "RpcFrameworkError", "messageId longer than 36 characters", answer
    shapes: dict[Any, tuple[type, ...]] = {
        2: (int, str, str, dict),
        3: (int, str, dict),
        4: (int, str, str, str, dict),
    }
    want = shapes.get(kind) if isinstance(kind, int | float) else None  # e.g. not a list
    if want is None:
        return uid, "MessageTypeNotSupported", f"unknown MessageTypeId {kind!r:.40}", True
    if len(msg) != len(want) or not all(isinstance(v, t) for v, t in zip(msg, want, strict=True)):
        return uid, "FormatViolation", "frame does not have the OCPP-J shape", answer
    problem = _content_problem(msg)
    if problem is not None:
        return uid, "FormatViolation", problem, answer
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


def hash_data(d: dict[str, Any]) -> CertificateHashData:
    """An OCPP CertificateHashDataType (keys in snake_case, as the ``ocpp`` library passes
    them), in 1.6's whitepaper or 2.0.1's messages alike."""
    return CertificateHashData(
        hash_algorithm=d["hash_algorithm"],
        issuer_name_hash=d["issuer_name_hash"],
        issuer_key_hash=d["issuer_key_hash"],
        serial_number=d["serial_number"],
    )


def unhandled_action(action: str, version: str) -> OCPPError:
    """The CALLERROR for a CALL no handler takes, as OCPP-J defines the codes (2.0.1 Part 4
    and 1.6 section 4.2.3): ``NotImplemented`` for an action the receiver does not know,
    ``NotSupported`` for one it recognises but does not support.  (The ``ocpp`` library
    answers the two the other way round.)"""
    known = {a.value for a in (V16Action if version == "1.6" else V201Action)}
    if action in known:
        return NotSupportedError(
            description="Requested Action is recognized but not supported by the receiver",
            details={"cause": f"{action} is not supported here"},
        )
    return NotImplementedError_(
        description="Requested Action is not known by receiver",
        details={"cause": f"{action} is not an OCPP {version} action"},
    )


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
        self._response_queue = _Responses(self)
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

    async def _handle_call(self, msg: Any) -> None:
        if "_on_action" not in self.route_map.get(msg.action, {}):
            raise unhandled_action(msg.action, self._ocpp_version)
        await super()._handle_call(msg)

    def _unsolicited(self, response: Any) -> None:
        self.invalid_messages += 1
        LOG.warning("%s: dropped a response to no call in flight (%s)", self.id, response.unique_id)

    async def _get_specific_response(self, unique_id: str, timeout: float) -> Any:
        """The response to the call in flight; responses with other ids are dropped.

        The ``ocpp`` package recurses once per response with another id, so that enough of
        them, queued before a call, ended it with a RecursionError.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            response = await asyncio.wait_for(self._response_queue.get(), deadline - loop.time())
            if response.unique_id == unique_id:
                return response
            self._unsolicited(response)


class _Responses(asyncio.Queue[Any]):
    """Where the receive loop puts CALLRESULTs and CALLERRORs for the call in flight.

    OCPP-J allows one call in flight (``ChargePoint.call`` holds a lock until its answer or
    timeout); a response that arrives while there is none answers nothing and is dropped, not
    kept until the next call.  At most a few wait for the caller to take them.
    """

    def __init__(self, owner: HardenedChargePoint) -> None:
        super().__init__()
        self._owner = owner

    def put_nowait(self, item: Any) -> None:
        if self._owner._call_lock.locked() and self.qsize() < _MAX_QUEUED_RESPONSES:
            super().put_nowait(item)
        else:
            self._owner._unsolicited(item)


def int32(value: int) -> int:
    """``value``, an OCPP ``integer``: 32 bits, signed (OCPP 2.0.1 Part 2, 2.1)."""
    if not -(2**31) <= value < 2**31:
        raise TypeConstraintViolationError(details={"cause": f"{value} is not a 32-bit integer"})
    return value


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ocpp_time(t: dt.datetime) -> str:
    """OCPP date-time: UTC, ISO 8601 with 'Z'."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ocpp_time(value: str) -> dt.datetime:
    """Parse an OCPP date-time; the ``ocpp`` package does not enforce the format."""
    try:
        t = dt.datetime.fromisoformat(value)
        if t.tzinfo is None:
            raise FormatViolationError(details={"cause": f"date-time without offset {value!r}"})
        return t.astimezone(dt.UTC)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. 0001-01-01T00:00:00+01:00
        raise FormatViolationError(details={"cause": f"bad date-time {value!r}"}) from e


class HardenedChargePoint16(HardenedChargePoint):
    """:class:`HardenedChargePoint` speaking OCPP 1.6J (the ``ocpp`` library's v16 messages
    and schemas, with the Security Whitepaper's)."""

    _call = v16_call
    _call_result = v16_call_result
    _ocpp_version = "1.6"

    async def _send(self, message: Any) -> None:
        await super()._send(error_codes_16(message))


# OCPP-J 1.6 (section 4.2.3) spells two codes differently and has no RPC-framework codes; a
# CALLERROR on a 1.6 connection uses its words.
_ERROR_CODES_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "MessageTypeNotSupported": "GenericError",
    "RpcFrameworkError": "GenericError",
}


def error_codes_16(message: Any) -> Any:
    """``message`` with a CALLERROR's code as OCPP-J 1.6 names it (other frames unchanged)."""
    if not isinstance(message, str) or not message.startswith("[4"):
        return message
    try:
        frame = json.loads(message)
    except ValueError:
        return message
    if not (isinstance(frame, list) and len(frame) >= 3 and frame[2] in _ERROR_CODES_16):
        return message
    frame[2] = _ERROR_CODES_16[frame[2]]
    return json.dumps(frame, separators=(",", ":"))
