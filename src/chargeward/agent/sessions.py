"""Connectors and charging sessions (simulated EVs), and the install gate (OCPP L01.FR.06/07).

:class:`ChargingSessions` holds each connector's status and the transaction on it; the update
pipeline (:mod:`chargeward.agent.update`) waits here until no car is charging before it
installs, holding free connectors Unavailable meanwhile unless
``ChargingStation.AllowNewSessionsPendingFirmwareUpdate`` is true.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ocpp.v201 import call
from ocpp.v201.enums import ConnectorStatusEnumType

from chargeward.errors import ChargingUnavailable
from chargeward.ocpp.base import ocpp_time

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
# OCPP device model: ChargingStation.AllowNewSessionsPendingFirmwareUpdate (L01.FR.07)
ALLOW_NEW_SESSIONS = ("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate")


@dataclass
class ChargingSession:
    """A transaction on one EVSE (simulated EV plugged in and authorised)."""

    transaction_id: str
    evse_id: int
    seq_no: int = 0


class ChargingSessions:
    """The connectors of one boot: their status, the sessions on them, the install gate."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.connector_status: dict[int, str] = {}
        self.sessions: dict[int, ChargingSession] = {}
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.holding = False  # free connectors Unavailable for a pending install
        self._background: set[asyncio.Task[None]] = set()

    def boot(self, connectors: int) -> None:
        """A reboot ends every session; the connectors are Unavailable until start-up."""
        self.sessions.clear()
        self._no_sessions.set()
        self.holding = False
        self.connector_status = {c: "Unavailable" for c in range(1, connectors + 1)}

    def disable(self) -> None:
        """Tamper quarantine: no sessions, no connectors offered."""
        self.sessions.clear()
        self.connector_status = {}

    @property
    def allow_new_sessions_pending_update(self) -> bool:
        return bool(self._agent.state.settings().get("/".join(ALLOW_NEW_SESSIONS), False))

    async def send_status(self, evse_ids: Iterable[int] | None = None) -> None:
        for evse_id in sorted(self.connector_status) if evse_ids is None else evse_ids:
            await self._agent._call(
                call.StatusNotification(
                    timestamp=ocpp_time(self._agent.clock()),
                    connector_status=ConnectorStatusEnumType(self.connector_status[evse_id]),
                    evse_id=evse_id,
                    connector_id=1,
                )
            )

    async def set_connectors(self, status: str, evse_ids: list[int]) -> None:
        changed = [e for e in evse_ids if self.connector_status.get(e) != status]
        for evse_id in changed:
            self.connector_status[evse_id] = status
        await self.send_status(changed)

    async def start(self, evse_id: int, id_token: str | None = None) -> str:
        """An EV plugs in and is authorised: TransactionEvent(Started); returns its id.

        Raises :class:`ChargingUnavailable` when the connector is not Available (occupied,
        held for a pending install, or the charger is in tamper quarantine).
        """
        if self._agent.quarantine is not None:
            raise ChargingUnavailable("charging is disabled: the charger is in tamper quarantine")
        status = self.connector_status.get(evse_id)
        if status != "Available":
            raise ChargingUnavailable(f"connector {evse_id} is {status or 'unknown'}")
        session = ChargingSession(uuid.uuid4().hex, evse_id)
        self.sessions[evse_id] = session
        self._no_sessions.clear()
        await self.set_connectors("Occupied", [evse_id])
        await self._transaction_event(
            session,
            "Started",
            "Authorized",
            id_token=id_token or f"EV-{session.transaction_id[:8]}",
        )
        return session.transaction_id

    async def end(self, evse_id: int) -> None:
        """The EV leaves: TransactionEvent(Ended); the connector is free again."""
        session = self.sessions.pop(evse_id, None)
        if session is None:
            raise ChargingUnavailable(f"no session on connector {evse_id}")
        await self._transaction_event(session, "Ended", "EVDeparted", stopped="EVDisconnected")
        held = self.holding or self._agent.updates.installing
        await self.set_connectors("Unavailable" if held else "Available", [evse_id])
        if not self.sessions:
            self._no_sessions.set()

    async def _transaction_event(
        self,
        session: ChargingSession,
        event_type: str,
        trigger: str,
        *,
        id_token: str | None = None,
        stopped: str | None = None,
    ) -> None:
        info: dict[str, Any] = {"transaction_id": session.transaction_id}
        if stopped is not None:
            info["stopped_reason"] = stopped
        else:
            info["charging_state"] = "Charging"
        await self._agent._call(
            call.TransactionEvent(
                event_type=event_type,
                timestamp=ocpp_time(self._agent.clock()),
                trigger_reason=trigger,
                seq_no=session.seq_no,
                transaction_info=info,
                evse={"id": session.evse_id, "connector_id": 1},
                id_token={"id_token": id_token, "type": "Central"} if id_token else None,
            )
        )
        session.seq_no += 1

    async def wait_until_none(self, request_id: int, scheduled: bool) -> None:
        """Never install while a car is charging (OCPP L01.FR.06/07).

        While sessions run the status is ``InstallScheduled`` (sent once) and free connectors
        go Unavailable unless AllowNewSessionsPendingFirmwareUpdate is true.  Once every
        session has ended, all connectors go Unavailable for the install itself.
        """
        while self.sessions:
            if not scheduled:
                await self._agent._status("InstallScheduled", request_id)
                scheduled = True
            if not self.allow_new_sessions_pending_update and not self.holding:
                self.holding = True
                free = [e for e in self.connector_status if e not in self.sessions]
                await self.set_connectors("Unavailable", free)
            LOG.info(
                "%s: install %s waits for %d charging session(s) to end",
                self._agent.identity.station_id,
                request_id,
                len(self.sessions),
            )
            await self._no_sessions.wait()
        self.holding = True
        await self.set_connectors("Unavailable", sorted(self.connector_status))

    async def release(self) -> None:
        """The pending install is gone (cancelled or failed): free connectors are Available."""
        self.holding = False
        free = [e for e in self.connector_status if e not in self.sessions]
        await self.set_connectors("Available", free)

    def release_soon(self) -> None:
        if self.holding and not self._agent.rebooting:
            task = asyncio.get_running_loop().create_task(self.release())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
