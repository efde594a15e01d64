"""The reference agent's security events on their way to the CSMS (OCPP A04: delivered, not
lost).  Each goes out as an OCPP-listed type (:mod:`chargeward.ocpp.security_events`); one the
CSMS refuses with a CALLERROR is kept and sent again at the next connection, at most
:data:`EVENT_ATTEMPTS` times in all, at most :data:`QUEUED_EVENTS_MAX` kept.  Every event is in
the security log on flash before it is sent, whatever becomes of it here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ocpp.v201 import call

from chargeward.ocpp.base import ocpp_time
from chargeward.ocpp.security_events import on_the_wire

LOG = logging.getLogger("chargeward.agent")
QUEUED_EVENTS_MAX = 32
EVENT_ATTEMPTS = 3


@dataclass
class RefusedEvent:
    """A security event the CSMS answered with a CALLERROR, to send again."""

    type: str
    tech_info: str
    time: dt.datetime
    attempts: int = 1


class EventOutbox:
    """Sends security events through ``send_call`` (the agent's CALL: None for a CALLERROR)."""

    def __init__(self, station_id: str, send_call: Callable[[Any], Awaitable[Any]]) -> None:
        self.station_id = station_id
        self._call = send_call
        self.refused: list[RefusedEvent] = []  # sent again at the next connection

    def take(self) -> list[RefusedEvent]:
        """The refused events, to send again now; those refused from now on wait anew."""
        events, self.refused = self.refused, []
        return events

    async def resend(self, events: list[RefusedEvent]) -> None:
        for event in events:
            await self.send(event)

    async def send(self, event: RefusedEvent) -> None:
        wire_type, wire_info = on_the_wire(event.type, event.tech_info)
        result = await self._call(
            call.SecurityEventNotification(
                type=wire_type, timestamp=ocpp_time(event.time), tech_info=wire_info
            )
        )
        if result is not None:
            return
        event.attempts += 1
        if event.attempts >= EVENT_ATTEMPTS:
            LOG.error(
                "%s: security event %s refused %d times; given up (it stays in the security log)",
                self.station_id,
                event.type,
                event.attempts,
            )
            return
        if len(self.refused) >= QUEUED_EVENTS_MAX:
            dropped = self.refused.pop(0)
            LOG.error(
                "%s: too many refused security events; %s dropped (it stays in the security log)",
                self.station_id,
                dropped.type,
            )
        self.refused.append(event)
