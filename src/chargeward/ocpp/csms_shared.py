"""What the CSMS's two charge points share: OCPP 2.0.1 (:mod:`chargeward.ocpp.csms`) and
OCPP 1.6J (:mod:`chargeward.ocpp.csms16`).

:class:`CommandCalls` sends a command and turns a lost or silent station into a
``TransportError`` and a CALLERROR into a ``Conflict``; :meth:`CommandCalls.vendor_message`
decides Chargeward's DataTransfer messages (``org.chargeward``), which are the same JSON in
both protocols::

    status = await cp.vendor_message("org.chargeward", "SecurityUpdateAvailable", data)
    # -> 'Accepted' (reported to the sink), 'Rejected', 'UnknownVendorId', 'UnknownMessageId'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import OCPPError
from websockets.exceptions import ConnectionClosed

from chargeward.errors import Conflict, TransportError
from chargeward.ocpp.base import VENDOR_ID, is_text


@dataclass(frozen=True)
class UpdateAvailable:
    """A charger's DataTransfer ``org.chargeward`` / ``SecurityUpdateAvailable`` report."""

    target: str
    version: str
    security_version: int

    @classmethod
    def parse(cls, data: object) -> UpdateAvailable | None:
        try:
            raw = json.loads(data) if isinstance(data, str) else None
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        target, version, sv = raw.get("target"), raw.get("version"), raw.get("security_version")
        if not (isinstance(target, str) and 0 < len(target) <= 200 and is_text(target)):
            return None
        if not (isinstance(version, str) and 0 < len(version) <= 50 and is_text(version)):
            return None
        if isinstance(sv, bool) or not isinstance(sv, int) or sv < 0:
            return None
        return cls(target, version, sv)


class VendorSink(Protocol):
    """What Chargeward's vendor messages report (a part of ``csms.StationSink``)."""

    async def update_available(self, station_id: str, report: UpdateAvailable) -> None: ...
    async def owner_notification(self, station_id: str, notice: dict[str, Any]) -> None: ...


class CommandCalls:
    """Commands to a station and its vendor messages; the charge point provides ``id``,
    ``sink``, ``call``, ``_connection`` and ``_require_boot``."""

    id: str
    sink: VendorSink
    _connection: Any
    call: Callable[..., Awaitable[Any]]
    _require_boot: Callable[[], None]

    async def _call_or_lost(self, payload: Any) -> Any:
        """``call``, but a dropped connection ends the wait at once, not at the timeout."""
        answer = asyncio.ensure_future(self.call(payload, suppress=False))
        closed = asyncio.ensure_future(self._connection.wait_closed())
        try:
            await asyncio.wait({answer, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not answer.done():
            answer.cancel()
            raise ConnectionClosed(None, None)
        return answer.result()

    async def _request(self, payload: Any) -> Any:
        """Send a CALL; a lost or silent station is a TransportError, a CALLERROR a Conflict."""
        action = type(payload).__name__
        try:
            return await self._call_or_lost(payload)
        except TimeoutError as e:
            raise TransportError(f"station {self.id} did not answer {action} in time") from e
        except ConnectionClosed as e:
            raise TransportError(f"connection to station {self.id} was lost") from e
        except OCPPError as e:
            raise Conflict(
                f"station {self.id} refused {action}: {type(e).__name__}: {e.description}"
            ) from e

    async def vendor_message(self, vendor_id: str, message_id: str | None, data: Any) -> str:
        """The DataTransfer status for a vendor message; Chargeward's agent reports available
        security releases (P01) and notices for the owner."""
        if vendor_id == VENDOR_ID and message_id == "OwnerNotification":
            # Before boot too: a charger in tamper quarantine sends only this and the event.
            notice = json_object(data)
            if notice is None:
                return "Rejected"
            await self.sink.owner_notification(self.id, notice)
            return "Accepted"
        self._require_boot()
        if vendor_id != VENDOR_ID:
            return "UnknownVendorId"
        if message_id != "SecurityUpdateAvailable":
            return "UnknownMessageId"
        report = UpdateAvailable.parse(data)
        if report is None:
            return "Rejected"
        await self.sink.update_available(self.id, report)
        return "Accepted"


def json_object(data: object) -> dict[str, Any] | None:
    """``data`` of a DataTransfer as a JSON object of at most 2 KiB, or None."""
    if not isinstance(data, str) or len(data) > 2048:
        return None
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None
