"""What the server keeps about an OCPP 1.6J station's firmware update path (ADR 0039).

``stations.ocpp_version`` is the subprotocol of its last connection.  Plain UpdateFirmware (no
signature) is sent only to a station an operator marked ``legacy_firmware_update`` and that has
never shown it supports the Security Whitepaper's SignedUpdateFirmware
(``stations.signed_update_support``: true once it sent a SignedFirmwareStatusNotification or a
SecurityEventNotification or answered SignedUpdateFirmware; false once it refused it as not
implemented)::

    mode = await update_mode(s, "CP-1")
    mode.legacy, mode.signed_support
    # -> (False, None)
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.ocpp.csms16 import UpdateMode
from chargeward.server.fleet.station_registry import find_station, latest_open_update, station_actor


async def update_mode(s: AsyncSession, station_id: str) -> UpdateMode:
    row = await find_station(s, station_id)
    return UpdateMode(bool(row.legacy_firmware_update), row.signed_update_support)


async def record_protocol(s: AsyncSession, station_id: str, version: str) -> None:
    """The subprotocol the station connected with (``1.6`` or ``2.0.1``)."""
    row = await find_station(s, station_id)
    if row.ocpp_version != version:
        row.ocpp_version = version


async def record_signed_evidence(
    s: AsyncSession, station_id: str, supported: bool, why: str, *, now: dt.datetime
) -> None:
    """What the station showed about SignedUpdateFirmware; audited when it changes the record.

    Support once shown is kept: a later NotImplemented (e.g. a station reset to a build
    without the whitepaper) is audited but does not make it a plain-UpdateFirmware candidate.
    """
    row = await find_station(s, station_id)
    before = row.signed_update_support
    if before is supported:
        return
    if before is not True:
        row.signed_update_support = supported
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.signed_update_support",
        target=station_id,
        details={
            "supported": supported,
            "evidence": why[:500],
            "recorded": row.signed_update_support,
        },
        now=now,
    )


async def open_legacy_request(s: AsyncSession, station_id: str) -> int | None:
    """The pending update of a station marked legacy: what its FirmwareStatusNotifications
    (which carry no requestId) are about."""
    row = await find_station(s, station_id)
    if not row.legacy_firmware_update or row.signed_update_support is True:
        return None
    update = await latest_open_update(s, station_id)
    return update.id if update is not None else None
