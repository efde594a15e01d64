"""Station commands between nodes: which ``CsmsChargePoint`` methods another node may call,
and their arguments and results as JSON (the ``station_commands`` rows of
:mod:`chargeward.server.cluster.cluster`).

    payload = encode_call("get_log", args, kwargs)     # on the caller's node
    result = await invoke(cp, "get_log", payload)      # on the node holding the station
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import types
import typing
from typing import Any

from ocpp.exceptions import OCPPError

from chargeward.errors import CommandNotDelivered, Conflict, TransportError
from chargeward.ocpp.csms import CsmsChargePoint


class RemoteTimeout(TransportError, TimeoutError):
    """The node holding the station did not answer in time (a TimeoutError, like a local one)."""


# CsmsChargePoint methods another node may call; add a name here for each new command.
COMMANDS: frozenset[str] = frozenset(
    {
        "update_firmware",
        "install_certificate",
        "get_installed_certificate_ids",
        "delete_certificate",
        "get_log",
        "trigger_message",
        "get_base_report",
    }
)


def to_json(value: Any) -> Any:
    """Dataclasses, datetimes, tuples and plain values as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(kind: Any, value: Any) -> Any:
    """The inverse of :func:`to_json`, guided by the type annotation ``kind``."""
    if value is None or kind is Any:
        return value
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return from_json(options[0], value) if len(options) == 1 else value
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        return origin(from_json(item, v) for v in value)
    if origin is dict:
        return dict(value)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        return kind(**{k: from_json(hints[k], v) for k, v in value.items()})
    if kind is dt.datetime:
        return dt.datetime.fromisoformat(value)
    return value


def call_hints(method: str) -> dict[str, Any]:
    return typing.get_type_hints(getattr(CsmsChargePoint, method))


def encode_call(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if method not in COMMANDS:
        raise AttributeError(f"{method} is not a station command")
    bound = inspect.signature(getattr(CsmsChargePoint, method)).bind(None, *args, **kwargs)
    return {k: to_json(v) for k, v in list(bound.arguments.items())[1:]}


async def invoke(cp: CsmsChargePoint, method: str, args: dict[str, Any]) -> Any:
    """Run ``method`` with JSON ``args`` on a local station; the result as JSON."""
    if method not in COMMANDS:
        raise Conflict(f"{method} is not a station command")
    hints = call_hints(method)
    result = await getattr(cp, method)(**{k: from_json(hints[k], v) for k, v in args.items()})
    return to_json(result)


def error_result(e: BaseException) -> dict[str, str]:
    if isinstance(e, TimeoutError) and not isinstance(e, TransportError):
        kind = "timeout"
    elif isinstance(e, CommandNotDelivered):
        kind = "undelivered"
    elif isinstance(e, Conflict | OCPPError):
        kind = "conflict"
    else:
        kind = "transport"
    message = str(e) if isinstance(e, TransportError | Conflict) else f"{type(e).__name__}: {e}"
    return {"error": kind, "message": message[:512]}


def raise_result(result: dict[str, Any]) -> None:
    message = str(result.get("message", "failed on the node holding the station"))
    kind = result["error"]
    if kind == "timeout":
        raise RemoteTimeout(message)
    if kind == "conflict":
        raise Conflict(message)
    if kind == "undelivered":
        raise CommandNotDelivered(message)
    raise TransportError(message)
